//! UDP and ICMP echo sessions through a converter (`mpbond server`'s datagram relay,
//! `convert::dgram`): the host's datagrams (echo: its whole echo request) are sealed under the
//! client key and sent, as UDP, to the converter over the interface the engine prefers for the
//! converter's address; the converter sends them on from one socket per session (echo: a ping
//! socket), so the destination sees the same address (and port) whichever path the laptop uses.
//! A failover only moves the session's socket here (the converter follows the newest
//! authenticated datagram). An echo reply comes back with the converter's identifier and the
//! host's sequence number; the host gets it with its own identifier (`datagram.rs`).
//!
//! Policy:
//! - LAN and other special destinations never go via a converter (`converters::is_local`), nor
//!   a destination a converter refused lately;
//! - a converter marked down (by TCP flows or by the datagram relay) is not used: direct, as
//!   without a converter;
//! - a session whose converter never answers ([`Health::ConverterSilent`]), refuses it, or whose
//!   socket gets "port unreachable" from it goes direct from then on (the converter is marked
//!   down for new sessions);
//! - a session the converter answered before that is silent on its path despite ack requests
//!   ([`Health::PathSilent`]) marks that interface unresponsive: every session (and new TCP
//!   subflow choice) moves to the other one; silent there too (before any answer) with nothing
//!   heard from the converter on any path for [`CONVERTER_GONE`], the converter is taken for
//!   gone and the session goes direct. A session that cannot move (the other path held too,
//!   or none) keeps trying on its path, watched afresh.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use super::converters::ConverterFailure;
use super::{DatagramAction, DatagramKind, DropReason, Engine, SessionId};
use crate::convert::dgram::{CONVERTER_GONE, ClientSession, Down, DownError, Health, RelayId};
use crate::time::Instant;

/// A session's converter, and the laptop's state of its relay session.
#[derive(Debug, Clone)]
pub struct Via {
    /// Index of the converter in the engine's list.
    pub idx: usize,
    /// Its address (UDP, the same port as its TCP listener).
    pub addr: SocketAddr,
    /// The relay session.
    pub client: ClientSession,
    /// Paths found silent since the converter last answered: a second one, with the converter
    /// unheard for [`CONVERTER_GONE`], means the converter (or the way to it), not a path, is
    /// gone.
    pub silent_paths: u8,
}

/// What the datagram from a converter means for the engine.
pub(super) enum Relayed<'a> {
    /// A destination's payload for the host.
    Data(&'a [u8]),
    /// Nothing for the host (true: an ack; else a refusal handled here, a copy, a drop).
    Nothing(bool),
}

impl Engine {
    /// The converter a new UDP or echo session `id` to `remote` goes through, if any.
    pub(super) fn relay_choose(
        &mut self,
        now: Instant,
        id: SessionId,
        kind: DatagramKind,
        remote: SocketAddr,
    ) -> Option<Via> {
        let key = self.cfg.converter.as_ref()?.key.clone();
        self.unix_now(now)?;
        let (idx, addr) = self.converters.choose_datagram(now, remote)?;
        // A random-looking, unique id: the daemon's secret ISN key (fresh at each start) and
        // the session's own number.
        let mut h = Sha256::new();
        h.update(self.cfg.isn_key.0);
        h.update(b"mpbond relay session");
        h.update(key.id().0);
        h.update(id.0.to_be_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        let rid = RelayId(u64::from_be_bytes(b));
        let (mut client, redundant) = match kind {
            DatagramKind::Udp => {
                self.counters.udp_via_converter += 1;
                let r = self.cfg.redundancy.flow(remote.port());
                (ClientSession::new(rid, remote, now), r)
            }
            DatagramKind::IcmpEcho => {
                // An echo "port" is the host's identifier: redundant in redundant mode only.
                self.counters.icmp_via_converter += 1;
                (
                    ClientSession::new_echo(rid, remote.ip(), now),
                    self.cfg.redundancy.all,
                )
            }
        };
        client.set_copy_when_suspect(self.cfg.redundancy.while_suspect);
        if redundant {
            // A copy of each datagram on every path; the converter answers on each.
            client.set_redundant(true);
            self.counters.udp_redundant += 1;
        }
        Some(Via {
            idx,
            addr,
            client,
            silent_paths: 0,
        })
    }

    /// Before a send on a session via a converter: a converter that never answered sends the
    /// session direct (true: it went direct), a silent path marks its interface unresponsive.
    pub(super) fn relay_health(&mut self, now: Instant, id: SessionId) -> bool {
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        let Some(via) = &mut s.via else {
            return false;
        };
        match via.client.health(now) {
            Health::Fine => false,
            Health::ConverterSilent => {
                self.relay_fallback(now, id, ConverterFailure::Unreachable);
                true
            }
            Health::PathSilent
                if via.silent_paths >= 1
                    && via.client.unheard_for(now).is_some_and(|d| d >= CONVERTER_GONE) =>
            {
                // Silent on the path it moved to as well, and not a word on any path for
                // longer than any path's round trip: the converter is not there.
                self.relay_fallback(now, id, ConverterFailure::Unreachable);
                true
            }
            Health::PathSilent => {
                via.silent_paths = via.silent_paths.saturating_add(1);
                let iface = s.iface;
                tracing::debug!(
                    session = id.0,
                    iface,
                    srtt = ?via.client.srtt(),
                    silent_after = ?via.client.silent_after(),
                    "relay session silent on its path"
                );
                self.counters.unresponsive += 1;
                if self.ifaces.mark_unresponsive(iface, now) {
                    tracing::info!(iface, "interface unresponsive (datagram relay)");
                    self.move_sessions(now);
                }
                if let Some(s) = self.sessions.get_mut(id)
                    && s.iface == iface
                    && let Some(v) = &mut s.via
                {
                    // Still here (held already, or no other path can take it): this silence
                    // is counted once; keep trying here, watched afresh.
                    v.client.watch_again();
                }
                false
            }
        }
    }

    /// Session `id` leaves its converter (`why`) and goes direct; its socket is reopened toward
    /// the destination.
    pub(super) fn relay_fallback(&mut self, now: Instant, id: SessionId, why: ConverterFailure) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let Some(via) = s.via.take() else { return };
        let (remote, kind) = (s.remote, s.kind);
        self.counters.relay_fallbacks += 1;
        match why {
            ConverterFailure::Refused(_) => self.converters.prohibit(now, remote),
            _ => self.converters.failed(now, via.idx, why, remote),
        }
        tracing::info!(session = id.0, converter = %via.addr, %remote, ?why, ?kind, "session goes direct");
        let Some(best) = self.ifaces.choose(remote.ip()) else {
            return;
        };
        self.sessions.set_iface(id, best);
        match kind {
            DatagramKind::Udp => self.push_action(DatagramAction::Move {
                session: id,
                kind,
                iface: best,
                dst: remote,
            }),
            // Direct echo goes through the interface's ICMP socket: the one to the converter
            // closes.
            DatagramKind::IcmpEcho => self.push_action(DatagramAction::Close { session: id }),
        }
    }

    /// A datagram the socket of relayed session `id` received from its converter.
    /// `on_path`: it came on the session's path (else on one a copy went on).
    pub(super) fn relay_down<'a>(
        &mut self,
        now: Instant,
        id: SessionId,
        bytes: &'a [u8],
        on_path: bool,
    ) -> Relayed<'a> {
        let Some(key) = self.cfg.converter.as_ref().map(|c| c.key.clone()) else {
            return Relayed::Nothing(false);
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return Relayed::Nothing(false);
        };
        // The source the converter names: the destination (echo: its address, port 0).
        let remote = match s.kind {
            DatagramKind::Udp => s.remote,
            DatagramKind::IcmpEcho => SocketAddr::new(s.remote.ip(), 0),
        };
        let Some(via) = &mut s.via else {
            return Relayed::Nothing(false);
        };
        let idx = via.idx;
        match via.client.open_down_on(now, &key, bytes, on_path) {
            Ok(Down::Data { from, payload }) if from == remote => {
                via.silent_paths = 0;
                self.converters.succeeded(now, idx);
                Relayed::Data(payload)
            }
            Ok(Down::Data { .. }) => {
                self.drop(DropReason::BadRelayDatagram);
                Relayed::Nothing(false)
            }
            Ok(Down::Ack) => {
                via.silent_paths = 0;
                self.converters.succeeded(now, idx);
                Relayed::Nothing(true)
            }
            Ok(Down::Refused(why)) => {
                tracing::info!(session = id.0, %remote, reason = why.name(), "the converter refuses this UDP session");
                self.relay_fallback(now, id, ConverterFailure::Refused(why.code()));
                Relayed::Nothing(false)
            }
            Err(DownError::Copy) => {
                // The other path's copy: the path it came on works, nothing for the host.
                via.silent_paths = 0;
                self.counters.relay_duplicates += 1;
                Relayed::Nothing(false)
            }
            Err(e) => {
                tracing::debug!(session = id.0, "relay datagram dropped: {e}");
                self.drop(DropReason::BadRelayDatagram);
                Relayed::Nothing(false)
            }
        }
    }
}
