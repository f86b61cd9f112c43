#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mpbond::fuzz::tcp_segment_parse(data);
});
