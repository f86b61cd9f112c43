//! ≥ 200 seeded MPTCP transfers over two impaired paths (loss, reordering, duplication, jitter),
//! in every mode, with random path failures, returns, middleboxes and checksums: each must
//! deliver byte-exact both ways and close. Replay one case with `MPBOND_SIM_SEED=<seed>
//! MPBOND_MPTCP_SIM_CASES=1`; `MPBOND_MPTCP_SIM_CASES` sets the count (default 240).

#![allow(clippy::print_stdout, reason = "tests print timings and byte counts")]

mod common;

use common::mpsim::{at, ms, quiet, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::Event;
use mpbond::sim::mptcp::{Action, run};
use mpbond::sim::{Link, Rng, seed_from_env};

fn impair(rng: &mut Rng, links: &mut Vec<Link>) {
    let loss = [0.0, 0.001, 0.01, 0.02][rng.below(4) as usize];
    if loss > 0.0 {
        links.push(Link::Loss(loss));
    }
    if rng.chance(0.3) {
        links.push(Link::Reorder {
            p: 0.02,
            extra: ms(1 + rng.below(15)),
        });
    }
    if rng.chance(0.2) {
        links.push(Link::Duplicate(0.01));
    }
    if rng.chance(0.3) {
        links.push(Link::Jitter(ms(1 + rng.below(5))));
    }
}

#[test]
fn seeded_two_path_transfers() {
    let base = seed_from_env(0x4d50_7463);
    let cases: u64 = std::env::var("MPBOND_MPTCP_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    #[expect(
        clippy::disallowed_methods,
        reason = "prints the wall-clock time of the batch"
    )]
    let started = std::time::Instant::now();
    let mut kinds = [0u32; 6];
    for case in 0..cases {
        let seed = base.wrapping_add(case);
        let mut rng = Rng::new(seed);
        let mode = [Mode::Handover, Mode::Interactive, Mode::Aggregate][rng.below(3) as usize];
        let c2s = rng.below(256 << 10);
        let s2c = rng.below(256 << 10);
        let mut s = spec(seed, mode, c2s, s2c);
        impair(&mut rng, &mut s.wifi);
        impair(&mut rng, &mut s.cell);
        if rng.chance(0.2) {
            s.client.join = JoinPolicy::OnDemand;
        }
        if rng.chance(0.2) {
            s.client.capable.checksum_required = true;
        }
        let t = 50 + rng.below(400);
        let kind = rng.below(6) as usize;
        kinds[kind] += 1;
        s.actions = match kind {
            0 => vec![],
            1 => vec![(at(t), Action::NetDown(0, true))],
            2 => vec![
                (at(t), Action::NetDown(0, true)),
                (at(t + 1500), Action::NetDown(0, false)),
            ],
            3 => vec![(at(t), Action::Kill(0))],
            4 => vec![(at(t), Action::Kill(0)), (at(t + 800), Action::Restore(0))],
            _ => {
                // A middlebox strips options mid-connection on the only subflow.
                s.client.join = JoinPolicy::OnDemand;
                s.wifi.retain(|l| !matches!(l, Link::Loss(_)));
                vec![(at(t), Action::StripOptions(0))]
            }
        };
        if kind == 1 {
            // A path that dies silently for good: with on-demand joins only the policy layer
            // (link state, probes) can tell a receive-only client; here nobody does.
            s.client.join = JoinPolicy::Immediate;
        }
        if rng.chance(0.4) {
            // Super-segments, cut by the simulated sender's GSO (issue 15).
            s.client.tcp.super_segments = 65_535;
            s.server.tcp.super_segments = 65_535;
        }
        let r = run(&s);
        assert!(
            r.completed,
            "case {case} (MPBOND_SIM_SEED={seed} MPBOND_MPTCP_SIM_CASES=1): {mode} {:?} c2s {c2s} s2c {s2c}: {:?}\nclient {:?}\nserver {:?}",
            s.actions,
            r.error,
            quiet(&r.client_events),
            quiet(&r.server_events)
        );
        assert_eq!((r.client_received, r.server_received), (s2c, c2s), "seed {seed}");
        // At least one side closed gracefully; the other too unless it was left waiting for
        // the last DATA_ACK on a path that died.
        assert!(
            matches!(r.terminal, (Some(Event::Closed), _) | (_, Some(Event::Closed))),
            "seed {seed}: {:?}",
            r.terminal
        );
        if s.actions.is_empty() {
            assert_eq!(
                r.terminal,
                (Some(Event::Closed), Some(Event::Closed)),
                "seed {seed}: {mode} {:?} {:?} client {:?} server {:?}",
                r.finished_at,
                r.data_done_at,
                quiet(&r.client_events),
                quiet(&r.server_events)
            );
        }
    }
    println!(
        "{cases} seeded MPTCP transfers (action kinds {kinds:?}) in {:?}",
        started.elapsed()
    );
}
