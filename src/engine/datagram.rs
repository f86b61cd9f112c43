//! The datagram relay: UDP datagrams and ICMP echo requests from the host go out through the
//! socket thread on the interface now preferred (one session per host 5-tuple or echo
//! identifier, in [`Sessions`](super::sessions::Sessions)); what comes back is written to the
//! host as it would have arrived without mpbond. Sessions move when the preferred interface
//! changes and end when idle.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{DatagramAction, DatagramKind, Dest, DropReason, Engine, IfaceId, SWEEP_INTERVAL, SessionId};
use crate::time::Instant;
use crate::wire::icmp::{self, IcmpError};
use crate::wire::ip;
use crate::wire::udp::{self, UDP_HEADER_LEN, UdpError};

impl Engine {
    /// A UDP datagram `seg` from the host (`pkt`: the whole packet, quoted in an ICMP error).
    pub(super) fn tun_udp(&mut self, now: Instant, pkt: &[u8], src: IpAddr, dst: IpAddr, seg: &[u8]) {
        let u = match udp::parse(src, dst, seg, true) {
            Ok(u) => u,
            Err(UdpError::BadChecksum) => return self.drop(DropReason::BadUdpChecksum),
            Err(_) => return self.drop(DropReason::BadUdpLength),
        };
        let payload = &seg[UDP_HEADER_LEN..UDP_HEADER_LEN + u.payload_len];
        let (host, remote) = (SocketAddr::new(src, u.src_port), SocketAddr::new(dst, u.dst_port));
        let idle = if u.dst_port == 53 {
            self.cfg.dns_idle
        } else {
            self.cfg.udp_idle
        };
        self.datagram_up(now, DatagramKind::Udp, (host, remote), idle, payload, pkt);
    }

    /// An ICMP message `msg` from the host: echo requests are relayed.
    pub(super) fn tun_icmp(&mut self, now: Instant, src: IpAddr, dst: IpAddr, msg: &[u8]) {
        let echo = match icmp::parse_echo(src, dst, msg, true) {
            Ok(Some(e)) if e.request => e,
            Ok(_) => return self.drop(DropReason::IcmpNotEcho),
            Err(IcmpError::BadChecksum) => return self.drop(DropReason::BadIcmpChecksum),
            Err(_) => return self.drop(DropReason::BadIcmp),
        };
        let (host, remote) = (SocketAddr::new(src, echo.ident), SocketAddr::new(dst, echo.ident));
        let idle = self.cfg.icmp_idle;
        self.datagram_up(now, DatagramKind::IcmpEcho, (host, remote), idle, msg, &[]);
    }

    /// Sends `payload` of the session `(host, remote)` (a new one, idle after `idle`, if none)
    /// through the socket thread. `original`: the host's packet, quoted in the error it gets
    /// when no interface can carry it (empty: no error).
    fn datagram_up(
        &mut self,
        now: Instant,
        kind: DatagramKind,
        (host, remote): (SocketAddr, SocketAddr),
        idle: Duration,
        payload: &[u8],
        original: &[u8],
    ) {
        self.expire_unresponsive(now);
        let Some(best) = self.ifaces.choose(remote.ip()) else {
            self.drop(DropReason::NoInterface);
            if !original.is_empty() {
                self.queue_unreachable(remote.ip(), host.ip(), original);
            }
            return;
        };
        let full = self.sessions.len() >= self.cfg.max_sessions;
        let (id, iface, wire_ident) = match self.sessions.find(kind, host, remote) {
            Some(s) => {
                s.last = now;
                (s.id, s.iface, s.wire_ident)
            }
            None if full => return self.drop(DropReason::TableFull),
            None => {
                match kind {
                    DatagramKind::Udp => self.counters.udp_sessions += 1,
                    DatagramKind::IcmpEcho => self.counters.icmp_sessions += 1,
                }
                let s = self.sessions.insert(kind, host, remote, best, now, idle);
                (s.id, best, s.wire_ident)
            }
        };
        if iface != best {
            self.sessions.set_iface(id, best);
            self.counters.session_moves += 1;
        }
        if let Some(s) = self.sessions.get_mut(id) {
            s.up.0 += 1;
            s.up.1 += payload.len() as u64;
        }
        self.counters.dgram_bytes_up += payload.len() as u64;
        let action = DatagramAction::Send {
            session: id,
            kind,
            iface: best,
            dst: remote,
            len: payload.len(),
        };
        match self.datagrams.push(action, payload.len()) {
            Some(b) => {
                b.copy_from_slice(payload);
                if kind == DatagramKind::IcmpEcho {
                    // Our identifier on the wire.
                    icmp::set_echo_ident(b, wire_ident);
                }
            }
            None => self.drop(DropReason::QueueFull),
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// A UDP payload the socket of `session` received: to the host.
    pub(super) fn datagram_down(&mut self, now: Instant, session: SessionId, payload: &[u8]) {
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        s.last = now;
        s.down.0 += 1;
        s.down.1 += payload.len() as u64;
        let (from, to) = (s.remote, s.host);
        self.counters.dgram_bytes_down += payload.len() as u64;
        let need = ip::header_len(from.ip()) + UDP_HEADER_LEN + payload.len();
        let Some(buf) = self.to_host.push(Dest::Tun, need) else {
            return self.drop(DropReason::QueueFull);
        };
        match udp::write_packet(buf, from, to, payload) {
            Ok(n) => self.to_host.truncate_last(n),
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// The destination of UDP `session` refused it: the host gets "port unreachable".
    pub(super) fn datagram_refused(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        let (host, remote) = (s.host, s.remote);
        self.queue_port_unreachable(host, remote);
    }

    /// An ICMP message from `from` to our address `to_self` on `iface` that is not an error:
    /// an echo reply goes back to the host with the identifier it chose.
    pub(super) fn echo_reply(
        &mut self,
        now: Instant,
        iface: IfaceId,
        from: IpAddr,
        to_self: IpAddr,
        msg: &[u8],
    ) {
        let echo = match icmp::parse_echo(from, to_self, msg, from.is_ipv4()) {
            Ok(Some(e)) if !e.request => e,
            Ok(_) => return, // requests to us, errors: not ours to relay
            Err(IcmpError::BadChecksum) => return self.drop(DropReason::BadIcmpChecksum),
            Err(_) => return self.drop(DropReason::BadIcmp),
        };
        let Some(s) = self.sessions.echo_session(iface, from, echo.ident) else {
            return self.drop(DropReason::NoSession);
        };
        s.last = now;
        s.down.0 += 1;
        s.down.1 += msg.len() as u64;
        let (to, host_ident) = (s.host.ip(), s.host.port());
        self.counters.dgram_bytes_down += msg.len() as u64;
        let need = ip::header_len(from) + msg.len();
        let Some(buf) = self.to_host.push(Dest::Tun, need) else {
            return self.drop(DropReason::QueueFull);
        };
        match icmp::write_echo(buf, from, to, msg, host_ident) {
            Ok(n) => self.to_host.truncate_last(n),
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// Ends the sessions idle at `now` (their sockets are closed).
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        for s in self.sessions.expire(now) {
            tracing::debug!(session = s.id.0, "session idle, closed");
            self.push_action(DatagramAction::Close { session: s.id });
        }
    }

    /// Forgets interfaces held as unresponsive once the hold passed; sessions follow.
    pub(super) fn expire_unresponsive(&mut self, now: Instant) {
        if self.ifaces.expire_unresponsive(now) {
            self.move_sessions();
        }
    }

    /// Moves UDP/ICMP sessions to the interface now preferred.
    pub(super) fn move_sessions(&mut self) {
        for id in self.sessions.ids() {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            let (cur, remote, kind) = (s.iface, s.remote, s.kind);
            let Some(best) = self.ifaces.choose(remote.ip()) else {
                continue;
            };
            if best != cur {
                self.sessions.set_iface(id, best);
                self.counters.session_moves += 1;
                self.push_action(DatagramAction::Move {
                    session: id,
                    kind,
                    iface: best,
                    dst: remote,
                });
            }
        }
    }

    /// Queues an action without payload for the socket thread.
    fn push_action(&mut self, action: DatagramAction) {
        if self.datagrams.push(action, 0).is_none() {
            self.drop(DropReason::QueueFull);
        }
    }
}
