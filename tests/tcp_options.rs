//! RFC 7323: window scaling, timestamps (RTTM, TS.Recent, PAWS); large (GRO) segments; the MSS
//! used for outgoing segments.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Connection, State};
use mpbond::time::Instant;
use mpbond::wire::tcp::{TcpFlags, Timestamps};

#[test]
fn window_scale_is_applied_both_ways() {
    let (mut c, mut s) = handshake(
        Config::default(),
        Config {
            recv_buffer: 1 << 20,
            ..Config::default()
        },
    );
    // The server's 1 MiB buffer needs shift 5; the client's 4 MiB shift 7.
    assert_eq!(c.window_scale(), Some((5, 7)));
    assert_eq!(s.window_scale(), Some((7, 5)));
    c.send(b"x");
    let segs = drain(&mut c, at(1));
    // The window field is our free space >> 7.
    assert_eq!(u64::from(segs[0].hdr.window), (4u64 << 20) >> 7);
    deliver(&mut s, at(2), &segs);
    s.handle_timeout(at(100));
    let acks = drain(&mut s, at(100));
    deliver(&mut c, at(100), &acks);
    // The peer's window field scaled by its shift.
    assert_eq!(c.send_window(), u64::from(acks[0].hdr.window) << 5);
    assert!(c.send_window() > 65535);
}

#[test]
fn window_scale_above_14_is_clamped() {
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    let mut syn = drain(&mut c, now)[0].hdr;
    syn.options.wscale = Some(20);
    let s = Connection::accept(now, server_addr(), client_addr(), &syn, Config::default(), &key()).unwrap();
    // RFC 7323 §2.3: a shift greater than 14 MUST be used as 14.
    assert_eq!(s.window_scale().map(|w| w.0), Some(14));
}

fn ts_pair() -> (Connection, Connection) {
    handshake(Config::default(), Config::default())
}

#[test]
fn timestamps_echo_and_paws_drops_old_segments() {
    let (mut c, mut s) = ts_pair();
    s.send(b"first");
    let seg = drain(&mut s, at(10));
    let ts = seg[0].hdr.options.timestamps.unwrap();
    deliver(&mut c, at(11), &seg);
    assert_eq!(read_all(&mut c), b"first");
    // Our next ACK echoes the peer's TSval (RFC 7323 §4.3).
    c.send(b"reply");
    let out = drain(&mut c, at(12));
    assert_eq!(out[0].hdr.options.timestamps.unwrap().ecr, ts.val);
    // A segment with an older TSval (a wrapped old duplicate) is dropped and ACKed (PAWS, §5.3).
    let mut old = seg[0].hdr;
    old.seq = c.rcv_nxt_seq();
    old.options.timestamps = Some(Timestamps {
        val: ts.val.wrapping_sub(1000),
        ecr: ts.ecr,
    });
    c.handle_segment(at(13), &old, b"stale");
    assert_eq!(c.recv_available(), 0);
    let acks = drain(&mut c, at(13));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].hdr.ack, c.rcv_nxt_seq());
    // The same segment with a current TSval is accepted.
    old.options.timestamps = Some(Timestamps {
        val: ts.val.wrapping_add(5),
        ecr: ts.ecr,
    });
    c.handle_segment(at(14), &old, b"fresh");
    assert_eq!(read_all(&mut c), b"fresh");
}

#[test]
fn segment_without_timestamps_is_dropped_once_negotiated() {
    let (mut c, mut s) = ts_pair();
    s.send(b"abc");
    let mut seg = drain(&mut s, at(1));
    seg[0].hdr.options.timestamps = None;
    deliver(&mut c, at(2), &seg);
    assert_eq!(c.recv_available(), 0);
    // A RST without timestamps is still processed (RFC 7323 §3.2 applies to non-RST segments).
    let h = craft(c.rcv_nxt_seq().0, 0, TcpFlags::RST, 0, None);
    c.handle_segment(at(3), &h, &[]);
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn large_segments_are_accepted_and_output_is_segmented_to_the_mss() {
    let (mut c, mut s) = handshake(
        Config {
            mss: 1000,
            ..Config::default()
        },
        Config {
            mss: 1000,
            timestamps: false,
            ..Config::default()
        },
    );
    // The sender splits a 30 kB write into segments of at most the MSS (timestamps were not
    // negotiated: the server did not offer them).
    c.send(&vec![3u8; 30_000]);
    let segs = drain(&mut c, at(1));
    assert!(
        segs.iter().all(|s| s.len() == 1000),
        "{:?}",
        segs.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
    // A GRO-merged 30 kB segment arrives at the client: accepted whole.
    let big = vec![9u8; 30_000];
    let mut h = craft(
        c.rcv_nxt_seq().0,
        c.snd_una().0,
        TcpFlags::ACK | TcpFlags::PSH,
        65535,
        None,
    );
    h.options.timestamps = Some(Timestamps { val: 1, ecr: 0 });
    c.handle_segment(at(2), &h, &big);
    assert_eq!(read_all(&mut c), big);
    let _ = drain(&mut s, at(1));
}

#[test]
fn rtt_measured_from_data_acks() {
    let (mut c, mut s) = ts_pair();
    for i in 0..40u64 {
        c.send(&[1u8; 1000]);
        let out = drain(&mut c, at(100 * i));
        deliver(&mut s, at(100 * i + 25), &out);
        s.handle_timeout(at(100 * i + 25 + 40));
        let acks = drain(&mut s, at(100 * i + 25 + 40));
        deliver(&mut c, at(100 * i + 50 + 40), &acks);
    }
    let srtt = c.health().srtt.unwrap();
    assert!(srtt >= ms(85) && srtt <= ms(95), "{srtt:?}");
}
