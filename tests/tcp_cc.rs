//! Congestion control: CUBIC window growth against RFC 9438's W_cubic(t) = C*(t-K)^3 + W_max,
//! multiplicative decrease and fast convergence; NewReno slow start and AIMD (RFC 5681).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::time::Duration;

use mpbond::tcp::cc::cubic::{BETA, C};
use mpbond::tcp::cc::{CcAlgorithm, Controller, Cubic, Window};
use mpbond::time::Instant;

const MSS: u32 = 1000;

/// Acknowledges one window's worth of segments spread evenly over one RTT starting at `t`.
fn one_rtt(cc: &mut Controller, w: &mut Window, t: Instant, rtt: Duration) {
    let n = (w.cwnd / MSS).max(1);
    for i in 0..n {
        cc.on_ack(t + rtt * i / n, w, MSS, Some(rtt), true);
    }
}

/// Runs CUBIC after a loss at `w_max` segments for `rounds` RTTs; returns (t, cwnd segments).
fn cubic_run(w_max: u32, rtt: Duration, rounds: u32) -> Vec<(f64, f64)> {
    let mut cc = Controller::new(CcAlgorithm::Cubic);
    let mut w = Window {
        cwnd: w_max * MSS,
        ssthresh: u32::MAX,
        mss: MSS,
    };
    let t0 = Instant::from_millis(10_000);
    cc.on_congestion(t0, &mut w, w_max * MSS);
    // RFC 9438 §4.6: ssthresh = cwnd = beta * W_max.
    assert_eq!(w.ssthresh, (f64::from(w_max) * BETA * f64::from(MSS)) as u32);
    assert_eq!(w.cwnd, w.ssthresh);
    let mut t = t0;
    let mut out = vec![];
    for round in 0..rounds {
        one_rtt(&mut cc, &mut w, t, rtt);
        t += rtt;
        let k = (f64::from(w_max) * (1.0 - BETA) / C).cbrt();
        assert!(
            (cc.cubic().unwrap().k() - k).abs() < 1e-6,
            "K = cbrt(W_max(1-beta)/C) (§4.2 eq. 2)"
        );
        out.push((
            f64::from(round + 1) * rtt.as_secs_f64(),
            f64::from(w.cwnd) / f64::from(MSS),
        ));
    }
    out
}

#[test]
fn cubic_follows_the_rfc_curve() {
    // A large window at 100 ms: the cubic curve dominates the Reno estimate (RFC 9438 §4.4/4.5).
    let w_max = 1000.0;
    let rtt = 0.1;
    let k = (w_max * (1.0 - BETA) / C).cbrt();
    let w_cubic = |t: f64| C * (t - k).powi(3) + w_max;
    let run = cubic_run(1000, Duration::from_millis(100), (2.0 * k / rtt) as u32);
    for &(t, cwnd) in &run {
        // The window is steered toward target = W_cubic(t + RTT); allow one RTT's worth of curve
        // movement and one segment.
        let want = w_cubic(t + rtt);
        let slack = (w_cubic(t + 2.0 * rtt) - w_cubic(t)).abs() + 1.0;
        assert!(
            (cwnd - want).abs() <= slack,
            "t={t:.1}s cwnd={cwnd:.2} W_cubic={want:.2} (slack {slack:.2})"
        );
    }
    // Concave up to K (plateau at W_max), convex after.
    let near_k = run.iter().find(|(t, _)| *t >= k).unwrap().1;
    assert!((near_k - w_max).abs() < 5.0, "{near_k}");
    assert!(run.last().unwrap().1 > w_max + 0.5 * C * k.powi(3));
}

#[test]
fn cubic_reno_friendly_region() {
    // A small window: W_est (alpha = 3(1-beta)/(1+beta) per RTT, then 1 once past W_max) grows
    // faster than the cubic curve; RFC 9438 §4.3: cwnd SHOULD be W_est then.
    let run = cubic_run(100, Duration::from_millis(100), 80);
    let k = (100.0 * (1.0 - BETA) / C).cbrt();
    let (t, cwnd) = run[64];
    let w_cubic = C * (t - k).powi(3) + 100.0;
    assert!(cwnd > w_cubic + 2.0, "t={t} cwnd={cwnd} W_cubic={w_cubic}");
    // W_est after 6.5 s: 70 + alpha per RTT until 100, then +1 per RTT.
    let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
    let rtts_to_wmax = (30.0 / alpha).ceil();
    let w_est = 100.0 + (65.0 - rtts_to_wmax);
    assert!((cwnd - w_est).abs() < 3.0, "cwnd={cwnd} W_est≈{w_est}");
}

#[test]
fn cubic_fast_convergence_and_timeout() {
    let mut c = Cubic::new();
    let mut w = Window {
        cwnd: 100 * MSS,
        ssthresh: u32::MAX,
        mss: MSS,
    };
    let t = Instant::ZERO;
    c.on_congestion(t, &mut w);
    assert_eq!(c.w_max(), 100.0);
    // A second loss below the previous W_max: §4.7 W_max = cwnd * (1 + beta) / 2.
    c.on_congestion(t, &mut w);
    assert!((c.w_max() - 70.0 * (1.0 + BETA) / 2.0).abs() < 1e-9);
    assert_eq!(w.cwnd, 49 * MSS);
    // §4.8: timeout -> cwnd = 1 segment, ssthresh = 0.7 * cwnd.
    c.on_rto(t, &mut w);
    assert_eq!(w.cwnd, MSS);
    assert_eq!(w.ssthresh, (49.0 * 0.7 * f64::from(MSS)) as u32);
}

#[test]
fn slow_start_doubles_per_rtt_until_ssthresh() {
    for alg in [CcAlgorithm::Cubic, CcAlgorithm::NewReno] {
        let mut cc = Controller::new(alg);
        let mut w = Window {
            cwnd: 10 * MSS,
            ssthresh: 80 * MSS,
            mss: MSS,
        };
        let rtt = Duration::from_millis(50);
        let mut t = Instant::ZERO;
        for expect in [20, 40, 80] {
            one_rtt(&mut cc, &mut w, t, rtt);
            t += rtt;
            assert_eq!(w.cwnd, expect * MSS, "{alg:?}");
        }
    }
}

#[test]
fn newreno_adds_one_segment_per_rtt_and_halves_on_loss() {
    let mut cc = Controller::new(CcAlgorithm::NewReno);
    let mut w = Window {
        cwnd: 40 * MSS,
        ssthresh: 40 * MSS,
        mss: MSS,
    };
    let rtt = Duration::from_millis(50);
    let mut t = Instant::ZERO;
    for i in 1..=5 {
        one_rtt(&mut cc, &mut w, t, rtt);
        t += rtt;
        assert_eq!(w.cwnd, (40 + i) * MSS);
    }
    cc.on_congestion(t, &mut w, 45 * MSS);
    // RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2 * SMSS).
    assert_eq!(w.ssthresh, 22 * MSS + MSS / 2);
    cc.on_rto(t, &mut w, 2 * MSS);
    assert_eq!((w.cwnd, w.ssthresh), (MSS, 2 * MSS));
}

#[test]
fn window_does_not_grow_when_application_limited() {
    let mut cc = Controller::new(CcAlgorithm::Cubic);
    let mut w = Window {
        cwnd: 10 * MSS,
        ssthresh: u32::MAX,
        mss: MSS,
    };
    cc.on_ack(Instant::ZERO, &mut w, MSS, None, false);
    assert_eq!(w.cwnd, 10 * MSS);
}

/// A bottleneck whose queue holds one BDP and a receive window a little larger than BDP + queue:
/// the sender is receive-window limited and the queue overflows once, by a few segments.
fn rwnd_limited_transfer(cc: CcAlgorithm, pacing: bool) -> mpbond::sim::transfer::TransferReport {
    use mpbond::sim::transfer::{TransferSpec, run};
    use mpbond::sim::{Link, Network};
    use mpbond::tcp::Config;
    let a: std::net::SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let b: std::net::SocketAddr = "198.18.1.1:80".parse().unwrap();
    let mut net = Network::new(1);
    // 100 Mbit/s, 50 ms RTT: BDP = 625 kB.
    net.add_duplex(
        a.ip(),
        b.ip(),
        vec![
            Link::Rate {
                bytes_per_sec: 12_500_000,
                queue_bytes: 625_000,
            },
            Link::Delay(Duration::from_millis(25)),
        ],
    );
    let cfg = Config {
        mss: 8960,
        congestion: cc,
        pacing,
        send_buffer: 1_400_000,
        recv_buffer: 1_400_000,
        ..Config::default()
    };
    let mut spec = TransferSpec::new(a, b);
    spec.cfg_a = cfg;
    spec.cfg_b = cfg;
    spec.a_to_b = 20_000_000;
    spec.b_to_a = 0;
    spec.sample_every = Some(Duration::from_millis(5));
    let r = run(&mut net, &spec);
    assert!(r.completed, "{:?}", r.error);
    r
}

#[test]
fn cwnd_does_not_grow_past_the_receive_window() {
    for (cc, pacing) in [
        (CcAlgorithm::Cubic, false),
        (CcAlgorithm::NewReno, false),
        (CcAlgorithm::Cubic, true),
    ] {
        let r = rwnd_limited_transfer(cc, pacing);
        let mss = 8960 - 12;
        // RFC 9438 §4.6: cwnd must not grow while the flight is smaller than cwnd, which keeps it
        // within the receive window (growth stops once it reaches it: at most one ACK's worth,
        // 2 SMSS, beyond).
        let max_cwnd = r.samples.iter().map(|s| s.health.cwnd).max().unwrap();
        assert!(
            max_cwnd <= 1_400_000 + 3 * mss,
            "{cc:?} pacing={pacing}: cwnd reached {max_cwnd}"
        );
        // The one overflow costs about 18 segments. A line-rate burst when the recovery's
        // cumulative ACK reopens the whole window (no per-ACK burst limit) loses 40 or more; a
        // multiplicative decrease computed from a cwnd inflated past the receive window (no real
        // decrease) keeps overflowing the queue.
        assert!(
            r.a_retransmits <= 30,
            "{cc:?} pacing={pacing}: {} retransmissions of {} segments",
            r.a_retransmits,
            r.a_segments
        );
    }
}
