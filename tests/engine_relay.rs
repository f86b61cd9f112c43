//! The engine driven with explicit times: a host TCP connection (our TCP engine playing the
//! kernel) relayed to a server (our TCP engine playing the destination), refused connections,
//! malformed packets, UDP and ICMP sessions and their move between interfaces.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mpbond::engine::{
    CELLULAR, Config, DatagramAction, DatagramKind, Dest, DropReason, Engine, IfaceState, WIFI,
};
use mpbond::tcp::{self, Connection, Event, IsnKey};
use mpbond::time::Instant;
use mpbond::wire::{self, icmp, ip, udp};

const HOST: &str = "100.127.77.1:40000";
const SERVER: &str = "198.19.0.11:80";

fn engine() -> Engine {
    let mut e = Engine::new(Config {
        tun_mtu: 9000,
        ..Config::default()
    });
    e.handle_iface_state(
        Instant::ZERO,
        WIFI,
        IfaceState {
            usable: true,
            v4: Some("198.18.1.2".parse().unwrap()),
            v6: Some("fd18:1::2".parse().unwrap()),
            last_resort: false,
        },
    );
    e.handle_iface_state(
        Instant::ZERO,
        CELLULAR,
        IfaceState {
            usable: true,
            v4: Some("198.18.2.2".parse().unwrap()),
            v6: Some("fd18:2::2".parse().unwrap()),
            last_resort: false,
        },
    );
    e
}

/// The world around the engine: the host's connection and the server's.
struct World {
    e: Engine,
    host: Connection,
    server: Option<Connection>,
    /// Answer the server's SYN with a reset instead (no listener).
    refuse: bool,
    now: Instant,
    buf: Vec<u8>,
    server_iface: Option<u8>,
}

impl World {
    fn new(host: SocketAddr, dst: SocketAddr) -> World {
        let now = Instant::ZERO;
        World {
            e: engine(),
            host: Connection::connect(now, host, dst, tcp::Config::default(), &IsnKey([1; 32])),
            server: None,
            refuse: false,
            now,
            buf: vec![0; 70_000],
            server_iface: None,
        }
    }

    /// Moves packets until everyone is quiet; returns whether anything moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.host.poll_transmit(self.now, &mut self.buf) {
            self.e.handle_tun_packet(self.now, &self.buf[..t.len]);
            moved = true;
        }
        while let Some(t) = self.e.poll_transmit(self.now, &mut self.buf) {
            moved = true;
            let p = wire::parse_tcp_packet(&self.buf[..t.len]).expect("engine wrote valid TCP");
            let payload = self.buf[p.payload.clone()].to_vec();
            match t.dest {
                Dest::Tun => self.host.handle_segment(self.now, &p.header, &payload),
                Dest::Iface(i) => {
                    self.server_iface = Some(i);
                    if self.refuse {
                        let n = tcp::write_rst_reply(&mut self.buf, p.src, p.dst, &p.header, payload.len())
                            .unwrap();
                        if let Some(n) = n {
                            let pkt = self.buf[..n].to_vec();
                            self.e.handle_iface_packet(self.now, i, &pkt, false);
                        }
                        continue;
                    }
                    if self.server.is_none() {
                        self.server = Some(
                            Connection::accept(
                                self.now,
                                p.dst,
                                p.src,
                                &p.header,
                                tcp::Config::default(),
                                &IsnKey([2; 32]),
                            )
                            .unwrap(),
                        );
                    } else if let Some(s) = &mut self.server {
                        s.handle_segment(self.now, &p.header, &payload);
                    }
                }
            }
        }
        if let Some(s) = &mut self.server {
            let i = self.server_iface.unwrap();
            while let Some(t) = s.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                let pkt = self.buf[..t.len].to_vec();
                self.e.handle_iface_packet(self.now, i, &pkt, false);
            }
        }
        moved
    }

    /// A new host connection from `host` to the server (its ISN and timestamps from host key
    /// `key` at `at`) hands its SYN to the engine at the world's time.
    fn host_syn(&mut self, at: Instant, host: &str, key: u8) {
        let mut c = Connection::connect(
            at,
            host.parse().unwrap(),
            SERVER.parse().unwrap(),
            tcp::Config::default(),
            &IsnKey([key; 32]),
        );
        let t = c.poll_transmit(at, &mut self.buf).unwrap();
        let syn = self.buf[..t.len].to_vec();
        self.e.handle_tun_packet(self.now, &syn);
    }

    /// Runs until quiet, then advances time to the next timer (bounded).
    fn run(&mut self, mut until: impl FnMut(&mut World) -> bool) {
        for _ in 0..200_000 {
            if until(self) {
                return;
            }
            if !self.step() {
                let next = [
                    self.host.poll_timeout(),
                    self.server.as_ref().and_then(|s| s.poll_timeout()),
                    self.e.poll_timeout(),
                ]
                .into_iter()
                .flatten()
                .min();
                let Some(t) = next else { return };
                self.now = self.now.max(t);
                self.host.handle_timeout(self.now);
                if let Some(s) = &mut self.server {
                    s.handle_timeout(self.now);
                }
                self.e.handle_timeout(self.now);
            }
        }
        panic!("did not converge");
    }
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 9) as u8)
        .collect()
}

fn relay_both_ways(host: &str, dst: &str) {
    let mut w = World::new(host.parse().unwrap(), dst.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    assert_eq!(w.e.counters().tcp_established, 1);
    assert_eq!(w.server_iface, Some(WIFI));
    let up = pattern(3_000_000, 1);
    let down = pattern(2_000_000, 7);
    let (mut up_off, mut down_off) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let mut tmp = vec![0u8; 100_000];
    w.run(|w| {
        up_off += w.host.send(&up[up_off..]);
        if let Some(s) = &mut w.server {
            down_off += s.send(&down[down_off..]);
            loop {
                let n = s.recv(&mut tmp);
                if n == 0 {
                    break;
                }
                got_up.extend_from_slice(&tmp[..n]);
            }
        }
        loop {
            let n = w.host.recv(&mut tmp);
            if n == 0 {
                break;
            }
            got_down.extend_from_slice(&tmp[..n]);
        }
        got_up.len() == up.len() && got_down.len() == down.len()
    });
    assert!(got_up == up, "upload byte-exact");
    assert!(got_down == down, "download byte-exact");
    // Close from the host: the server sees the FIN, closes too; everything ends.
    w.host.close();
    w.run(|w| w.server.as_ref().unwrap().recv_finished());
    w.server.as_mut().unwrap().close();
    w.run(|w| w.host.is_closed() && w.e.flow_counts().0 == 0);
    assert_eq!(w.e.counters().tcp_bytes_up, up.len() as u64);
    assert_eq!(w.e.counters().tcp_bytes_down, down.len() as u64);
}

/// The host's SYN from HOST to SERVER, as written into the TUN.
fn host_syn() -> Vec<u8> {
    let mut buf = vec![0u8; 2000];
    let f = wire::SegmentFields {
        seq: tcp::SeqNum(1),
        flags: wire::TcpFlags::SYN,
        window: 1000,
        ..Default::default()
    };
    let n = wire::write_tcp_packet(
        &mut buf,
        HOST.parse().unwrap(),
        SERVER.parse().unwrap(),
        &f,
        &[],
        &[],
        1,
    )
    .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn tcp_relay_is_byte_exact_both_ways_v4() {
    relay_both_ways(HOST, SERVER);
}

#[test]
fn tcp_relay_is_byte_exact_both_ways_v6() {
    relay_both_ways("[fd6d:70::1]:40000", "[fd19::11]:80");
}

#[test]
fn the_host_syn_is_answered_only_after_the_destination_accepts() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    // One step: host SYN in, upstream SYN out; the server has not answered yet.
    let t = w.host.poll_transmit(w.now, &mut w.buf).unwrap();
    let syn = w.buf[..t.len].to_vec();
    w.e.handle_tun_packet(w.now, &syn);
    let out = w.e.poll_transmit(w.now, &mut w.buf).unwrap();
    assert_eq!(out.dest, Dest::Iface(WIFI));
    assert!(
        w.e.poll_transmit(w.now, &mut w.buf).is_none(),
        "no SYN-ACK to the host yet"
    );
    // A retransmitted host SYN changes nothing.
    w.e.handle_tun_packet(w.now, &syn);
    assert!(w.e.poll_transmit(w.now, &mut w.buf).is_none());
}

#[test]
fn refused_destination_resets_the_host() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.refuse = true;
    let mut events = Vec::new();
    w.run(|w| {
        events.extend(std::iter::from_fn(|| w.host.poll_event()));
        events.contains(&Event::Reset)
    });
    assert_eq!(w.e.counters().tcp_refused, 1, "{:?}", w.e.counters());
    w.run(|w| w.e.flow_counts().0 == 0);
}

#[test]
fn malformed_packets_are_counted_and_dropped() {
    let mut e = engine();
    let now = Instant::ZERO;
    let good = host_syn();
    let n = good.len();
    let mut bad_csum = good.clone();
    bad_csum[n - 1] ^= 0x55; // TCP checksum
    let mut bad_len = good.clone();
    bad_len[3] = 200; // IP total length beyond the buffer
    let mut bad_ipsum = good.clone();
    bad_ipsum[8] = 3;
    let mut bad_opt = good.clone();
    bad_opt[32] = 0x50; // data offset 5 words (no options) kept; now corrupt: offset 15 words
    bad_opt[32] = 0xf0;
    for p in [
        &[][..],
        &[0x45][..],
        &[0x60, 0, 0][..],
        &bad_csum,
        &bad_len,
        &bad_ipsum,
        &bad_opt,
        &[0x99; 40][..],
    ] {
        e.handle_tun_packet(now, p);
        e.handle_iface_packet(now, WIFI, p, false);
    }
    let c = e.counters();
    assert_eq!(c.dropped(DropReason::BadTcpChecksum), 2);
    assert_eq!(c.dropped(DropReason::BadIpLength), 2);
    assert_eq!(c.dropped(DropReason::BadIpChecksum), 2);
    assert_eq!(c.dropped(DropReason::BadTcpHeader), 2);
    assert!(c.dropped(DropReason::BadIpVersion) + c.dropped(DropReason::BadIpHeader) >= 6);
    assert_eq!(c.tcp_flows, 0);
    // The good SYN still opens a flow.
    e.handle_tun_packet(now, &good);
    assert_eq!(e.counters().tcp_flows, 1);
}

fn udp_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2000];
    let n = udp::write_packet(&mut b, src.parse().unwrap(), dst.parse().unwrap(), payload).unwrap();
    b.truncate(n);
    b
}

#[test]
fn udp_sessions_relay_and_move_between_interfaces() {
    let mut e = engine();
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; 70_000];
    e.handle_tun_packet(now, &udp_packet("100.127.77.1:5000", "198.19.0.12:7", b"ping"));
    let Some(DatagramAction::Send {
        session,
        kind,
        iface,
        dst,
        len,
        redundant: false,
    }) = e.poll_datagram(&mut buf)
    else {
        panic!("no send")
    };
    assert_eq!(
        (kind, iface, dst, &buf[..len]),
        (
            DatagramKind::Udp,
            WIFI,
            "198.19.0.12:7".parse().unwrap(),
            &b"ping"[..]
        )
    );
    e.handle_datagram(now, session, b"pong");
    let t = e.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(t.dest, Dest::Tun);
    let ipv = ip::parse(&buf[..t.len]).unwrap();
    assert_eq!(ipv.src, "198.19.0.12".parse::<IpAddr>().unwrap());
    let u = udp::parse(ipv.src, ipv.dst, &buf[ipv.payload.clone()], true).unwrap();
    assert_eq!((u.src_port, u.dst_port, u.payload_len), (7, 5000, 4));
    // "Port unreachable" from the destination reaches the host as ICMP quoting its flow.
    e.handle_datagram_refused(now, session);
    let t = e.poll_transmit(now, &mut buf).unwrap();
    let ipv = ip::parse(&buf[..t.len]).unwrap();
    let m = &buf[ipv.payload.clone()];
    assert_eq!((ipv.proto, m[0], m[1]), (icmp::PROTO_ICMP, 3, 3));
    assert_eq!(&m[8 + 20..8 + 24], &[0x13, 0x88, 0, 7], "quoted ports 5000 -> 7");
    // Wi-Fi goes: the session moves to cellular at once, and the next datagram leaves there.
    let mut wifi = e.iface_state(WIFI).unwrap();
    wifi.usable = false;
    e.handle_iface_state(now, WIFI, wifi);
    assert_eq!(
        e.poll_datagram(&mut buf),
        Some(DatagramAction::Move {
            session,
            kind: DatagramKind::Udp,
            iface: CELLULAR,
            dst
        })
    );
    e.handle_tun_packet(now, &udp_packet("100.127.77.1:5000", "198.19.0.12:7", b"again"));
    assert!(matches!(
        e.poll_datagram(&mut buf),
        Some(DatagramAction::Send { iface: CELLULAR, .. })
    ));
    // Back on Wi-Fi when it returns.
    wifi.usable = true;
    e.handle_iface_state(now, WIFI, wifi);
    assert!(matches!(
        e.poll_datagram(&mut buf),
        Some(DatagramAction::Move { iface: WIFI, .. })
    ));
    assert_eq!(e.counters().failovers, 1);
    // DNS sessions end after 5 s idle, others after 30 s.
    e.handle_tun_packet(now, &udp_packet("100.127.77.1:5001", "198.19.0.12:53", b"q"));
    assert!(matches!(
        e.poll_datagram(&mut buf),
        Some(DatagramAction::Send { .. })
    ));
    for _ in 0..40 {
        let t = e.poll_timeout().unwrap();
        now = t;
        e.handle_timeout(now);
        if e.flow_counts().1 == 1 {
            break;
        }
    }
    assert_eq!(e.flow_counts().1, 1, "the DNS session expired first");
    assert!(now.saturating_duration_since(Instant::ZERO) >= Duration::from_secs(5));
    assert!(now.saturating_duration_since(Instant::ZERO) < Duration::from_secs(30));
    assert!(matches!(
        e.poll_datagram(&mut buf),
        Some(DatagramAction::Close { .. })
    ));
}

#[test]
fn ping_is_relayed_v4_and_v6() {
    for (host, dst, req, rep) in [
        ("100.127.77.1", "198.19.0.12", 8u8, 0u8),
        ("fd6d:70::1", "fd19::12", 128, 129),
    ] {
        let mut e = engine();
        let now = Instant::ZERO;
        let (h, d): (IpAddr, IpAddr) = (host.parse().unwrap(), dst.parse().unwrap());
        let mut buf = vec![0u8; 70_000];
        let msg = [req, 0, 0, 0, 0xab, 0xcd, 0, 1, b'x', b'y'];
        let n = icmp::write_packet(&mut buf, h, d, &msg).unwrap();
        let pkt = buf[..n].to_vec();
        e.handle_tun_packet(now, &pkt);
        let Some(DatagramAction::Send { kind, iface, len, .. }) = e.poll_datagram(&mut buf) else {
            panic!("no send")
        };
        assert_eq!((kind, iface), (DatagramKind::IcmpEcho, WIFI));
        assert_eq!(&buf[6..len], &msg[6..], "sequence number and data unchanged");
        let wire_ident = [buf[4], buf[5]];
        if d.is_ipv4() {
            assert!(
                mpbond::wire::checksum::verify(&buf[..len]),
                "ICMPv4 checksum redone"
            );
        }
        // The reply arrives on the raw socket of Wi-Fi (message only), with our identifier.
        let me = e.iface_state(WIFI).unwrap();
        let local: IpAddr = if d.is_ipv4() {
            me.v4.unwrap().into()
        } else {
            me.v6.unwrap().into()
        };
        let mut reply_pkt = vec![0u8; 200];
        let mut reply = msg;
        reply[0] = rep;
        reply[4..6].copy_from_slice(&wire_ident);
        let n = icmp::write_packet(&mut reply_pkt, d, local, &reply).unwrap();
        let p = ip::parse(&reply_pkt[..n]).unwrap();
        e.handle_icmp(now, WIFI, d, &reply_pkt[p.payload]);
        let t = e.poll_transmit(now, &mut buf).unwrap();
        let p = ip::parse(&buf[..t.len]).unwrap();
        assert_eq!((p.src, p.dst), (d, h));
        let echo = icmp::parse_echo(d, h, &buf[p.payload], true).unwrap().unwrap();
        assert_eq!((echo.request, echo.ident, echo.seq), (false, 0xabcd, 1));
    }
}

#[test]
fn unreachable_destination_is_reported_to_the_host_with_icmp() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    let t = w.host.poll_transmit(w.now, &mut w.buf).unwrap();
    let syn = w.buf[..t.len].to_vec();
    w.e.handle_tun_packet(w.now, &syn);
    let out = w.e.poll_transmit(w.now, &mut w.buf).unwrap();
    let upstream_syn = w.buf[..out.len].to_vec();
    // The Wi-Fi router answers "host unreachable" quoting our SYN (IP header + 8 bytes).
    let mut msg = vec![3u8, 1, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&upstream_syn[..28]);
    let c = mpbond::wire::checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    w.e.handle_icmp(w.now, WIFI, "198.19.1.2".parse().unwrap(), &msg);
    let t = w.e.poll_transmit(w.now, &mut w.buf).unwrap();
    assert_eq!(t.dest, Dest::Tun);
    let p = ip::parse(&w.buf[..t.len]).unwrap();
    assert_eq!(p.proto, icmp::PROTO_ICMP);
    assert_eq!(
        (p.src, p.dst),
        (
            "198.19.0.11".parse::<IpAddr>().unwrap(),
            "100.127.77.1".parse::<IpAddr>().unwrap()
        )
    );
    let m = &w.buf[p.payload];
    assert_eq!((m[0], m[1]), (3, 1));
    assert!(mpbond::wire::checksum::verify(m));
    // The quote is the host's own SYN: same addresses, ports and sequence number.
    assert_eq!(&m[8 + 12..8 + 20], &syn[12..20]);
    assert_eq!(&m[8 + 20..8 + 28], &syn[20..28]);
    assert_eq!(w.e.counters().tcp_unreachable, 1);
    while w.e.poll_transmit(w.now, &mut w.buf).is_some() {}
    assert_eq!(w.e.flow_counts().0, 0);
}

#[test]
fn no_usable_interface_answers_with_icmp_unreachable() {
    let mut e = Engine::new(Config::default());
    let now = Instant::ZERO;
    let mut buf = vec![0u8; 70_000];
    let syn = host_syn();
    e.handle_tun_packet(now, &syn);
    e.handle_tun_packet(now, &udp_packet("100.127.77.1:5000", "198.19.0.12:7", b"x"));
    for _ in 0..2 {
        let t = e.poll_transmit(now, &mut buf).unwrap();
        let p = ip::parse(&buf[..t.len]).unwrap();
        assert_eq!((p.proto, buf[p.payload.start]), (icmp::PROTO_ICMP, 3));
    }
    assert_eq!(e.counters().dropped(DropReason::NoInterface), 2);
    assert_eq!(e.counters().unreachable_sent, 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Arbitrary bytes, and valid packets with a few bytes changed, never panic the engine.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        flips in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
        which in 0u8..4,
    ) {
        let mut e = engine();
        let now = Instant::ZERO;
        let mut buf = vec![0u8; 70_000];
        let mut pkt = match which {
            0 => bytes.clone(),
            1 => {
                let f = wire::SegmentFields { seq: tcp::SeqNum(1), flags: wire::TcpFlags::SYN, window: 9, ..Default::default() };
                let n = wire::write_tcp_packet(&mut buf, HOST.parse().unwrap(), SERVER.parse().unwrap(), &f, &bytes[..bytes.len().min(40)], &[], 1).unwrap_or(0);
                buf[..n].to_vec()
            }
            2 => udp_packet("100.127.77.1:5000", "198.19.0.12:53", &bytes),
            _ => {
                let n = icmp::write_packet(&mut buf, "fd6d::1".parse().unwrap(), "fd19::12".parse().unwrap(), &[[128u8, 0, 0, 0].as_slice(), &bytes].concat()).unwrap_or(0);
                buf[..n].to_vec()
            }
        };
        for (i, v) in &flips {
            if let Some(b) = pkt.get_mut(*i) {
                *b = *v;
            }
        }
        e.handle_tun_packet(now, &pkt);
        e.handle_iface_packet(now, WIFI, &pkt, false);
        e.handle_iface_packet(now, CELLULAR, &pkt, true);
        e.handle_icmp(now, WIFI, "198.19.1.2".parse().unwrap(), &pkt);
        e.handle_icmp(now, WIFI, "fd19::1".parse().unwrap(), &pkt);
        while e.poll_transmit(now, &mut buf).is_some() {}
        while e.poll_datagram(&mut buf).is_some() {}
        e.handle_timeout(Instant::from_millis(100_000));
    }
}

#[test]
fn a_reset_from_the_destination_resets_the_host_and_the_table_empties() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    while w.host.poll_event().is_some() {}
    w.server.as_mut().unwrap().abort();
    let mut events = Vec::new();
    w.run(|w| {
        events.extend(std::iter::from_fn(|| w.host.poll_event()));
        events.contains(&Event::Reset)
    });
    w.run(|w| w.e.flow_counts().0 == 0);
}

#[test]
fn a_reset_from_the_host_resets_the_destination() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    w.run(|w| {
        w.server
            .as_ref()
            .is_some_and(|s| s.state() == tcp::State::Established)
    });
    while w.server.as_mut().unwrap().poll_event().is_some() {}
    w.host.abort();
    let mut events = Vec::new();
    w.run(|w| {
        events.extend(std::iter::from_fn(|| w.server.as_mut().unwrap().poll_event()));
        events.contains(&Event::Reset)
    });
    w.run(|w| w.e.flow_counts().0 == 0);
}

#[test]
fn half_close_from_the_host_lets_the_destination_keep_sending() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    w.host.send(b"request");
    w.host.close();
    w.run(|w| {
        w.server
            .as_ref()
            .is_some_and(|s| s.recv_finished() || s.recv_available() == 7)
    });
    w.run(|w| w.server.as_ref().unwrap().recv_finished());
    let mut req = [0u8; 16];
    assert_eq!(w.server.as_mut().unwrap().recv(&mut req), 7);
    // The server answers after the host's FIN, then closes.
    let answer = pattern(200_000, 3);
    let mut off = 0;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 65536];
    w.run(|w| {
        let s = w.server.as_mut().unwrap();
        off += s.send(&answer[off..]);
        if off == answer.len() {
            s.close();
        }
        loop {
            let n = w.host.recv(&mut tmp);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&tmp[..n]);
        }
        w.host.recv_finished()
    });
    assert!(got == answer);
    w.run(|w| w.host.is_closed() && w.e.flow_counts().0 == 0);
}

#[test]
fn a_host_that_does_not_read_stops_the_destination_with_bounded_buffers() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    let data = pattern(1 << 20, 9);
    let mut accepted = 0usize;
    let mut rounds = 0;
    // The host reads nothing: the server fills what the relay lets through, then stalls.
    w.run(|w| {
        rounds += 1;
        if let Some(s) = &mut w.server {
            accepted += s.send(&data);
        }
        rounds > 3000
    });
    // Host receive buffer + engine host-side send buffer + engine upstream receive buffers
    // (the MPTCP data-level buffer and its subflow's) + server send buffer: 4 MiB each by
    // default.
    let bound = 5 * (4 << 20) + (1 << 20);
    assert!(accepted <= bound, "accepted {accepted} bytes");
    assert!(accepted >= 4 << 20, "the relay moved too little: {accepted}");
    // Reading drains everything, byte-exact in count.
    let mut got = 0usize;
    let mut tmp = vec![0u8; 1 << 16];
    w.run(|w| {
        loop {
            let n = w.host.recv(&mut tmp);
            if n == 0 {
                break;
            }
            got += n;
        }
        got == accepted
    });
}

#[test]
fn a_new_host_syn_on_a_lingering_four_tuple_starts_a_new_flow() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    w.run(|w| w.host.state() == tcp::State::Established);
    // The server closes first: the engine's host side ends in TIME-WAIT.
    w.run(|w| {
        w.server
            .as_ref()
            .is_some_and(|s| s.state() == tcp::State::Established)
    });
    w.server.as_mut().unwrap().close();
    w.run(|w| w.host.recv_finished());
    w.host.close();
    w.run(|w| w.host.is_closed());
    assert_eq!(w.e.flow_counts().0, 1, "lingering in TIME-WAIT");
    // An old duplicate of the first SYN (its timestamp from the start, not newer than the
    // host's last one) does not reopen the 4-tuple: the lingering connection takes it.
    w.host_syn(Instant::ZERO, HOST, 1);
    assert_eq!(w.e.counters().tcp_flows, 1, "an old duplicate SYN opens nothing");
    while w.e.poll_transmit(w.now, &mut w.buf).is_some() {}
    // The host reuses the 4-tuple a moment later: its clock-driven ISN and timestamp (same
    // host key, RFC 6528 / RFC 7323 §7.1) are newer (RFC 6191).
    w.now += Duration::from_millis(2);
    w.host_syn(w.now, HOST, 1);
    assert_eq!(w.e.counters().tcp_flows, 2);
    let out = w.e.poll_transmit(w.now, &mut w.buf).unwrap();
    assert_eq!(out.dest, Dest::Iface(WIFI));
    let p = wire::parse_tcp_packet(&w.buf[..out.len]).unwrap();
    assert!(
        p.header.flags.syn() && !p.header.flags.ack(),
        "a new upstream SYN"
    );
}

#[test]
fn a_port_held_only_by_the_hosts_time_wait_is_reused_for_the_next_flow() {
    let mut w = World::new(HOST.parse().unwrap(), SERVER.parse().unwrap());
    // One local port: each flow to the server needs the one before it gone upstream.
    w.e = Engine::new(Config {
        tun_mtu: 9000,
        ports: 61000..=61000,
        ..Config::default()
    });
    for (i, addr) in [
        (WIFI, ("198.18.1.2", "fd18:1::2")),
        (CELLULAR, ("198.18.2.2", "fd18:2::2")),
    ] {
        w.e.handle_iface_state(
            Instant::ZERO,
            i,
            IfaceState {
                usable: true,
                v4: Some(addr.0.parse().unwrap()),
                v6: Some(addr.1.parse().unwrap()),
                last_resort: false,
            },
        );
    }
    w.run(|w| w.host.state() == tcp::State::Established);
    w.run(|w| {
        w.server
            .as_ref()
            .is_some_and(|s| s.state() == tcp::State::Established)
    });
    let syn_from = |w: &mut World, host: &str| {
        w.host_syn(w.now, host, 4);
        let out = w.e.poll_transmit(w.now, &mut w.buf).unwrap();
        wire::parse_tcp_packet(&w.buf[..out.len]).unwrap().header
    };
    // The first flow still holds the port upstream: a second host SYN is answered at once
    // with a reset (a full table never drops silently).
    let h = syn_from(&mut w, "100.127.77.1:40001");
    assert!(h.flags.rst(), "the host is reset: {h:?}");
    assert_eq!(w.e.counters().dropped(DropReason::TableFull), 1);
    // The server closes first: the upstream is gone, the engine's host side lingers in
    // TIME-WAIT and keeps the flow, but not its port.
    w.server.as_mut().unwrap().close();
    w.run(|w| w.host.recv_finished());
    w.host.close();
    w.run(|w| w.host.is_closed());
    assert_eq!(w.e.flow_counts().0, 1, "lingering in TIME-WAIT");
    let h = syn_from(&mut w, "100.127.77.1:40002");
    assert!(h.flags.syn() && !h.flags.ack(), "a new upstream SYN: {h:?}");
    assert_eq!(h.src_port, 61000, "on the reused port");
    assert_eq!(w.e.counters().ports_reused, 1);
    assert_eq!(w.e.flow_counts().0, 2);
}
