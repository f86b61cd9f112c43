//! cargo-fuzz target for the datagram relay (`mpbond::convert::dgram`, `mpbond::convert::relay`):
//! the converter's table and the laptop's session never panic, never accept a mutated datagram
//! and never accept one twice (see `mpbond::fuzz::relay_dgram`). `tests/fuzz_corpus.rs` runs the
//! same entry, bounded, in `cargo test`. Run: `cargo +nightly fuzz run relay_dgram -- -max_total_time=60`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mpbond::fuzz::relay_dgram(data);
});
