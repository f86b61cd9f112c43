//! Fallback to regular TCP (RFC 8684 §3.7) over the simulator: option 30 stripped on the SYN,
//! options stripped mid-connection, MPTCP disabled by the caller.

mod common;

use common::mpsim::{at, run_ok, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::{Event, FallbackCause};
use mpbond::sim::mptcp::Action;
use mpbond::sim::{Link, Rewrite};

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
