//! RFC 9293 §3.6 / §3.10.4 / §3.10.7.4: closing, half-close, simultaneous close, TIME-WAIT, abort.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Connection, Event, State};
use mpbond::wire::tcp::{TcpFlags, Timestamps};

fn cfg() -> Config {
    Config {
        time_wait: ms(500),
        ..Config::default()
    }
}

#[test]
fn active_and_passive_close_walk_every_state() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.close();
    assert_eq!(c.state(), State::FinWait1);
    let fin = drain(&mut c, at(1));
    assert_eq!(fin.len(), 1);
    assert!(fin[0].flags().fin());
    deliver(&mut s, at(2), &fin);
    assert_eq!(s.state(), State::CloseWait);
    assert_eq!(events(&mut s), vec![Event::PeerClosed]);
    let ack = drain(&mut s, at(2));
    deliver(&mut c, at(3), &ack);
    assert_eq!(c.state(), State::FinWait2);
    s.close();
    assert_eq!(s.state(), State::LastAck);
    let fin2 = drain(&mut s, at(4));
    assert!(fin2[0].flags().fin());
    deliver(&mut c, at(5), &fin2);
    assert_eq!(c.state(), State::TimeWait);
    assert_eq!(events(&mut c), vec![Event::PeerClosed]);
    let last = drain(&mut c, at(5));
    deliver(&mut s, at(6), &last);
    assert_eq!(s.state(), State::Closed);
    assert_eq!(events(&mut s), vec![Event::Closed]);
    // TIME-WAIT lasts the configured time, then CLOSED.
    assert_eq!(c.poll_timeout(), Some(at(505)));
    c.handle_timeout(at(504));
    assert_eq!(c.state(), State::TimeWait);
    c.handle_timeout(at(505));
    assert_eq!(c.state(), State::Closed);
    assert_eq!(events(&mut c), vec![Event::Closed]);
    assert!(c.is_closed() && s.is_closed());
}

/// `c` closes first, then `s`: `c` in TIME-WAIT (its last ACK not yet sent), `s` in LAST-ACK,
/// and the FIN that `s` sent.
fn client_in_time_wait() -> (Connection, Connection, Vec<Seg>) {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.close();
    pump(&mut c, &mut s, at(1));
    s.close();
    let fin = drain(&mut s, at(2));
    deliver(&mut c, at(2), &fin);
    (c, s, fin)
}

#[test]
fn fin_retransmitted_in_time_wait_is_acked_and_restarts_timer() {
    let (mut c, _s, fin) = client_in_time_wait();
    let _lost_ack = drain(&mut c, at(2));
    assert_eq!(c.state(), State::TimeWait);
    deliver(&mut c, at(300), &fin);
    let again = drain(&mut c, at(300));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].flags(), TcpFlags::ACK);
    assert_eq!(c.poll_timeout(), Some(at(800)));
}

#[test]
fn half_close_keeps_the_other_direction_open() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.close();
    pump(&mut c, &mut s, at(1));
    assert_eq!(c.state(), State::FinWait2);
    assert_eq!(s.state(), State::CloseWait);
    // The client may no longer send; the server still may, and the client still receives.
    assert_eq!(c.send(b"x"), 0);
    let data = vec![42u8; 100_000];
    let mut sent = 0;
    let mut got = Vec::new();
    for step in 0..200 {
        sent += s.send(&data[sent..]);
        pump(&mut s, &mut c, at(2 + step));
        got.extend(read_all(&mut c));
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(got, data);
    s.close();
    pump(&mut s, &mut c, at(300));
    assert_eq!(c.state(), State::TimeWait);
    assert_eq!(s.state(), State::Closed);
    assert!(c.recv_finished());
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.close();
    s.close();
    let fc = drain(&mut c, at(1));
    let fs = drain(&mut s, at(1));
    deliver(&mut c, at(2), &fs);
    deliver(&mut s, at(2), &fc);
    // RFC 9293 §3.10.7.4 eighth: FIN-WAIT-1 receiving a FIN that does not ack ours -> CLOSING.
    assert_eq!(c.state(), State::Closing);
    assert_eq!(s.state(), State::Closing);
    let ac = drain(&mut c, at(2));
    let as_ = drain(&mut s, at(2));
    deliver(&mut c, at(3), &as_);
    deliver(&mut s, at(3), &ac);
    assert_eq!(c.state(), State::TimeWait);
    assert_eq!(s.state(), State::TimeWait);
}

#[test]
fn fin_wait_1_receiving_fin_and_ack_goes_to_time_wait() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.close();
    let fin = drain(&mut c, at(1));
    deliver(&mut s, at(2), &fin);
    s.close();
    // The server's ACK of our FIN and its own FIN travel in one segment.
    let finack = drain(&mut s, at(2));
    assert_eq!(finack.len(), 1);
    assert!(finack[0].flags().fin() && finack[0].flags().ack());
    deliver(&mut c, at(3), &finack);
    assert_eq!(c.state(), State::TimeWait);
}

#[test]
fn abort_sends_reset_and_peer_reports_it() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.send(b"pending");
    c.abort();
    assert_eq!(c.state(), State::Closed);
    let rst = drain(&mut c, at(1));
    assert_eq!(rst.len(), 1);
    assert_eq!(rst[0].flags(), TcpFlags::RST);
    deliver(&mut s, at(2), &rst);
    assert_eq!(s.state(), State::Closed);
    assert_eq!(events(&mut s), vec![Event::Reset]);
    assert!(events(&mut c).is_empty());
    assert!(c.is_closed());
}

#[test]
fn fin_out_of_order_is_held_until_the_data_before_it_arrives() {
    let (mut c, mut s) = handshake(cfg(), cfg());
    c.send(&[1u8; 3000]);
    c.close();
    let segs = drain(&mut c, at(1));
    assert!(segs.last().unwrap().flags().fin());
    let (first, rest) = segs.split_first().unwrap();
    deliver(&mut s, at(2), rest);
    assert_eq!(s.state(), State::Established);
    deliver(&mut s, at(3), std::slice::from_ref(first));
    assert_eq!(s.state(), State::CloseWait);
    assert_eq!(read_all(&mut s).len(), 3000);
    assert!(s.recv_finished());
}

#[test]
fn a_new_syn_reopens_a_time_wait_four_tuple_only_if_it_is_newer() {
    // RFC 6191 §2.
    let (c, s, fin) = client_in_time_wait();
    assert_eq!(c.state(), State::TimeWait);
    assert!(c.timestamps_enabled(), "the handshake negotiated timestamps");
    let ts = fin[0]
        .hdr
        .options
        .timestamps
        .expect("the FIN carries a timestamp");
    let mut syn = fin[0].hdr;
    syn.flags = TcpFlags::SYN;
    syn.ack = Default::default();
    // With timestamps: the TSval decides, whatever the sequence number.
    syn.seq = fin[0].hdr.seq + 1_000_000;
    syn.options.timestamps = Some(Timestamps { val: ts.val, ecr: 0 });
    assert!(
        !c.accepts_new_syn(&syn),
        "TSval not newer than TS.Recent: an old duplicate"
    );
    syn.options.timestamps = Some(Timestamps {
        val: ts.val.wrapping_add(1),
        ecr: 0,
    });
    assert!(c.accepts_new_syn(&syn), "newer TSval");
    // Without timestamps: the sequence number must be past RCV.NXT.
    syn.options.timestamps = None;
    syn.seq = fin[0].hdr.seq;
    assert!(!c.accepts_new_syn(&syn), "sequence number at or before RCV.NXT");
    syn.seq = fin[0].hdr.seq + 10;
    assert!(c.accepts_new_syn(&syn), "sequence number past RCV.NXT");
    // A connection that is not lingering is never reopened by a SYN.
    assert_eq!(s.state(), State::LastAck);
    assert!(!s.accepts_new_syn(&syn));
}
