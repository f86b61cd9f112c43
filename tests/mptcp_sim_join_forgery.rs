//! Forged MP_JOINs (RFC 8684 §3.2): an unknown token is refused, a bad HMAC on the third ACK
//! resets that subflow only; the connection is unharmed and completes byte-exact.

mod common;

use common::mpsim::{at, run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::handshake::JoinError;
use mpbond::mptcp::{Event, JoinRefused, SubflowResetCause};
use mpbond::sim::mptcp::Action;

#[test]
fn forged_joins_are_refused_and_the_connection_is_unharmed() {
    for mode in [Mode::Handover, Mode::Aggregate] {
        let mut s = spec(41, mode, 4 << 20, 4 << 20);
        s.actions = vec![
            (at(300), Action::ForgeUnknownToken),
            (at(400), Action::ForgeBadHmac),
        ];
        let r = run_ok(&s);
        assert_eq!(r.forged.len(), 2);
        assert!(
            matches!(r.forged[0], Err(JoinRefused::Join(JoinError::UnknownToken(_)))),
            "{:?}",
            r.forged
        );
        // The right token passes the SYN (the HMAC is only checked on the third ACK)...
        assert_eq!(r.forged[1], Ok(()));
        // ...and the made-up HMAC resets that subflow.
        assert!(r.server_events.iter().any(|e| matches!(
            e,
            Event::SubflowReset {
                cause: SubflowResetCause::PeerMisbehaved(_),
                ..
            }
        )));
        assert!(r.client_mptcp);
        // The forged subflow never came up.
        let ups = r
            .server_events
            .iter()
            .filter(|e| matches!(e, Event::SubflowUp { .. }))
            .count();
        assert_eq!(ups, 2, "{:?}", r.server_events);
    }
}
