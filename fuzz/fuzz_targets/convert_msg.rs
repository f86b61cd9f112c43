//! cargo-fuzz target for the RFC 8803 Convert codec (`mpbond::convert`): the converter's request
//! check, the client's reply parse and the message codec never panic and keep their invariants
//! (see `mpbond::fuzz::convert_msg`). `tests/fuzz_corpus.rs` runs the same entry, bounded, in
//! `cargo test`. Run: `cargo +nightly fuzz run convert_msg -- -max_total_time=60`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mpbond::fuzz::convert_msg(data);
});
