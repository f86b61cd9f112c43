//! The scheduler's choices per mode (pure function).

use std::time::Duration;

use mpbond::config::Mode;
use mpbond::mptcp::scheduler::{Candidate, pick};

fn c(idx: usize, backup: bool, rtt_ms: u64, has_room: bool, failing: bool) -> Candidate {
    Candidate {
        idx,
        backup,
        srtt: Some(Duration::from_millis(rtt_ms)),
        has_room,
        failing,
        rank: 0,
    }
}

#[test]
fn handover_waits_for_the_primary_and_uses_the_backup_only_when_it_fails() {
    let wifi = c(0, false, 50, false, false);
    let cell = c(1, true, 20, true, false);
    assert_eq!(pick(Mode::Handover, &[wifi, cell]), None, "full primary: wait");
    let wifi_ok = c(0, false, 50, true, false);
    assert_eq!(pick(Mode::Handover, &[wifi_ok, cell]), Some(0));
    let wifi_failing = c(0, false, 50, true, true);
    assert_eq!(pick(Mode::Handover, &[wifi_failing, cell]), Some(1));
    assert_eq!(pick(Mode::Handover, &[]), None);
}

#[test]
fn interactive_takes_the_lowest_rtt_and_aggregate_spills() {
    let a = c(0, false, 50, true, false);
    let b = c(1, false, 20, false, false);
    assert_eq!(
        pick(Mode::Interactive, &[a, b]),
        None,
        "fastest is full: wait for it"
    );
    assert_eq!(
        pick(Mode::Aggregate, &[a, b]),
        Some(0),
        "aggregate spills onto the slower one"
    );
    let b_room = c(1, false, 20, true, false);
    assert_eq!(pick(Mode::Interactive, &[a, b_room]), Some(1));
    assert_eq!(pick(Mode::Aggregate, &[a, b_room]), Some(1));
}

#[test]
fn backups_only_when_no_regular_subflow_is_usable() {
    // RFC 8684 §3.3.8.
    let regular = c(0, false, 100, true, false);
    let backup = c(1, true, 10, true, false);
    for m in [Mode::Handover, Mode::Interactive, Mode::Aggregate] {
        assert_eq!(pick(m, &[regular, backup]), Some(0), "{m}");
        assert_eq!(pick(m, &[c(0, false, 100, true, true), backup]), Some(1), "{m}");
    }
}

#[test]
fn handover_prefers_the_lower_ranked_path_of_a_tier_over_a_faster_one() {
    // Ethernet (rank 0) before Wi-Fi (rank 1), both regular; Wi-Fi has the lower RTT.
    let eth = Candidate {
        rank: 0,
        ..c(0, false, 40, true, false)
    };
    let wifi = Candidate {
        rank: 1,
        ..c(1, false, 10, true, false)
    };
    let cell = Candidate {
        rank: 0,
        ..c(2, true, 5, true, false)
    };
    assert_eq!(pick(Mode::Handover, &[wifi, eth, cell]), Some(0));
    let eth_failing = Candidate { failing: true, ..eth };
    assert_eq!(pick(Mode::Handover, &[eth_failing, wifi, cell]), Some(1));
    // Among backups too: a made-backup Wi-Fi (rank 1) before a second modem (rank 2).
    let wifi_b = Candidate { backup: true, ..wifi };
    let modem = Candidate {
        rank: 2,
        ..c(3, true, 5, true, false)
    };
    assert_eq!(pick(Mode::Handover, &[eth_failing, modem, wifi_b]), Some(1));
    // Aggregate and interactive still go by RTT alone.
    assert_eq!(pick(Mode::Interactive, &[eth, wifi]), Some(1));
    assert_eq!(pick(Mode::Aggregate, &[eth, wifi]), Some(1));
}
