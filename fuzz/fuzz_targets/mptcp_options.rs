//! cargo-fuzz target for the MPTCP option codec (`mpbond::wire::mptcp`): the parser never
//! panics on any input, and whatever it accepts is written back to the same length and parses
//! to the same value. `tests/mptcp_options_fuzz.rs` runs the same property, bounded, in
//! `cargo test`. Run: `cargo +nightly fuzz run mptcp_options -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpbond::wire::mptcp::MptcpOption;

fuzz_target!(|data: &[u8]| {
    if let Ok(opt) = MptcpOption::parse(data) {
        let mut buf = [0u8; 64];
        let n = match opt.write(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("{data:02x?} parsed as {opt:?} but does not write: {e}"),
        };
        assert_eq!(n, opt.len());
        assert_eq!(n, data.len());
        assert_eq!(MptcpOption::parse(&buf[..n]), Ok(opt));
    }
});
