//! UDP through the converter's datagram relay, in a deterministic simulator: the engine (the
//! laptop) and `convert::relay::RelayTable` (the converter) with an echoing destination behind
//! it, two paths (Wi-Fi, cellular) with delay, loss and duplication, the laptop's per-session
//! sockets modelled (a move opens a new source port; a redundant session has one per path), an
//! attacker replaying and forging datagrams from elsewhere. Seeds replay with `MPBOND_SIM_SEED`.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mpbond::convert::dgram::{self, Kind, RelayId};
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::relay::{RelayConfig, RelayTable, SessionKey, Up};
use mpbond::engine::{
    CELLULAR, Config, ConverterSettings, DatagramAction, Dest, DropReason, Engine, IfaceState, SessionId,
    WIFI,
};
use mpbond::redundancy::Redundancy;
use mpbond::sim::rng::{Rng, seed_from_env};
use mpbond::time::Instant;
use mpbond::wire::{icmp, ip, udp};

const HOST: &str = "100.127.77.1:40000";
const HOST6: &str = "[fd99::1]:40000";
const CONV: &str = "198.18.3.1:5124";
const UNIX: u64 = 1_800_000_000;
const ATTACKER: &str = "203.0.113.66:4444";
/// The echo identifier of the converter's ping socket (the kernel's choice).
const CONV_PING_IDENT: u16 = 0x4242;

fn key() -> ClientKey {
    ClientKey::from_parts(KeyId([7; 8]), [9; 32])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One path of the laptop's: one-way delay, loss, duplication; blackholed or not.
struct Path {
    addr: IpAddr,
    addr6: IpAddr,
    delay: Duration,
    loss: f64,
    dup: f64,
    blackhole: bool,
}

/// A datagram in flight.
struct InFlight {
    at: Instant,
    /// To the converter (else to the laptop).
    up: bool,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Something done to the world once, at a time.
type Event<'a> = (Instant, &'a dyn Fn(&mut Sim));

/// Laptop, paths, converter, destination.
struct Sim {
    e: Engine,
    now: Instant,
    rng: Rng,
    paths: [Path; 2],
    /// The engine's sessions' sockets by (session, iface): (local address, connected peer).
    socks: HashMap<(SessionId, u8), (SocketAddr, SocketAddr)>,
    next_port: u16,
    table: RelayTable,
    flight: Vec<InFlight>,
    /// Destinations' view: the source addresses each saw (the converter's socket for the
    /// session: a session key; a direct datagram: the laptop's address).
    seen_by_dst: BTreeMap<SocketAddr, HashSet<String>>,
    /// Datagrams the host received back: (time, payload).
    host_rx: Vec<(Instant, Vec<u8>)>,
    /// ICMP messages the host received: (time, source, destination, message).
    host_icmp: Vec<(Instant, IpAddr, IpAddr, Vec<u8>)>,
    /// Up datagrams the converter received (for the attacker to replay).
    captured: Vec<Vec<u8>>,
    /// Converter counters by name.
    drops: BTreeMap<&'static str, u64>,
    /// The converter refuses destinations on this port (its policy).
    refused_port: Option<u16>,
    /// The converter is not there.
    converter_dead: bool,
    /// The destination answers (else it only listens: a one-way stream, or a VoIP peer whose
    /// silence suppression stopped its stream).
    echo: bool,
    buf: Vec<u8>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim::with(seed, Redundancy::default())
    }

    fn with(seed: u64, redundancy: Redundancy) -> Sim {
        Sim::with_config(
            seed,
            Config {
                redundancy,
                ..Config::default()
            },
        )
    }

    /// With the engine's `cfg` (the converter and the TUN MTU set here).
    fn with_config(seed: u64, cfg: Config) -> Sim {
        let mut e = Engine::new(Config {
            tun_mtu: 9000,
            converter: Some(ConverterSettings {
                addrs: vec![sa(CONV)],
                key: key(),
            }),
            ..cfg
        });
        e.set_unix_time(Instant::ZERO, Duration::from_secs(UNIX));
        for (i, a) in [(WIFI, "198.18.1.2"), (CELLULAR, "198.18.2.2")] {
            e.handle_iface_state(
                Instant::ZERO,
                i,
                IfaceState {
                    usable: true,
                    v4: Some(a.parse().unwrap()),
                    v6: Some(format!("fd18:{}::2", i + 1).parse().unwrap()),
                    ..Default::default()
                },
            );
        }
        let path = |a: &str, a6: &str, d| Path {
            addr: a.parse().unwrap(),
            addr6: a6.parse().unwrap(),
            delay: ms(d),
            loss: 0.0,
            dup: 0.0,
            blackhole: false,
        };
        Sim {
            e,
            now: Instant::ZERO,
            rng: Rng::new(seed),
            paths: [
                path("198.18.1.2", "fd18:1::2", 10),
                path("198.18.2.2", "fd18:2::2", 30),
            ],
            socks: HashMap::new(),
            next_port: 50_000,
            table: RelayTable::new(RelayConfig::default()),
            flight: Vec::new(),
            seen_by_dst: BTreeMap::new(),
            host_rx: Vec::new(),
            host_icmp: Vec::new(),
            captured: Vec::new(),
            drops: BTreeMap::new(),
            refused_port: None,
            converter_dead: false,
            echo: true,
            buf: vec![0; 70_000],
        }
    }

    fn unix(&self) -> u64 {
        UNIX + self.now.as_millis() / 1000
    }

    /// The host sends `payload` from HOST to `dst`.
    fn host_send(&mut self, dst: SocketAddr, payload: &[u8]) {
        let host = if dst.is_ipv4() { sa(HOST) } else { sa(HOST6) };
        let n = udp::write_packet(&mut self.buf, host, dst, payload).unwrap();
        let pkt = self.buf[..n].to_vec();
        self.e.handle_tun_packet(self.now, &pkt);
        self.pump();
    }

    fn send_on_path(&mut self, iface: u8, up: bool, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let p = &self.paths[usize::from(iface)];
        if p.blackhole || self.rng.chance(p.loss) {
            return;
        }
        let copies = if self.rng.chance(p.dup) { 2 } else { 1 };
        let at = self.now + p.delay;
        for _ in 0..copies {
            self.flight.push(InFlight {
                at,
                up,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    /// Moves everything the engine has to give (packets to the host, socket actions).
    fn pump(&mut self) {
        while let Some(t) = self.e.poll_transmit(self.now, &mut self.buf) {
            if t.dest == Dest::Tun {
                let p = ip::parse(&self.buf[..t.len]).unwrap();
                if p.proto == 17 {
                    let seg = &self.buf[p.payload.clone()];
                    self.host_rx.push((self.now, seg[8..].to_vec()));
                } else if p.proto == icmp::PROTO_ICMP || p.proto == icmp::PROTO_ICMPV6 {
                    let msg = self.buf[p.payload.clone()].to_vec();
                    self.host_icmp.push((self.now, p.src, p.dst, msg));
                }
            }
        }
        while let Some(a) = self.e.poll_datagram(&mut self.buf) {
            match a {
                DatagramAction::Send {
                    session,
                    iface,
                    dst,
                    len,
                    redundant,
                    ..
                } => {
                    // As the datagram thread: one socket per path of a redundant session,
                    // else one socket, reopened when the path changes.
                    let fresh = self.socks.get(&(session, iface)).is_none_or(|s| s.1 != dst);
                    if fresh {
                        if !redundant {
                            self.socks.retain(|k, _| k.0 != session);
                        }
                        self.open(session, iface, dst);
                    }
                    let (local, peer) = self.socks[&(session, iface)];
                    let bytes = self.buf[..len].to_vec();
                    if peer == sa(CONV) {
                        self.send_on_path(iface, true, local, peer, bytes);
                    } else {
                        // Direct: the destination sees the laptop's own address.
                        self.seen_by_dst
                            .entry(peer)
                            .or_default()
                            .insert(format!("direct {local}"));
                    }
                }
                DatagramAction::Move {
                    session, iface, dst, ..
                } => {
                    // A copy's socket on `iface` stays (the converter knows it); else a new one.
                    let kept = self.socks.get(&(session, iface)).filter(|s| s.1 == dst).copied();
                    if self.socks.keys().any(|k| k.0 == session) {
                        self.socks.retain(|k, _| k.0 != session);
                        match kept {
                            Some(v) => {
                                self.socks.insert((session, iface), v);
                            }
                            None => self.open(session, iface, dst),
                        }
                    }
                }
                DatagramAction::Close { session } => {
                    self.socks.retain(|k, _| k.0 != session);
                }
            }
        }
    }

    fn open(&mut self, session: SessionId, iface: u8, dst: SocketAddr) {
        self.next_port += 1;
        let p = &self.paths[usize::from(iface)];
        let ip = if dst.is_ipv4() { p.addr } else { p.addr6 };
        self.socks
            .insert((session, iface), (SocketAddr::new(ip, self.next_port), dst));
    }

    fn count(&mut self, what: &'static str) {
        *self.drops.entry(what).or_default() += 1;
    }

    /// The converter receives `bytes` from `from`; the destination echoes at once.
    fn converter_rx(&mut self, from: SocketAddr, bytes: &[u8]) {
        if self.converter_dead {
            return;
        }
        let (now, unix) = (self.now, self.unix());
        let verdict = self
            .table
            .handle_up(now, unix, from, bytes, |id| (*id == key().id()).then(key));
        let (sk, payload, ack) = match verdict {
            Err(e) => return self.count(e.name()),
            Ok(Up::Relay {
                key, payload, ack, ..
            }) => (key, payload.to_vec(), ack),
            Ok(Up::Copy { key, ack, .. }) => {
                self.count("copy");
                if ack {
                    self.ack(key);
                }
                return;
            }
            Ok(Up::Open { opening, payload }) => {
                if Some(opening.dst.port()) == self.refused_port {
                    let mut out = [0u8; 128];
                    let n = RelayTable::seal_refused(
                        unix,
                        &key(),
                        &opening,
                        dgram::RefuseReason::Policy,
                        &mut out,
                    )
                    .unwrap();
                    self.send_to_laptop(from, out[..n].to_vec());
                    return self.count("refused");
                }
                self.table.insert(now, &opening, payload.len());
                (opening.key, payload.to_vec(), opening.ack)
            }
        };
        self.captured.push(bytes.to_vec());
        let dst = self.table.get(&sk).unwrap().dst;
        self.seen_by_dst
            .entry(dst)
            .or_default()
            .insert(format!("converter session {:x}", sk.1.0));
        if ack {
            self.ack(sk);
        }
        if self.echo {
            if self.table.get(&sk).unwrap().echo {
                // The destination answers the converter's ping socket: a reply with the
                // socket's identifier, the request's sequence number and data.
                let mut reply = payload;
                reply[0] = if dst.is_ipv4() {
                    icmp::ECHO_REPLY_V4
                } else {
                    icmp::ECHO_REPLY_V6
                };
                reply[4..6].copy_from_slice(&CONV_PING_IDENT.to_be_bytes());
                self.echo(sk, &reply);
            } else {
                self.echo(sk, &payload);
            }
        }
    }

    /// The host pings `dst` (identifier `ident`, sequence number `seq`).
    fn host_ping(&mut self, dst: IpAddr, ident: u16, seq: u16) {
        let host = if dst.is_ipv4() {
            sa(HOST).ip()
        } else {
            sa(HOST6).ip()
        };
        let ty = if dst.is_ipv4() {
            icmp::ECHO_REQUEST_V4
        } else {
            icmp::ECHO_REQUEST_V6
        };
        let mut msg = vec![ty, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(b"abcdefgh");
        let n = icmp::write_echo(&mut self.buf, host, dst, &msg, ident).unwrap();
        let pkt = self.buf[..n].to_vec();
        self.e.handle_tun_packet(self.now, &pkt);
        self.pump();
    }

    fn ack(&mut self, sk: SessionKey) {
        let mut out = [0u8; 128];
        let (n, to) = self.table.seal_ack(self.unix(), &key(), &sk, &mut out).unwrap();
        self.send_to_laptop(to, out[..n].to_vec());
    }

    fn echo(&mut self, sk: SessionKey, payload: &[u8]) {
        let mut out = vec![0u8; payload.len() + 100];
        let (now, unix) = (self.now, self.unix());
        let (n, to) = self
            .table
            .seal_down(now, unix, &key(), &sk, payload, &mut out)
            .unwrap();
        out.truncate(n);
        // A redundant session: the same bytes on each other return path.
        let extra: Vec<SocketAddr> = self.table.extra_paths(now, &sk).iter().map(|e| e.0).collect();
        for x in extra {
            self.send_to_laptop(x, out.clone());
        }
        self.send_to_laptop(to, out);
    }

    fn send_to_laptop(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        // The path whose address it is (the attacker's address is no path: lost).
        let Some(i) = (0..2u8).find(|&i| {
            let p = &self.paths[usize::from(i)];
            to.ip() == p.addr || to.ip() == p.addr6
        }) else {
            return;
        };
        self.send_on_path(i, false, sa(CONV), to, bytes);
    }

    /// Runs until `until`, delivering what is due and the engine's timers.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_flight = self.flight.iter().map(|f| f.at).min();
            let next_timer = self.e.poll_timeout();
            let next = [next_flight, next_timer].into_iter().flatten().min();
            let Some(t) = next.filter(|&t| t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(t);
            if next_timer.is_some_and(|x| x <= self.now) {
                self.e.handle_timeout(self.now);
            }
            let due: Vec<InFlight> = {
                let (due, rest) = std::mem::take(&mut self.flight)
                    .into_iter()
                    .partition(|f| f.at <= self.now);
                self.flight = rest;
                due
            };
            for f in due {
                if f.up {
                    self.converter_rx(f.from, &f.bytes);
                } else if let Some((&(s, i), _)) =
                    self.socks.iter().find(|(_, v)| v.0 == f.to && v.1 == f.from)
                {
                    // Delivered to the socket it was sent to (a closed one: lost).
                    self.e.handle_datagram_on(self.now, s, i, &f.bytes);
                }
            }
            self.pump();
        }
    }

    /// An RTP-like stream: one datagram every 20 ms for `dur`, numbered from `first`; the
    /// optional `event` runs once at `event_at`.
    fn stream(&mut self, dst: SocketAddr, first: u32, dur: Duration, event: Option<Event<'_>>) {
        let end = self.now + dur;
        let mut n = first;
        let mut pending = event;
        while self.now < end {
            if let Some((at, f)) = pending
                && self.now >= at
            {
                f(self);
                pending = None;
            }
            self.host_send(dst, &n.to_be_bytes());
            n += 1;
            let next = self.now + ms(20);
            self.run_until(next);
        }
    }

    /// The longest time between two echoes the host received.
    fn longest_gap(&self) -> Duration {
        self.host_rx
            .windows(2)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .unwrap_or_default()
    }

    fn session_via(&self) -> Option<SocketAddr> {
        self.e
            .flows()
            .iter()
            .find(|f| f.protocol == "udp")
            .and_then(|f| f.converter)
    }
}

/// Wi-Fi goes down: blackholed, and the engine told it is not usable.
fn wifi_down(s: &mut Sim) {
    s.paths[0].blackhole = true;
    let now = s.now;
    s.e.handle_iface_state(
        now,
        WIFI,
        IfaceState {
            usable: false,
            v4: None,
            v6: None,
            ..Default::default()
        },
    );
}

fn echoed_numbers(s: &Sim) -> Vec<u32> {
    s.host_rx
        .iter()
        .filter(|(_, p)| p.len() == 4)
        .map(|(_, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        .collect()
}

#[test]
fn stream_keeps_one_converter_session_across_wifi_blackhole_and_duplicates_never_reach_the_host() {
    let seed = seed_from_env(0x5eed_d6a4);
    let mut s = Sim::new(seed);
    for p in &mut s.paths {
        p.loss = 0.02;
        p.dup = 0.05;
    }
    let dst = sa("198.19.0.11:5004");
    let blackhole_at = Instant::from_millis(3000);
    s.stream(
        dst,
        0,
        Duration::from_secs(8),
        Some((blackhole_at, &|s: &mut Sim| s.paths[0].blackhole = true)),
    );
    assert_eq!(s.session_via(), Some(sa(CONV)), "seed {seed:#x}");
    // The destination saw one source: the converter's session, whatever the path.
    assert_eq!(
        s.seen_by_dst[&dst].len(),
        1,
        "seed {seed:#x}: {:?}",
        s.seen_by_dst
    );
    assert_eq!(s.table.len(), 1);
    let (_, rs) = s.table.iter().next().unwrap();
    assert_eq!(rs.moves, 1, "seed {seed:#x}: moved once, to cellular");
    assert_eq!(rs.peer.ip(), s.paths[1].addr);
    // Every echo reached the host at most once (duplicates on the paths were caught by the
    // windows on both sides).
    let nums = echoed_numbers(&s);
    let unique: HashSet<u32> = nums.iter().copied().collect();
    assert_eq!(
        unique.len(),
        nums.len(),
        "seed {seed:#x}: a duplicate reached the host"
    );
    assert!(
        s.drops.get("replay").copied().unwrap_or(0) > 0,
        "seed {seed:#x}: no duplicate was caught at the converter"
    );
    // The stall: blackhole until the silence is noticed (ack requests unanswered) plus the
    // cellular round trip. Simulated time, deterministic for the seed.
    let gap = s.longest_gap();
    let bound = dgram::ACK_AFTER + dgram::SILENT_MIN + ms(200);
    assert!(gap <= bound, "seed {seed:#x}: gap {gap:?} > {bound:?}");
    assert!(s.e.counters().unresponsive >= 1);
    assert!(nums.len() > 300, "seed {seed:#x}: {} echoes", nums.len());
}

#[test]
fn wifi_link_down_moves_the_session_at_once() {
    let mut s = Sim::new(seed_from_env(1));
    let dst = sa("[2001:db8::11]:5004");
    let down_at = Instant::from_millis(2000);
    s.stream(dst, 0, Duration::from_secs(4), Some((down_at, &wifi_down)));
    assert_eq!(
        s.session_via(),
        Some(sa(CONV)),
        "IPv6 destinations go via the converter too"
    );
    assert_eq!(s.seen_by_dst[&dst].len(), 1, "{:?}", s.seen_by_dst);
    let (_, rs) = s.table.iter().next().unwrap();
    assert_eq!((rs.moves, rs.peer.ip()), (1, s.paths[1].addr));
    // Only what was in flight on Wi-Fi is lost: the gap is about one cellular round trip.
    let gap = s.longest_gap();
    assert!(gap <= ms(100), "gap {gap:?}");
}

#[test]
fn replayed_and_forged_datagrams_from_elsewhere_move_nothing() {
    let mut s = Sim::new(seed_from_env(2));
    let dst = sa("198.19.0.11:5004");
    s.stream(dst, 0, Duration::from_secs(1), None);
    let before = s
        .table
        .iter()
        .next()
        .map(|(_, r)| (r.peer, r.moves, r.up.0))
        .unwrap();
    let captured = s.captured.clone();
    for (i, c) in captured.iter().enumerate() {
        s.converter_rx(sa(ATTACKER), c);
        // A fresh sequence number (passes the window check) without the key: the MAC fails.
        let mut forged = c.clone();
        forged[20..28].copy_from_slice(&(1_000_000 + i as u64).to_be_bytes());
        s.converter_rx(sa(ATTACKER), &forged);
    }
    // A forged first datagram of a new session under our key id: no state.
    let mut garbage = captured[0].clone();
    garbage[12] ^= 0xff;
    s.converter_rx(sa(ATTACKER), &garbage);
    let after = s
        .table
        .iter()
        .next()
        .map(|(_, r)| (r.peer, r.moves, r.up.0))
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(s.table.len(), 1);
    assert_eq!(s.drops["replay"], captured.len() as u64);
    assert_eq!(s.drops["bad_mac"], captured.len() as u64 + 1);
    // The forgeries advanced no window: the stream goes on, on the same path.
    let echoes = s.host_rx.len();
    s.stream(dst, 1000, ms(200), None);
    assert!(s.host_rx.len() >= echoes + 9);
    assert_eq!(s.table.iter().next().unwrap().1.peer, before.0);
    // And the laptop refuses what the converter sent, replayed.
    let dropped = s.e.counters().dropped(DropReason::BadRelayDatagram);
    let sock = s.socks.keys().next().unwrap().0;
    let mut out = vec![0u8; 200];
    let sk = *s.table.iter().next().unwrap().0;
    let (n, _) = s
        .table
        .seal_down(s.now, s.unix(), &key(), &sk, b"x", &mut out)
        .unwrap();
    let now = s.now;
    s.e.handle_datagram(now, sock, &out[..n]);
    s.e.handle_datagram(now, sock, &out[..n]);
    assert_eq!(s.e.counters().dropped(DropReason::BadRelayDatagram), dropped + 1);
}

#[test]
fn lan_destinations_never_go_to_the_converter() {
    let mut s = Sim::new(seed_from_env(3));
    for d in [
        "192.168.1.20:5004",
        "10.0.0.5:53",
        "[fd00::5]:5004",
        "[fe80::1]:5004",
    ] {
        s.host_send(sa(d), b"lan");
    }
    assert!(s.e.flows().iter().all(|f| f.converter.is_none()));
    assert!(s.table.is_empty());
    assert_eq!(s.e.counters().udp_via_converter, 0);
}

#[test]
fn a_silent_converter_sends_the_session_direct() {
    let mut s = Sim::new(seed_from_env(4));
    s.converter_dead = true;
    let dst = sa("198.19.0.11:5004");
    s.stream(dst, 0, dgram::OPEN_TIMEOUT + ms(200), None);
    assert_eq!(s.session_via(), None, "went direct");
    assert_eq!(s.e.counters().relay_fallbacks, 1);
    assert!(s.seen_by_dst[&dst].iter().all(|v| v.starts_with("direct")));
    assert!(!s.e.converters(s.now)[0].up, "marked down for new sessions");
    // A new session goes direct at once.
    s.host_send(sa("198.19.0.12:5004"), b"x");
    assert_eq!(s.e.counters().udp_via_converter, 1);
}

#[test]
fn a_refused_destination_goes_direct_and_stays_direct() {
    let mut s = Sim::new(seed_from_env(5));
    s.refused_port = Some(5004);
    let dst = sa("198.19.0.11:5004");
    s.stream(dst, 0, ms(200), None);
    assert_eq!(s.session_via(), None);
    assert_eq!(
        s.drops["refused"], 1,
        "the first datagram is refused, then direct"
    );
    assert!(s.seen_by_dst[&dst].iter().all(|v| v.starts_with("direct")));
    assert!(s.e.converters(s.now)[0].up, "the converter stays up for others");
    s.host_send(sa("198.19.0.11:5005"), b"other port");
    assert!(
        s.e.flows()
            .iter()
            .any(|f| f.destination.port() == 5005 && f.converter.is_some())
    );
    // A refusal is no amplifier: it is smaller than what it answers.
    let _ = (Kind::Refused, RelayId(0));
}

#[test]
fn a_quiet_destination_on_a_slow_path_is_no_dead_path() {
    let mut s = Sim::new(seed_from_env(6));
    // 200 ms round trip on Wi-Fi, the destination silent: only the converter's acks answer.
    s.paths[0].delay = ms(100);
    s.echo = false;
    let dst = sa("198.19.0.11:5004");
    s.stream(dst, 0, Duration::from_secs(5), None);
    assert_eq!(s.e.counters().unresponsive, 0);
    let (_, rs) = s.table.iter().next().unwrap();
    assert_eq!((rs.moves, rs.peer.ip()), (0, s.paths[0].addr));
    assert!(s.host_rx.is_empty());
}

#[test]
fn a_converter_gone_mid_session_sends_it_direct_after_both_paths_went_silent() {
    let mut s = Sim::new(seed_from_env(7));
    let dst = sa("198.19.0.11:5004");
    let gone_at = Instant::from_millis(2000);
    s.stream(
        dst,
        0,
        Duration::from_secs(5),
        Some((gone_at, &|s: &mut Sim| s.converter_dead = true)),
    );
    assert_eq!(s.session_via(), None, "direct in the end");
    assert_eq!(s.e.counters().relay_fallbacks, 1);
    assert_eq!(
        s.e.counters().unresponsive,
        1,
        "one path held silent, then the converter"
    );
    assert!(!s.e.converters(s.now)[0].up);
    assert!(s.seen_by_dst[&dst].iter().any(|v| v.starts_with("direct")));
}

#[test]
fn a_path_silent_while_the_other_is_held_is_waited_for_not_left_for_direct() {
    // Wi-Fi held unresponsive only briefly (as when a TCP subflow there answers again), so that
    // it is found silent once more while cellular is still held: the session cannot move then.
    // That one silence must count once (it counted twice, and the next datagram went direct:
    // another source address at the destination, whose connected socket refuses it).
    let seed = seed_from_env(0x5eed_4e1d);
    let mut s = Sim::with_config(
        seed,
        Config {
            unresponsive_hold: ms(1200),
            ..Config::default()
        },
    );
    let dst = sa("198.19.0.11:5004");
    let mut n = 0;
    let mut run = |s: &mut Sim, until_ms: u64| {
        let d = Instant::from_millis(until_ms).saturating_duration_since(s.now);
        s.stream(dst, n, d, None);
        n += (d.as_millis() / 20) as u32;
    };
    run(&mut s, 1000);
    for (path, from, to) in [(0, 1000, 1300), (1, 2000, 2300), (0, 3000, 3300)] {
        s.paths[path].blackhole = true;
        run(&mut s, to);
        s.paths[path].blackhole = false;
        run(&mut s, from + 1000);
    }
    run(&mut s, 5000);
    assert_eq!(s.e.counters().relay_fallbacks, 0, "seed {seed:#x}");
    assert_eq!(s.session_via(), Some(sa(CONV)), "seed {seed:#x}");
    assert_eq!(
        s.seen_by_dst[&dst].len(),
        1,
        "seed {seed:#x}: {:?}",
        s.seen_by_dst
    );
    assert!(s.e.counters().unresponsive >= 3, "seed {seed:#x}");
    // Echoes again once Wi-Fi answered after the last blackhole.
    let late = s
        .host_rx
        .iter()
        .filter(|(t, _)| *t >= Instant::from_millis(4000))
        .count();
    assert!(late >= 40, "seed {seed:#x}: {late} echoes in the last second");
}

/// Every UDP flow redundant (`mode = "redundant"`).
fn all_redundant() -> Redundancy {
    Redundancy {
        all: true,
        ..Redundancy::default()
    }
}

/// Checks a redundant run: every number sent before `until` echoed exactly once, nothing lost.
fn assert_each_echoed_once(s: &Sim, sent: u32, seed: u64) {
    let nums = echoed_numbers(s);
    let unique: HashSet<u32> = nums.iter().copied().collect();
    assert_eq!(
        unique.len(),
        nums.len(),
        "seed {seed:#x}: a duplicate reached the host"
    );
    let missing: Vec<u32> = (0..sent).filter(|n| !unique.contains(n)).collect();
    assert!(missing.is_empty(), "seed {seed:#x}: lost {missing:?}");
}

#[test]
fn redundant_stream_loses_nothing_across_a_wifi_blackhole_and_duplicates_never_reach_the_host() {
    let seed = seed_from_env(0x5eed_7ed0);
    let mut s = Sim::with(seed, all_redundant());
    for p in &mut s.paths {
        p.dup = 0.05;
    }
    let dst = sa("198.19.0.11:5004");
    // 3 s on both paths, 3 s with Wi-Fi blackholed, 2 s with it back.
    s.stream(
        dst,
        0,
        Duration::from_secs(6),
        Some((Instant::from_millis(3000), &|s: &mut Sim| {
            s.paths[0].blackhole = true
        })),
    );
    s.paths[0].blackhole = false;
    s.stream(dst, 300, Duration::from_secs(2), None);
    let until = s.now + ms(200);
    s.run_until(until);
    assert_each_echoed_once(&s, 400, seed);
    assert_eq!(s.seen_by_dst[&dst].len(), 1, "{:?}", s.seen_by_dst);
    // Each datagram went on both paths: the converter relayed one copy of each and counted
    // the others as copies, not as replays (the paths' own duplicates are replays as before).
    assert_eq!(s.e.counters().udp_redundant, 1);
    assert!(
        s.e.counters().redundant_copies >= 399,
        "{:?}",
        s.e.counters().redundant_copies
    );
    let copies = s.drops.get("copy").copied().unwrap_or(0);
    assert!(copies >= 250, "seed {seed:#x}: {copies} copies counted");
    assert!(
        s.e.counters().relay_duplicates >= 250,
        "the converter answered on both paths"
    );
    // No stall: the echoes kept coming, at worst one interval plus the paths' difference
    // (Wi-Fi 20 ms round trip, cellular 60 ms) when the faster one went.
    let gap = s.longest_gap();
    assert!(gap <= ms(20 + 40 + 1), "seed {seed:#x}: gap {gap:?}");
    // Nothing declared unresponsive: the blackhole cost nothing to notice.
    assert_eq!(s.e.counters().unresponsive, 0);
}

#[test]
fn redundant_stream_loses_nothing_when_wifi_goes_down() {
    let seed = seed_from_env(0x5eed_7ed1);
    let mut s = Sim::with(seed, all_redundant());
    let dst = sa("[2001:db8::11]:5004");
    s.stream(
        dst,
        0,
        Duration::from_secs(4),
        Some((Instant::from_millis(2000), &wifi_down)),
    );
    let until = s.now + ms(200);
    s.run_until(until);
    assert_each_echoed_once(&s, 200, seed);
    let gap = s.longest_gap();
    assert!(gap <= ms(20 + 40 + 1), "seed {seed:#x}: gap {gap:?}");
    // The session kept its cellular socket: the converter's return path is that one now.
    let (_, rs) = s.table.iter().next().unwrap();
    assert_eq!(rs.peer.ip(), s.paths[1].addr);
    // Once Wi-Fi is gone no copy goes there.
    let copies = s.e.counters().redundant_copies;
    s.stream(dst, 1000, ms(200), None);
    assert_eq!(s.e.counters().redundant_copies, copies);
}

#[test]
fn only_the_configured_classes_are_redundant() {
    let f = mpbond::redundancy::FileRedundant {
        ports: Some(vec!["5004".into()]),
        ..Default::default()
    };
    let r = Redundancy::resolve(&f, false).unwrap();
    let mut s = Sim::with(seed_from_env(8), r);
    s.host_send(sa("198.19.0.11:5004"), b"rtp");
    s.host_send(sa("198.19.0.11:5060"), b"sip (voip class)");
    s.host_send(sa("198.19.0.11:9999"), b"other");
    s.host_send(sa("198.19.0.11:9999"), &[0u8; 1300]);
    let until = s.now + ms(100);
    s.run_until(until);
    assert_eq!(s.e.counters().udp_via_converter, 3);
    assert_eq!(s.e.counters().udp_redundant, 2);
    assert_eq!(
        s.e.counters().redundant_copies,
        2,
        "one copy each, none for port 9999"
    );
    // A large datagram of a redundant flow goes on one path.
    s.host_send(sa("198.19.0.11:5004"), &[0u8; 1300]);
    assert_eq!(s.e.counters().redundant_copies, 2);
}

#[test]
fn a_forged_or_replayed_copy_adds_no_return_path() {
    let mut s = Sim::with(seed_from_env(9), all_redundant());
    let dst = sa("198.19.0.11:5004");
    s.stream(dst, 0, Duration::from_secs(1), None);
    let until = s.now + ms(100);
    s.run_until(until);
    let sk = *s.table.iter().next().unwrap().0;
    let paths = |s: &mut Sim| {
        let now = s.now;
        s.table
            .extra_paths(now, &sk)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(&mut s).len(), 1, "cellular, beside Wi-Fi");
    let captured = s.captured.clone();
    // Datagrams replayed from elsewhere, old and recent: replays (each (number, copy) was
    // seen), no path.
    for c in &captured {
        s.converter_rx(sa(ATTACKER), c);
    }
    assert_eq!(
        s.drops.get("replay"),
        Some(&(captured.len() as u64)),
        "{:?}",
        s.drops
    );
    // A recent one claiming a copy index never seen, without the key: a forgery, no path.
    let mut forged = captured.last().unwrap().clone();
    forged[2] |= 3 << dgram::COPY_SHIFT;
    s.converter_rx(sa(ATTACKER), &forged);
    assert_eq!(s.drops.get("bad_mac"), Some(&1), "{:?}", s.drops);
    assert!(!paths(&mut s).contains(&sa(ATTACKER)));
    assert_eq!(paths(&mut s).len(), 1);
}

#[test]
fn in_handover_mode_a_suspect_path_gets_copies_so_a_blackhole_stalls_less() {
    let seed = seed_from_env(0x5eed_5050);
    let dst = sa("198.19.0.11:5004");
    let blackhole = |r: Redundancy| {
        let mut s = Sim::with(seed, r);
        s.stream(
            dst,
            0,
            Duration::from_secs(6),
            Some((Instant::from_millis(3000), &|s: &mut Sim| {
                s.paths[0].blackhole = true
            })),
        );
        let until = s.now + ms(200);
        s.run_until(until);
        s
    };
    let before = blackhole(Redundancy::default());
    let after = blackhole(Redundancy {
        while_suspect: true,
        ..Redundancy::default()
    });
    let (g0, g1) = (before.longest_gap(), after.longest_gap());
    let lost = |s: &Sim| 300 - echoed_numbers(s).len();
    println!(
        "handover, Wi-Fi 20 ms / cellular 60 ms RTT, blackhole: longest gap {g0:?} ({} lost) without copies \
         while suspect, {g1:?} ({} lost) with",
        lost(&before),
        lost(&after)
    );
    // Copies start once an ack is overdue by a quarter of its round trip (ACK_AFTER of
    // silence at most, then 1.25 × 20 ms), instead of after the whole silence that declares the
    // path dead.
    assert!(g1 + ms(60) <= g0, "seed {seed:#x}: {g1:?} vs {g0:?}");
    assert!(
        g1 <= dgram::ACK_AFTER + ms(25 + 20 + 60 + 5),
        "seed {seed:#x}: {g1:?}"
    );
    // What the blackhole swallowed before the suspicion went again on cellular at the
    // suspicion itself: nothing lost.
    assert_eq!(lost(&after), 0, "seed {seed:#x}");
    assert!(lost(&before) > 0);
    assert!(after.e.counters().suspect_resends > 0);
    assert_eq!(before.e.counters().suspect_resends, 0);
    // Duplicates never reach the host, and the path was still declared silent and left.
    let nums = echoed_numbers(&after);
    assert_eq!(nums.iter().copied().collect::<HashSet<u32>>().len(), nums.len());
    assert_eq!(after.e.counters().unresponsive, 1);
    assert!(after.e.counters().redundant_copies > 0);
    let (_, rs) = after.table.iter().next().unwrap();
    assert_eq!(rs.peer.ip(), after.paths[1].addr);
    // Before the blackhole nothing was copied: the path answered.
    assert!(
        after.e.counters().redundant_copies < 20,
        "{}",
        after.e.counters().redundant_copies
    );
}

#[test]
fn relay_acks_on_cellular_count_as_its_overhead() {
    let mut s = Sim::new(seed_from_env(10));
    s.echo = false;
    wifi_down(&mut s);
    s.stream(sa("198.19.0.11:5004"), 0, Duration::from_secs(2), None);
    // A quiet destination: only the converter's acks come back, all on cellular.
    let o = s.e.counters().cellular_overhead_bytes;
    assert!(o > 0, "no overhead counted");
    assert_eq!(o % 52, 0, "whole acks (36 + 16 bytes): {o}");
    assert!(s.host_rx.is_empty());
}

/// The host pings `dst` every 20 ms for `dur` (identifier 0x1234, sequence from 1), with
/// `event` once at its time; the echo replies the host got: (time, sequence number), each
/// checked (from `dst`, to the host, the host's identifier, a valid checksum).
fn pings(s: &mut Sim, dst: IpAddr, dur: Duration, event: Option<Event<'_>>) -> (u16, Vec<(Instant, u16)>) {
    let end = s.now + dur;
    let mut pending = event;
    let mut seq = 0u16;
    while s.now < end {
        if let Some((at, f)) = pending
            && s.now >= at
        {
            f(s);
            pending = None;
        }
        seq += 1;
        s.host_ping(dst, 0x1234, seq);
        let next = s.now + ms(20);
        s.run_until(next);
    }
    let replies = s
        .host_icmp
        .iter()
        .map(|(t, from, to, msg)| {
            assert_eq!(*from, dst);
            let e = icmp::parse_echo(*from, *to, msg, true).unwrap().unwrap();
            assert!(!e.request);
            assert_eq!(e.ident, 0x1234, "the host's identifier");
            assert_eq!(&msg[8..], b"abcdefgh");
            (*t, e.seq)
        })
        .collect();
    (seq, replies)
}

#[test]
fn ping_goes_through_the_converter_and_keeps_answering_across_a_wifi_blackhole() {
    for dst in ["198.19.0.12", "2001:db8::12"] {
        let seed = seed_from_env(0xec40);
        let mut s = Sim::new(seed);
        let ip: IpAddr = dst.parse().unwrap();
        let (sent, replies) = pings(
            &mut s,
            ip,
            Duration::from_secs(4),
            Some((Instant::from_millis(1500), &|s: &mut Sim| {
                s.paths[0].blackhole = true
            })),
        );
        assert_eq!(s.e.counters().icmp_via_converter, 1, "{dst}");
        assert_eq!(s.e.counters().udp_via_converter, 0);
        // One converter session (one ping socket): the destination sees one source.
        let seen = &s.seen_by_dst[&SocketAddr::new(ip, 0)];
        assert_eq!(seen.len(), 1, "{dst}: {seen:?}");
        assert!(
            seen.iter().all(|v| v.starts_with("converter session")),
            "{seen:?}"
        );
        assert_eq!(s.table.len(), 1);
        let (_, rs) = s.table.iter().next().unwrap();
        assert!(rs.echo);
        assert_eq!(
            (rs.moves, rs.peer.ip().is_ipv4()),
            (1, true),
            "moved once, to cellular"
        );
        // Each reply once, matched to a request sent.
        let seqs: HashSet<u16> = replies.iter().map(|r| r.1).collect();
        assert_eq!(seqs.len(), replies.len(), "{dst}: a reply twice");
        assert!(seqs.iter().all(|&q| (1..=sent).contains(&q)));
        let gap = replies
            .windows(2)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .unwrap();
        eprintln!(
            "ping {dst} via converter, Wi-Fi blackholed at 1.5 s: {} of {sent} answered, longest gap {gap:?}",
            replies.len()
        );
        // As a UDP stream: the silence noticed, then the cellular round trip.
        let bound = dgram::ACK_AFTER + dgram::SILENT_MIN + ms(200);
        assert!(gap <= bound, "{dst}: gap {gap:?}");
        assert!(
            replies.len() + 20 >= usize::from(sent),
            "{dst}: {} of {sent}",
            replies.len()
        );
        assert!(
            replies.last().unwrap().0 >= Instant::from_millis(3800),
            "answers after the loss"
        );
    }
}

#[test]
fn ping_to_the_lan_goes_direct_and_a_refused_one_falls_back() {
    let mut s = Sim::new(seed_from_env(3));
    let lan: IpAddr = "192.168.1.10".parse().unwrap();
    s.host_ping(lan, 7, 1);
    assert_eq!(s.e.counters().icmp_via_converter, 0);
    assert!(s.table.is_empty());
    // The converter refuses this destination (its policy: here the port 0 every echo
    // session has): the session goes direct.
    s.refused_port = Some(0);
    let ip: IpAddr = "198.19.0.12".parse().unwrap();
    let (_, replies) = pings(&mut s, ip, Duration::from_millis(400), None);
    assert!(replies.is_empty());
    assert_eq!(s.e.counters().icmp_via_converter, 1);
    assert_eq!(s.e.counters().relay_fallbacks, 1);
    assert_eq!(s.drops.get("refused").copied(), Some(1));
    assert!(s.table.is_empty());
    assert!(
        s.socks.values().all(|v| v.1 != sa(CONV)),
        "the socket to the converter is closed: {:?}",
        s.socks
    );
    // Direct from then on: through the interface's ICMP socket (the harness's direct sends).
    // (A direct echo session's "port" is the host's identifier.)
    let direct = &s.seen_by_dst[&SocketAddr::new(ip, 0x1234)];
    assert!(direct.iter().all(|v| v.starts_with("direct")), "{direct:?}");
}
