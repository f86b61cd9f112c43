//! Path failures under MPTCP: a blackholed Wi-Fi (nobody tells the engine), a Wi-Fi declared
//! down by the policy layer (reinjection at once), and a Wi-Fi that returns (handover moves the
//! traffic back).

#![allow(clippy::print_stdout, reason = "tests print timings and byte counts")]

mod common;

use common::mpsim::{at, run_ok, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::Event;
use mpbond::sim::mptcp::Action;

const MB: u64 = 1 << 20;

#[test]
fn blackholed_wifi_completes_on_cellular() {
    for mode in [Mode::Handover, Mode::Interactive, Mode::Aggregate] {
        let mut s = spec(21, mode, 10 * MB, 10 * MB);
        // Wi-Fi silently drops everything from 0.5 s on, for good.
        s.actions = vec![(at(500), Action::NetDown(0, true))];
        let r = run_ok(&s);
        assert!(r.client_mptcp);
        // Most of the data went over cellular after the blackhole.
        assert!(
            r.final_stats[2].delivered_bytes > 3 * MB,
            "{mode}: {:?}",
            r.final_stats
        );
        println!(
            "{mode}: blackhole, done at {:?} data {:?}",
            r.finished_at, r.data_done_at
        );
    }
}

#[test]
fn temporary_blackhole_with_on_demand_join() {
    let mut s = spec(22, Mode::Handover, 4 * MB, 4 * MB);
    s.client.join = JoinPolicy::OnDemand;
    s.actions = vec![
        (at(300), Action::NetDown(0, true)),
        (at(5_000), Action::NetDown(0, false)),
    ];
    let r = run_ok(&s);
    // The backup was only opened when Wi-Fi stalled.
    assert!(r.final_stats[2].sent > 0);
    println!("on-demand blackhole: done at {:?}", r.finished_at);
}

#[test]
fn killed_wifi_reinjects_at_once() {
    // Cellular bytes in the 150 ms after the failure (less than the 200 ms minimum RTO).
    let cell_after = |act: Action| {
        let mut s = spec(23, Mode::Handover, 10 * MB, 10 * MB);
        s.actions = vec![
            (at(500), Action::Snapshot),
            (at(500), act),
            (at(650), Action::Snapshot),
        ];
        let r = run_ok(&s);
        println!("{act:?}: done at {:?} data {:?}", r.finished_at, r.data_done_at);
        let (a, b) = (&r.snapshots[0].1, &r.snapshots[1].1);
        (
            b[2].delivered_bytes - a[2].delivered_bytes + b[3].delivered_bytes - a[3].delivered_bytes,
            r,
        )
    };
    let (killed, r) = cell_after(Action::Kill(0));
    assert!(
        r.client_events
            .iter()
            .any(|e| matches!(e, Event::SubflowDown { .. }))
    );
    let (blackholed, _) = cell_after(Action::NetDown(0, true));
    // Declared down: what was in flight on Wi-Fi is reinjected at once, no RTO wait.
    assert!(killed > 40_000, "killed: {killed} bytes on cellular");
    assert!(
        killed > 4 * blackholed.max(1),
        "killed {killed} vs blackholed {blackholed}"
    );
}

#[test]
fn wifi_returns_and_handover_moves_traffic_back() {
    let mut s = spec(24, Mode::Handover, 30 * MB, 30 * MB);
    s.actions = vec![
        (at(300), Action::Kill(0)),
        (at(2_000), Action::Restore(0)),
        (at(2_600), Action::Snapshot),
        (at(3_600), Action::Snapshot),
    ];
    let r = run_ok(&s);
    assert_eq!(r.snapshots.len(), 2, "finished too early: {:?}", r.finished_at);
    let (a, b) = (&r.snapshots[0].1, &r.snapshots[1].1);
    let wifi = b[0].sent_bytes - a[0].sent_bytes + b[1].sent_bytes - a[1].sent_bytes;
    let cell = b[2].sent_bytes - a[2].sent_bytes + b[3].sent_bytes - a[3].sent_bytes;
    assert!(wifi > 10 * cell, "after the return: wifi {wifi} cell {cell}");
    // A second subflow came up on Wi-Fi after its return.
    let wifi_ups = r
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::SubflowUp { path, .. } if path.0 == 0))
        .count();
    assert_eq!(wifi_ups, 2, "{:?}", r.client_events);
}

#[test]
fn mp_prio_swaps_primary_and_backup() {
    // Handover: Wi-Fi carries the data until the policy makes it the backup and cellular the
    // primary (MP_PRIO both ways); then the server sends on cellular too.
    let mut s = spec(25, Mode::Handover, 20 * MB, 20 * MB);
    s.actions = vec![
        (at(500), Action::SetBackup(0, true)),
        (at(500), Action::SetBackup(1, false)),
        (at(1_000), Action::Snapshot),
        (at(2_000), Action::Snapshot),
    ];
    let r = run_ok(&s);
    assert_eq!(r.snapshots.len(), 2, "finished too early: {:?}", r.finished_at);
    let (a, b) = (&r.snapshots[0].1, &r.snapshots[1].1);
    let d = |k: usize| b[k].sent_bytes - a[k].sent_bytes;
    println!(
        "after MP_PRIO: wifi up/down {} / {}, cell up/down {} / {}",
        d(0),
        d(1),
        d(2),
        d(3)
    );
    // Both directions moved to cellular: the server acted on the MP_PRIO.
    assert!(d(2) > 3 * d(0), "client → server: cell {} wifi {}", d(2), d(0));
    assert!(d(3) > 3 * d(1), "server → client: cell {} wifi {}", d(3), d(1));
}
