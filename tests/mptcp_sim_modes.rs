//! MPTCP client and server over two simulated paths: byte-exact transfers in every scheduler mode.

mod common;

use common::mpsim::{run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::Event;

#[test]
fn small_handover() {
    let s = spec(1, Mode::Handover, 100_000, 100_000);
    let r = run_ok(&s);
    assert!(r.client_mptcp);
    println!("{:?} {:?}", r.finished_at, r.final_stats);
    assert!(r.client_events.contains(&Event::Connected { mptcp: true }));
}
