//! A simulated RFC 8803 Transport Converter around the engine, for `tests/engine_convert.rs`:
//! a host TCP connection on the TUN side; on the interface side our own MPTCP server role (an
//! `mptcp::Endpoint`, which also accepts the MP_JOIN of the cellular backup subflow) with a
//! `convert::converter::Converter` that checks the request from the bytes the MPTCP connection
//! delivers, then plays the destination in memory; plain TCP and MPTCP servers for the
//! destinations the engine dials directly. Wi-Fi is 10 ms one way, cellular 30 ms; every run
//! is bounded in steps and virtual time.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mpbond::convert::converter::{Converter, ConverterConfig, Request, connected_reply, error_reply};
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::msg::ErrorCode;
use mpbond::engine::{CELLULAR, Config, ConverterSettings, Dest, Engine, IfacePolicy, IfaceState, WIFI};
use mpbond::mptcp::endpoint::{ConnHandle, Endpoint, EndpointConfig};
use mpbond::mptcp::{self, MptcpConfig, PathId};
use mpbond::tcp::{self, Connection, Event, IsnKey};
use mpbond::time::Instant;
use mpbond::wire;

pub const HOST: &str = "100.127.77.1:40000";
pub const DST: &str = "198.19.0.11:80";
/// A destination that speaks MPTCP (an MPTCP server answers there).
pub const MP_DST: &str = "198.19.0.12:80";
pub const LAN_DST: &str = "192.168.1.10:80";
pub const CONVERTER: &str = "198.19.3.1:5124";
pub const WIFI_ADDR: &str = "198.18.1.2";
pub const CELL_ADDR: &str = "198.18.2.2";
/// Wall-clock time at `Instant::ZERO` (cookies carry it).
pub const UNIX0: Duration = Duration::from_secs(1_700_000_000);
/// How long the converter takes to dial the destination before it replies.
pub const DIAL: Duration = Duration::from_millis(20);
/// Give up at this virtual time.
pub const TIME_LIMIT: Duration = Duration::from_secs(120);

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ms(t: Instant) -> u64 {
    t.as_micros() / 1000
}

pub fn delay(iface: u8) -> Duration {
    Duration::from_millis(if iface == WIFI { 10 } else { 30 })
}

pub fn laptop_key() -> ClientKey {
    ClientKey::from_parts(KeyId([1; 8]), [0x11; 32])
}

pub fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 9) as u8)
        .collect()
}

/// How the simulated converter behaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Checks the request, "dials" for [`DIAL`], replies `connected_reply(ext)` (`ext`: the
    /// destination's SYN+ACK options), then relays.
    Normal { ext: Vec<u8> },
    /// Drops everything sent to it.
    Silent,
    /// The destination refuses: replies with this Error code after [`DIAL`], then closes.
    DstRefuses(ErrorCode),
    /// Replies bytes that are not a Convert message.
    Garbage,
    /// Accepts the MPTCP connection, reads the request, never replies.
    Mute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Reading,
    Dialing { until: Instant, consumed: usize },
    Relaying,
    Done,
}

/// One MPTCP connection the converter accepted.
#[derive(Debug)]
pub struct Session {
    pub h: ConnHandle,
    pub phase: Phase,
    /// What arrived before the decision.
    pub buf: Vec<u8>,
    /// The destination's view of the request's early data (after the Convert message).
    pub early: Vec<u8>,
    pub request: Option<Request>,
    pub replied_at: Option<Instant>,
    /// When the client reset the connection.
    pub reset_at: Option<Instant>,
}

/// The converter: an MPTCP server endpoint and the RFC 8803 checks.
pub struct Conv {
    pub ep: Endpoint,
    pub conv: Converter,
    pub mode: Mode,
    pub sessions: Vec<Session>,
    /// Packets that reached it (silent mode counts what it dropped).
    pub packets: u64,
    /// TCP payload bytes that reached it, by the laptop's interface they left on.
    pub payload_by_iface: [u64; 8],
}

/// A plain TCP server for direct dials.
pub struct Plain {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub iface: u8,
    pub conn: Connection,
}

/// Where a packet is on its way to.
#[derive(Debug, Clone, Copy)]
pub enum Hop {
    /// From the laptop's interface to the network.
    Out(u8),
    /// From the network to the laptop's interface.
    In(u8),
}

/// The world around the engine.
pub struct World {
    pub e: Engine,
    pub now: Instant,
    pub hosts: Vec<Connection>,
    /// When each host saw its SYN/ACK (or a RST).
    pub host_synack: Vec<Option<Instant>>,
    pub host_events: Vec<Vec<Event>>,
    pub conv: Conv,
    /// Plain TCP listeners (direct destinations) and their connections.
    pub plain_listen: Vec<IpAddr>,
    pub plain: Vec<Plain>,
    /// An MPTCP server at [`MP_DST`].
    pub mp_dst: Endpoint,
    /// Packets in flight, by delivery time.
    pub net: BTreeMap<(Instant, u64), (Hop, Vec<u8>)>,
    pub seq: u64,
    pub wifi_down: bool,
    /// Other interfaces whose link is down (packets on them are lost).
    pub down: Vec<u8>,
    /// Packets to the laptop over Wi-Fi leave the network through a bottleneck of this many
    /// bytes per second behind a tail-drop queue of this many bytes (a busy Wi-Fi's queue);
    /// none: no bottleneck.
    pub wifi_in_bottleneck: Option<(u64, u64)>,
    /// When that bottleneck is free again.
    pub wifi_in_free: Instant,
    /// Every SYN (no ACK) that left an interface: time, interface, destination, MP option.
    pub syns: Vec<(Instant, u8, SocketAddr, bool)>,
    pub buf: Vec<u8>,
}

pub fn engine() -> Engine {
    let default = Config::default().ifaces;
    engine_with(&[(WIFI, WIFI_ADDR, default[0]), (CELLULAR, CELL_ADDR, default[1])])
}

/// An engine with these interfaces (id, address, policy), all usable.
pub fn engine_with(ifaces: &[(u8, &str, IfacePolicy)]) -> Engine {
    engine_configured(ifaces, |_| {})
}

/// [`engine_with`], its config changed by `tweak` first.
pub fn engine_configured(ifaces: &[(u8, &str, IfacePolicy)], tweak: impl FnOnce(&mut Config)) -> Engine {
    let mut policies = Vec::new();
    for &(i, _, p) in ifaces {
        let i = usize::from(i);
        if policies.len() <= i {
            policies.resize(i + 1, IfacePolicy::primary(0));
        }
        policies[i] = p;
    }
    let mut cfg = Config {
        tun_mtu: 9000,
        converter: Some(ConverterSettings {
            addrs: vec![sa(CONVERTER)],
            key: laptop_key(),
        }),
        ifaces: policies,
        ..Config::default()
    };
    tweak(&mut cfg);
    let mut e = Engine::new(cfg);
    e.set_unix_time(Instant::ZERO, UNIX0);
    for &(i, a, _) in ifaces {
        let st = IfaceState {
            usable: true,
            v4: Some(a.parse().unwrap()),
            v6: None,
            last_resort: false,
        };
        e.handle_iface_state(Instant::ZERO, i, st);
    }
    e
}

pub fn endpoint(listen: &str) -> Endpoint {
    let cfg = EndpointConfig {
        mptcp: MptcpConfig::default(),
        ports: 30000..=30063,
        ports_per_conn: 8,
        listen: vec![sa(listen)],
    };
    Endpoint::new(cfg, IsnKey([5; 32]))
}

impl World {
    pub fn new(mode: Mode, conv_key: ClientKey) -> World {
        World::with_engine(engine(), mode, conv_key)
    }

    /// Around engine `e` (e.g. from [`engine_with`]).
    pub fn with_engine(e: Engine, mode: Mode, conv_key: ClientKey) -> World {
        World {
            e,
            now: Instant::ZERO,
            hosts: Vec::new(),
            host_synack: Vec::new(),
            host_events: Vec::new(),
            conv: Conv {
                ep: endpoint(CONVERTER),
                conv: Converter::new(vec![conv_key], ConverterConfig::default()),
                mode,
                sessions: Vec::new(),
                packets: 0,
                payload_by_iface: [0; 8],
            },
            plain_listen: vec![sa(DST).ip(), sa(LAN_DST).ip()],
            plain: Vec::new(),
            mp_dst: endpoint(MP_DST),
            net: BTreeMap::new(),
            seq: 0,
            wifi_down: false,
            down: Vec::new(),
            wifi_in_bottleneck: None,
            wifi_in_free: Instant::ZERO,
            syns: Vec::new(),
            buf: vec![0; 70_000],
        }
    }

    /// A new host connection from `HOST`'s address (port 40000 + n) to `dst`; its index.
    pub fn connect(&mut self, dst: &str) -> usize {
        let n = self.hosts.len();
        let mut src = sa(HOST);
        src.set_port(40000 + n as u16);
        let key = IsnKey([n as u8 + 1; 32]);
        self.hosts.push(Connection::connect(
            self.now,
            src,
            sa(dst),
            tcp::Config::default(),
            &key,
        ));
        self.host_synack.push(None);
        self.host_events.push(Vec::new());
        n
    }

    pub fn send_net(&mut self, hop: Hop, iface: u8, pkt: Vec<u8>) {
        if self.is_down(iface) {
            return;
        }
        let mut at = self.now + delay(iface);
        if let (Hop::In(WIFI), Some((rate, queue))) = (hop, self.wifi_in_bottleneck) {
            let free = self.wifi_in_free.max(self.now);
            let backlog = free.saturating_duration_since(self.now).as_micros() as u64 * rate / 1_000_000;
            if backlog + pkt.len() as u64 > queue {
                return;
            }
            self.wifi_in_free = free + Duration::from_micros(pkt.len() as u64 * 1_000_000 / rate);
            at = self.wifi_in_free + delay(iface);
        }
        self.seq += 1;
        self.net.insert((at, self.seq), (hop, pkt));
    }

    /// A packet from the laptop arrives in the network on `iface`.
    pub fn deliver_out(&mut self, iface: u8, pkt: &[u8]) {
        let p = wire::parse_tcp_packet(pkt).expect("engine wrote valid TCP");
        let payload = &pkt[p.payload.clone()];
        let (local, remote, hdr) = (p.dst, p.src, p.header);
        if local == sa(CONVERTER) {
            self.conv.packets += 1;
            if let Some(n) = self.conv.payload_by_iface.get_mut(usize::from(iface)) {
                *n += payload.len() as u64;
            }
            if self.conv.mode != Mode::Silent {
                (self.conv.ep).handle_packet(self.now, PathId(iface), local, remote, &hdr, payload);
            }
        } else if local == sa(MP_DST) {
            (self.mp_dst).handle_packet(self.now, PathId(iface), local, remote, &hdr, payload);
        } else if let Some(s) = self
            .plain
            .iter_mut()
            .find(|s| (s.local, s.remote) == (local, remote))
        {
            s.conn.handle_segment(self.now, &hdr, payload);
        } else if self.plain_listen.contains(&local.ip()) && hdr.flags.syn() && !hdr.flags.ack() {
            let conn = Connection::accept(
                self.now,
                local,
                remote,
                &hdr,
                tcp::Config::default(),
                &IsnKey([2; 32]),
            )
            .unwrap();
            self.plain.push(Plain {
                local,
                remote,
                iface,
                conn,
            });
        }
    }

    /// The converter's application: checks requests, replies, hands the stream to the test.
    pub fn converter_app(&mut self) -> bool {
        let mut moved = false;
        while let Some((h, ev)) = self.conv.ep.poll_event() {
            if !self.conv.sessions.iter().any(|s| s.h == h) {
                self.conv.sessions.push(Session {
                    h,
                    phase: Phase::Reading,
                    buf: Vec::new(),
                    early: Vec::new(),
                    request: None,
                    replied_at: None,
                    reset_at: None,
                });
            }
            let s = self.conv.sessions.iter_mut().find(|s| s.h == h).unwrap();
            if ev == mptcp::Event::Reset && s.reset_at.is_none() {
                s.reset_at = Some(self.now);
            }
        }
        let unix_now = UNIX0 + self.now.saturating_duration_since(Instant::ZERO);
        let mut tmp = [0u8; 2048];
        for s in &mut self.conv.sessions {
            let Some(c) = self.conv.ep.get_mut(s.h) else {
                continue;
            };
            match s.phase {
                Phase::Reading => {
                    let n = c.recv(&mut tmp);
                    if n == 0 {
                        continue;
                    }
                    moved = true;
                    s.buf.extend_from_slice(&tmp[..n]);
                    let req = self.conv.conv.check_request(unix_now, &s.buf);
                    match &req {
                        Request::Incomplete => continue,
                        Request::Connect { consumed, .. } => {
                            s.phase = Phase::Dialing {
                                until: self.now + DIAL,
                                consumed: *consumed,
                            };
                        }
                        Request::Refused { reply, .. } => {
                            c.send(reply);
                            c.close();
                            s.replied_at = Some(self.now);
                            s.phase = Phase::Done;
                        }
                    }
                    s.request = Some(req);
                }
                Phase::Dialing { until, consumed } if until <= self.now => {
                    moved = true;
                    s.replied_at = Some(self.now);
                    match &self.conv.mode {
                        Mode::Normal { ext } => {
                            c.send(&connected_reply(ext));
                            s.early = s.buf.split_off(consumed);
                            s.phase = Phase::Relaying;
                        }
                        Mode::DstRefuses(code) => {
                            c.send(&error_reply(*code, &[]));
                            c.close();
                            s.phase = Phase::Done;
                        }
                        Mode::Garbage => {
                            c.send(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                            c.close();
                            s.phase = Phase::Done;
                        }
                        Mode::Silent => unreachable!("a silent converter reads nothing"),
                        Mode::Mute => s.phase = Phase::Done,
                    }
                }
                _ => {}
            }
        }
        moved
    }

    /// Moves packets until everyone is quiet; returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.hosts.len() {
            while let Some(t) = self.hosts[i].poll_transmit(self.now, &mut self.buf) {
                self.e.handle_tun_packet(self.now, &self.buf[..t.len]);
                moved = true;
            }
        }
        while let Some(t) = self.e.poll_transmit(self.now, &mut self.buf) {
            moved = true;
            let pkt = self.buf[..t.len].to_vec();
            let p = wire::parse_tcp_packet(&pkt).expect("engine wrote valid TCP");
            match t.dest {
                Dest::Tun => {
                    let i = usize::from(p.dst.port() - 40000);
                    let f = p.header.flags;
                    if (f.syn() && f.ack() || f.rst()) && self.host_synack[i].is_none() {
                        self.host_synack[i] = Some(self.now);
                    }
                    self.hosts[i].handle_segment(self.now, &p.header, &pkt[p.payload]);
                }
                Dest::Iface(i) => {
                    let f = p.header.flags;
                    if f.syn() && !f.ack() {
                        let mp = !p.header.options.mptcp.is_empty();
                        self.syns.push((self.now, i, p.dst, mp));
                    }
                    self.send_net(Hop::Out(i), i, pkt);
                }
            }
        }
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (hop, pkt) = entry.remove();
            moved = true;
            match hop {
                Hop::Out(i) if !self.is_down(i) => self.deliver_out(i, &pkt),
                Hop::In(i) if !self.is_down(i) => self.e.handle_iface_packet(self.now, i, &pkt, false),
                _ => {}
            }
        }
        moved |= self.converter_app();
        while self.mp_dst.poll_event().is_some() {}
        for ep in [0, 1] {
            loop {
                let e = if ep == 0 {
                    &mut self.conv.ep
                } else {
                    &mut self.mp_dst
                };
                let Some((path, t)) = e.poll_transmit(self.now, &mut self.buf) else {
                    break;
                };
                moved = true;
                let pkt = self.buf[..t.len].to_vec();
                self.send_net(Hop::In(path.0), path.0, pkt);
            }
        }
        for k in 0..self.plain.len() {
            while let Some(t) = self.plain[k].conn.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                let (pkt, i) = (self.buf[..t.len].to_vec(), self.plain[k].iface);
                self.send_net(Hop::In(i), i, pkt);
            }
        }
        for (i, h) in self.hosts.iter_mut().enumerate() {
            self.host_events[i].extend(std::iter::from_fn(|| h.poll_event()));
        }
        moved
    }

    /// Packets on `iface` are lost (its link is down).
    pub fn is_down(&self, iface: u8) -> bool {
        (iface == WIFI && self.wifi_down) || self.down.contains(&iface)
    }

    /// `iface`'s link goes down: its packets are lost and the engine is told.
    pub fn link_down(&mut self, iface: u8) {
        self.down.push(iface);
        let st = IfaceState {
            usable: false,
            ..self.e.iface_state(iface).unwrap()
        };
        self.e.handle_iface_state(self.now, iface, st);
    }

    pub fn next_time(&mut self) -> Option<Instant> {
        let dial = self.conv.sessions.iter().filter_map(|s| match s.phase {
            Phase::Dialing { until, .. } => Some(until),
            _ => None,
        });
        let hosts = self.hosts.iter().filter_map(|h| h.poll_timeout());
        let plain = self.plain.iter().filter_map(|s| s.conn.poll_timeout());
        [
            self.e.poll_timeout(),
            self.conv.ep.poll_timeout(),
            self.mp_dst.poll_timeout(),
            self.net.keys().next().map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .chain(dial)
        .chain(hosts)
        .chain(plain)
        .min()
    }

    /// Runs until `until` holds: moves packets until quiet, then advances time to the next
    /// timer or delivery (bounded in steps and in virtual time).
    pub fn run(&mut self, mut until: impl FnMut(&mut World) -> bool) {
        for _ in 0..500_000 {
            if until(self) {
                return;
            }
            if !self.step() {
                let Some(t) = self.next_time() else {
                    panic!("stuck at {}: nothing scheduled", self.now)
                };
                self.now = self.now.max(t);
                assert!(
                    self.now.saturating_duration_since(Instant::ZERO) < TIME_LIMIT,
                    "virtual time limit"
                );
                for h in &mut self.hosts {
                    h.handle_timeout(self.now);
                }
                for s in &mut self.plain {
                    s.conn.handle_timeout(self.now);
                }
                self.conv.ep.handle_timeout(self.now);
                self.mp_dst.handle_timeout(self.now);
                self.e.handle_timeout(self.now);
            }
        }
        panic!("did not converge");
    }

    /// Runs for `d` of virtual time (idle time included).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run(|w| {
            while w.step() {}
            if w.next_time().is_none_or(|t| t > end) {
                w.now = w.now.max(end);
            }
            w.now >= end
        });
    }

    pub fn established(&self, i: usize) -> bool {
        self.hosts[i].state() == tcp::State::Established
    }
}

/// The far end of a host flow, as the test drives it.
#[derive(Debug, Clone, Copy)]
pub enum Far {
    /// The destination behind converter session `n`.
    Conv(usize),
    /// Plain TCP server `n`.
    Plain(usize),
}

impl World {
    pub fn far_send(&mut self, far: Far, data: &[u8]) -> usize {
        match far {
            Far::Conv(n) => {
                let h = self.conv.sessions[n].h;
                self.conv.ep.get_mut(h).unwrap().send(data)
            }
            Far::Plain(n) => self.plain[n].conn.send(data),
        }
    }
    pub fn far_recv(&mut self, far: Far, out: &mut Vec<u8>) {
        let mut tmp = vec![0u8; 65536];
        match far {
            Far::Conv(n) => {
                let s = &mut self.conv.sessions[n];
                out.append(&mut s.early);
                let c = self.conv.ep.get_mut(s.h).unwrap();
                loop {
                    let k = c.recv(&mut tmp);
                    if k == 0 {
                        break;
                    }
                    out.extend_from_slice(&tmp[..k]);
                }
            }
            Far::Plain(n) => loop {
                let k = self.plain[n].conn.recv(&mut tmp);
                if k == 0 {
                    break;
                }
                out.extend_from_slice(&tmp[..k]);
            },
        }
    }
    pub fn far_close(&mut self, far: Far) {
        match far {
            Far::Conv(n) => {
                let h = self.conv.sessions[n].h;
                self.conv.ep.get_mut(h).unwrap().close()
            }
            Far::Plain(n) => self.plain[n].conn.close(),
        }
    }
    pub fn far_recv_finished(&mut self, far: Far) -> bool {
        match far {
            Far::Conv(n) => {
                let h = self.conv.sessions[n].h;
                self.conv.ep.get_mut(h).unwrap().recv_finished()
            }
            Far::Plain(n) => self.plain[n].conn.recv_finished(),
        }
    }

    /// Moves `up` from host `i` to `far` and `down` back, byte-exact, then closes the flow;
    /// `mid` runs once when a third of each has arrived. Returns when the data was complete.
    pub fn transfer(
        &mut self,
        i: usize,
        far: Far,
        up: &[u8],
        down: &[u8],
        mid: impl FnMut(&mut World),
    ) -> Instant {
        let done = self.exchange(i, far, up, down, mid);
        self.close_flow(i, far);
        done
    }

    /// The data part of [`transfer`](Self::transfer).
    pub fn exchange(
        &mut self,
        i: usize,
        far: Far,
        up: &[u8],
        down: &[u8],
        mut mid: impl FnMut(&mut World),
    ) -> Instant {
        let (mut up_off, mut down_off) = (0, 0);
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let mut tmp = vec![0u8; 65536];
        let mut mid_done = false;
        self.run(|w| {
            up_off += w.hosts[i].send(&up[up_off..]);
            down_off += w.far_send(far, &down[down_off..]);
            w.far_recv(far, &mut got_up);
            loop {
                let n = w.hosts[i].recv(&mut tmp);
                if n == 0 {
                    break;
                }
                got_down.extend_from_slice(&tmp[..n]);
            }
            if !mid_done && got_up.len() > up.len() / 3 && got_down.len() > down.len() / 3 {
                mid_done = true;
                mid(w);
            }
            got_up.len() >= up.len() && got_down.len() >= down.len()
        });
        assert!(
            got_up == up,
            "upload byte-exact ({} of {})",
            got_up.len(),
            up.len()
        );
        assert!(
            got_down == down,
            "download byte-exact ({} of {})",
            got_down.len(),
            down.len()
        );
        self.now
    }

    /// The host closes, the far end closes too, and the flow leaves the engine's table.
    pub fn close_flow(&mut self, i: usize, far: Far) {
        self.hosts[i].close();
        self.run(|w| w.far_recv_finished(far));
        self.far_close(far);
        let flows = self.e.flow_counts().0;
        self.run(|w| w.hosts[i].is_closed() && w.e.flow_counts().0 < flows);
    }
}

pub fn host_reset(w: &World, i: usize) -> bool {
    w.host_events[i].contains(&Event::Reset)
}

/// The connect request the converter saw for session `n`: its destination.
pub fn requested_dst(w: &World, n: usize) -> Option<SocketAddr> {
    match &w.conv.sessions[n].request {
        Some(Request::Connect { dst, .. }) => Some(*dst),
        _ => None,
    }
}
