//! RFC 6298 RTO (backoff, Karn), RFC 9293 zero-window probing (§3.8.6.1), keep-alive (§3.8.4),
//! delayed ACK (§3.8.6.3), and retransmission give-up (§3.8.3).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::rtt::RttEstimator;
use mpbond::tcp::{Config, Event, Keepalive, State};
use mpbond::time::Instant;

fn cfg() -> Config {
    Config {
        timestamps: false,
        min_rto: ms(200),
        ..Config::default()
    }
}

#[test]
fn rtt_estimator_follows_rfc6298() {
    let mut r = RttEstimator::new(ms(1000), ms(200), ms(60_000));
    assert_eq!(r.rto(), ms(1000));
    r.on_sample(ms(100));
    // §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR.
    assert_eq!(r.srtt(), Some(ms(100)));
    assert_eq!(r.rttvar(), ms(50));
    assert_eq!(r.rto(), ms(300));
    r.on_sample(ms(200));
    // §2.3: RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5.
    assert_eq!(r.rttvar(), std::time::Duration::from_micros(62_500));
    assert_eq!(r.srtt(), Some(std::time::Duration::from_micros(112_500)));
    assert_eq!(r.rto(), std::time::Duration::from_micros(362_500)); // 112.5 + 250
    // §5.5 backoff doubles, capped at the maximum.
    r.back_off();
    assert_eq!(r.rto(), ms(725));
    for _ in 0..20 {
        r.back_off();
    }
    assert_eq!(r.rto(), ms(60_000));
    // The minimum applies.
    let mut r = RttEstimator::new(ms(1000), ms(200), ms(60_000));
    r.on_sample(ms(1));
    assert_eq!(r.rto(), ms(200));
}

#[test]
fn rto_backs_off_and_gives_up() {
    let c_cfg = Config {
        data_retries: 4,
        ..cfg()
    };
    let (mut c, mut s) = handshake(c_cfg, cfg());
    c.send(&[1u8; 1000]);
    let first = drain(&mut c, at(0));
    assert_eq!(first.len(), 1);
    let mut times = vec![];
    for _ in 0..4 {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        let out = drain(&mut c, t);
        assert_eq!(out.len(), 1);
        assert!(out[0].tx.retransmission);
        assert_eq!(out[0].hdr.seq, first[0].hdr.seq);
        times.push(t.as_millis());
    }
    // Handshake RTT 0 -> RTO at the 200 ms minimum, then 400, 800, 1600 ms apart.
    assert_eq!(times, vec![200, 600, 1400, 3000]);
    assert_eq!(c.health().consecutive_rtos, 4);
    assert_eq!(c.health().cwnd, c.health().ssthresh.min(c.health().cwnd));
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    assert_eq!(c.state(), State::Closed);
    assert_eq!(events(&mut c), vec![Event::TimedOut]);
    let _ = drain(&mut s, t);
}

#[test]
fn karn_ignores_ack_of_retransmitted_segment_and_ack_resets_backoff() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.send(&[1u8; 1000]);
    let _lost = drain(&mut c, at(0));
    c.handle_timeout(at(200));
    let rtx = drain(&mut c, at(200));
    assert_eq!(c.health().rto, ms(400));
    // The ACK comes 2 s after the retransmission: no RTT sample may be taken from it.
    deliver(&mut s, at(2200), &rtx);
    s.handle_timeout(at(2300));
    let ack = drain(&mut s, at(2300));
    deliver(&mut c, at(2300), &ack);
    let h = c.health();
    assert_eq!(h.srtt, Some(ms(0)), "only the handshake sample");
    assert_eq!(h.consecutive_rtos, 0);
    assert_eq!(h.rto, ms(200), "backoff cleared by new data acknowledged");
    assert_eq!(h.last_ack_progress, at(2300));
}

#[test]
fn zero_window_probing_until_the_window_opens() {
    let small = Config {
        recv_buffer: 8192,
        ..cfg()
    };
    let (mut c, mut s) = handshake(cfg(), small);
    c.send(&vec![7u8; 20_000]);
    // Fill the server's window; the server application does not read.
    pump(&mut c, &mut s, at(1));
    s.handle_timeout(at(100));
    pump(&mut c, &mut s, at(100));
    assert_eq!(s.recv_available(), 8192);
    assert_eq!(c.send_window(), 0);
    // Probes are sent on the persist timer with exponential backoff.
    let mut probe_times = vec![];
    let mut now = at(100);
    for _ in 0..4 {
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        let probes = drain(&mut c, now);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].len(), 0);
        probe_times.push(now.as_millis());
        deliver(&mut s, now, &probes);
        let answer = drain(&mut s, now);
        assert_eq!(answer.len(), 1, "the receiver answers a probe with its window");
        deliver(&mut c, now, &answer);
        assert_eq!(
            c.state(),
            State::Established,
            "never gives up while probes are answered"
        );
    }
    let gaps: Vec<u64> = probe_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] == 2 * g[0]), "{probe_times:?}");
    // The application reads: a window update goes out and data flows again.
    let mut got = read_all(&mut s);
    for i in 0..50 {
        let t = now + ms(i);
        pump(&mut c, &mut s, t);
        s.handle_timeout(t + ms(50));
        c.handle_timeout(t + ms(50));
        pump(&mut c, &mut s, t + ms(50));
        got.extend(read_all(&mut s));
    }
    assert_eq!(got.len(), 20_000);
}

#[test]
fn keepalive_probes_and_timeout() {
    let k = Keepalive {
        idle: ms(10_000),
        interval: ms(1000),
        probes: 3,
    };
    let (mut c, mut s) = handshake(
        Config {
            keepalive: Some(k),
            ..cfg()
        },
        cfg(),
    );
    assert_eq!(c.poll_timeout(), Some(at(10_000)));
    c.handle_timeout(at(10_000));
    let p = drain(&mut c, at(10_000));
    assert_eq!(p.len(), 1);
    // RFC 9293 §3.8.4: SEG.SEQ = SND.NXT - 1, no data.
    assert_eq!(p[0].hdr.seq, c.snd_nxt() - 1);
    deliver(&mut s, at(10_001), &p);
    let ans = drain(&mut s, at(10_001));
    assert_eq!(ans.len(), 1);
    deliver(&mut c, at(10_002), &ans);
    assert_eq!(
        c.poll_timeout(),
        Some(at(20_002)),
        "an answer restarts the idle time"
    );
    // Now the peer vanishes.
    let mut now = at(20_002);
    for _ in 0..3 {
        c.handle_timeout(now);
        assert_eq!(drain(&mut c, now).len(), 1);
        now = c.poll_timeout().unwrap();
    }
    c.handle_timeout(now);
    assert_eq!(events(&mut c), vec![Event::TimedOut]);
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn keepalive_is_off_by_default() {
    let (c, _s) = handshake(cfg(), cfg());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn delayed_ack_every_second_segment_or_on_timer() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.send(&[1u8; 1460]);
    let one = drain(&mut c, at(1));
    deliver(&mut s, at(2), &one);
    assert!(drain(&mut s, at(2)).is_empty(), "one segment: the ACK is delayed");
    assert_eq!(s.poll_timeout(), Some(at(42)));
    s.handle_timeout(at(42));
    assert_eq!(drain(&mut s, at(42)).len(), 1);
    c.send(&[1u8; 2920]);
    let two = drain(&mut c, at(50));
    assert_eq!(two.len(), 2);
    deliver(&mut s, at(51), &two);
    // RFC 9293 §3.8.6.3: at least every second full-sized segment is acknowledged at once.
    assert_eq!(drain(&mut s, at(51)).len(), 1);
    let _ = Instant::ZERO;
}

#[test]
fn pacing_spreads_a_window_over_the_rtt() {
    let paced = Config {
        pacing: true,
        ..cfg()
    };
    let (mut c, mut s) = handshake(paced, cfg());
    // Give the sender an RTT estimate of 100 ms.
    c.send(&[1u8; 100]);
    let d = drain(&mut c, at(0));
    deliver(&mut s, at(50), &d);
    s.handle_timeout(at(100));
    let a = drain(&mut s, at(100));
    deliver(&mut c, at(100), &a);
    assert!(c.health().srtt.is_some());
    c.send(&vec![1u8; 14_600]);
    let burst = drain(&mut c, at(100));
    assert!(
        !burst.is_empty() && burst.len() < 10,
        "paced: {} segments at once",
        burst.len()
    );
    // The rest leaves on the pacing timer, spread over time.
    let mut sent = burst.len();
    let mut times = vec![];
    for _ in 0..100 {
        let Some(t) = c.poll_timeout() else { break };
        if t > at(2000) {
            break;
        }
        c.handle_timeout(t);
        let more = drain(&mut c, t);
        if !more.is_empty() {
            times.push(t);
        }
        sent += more.iter().filter(|s| s.len() > 0).count();
        if sent >= 11 {
            break;
        }
    }
    assert!(sent >= 10, "{sent}");
    assert!(times.len() >= 2 && times.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn cwnd_restarts_after_idle() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    let data = vec![1u8; 400_000];
    let mut sent = 0;
    for i in 0..200 {
        sent += c.send(&data[sent..]);
        pump(&mut c, &mut s, at(i * 10));
        read_all(&mut s);
        s.handle_timeout(at(i * 10 + 5));
    }
    assert!(c.health().cwnd > 30 * 1460, "{}", c.health().cwnd);
    // RFC 5681 §4.1: after an idle period longer than the RTO the window restarts at IW.
    c.send(&data);
    let burst = drain(&mut c, at(20_000));
    assert_eq!(burst.len(), 10);
}
