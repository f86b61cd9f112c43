//! Flapping Wi-Fi under MPTCP (issue 14): link down/up and blackholes alternating about every
//! second, with several concurrent downloads. Every byte must arrive, and no flow may stand
//! still much longer than it does for one clean failover in the same simulator; a path that
//! came back is held as a backup before it is made primary again; a loaded path whose queue
//! delays the answers is not taken for a dead one.
//!
//! The flap patterns are seeded (`MPBOND_SIM_SEED` replays one).

#![allow(clippy::print_stdout, reason = "tests print timings and byte counts")]

mod common;

use std::time::Duration;

use common::mpsim::{at, ms, run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::Event;
use mpbond::sim::mptcp::{Action, MpReport, MpSpec};
use mpbond::sim::{Link, Rng, seed_from_env};
use mpbond::time::Instant;

const MB: u64 = 1 << 20;

/// Wi-Fi losses from 0.8 s until `until` ms: each a link down (the policy layer is told) or a
/// blackhole (nobody is), 0.3 to 1.5 s long, 0.3 to 1.5 s apart.
fn flaps(seed: u64, until: u64) -> Vec<(Instant, Action)> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::new();
    let mut t = 800;
    while t < until {
        let down = 300 + rng.below(1200);
        let up = 300 + rng.below(1200);
        if rng.chance(0.5) {
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

/// The longest stall toward the client over all flows, and when it ended.
fn longest(r: &MpReport) -> (Duration, Instant) {
    r.flows
        .iter()
        .map(|f| (f.stalls.0.gap, f.stalls.0.ended))
        .max()
        .unwrap_or_default()
}

/// The gap of one clean failover of a download in this simulator: the longer of a link down
/// and a blackhole.
fn single_failover_gap(flows: usize) -> Duration {
    [Action::Kill(0), Action::NetDown(0, true)]
        .into_iter()
        .map(|act| {
            let mut s = spec(1, Mode::Handover, 0, 12 * MB);
            s.flows = flows;
            s.actions = vec![(at(1_000), act)];
            let r = run_ok(&s);
            let (gap, ended) = longest(&r);
            println!("single failover {act:?}, {flows} flows: longest stall {gap:?} (ended {ended:?})");
            gap
        })
        .max()
        .unwrap_or_default()
}

fn flapping(seed: u64, flows: usize, c2s: u64, s2c: u64) -> MpSpec {
    let mut s = spec(seed, Mode::Handover, c2s, s2c);
    s.flows = flows;
    s.actions = flaps(seed, 8_000);
    s.time_limit = at(120_000);
    s
}

#[test]
fn flapping_wifi_stalls_no_flow_longer_than_three_single_failovers() {
    const FLOWS: usize = 3;
    let single = single_failover_gap(FLOWS);
    let seeds: Vec<u64> = match std::env::var("MPBOND_SIM_SEED") {
        Ok(_) => vec![seed_from_env(1)],
        Err(_) => (1..=6).collect(),
    };
    for seed in seeds {
        let s = flapping(seed, FLOWS, 0, 12 * MB);
        let r = run_ok(&s);
        let done = r.data_done_at.unwrap_or(r.finished_at);
        let losses = s
            .actions
            .iter()
            .filter(|(t, a)| *t < done && matches!(a, Action::Kill(_) | Action::NetDown(_, true)))
            .count();
        let (gap, ended) = longest(&r);
        println!(
            "seed {seed}: {FLOWS} flows, {losses} Wi-Fi losses during the transfer, longest stall {gap:?} \
             (ended {ended:?}), single failover {single:?}, done {done:?}"
        );
        // The flapping happened while the data moved.
        assert!(losses >= 3, "seed {seed}: only {losses} losses before {done:?}");
        assert!(
            gap <= single * 3,
            "seed {seed}: longest stall {gap:?} (ended {ended:?}) > 3 x {single:?}: {:?}",
            r.flows.iter().map(|f| f.stall_log.0.clone()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn flapping_wifi_with_data_both_ways() {
    let single = single_failover_gap(1);
    for seed in [7, 8] {
        let s = flapping(seed, 2, 6 * MB, 12 * MB);
        let r = run_ok(&s);
        let worst = r
            .flows
            .iter()
            .flat_map(|f| [f.stalls.0.gap, f.stalls.1.gap])
            .max()
            .unwrap_or_default();
        println!("seed {seed}: both ways, longest stall {worst:?}, single failover {single:?}");
        assert!(worst <= single * 3, "seed {seed}: {worst:?} > 3 x {single:?}");
    }
}

/// What the client reported about Wi-Fi.
struct WifiEvents {
    /// When a Wi-Fi subflow came up, and whether as a backup.
    ups: Vec<(Instant, bool)>,
    /// When Wi-Fi was found unresponsive, after how long a silence.
    unresponsive: Vec<(Instant, Duration)>,
}

fn wifi_events(r: &MpReport) -> WifiEvents {
    let mut ups = Vec::new();
    let mut unresponsive = Vec::new();
    for (e, &t) in r.client_events.iter().zip(&r.client_event_at) {
        match *e {
            Event::SubflowUp { path, backup, .. } if path.0 == 0 => ups.push((t, backup)),
            Event::PathUnresponsive { path, silent_for, .. } if path.0 == 0 => {
                unresponsive.push((t, silent_for))
            }
            _ => {}
        }
    }
    WifiEvents { ups, unresponsive }
}

#[test]
fn the_blackhole_after_a_rejoin_is_found_as_fast_as_the_first() {
    // Blackholed at 0.8 s (found unresponsive), back at 2.15 s: the join opened at 1.85 s lost
    // its SYN, so the new subflow has no RTT sample of its own (Karn) and, only receiving,
    // never gets one. Blackholed again at 3.6 s: the client must notice as fast as the first
    // time (before this was fixed its bound came from the 3 s RTO and the data waited for
    // Wi-Fi to come back).
    let mut s = spec(3, Mode::Handover, 0, 40 * MB);
    s.actions = vec![
        (at(800), Action::NetDown(0, true)),
        (at(2_153), Action::NetDown(0, false)),
        (at(3_614), Action::NetDown(0, true)),
        (at(3_961), Action::NetDown(0, false)),
    ];
    let r = run_ok(&s);
    let WifiEvents { ups, unresponsive } = wifi_events(&r);
    println!(
        "Wi-Fi up {ups:?}, unresponsive {unresponsive:?}, stalls {:?}",
        r.stall_log.0
    );
    let second = unresponsive
        .iter()
        .find(|(t, _)| *t > at(3_614) && *t < at(3_961))
        .unwrap_or_else(|| panic!("the second blackhole went unnoticed: {unresponsive:?}"));
    assert!(second.1 < ms(200), "{second:?}");
    assert!(r.stalls.0.gap < ms(330), "{:?}", r.stalls.0);
}

#[test]
fn a_returning_wifi_is_held_as_backup_longer_after_each_flap() {
    // Three link losses in a row: each return joins as a backup (MP_JOIN flag B) and stays
    // one, with cellular primary, for longer each time; a later, single loss after a long
    // steady time is held for the base hold only.
    let mut s = spec(41, Mode::Handover, 0, 200 * MB);
    // The damping is off by default (in the lab it lengthened the longest stall under
    // flapping from 125 to 460 ms); on here, with its documented base hold.
    s.client.flap_hold = std::time::Duration::from_millis(500);
    s.server.flap_hold = s.client.flap_hold;
    s.actions = vec![
        (at(500), Action::Kill(0)),
        (at(1_000), Action::Restore(0)),
        (at(3_000), Action::Kill(0)),
        (at(3_500), Action::Restore(0)),
        (at(6_500), Action::Kill(0)),
        (at(7_000), Action::Restore(0)),
    ];
    s.actions
        .extend((0..400).map(|k| (at(1_000 + 25 * k), Action::Inspect)));
    let r = run_ok(&s);
    let ups = wifi_events(&r).ups;
    let rejoins: Vec<Instant> = ups
        .iter()
        .skip(1)
        .map(|&(t, backup)| {
            assert!(backup, "a returning Wi-Fi joins as a backup: {ups:?}");
            t
        })
        .collect();
    assert_eq!(rejoins.len(), 3, "{ups:?}");
    // When the client made each returned Wi-Fi subflow primary again.
    let promoted: Vec<Instant> = rejoins
        .iter()
        .map(|&up| {
            r.inspections
                .iter()
                .find(|(t, c, _)| *t > up && c.iter().any(|x| x.path.0 == 0 && !x.backup))
                .map(|(t, _, _)| *t)
                .unwrap_or_else(|| panic!("Wi-Fi back at {up:?} never made primary"))
        })
        .collect();
    let holds: Vec<Duration> = rejoins.iter().zip(&promoted).map(|(u, p)| *p - *u).collect();
    println!("Wi-Fi back at {rejoins:?}, primary at {promoted:?}: held {holds:?}");
    // Defaults: 500 ms, doubled per recent flap (inspected every 25 ms).
    assert!(holds[0] >= ms(500) && holds[0] < ms(600), "{holds:?}");
    assert!(holds[1] >= ms(1_000) && holds[1] < ms(1_100), "{holds:?}");
    assert!(holds[2] >= ms(2_000) && holds[2] < ms(2_100), "{holds:?}");
    // While held, cellular is primary: the server sends there.
    let during = r
        .inspections
        .iter()
        .find(|(t, _, _)| *t > rejoins[2] + ms(100))
        .expect("inspected");
    assert!(
        during.1.iter().any(|x| x.path.0 == 1 && !x.backup),
        "{:?}",
        during.1
    );
}

#[test]
fn a_queue_delayed_loaded_path_is_not_taken_for_a_dead_one() {
    // Wi-Fi at 200 Mbit/s with a router queue of 50 ms each way and a 20 ms base RTT, loaded
    // both ways: the answers to the liveness probes wait behind the data in the queues. The
    // path is healthy: neither side may fail it over.
    for seed in [51, 52, 53] {
        let mut s = spec(seed, Mode::Handover, 40 * MB, 40 * MB);
        s.wifi = vec![
            Link::Delay(ms(10)),
            Link::Jitter(ms(2)),
            Link::Rate {
                bytes_per_sec: 25_000_000,
                queue_bytes: 1_250_000,
            },
        ];
        let r = run_ok(&s);
        let failovers: Vec<_> = r
            .client_events
            .iter()
            .chain(&r.server_events)
            .filter(|e| matches!(e, Event::PathUnresponsive { .. }))
            .collect();
        println!("seed {seed}: done {:?}, failovers {failovers:?}", r.data_done_at);
        assert!(failovers.is_empty(), "seed {seed}: {failovers:?}");
    }
}
