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
    for (name, acts) in [
        ("kill", vec![(at(1000), Action::Kill(0))]),
        ("blackhole", vec![(at(1000), Action::NetDown(0, true))]),
    ] {
        let mut s = spec(1, Mode::Handover, 0, 20 * MB);
        s.actions = acts;
        let r = mpbond::sim::mptcp::run(&s);
        println!(
            "{name}: ok {} stall {:?} ended {:?}",
            r.completed, r.stalls.0.gap, r.stalls.0.ended
        );
    }
    let seeds: Vec<u64> = std::env::var("SEEDS")
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![3]);
    for seed in seeds {
        let mut s = spec(seed, Mode::Handover, 0, 80 * MB);
        s.actions = flaps(seed, 12_000);
        s.time_limit = at(60_000);
        if let Ok(t0) = std::env::var("INSPECT") {
            let t0: u64 = t0.parse().unwrap();
            for k in 0..20 {
                s.actions.push((at(t0 + 25 * k), Action::Inspect));
            }
        }

        let r = mpbond::sim::mptcp::run(&s);
        println!(
            "seed {seed}: ok {} stall {:?} ended {:?} done {:?}",
            r.completed, r.stalls.0.gap, r.stalls.0.ended, r.data_done_at
        );
        if !r.completed {
            println!("  err {:?}", r.error);
        }
        if std::env::var("VERBOSE").is_err() {
            continue;
        }
        println!("  {:?}", s.actions);
        for (t, c, sv) in &r.inspections {
            for x in c {
                println!(
                    "  I {t:?} C p{} usable {} backup {} srtt {:?} rto {:?} rtos {} infl {} last_recv {:?} sent {}",
                    x.path.0,
                    x.usable,
                    x.backup,
                    x.health.srtt,
                    x.health.rto,
                    x.health.consecutive_rtos,
                    x.health.bytes_in_flight,
                    x.health.last_recv,
                    x.bytes_sent
                );
            }
            for x in sv {
                println!(
                    "  I {t:?} S p{} usable {} backup {} srtt {:?} rto {:?} rtos {} infl {} last_recv {:?} sent {} cwnd {}",
                    x.path.0,
                    x.usable,
                    x.backup,
                    x.health.srtt,
                    x.health.rto,
                    x.health.consecutive_rtos,
                    x.health.bytes_in_flight,
                    x.health.last_recv,
                    x.bytes_sent,
                    x.health.cwnd
                );
            }
        }
        for st in r.stall_log.0.iter().filter(|s| s.gap.as_millis() >= 80) {
            println!("  stall {:?} ended {:?}", st.gap, st.ended);
        }
        for (e, t) in r.client_events.iter().zip(&r.client_event_at) {
            if !quiet(&[*e]).is_empty() {
                println!("  C {t:?} {e:?}");
            }
        }
        for (e, t) in r.server_events.iter().zip(&r.server_event_at) {
            if !quiet(&[*e]).is_empty() {
                println!("  S {t:?} {e:?}");
            }
        }
    }
}
