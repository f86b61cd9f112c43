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
fn a_short_exchange_ends_before_its_backup_joins_and_an_early_loss_joins_at_once() {
    // 1 KB each way is over in a few Wi-Fi round trips (20 ms), before the join delay (100 ms):
    // no subflow ever opens on cellular.
    let mut s = spec(24, Mode::Handover, 1000, 1000);
    s.client.join_delay = mpbond::mptcp::DEFAULT_JOIN_DELAY;
    let r = run_ok(&s);
    assert_eq!(r.final_stats[2].sent, 0, "{:?}", r.final_stats);
    println!("1 KB exchange: done at {:?}", r.finished_at);
    // Without the delay the backup joins as soon as the MP_CAPABLE is confirmed.
    s.client.join_delay = std::time::Duration::ZERO;
    let r = run_ok(&s);
    assert!(r.final_stats[2].sent > 0, "{:?}", r.final_stats);

    // Wi-Fi blackholed 40 ms in, long before the delay passed: the Wi-Fi subflow falls
    // silent with nowhere to move to, and the backup joins at once rather than at 100 ms.
    let mut s = spec(25, Mode::Handover, 4 * MB, 4 * MB);
    s.client.join_delay = mpbond::mptcp::DEFAULT_JOIN_DELAY;
    s.actions = vec![(at(40), Action::NetDown(0, true))];
    let r = run_ok(&s);
    assert!(r.final_stats[2].delivered_bytes > 3 * MB, "{:?}", r.final_stats);
    let (down, up) = r.stalls;
    println!(
        "blackhole at 40 ms: longest stalls {down:?} / {up:?}, done at {:?}",
        r.finished_at
    );
}

#[test]
fn killed_wifi_reinjects_at_once() {
    // Cellular bytes in the 150 ms after the failure (less than the 200 ms minimum RTO).
    let cell_after = |act: Action| {
        let mut s = spec(23, Mode::Handover, 10 * MB, 10 * MB);
        // Only the RTO notices a blackhole here (the liveness probes have their own test).
        s.client.stale_rtts = 0;
        s.server.stale_rtts = 0;
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
fn a_blackholed_wifi_is_found_unresponsive_within_a_few_round_trips() {
    // Wi-Fi (20 ms RTT) drops everything while its link stays up, during an upload, a download
    // and both. Nobody tells the engines: the sender finds no ACKs coming back, the receiver's
    // probes go unanswered; the data moves to cellular long before a retransmission timeout
    // would act.
    for (seed, c2s, s2c) in [(31, 10 * MB, 10 * MB), (32, 0, 10 * MB), (33, 10 * MB, 0)] {
        let mut s = spec(seed, Mode::Handover, c2s, s2c);
        s.actions = vec![(at(500), Action::NetDown(0, true))];
        let r = run_ok(&s);
        // The sending side notices first (no ACKs); in a download that is the server.
        let silent = r
            .client_events
            .iter()
            .chain(&r.server_events)
            .find_map(|e| match e {
                Event::PathUnresponsive { path, silent_for, .. } if path.0 == 0 => Some(*silent_for),
                _ => None,
            });
        println!(
            "up {c2s} down {s2c}: Wi-Fi found unresponsive after {silent:?}, done at {:?}",
            r.finished_at
        );
        let silent = silent.unwrap_or_else(|| panic!("no PathUnresponsive: {:?}", r.client_events));
        // A few round trips (20 ms on Wi-Fi, plus queueing), below the 200 ms minimum RTO.
        assert!(silent < std::time::Duration::from_millis(200), "{silent:?}");
        assert!(r.final_stats[2].sent > 0 || r.final_stats[3].sent > 0);
    }
}

#[test]
fn a_quiet_sender_is_not_taken_for_a_dead_path() {
    // Request/response with pauses longer than many RTTs: the probes are answered, Wi-Fi stays.
    let mut s = spec(34, Mode::Handover, 200_000, 200_000);
    s.actions = (1..8).map(|k| (at(400 * k), Action::Snapshot)).collect();
    let r = run_ok(&s);
    assert!(
        !r.client_events
            .iter()
            .any(|e| matches!(e, Event::PathUnresponsive { .. })),
        "{:?}",
        r.client_events
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
    assert!(
        wifi > 10 * cell,
        "after the return: wifi {wifi} cell {cell}: {:?}",
        r.client_events
    );
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
    assert!(
        d(2) > 3 * d(0),
        "client → server: cell {} wifi {}: {:?} / {:?}",
        d(2),
        d(0),
        r.client_events,
        r.server_events
    );
    assert!(d(3) > 3 * d(1), "server → client: cell {} wifi {}", d(3), d(1));
}
