//! MP_FASTCLOSE (RFC 8684 §3.5): an abort mid-transfer resets every subflow and the peer
//! reports a reset at once (only with the right key).

mod common;

use common::mpsim::{at, spec};
use mpbond::config::Mode;
use mpbond::mptcp::Event;
use mpbond::sim::mptcp::{Action, run};

#[test]
fn abort_sends_mp_fastclose_and_the_peer_resets() {
    let mut s = spec(51, Mode::Aggregate, 8 << 20, 8 << 20);
    s.actions = vec![(at(300), Action::Abort)];
    let r = run(&s);
    assert!(!r.completed);
    assert_eq!(r.terminal.1, Some(Event::Reset), "{:?}", r.error);
    // The server learnt it right away (one path delay after the abort), not by timing out.
    assert!(r.finished_at < at(400), "{:?}", r.finished_at);
    assert!(r.server_received < 8 << 20);
}
