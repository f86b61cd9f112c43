//! Shared setup of the two-path MPTCP simulator tests.
#![allow(dead_code)]

use std::time::Duration;

use mpbond::config::Mode;
use mpbond::mptcp::MptcpConfig;
use mpbond::sim::Link;
use mpbond::sim::mptcp::MpSpec;
use mpbond::time::Instant;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn at(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// Wi-Fi: 10 ms one way, 10 MB/s; cellular: 30 ms, 3 MB/s.
pub fn spec(seed: u64, mode: Mode, c2s: u64, s2c: u64) -> MpSpec {
    let cfg = MptcpConfig {
        mode,
        ..Default::default()
    };
    MpSpec {
        seed,
        client: cfg,
        server: cfg,
        client_mptcp: true,
        syn_data: 0,
        c2s,
        s2c,
        wifi: vec![
            Link::Delay(ms(10)),
            Link::Rate {
                bytes_per_sec: 10_000_000,
                queue_bytes: 256_000,
            },
        ],
        cell: vec![
            Link::Delay(ms(30)),
            Link::Rate {
                bytes_per_sec: 3_000_000,
                queue_bytes: 128_000,
            },
        ],
        wifi_up_extra: Vec::new(),
        actions: Vec::new(),
        time_limit: at(600_000),
        flows: 1,
        cell_nat: None,
        c2s_first: None,
        cell_last_resort: false,
    }
}

use mpbond::mptcp::Event;

/// Runs and asserts completion, printing the seed on failure.
pub fn run_ok(s: &MpSpec) -> mpbond::sim::mptcp::MpReport {
    let r = mpbond::sim::mptcp::run(s);
    assert!(
        r.completed,
        "seed {} failed: {:?} (client events {:?}, server events {:?})",
        s.seed,
        r.error,
        quiet(&r.client_events),
        quiet(&r.server_events)
    );
    // Without path failures both sides close gracefully.
    if s.actions.is_empty() {
        assert_eq!(
            r.terminal,
            (Some(Event::Closed), Some(Event::Closed)),
            "seed {}",
            s.seed
        );
    }
    assert!(
        r.terminal.0 == Some(Event::Closed) || r.terminal.1 == Some(Event::Closed),
        "seed {}: {:?}",
        s.seed,
        r.terminal
    );
    assert_eq!(r.client_received, s.s2c);
    assert_eq!(r.server_received, s.c2s);
    assert_eq!(r.flows.len(), s.flows.max(1), "seed {}", s.seed);
    for (k, f) in r.flows.iter().enumerate() {
        assert_eq!(
            (f.client_received, f.server_received),
            (s.s2c, s.c2s),
            "seed {} flow {k}",
            s.seed
        );
    }
    r
}

/// Events without the Readable/Writable noise.
pub fn quiet(ev: &[mpbond::mptcp::Event]) -> Vec<mpbond::mptcp::Event> {
    use mpbond::mptcp::Event;
    ev.iter()
        .filter(|e| !matches!(e, Event::Readable | Event::Writable))
        .copied()
        .collect()
}
