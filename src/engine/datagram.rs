//! The datagram relay: UDP datagrams and ICMP echo requests from the host go out through the
//! socket thread (direct, or through a converter: `relayed.rs`) on the interface now preferred (one session per host 5-tuple or echo
//! identifier, in [`Sessions`](super::sessions::Sessions)); what comes back is written to the
//! host as it would have arrived without mpbond. Sessions move when the preferred interface
//! changes and end when idle.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::converters::ConverterFailure;
use super::relayed::Relayed;
use super::{DatagramAction, DatagramKind, Dest, DropReason, Engine, IfaceId, SWEEP_INTERVAL, SessionId};
use crate::convert::dgram::{MAX_COPIES, MAX_OVERHEAD};
use crate::time::Instant;
use crate::wire::icmp::{self, IcmpError};
use crate::wire::ip;
use crate::wire::udp::{self, UDP_HEADER_LEN, UdpError};

impl Engine {
    /// A UDP datagram `seg` from the host (`pkt`: the whole packet, quoted in an ICMP error).
    pub(super) fn tun_udp(
        &mut self,
        now: Instant,
        pkt: &[u8],
        (src, dst): (IpAddr, IpAddr),
        seg: &[u8],
        verify: bool,
    ) {
        let u = match udp::parse(src, dst, seg, verify) {
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
        let found = self.sessions.find(kind, host, remote).map(|s| {
            s.last = now;
            s.id
        });
        let id = match found {
            Some(id) => {
                // A relayed session whose converter never answered goes direct first.
                self.relay_health(now, id);
                id
            }
            None => {
                if self.sessions.len() >= self.cfg.max_sessions {
                    return self.drop(DropReason::TableFull);
                }
                let Some(best) = self.ifaces.choose(remote.ip()) else {
                    return self.no_interface(remote, host, original);
                };
                match kind {
                    DatagramKind::Udp => self.counters.udp_sessions += 1,
                    DatagramKind::IcmpEcho => self.counters.icmp_sessions += 1,
                }
                let id = self.sessions.insert(kind, host, remote, best, now, idle).id;
                if let Some(via) = self.relay_choose(now, id, kind, remote)
                    && let Some(s) = self.sessions.get_mut(id)
                {
                    s.via = Some(via);
                }
                id
            }
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return self.drop(DropReason::NoSession);
        };
        // Through a converter, the socket talks to the converter: its address picks the path.
        let target = s.via.as_ref().map_or(remote, |v| v.addr);
        let (cur, wire_ident) = (s.iface, s.wire_ident);
        let Some(best) = self.ifaces.choose(target.ip()) else {
            return self.no_interface(remote, host, original);
        };
        if cur != best {
            self.sessions.set_iface(id, best);
            self.counters.session_moves += 1;
        }
        let capped = !self.rate_ok(now, best, payload.len());
        if cur != best {
            // Before this datagram: what went on the old path lately, if it went away.
            self.relay_left(now, id, cur);
        }
        if capped {
            return;
        }
        let Some(s) = self.sessions.get_mut(id) else {
            return self.drop(DropReason::NoSession);
        };
        s.up.0 += 1;
        s.up.1 += payload.len() as u64;
        self.counters.dgram_bytes_up += payload.len() as u64;
        let relayed = s.via.is_some();
        // Copies on the other paths: a redundant session, or one whose path is suspect.
        let copies = s.via.as_ref().is_some_and(|v| v.client.sends_copies(now));
        let redundant = copies || s.via.as_ref().is_some_and(|v| v.client.is_redundant());
        let len = if relayed {
            payload.len() + MAX_OVERHEAD
        } else {
            payload.len()
        };
        let action = DatagramAction::Send {
            session: id,
            kind: socket_kind(kind, relayed),
            iface: best,
            dst: target,
            len,
            redundant,
        };
        if relayed {
            let key = self.cfg.converter.as_ref().map(|c| c.key.clone());
            let unix = self.unix_now(now).map_or(0, |d| d.as_secs());
            let via = self.sessions.get_mut(id).and_then(|s| s.via.as_mut());
            let (Some(key), Some(via)) = (key, via) else {
                return self.drop(DropReason::NoSession);
            };
            let Some(b) = self.datagrams.push(action, len) else {
                return self.drop(DropReason::QueueFull);
            };
            match via.client.seal_up(now, unix, &key, payload, b) {
                Ok(n) => self.datagrams.truncate_last(n),
                Err(_) => return self.datagrams.discard_last(),
            }
            let small = self.cfg.redundancy.datagram(payload.len());
            if !copies && small {
                // Sent again on the other paths if this path becomes suspect before it answers.
                via.client.remember(now, payload);
            }
            if let Some(t) = via.client.arm() {
                self.suspect_timers.push(std::cmp::Reverse((t, id)));
            }
            if copies && small {
                let seq = via.client.last_seq();
                self.redundant_copies(now, id, action, target, (unix, &key), (seq, payload));
            }
        } else {
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
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// The datagram numbered `seq` with `payload` (sent on the path of `action`) goes on every
    /// other path to `target` too: the same relay sequence number, each copy with its own index
    /// and MAC. The converter relays whichever copy comes first and counts the others
    /// (`convert::relay`). Returns how many copies were queued.
    fn redundant_copies(
        &mut self,
        now: Instant,
        id: SessionId,
        action: DatagramAction,
        target: SocketAddr,
        (unix, key): (u64, &crate::convert::key::ClientKey),
        (seq, payload): (u64, &[u8]),
    ) -> u64 {
        let DatagramAction::Send {
            session,
            kind,
            iface: first,
            dst,
            len,
            redundant,
        } = action
        else {
            return 0;
        };
        let mut queued = 0;
        let others: Vec<IfaceId> = self.ifaces.copy_paths(target.ip(), first).collect();
        for (iface, index) in others.into_iter().zip(1..MAX_COPIES) {
            if !self.rate_ok(now, iface, payload.len()) {
                continue;
            }
            let copy = DatagramAction::Send {
                session,
                kind,
                iface,
                dst,
                len,
                redundant,
            };
            let Some(b) = self.datagrams.push(copy, len) else {
                self.drop(DropReason::QueueFull);
                return queued;
            };
            let Some(via) = self.sessions.get_mut(id).and_then(|s| s.via.as_ref()) else {
                self.datagrams.discard_last();
                return queued;
            };
            match via.client.seal_copy_of(seq, unix, key, payload, index, b) {
                Ok(n) => {
                    self.datagrams.truncate_last(n);
                    self.counters.redundant_copies += 1;
                    queued += 1;
                }
                Err(_) => self.datagrams.discard_last(),
            }
        }
        queued
    }

    /// A relayed session's suspicion timer: if its path is suspect now, the datagrams it sent
    /// lately go on the other paths too (a blackhole swallowed them; the converter drops a copy
    /// of one that arrived); if the suspicion moved later (a new ack request), the timer is set
    /// again.
    pub(super) fn suspect_due(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let iface = s.iface;
        let Some(via) = s.via.as_mut() else {
            return;
        };
        let resend = via.client.take_resend(now);
        if let Some(t) = via.client.arm() {
            self.suspect_timers.push(std::cmp::Reverse((t, id)));
        }
        if !resend.is_empty() {
            self.send_again(now, id, iface, resend);
        }
    }

    /// Relayed session `id` left interface `from` (a direct one: nothing to do): its path state
    /// starts afresh, and if `from` went away (a link that went down takes its queue along),
    /// what the session sent there lately goes again on the other paths.
    fn relay_left(&mut self, now: Instant, id: SessionId, from: IfaceId) {
        let gone = !self.ifaces.is_usable(from);
        let Some(v) = self.sessions.get_mut(id).and_then(|s| s.via.as_mut()) else {
            return;
        };
        let again = if gone {
            v.client.take_recent(now)
        } else {
            Vec::new()
        };
        v.client.path_moved(now);
        if !again.is_empty() {
            self.send_again(now, id, from, again);
        }
    }

    /// Sends the datagrams `again` (number, host payload) of relayed session `id` once more, on
    /// every path to its converter but `from`; counted as `suspect_resends`.
    fn send_again(&mut self, now: Instant, id: SessionId, from: IfaceId, again: Vec<(u64, Vec<u8>)>) {
        let Some(key) = self.cfg.converter.as_ref().map(|c| c.key.clone()) else {
            return;
        };
        let unix = self.unix_now(now).map_or(0, |d| d.as_secs());
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let kind = s.kind;
        let Some(target) = s.via.as_ref().map(|v| v.addr) else {
            return;
        };
        for (seq, payload) in again {
            let len = payload.len() + MAX_OVERHEAD;
            let action = DatagramAction::Send {
                session: id,
                kind: socket_kind(kind, true),
                iface: from,
                dst: target,
                len,
                redundant: true,
            };
            if self.redundant_copies(now, id, action, target, (unix, &key), (seq, &payload)) > 0 {
                self.counters.suspect_resends += 1;
            }
        }
    }

    /// No interface can carry a datagram to `remote`: dropped, and the host gets an error
    /// quoting `original` (empty: none).
    fn no_interface(&mut self, remote: SocketAddr, host: SocketAddr, original: &[u8]) {
        self.drop(DropReason::NoInterface);
        if !original.is_empty() {
            self.queue_unreachable(remote.ip(), host.ip(), original);
        }
    }

    /// A UDP payload the socket of `session` received: to the host.
    /// `iface`: the interface of the socket it came on (`None`: the session's own).
    pub(super) fn datagram_down(
        &mut self,
        now: Instant,
        session: SessionId,
        iface: Option<IfaceId>,
        payload: &[u8],
    ) {
        let (relayed, on_path, arrived) = self.sessions.get_mut(session).map_or((false, true, None), |s| {
            (
                s.via.is_some(),
                iface.is_none_or(|i| i == s.iface),
                Some(iface.unwrap_or(s.iface)),
            )
        });
        let payload = if relayed {
            let len = payload.len();
            match self.relay_down(now, session, payload, on_path) {
                Relayed::Nothing(true) => {
                    // A relay ack: the liveness's own cost (counted on a backup interface).
                    if let Some(i) = arrived {
                        self.ifaces.heard(i, now);
                        if self.ifaces.is_backup(i) {
                            self.count_overhead(i, len);
                        }
                    }
                    return;
                }
                Relayed::Data(p) => p,
                Relayed::Nothing(_) => return,
            }
        } else {
            payload
        };
        // Verified (relayed) or from the connected destination (direct): the interface carries
        // traffic both ways.
        if let Some(i) = arrived {
            self.ifaces.heard(i, now);
        }
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        if s.kind == DatagramKind::IcmpEcho {
            // Only a relayed echo session's reply comes here (direct ones: `echo_reply`).
            return self.relayed_echo_reply(now, session, payload);
        }
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
    pub(super) fn datagram_refused(&mut self, now: Instant, session: SessionId) {
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        if s.via.is_some() {
            // The converter's port is closed: it is not there.
            return self.relay_fallback(now, session, ConverterFailure::Unreachable);
        }
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
        if s.via.is_some() {
            // Relayed: its replies come through the converter.
            return self.drop(DropReason::NoSession);
        }
        let id = s.id;
        self.echo_to_host(now, id, msg);
    }

    /// The echo reply `msg` (an ICMP message, from the destination's address; the identifier
    /// the converter's) of relayed echo session `id`, opened by `relay_down`.
    fn relayed_echo_reply(&mut self, now: Instant, id: SessionId, msg: &[u8]) {
        let Some(s) = self.sessions.get_mut(id) else {
            return self.drop(DropReason::NoSession);
        };
        let (from, to) = (s.remote.ip(), s.host.ip());
        // The converter's ping socket hands over echo replies only; checked all the same, as
        // anything the host gets (its checksum is redone for the host's identifier below).
        match icmp::parse_echo(from, to, msg, false) {
            Ok(Some(e)) if !e.request => self.echo_to_host(now, id, msg),
            _ => self.drop(DropReason::BadIcmp),
        }
    }

    /// Writes echo reply `msg` of session `id` to the host, with the identifier the host chose
    /// (the sequence number and data as the destination sent them).
    fn echo_to_host(&mut self, now: Instant, id: SessionId, msg: &[u8]) {
        let Some(s) = self.sessions.get_mut(id) else {
            return self.drop(DropReason::NoSession);
        };
        s.last = now;
        s.down.0 += 1;
        s.down.1 += msg.len() as u64;
        let (from, to, host_ident) = (s.remote.ip(), s.host.ip(), s.host.port());
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
            self.move_sessions(now);
        }
    }

    /// Moves UDP/ICMP sessions to the interface now preferred.
    pub(super) fn move_sessions(&mut self, now: Instant) {
        for id in self.sessions.ids() {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            // A relayed session's socket talks to its converter.
            let dst = s.via.as_ref().map_or(s.remote, |v| v.addr);
            let (cur, kind, relayed) = (s.iface, s.kind, s.via.is_some());
            let Some(best) = self.ifaces.choose(dst.ip()) else {
                continue;
            };
            if best != cur {
                let redundant = s.via.as_ref().is_some_and(|v| v.client.is_redundant());
                self.sessions.set_iface(id, best);
                self.counters.session_moves += 1;
                // Its sockets on every path stay when redundant (what the converter sends on the
                // old one still arrives; the next datagram goes first on `best`), else it moves.
                if !redundant {
                    self.push_action(DatagramAction::Move {
                        session: id,
                        kind: socket_kind(kind, relayed),
                        iface: best,
                        dst,
                    });
                }
                self.relay_left(now, id, cur);
            }
        }
    }

    /// Queues an action without payload for the socket thread.
    pub(super) fn push_action(&mut self, action: DatagramAction) {
        if self.datagrams.push(action, 0).is_none() {
            self.drop(DropReason::QueueFull);
        }
    }
}

/// The kind of socket a session's datagrams leave on: through a converter a UDP socket to it,
/// whatever the session carries.
fn socket_kind(kind: DatagramKind, relayed: bool) -> DatagramKind {
    if relayed { DatagramKind::Udp } else { kind }
}
