//! RFC 9293 §3.10.7.4 and RFC 5961: reset validation, challenge ACKs, SYN and ACK checks, and the
//! replies to segments for no connection (§3.10.7.1).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Event, State, rst_reply};
use mpbond::wire::tcp::{TcpFlags, Timestamps};

fn no_ts() -> Config {
    Config {
        timestamps: false,
        ..Config::default()
    }
}

#[test]
fn rst_exactly_at_rcv_nxt_resets() {
    let (mut c, s) = handshake(no_ts(), no_ts());
    let h = craft(s.snd_nxt().0, 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(1), &h, &[]);
    assert_eq!(c.state(), State::Closed);
    assert_eq!(events(&mut c), vec![Event::Reset]);
}

#[test]
fn rst_in_window_but_not_exact_draws_challenge_ack() {
    let (mut c, s) = handshake(no_ts(), no_ts());
    let h = craft(s.snd_nxt().0.wrapping_add(1000), 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(1), &h, &[]);
    assert_eq!(c.state(), State::Established);
    let out = drain(&mut c, at(1));
    assert_eq!(out.len(), 1);
    // RFC 5961 §3.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>.
    assert_eq!(out[0].flags(), TcpFlags::ACK);
    assert_eq!(out[0].hdr.ack, s.snd_nxt());
    assert_eq!(out[0].hdr.seq, c.snd_nxt());
}

#[test]
fn rst_outside_window_is_ignored_silently() {
    let (mut c, s) = handshake(no_ts(), no_ts());
    let h = craft(s.snd_nxt().0.wrapping_sub(10), 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(1), &h, &[]);
    let h = craft(s.snd_nxt().0.wrapping_add(100_000_000), 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(1), &h, &[]);
    assert_eq!(c.state(), State::Established);
    assert!(drain(&mut c, at(1)).is_empty());
}

#[test]
fn challenge_acks_are_rate_limited() {
    let cfg = Config {
        challenge_ack_limit: 3,
        ..no_ts()
    };
    let (mut c, s) = handshake(cfg, cfg);
    let mut acks = 0;
    for i in 0..10 {
        let h = craft(s.snd_nxt().0.wrapping_add(500 + i), 0, TcpFlags::RST, 0, None);
        c.handle_segment(at(10), &h, &[]);
        acks += drain(&mut c, at(10)).len();
    }
    assert_eq!(acks, 3);
    // A new second, a new budget (RFC 5961 §7).
    let h = craft(s.snd_nxt().0.wrapping_add(500), 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(1100), &h, &[]);
    assert_eq!(drain(&mut c, at(1100)).len(), 1);
}

#[test]
fn syn_in_established_draws_challenge_ack() {
    // RFC 5961 §4.2: any SYN in a synchronized state -> challenge ACK, no reset.
    let (mut c, s) = handshake(no_ts(), no_ts());
    let h = craft(s.snd_nxt().0.wrapping_add(5), 0, TcpFlags::SYN, 1000, None);
    c.handle_segment(at(1), &h, &[]);
    assert_eq!(c.state(), State::Established);
    let out = drain(&mut c, at(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags(), TcpFlags::ACK);
    assert_eq!(out[0].hdr.ack, s.snd_nxt());
}

#[test]
fn ack_of_unsent_data_is_answered_and_dropped() {
    let (mut c, mut s) = handshake(no_ts(), no_ts());
    let h = craft(
        s.snd_nxt().0,
        c.snd_nxt().0.wrapping_add(5000),
        TcpFlags::ACK,
        1000,
        None,
    );
    c.handle_segment(at(1), &h, b"data");
    let out = drain(&mut c, at(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].hdr.ack, s.snd_nxt()); // the data was not accepted
    assert_eq!(c.recv_available(), 0);
    let _ = drain(&mut s, at(1));
}

#[test]
fn ack_too_old_is_a_challenge() {
    // RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND -> ACK and drop.
    let (mut c, s) = handshake(no_ts(), no_ts());
    let old = c.snd_una().0.wrapping_sub(10_000_000);
    let h = craft(s.snd_nxt().0, old, TcpFlags::ACK, 1000, None);
    c.handle_segment(at(1), &h, b"data");
    assert_eq!(c.recv_available(), 0);
    assert_eq!(drain(&mut c, at(1)).len(), 1);
}

#[test]
fn rst_in_syn_received_closes() {
    let now = mpbond::time::Instant::ZERO;
    let mut c = mpbond::tcp::Connection::connect(now, client_addr(), server_addr(), no_ts(), &key());
    let syn = drain(&mut c, now);
    let mut s =
        mpbond::tcp::Connection::accept(now, server_addr(), client_addr(), &syn[0].hdr, no_ts(), &key())
            .unwrap();
    let _ = drain(&mut s, now);
    let mut h = syn[0].hdr;
    h.seq += 1;
    h.flags = TcpFlags::RST;
    s.handle_segment(at(1), &h, &[]);
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn bad_ack_in_syn_received_draws_reset() {
    let now = mpbond::time::Instant::ZERO;
    let mut c = mpbond::tcp::Connection::connect(now, client_addr(), server_addr(), no_ts(), &key());
    let syn = drain(&mut c, now);
    let mut s =
        mpbond::tcp::Connection::accept(now, server_addr(), client_addr(), &syn[0].hdr, no_ts(), &key())
            .unwrap();
    let _ = drain(&mut s, now);
    let h = craft(syn[0].hdr.seq.0 + 1, 12345, TcpFlags::ACK, 1000, None);
    s.handle_segment(at(1), &h, &[]);
    let out = drain(&mut s, at(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags(), TcpFlags::RST);
    assert_eq!(out[0].hdr.seq.0, 12345);
    assert_eq!(s.state(), State::SynReceived);
}

#[test]
fn replies_for_no_connection() {
    // RFC 9293 §3.10.7.1.
    let h = craft(100, 5555, TcpFlags::ACK, 0, None);
    let r = rst_reply(&h, 10).unwrap();
    assert_eq!((r.seq.0, r.flags), (5555, TcpFlags::RST));
    let h = craft(100, 0, TcpFlags::SYN, 0, None);
    let r = rst_reply(&h, 0).unwrap();
    assert_eq!(
        (r.seq.0, r.ack.0, r.flags),
        (0, 101, TcpFlags::RST | TcpFlags::ACK)
    );
    let h = craft(100, 0, TcpFlags::FIN, 0, None);
    assert_eq!(rst_reply(&h, 7).unwrap().ack.0, 108);
    assert!(rst_reply(&craft(1, 1, TcpFlags::RST, 0, None), 0).is_none());
    let _ = Timestamps::default();
}
