//! Simulator: redundant TCP (issue 16). A small write that waits on a reply goes on both
//! subflows with the same DSS mapping (RFC 8684 §3.3.1, §3.3.6), so a blackhole of the regular
//! path costs it no retransmission timeout; the receiver keeps the first copy and the stream
//! stays byte-exact (the simulator checks every byte).
#![allow(clippy::unwrap_used, reason = "test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured lines")]

mod common;

use std::time::Duration;

use common::mpsim::{at, ms, run_ok, spec};
use mpbond::config::Mode;
use mpbond::sim::mptcp::{Action, MpSpec};
use mpbond::sim::seed_from_env;

/// The first message, then the next one written as Wi-Fi is blackholed.
const FIRST: u64 = 1_000;
const NEXT: u64 = 300;
const LOSS_AT: u64 = 2_000;
/// One way on cellular in [`spec`].
const CELL_ONE_WAY: Duration = Duration::from_millis(30);

fn interactive(seed: u64, mode: Mode, redundant_interactive: bool) -> MpSpec {
    let mut s = spec(seed, mode, FIRST + NEXT, 0);
    s.client.redundant_interactive = redundant_interactive;
    s.c2s_first = Some(FIRST);
    s.actions = vec![
        (at(LOSS_AT), Action::NetDown(0, true)),
        (at(LOSS_AT), Action::Release),
    ];
    s.time_limit = at(60_000);
    s
}

/// From the next message's write to the server's first byte of it.
fn took(s: &MpSpec) -> Duration {
    let r = run_ok(s);
    let (written, got) = r.released.unwrap();
    got.unwrap_or_else(|| panic!("the next message never arrived: {:?}", r.error)) - written
}

#[test]
fn a_blackhole_costs_a_redundant_interactive_write_no_rto() {
    let seed = seed_from_env(31);
    let plain = took(&interactive(seed, Mode::Handover, false));
    let copied = took(&interactive(seed, Mode::Handover, true));
    let all = took(&interactive(seed, Mode::Redundant, false));
    println!(
        "Wi-Fi blackholed as a 300-byte message is written (handover, backup on cellular): \
         arrives after {plain:?} without copies, {copied:?} with interactive copies, {all:?} in redundant mode"
    );
    // The copy went on the cellular subflow at once: one cellular one-way delay (and its
    // serialization), not the RTO (200 ms at least) or the liveness probes.
    for t in [copied, all] {
        assert!(t <= CELL_ONE_WAY + ms(10), "seed {seed}: {t:?}");
    }
    assert!(plain >= ms(100), "seed {seed}: without copies {plain:?}");
}

#[test]
fn redundant_mode_stays_byte_exact_across_a_blackhole_and_its_return() {
    for mode in [Mode::Redundant, Mode::Interactive] {
        let seed = seed_from_env(32);
        let mut s = spec(seed, mode, 2_000_000, 2_000_000);
        s.actions = vec![
            (at(300), Action::NetDown(0, true)),
            (at(1_500), Action::NetDown(0, false)),
        ];
        let r = run_ok(&s);
        // Both subflows carried the data.
        assert!(
            r.final_stats[2].delivered_bytes > 100_000,
            "seed {seed}: {:?}",
            r.final_stats
        );
        println!(
            "{mode} mode, 2 MB each way, blackhole 0.3-1.5 s: done at {:?}, cellular {} B up, stalls {:?}",
            r.finished_at, r.final_stats[2].delivered_bytes, r.stalls
        );
    }
}

#[test]
fn bulk_writes_are_not_copied_in_handover_mode() {
    // 1 MB upload with interactive copies on: only the first small chunk of a burst can be
    // copied; the cellular backup carries (almost) nothing.
    let mut s = spec(seed_from_env(35), Mode::Handover, 1 << 20, 0);
    s.client.redundant_interactive = true;
    let r = run_ok(&s);
    assert!(
        r.final_stats[2].delivered_bytes < 20_000,
        "cellular carried {:?}",
        r.final_stats[2]
    );
}
