//! Root-only: the AF_PACKET ring with its port filter receives exactly the TCP segments sent to
//! the subflow port range, and the raw sender emits them, over a veth pair in two namespaces.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a lab test: real time, panics are failures"
)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mpbond::sys::{netns, packet::PacketRx, rawtx::RawTx};

fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!(),
    };
    let b = b.tcp(sport, dport, 1000, 65535).syn();
    let payload = [0u8; 0];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

#[test]
fn ring_receives_only_the_port_range_and_raw_tx_sends() {
    require_root!();
    let (a, b) = common::lab::veth_pair("pa", "pb");
    let (an, bn) = (a.name.clone(), b.name.clone());

    let rx_thread = std::thread::spawn(move || {
        netns::enter(&an).unwrap();
        let mut rx = PacketRx::open("pa", &(61000..=61999), false, 4).unwrap();
        let mut got: Vec<(u8, u16)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 4 && Instant::now() < deadline {
            rx.drain(8, |f| {
                let ver = f.data[0] >> 4;
                let (_, rest) = etherparse::IpSlice::from_slice(f.data)
                    .map(|ip| ((), ip.payload().payload.to_vec()))
                    .unwrap();
                let dport = u16::from_be_bytes([rest[2], rest[3]]);
                got.push((ver, dport));
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let tx_thread = std::thread::spawn(move || {
        netns::enter(&bn).unwrap();
        let tx = RawTx::open("pb", 0x6d70).unwrap();
        let (s4, d4): (IpAddr, IpAddr) = ("198.18.100.2".parse().unwrap(), "198.18.100.1".parse().unwrap());
        let (s6, d6): (IpAddr, IpAddr) = ("fd18:100::2".parse().unwrap(), "fd18:100::1".parse().unwrap());
        let pkts = [
            tcp_syn(s4, d4, 40000, 80),    // outside the range: filtered
            tcp_syn(s4, d4, 40000, 61005), // inside
            tcp_syn(s6, d6, 40000, 60999), // outside
            tcp_syn(s6, d6, 40000, 61999), // inside
        ];
        for p in &pkts {
            tx.send(p).unwrap();
        }
        let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
        assert_eq!(tx.send_batch(&refs).unwrap(), 4);
    });
    tx_thread.join().unwrap();
    let got = rx_thread.join().unwrap();
    assert_eq!(got, vec![(4, 61005), (6, 61999), (4, 61005), (6, 61999)]);
}

fn tcp_data(src: IpAddr, dst: IpAddr, dport: u16, len: usize) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!(),
    };
    let b = b.tcp(40000, dport, 7, 65535).ack(1);
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// A packet larger than a ring frame (a jumbo frame here; a GRO super-segment in real use) comes
/// whole through the copy path, in order with the small ones around it.
#[test]
fn ring_hands_over_packets_larger_than_a_frame() {
    require_root!();
    let (a, b) = common::lab::veth_pair("qa", "qb");
    a.sh("ip link set qa mtu 9000");
    b.sh("ip link set qb mtu 9000");
    let (s4, d4): (IpAddr, IpAddr) = ("198.18.100.2".parse().unwrap(), "198.18.100.1".parse().unwrap());
    let (s6, d6): (IpAddr, IpAddr) = ("fd18:100::2".parse().unwrap(), "fd18:100::1".parse().unwrap());
    let pkts = vec![
        tcp_data(s4, d4, 61001, 100),
        tcp_data(s4, d4, 61002, 8900),
        tcp_data(s6, d6, 61003, 300),
        tcp_data(s6, d6, 61004, 8800),
        tcp_data(s4, d4, 61005, 1400),
    ];
    let want = pkts.clone();
    let an = a.name.clone();
    let rx_thread = std::thread::spawn(move || {
        netns::enter(&an).unwrap();
        let mut rx = PacketRx::open("qa", &(61000..=61999), false, 1).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 5 && Instant::now() < deadline {
            rx.drain(8, |f| {
                assert!(!f.truncated, "a {}-byte packet was cut", f.data.len());
                got.push(f.data.to_vec());
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let bn = b.name.clone();
    std::thread::spawn(move || {
        netns::enter(&bn).unwrap();
        let tx = RawTx::open("qb", 0x6d70).unwrap();
        for p in &pkts {
            tx.send(p).unwrap();
        }
    })
    .join()
    .unwrap();
    let got = rx_thread.join().unwrap();
    let lens: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(lens, want.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(got == want, "the bytes differ");
}
