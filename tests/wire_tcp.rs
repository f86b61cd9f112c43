//! The wire layer: parsers never panic and reject bad input with an error; builders round-trip.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;

use mpbond::tcp::SeqNum;
use mpbond::wire::tcp::{
    OptionIter, OptionWriter, SackBlock, SegmentFields, TcpError, TcpFlags, TcpOption, Timestamps, kind,
    parse_options, parse_segment,
};
use mpbond::wire::{PacketError, parse_tcp_packet, write_tcp_packet};
use proptest::prelude::*;

fn addrs(v6: bool) -> (SocketAddr, SocketAddr) {
    if v6 {
        ("[fd00::1]:1234".parse().unwrap(), "[fd00::2]:80".parse().unwrap())
    } else {
        (
            "198.18.0.1:1234".parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
        )
    }
}

#[test]
fn builder_parser_roundtrip_with_all_options() {
    for v6 in [false, true] {
        let (src, dst) = addrs(v6);
        let mut o = OptionWriter::new();
        o.mss(1400);
        o.wscale(9);
        o.sack_permitted_timestamps(Timestamps { val: 11, ecr: 22 });
        o.raw(&[kind::MPTCP, 4, 0x00, 0x81]);
        let f = SegmentFields {
            seq: SeqNum(u32::MAX - 3),
            ack: SeqNum(77),
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 1234,
            ..Default::default()
        };
        let mut buf = [0u8; 200];
        let n = write_tcp_packet(&mut buf, src, dst, &f, o.bytes(), &[b"he", b"llo"], 5).unwrap();
        let p = parse_tcp_packet(&buf[..n]).unwrap();
        assert_eq!((p.src, p.dst), (src, dst));
        assert_eq!(&buf[p.payload.clone()], b"hello");
        let h = p.header;
        assert_eq!(
            (h.seq, h.ack, h.flags, h.window),
            (f.seq, f.ack, f.flags, f.window)
        );
        assert_eq!(h.options.mss, Some(1400));
        assert_eq!(h.options.wscale, Some(9));
        assert!(h.options.sack_permitted);
        assert_eq!(h.options.timestamps, Some(Timestamps { val: 11, ecr: 22 }));
        assert_eq!(
            h.options.mptcp.iter().collect::<Vec<_>>(),
            vec![&[30u8, 4, 0, 0x81][..]]
        );
        // Any flipped bit is caught by a checksum (TCP or IPv4 header).
        for i in 0..n {
            // IPv6 traffic class, flow label and hop limit are covered by no checksum.
            if v6 && (1..4).chain(7..8).any(|j| j == i) {
                continue;
            }
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert!(
                parse_tcp_packet(&bad[..n])
                    .map(|q| q.header != h || q.src != src)
                    .unwrap_or(true),
                "byte {i}"
            );
        }
    }
}

#[test]
fn sack_blocks_roundtrip_and_cap() {
    let blocks: Vec<SackBlock> = (0..5)
        .map(|i| SackBlock {
            left: SeqNum(i * 100),
            right: SeqNum(i * 100 + 50),
        })
        .collect();
    let mut o = OptionWriter::new();
    assert_eq!(o.sack(&blocks), 4);
    let parsed = parse_options(o.bytes()).unwrap();
    assert_eq!(parsed.sack_blocks(), &blocks[..4]);
    let mut o = OptionWriter::new();
    o.timestamps(Timestamps::default());
    assert_eq!(o.sack(&blocks), 3);
}

#[test]
fn malformed_options_are_errors_not_panics() {
    assert_eq!(parse_options(&[kind::MSS]), Err(TcpError::BadOption));
    assert_eq!(parse_options(&[kind::MSS, 1]), Err(TcpError::BadOption));
    assert_eq!(parse_options(&[kind::MSS, 0, 0, 0]), Err(TcpError::BadOption));
    assert_eq!(parse_options(&[kind::MSS, 9, 0, 0]), Err(TcpError::BadOption));
    // A known kind with a wrong length is ignored (treated as unknown).
    assert_eq!(parse_options(&[kind::MSS, 3, 5]).unwrap().mss, None);
    assert_eq!(
        parse_options(&[kind::SACK, 5, 0, 0, 0])
            .unwrap()
            .sack_blocks()
            .len(),
        0
    );
    // END stops the walk; what follows is ignored.
    let mut it = OptionIter::new(&[kind::NOP, kind::END, 0xff]);
    assert_eq!(it.next(), Some(Ok(TcpOption::Nop)));
    assert_eq!(it.next(), Some(Ok(TcpOption::End)));
    assert_eq!(it.next(), None);
    assert_eq!(parse_segment(&[0; 19]).err(), Some(TcpError::Truncated));
    let mut h = [0u8; 20];
    h[12] = 4 << 4;
    assert_eq!(parse_segment(&h).err(), Some(TcpError::BadDataOffset));
    h[12] = 6 << 4;
    assert_eq!(parse_segment(&h).err(), Some(TcpError::BadDataOffset));
    assert!(matches!(parse_tcp_packet(&[0x45]), Err(PacketError::Ip(_))));
}

#[test]
fn builder_refuses_small_buffers() {
    let (src, dst) = addrs(false);
    let mut buf = [0u8; 50];
    let r = write_tcp_packet(
        &mut buf,
        src,
        dst,
        &SegmentFields::default(),
        &[],
        &[&[0u8; 20]],
        0,
    );
    assert!(r.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn option_walker_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..60)) {
        let mut n = 0;
        for o in OptionIter::new(&bytes) {
            n += 1;
            prop_assert!(n <= bytes.len() + 1);
            if o.is_err() { break; }
        }
        let _ = parse_options(&bytes);
    }

    #[test]
    fn packet_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..120), v4 in any::<bool>()) {
        let mut b = bytes;
        if let Some(first) = b.first_mut() {
            *first = if v4 { 0x45 } else { 0x60 };
        }
        let _ = parse_tcp_packet(&b);
        let _ = parse_segment(&b);
    }

    #[test]
    fn seqnum_comparisons_are_modular(a in any::<u32>(), d in 1u32..0x7fff_ffff) {
        let x = SeqNum(a);
        let y = x + d;
        prop_assert_eq!(x.partial_cmp(&y), Some(std::cmp::Ordering::Less));
        prop_assert_eq!(y.partial_cmp(&x), Some(std::cmp::Ordering::Greater));
        prop_assert_eq!(y - x, d as i32);
        prop_assert_eq!(y.saturating_sub(x), d);
        prop_assert_eq!(x.saturating_sub(y), 0);
        prop_assert!(x.in_range(x, y) && !y.in_range(x, y));
    }
}
