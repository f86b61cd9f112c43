//! Goodput of the TCP engine in the simulator at 0 % loss against the simulated link rate.
//! Prints numbers; asserts nothing. Run: `cargo bench --bench sim_goodput`.
//!
//! Goodput "once the window opens" is measured as the marginal rate between a short and a long
//! transfer over the same path: (B_long - B_short) / (T_long - T_short), which removes the
//! handshake, slow start and the first congestion event that ends it. For that the short transfer
//! must outlast the start-up: slow start sends about twice the largest window the path holds
//! (BDP + queue, or less if the receive window is smaller) before the queue overflows, and the
//! recovery from that overflow takes about one more such window, so the short transfer is 20 MB
//! plus four of those windows (with a fixed 20 MB, the 1 Gb/s x 50 ms row ended its short run
//! before that first loss and charged its one-time recovery to the steady state).
//! `SIM_GOODPUT_SHORT=<bytes>` fixes the short transfer instead (20000000 gives the old layout).
//! `rtx` is the number of segments the long run retransmitted.
#![expect(clippy::print_stdout, reason = "a benchmark prints its numbers")]
#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::sim::transfer::{TransferSpec, run};
use mpbond::sim::{Link, Network};
use mpbond::tcp::{CcAlgorithm, Config};

/// Receive/send buffer size used for a path: at least twice the BDP so the receive window does not
/// cap the rate.
fn buffer(bdp: usize) -> usize {
    (2 * bdp).max(4 << 20)
}

fn bdp(rate: u64, rtt_ms: u64) -> usize {
    (rate as f64 * rtt_ms as f64 / 1000.0) as usize
}

/// Queue of the bottleneck: one BDP.
fn queue(bdp: usize) -> usize {
    bdp.max(64 * 1024)
}

/// Returns (transfer time, engine CPU time, retransmitted segments).
fn transfer(
    bytes: u64,
    rate: u64,
    rtt_ms: u64,
    mtu: usize,
    cc: CcAlgorithm,
    pacing: bool,
) -> (f64, f64, u64) {
    let a: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let b: SocketAddr = "198.18.1.1:80".parse().unwrap();
    let mut net = Network::new(1);
    let bdp = bdp(rate, rtt_ms);
    net.add_duplex(
        a.ip(),
        b.ip(),
        vec![
            Link::Rate {
                bytes_per_sec: rate,
                queue_bytes: queue(bdp),
            },
            Link::Delay(Duration::from_micros(rtt_ms * 500)),
        ],
    );
    let buf = buffer(bdp);
    let cfg = Config {
        mss: (mtu - 40) as u16,
        congestion: cc,
        pacing,
        send_buffer: buf,
        recv_buffer: buf,
        ..Config::default()
    };
    let mut spec = TransferSpec::new(a, b);
    spec.cfg_a = cfg;
    spec.cfg_b = cfg;
    spec.a_to_b = bytes;
    spec.b_to_a = 0;
    #[expect(
        clippy::disallowed_methods,
        reason = "the benchmark measures the engine's wall-clock cost"
    )]
    let wall = std::time::Instant::now();
    let r = run(&mut net, &spec);
    let cpu = wall.elapsed().as_secs_f64();
    assert!(r.completed, "{:?}", r.error);
    let t = r.data_done_at.unwrap() - r.connected_at.unwrap();
    (t.as_secs_f64(), cpu, r.a_retransmits)
}

fn main() {
    let fixed_short: Option<u64> = std::env::var("SIM_GOODPUT_SHORT")
        .ok()
        .map(|v| v.parse().expect("SIM_GOODPUT_SHORT: a byte count"));
    println!(
        "{:<10} {:>8} {:>6} {:>6} {:>12} {:>12} {:>8} {:>6} {:>10}",
        "cc", "rate", "rtt", "mtu", "avg goodput", "steady", "of link", "rtx", "engine"
    );
    for &(rate, rtt, mtu) in &[
        (12_500_000u64, 20u64, 1500usize),
        (12_500_000, 100, 1500),
        (125_000_000, 10, 1500),
        (125_000_000, 50, 9000),
        (2_500_000, 300, 1280),
    ] {
        for (cc, pacing) in [
            (CcAlgorithm::Cubic, false),
            (CcAlgorithm::NewReno, false),
            (CcAlgorithm::Cubic, true),
        ] {
            let b = bdp(rate, rtt);
            let window = (b + queue(b)).min(buffer(b)) as u64;
            let short = fixed_short.unwrap_or(20_000_000 + 4 * window);
            let long = short + 40_000_000;
            let (t1, _, _) = transfer(short, rate, rtt, mtu, cc, pacing);
            let (t2, cpu, rtx) = transfer(long, rate, rtt, mtu, cc, pacing);
            let avg = long as f64 / t2;
            let steady = (long - short) as f64 / (t2 - t1);
            let name = format!("{cc:?}{}", if pacing { "+pace" } else { "" });
            println!(
                "{:<10} {:>6}Mb {:>4}ms {:>6} {:>10.2}Mb {:>10.2}Mb {:>7.1}% {:>6} {:>7.0}MB/s",
                name,
                rate * 8 / 1_000_000,
                rtt,
                mtu,
                avg * 8.0 / 1e6,
                steady * 8.0 / 1e6,
                100.0 * steady / rate as f64,
                rtx,
                long as f64 / cpu / 1e6,
            );
        }
    }
}
