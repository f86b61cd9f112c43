//! Super-segments (issue 15): subflows hand the interface one packet of up to 64 KB, which the
//! simulated sending host cuts into MSS-sized segments as the kernel's GSO does
//! (`Network::send_transmit`, `wire::gso`), each carrying the same DSS mapping. Every transfer
//! must stay byte-exact when single segments of a super-segment are lost (SACK and
//! retransmission of just those), under random loss and reordering, and with DSS checksums
//! (which turn super-segments off).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mpsim::{ms, run_ok, spec};
use mpbond::config::Mode;
use mpbond::sim::mptcp::MpSpec;
use mpbond::sim::transfer::{TransferSpec, run as run_tcp};
use mpbond::sim::{Link, Network};
use mpbond::time::Instant;

const SUPER: usize = 65_535;

fn super_spec(seed: u64, c2s: u64, s2c: u64) -> MpSpec {
    let mut s = spec(seed, Mode::Aggregate, c2s, s2c);
    s.client.tcp.super_segments = SUPER;
    s.server.tcp.super_segments = SUPER;
    // As the daemon by default (`subflows.checksums` off; the library's default asks for them).
    s.client.capable.checksum_required = false;
    s.server.capable.checksum_required = false;
    s
}

#[test]
fn super_segments_carry_both_ways_byte_exact() {
    let s = super_spec(1, 3 << 20, 3 << 20);
    let r = run_ok(&s);
    assert_eq!((r.client_received, r.server_received), (3 << 20, 3 << 20));
    let (supers, parts) = r.super_segments;
    assert!(supers > 50, "super-segments sent: {supers}");
    println!("{supers} super-segments made {parts} segments");
    assert!(
        parts >= 2 * supers,
        "{parts} segments from {supers} super-segments"
    );
    // Without super-segments nothing is cut.
    let mut s0 = s.clone();
    s0.client.tcp.super_segments = 0;
    s0.server.tcp.super_segments = 0;
    let r0 = run_ok(&s0);
    assert_eq!(r0.super_segments, (0, 0));
}

#[test]
fn lost_segments_of_super_segments_are_retransmitted() {
    let mut s = super_spec(2, 2 << 20, 2 << 20);
    // Single segments (most of them parts of super-segments) lost on both paths, both ways,
    // in the slow start and later, a few back to back.
    let drops: Vec<u64> = vec![30, 31, 90, 200, 201, 202, 640, 1100];
    s.wifi.push(Link::DropNth(drops.clone()));
    s.cell.push(Link::DropNth(drops));
    let r = run_ok(&s);
    assert_eq!((r.client_received, r.server_received), (2 << 20, 2 << 20));
    assert!(r.super_segments.0 > 20);
    let lost: u64 = r.final_stats.iter().map(|p| p.sent - p.delivered).sum();
    assert!(lost >= 8, "segments lost: {lost}");
}

#[test]
fn super_segments_under_random_loss_and_reordering() {
    for seed in 0..12 {
        let mut s = super_spec(100 + seed, 1 << 20, 1 << 20);
        for links in [&mut s.wifi, &mut s.cell] {
            links.push(Link::Loss([0.005, 0.02][(seed % 2) as usize]));
            links.push(Link::Reorder {
                p: 0.02,
                extra: ms(3),
            });
        }
        let r = run_ok(&s);
        assert_eq!(
            (r.client_received, r.server_received),
            (1 << 20, 1 << 20),
            "seed {seed}"
        );
        assert!(r.super_segments.0 > 0, "seed {seed}");
    }
}

#[test]
fn dss_checksums_send_one_segment_per_mapping() {
    let mut s = super_spec(3, 1 << 20, 1 << 20);
    s.client.capable.checksum_required = true;
    let r = run_ok(&s);
    assert_eq!((r.client_received, r.server_received), (1 << 20, 1 << 20));
    assert_eq!(r.super_segments, (0, 0), "no super-segment with DSS checksums");
}

/// Plain TCP (the upstream of a flow without MPTCP, and each subflow underneath): one lost
/// segment in the middle of a super-segment is SACKed around and resent alone.
#[test]
fn tcp_super_segment_with_a_lost_middle_segment() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "198.18.0.1:40000".parse().unwrap(),
        "198.18.1.1:80".parse().unwrap(),
    );
    for v6 in [false, true] {
        let (a, b) = if v6 {
            (
                "[fd00:6d70::1]:40000".parse().unwrap(),
                "[fd00:6d70::2]:443".parse().unwrap(),
            )
        } else {
            (a, b)
        };
        let mut net = Network::new(7);
        let links = vec![
            Link::Delay(Duration::from_millis(5)),
            Link::Rate {
                bytes_per_sec: 50_000_000,
                queue_bytes: 1 << 20,
            },
            Link::DropNth(vec![12, 13, 57, 300]),
        ];
        net.add_duplex(a.ip(), b.ip(), links);
        let mut spec = TransferSpec::new(a, b);
        spec.a_to_b = 4 << 20;
        spec.b_to_a = 1 << 20;
        spec.cfg_a.super_segments = SUPER;
        spec.cfg_b.super_segments = SUPER;
        spec.time_limit = Instant::from_millis(60_000);
        let r = run_tcp(&mut net, &spec);
        assert!(r.completed, "v6 {v6}: {:?}", r.error);
        assert_eq!((r.a_received, r.b_received), (1 << 20, 4 << 20));
        assert_eq!(r.bad_packets, 0);
        assert!(net.super_segments > 30, "v6 {v6}: {}", net.super_segments);
        println!(
            "v6 {v6}: {} super-segments made {} segments",
            net.super_segments, net.super_segment_parts
        );
        assert!(net.super_segment_parts >= 2 * net.super_segments);
    }
}
