//! RFC 2018 SACK generation, RFC 6675 SACK-based recovery, RFC 6582 NewReno without SACK.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Connection};

fn cfg(sack: bool) -> Config {
    Config {
        sack,
        timestamps: false,
        delayed_ack: ms(40),
        ..Config::default()
    }
}

/// Client sends `n` full segments; returns them.
fn burst(c: &mut Connection, n: usize) -> Vec<Seg> {
    c.send(&vec![5u8; n * 1460]);
    let segs = drain(c, at(1));
    assert_eq!(segs.len(), n);
    segs
}

#[test]
fn receiver_reports_most_recent_block_first() {
    let (mut c, mut s) = handshake(cfg(true), cfg(true));
    let segs = burst(&mut c, 8);
    let seq = |i: usize| segs[i].hdr.seq;
    // Lose 1 and 4.
    deliver(&mut s, at(2), &segs[0..1]);
    deliver(&mut s, at(2), &segs[2..4]);
    let a = drain(&mut s, at(2));
    let last = a.last().unwrap();
    assert_eq!(last.hdr.ack, seq(1));
    assert_eq!(last.hdr.options.sack_blocks().len(), 1);
    assert_eq!(last.hdr.options.sack_blocks()[0].left, seq(2));
    assert_eq!(last.hdr.options.sack_blocks()[0].right, seq(4));
    deliver(&mut s, at(3), &segs[5..6]);
    let b = drain(&mut s, at(3));
    let blocks = b[0].hdr.options.sack_blocks();
    // RFC 2018 §4: the first block holds the most recently received segment; the next repeats
    // the most recently reported one.
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].left, blocks[0].right), (seq(5), seq(6)));
    assert_eq!((blocks[1].left, blocks[1].right), (seq(2), seq(4)));
    // Filling the first hole: cumulative ACK jumps, the remaining block is reported.
    deliver(&mut s, at(4), &segs[1..2]);
    let d = drain(&mut s, at(4));
    assert_eq!(d[0].hdr.ack, seq(4));
    assert_eq!(d[0].hdr.options.sack_blocks().len(), 1);
    assert_eq!(read_all(&mut s).len(), 4 * 1460);
}

#[test]
fn sender_retransmits_only_the_hole() {
    let (mut c, mut s) = handshake(cfg(true), cfg(true));
    let segs = burst(&mut c, 10);
    let mut to_server: Vec<Seg> = segs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, s)| s.clone())
        .collect();
    let mut rtx = Vec::new();
    for round in 0..10u64 {
        deliver(&mut s, at(10 + round), &to_server);
        let acks = drain(&mut s, at(10 + round));
        deliver(&mut c, at(20 + round), &acks);
        to_server = drain(&mut c, at(20 + round));
        rtx.extend(
            to_server
                .iter()
                .filter(|x| x.tx.retransmission)
                .map(|x| x.hdr.seq),
        );
        if to_server.is_empty() {
            break;
        }
    }
    assert_eq!(
        rtx,
        vec![segs[2].hdr.seq],
        "exactly the lost segment, once, before any timeout"
    );
    assert_eq!(read_all(&mut s).len(), 10 * 1460);
    assert!(c.health().cwnd < 14_600, "the window was reduced");
}

#[test]
fn sack_recovery_repairs_several_holes_in_one_round_trip() {
    let (mut c, mut s) = handshake(cfg(true), cfg(true));
    let segs = burst(&mut c, 10);
    let lost = [1usize, 4, 6];
    let kept: Vec<Seg> = segs
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(i))
        .map(|(_, s)| s.clone())
        .collect();
    deliver(&mut s, at(10), &kept);
    let acks = drain(&mut s, at(10));
    deliver(&mut c, at(20), &acks);
    let out = drain(&mut c, at(20));
    let rtx: Vec<_> = out
        .iter()
        .filter(|x| x.tx.retransmission)
        .map(|x| x.hdr.seq)
        .collect();
    // RFC 6675 NextSeg: every hole below the highest SACKed data that is "lost" (3 segments
    // SACKed above it) goes out; hole 6 has only 3 SACKed segments above it (7, 8, 9): lost too.
    assert_eq!(rtx, lost.iter().map(|&i| segs[i].hdr.seq).collect::<Vec<_>>());
}

#[test]
fn newreno_retransmits_on_partial_ack_without_timeout() {
    let (mut c, mut s) = handshake(cfg(false), cfg(false));
    assert!(!c.sack_enabled());
    let segs = burst(&mut c, 10);
    let kept: Vec<Seg> = segs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 6)
        .map(|(_, s)| s.clone())
        .collect();
    deliver(&mut s, at(10), &kept);
    let dupacks = drain(&mut s, at(10));
    assert!(dupacks.iter().all(|a| a.hdr.options.sack_blocks().is_empty()));
    deliver(&mut c, at(20), &dupacks);
    // RFC 6582 §3.2 step 2-3: three duplicate ACKs -> retransmit the first unacknowledged segment.
    let out = drain(&mut c, at(20));
    let rtx: Vec<_> = out.iter().filter(|x| x.tx.retransmission).collect();
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].hdr.seq, segs[2].hdr.seq);
    deliver(&mut s, at(30), &out);
    let partial = drain(&mut s, at(30));
    assert_eq!(partial.last().unwrap().hdr.ack, segs[6].hdr.seq);
    deliver(&mut c, at(40), &partial);
    // Step 5: a partial ACK -> retransmit the next hole at once.
    let out = drain(&mut c, at(40));
    let rtx: Vec<_> = out
        .iter()
        .filter(|x| x.tx.retransmission)
        .map(|x| x.hdr.seq)
        .collect();
    assert_eq!(rtx, vec![segs[6].hdr.seq]);
    deliver(&mut s, at(50), &out);
    assert_eq!(read_all(&mut s).len(), 10 * 1460);
    assert!(c.health().in_recovery);
    let fin = drain(&mut s, at(50));
    deliver(&mut c, at(60), &fin);
    assert!(!c.health().in_recovery, "full ACK ends recovery");
}
