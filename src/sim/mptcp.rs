//! Drives an MPTCP client and server ([`crate::mptcp::Connection`]) over two paths of a
//! [`Network`] (Wi-Fi and cellular: two client addresses, one server address), both sending a
//! deterministic byte pattern, verifying what arrives byte for byte, then closing. Scheduled
//! [`Action`]s take paths down and up (with or without the policy API), insert an
//! option-stripping middlebox, or forge MP_JOINs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::link::{Link, Rewrite, Stage};
use super::net::{Network, PathStats};
use super::rng::Rng;
use super::transfer::fill_pattern;
use crate::mptcp::crypto::{Key, Nonce};
use crate::mptcp::{Connection, Event, JoinRefused, LocalPath, MptcpConfig, PathId, SubflowInfo};
use crate::tcp::IsnKey;
use crate::time::Instant;
use crate::wire::mptcp::{MpJoin, MptcpOption};
use crate::wire::tcp::{SegmentFields, TcpFlags};
use crate::wire::{parse_tcp_packet, write_tcp_packet};

/// Client Wi-Fi address.
pub const CLIENT_WIFI: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
/// Client cellular address.
pub const CLIENT_CELL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1));

/// The client's two paths: Wi-Fi (path 0, primary) and cellular (path 1, backup).
pub fn client_paths() -> [LocalPath; 2] {
    [
        LocalPath {
            id: PathId(0),
            addr: CLIENT_WIFI,
            backup: false,
            last_resort: false,
            rank: 0,
        },
        LocalPath {
            id: PathId(1),
            addr: CLIENT_CELL,
            backup: true,
            last_resort: false,
            rank: 0,
        },
    ]
}
/// Server address.
pub const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
/// The server's second address, which it can announce with ADD_ADDR ([`Action::Announce`]);
/// reached over the same links as [`SERVER`].
pub const SERVER2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
/// A third host forging MP_JOINs.
pub const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 3, 1));

/// Something done at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Path `n` (0 Wi-Fi, 1 cellular) goes down in the network and the policy layer says so.
    Kill(u8),
    /// Path `n` comes back, and the policy layer says so.
    Restore(u8),
    /// Path `n` goes down (or up) in the network only (a blackhole nobody announces).
    NetDown(u8, bool),
    /// A middlebox starts stripping option 30 on path `n`, both directions.
    StripOptions(u8),
    /// Record the per-path counters (for "traffic moved back" checks).
    Snapshot,
    /// Record the subflows of both sides as the policy layer sees them
    /// ([`MpReport::inspections`]).
    Inspect,
    /// The client aborts the connection (MP_FASTCLOSE, RFC 8684 §3.5).
    Abort,
    /// The client changes path `n`'s backup priority (MP_PRIO to the peer, RFC 8684 §3.3.8).
    SetBackup(u8, bool),
    /// A forged MP_JOIN SYN with an unknown token.
    ForgeUnknownToken,
    /// A forged MP_JOIN with the right token but a bad HMAC on the third ACK.
    ForgeBadHmac,
    /// The server announces `addr` (its address ID 1) with ADD_ADDR (RFC 8684 §3.4.1).
    Announce(IpAddr),
    /// Path `n` stops (or starts again) reaching [`SERVER`] in both directions, while
    /// [`SERVER2`] stays reachable over it; nobody is told.
    ServerUnreachable(u8, bool),
    /// The clients may write the rest of their bytes ([`MpSpec::c2s_first`]).
    Release,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct MpSpec {
    /// Seed of the network.
    pub seed: u64,
    /// Client settings.
    pub client: MptcpConfig,
    /// Server settings.
    pub server: MptcpConfig,
    /// Client starts with MP_CAPABLE.
    pub client_mptcp: bool,
    /// The first this many bytes client → server go in the SYN
    /// ([`Connection::send_in_syn`]; the simulated server takes no SYN data, so they are sent
    /// again after the handshake, RFC 8684 Appendix B.3 Figure 20).
    pub syn_data: u64,
    /// Bytes client → server.
    pub c2s: u64,
    /// Bytes server → client.
    pub s2c: u64,
    /// Links of the Wi-Fi path (each direction).
    pub wifi: Vec<Link>,
    /// Links of the cellular path (each direction).
    pub cell: Vec<Link>,
    /// Extra links on the client → server SYN direction of Wi-Fi only (middlebox on SYNs).
    pub wifi_up_extra: Vec<Link>,
    /// Scheduled actions.
    pub actions: Vec<(Instant, Action)>,
    /// Give up at this virtual time.
    pub time_limit: Instant,
    /// Concurrent connections, each with these settings and sizes (1 to [`MAX_FLOWS`]); the
    /// actions apply to all of them (but [`Action::Abort`], the forgeries and
    /// [`Action::Inspect`]: the first only).
    pub flows: usize,
    /// A NAT on the cellular paths that forgets a mapping after this long idle and drops
    /// packets it does not know ([`Network::add_nat`]).
    pub cell_nat: Option<std::time::Duration>,
    /// The clients write only this many bytes until [`Action::Release`] (an interactive flow
    /// that sits idle, then sends its next message).
    pub c2s_first: Option<u64>,
    /// The cellular path is a last resort ([`LocalPath::last_resort`]: its budget past the
    /// soft share).
    pub cell_last_resort: bool,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct MpReport {
    /// Everything delivered byte-exact and both sides closed.
    pub completed: bool,
    /// Why not.
    pub error: Option<String>,
    /// Bytes received by the client / server.
    pub client_received: u64,
    /// Bytes received by the server.
    pub server_received: u64,
    /// Client events.
    pub client_events: Vec<Event>,
    /// Server events.
    pub server_events: Vec<Event>,
    /// When each of [`client_events`](Self::client_events) was polled.
    pub client_event_at: Vec<Instant>,
    /// When each of [`server_events`](Self::server_events) was polled.
    pub server_event_at: Vec<Instant>,
    /// MPTCP in use at the end on the client.
    pub client_mptcp: bool,
    /// Virtual time at the end.
    pub finished_at: Instant,
    /// When every byte had arrived both ways.
    pub data_done_at: Option<Instant>,
    /// Counters per network path: [wifi up, wifi down, cell up, cell down] at each snapshot.
    pub snapshots: Vec<(Instant, [PathStats; 4])>,
    /// Counters at the end.
    pub final_stats: [PathStats; 4],
    /// The client's and the server's subflows at each [`Action::Inspect`].
    pub inspections: Vec<(Instant, Vec<SubflowInfo>, Vec<SubflowInfo>)>,
    /// The same for the paths to [`SERVER2`].
    pub final_stats2: [PathStats; 4],
    /// The server's addresses the client knows at the end, by address ID.
    pub client_peer_addrs: Vec<(u8, IpAddr)>,
    /// Terminal events of client and server.
    pub terminal: (Option<Event>, Option<Event>),
    /// Results of forged MP_JOIN SYNs.
    pub forged: Vec<Result<(), JoinRefused>>,
    /// Packets the client / server dropped as matching nothing.
    pub dropped: (u64, u64),
    /// The longest time the data stood still toward the client / toward the server, between
    /// its first and its last byte, and when that stall ended.
    pub stalls: (Stall, Stall),
    /// Every stall longer than [`STALL_LOGGED`] toward the client / toward the server, in order.
    pub stall_log: (Vec<Stall>, Vec<Stall>),
    /// Per connection ([`MpSpec::flows`]); the fields above are the first one's.
    pub flows: Vec<FlowReport>,
    /// When [`Action::Release`] ran, and when the server of flow 0 first read a byte written
    /// after it.
    pub released: Option<(Instant, Option<Instant>)>,
    /// Super-segments the network cut into segments, and how many segments they made
    /// ([`Network::send_transmit`]).
    pub super_segments: (u64, u64),
}

/// What one of the concurrent connections delivered.
#[derive(Debug, Clone, Default)]
pub struct FlowReport {
    /// Bytes received by the client.
    pub client_received: u64,
    /// Bytes received by the server.
    pub server_received: u64,
    /// As [`MpReport::stalls`].
    pub stalls: (Stall, Stall),
    /// As [`MpReport::stall_log`].
    pub stall_log: (Vec<Stall>, Vec<Stall>),
}

/// Stalls at least this long are listed in [`MpReport::stall_log`].
pub const STALL_LOGGED: std::time::Duration = std::time::Duration::from_millis(20);

/// The longest time one direction's data stood still (no new byte read by the application).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stall {
    /// How long.
    pub gap: std::time::Duration,
    /// When the data moved again.
    pub ended: Instant,
}

#[derive(Default)]
struct Side {
    written: u64,
    received: u64,
    closed: bool,
    terminal: Option<Event>,
    /// When the last new byte arrived.
    progress: Option<Instant>,
    stall: Stall,
    log: Vec<Stall>,
}

impl Side {
    fn pump(
        &mut self,
        now: Instant,
        c: &mut Connection,
        dir: u8,
        (total, limit): (u64, u64),
        buf: &mut [u8],
    ) -> Result<(), String> {
        while self.written < total.min(limit) {
            let total = total.min(limit);
            let n = ((total - self.written) as usize).min(buf.len());
            fill_pattern(dir, self.written, &mut buf[..n]);
            let k = c.send(&buf[..n]);
            self.written += k as u64;
            if k < n {
                break;
            }
        }
        if self.written == total && !self.closed {
            self.closed = true;
            c.close();
        }
        let mut expect = vec![0u8; buf.len()];
        loop {
            let n = c.recv(buf);
            if n == 0 {
                return Ok(());
            }
            if let Some(t) = self.progress {
                let st = Stall {
                    gap: now - t,
                    ended: now,
                };
                if st.gap > self.stall.gap {
                    self.stall = st;
                }
                if st.gap >= STALL_LOGGED {
                    self.log.push(st);
                }
            }
            self.progress = Some(now);
            fill_pattern(1 - dir, self.received, &mut expect[..n]);
            if buf[..n] != expect[..n] {
                return Err(format!(
                    "corrupt data at offset {} (dir {})",
                    self.received,
                    1 - dir
                ));
            }
            self.received += n as u64;
        }
    }
}

fn stats(net: &Network, ids: &[super::net::PathId; 4]) -> [PathStats; 4] {
    ids.map(|p| net.stats(p).unwrap_or_default())
}

/// Steps of the loop at one virtual time after which the run counts as stuck (a deadline that
/// is due and stays due).
const SAME_TIME_LIMIT: u32 = 100_000;

/// One connection of a run: the client, the server once its SYN arrived, both byte streams.
struct Flow {
    client: Connection,
    server: Option<Connection>,
    sc: Side,
    ss: Side,
    /// The next local port granted for a join toward [`SERVER2`].
    next_remote_port: u16,
}

/// Local ports of flow `k` (initial and rejoin ports, then ports granted for joins toward
/// [`SERVER2`]): a block of [`PORTS_PER_FLOW`] from 40000, so a segment's client port names
/// its flow.
const PORTS_PER_FLOW: u16 = 200;
/// Most concurrent flows.
pub const MAX_FLOWS: usize = 64;

fn flow_of_port(port: u16) -> Option<usize> {
    port.checked_sub(40000).map(|p| usize::from(p / PORTS_PER_FLOW))
}

/// Runs one transfer (or [`MpSpec::flows`] concurrent ones, each with the same settings and
/// sizes, sharing the network).
pub fn run(spec: &MpSpec) -> MpReport {
    let mut rng = Rng::new(spec.seed ^ 0x5eed);
    let mut net = Network::new(spec.seed);
    let mut up = spec.wifi_up_extra.clone();
    up.extend(spec.wifi.iter().cloned());
    let ids = [
        net.add_path(CLIENT_WIFI, SERVER, up),
        net.add_path(SERVER, CLIENT_WIFI, spec.wifi.clone()),
        net.add_path(CLIENT_CELL, SERVER, spec.cell.clone()),
        net.add_path(SERVER, CLIENT_CELL, spec.cell.clone()),
    ];
    let mut up2 = spec.wifi_up_extra.clone();
    up2.extend(spec.wifi.iter().cloned());
    let ids2 = [
        net.add_path(CLIENT_WIFI, SERVER2, up2),
        net.add_path(SERVER2, CLIENT_WIFI, spec.wifi.clone()),
        net.add_path(CLIENT_CELL, SERVER2, spec.cell.clone()),
        net.add_path(SERVER2, CLIENT_CELL, spec.cell.clone()),
    ];
    if let Some(idle) = spec.cell_nat {
        net.add_nat(&[ids[2], ids2[2]], &[ids[3], ids2[3]], idle);
    }
    let mut c2s_limit = spec.c2s_first.unwrap_or(u64::MAX);
    let isn = IsnKey([9; 32]);
    let server_addr = SocketAddr::new(SERVER, 80);
    let mut paths = client_paths();
    paths[1].last_resort = spec.cell_last_resort;
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; 65536];
    let mut flows: Vec<Flow> = (0..spec.flows.clamp(1, MAX_FLOWS) as u16)
        .map(|k| {
            let base = 40000 + k * PORTS_PER_FLOW;
            let client = Connection::connect(
                now,
                spec.client,
                &paths,
                PathId(0),
                server_addr,
                (base..base + 8).collect(),
                Key(rng.next_u64()),
                &isn,
                spec.client_mptcp,
            );
            Flow {
                client,
                server: None,
                sc: Side::default(),
                ss: Side::default(),
                next_remote_port: base + PORTS_PER_FLOW / 2,
            }
        })
        .collect();
    let mut rep = MpReport::default();
    if spec.syn_data > 0 {
        let n = spec.syn_data.min(spec.c2s) as usize;
        fill_pattern(0, 0, &mut buf[..n]);
        for f in &mut flows {
            f.sc.written = f.client.send_in_syn(&buf[..n]) as u64;
        }
    }
    let mut pkt = vec![0u8; 66000];
    let mut actions = spec.actions.clone();
    actions.sort_by_key(|a| a.0);
    let mut next_action = 0;
    let mut forge_iss = 0u32;
    let mut same_time = 0u32;
    let err = 'run: loop {
        while next_action < actions.len() && actions[next_action].0 <= now {
            let act = actions[next_action].1;
            next_action += 1;
            match act {
                Action::Kill(n) | Action::Restore(n) | Action::NetDown(n, _) => {
                    let down = match act {
                        Action::Kill(_) => true,
                        Action::Restore(_) => false,
                        Action::NetDown(_, d) => d,
                        _ => false,
                    };
                    let k = usize::from(n) * 2;
                    for p in [ids[k], ids[k + 1], ids2[k], ids2[k + 1]] {
                        net.set_down(p, down);
                    }
                    for f in &mut flows {
                        match act {
                            Action::Kill(_) => f.client.path_down(now, PathId(n)),
                            Action::Restore(_) => f.client.path_up(now, PathId(n)),
                            _ => {}
                        }
                    }
                }
                Action::ServerUnreachable(n, down) => {
                    let k = usize::from(n) * 2;
                    net.set_down(ids[k], down);
                    net.set_down(ids[k + 1], down);
                }
                Action::Announce(addr) => {
                    for s in flows.iter_mut().filter_map(|f| f.server.as_mut()) {
                        s.announce_addr(now, 1, addr, None);
                    }
                }
                Action::StripOptions(n) => {
                    let k = usize::from(n) * 2;
                    for p in [ids[k], ids[k + 1], ids2[k], ids2[k + 1]] {
                        if let Some(st) = net.stages_mut(p) {
                            st.insert(
                                0,
                                Stage::new(Link::RewriteOption {
                                    kind: 30,
                                    mode: Rewrite::Strip,
                                    syn_only: false,
                                }),
                            );
                        }
                    }
                }
                Action::Snapshot => rep.snapshots.push((now, stats(&net, &ids))),
                Action::Inspect => rep.inspections.push((
                    now,
                    flows[0].client.subflows(),
                    flows[0].server.as_ref().map(|s| s.subflows()).unwrap_or_default(),
                )),
                Action::SetBackup(n, b) => {
                    for f in &mut flows {
                        f.client.set_path_backup(PathId(n), b);
                    }
                }
                Action::Abort => flows[0].client.abort(),
                Action::Release => {
                    c2s_limit = u64::MAX;
                    rep.released = Some((now, None));
                }
                Action::ForgeUnknownToken | Action::ForgeBadHmac => {
                    let Some(s) = flows[0].server.as_mut() else {
                        continue;
                    };
                    let token = match act {
                        Action::ForgeBadHmac => s.token().map_or(0, |t| t.0),
                        _ => s.token().map_or(1, |t| t.0.wrapping_add(1)),
                    };
                    let join = MptcpOption::MpJoin(MpJoin::Syn {
                        backup: false,
                        addr_id: 9,
                        receiver_token: token,
                        sender_nonce: rng.next_u64() as u32,
                    });
                    forge_iss = rng.next_u64() as u32;
                    let hdr = forged(&join, forge_iss, 0, TcpFlags::SYN);
                    let r = s.accept_join(
                        now,
                        PathId(2),
                        server_addr,
                        SocketAddr::new(ATTACKER, 666),
                        &hdr,
                        Nonce(rng.next_u64() as u32),
                    );
                    rep.forged.push(r);
                }
            }
        }
        for (k, f) in flows.iter_mut().enumerate() {
            if let Err(e) = f.sc.pump(now, &mut f.client, 0, (spec.c2s, c2s_limit), &mut buf) {
                break 'run Some(format!("flow {k}: client: {e}"));
            }
            if let Some(s) = f.server.as_mut()
                && let Err(e) = f.ss.pump(now, s, 1, (spec.s2c, u64::MAX), &mut buf)
            {
                break 'run Some(format!("flow {k}: server: {e}"));
            }
            if k == 0
                && spec.c2s_first.is_some_and(|first| f.ss.received > first)
                && let Some((_, got)) = rep.released.as_mut()
                && got.is_none()
            {
                *got = Some(now);
            }
            for _ in 0..100_000 {
                let Some((_, t)) = f.client.poll_transmit(now, &mut pkt) else {
                    break;
                };
                net.send_transmit(now, &pkt[..t.len], t.seg_payload);
            }
            if let Some(s) = f.server.as_mut() {
                for _ in 0..100_000 {
                    let Some((_, t)) = s.poll_transmit(now, &mut pkt) else {
                        break;
                    };
                    if let Ok(p) = parse_tcp_packet(&pkt[..t.len])
                        && p.dst.ip() == ATTACKER
                    {
                        // The forger answers a SYN/ACK with a third ACK carrying a made-up HMAC.
                        if p.header.flags.syn() && p.header.flags.ack() {
                            let ack = MptcpOption::MpJoin(MpJoin::Ack { hmac: [0x42; 20] });
                            let h = forged(
                                &ack,
                                forge_iss.wrapping_add(1),
                                p.header.seq.0.wrapping_add(1),
                                TcpFlags::ACK,
                            );
                            s.handle_packet(
                                now,
                                PathId(2),
                                server_addr,
                                SocketAddr::new(ATTACKER, 666),
                                &h,
                                &[],
                            );
                        }
                        continue;
                    }
                    net.send_transmit(now, &pkt[..t.len], t.seg_payload);
                }
            }
            while let Some(ev) = f.client.poll_event() {
                if k == 0 {
                    rep.client_events.push(ev);
                    rep.client_event_at.push(now);
                }
                if let Event::PortNeeded { remote } = ev {
                    f.client.add_remote_port(now, remote, f.next_remote_port);
                    f.next_remote_port += 1;
                }
                if matches!(ev, Event::Closed | Event::Reset | Event::TimedOut) {
                    f.sc.terminal = Some(ev);
                }
            }
            if let Some(s) = f.server.as_mut() {
                while let Some(ev) = s.poll_event() {
                    if k == 0 {
                        rep.server_events.push(ev);
                        rep.server_event_at.push(now);
                    }
                    if matches!(ev, Event::Closed | Event::Reset | Event::TimedOut) {
                        f.ss.terminal = Some(ev);
                    }
                }
            }
        }
        let mut all_done = true;
        let mut all_data = true;
        for (k, f) in flows.iter().enumerate() {
            let data = f.sc.received == spec.s2c && f.ss.received == spec.c2s;
            let data_done =
                data && f.client.recv_finished() && f.server.as_ref().is_some_and(|s| s.recv_finished());
            // Every byte and both DATA_FINs arrived; one side may still time out waiting for
            // the last DATA_ACK on a dead path (as TCP's LAST-ACK does).
            all_done &= data_done && f.sc.terminal.is_some() && f.ss.terminal.is_some();
            all_data &= data;
            if !data_done
                && (matches!(f.sc.terminal, Some(Event::Reset | Event::TimedOut))
                    || matches!(f.ss.terminal, Some(Event::Reset | Event::TimedOut)))
            {
                break 'run Some(format!(
                    "flow {k}: connection failed: client {:?} server {:?}",
                    f.sc.terminal, f.ss.terminal
                ));
            }
        }
        if all_done {
            break None;
        }
        if rep.data_done_at.is_none() && all_data {
            rep.data_done_at = Some(now);
        }

        let next = flows
            .iter()
            .flat_map(|f| {
                [
                    f.client.poll_timeout(),
                    f.server.as_ref().and_then(|s| s.poll_timeout()),
                ]
            })
            .chain([net.next_delivery(), actions.get(next_action).map(|a| a.0)])
            .flatten()
            .min();
        let Some(next) = next else {
            break Some("stuck: nothing scheduled".into());
        };
        if next <= now {
            same_time += 1;
            if same_time > SAME_TIME_LIMIT {
                let f = &flows[0];
                break Some(format!(
                    "livelock at {now:?}: flow 0 client timeout {:?} ({}), server timeout {:?}, next delivery {:?}",
                    f.client.poll_timeout(),
                    f.client.describe_deadlines(),
                    f.server.as_ref().and_then(|s| s.poll_timeout()),
                    net.next_delivery()
                ));
            }
        } else {
            same_time = 0;
        }
        now = now.max(next);
        if now > spec.time_limit {
            let (c, s): (u64, u64) = flows
                .iter()
                .map(|f| (f.sc.received, f.ss.received))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let n = flows.len() as u64;
            break Some(format!(
                "virtual time limit: clients got {c}/{} servers got {s}/{}",
                spec.s2c * n,
                spec.c2s * n
            ));
        }
        while let Some(d) = net.deliver(now) {
            if let Ok(p) = parse_tcp_packet(&d.packet) {
                let payload = &d.packet[p.payload.clone()];
                let to_server = p.dst.ip() == SERVER || p.dst.ip() == SERVER2;
                let client_port = if to_server { p.src.port() } else { p.dst.port() };
                let Some(f) = flow_of_port(client_port).and_then(|k| flows.get_mut(k)) else {
                    rst_reply(&mut net, now, &p, payload.len());
                    net.recycle(d.packet);
                    continue;
                };
                if to_server {
                    let path = PathId(u8::from(p.src.ip() == CLIENT_CELL));
                    match f.server.as_mut() {
                        None => {
                            if let Ok(s) = Connection::accept(
                                now,
                                spec.server,
                                path,
                                p.dst,
                                p.src,
                                &p.header,
                                Key(rng.next_u64()),
                                &isn,
                            ) {
                                f.server = Some(s);
                            }
                        }
                        Some(s) => {
                            let is_new = !s.subflow_tuples().any(|t| t == (p.dst, p.src));
                            let join = p
                                .header
                                .options
                                .mptcp
                                .iter()
                                .any(|o| matches!(MptcpOption::parse(o), Ok(MptcpOption::MpJoin(_))));
                            if is_new && p.header.flags.syn() && !p.header.flags.ack() && !join {
                                // A new connection attempt (the client restarted MP_CAPABLE on
                                // another subflow): it replaces the half-open one.
                                if let Ok(c) = Connection::accept(
                                    now,
                                    spec.server,
                                    path,
                                    p.dst,
                                    p.src,
                                    &p.header,
                                    Key(rng.next_u64()),
                                    &isn,
                                ) {
                                    *s = c;
                                    f.ss = Side::default();
                                }
                            } else if is_new && p.header.flags.syn() && !p.header.flags.ack() {
                                let r = s.accept_join(
                                    now,
                                    path,
                                    p.dst,
                                    p.src,
                                    &p.header,
                                    Nonce(rng.next_u64() as u32),
                                );
                                if r.is_err() {
                                    rst_reply(&mut net, now, &p, payload.len());
                                }
                            } else if is_new {
                                // What an endpoint does with a segment matching nothing.
                                rst_reply(&mut net, now, &p, payload.len());
                            } else {
                                s.handle_packet(now, path, p.dst, p.src, &p.header, payload);
                            }
                        }
                    }
                } else {
                    let path = PathId(u8::from(p.dst.ip() == CLIENT_CELL));
                    if f.client.subflow_tuples().any(|t| t == (p.dst, p.src)) {
                        f.client
                            .handle_packet(now, path, p.dst, p.src, &p.header, payload);
                    } else {
                        rst_reply(&mut net, now, &p, payload.len());
                    }
                }
            }
            net.recycle(d.packet);
        }
        for f in &mut flows {
            f.client.handle_timeout(now);
            if let Some(s) = f.server.as_mut() {
                s.handle_timeout(now);
            }
        }
    };
    rep.completed = err.is_none();
    rep.error = err;
    rep.flows = flows
        .iter_mut()
        .map(|f| FlowReport {
            client_received: f.sc.received,
            server_received: f.ss.received,
            stalls: (f.sc.stall, f.ss.stall),
            stall_log: (std::mem::take(&mut f.sc.log), std::mem::take(&mut f.ss.log)),
        })
        .collect();
    let f = &flows[0];
    rep.stalls = rep.flows[0].stalls;
    rep.stall_log = rep.flows[0].stall_log.clone();
    rep.client_received = f.sc.received;
    rep.server_received = f.ss.received;
    rep.client_mptcp = f.client.is_mptcp();
    rep.terminal = (f.sc.terminal, f.ss.terminal);
    rep.finished_at = now;
    rep.final_stats = stats(&net, &ids);
    rep.super_segments = (net.super_segments, net.super_segment_parts);
    rep.final_stats2 = stats(&net, &ids2);
    rep.client_peer_addrs = f.client.peer_addresses();
    rep.dropped = (f.client.dropped, f.server.as_ref().map_or(0, |s| s.dropped));
    rep
}

/// A segment from the forger to the server.
fn forged(opt: &MptcpOption, seq: u32, ack: u32, flags: TcpFlags) -> crate::wire::tcp::SegmentHeader {
    let mut o = [0u8; 40];
    let n = opt.write(&mut o).unwrap_or(0);
    let f = SegmentFields {
        seq: crate::tcp::SeqNum(seq),
        ack: crate::tcp::SeqNum(ack),
        flags,
        window: 65535,
        ..Default::default()
    };
    let mut b = vec![0u8; 200];
    let src = SocketAddr::new(ATTACKER, 666);
    let dst = SocketAddr::new(SERVER, 80);
    match write_tcp_packet(&mut b, src, dst, &f, &o[..n], &[], 0)
        .ok()
        .and_then(|len| parse_tcp_packet(&b[..len]).ok())
    {
        Some(p) => p.header,
        None => crate::wire::tcp::SegmentHeader::default(),
    }
}

/// Answers a segment that matches no subflow with a RST (RFC 9293 §3.10.7.1).
fn rst_reply(net: &mut Network, now: Instant, p: &crate::wire::TcpPacket, len: usize) {
    let mut b = [0u8; 128];
    if let Ok(Some(n)) = crate::tcp::write_rst_reply(&mut b, p.src, p.dst, &p.header, len) {
        net.send(now, &b[..n]);
    }
}
