//! Simulator: backups behind a strict carrier NAT (issue 14, "backups that are really there")
//! and a cellular path kept as a last resort (issue 16, the budget's soft limit).
//!
//! The NAT on the cellular path forgets a mapping after 20 s idle and drops the packets of
//! mappings it does not know. An interactive flow sends a first message, sits idle for 30 s
//! (its cellular backup subflow's mapping is gone), then Wi-Fi is lost just as it sends its
//! next message: that message must arrive within 3 cellular RTTs (plus the failover
//! detection time when Wi-Fi is blackholed rather than down).
#![allow(clippy::unwrap_used, reason = "test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured lines")]

mod common;

use std::time::Duration;

use common::mpsim::{at, run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::{Event, PathId};
use mpbond::sim::mptcp::{Action, MpReport, MpSpec};
use mpbond::sim::seed_from_env;
use mpbond::time::Instant;

/// Cellular round trip of [`spec`]: 30 ms each way.
const CELL_RTT: Duration = Duration::from_millis(60);
/// The first message, then the next one after the idle time.
const FIRST: u64 = 1_000;
const NEXT: u64 = 300;
/// When Wi-Fi is lost and the next message written.
const LOSS_AT: u64 = 30_000;

fn idle_then_loss(seed: u64, loss: Action) -> MpSpec {
    let mut s = spec(seed, Mode::Handover, FIRST + NEXT, 0);
    s.cell_nat = Some(Duration::from_secs(20));
    s.c2s_first = Some(FIRST);
    s.actions = vec![(at(LOSS_AT), loss), (at(LOSS_AT), Action::Release)];
    s.time_limit = at(300_000);
    s
}

/// How long the next message took from its write to the server, and when the client
/// declared Wi-Fi unresponsive (if it did).
fn first_message(r: &MpReport) -> (Duration, Option<Instant>) {
    let (written, got) = r.released.unwrap();
    let got = got.unwrap_or_else(|| panic!("the next message never arrived: {:?}", r.error));
    let detected = r
        .client_events
        .iter()
        .zip(&r.client_event_at)
        .find(|(e, _)| matches!(e, Event::PathUnresponsive { path: PathId(0), .. }))
        .map(|(_, &t)| t);
    (got - written, detected)
}

#[test]
fn after_a_long_idle_the_first_message_after_wifi_goes_down_arrives_within_three_cellular_rtts() {
    let seed = seed_from_env(11);
    let r = run_ok(&idle_then_loss(seed, Action::Kill(0)));
    let (took, _) = first_message(&r);
    println!("link down after 30 s idle, NAT forgets after 20 s: next message took {took:?}");
    assert!(took <= CELL_RTT * 3, "seed {seed}: {took:?} > 3 cellular RTTs");
}

#[test]
fn after_a_long_idle_the_first_message_after_wifi_is_blackholed_arrives_within_detection_plus_three_cellular_rtts()
 {
    let seed = seed_from_env(12);
    let r = run_ok(&idle_then_loss(seed, Action::NetDown(0, true)));
    let (took, detected) = first_message(&r);
    let detection = detected.expect("Wi-Fi declared unresponsive") - at(LOSS_AT);
    println!("blackhole after 30 s idle: detection {detection:?}, next message took {took:?}");
    assert!(
        took <= detection + CELL_RTT * 3,
        "seed {seed}: {took:?} > detection {detection:?} + 3 cellular RTTs"
    );
}

#[test]
fn without_the_check_the_nat_swallows_the_stale_backup() {
    // The same run with the check off (`nat_idle` 0): the message waits for the stale
    // subflow to time out (the NAT model is what makes the tests above fail without it).
    let seed = seed_from_env(13);
    for loss in [Action::Kill(0), Action::NetDown(0, true)] {
        let mut s = idle_then_loss(seed, loss);
        s.client.nat_idle = Duration::ZERO;
        let r = mpbond::sim::mptcp::run(&s);
        let took = r.released.and_then(|(w, g)| g.map(|g| g - w));
        println!("{loss:?} after 30 s idle, check off: next message took {took:?}");
        assert!(
            took.is_none_or(|t| t > Duration::from_secs(1)),
            "{loss:?}: {took:?}"
        );
    }
}

#[test]
fn a_backup_keepalive_keeps_the_mapping_and_no_fresh_join_is_needed() {
    let seed = seed_from_env(14);
    let mut s = idle_then_loss(seed, Action::Kill(0));
    s.client.backup_keepalive = Duration::from_secs(10);
    let r = run_ok(&s);
    let (took, _) = first_message(&r);
    println!("link down after 30 s idle, keep-alive every 10 s: next message took {took:?}");
    assert!(took <= CELL_RTT, "seed {seed}: {took:?}");
    // The cellular subflow that was there before the loss carried on: no subflow on cellular
    // went down.
    let cell_down = r
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::SubflowDown { path: PathId(1), .. }))
        .count();
    assert_eq!(cell_down, 0, "{:?}", r.client_events);
}

#[test]
fn a_last_resort_cellular_path_has_no_subflow_while_wifi_works_and_one_at_wifi_loss() {
    let seed = seed_from_env(15);
    let mut s = spec(seed, Mode::Handover, 0, 20_000_000);
    s.cell_last_resort = true;
    s.actions = vec![
        (at(500), Action::Inspect),
        (at(1_000), Action::Kill(0)),
        (at(1_500), Action::Inspect),
        (at(2_000), Action::Restore(0)),
        (at(3_000), Action::Inspect),
    ];
    let r = run_ok(&s);
    let on_cell = |k: usize| r.inspections[k].1.iter().filter(|s| s.path == PathId(1)).count();
    assert_eq!(r.inspections.len(), 3, "the transfer outlasted the inspections");
    assert_eq!(
        on_cell(0),
        0,
        "a cellular subflow while Wi-Fi works: {:?}",
        r.inspections[0].1
    );
    assert_eq!(
        on_cell(1),
        1,
        "no cellular subflow after the Wi-Fi loss: {:?}",
        r.inspections[1].1
    );
    assert_eq!(
        on_cell(2),
        0,
        "cellular kept after Wi-Fi came back: {:?}",
        r.inspections[2].1
    );
}

#[test]
fn a_long_download_on_wifi_does_not_keep_racing_the_idle_backup() {
    // 40 s of download at 1 MB/s over Wi-Fi while the cellular backup sits idle behind the
    // NAT: the liveness probes of the download's pauses are answered in time, so they are no
    // suspicion, and the backup is not probed and raced every `nat_idle`.
    let seed = seed_from_env(16);
    let mut s = spec(seed, Mode::Handover, 0, 40_000_000);
    s.wifi = vec![
        mpbond::sim::Link::Delay(Duration::from_millis(10)),
        mpbond::sim::Link::Rate {
            bytes_per_sec: 1_000_000,
            queue_bytes: 64_000,
        },
    ];
    s.cell_nat = Some(Duration::from_secs(20));
    s.time_limit = at(120_000);
    let r = run_ok(&s);
    let cell_ups = r
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::SubflowUp { path: PathId(1), .. }))
        .count();
    let done = r.data_done_at.unwrap();
    println!("40 MB at 1 MB/s over Wi-Fi, done at {done:?}: {cell_ups} cellular subflow(s) up");
    assert!(
        done > at(35_000),
        "the download outlasted several nat_idle periods: {done:?}"
    );
    assert_eq!(cell_ups, 1, "the backup was raced: {:?}", r.client_events);
}
