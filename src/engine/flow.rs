//! One relayed TCP flow (the relay itself; the flow table keeps its ids, ports and timers): the host-side connection (passive, answering the host's SYN on behalf of
//! the destination) and the [`Upstream`] connection toward the destination, with the relay
//! between them.
//!
//! The host's SYN is answered only once the upstream connection is established, so a refused or
//! unreachable destination reaches the application as it would without mpbond (RST / timeout).
//! The relay moves bytes only as far as the receiving side's send buffer has room, so a slow
//! side closes the other side's receive window (backpressure both ways, bounded buffers).

use std::net::SocketAddr;

use super::upstream::Upstream;
use super::{Dest, Transmit};
use crate::tcp::{self, Event, IsnKey};
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// How a flow ended before its host side existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The destination answered with a reset (connection refused).
    Reset,
    /// The destination never answered.
    TimedOut,
}

/// What servicing a flow produced besides packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Serviced {
    /// The upstream connected and the host's SYN was answered.
    pub established: bool,
    /// The upstream failed before connecting: the host's SYN must be answered with a reset.
    pub refused: Option<Refusal>,
    /// Bytes relayed host → destination.
    pub up: u64,
    /// Bytes relayed destination → host.
    pub down: u64,
}

/// A relayed TCP flow.
#[derive(Debug)]
pub struct TcpFlow {
    /// The host's address (source of its SYN).
    pub host_addr: SocketAddr,
    /// The destination the host asked for.
    pub dst: SocketAddr,
    /// The host-side connection, once the upstream connected.
    pub host: Option<tcp::Connection>,
    /// The host's SYN, kept until the upstream connects.
    pub syn: Option<SegmentHeader>,
    /// Toward the destination.
    pub upstream: Upstream,
    /// The host's FIN was passed on.
    up_closed: bool,
    /// The destination's FIN was passed on.
    host_closed: bool,
    /// Relayed bytes, host → destination.
    pub bytes_up: u64,
    /// Relayed bytes, destination → host.
    pub bytes_down: u64,
}

impl TcpFlow {
    /// A flow for the host SYN `syn` from `host_addr` to `dst`, relayed over `upstream`.
    pub fn new(host_addr: SocketAddr, dst: SocketAddr, syn: SegmentHeader, upstream: Upstream) -> Self {
        TcpFlow {
            host_addr,
            dst,
            host: None,
            syn: Some(syn),
            upstream,
            up_closed: false,
            host_closed: false,
            bytes_up: 0,
            bytes_down: 0,
        }
    }

    /// A segment from the host.
    pub fn handle_host_segment(&mut self, now: Instant, hdr: &SegmentHeader, payload: &[u8]) {
        // Without a host side (the upstream still connects) a retransmitted SYN is ignored: the
        // answer is still pending.
        if let Some(h) = &mut self.host {
            h.handle_segment(now, hdr, payload);
        }
    }

    /// Runs both sides' expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(h) = &mut self.host
            && h.poll_timeout().is_some_and(|t| t <= now)
        {
            h.handle_timeout(now);
        }
        if self.upstream.poll_timeout().is_some_and(|t| t <= now) {
            self.upstream.handle_timeout(now);
        }
    }

    /// The earliest deadline of either side.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let h = self.host.as_ref().and_then(|h| h.poll_timeout());
        let u = self.upstream.poll_timeout();
        match (h, u) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reacts to both sides' events and moves data between them, straight from one side's
    /// receive buffer into the other's send buffer.
    pub fn service(&mut self, now: Instant, host_cfg: &tcp::Config, key: &IsnKey) -> Serviced {
        let mut out = Serviced::default();
        while let Some(ev) = self.upstream.poll_event() {
            match ev {
                Event::Connected => {
                    if let Some(syn) = self.syn.take() {
                        // Answer the host's SYN now that the destination accepted (the engine
                        // plays the destination: RFC 9293 §3.10.7.2 LISTEN processing).
                        match tcp::Connection::accept(now, self.dst, self.host_addr, &syn, *host_cfg, key) {
                            Ok(c) => {
                                self.host = Some(c);
                                out.established = true;
                            }
                            Err(_) => self.upstream.abort(),
                        }
                    }
                }
                Event::Reset | Event::TimedOut => {
                    let why = if ev == Event::Reset {
                        Refusal::Reset
                    } else {
                        Refusal::TimedOut
                    };
                    match &mut self.host {
                        // Not yet answered: the host sees a refused connection.
                        None => {
                            if self.syn.is_some() {
                                out.refused = Some(why);
                            }
                        }
                        Some(h) => h.abort(),
                    }
                }
                Event::Readable | Event::Writable | Event::PeerClosed | Event::Closed => {}
            }
        }
        if let Some(h) = &mut self.host {
            while let Some(ev) = h.poll_event() {
                if matches!(ev, Event::Reset | Event::TimedOut) {
                    self.upstream.abort();
                }
            }
            let up = &mut self.upstream;
            // Host → destination, bounded by the upstream send buffer's room.
            loop {
                let n = h.recv_available().min(up.send_capacity());
                if n == 0 {
                    break;
                }
                // Straight from one buffer into the other (the send side has room for all n).
                let mut sent = 0;
                let got = h.recv_into(n, |s| sent += up.send(s));
                debug_assert_eq!(got, sent);
                out.up += got as u64;
                if got == 0 {
                    break;
                }
            }
            // Destination → host, bounded by the host send buffer's room.
            loop {
                let n = up.recv_available().min(h.send_capacity());
                if n == 0 {
                    break;
                }
                let mut sent = 0;
                let got = up.recv_into(n, &mut |s| sent += h.send(s));
                debug_assert_eq!(got, sent);
                out.down += got as u64;
                if got == 0 {
                    break;
                }
            }
            // RFC 9293 §3.10.4: a FIN from one side becomes a CLOSE (half-close) on the other
            // once every byte before it was passed on.
            if !self.up_closed && h.recv_finished() {
                up.close();
                self.up_closed = true;
            }
            if !self.host_closed && up.recv_finished() {
                h.close();
                self.host_closed = true;
            }
        }
        self.bytes_up += out.up;
        self.bytes_down += out.down;
        out
    }

    /// The next packet of either side.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(h) = &mut self.host
            && let Some(t) = h.poll_transmit(now, buf)
        {
            return Some(Transmit {
                dest: Dest::Tun,
                len: t.len,
                seg_payload: t.seg_payload,
                csum_partial: t.csum_partial,
            });
        }
        self.upstream.poll_transmit(now, buf).map(|(i, t)| Transmit {
            dest: Dest::Iface(i),
            len: t.len,
            seg_payload: t.seg_payload,
            csum_partial: t.csum_partial,
        })
    }

    /// Both sides are gone (or the host side never came and the upstream is gone).
    pub fn is_finished(&self) -> bool {
        self.upstream.is_closed() && self.host.as_ref().is_none_or(|h| h.is_closed())
    }
}
