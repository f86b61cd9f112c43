//! Simulator transfers between two TCP engines: byte-exact in both directions over a matrix of
//! impairments (loss 0/1/5 %, burst loss, RTT 1–300 ms, jitter, reordering, duplication, MTU
//! 1280–9000, zero-window stalls, a 3 s blackhole mid-transfer, IPv4/IPv6, CUBIC/NewReno, SACK
//! and timestamps on/off).
//!
//! Every case derives from a base seed (`MPBOND_SIM_SEED`, default below) and its index; a
//! failure prints both. Replay one case with `MPBOND_SIM_SEED=<seed> MPBOND_SIM_CASE=<i> cargo
//! test --test sim_transfer`. `MPBOND_SIM_BYTES` overrides the bytes per direction (default
//! 10 MB).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mpbond::sim::transfer::{TransferSpec, run};
use mpbond::sim::{Link, Network, Rng, seed_from_env};
use mpbond::tcp::{CcAlgorithm, Config};
use mpbond::time::Instant;

const DEFAULT_SEED: u64 = 0x6d70_626f_6e64;
const CASES_PER_TEST: u64 = 25;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

#[derive(Debug)]
struct Case {
    spec: TransferSpec,
    links: Vec<Link>,
    desc: String,
}

fn make_case(base: u64, index: u64) -> Case {
    let mut rng = Rng::new(base ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let bytes = env_u64("MPBOND_SIM_BYTES").unwrap_or(10_000_000);
    let v6 = rng.chance(0.25);
    let (a, b): (SocketAddr, SocketAddr) = if v6 {
        (
            "[fd00:6d70::1]:40000".parse().unwrap(),
            "[fd00:6d70::2]:443".parse().unwrap(),
        )
    } else {
        (
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.1.1:80".parse().unwrap(),
        )
    };
    let loss = [0.0, 0.01, 0.05][(index % 3) as usize];
    let rtt_ms = 1 + rng.below(300);
    let mtu = [1280usize, 1500, 1500, 4000, 9000][rng.below(5) as usize];
    let rate = 5_000_000 + rng.below(45_000_000); // bytes/s
    let bdp = (rate as f64 * rtt_ms as f64 / 1000.0) as usize;
    let queue = bdp.max(64 * 1024);
    let mut links = vec![
        Link::Mtu(mtu),
        Link::Rate {
            bytes_per_sec: rate,
            queue_bytes: queue,
        },
    ];
    let mut desc = format!("v6={v6} loss={loss} rtt={rtt_ms}ms mtu={mtu} rate={rate}B/s");
    if loss > 0.0 {
        if rng.chance(0.3) {
            // Burst loss with the same average rate: bad state loses half, lasts ~4 packets.
            let p_bg = 0.25;
            let p_gb = 2.0 * loss * p_bg / (1.0 - 2.0 * loss);
            links.push(Link::Gilbert {
                p_good_to_bad: p_gb,
                p_bad_to_good: p_bg,
                loss_good: 0.0,
                loss_bad: 0.5,
            });
            desc += " gilbert";
        } else {
            links.push(Link::Loss(loss));
        }
    }
    links.push(Link::Delay(Duration::from_micros(rtt_ms * 500)));
    if rng.chance(0.3) {
        let j = Duration::from_micros(1 + rng.below(rtt_ms * 100 + 1));
        links.push(Link::Jitter(j));
        desc += &format!(" jitter={j:?}");
    }
    if rng.chance(0.3) {
        let p = 0.005 + rng.next_f64() * 0.03;
        let extra = Duration::from_micros(200 + rng.below(3000));
        links.push(Link::Reorder { p, extra });
        desc += &format!(" reorder={p:.3}/{extra:?}");
    }
    if rng.chance(0.2) {
        let p = 0.001 + rng.next_f64() * 0.02;
        links.push(Link::Duplicate(p));
        desc += &format!(" dup={p:.3}");
    }
    let hdr = if v6 { 60 } else { 40 };
    let mut cfg = Config {
        mss: (mtu - hdr) as u16,
        ..Config::default()
    };
    if rng.chance(0.25) {
        cfg.congestion = CcAlgorithm::NewReno;
        desc += " newreno";
    }
    if rng.chance(0.15) {
        cfg.sack = false;
        desc += " nosack";
    }
    if rng.chance(0.15) {
        cfg.timestamps = false;
        desc += " nots";
    }
    if rng.chance(0.1) {
        cfg.pacing = true;
        desc += " pacing";
    }
    let mut spec = TransferSpec::new(a, b);
    spec.key_seed = index;
    spec.a_to_b = bytes;
    spec.b_to_a = bytes;
    spec.cfg_a = cfg;
    spec.cfg_b = cfg;
    // Expected transfer time, to place stalls and blackholes mid-transfer.
    let expect_ms = (bytes as f64 / rate as f64 * 1000.0) as u64 + 5 * rtt_ms;
    if index % 7 == 3 {
        // Zero-window stall: small receive buffers, both readers pause.
        spec.cfg_a.recv_buffer = 256 * 1024;
        spec.cfg_b.recv_buffer = 256 * 1024;
        let at = Instant::from_millis(expect_ms / 3);
        let dur = Duration::from_millis(500 + rng.below(2500));
        spec.read_stall = Some((at, dur));
        desc += &format!(" stall@{at:?}+{dur:?}");
    }
    if index % 5 == 2 {
        let from = Instant::from_millis(expect_ms / 2);
        links.push(Link::Blackhole {
            from,
            until: from + Duration::from_secs(3),
        });
        desc += &format!(" blackhole@{from:?}+3s");
    }
    if rng.chance(0.3) {
        // Super-segments, cut by the simulated sender's GSO (issue 15).
        spec.cfg_a.super_segments = 65_535;
        spec.cfg_b.super_segments = 65_535;
        desc += " super";
    }
    Case { spec, links, desc }
}

fn run_case(base: u64, index: u64) {
    let case = make_case(base, index);
    let mut net = Network::new(base ^ index);
    let (a, b): (IpAddr, IpAddr) = (case.spec.a.ip(), case.spec.b.ip());
    let (ab, ba) = net.add_duplex(a, b, case.links.clone());
    let r = run(&mut net, &case.spec);
    // The impairments really happened: each loss stage and the blackhole dropped packets (summed
    // over both directions: one direction may be idle in a backoff gap).
    let mut dropped = std::collections::HashMap::<String, u64>::new();
    for path in [ab, ba] {
        for st in net.stages_mut(path).unwrap().iter() {
            let lossy =
                matches!(st.link, Link::Loss(p) if p >= 0.01) || matches!(st.link, Link::Blackhole { .. });
            if lossy {
                *dropped.entry(format!("{:?}", st.link)).or_default() += st.stats.dropped;
            }
        }
    }
    for (link, n) in &dropped {
        assert!(
            *n > 0,
            "case {index}: stage {link} dropped nothing ({})",
            case.desc
        );
    }
    let ok = r.completed
        && r.a_received == case.spec.b_to_a
        && r.b_received == case.spec.a_to_b
        && r.bad_packets == 0;
    assert!(
        ok,
        "case {index} failed: {:?}\n  {}\n  replay: MPBOND_SIM_SEED={base} MPBOND_SIM_CASE={index} cargo test --test sim_transfer\n  report: {r:#?}",
        r.error, case.desc
    );
}

fn run_block(block: u64) {
    let base = seed_from_env(DEFAULT_SEED);
    if let Some(only) = env_u64("MPBOND_SIM_CASE") {
        if only / CASES_PER_TEST == block {
            run_case(base, only);
        }
        return;
    }
    for i in block * CASES_PER_TEST..(block + 1) * CASES_PER_TEST {
        run_case(base, i);
    }
}

#[test]
fn transfer_block_0() {
    run_block(0);
}
#[test]
fn transfer_block_1() {
    run_block(1);
}
#[test]
fn transfer_block_2() {
    run_block(2);
}
#[test]
fn transfer_block_3() {
    run_block(3);
}
#[test]
fn transfer_block_4() {
    run_block(4);
}
#[test]
fn transfer_block_5() {
    run_block(5);
}
#[test]
fn transfer_block_6() {
    run_block(6);
}
#[test]
fn transfer_block_7() {
    run_block(7);
}
