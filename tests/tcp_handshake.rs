//! RFC 9293 §3.5 / §3.10.7.2-3: connection establishment.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{AcceptError, Config, Connection, Event, IsnKey, State};
use mpbond::time::Instant;
use mpbond::wire::tcp::TcpFlags;

#[test]
fn three_way_handshake_negotiates_options() {
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    assert_eq!(c.state(), State::SynSent);
    let syn = drain(&mut c, now);
    assert_eq!(syn.len(), 1);
    assert_eq!(syn[0].flags(), TcpFlags::SYN);
    let o = syn[0].hdr.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(7)); // 4 MiB buffer needs shift 7 (RFC 7323 §2.3)
    assert!(o.sack_permitted && o.timestamps.is_some());
    let scfg = Config {
        mss: 1200,
        ..Config::default()
    };
    let mut s = Connection::accept(now, server_addr(), client_addr(), &syn[0].hdr, scfg, &key()).unwrap();
    assert_eq!(s.state(), State::SynReceived);
    let sa = drain(&mut s, now);
    assert_eq!(sa[0].flags(), TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(sa[0].hdr.ack, syn[0].hdr.seq + 1);
    assert_eq!(sa[0].hdr.options.mss, Some(1200));
    deliver(&mut c, at(10), &sa);
    assert_eq!(c.state(), State::Established);
    assert_eq!(events(&mut c), vec![Event::Connected]);
    let ack = drain(&mut c, at(10));
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].flags(), TcpFlags::ACK);
    deliver(&mut s, at(20), &ack);
    assert_eq!(s.state(), State::Established);
    assert_eq!(events(&mut s), vec![Event::Connected]);
    // RFC 9293 §3.7.1: the effective MSS is the smaller of the two.
    assert_eq!(c.eff_mss(), 1200);
    assert_eq!(s.eff_mss(), 1200);
    assert!(c.sack_enabled() && c.timestamps_enabled() && s.sack_enabled());
    assert_eq!(c.window_scale(), Some((7, 7)));
    // The SYN-ACK RTT was measured.
    assert!(c.health().srtt.is_some());
}

#[test]
fn options_only_if_both_offer_them() {
    let now = Instant::ZERO;
    let bare = Config {
        window_scaling: false,
        sack: false,
        timestamps: false,
        ..Config::default()
    };
    let mut c = Connection::connect(now, client_addr(), server_addr(), bare, &key());
    let syn = drain(&mut c, now);
    let o = syn[0].hdr.options;
    assert!(o.wscale.is_none() && !o.sack_permitted && o.timestamps.is_none());
    let mut s = Connection::accept(
        now,
        server_addr(),
        client_addr(),
        &syn[0].hdr,
        Config::default(),
        &key(),
    )
    .unwrap();
    let sa = drain(&mut s, now);
    // RFC 7323 §2.2/§3.2, RFC 2018 §2: a SYN-ACK carries WS/TS/SACK-perm only if the SYN did.
    let o = sa[0].hdr.options;
    assert!(o.wscale.is_none() && !o.sack_permitted && o.timestamps.is_none());
    assert!(!s.sack_enabled() && !s.timestamps_enabled() && s.window_scale().is_none());
    // Without an MSS option the default is 536 (RFC 9293 §3.7.1, IPv4).
    let mut h = syn[0].hdr;
    h.options.mss = None;
    let s2 = Connection::accept(now, server_addr(), client_addr(), &h, Config::default(), &key()).unwrap();
    assert_eq!(s2.peer_mss(), 536);
}

#[test]
fn accept_refuses_non_syn() {
    let h = craft(1, 0, TcpFlags::ACK, 100, None);
    let e = Connection::accept(
        Instant::ZERO,
        server_addr(),
        client_addr(),
        &h,
        Config::default(),
        &key(),
    );
    assert_eq!(e.err(), Some(AcceptError::NotASyn));
    let h = craft(1, 0, TcpFlags::SYN | TcpFlags::RST, 100, None);
    assert!(
        Connection::accept(
            Instant::ZERO,
            server_addr(),
            client_addr(),
            &h,
            Config::default(),
            &key()
        )
        .is_err()
    );
}

#[test]
fn isn_is_keyed_per_tuple_and_moves_with_time() {
    // RFC 6528 §3.
    let k = key();
    let a = Connection::connect(Instant::ZERO, client_addr(), server_addr(), Config::default(), &k);
    let b = Connection::connect(Instant::ZERO, client_addr(), server_addr(), Config::default(), &k);
    assert_eq!(a.iss(), b.iss());
    let other_port = "198.18.0.1:40001".parse().unwrap();
    let c = Connection::connect(Instant::ZERO, other_port, server_addr(), Config::default(), &k);
    assert_ne!(a.iss(), c.iss());
    let d = Connection::connect(
        Instant::ZERO,
        client_addr(),
        server_addr(),
        Config::default(),
        &IsnKey([8; 32]),
    );
    assert_ne!(a.iss(), d.iss());
    let later = Connection::connect(
        Instant::from_micros(4000),
        client_addr(),
        server_addr(),
        Config::default(),
        &k,
    );
    assert_eq!(later.iss().0.wrapping_sub(a.iss().0), 1000); // M ticks every 4 µs
}

#[test]
fn simultaneous_open() {
    // RFC 9293 §3.5 figure 8: both sides send SYN; SYNs cross.
    let now = Instant::ZERO;
    let mut a = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    let mut b = Connection::connect(
        now,
        server_addr(),
        client_addr(),
        Config::default(),
        &IsnKey([9; 32]),
    );
    let sa = drain(&mut a, now);
    let sb = drain(&mut b, now);
    deliver(&mut a, at(5), &sb);
    deliver(&mut b, at(5), &sa);
    assert_eq!(a.state(), State::SynReceived);
    assert_eq!(b.state(), State::SynReceived);
    let sa2 = drain(&mut a, at(5));
    let sb2 = drain(&mut b, at(5));
    assert_eq!(sa2[0].flags(), TcpFlags::SYN | TcpFlags::ACK);
    deliver(&mut a, at(10), &sb2);
    deliver(&mut b, at(10), &sa2);
    assert_eq!(a.state(), State::Established);
    assert_eq!(b.state(), State::Established);
    pump(&mut a, &mut b, at(10));
    assert_eq!(a.send(b"hello"), 5);
    pump(&mut a, &mut b, at(20));
    assert_eq!(read_all(&mut b), b"hello");
}

#[test]
fn syn_retransmitted_with_backoff_then_times_out() {
    let cfg = Config {
        syn_retries: 3,
        ..Config::default()
    };
    let mut c = Connection::connect(Instant::ZERO, client_addr(), server_addr(), cfg, &key());
    assert_eq!(drain(&mut c, Instant::ZERO).len(), 1);
    let mut deadlines = Vec::new();
    for _ in 0..3 {
        let t = c.poll_timeout().unwrap();
        deadlines.push(t.as_millis());
        c.handle_timeout(t);
        let s = drain(&mut c, t);
        assert_eq!(s.len(), 1);
        assert!(s[0].flags().syn() && s[0].tx.retransmission);
    }
    // RFC 6298 §2.1 initial RTO 1 s, §5.5 doubled on each expiry.
    assert_eq!(deadlines, vec![1000, 3000, 7000]);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    assert_eq!(events(&mut c), vec![Event::TimedOut]);
    assert_eq!(c.state(), State::Closed);
    assert!(drain(&mut c, t).is_empty());
}

#[test]
fn lost_syn_ack_is_resent_on_retransmitted_syn() {
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    let syn = drain(&mut c, now);
    let mut s = Connection::accept(
        now,
        server_addr(),
        client_addr(),
        &syn[0].hdr,
        Config::default(),
        &key(),
    )
    .unwrap();
    let _lost = drain(&mut s, now);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    let syn2 = drain(&mut c, t);
    deliver(&mut s, t, &syn2);
    let sa = drain(&mut s, t);
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].flags(), TcpFlags::SYN | TcpFlags::ACK);
    deliver(&mut c, t, &sa);
    assert_eq!(c.state(), State::Established);
    let ack = drain(&mut c, t);
    deliver(&mut s, t, &ack);
    assert_eq!(s.state(), State::Established);
    // RFC 6298 §5.7: RTO back to 3 s once data flows after a SYN timeout without a sample.
    assert_eq!(c.health().rto, ms(3000));
}

#[test]
fn bad_ack_in_syn_sent_draws_reset() {
    // RFC 9293 §3.10.7.3: SEG.ACK =< ISS or > SND.NXT: <SEQ=SEG.ACK><CTL=RST>.
    let mut c = Connection::connect(
        Instant::ZERO,
        client_addr(),
        server_addr(),
        Config::default(),
        &key(),
    );
    let syn = drain(&mut c, Instant::ZERO);
    let bogus = syn[0].hdr.seq.0.wrapping_add(1000);
    let h = craft(5000, bogus, TcpFlags::SYN | TcpFlags::ACK, 1000, None);
    c.handle_segment(at(1), &h, &[]);
    let out = drain(&mut c, at(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags(), TcpFlags::RST);
    assert_eq!(out[0].hdr.seq.0, bogus);
    assert_eq!(c.state(), State::SynSent);
    // A RST whose ACK does not acknowledge the SYN is ignored; one that does resets.
    let good = syn[0].hdr.seq.0.wrapping_add(1);
    c.handle_segment(
        at(2),
        &craft(0, bogus, TcpFlags::RST | TcpFlags::ACK, 0, None),
        &[],
    );
    assert_eq!(c.state(), State::SynSent);
    c.handle_segment(
        at(2),
        &craft(0, good, TcpFlags::RST | TcpFlags::ACK, 0, None),
        &[],
    );
    assert_eq!(c.state(), State::Closed);
    assert_eq!(events(&mut c), vec![Event::Reset]);
}

#[test]
fn data_queued_before_established_and_close_during_handshake() {
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    assert_eq!(c.send(b"early"), 5);
    c.close();
    let syn = drain(&mut c, now);
    assert_eq!(syn.len(), 1, "only the SYN before the handshake");
    let mut s = Connection::accept(
        now,
        server_addr(),
        client_addr(),
        &syn[0].hdr,
        Config::default(),
        &key(),
    )
    .unwrap();
    pump(&mut s, &mut c, at(1));
    assert_eq!(read_all(&mut s), b"early");
    assert_eq!(c.state(), State::FinWait2);
    assert_eq!(s.state(), State::CloseWait);
}

#[test]
fn close_in_syn_sent_without_data_deletes_the_connection() {
    // RFC 9293 §3.10.4: CLOSE in SYN-SENT deletes the TCB.
    let mut c = Connection::connect(
        Instant::ZERO,
        client_addr(),
        server_addr(),
        Config::default(),
        &key(),
    );
    let _ = drain(&mut c, Instant::ZERO);
    c.close();
    assert_eq!(c.state(), State::Closed);
    assert!(c.is_closed());
    assert_eq!(c.poll_timeout(), None);
    assert!(drain(&mut c, at(5000)).is_empty());
}
