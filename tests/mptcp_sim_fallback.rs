//! Fallback to regular TCP (RFC 8684 §3.7) over the simulator: option 30 stripped on the SYN,
//! options stripped mid-connection, MPTCP disabled by the caller.

mod common;

use common::mpsim::{at, run_ok, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::{Event, FallbackCause};
use mpbond::sim::mptcp::Action;
use mpbond::sim::{DssDamage, Link, Rewrite};

const MB: u64 = 1 << 20;

#[test]
fn option_30_stripped_on_the_syn_gives_plain_tcp() {
    for mode in [Rewrite::Strip, Rewrite::Nop] {
        let mut s = spec(31, Mode::Handover, 4 * MB, 4 * MB);
        s.wifi_up_extra = vec![Link::RewriteOption {
            kind: 30,
            mode,
            syn_only: true,
        }];
        let r = run_ok(&s);
        assert!(!r.client_mptcp);
        assert!(
            r.client_events.contains(&Event::Connected { mptcp: false }),
            "{:?}",
            &r.client_events[..3]
        );
        assert!(
            r.server_events
                .iter()
                .any(|e| matches!(e, Event::Fallback { .. }))
        );
        // No join on the cellular path: a plain TCP connection has one path.
        assert_eq!(r.final_stats[2].sent, 0);
    }
}

#[test]
fn options_stripped_mid_connection_fall_back_and_complete() {
    for (seed, c2s, s2c) in [(32, 4 * MB, 4 * MB), (33, 4 * MB, 0), (34, 0, 4 * MB)] {
        let mut s = spec(seed, Mode::Handover, c2s, s2c);
        // One subflow only: infinite-mapping fallback is possible (§3.7).
        s.client.join = JoinPolicy::OnDemand;
        s.actions = vec![(at(400), Action::StripOptions(0))];
        let r = run_ok(&s);
        assert!(
            r.client_events
                .iter()
                .chain(r.server_events.iter())
                .any(|e| matches!(
                    e,
                    Event::Fallback {
                        cause: FallbackCause::OptionsStripped,
                        ..
                    }
                )),
            "seed {seed}: no fallback: {:?}",
            r.client_events
                .iter()
                .filter(|e| !matches!(e, Event::Readable | Event::Writable))
                .collect::<Vec<_>>()
        );
        assert!(r.client_events.contains(&Event::Connected { mptcp: true }));
    }
}

#[test]
fn options_stripped_on_one_of_two_subflows_resets_it_and_completes() {
    let mut s = spec(35, Mode::Aggregate, 4 * MB, 4 * MB);
    s.actions = vec![(at(400), Action::StripOptions(1))];
    let r = run_ok(&s);
    assert!(r.client_mptcp);
}

#[test]
fn mptcp_disabled_by_the_caller() {
    let mut s = spec(36, Mode::Handover, MB, MB);
    s.client_mptcp = false;
    let r = run_ok(&s);
    assert!(!r.client_mptcp);
    assert!(r.client_events.contains(&Event::Fallback {
        path: mpbond::mptcp::PathId(0),
        cause: FallbackCause::Disabled
    }));
}

fn fallback_causes(events: &[Event]) -> Vec<FallbackCause> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fallback { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect()
}

/// DSS checksums on both sides, and a middlebox on Wi-Fi that damages the checksum of the
/// client's 300th mapping (its data, or its DATA_FIN).
fn checksum_damaged(seed: u64, mode: Mode, c2s: u64, s2c: u64) -> mpbond::sim::mptcp::MpSpec {
    let mut s = spec(seed, mode, c2s, s2c);
    s.client.capable.checksum_required = true;
    s.server.capable.checksum_required = true;
    s.wifi_up_extra = vec![Link::DamageDss {
        nth: 300,
        damage: DssDamage::Checksum,
    }];
    s
}

#[test]
fn a_checksum_failure_on_the_only_subflow_is_an_mp_fail_exchange_then_regular_tcp() {
    // §3.7: a middlebox altered a segment (seen as a DSS checksum failure; the bytes are left
    // intact so the transfer can be checked) while one subflow carries the connection. The
    // receiver sends MP_FAIL, the sender answers with MP_FAIL and an infinite mapping, and both
    // go on as regular TCP: nothing is lost, in either direction.
    for (seed, c2s, s2c) in [(41, 4 * MB, 4 * MB), (42, 4 * MB, 0), (43, 2 * MB, 4 * MB)] {
        let mut s = checksum_damaged(seed, Mode::Handover, c2s, s2c);
        s.client.join = JoinPolicy::OnDemand;
        let r = run_ok(&s);
        assert!(r.client_events.contains(&Event::Connected { mptcp: true }));
        if c2s > 0 {
            assert_eq!(
                fallback_causes(&r.server_events),
                vec![FallbackCause::ChecksumFailed],
                "seed {seed}: the server detects the failure"
            );
            assert_eq!(
                fallback_causes(&r.client_events),
                vec![FallbackCause::ChecksumFailed],
                "seed {seed}: the client falls back on the server's MP_FAIL"
            );
            assert!(!r.client_mptcp);
        }
        assert_eq!((r.client_received, r.server_received), (s2c, c2s));
    }
}

#[test]
fn a_checksum_failure_with_two_subflows_resets_that_subflow_with_mp_fail() {
    let s = checksum_damaged(44, Mode::Aggregate, 4 * MB, 4 * MB);
    let r = run_ok(&s);
    assert!(r.client_mptcp, "MPTCP goes on over the other subflow");
    assert!(fallback_causes(&r.server_events).is_empty());
    assert!(
        r.server_events.iter().any(|e| matches!(
            e,
            Event::SubflowReset {
                cause: mpbond::mptcp::SubflowResetCause::PathIncompatible(_),
                ..
            }
        )),
        "{:?}",
        r.server_events
            .iter()
            .filter(|e| !matches!(e, Event::Readable | Event::Writable))
            .collect::<Vec<_>>()
    );
}
