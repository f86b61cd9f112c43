//! RFC 7413 client side of TCP Fast Open, without a cookie option (for a server that accepts SYN
//! data without one, as Linux does with TFO_SERVER_COOKIE_NOT_REQD): data queued before the first
//! `poll_transmit` rides in the SYN, and the SYN-ACK may acknowledge all, part or none of it
//! (§4.2.2: what it does not acknowledge is retransmitted after the handshake).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Connection, Event, State};
use mpbond::time::Instant;
use mpbond::wire::tcp::TcpFlags;

fn tfo() -> Config {
    Config {
        fast_open: true,
        ..Config::default()
    }
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A client that queued `data` and wrote its SYN at t = 0.
fn open_with(cfg: Config, data: &[u8]) -> (Connection, Seg) {
    let mut c = Connection::connect(Instant::ZERO, client_addr(), server_addr(), cfg, &key());
    assert_eq!(c.send(data), data.len());
    let mut syn = drain(&mut c, Instant::ZERO);
    assert_eq!(syn.len(), 1);
    (c, syn.remove(0))
}

/// Our own passive open answering `syn` at t = 5 ms (it takes no SYN data, so its SYN-ACK
/// acknowledges the SYN only), and that SYN-ACK.
fn server(syn: &Seg) -> (Connection, Seg) {
    let mut s = Connection::accept(
        at(5),
        server_addr(),
        client_addr(),
        &syn.hdr,
        Config::default(),
        &key(),
    )
    .unwrap();
    let mut sa = drain(&mut s, at(5));
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].flags(), TcpFlags::SYN | TcpFlags::ACK);
    (s, sa.remove(0))
}

/// The SYN-ACK of a server that accepted the first `acked` bytes of the SYN data.
fn synack_acking(syn: &Seg, acked: u32) -> Seg {
    let (_, mut sa) = server(syn);
    sa.hdr.ack = syn.hdr.seq + 1 + acked;
    sa
}

#[test]
fn off_by_default_the_syn_carries_no_data() {
    let (c, syn) = open_with(Config::default(), b"hello");
    assert_eq!(syn.flags(), TcpFlags::SYN);
    assert!(syn.payload.is_empty());
    assert_eq!(c.snd_nxt(), c.iss() + 1);
}

#[test]
fn syn_carries_the_queued_data() {
    let data = payload(400);
    let (c, syn) = open_with(tfo(), &data);
    // RFC 7413 §4.2.2 step 1b: data in the SYN; no PSH, no cookie option.
    assert_eq!(syn.flags(), TcpFlags::SYN);
    assert_eq!(syn.payload, data);
    assert_eq!(syn.hdr.seq, c.iss());
    assert_eq!(syn.tx.payload_len, 400);
    assert!(!syn.tx.retransmission);
    // Step 2: SND.NXT includes the data.
    assert_eq!(c.snd_nxt(), c.iss() + 401);
    assert_eq!(c.state(), State::SynSent);
}

#[test]
fn syn_data_is_limited_to_the_default_mss() {
    // RFC 7413 §4.1.3: without a cached server MSS, SYN data is limited to 536 bytes (IPv4),
    // options included here (RFC 9293 §3.7.1).
    let data = payload(3000);
    let (mut c, syn) = open_with(tfo(), &data);
    // IPv4 and TCP fixed headers are 20 bytes each.
    let opt_len = syn.tx.len - 40 - syn.payload.len();
    assert!(
        syn.payload.len() + opt_len <= 536,
        "{} + {opt_len}",
        syn.payload.len()
    );
    assert!(syn.payload.len() >= 500);
    assert_eq!(syn.payload, data[..syn.payload.len()]);
    // The server takes none of it; everything arrives after the handshake, in order.
    let (mut s, sa) = server(&syn);
    deliver(&mut c, at(10), &[sa]);
    assert_eq!(c.state(), State::Established);
    pump(&mut c, &mut s, at(10));
    assert_eq!(read_all(&mut s), data);
}

#[test]
fn synack_acknowledging_all_syn_data() {
    let data = payload(400);
    let (mut c, syn) = open_with(tfo(), &data);
    let sa = synack_acking(&syn, 400);
    deliver(&mut c, at(10), std::slice::from_ref(&sa));
    assert_eq!(c.state(), State::Established);
    assert_eq!(events(&mut c), vec![Event::Connected]);
    assert_eq!(c.send_queued(), 0);
    assert_eq!(c.snd_una(), c.iss() + 401);
    // RFC 7413 §4.2.2 "Client: Receiving SYN-ACK" step 2: an ACK; nothing to retransmit.
    let out = drain(&mut c, at(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags(), TcpFlags::ACK);
    assert!(out[0].payload.is_empty());
    assert_eq!(out[0].hdr.seq, c.iss() + 401);
    assert_eq!(out[0].hdr.ack, sa.hdr.seq + 1);
    // New data continues after the SYN data; no retransmission timer is left running for it.
    assert_eq!(c.send(b"more"), 4);
    let out = drain(&mut c, at(11));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].hdr.seq, c.iss() + 401);
    assert_eq!(out[0].payload, b"more");
    assert!(!out[0].tx.retransmission);
}

#[test]
fn synack_acknowledging_part_of_the_syn_data() {
    let data = payload(400);
    let (mut c, syn) = open_with(tfo(), &data);
    deliver(&mut c, at(10), &[synack_acking(&syn, 100)]);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.send_queued(), 300);
    // §4.2.2: the unacknowledged rest goes out with the first ACK, as a retransmission.
    let out = drain(&mut c, at(10));
    assert_eq!(out.len(), 1);
    assert!(out[0].flags().ack() && !out[0].flags().syn());
    assert_eq!(out[0].hdr.seq, c.iss() + 101);
    assert_eq!(out[0].payload, data[100..]);
    assert!(out[0].tx.retransmission);
    assert_eq!(c.snd_nxt(), c.iss() + 401);
    // It is timed by the retransmission timer like any data.
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline > at(10));
    c.handle_timeout(deadline);
    let again = drain(&mut c, deadline);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].hdr.seq, c.iss() + 101);
    assert_eq!(again[0].payload, data[100..]);
}

#[test]
fn synack_acknowledging_none_of_the_syn_data() {
    let data = payload(400);
    let (mut c, syn) = open_with(tfo(), &data);
    let (mut s, sa) = server(&syn);
    assert_eq!(sa.hdr.ack, syn.hdr.seq + 1);
    deliver(&mut c, at(10), &[sa]);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.send_queued(), 400);
    let out = drain(&mut c, at(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].hdr.seq, c.iss() + 1);
    assert_eq!(out[0].payload, data);
    assert!(out[0].tx.retransmission);
    deliver(&mut s, at(15), &out);
    assert_eq!(s.state(), State::Established);
    assert_eq!(read_all(&mut s), data);
    // The server's delayed ACK (40 ms) acknowledges the data.
    assert!(drain(&mut s, at(15)).is_empty());
    s.handle_timeout(at(55));
    let ack = drain(&mut s, at(55));
    assert_eq!(ack.len(), 1);
    deliver(&mut c, at(60), &ack);
    assert_eq!(c.send_queued(), 0);
}

#[test]
fn syn_retransmission_carries_no_data() {
    let data = payload(400);
    let (mut c, syn) = open_with(tfo(), &data);
    // RFC 7413 §4.2.2: "when the SYN timer fires, the client SHOULD retransmit a SYN packet
    // without data" (initial RTO 1 s, RFC 6298 §2.1).
    assert_eq!(c.poll_timeout(), Some(at(1000)));
    c.handle_timeout(at(1000));
    let rtx = drain(&mut c, at(1000));
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].flags(), TcpFlags::SYN);
    assert!(rtx[0].payload.is_empty());
    assert!(rtx[0].tx.retransmission);
    // A late SYN-ACK to the first SYN that took all its data is still acceptable.
    deliver(&mut c, at(1010), &[synack_acking(&syn, 400)]);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.send_queued(), 0);
    let out = drain(&mut c, at(1010));
    assert_eq!(out.len(), 1);
    assert!(out[0].payload.is_empty());
}

#[test]
fn syn_retransmission_then_synack_of_the_syn_only() {
    let data = payload(400);
    let (mut c, syn) = open_with(tfo(), &data);
    c.handle_timeout(at(1000));
    let rtx = drain(&mut c, at(1000));
    assert!(rtx[0].payload.is_empty());
    let (mut s, sa) = server(&rtx[0]);
    deliver(&mut c, at(1010), &[sa]);
    assert_eq!(c.state(), State::Established);
    let out = drain(&mut c, at(1010));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].hdr.seq, syn.hdr.seq + 1);
    assert_eq!(out[0].payload, data);
    deliver(&mut s, at(1015), &out);
    assert_eq!(read_all(&mut s), data);
}
