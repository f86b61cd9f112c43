//! The datagram thread: owns the kernel sockets that relay the host's UDP and ICMP echo
//! traffic (the engine decides; this thread only opens, sends, receives and closes).
//!
//! Each UDP session gets a UDP socket bound to its interface (`SO_BINDTODEVICE`), carrying
//! mpbond's fwmark (so the policy rules send it out of the physical interface, not back into the
//! TUN) and connected to the destination; a redundant session one such socket per interface it
//! sends on (all of them read). ICMP echo uses one raw ICMP / ICMPv6 socket per
//! interface and family; everything it receives goes to the engine, which matches echo replies
//! to sessions.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use super::Worker;
use super::pool::{PacketBuf, Pool};
use crate::engine::{DatagramKind, IfaceId, SessionId};

/// Datagrams read per wake-up at most (cap on work).
const MAX_PER_WAKE: usize = 256;
/// Tokens 1..=4 are the raw ICMP sockets; sessions start above.
const FIRST_SESSION_TOKEN: usize = 16;

/// What the engine asks of the datagram thread.
#[derive(Debug)]
pub enum DgramCmd {
    /// Send `payload` for `session` from `iface` to `dst` (opening its socket if needed).
    Send {
        /// Session.
        session: SessionId,
        /// UDP or ICMP echo.
        kind: DatagramKind,
        /// Interface.
        iface: IfaceId,
        /// Destination.
        dst: SocketAddr,
        /// UDP payload or whole ICMP message.
        payload: PacketBuf,
        /// Keep the session's sockets on other interfaces (a redundant session).
        redundant: bool,
    },
    /// Reopen the session's socket on `iface`.
    Move {
        /// Session.
        session: SessionId,
        /// Interface.
        iface: IfaceId,
        /// Destination.
        dst: SocketAddr,
    },
    /// Close the session's socket.
    Close {
        /// Session.
        session: SessionId,
    },
    /// Interface `iface` (the next id, or the id of one that vanished) appeared while running:
    /// it is called `name`.
    AddIface {
        /// Its id.
        iface: IfaceId,
        /// Its name.
        name: String,
    },
}

/// What the datagram thread tells the engine.
#[derive(Debug)]
pub enum DgramEvent {
    /// A UDP payload from a session's destination.
    Udp {
        /// Session.
        session: SessionId,
        /// The interface of the socket it came on.
        iface: IfaceId,
        /// Payload.
        payload: PacketBuf,
    },
    /// The session's destination answered "port unreachable".
    UdpRefused {
        /// Session.
        session: SessionId,
    },
    /// An ICMP message (no IP header) received on `iface` from `from`.
    Icmp {
        /// Interface.
        iface: IfaceId,
        /// Source.
        from: IpAddr,
        /// The message.
        message: PacketBuf,
    },
}

/// Counters of the datagram thread.
#[derive(Debug, Default)]
pub struct DgramStats {
    /// Datagrams sent.
    pub tx: AtomicU64,
    /// Datagrams received.
    pub rx: AtomicU64,
    /// Sends that failed or sockets that could not be opened.
    pub errors: AtomicU64,
    /// Received datagrams dropped because the engine's channel was full.
    pub rx_dropped_busy: AtomicU64,
}

/// The engine's handle on the datagram thread.
#[derive(Debug)]
pub struct DgramHandle {
    cmd: Sender<Vec<DgramCmd>>,
    waker: Arc<Waker>,
    /// Counters.
    pub stats: Arc<DgramStats>,
    worker: Worker,
}

impl DgramHandle {
    /// Queues commands and wakes the thread; a full queue drops them (counted).
    pub fn send(&self, batch: Vec<DgramCmd>) {
        let n = batch.len() as u64;
        if self.cmd.try_send(batch).is_ok() {
            let _ = self.waker.wake();
        } else {
            self.stats.errors.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Stops the thread.
    pub fn stop(&mut self) {
        self.worker.stop();
    }
}

/// Starts the thread. `ifaces[i]` is the name of interface `i`.
pub fn spawn(
    ifaces: Vec<String>,
    fwmark: u32,
    pool: Pool,
    events: Sender<Vec<DgramEvent>>,
) -> io::Result<DgramHandle> {
    let poll = Poll::new()?;
    let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(256);
    let stats = Arc::new(DgramStats::default());
    let s = stats.clone();
    let worker = Worker::spawn("mpbond-dgram", poll, move |poll, stop| {
        let mut t = Thread {
            poll,
            ifaces,
            fwmark,
            pool,
            events,
            cmd: cmd_rx,
            stats: s,
            sessions: HashMap::new(),
            by_token: HashMap::new(),
            next_token: FIRST_SESSION_TOKEN,
            icmp: Default::default(),
        };
        t.run(&stop);
    })?;
    Ok(DgramHandle {
        cmd: cmd_tx,
        waker: worker.waker(),
        stats,
        worker,
    })
}

struct UdpSession {
    sock: UdpSocket,
    iface: IfaceId,
    dst: SocketAddr,
    token: Token,
}

/// Most sockets of one session (one per interface of a redundant session).
const MAX_SOCKETS_PER_SESSION: usize = 8;

struct Thread {
    poll: Poll,
    ifaces: Vec<String>,
    fwmark: u32,
    pool: Pool,
    events: Sender<Vec<DgramEvent>>,
    cmd: Receiver<Vec<DgramCmd>>,
    stats: Arc<DgramStats>,
    sessions: HashMap<SessionId, Vec<UdpSession>>,
    by_token: HashMap<Token, SessionId>,
    next_token: usize,
    /// Raw ICMP sockets by (iface, IPv6?): tokens 1 + 2*iface + v6.
    icmp: HashMap<(IfaceId, bool), UdpSocket>,
}

/// Forgets a session with no socket left.
fn socks_cleanup(sessions: &mut HashMap<SessionId, Vec<UdpSession>>, session: SessionId) {
    if sessions.get(&session).is_some_and(Vec::is_empty) {
        sessions.remove(&session);
    }
}

fn icmp_token(iface: IfaceId, v6: bool) -> Token {
    Token(1 + 2 * usize::from(iface) + usize::from(v6))
}

impl Thread {
    fn run(&mut self, stop: &AtomicBool) {
        // The raw ICMP sockets also bring the unreachable errors about our upstream connections:
        // open them at once (an interface missing now gets them with its first ping).
        for iface in 0..self.ifaces.len() {
            for v6 in [false, true] {
                if let Err(e) = self.icmp_socket(iface as IfaceId, v6) {
                    tracing::debug!(iface, v6, "no ICMP socket yet: {e}");
                }
            }
        }
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(500)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("datagram poll failed: {e}");
                return;
            }
            for _ in 0..64 {
                let Ok(batch) = self.cmd.try_recv() else { break };
                for c in batch {
                    self.command(c);
                }
            }
            let mut out = Vec::new();
            for ev in events.iter() {
                let t = ev.token();
                if t.0 >= FIRST_SESSION_TOKEN {
                    if let Some(&id) = self.by_token.get(&t) {
                        self.read_udp(id, t, &mut buf, &mut out);
                    }
                } else if t.0 >= 1 {
                    let iface = ((t.0 - 1) / 2) as IfaceId;
                    let v6 = (t.0 - 1) % 2 == 1;
                    self.read_icmp(iface, v6, &mut buf, &mut out);
                }
            }
            if !out.is_empty() {
                let n = out.len() as u64;
                if self.events.try_send(out).is_err() {
                    self.stats.rx_dropped_busy.fetch_add(n, Ordering::Relaxed);
                } else {
                    self.stats.rx.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }

    fn base_socket(&self, iface: IfaceId, domain: Domain, ty: Type, proto: Protocol) -> io::Result<Socket> {
        let name = self
            .ifaces
            .get(usize::from(iface))
            .ok_or_else(|| io::Error::other("unknown interface"))?;
        let s = Socket::new(domain, ty, Some(proto))?;
        s.set_mark(self.fwmark)?;
        s.bind_device(Some(name.as_bytes()))?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// Opens the socket of `session` on `iface` toward `dst`: beside its others (`keep`: a
    /// redundant session; the one there before on `iface` is replaced) or instead of them.
    fn open_udp(
        &mut self,
        session: SessionId,
        iface: IfaceId,
        dst: SocketAddr,
        keep: bool,
    ) -> io::Result<()> {
        if keep {
            self.close_on(session, Some(iface));
        } else {
            self.close(session);
        }
        if self
            .sessions
            .get(&session)
            .is_some_and(|v| v.len() >= MAX_SOCKETS_PER_SESSION)
        {
            return Err(io::Error::other("too many sockets for one session"));
        }
        let domain = if dst.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let s = self.base_socket(iface, domain, Type::DGRAM, Protocol::UDP)?;
        let any: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        s.bind(&any.into())?;
        s.connect(&dst.into())?;
        let mut sock = UdpSocket::from_std(s.into());
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut sock, token, Interest::READABLE)?;
        self.by_token.insert(token, session);
        self.sessions.entry(session).or_default().push(UdpSession {
            sock,
            iface,
            dst,
            token,
        });
        Ok(())
    }

    /// The socket of `session` on `iface` toward `dst`.
    fn udp_on(&self, session: SessionId, iface: IfaceId, dst: SocketAddr) -> Option<&UdpSession> {
        self.sessions
            .get(&session)?
            .iter()
            .find(|s| s.iface == iface && s.dst == dst)
    }

    /// Sends `payload` on the socket of `session` on `iface` toward `dst`, opened first if
    /// needed. A redundant session's socket that fails (its interface's address changed, say)
    /// is reopened once.
    fn send_udp(
        &mut self,
        session: SessionId,
        iface: IfaceId,
        dst: SocketAddr,
        payload: &[u8],
        keep: bool,
    ) -> io::Result<()> {
        let mut fresh = self.udp_on(session, iface, dst).is_none();
        for _ in 0..2 {
            if fresh {
                self.open_udp(session, iface, dst, keep)?;
            }
            let Some(s) = self.udp_on(session, iface, dst) else {
                return Ok(());
            };
            match s.sock.send(payload) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || fresh || !keep => return Err(e),
                Err(_) => fresh = true,
            }
        }
        Ok(())
    }

    fn icmp_socket(&mut self, iface: IfaceId, v6: bool) -> io::Result<&UdpSocket> {
        if !self.icmp.contains_key(&(iface, v6)) {
            let (d, p) = if v6 {
                (Domain::IPV6, Protocol::ICMPV6)
            } else {
                (Domain::IPV4, Protocol::ICMPV4)
            };
            let s = self.base_socket(iface, d, Type::RAW, p)?;
            // A raw socket's fd behaves as a datagram socket for send_to/recv_from.
            let sock = UdpSocket::from_std(s.into());
            self.poll.registry().register(
                &mut SourceFd(&sock.as_raw_fd()),
                icmp_token(iface, v6),
                Interest::READABLE,
            )?;
            self.icmp.insert((iface, v6), sock);
        }
        self.icmp
            .get(&(iface, v6))
            .ok_or_else(|| io::Error::other("no ICMP socket"))
    }

    fn close(&mut self, session: SessionId) {
        self.close_on(session, None);
    }

    /// Closes the sockets of `session` on `iface` (all: `None`).
    fn close_on(&mut self, session: SessionId, iface: Option<IfaceId>) {
        let Some(socks) = self.sessions.get_mut(&session) else {
            return;
        };
        let (gone, kept): (Vec<UdpSession>, Vec<UdpSession>) = std::mem::take(socks)
            .into_iter()
            .partition(|s| iface.is_none_or(|i| s.iface == i));
        *socks = kept;
        for mut s in gone {
            let _ = self.poll.registry().deregister(&mut s.sock);
            self.by_token.remove(&s.token);
        }
        socks_cleanup(&mut self.sessions, session);
    }

    fn command(&mut self, c: DgramCmd) {
        let res = match c {
            DgramCmd::Send {
                session,
                kind: DatagramKind::Udp,
                iface,
                dst,
                payload,
                redundant,
            } => self.send_udp(session, iface, dst, &payload, redundant),
            DgramCmd::Send {
                kind: DatagramKind::IcmpEcho,
                iface,
                dst,
                payload,
                ..
            } => self
                .icmp_socket(iface, dst.is_ipv6())
                .and_then(|s| s.send_to(&payload, SocketAddr::new(dst.ip(), 0)).map(|_| ())),
            DgramCmd::Move { session, iface, dst } => {
                if self.udp_on(session, iface, dst).is_some() {
                    // A copy's socket there already (the converter knows its address): it
                    // stays, the others go.
                    let others: Vec<IfaceId> = self
                        .sessions
                        .get(&session)
                        .into_iter()
                        .flatten()
                        .map(|s| s.iface)
                        .filter(|&i| i != iface)
                        .collect();
                    for i in others {
                        self.close_on(session, Some(i));
                    }
                    Ok(())
                } else if self.sessions.contains_key(&session) {
                    self.open_udp(session, iface, dst, false)
                } else {
                    Ok(())
                }
            }
            DgramCmd::Close { session } => {
                self.close(session);
                Ok(())
            }
            DgramCmd::AddIface { iface, name } => {
                let i = usize::from(iface);
                if i < self.ifaces.len() {
                    // In the place of one that vanished: its ICMP sockets were bound to it.
                    self.ifaces[i] = name;
                    for v6 in [false, true] {
                        if let Some(s) = self.icmp.remove(&(iface, v6)) {
                            let _ = self.poll.registry().deregister(&mut SourceFd(&s.as_raw_fd()));
                        }
                    }
                } else if i == self.ifaces.len() {
                    self.ifaces.push(name);
                }
                Ok(())
            }
        };
        match res {
            Ok(()) => {
                self.stats.tx.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("datagram send failed: {e}");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn read_udp(&mut self, id: SessionId, t: Token, buf: &mut [u8], out: &mut Vec<DgramEvent>) {
        let Some(s) = self
            .sessions
            .get(&id)
            .and_then(|v| v.iter().find(|s| s.token == t))
        else {
            return;
        };
        for _ in 0..MAX_PER_WAKE {
            match s.sock.recv(buf) {
                Ok(n) => out.push(DgramEvent::Udp {
                    session: id,
                    iface: s.iface,
                    payload: self.pool.copy_from(&buf[..n]),
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    out.push(DgramEvent::UdpRefused { session: id });
                }
                Err(_) => break,
            }
        }
    }

    fn read_icmp(&mut self, iface: IfaceId, v6: bool, buf: &mut [u8], out: &mut Vec<DgramEvent>) {
        let Some(s) = self.icmp.get(&(iface, v6)) else {
            return;
        };
        for _ in 0..MAX_PER_WAKE {
            match s.recv_from(buf) {
                Ok((n, from)) => {
                    let data = &buf[..n];
                    // An IPv4 raw socket hands over the IP header too; IPv6 does not.
                    let msg = if v6 {
                        data
                    } else {
                        let ihl = usize::from(data.first().map_or(0, |b| b & 0x0f)) * 4;
                        data.get(ihl..).unwrap_or(&[])
                    };
                    out.push(DgramEvent::Icmp {
                        iface,
                        from: from.ip(),
                        message: self.pool.copy_from(msg),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}
