//! MPTCP segments fit a 1500-byte path with DSS checksums on and off: every packet longer than
//! the MTU is dropped, so a sender that sizes payloads by unpadded option lengths (TS 12 + DSS
//! 26 = 38, sent as 40) never gets a full-sized segment through. Found against the Linux kernel
//! (tests/mptcp_kernel_interop.rs), where such packets failed with EMSGSIZE.

mod common;

use common::mpsim::{run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::handshake::CapableConfig;
use mpbond::sim::Link;

fn over_1500_byte_paths(checksums: bool) {
    let mut s = spec(21, Mode::Handover, 1 << 20, 1 << 20);
    let capable = CapableConfig {
        checksum_required: checksums,
        ..CapableConfig::default()
    };
    s.client.capable = capable;
    s.server.capable = capable;
    s.wifi.push(Link::Mtu(1500));
    s.cell.push(Link::Mtu(1500));
    let r = run_ok(&s);
    assert!(r.client_mptcp, "fell back: {:?}", r.client_events);
}

#[test]
fn segments_fit_the_mtu_with_dss_checksums() {
    over_1500_byte_paths(true);
}

#[test]
fn segments_fit_the_mtu_without_dss_checksums() {
    over_1500_byte_paths(false);
}
