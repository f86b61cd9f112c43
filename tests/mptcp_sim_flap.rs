//! Flapping Wi-Fi under MPTCP (issue 14): link down/up and blackholes alternating.

#![allow(clippy::print_stdout, reason = "tests print timings and byte counts")]

mod common;

use common::mpsim::{at, quiet, spec};
use mpbond::config::Mode;
use mpbond::sim::Rng;
use mpbond::sim::mptcp::Action;

const MB: u64 = 1 << 20;

fn flaps(seed: u64, until: u64) -> Vec<(mpbond::time::Instant, Action)> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::new();
    let mut t = 800;
    while t < until {
        let down = 300 + rng.next_u64() % 1200;
        let up = 300 + rng.next_u64() % 1200;
        if rng.next_u64() % 2 == 0 {
            v.push((at(t), Action::Kill(0)));
            v.push((at(t + down), Action::Restore(0)));
        } else {
            v.push((at(t), Action::NetDown(0, true)));
            v.push((at(t + down), Action::NetDown(0, false)));
        }
        t += down + up;
    }
    v
}

#[test]
fn explore() {
    for seed in 1u64..=12 {
        let mut s = spec(seed, Mode::Handover, 0, 80 * MB);
        s.actions = flaps(seed, 12_000);
        s.time_limit = at(60_000);
        let r = mpbond::sim::mptcp::run(&s);
        println!(
            "seed {seed}: ok {} stall {:?} ended {:?} done {:?}",
            r.completed, r.stalls.0.gap, r.stalls.0.ended, r.data_done_at
        );
        if !r.completed {
            println!("  err {:?}", r.error);
        }
        if r.stalls.0.gap.as_millis() > 400 {
            println!("  {:?}", s.actions);
            for st in r.stall_log.0.iter().filter(|s| s.gap.as_millis() >= 80) {
                println!("  stall {:?} ended {:?}", st.gap, st.ended);
            }
            println!("  {:?}", quiet(&r.client_events));
        }
    }
}
