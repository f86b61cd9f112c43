//! The simulator's links: determinism per seed, rate/queue, MTU, blackhole, duplication,
//! reordering, and the option-rewriting middlebox (strip / NOP, SYN only or all segments).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mpbond::sim::link::rewrite_option;
use mpbond::sim::{Link, Network, Rewrite};
use mpbond::tcp::SeqNum;
use mpbond::time::Instant;
use mpbond::wire::tcp::{OptionWriter, SegmentFields, TcpFlags, Timestamps, kind};
use mpbond::wire::{parse_tcp_packet, write_tcp_packet};

fn a() -> SocketAddr {
    "198.18.0.1:1000".parse().unwrap()
}
fn b() -> SocketAddr {
    "198.18.0.2:2000".parse().unwrap()
}

fn packet(flags: TcpFlags, payload: usize) -> Vec<u8> {
    let mut o = OptionWriter::new();
    o.mss(1400);
    o.raw(&[kind::MPTCP, 12, 0, 0x81, 1, 2, 3, 4, 5, 6, 7, 8]);
    o.timestamps(Timestamps { val: 1, ecr: 2 });
    let f = SegmentFields {
        seq: SeqNum(1),
        ack: SeqNum(2),
        flags,
        window: 100,
        ..Default::default()
    };
    let mut buf = vec![0u8; 2000 + payload];
    let n = write_tcp_packet(&mut buf, a(), b(), &f, o.bytes(), &[&vec![7u8; payload]], 0).unwrap();
    buf.truncate(n);
    buf
}

fn run(net: &mut Network, n: usize, size: usize, gap: Duration) -> Vec<(Instant, Vec<u8>)> {
    let mut t = Instant::ZERO;
    for _ in 0..n {
        net.send(t, &packet(TcpFlags::ACK, size));
        t += gap;
    }
    let mut out = vec![];
    while let Some(at) = net.next_delivery() {
        let d = net.deliver(at).unwrap();
        out.push((at, d.packet));
    }
    out
}

fn ips() -> (IpAddr, IpAddr) {
    (a().ip(), b().ip())
}

#[test]
fn same_seed_same_outcome() {
    let links = vec![
        Link::Loss(0.2),
        Link::Jitter(Duration::from_millis(5)),
        Link::Reorder {
            p: 0.1,
            extra: Duration::from_millis(3),
        },
    ];
    let go = |seed| {
        let mut n = Network::new(seed);
        n.add_path(ips().0, ips().1, links.clone());
        run(&mut n, 200, 100, Duration::from_micros(100))
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
    };
    assert_eq!(go(5), go(5));
    assert_ne!(go(5), go(6));
}

#[test]
fn rate_limit_spaces_packets_and_drops_on_full_queue() {
    let mut net = Network::new(1);
    let p = net.add_path(
        ips().0,
        ips().1,
        vec![Link::Rate {
            bytes_per_sec: 1_000_000,
            queue_bytes: 10_000,
        }],
    );
    let out = run(&mut net, 100, 932, Duration::ZERO);
    assert_eq!(out[0].1.len(), 1000);
    // 1000-byte packets at 1 MB/s: 1 ms apart; the queue holds 10 packets beyond the one in service.
    assert_eq!(out.len(), 11);
    assert_eq!(out[1].0 - out[0].0, Duration::from_millis(1));
    assert_eq!(net.stages_mut(p).unwrap()[0].stats.dropped, 89);
}

#[test]
fn mtu_blackhole_and_duplication() {
    let mut net = Network::new(1);
    net.add_path(ips().0, ips().1, vec![Link::Mtu(1000)]);
    assert_eq!(run(&mut net, 3, 2000, Duration::ZERO).len(), 0);
    assert_eq!(run(&mut net, 3, 500, Duration::ZERO).len(), 3);
    let mut net = Network::new(1);
    let from = Instant::from_millis(10);
    net.add_path(
        ips().0,
        ips().1,
        vec![Link::Blackhole {
            from,
            until: from + Duration::from_millis(10),
        }],
    );
    // Packets every ms for 30 ms: those entering in [10, 20) ms vanish.
    assert_eq!(run(&mut net, 30, 10, Duration::from_millis(1)).len(), 20);
    let mut net = Network::new(1);
    net.add_path(ips().0, ips().1, vec![Link::Duplicate(1.0)]);
    assert_eq!(run(&mut net, 5, 10, Duration::ZERO).len(), 10);
    // Unknown destinations are counted, not delivered.
    let mut net = Network::new(1);
    assert!(!net.send(Instant::ZERO, &packet(TcpFlags::ACK, 1)));
    assert_eq!(net.unroutable, 1);
}

#[test]
fn middlebox_strips_or_nops_an_option() {
    for mode in [Rewrite::Strip, Rewrite::Nop] {
        let mut p = packet(TcpFlags::SYN, 33);
        let before = parse_tcp_packet(&p).unwrap();
        assert!(!before.header.options.mptcp.is_empty());
        assert!(rewrite_option(&mut p, kind::MPTCP, mode, false));
        let after = parse_tcp_packet(&p).expect("checksums fixed");
        assert!(after.header.options.mptcp.is_empty());
        assert_eq!(after.header.options.mss, Some(1400));
        assert_eq!(after.header.options.timestamps, before.header.options.timestamps);
        assert_eq!(&p[after.payload.clone()], &[7u8; 33][..]);
        let shrunk = after.payload.start < before.payload.start;
        assert_eq!(shrunk, mode == Rewrite::Strip);
    }
    // SYN-only: an ACK passes untouched.
    let mut p = packet(TcpFlags::ACK, 0);
    assert!(!rewrite_option(&mut p, kind::MPTCP, Rewrite::Strip, true));
    let mut net = Network::new(1);
    net.add_path(
        ips().0,
        ips().1,
        vec![Link::RewriteOption {
            kind: kind::MPTCP,
            mode: Rewrite::Strip,
            syn_only: false,
        }],
    );
    let out = run(&mut net, 2, 10, Duration::ZERO);
    assert!(
        out.iter()
            .all(|(_, p)| parse_tcp_packet(p).unwrap().header.options.mptcp.is_empty())
    );
}
