//! MPTCP client and server over two simulated paths: 10 MB byte-exact each way in every
//! scheduler mode, and where each mode puts the bytes.

#![allow(clippy::print_stdout, reason = "tests print timings and byte counts")]

mod common;

use common::mpsim::{run_ok, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::Event;

const MB10: u64 = 10 << 20;

fn ten_mb(mode: Mode) -> mpbond::sim::mptcp::MpReport {
    let s = spec(11, mode, MB10, MB10);
    let r = run_ok(&s);
    assert!(r.client_mptcp, "fell back: {:?}", r.client_events);
    assert!(r.client_events.contains(&Event::Connected { mptcp: true }));
    // Two subflows came up on the client (initial + join).
    let ups = r
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::SubflowUp { .. }))
        .count();
    assert_eq!(ups, 2, "{:?}", r.client_events);
    println!(
        "{mode}: done at {:?}; bytes wifi up/down {} / {}, cell up/down {} / {}",
        r.finished_at,
        r.final_stats[0].sent_bytes,
        r.final_stats[1].sent_bytes,
        r.final_stats[2].sent_bytes,
        r.final_stats[3].sent_bytes
    );
    r
}

#[test]
fn handover_10mb_each_way_stays_on_wifi() {
    let r = ten_mb(Mode::Handover);
    // The backup carries only handshakes and ACKs.
    assert!(r.final_stats[2].sent_bytes < 100_000, "{:?}", r.final_stats);
    assert!(r.final_stats[3].sent_bytes < 100_000, "{:?}", r.final_stats);
    assert!(
        r.client_events
            .iter()
            .any(|e| matches!(e, Event::SubflowUp { backup: true, .. }))
    );
}

#[test]
fn interactive_10mb_each_way_prefers_low_latency() {
    let r = ten_mb(Mode::Interactive);
    // Wi-Fi has the lower RTT: it carries most of the data.
    assert!(r.final_stats[0].sent_bytes > r.final_stats[2].sent_bytes);
    assert!(r.final_stats[1].sent_bytes > r.final_stats[3].sent_bytes);
}

#[test]
fn aggregate_10mb_each_way_uses_both_paths_and_is_faster() {
    let r = ten_mb(Mode::Aggregate);
    assert!(r.final_stats[2].sent_bytes > 1 << 20, "{:?}", r.final_stats);
    assert!(r.final_stats[3].sent_bytes > 1 << 20, "{:?}", r.final_stats);
    let h = ten_mb(Mode::Handover);
    assert!(
        r.finished_at < h.finished_at,
        "aggregate {:?} vs handover {:?}",
        r.finished_at,
        h.finished_at
    );
}

#[test]
fn on_demand_join_never_opens_the_backup_when_wifi_is_fine() {
    let mut s = spec(12, Mode::Handover, 1 << 20, 1 << 20);
    s.client.join = JoinPolicy::OnDemand;
    let r = run_ok(&s);
    assert_eq!(r.final_stats[2].sent, 0, "{:?}", r.final_stats);
}

#[test]
fn dss_checksums_when_required() {
    let mut s = spec(13, Mode::Aggregate, 2 << 20, 2 << 20);
    s.client.capable.checksum_required = true;
    let r = run_ok(&s);
    assert!(r.client_mptcp);
}
