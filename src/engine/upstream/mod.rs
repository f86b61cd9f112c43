//! The connection toward the original destination that a host flow is relayed to: one type per
//! upstream kind, each in its own file, behind one constructor and one dispatcher (STYLE.md
//! point 15, like quinn's `Endpoint` routing to its `Connection`s).
//!
//! - [`tcp::TcpUpstream`]: plain TCP on one interface, used when MPTCP is disabled.
//! - [`mptcp::MptcpUpstream`]: the normal case, an MPTCP connection (RFC 8684) whose subflows run
//!   over the physical interfaces, which falls back to regular TCP by itself when the
//!   destination or the path does not speak MPTCP (§3.7).
//! - [`convert::ConvertUpstream`]: an MPTCP connection to an RFC 8803 Transport Converter that
//!   relays the flow to a destination without MPTCP.
//!
//! Every kind implements [`UpstreamConn`]: the data-level calls (`send`/`recv`/`close`/`abort`),
//! connection-level events expressed as [`Event`], `handle_segment` for a segment that
//! arrived on an interface, `poll_transmit` saying which interface a packet leaves by, and what
//! `status` shows. What only a multipath kind has to say (subflows coming and going, fallback
//! causes, unresponsive paths) is reported as [`Note`]s for the engine's counters and failover
//! records; a kind running an MPTCP connection lends it out through
//! [`UpstreamConn::mptcp`] so the engine can add and remove paths and ports.
//!
//! [`Upstream`] is the enum of the kinds. It dereferences to `dyn UpstreamConn`, so the engine
//! calls `upstream.send(..)` whatever the kind: the dispatch is written once, by the `kinds!`
//! list below, not once per method.
//!
//! # Adding a kind
//!
//! For example the RFC 8803 converter (an MPTCP connection to a converter plus the state of the
//! Convert-message prefix):
//!
//! 1. one new file, `upstream/convert.rs`, with a type that implements [`UpstreamConn`] and a
//!    constructor taking the [`Dial`] (and what else that kind needs, carried in its [`Via`]
//!    variant);
//! 2. one line in the `kinds!` list (`Convert(convert::ConvertUpstream)`), which adds the
//!    [`Upstream`] variant and its dispatch;
//! 3. one [`Via`] variant and its arm in [`Upstream::connect`];
//! 4. where the engine admits a new flow (`Engine::admit` in `engine/admission.rs`), the arm
//!    that picks that `Via` from the settings (today: `cfg.mptcp` set or not).
//!
//! Nothing else in the engine names a kind: the relay, the flow table, status and the
//! interface changes go through [`UpstreamConn`] (a kind that runs an MPTCP connection returns
//! it from [`UpstreamConn::mptcp`] and so follows interface changes and gets ports).

/// The calls a kind whose `conn` field offers them (as `tcp::Connection` and
/// `mptcp::Connection` both do) passes straight on: timers and the data-level calls. Expanded
/// inside an `impl UpstreamConn for …` block.
macro_rules! delegate_to_conn {
    () => {
        fn remote(&self) -> SocketAddr {
            self.conn.remote()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.conn.poll_timeout()
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.conn.handle_timeout(now)
        }
        fn send(&mut self, data: &[u8]) -> usize {
            self.conn.send(data)
        }
        fn send_capacity(&self) -> usize {
            self.conn.send_capacity()
        }
        fn recv_into(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
            self.conn.recv_into(max, sink)
        }
        fn recv_available(&self) -> usize {
            self.conn.recv_available()
        }
        fn recv_finished(&self) -> bool {
            self.conn.recv_finished()
        }
        fn close(&mut self) {
            self.conn.close()
        }
        fn abort(&mut self) {
            self.conn.abort()
        }
        fn is_closed(&self) -> bool {
            self.conn.is_closed()
        }
    };
}

mod convert;
mod mptcp;
mod tcp;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub use self::convert::{ANSWER_WITHIN, ConvertUpstream, REPLY_WITHIN};
pub use self::mptcp::MptcpUpstream;
pub use self::tcp::TcpUpstream;
use super::IfaceId;
use crate::mptcp::crypto::Key;
use crate::mptcp::{FallbackCause, LocalPath, MptcpConfig};
use crate::tcp::{Event, IsnKey};
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// Something a (multipath) upstream connection reported that the engine records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Connected; `mptcp` false: as regular TCP.
    Connected {
        /// MPTCP in use.
        mptcp: bool,
    },
    /// The connection runs as regular TCP from now on, and why.
    Fallback(FallbackCause),
    /// A subflow on `iface` can carry data.
    SubflowUp {
        /// Its interface.
        iface: IfaceId,
        /// It is a backup subflow.
        backup: bool,
    },
    /// A subflow on `iface` is gone.
    SubflowDown {
        /// Its interface.
        iface: IfaceId,
    },
    /// A subflow toward `remote`, another address of the server, needs a local port.
    PortNeeded {
        /// The server's other address.
        remote: SocketAddr,
    },
    /// The path over `iface` stopped answering and its subflow was failed over.
    Unresponsive {
        /// The interface.
        iface: IfaceId,
        /// How long it had been silent.
        silent_for: Duration,
        /// How long its unanswered probe had been out.
        probe_out_for: Duration,
    },
    /// The converter relayed the flow's request and answered (the destination accepted, or
    /// refused or was silent: either way the converter works).
    ConverterConnected {
        /// The converter said the destination speaks MPTCP: the destination's SYN+ACK options,
        /// returned in the Extended TCP Header TLV (RFC 8803 §6.2.6), carried kind 30 (new
        /// flows to it go direct).
        supports_mptcp: bool,
        /// The destination accepted the connection.
        accepted: bool,
    },
    /// The converter failed the flow before the destination answered: it is marked down and
    /// the flow goes direct.
    ConverterFailed(crate::engine::converters::ConverterFailure),
}

/// A subflow as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubflowView {
    /// Interface id.
    pub iface: IfaceId,
    /// Local address.
    pub local: SocketAddr,
    /// TCP state.
    pub state: String,
    /// Carrying data now.
    pub usable: bool,
    /// Backup priority.
    pub backup: bool,
    /// Smoothed RTT in µs (0: not measured).
    pub srtt_us: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
}

/// What every upstream kind offers the engine (see the module documentation).
pub trait UpstreamConn: std::fmt::Debug {
    /// `"tcp"` or `"mptcp"` (an MPTCP connection that fell back says `"tcp"`), for status.
    fn kind(&self) -> &'static str;
    /// The destination.
    fn remote(&self) -> SocketAddr;
    /// Local address of the subflow carrying the data (the first one if none does).
    fn local(&self) -> SocketAddr;
    /// The interface carrying (most of) the traffic now.
    fn iface(&self) -> IfaceId;
    /// A segment for this connection arrived on `iface`, from `remote` to `local`.
    fn handle_segment(
        &mut self,
        now: Instant,
        iface: IfaceId,
        tuple: (SocketAddr, SocketAddr),
        hdr: &SegmentHeader,
        payload: &[u8],
    );
    /// The next packet to send and the interface it leaves by.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(IfaceId, crate::tcp::Transmit)>;
    /// The next connection-level event.
    fn poll_event(&mut self) -> Option<Event>;
    /// The next note for the engine (after [`poll_event`](Self::poll_event) drained).
    fn poll_note(&mut self) -> Option<Note>;
    /// The earliest deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs expired timers.
    fn handle_timeout(&mut self, now: Instant);
    /// Queues bytes; returns how many were taken.
    fn send(&mut self, data: &[u8]) -> usize;
    /// Room in the send buffer.
    fn send_capacity(&self) -> usize;
    /// Reads in-order bytes.
    fn recv(&mut self, out: &mut [u8]) -> usize {
        self.recv_into(out.len(), &mut crate::tcp::slice_sink(out))
    }
    /// Hands up to `max` in-order bytes to `sink`, slice after slice, straight from the receive
    /// buffers; returns the count.
    fn recv_into(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> usize;
    /// Bytes ready to read.
    fn recv_available(&self) -> usize;
    /// The destination closed its side and everything was read.
    fn recv_finished(&self) -> bool;
    /// Half-close after the queued data.
    fn close(&mut self);
    /// Reset.
    fn abort(&mut self);
    /// Nothing left of the connection (closed, reset or timed out).
    fn is_closed(&self) -> bool;
    /// State name for status.
    fn state_name(&self) -> String;
    /// Smoothed RTT in microseconds (0 if not measured).
    fn srtt_us(&self) -> u64;
    /// The subflows, for status (one for plain TCP).
    fn subflows(&self) -> Vec<SubflowView>;
    /// The MPTCP connection the kind runs, if it runs one (paths and ports are added to it).
    fn mptcp(&mut self) -> Option<&mut crate::mptcp::Connection> {
        None
    }
    /// The converter carrying the flow (its index in the engine's list, its address), if one
    /// does; [`remote`](Self::remote) is then the converter, not the destination.
    fn converter(&self) -> Option<(usize, SocketAddr)> {
        None
    }
}

/// Where and how a new upstream connection starts, whatever its kind.
#[derive(Debug)]
pub struct Dial<'a> {
    /// Now.
    pub now: Instant,
    /// The destination the host asked for.
    pub dst: SocketAddr,
    /// The interface it starts on.
    pub iface: IfaceId,
    /// That interface's address and the local port allocated for the flow.
    pub local: SocketAddr,
    /// TCP settings of the (first) subflow.
    pub tcp: crate::tcp::Config,
    /// Key of RFC 6528 initial sequence numbers.
    pub isn_key: &'a IsnKey,
}

/// Which kind a new upstream connection is, with what only that kind needs.
#[derive(Debug)]
pub enum Via {
    /// Plain TCP from [`Dial::local`].
    Tcp,
    /// MPTCP over `paths`.
    Mptcp {
        /// MPTCP settings (their `tcp` field is replaced by [`Dial::tcp`]).
        cfg: MptcpConfig,
        /// The connection's local key (its token is reserved in the flow table).
        key: Key,
        /// The local paths it may use now.
        paths: Vec<LocalPath>,
        /// Offer MP_CAPABLE (false on a network known to be hostile to MPTCP: plain TCP).
        offer: bool,
    },
    /// MPTCP to a converter ([`Dial::dst`] is the converter) carrying the flow to its
    /// destination.
    Convert {
        /// MPTCP settings (their `tcp` field is replaced by [`Dial::tcp`]).
        cfg: MptcpConfig,
        /// The connection's local key.
        key: Key,
        /// The local paths it may use now.
        paths: Vec<LocalPath>,
        /// The converter's index in the engine's list.
        converter: usize,
        /// The Convert request, the first bytes of the stream.
        request: Vec<u8>,
        /// Answer the host once the converter's handshake completes, before its reply (the
        /// destination accepted through this converter a moment ago; see
        /// [`crate::engine::converters`]).
        early: bool,
    },
}

/// Declares the kinds once: the [`Upstream`] enum and its dispatch to [`UpstreamConn`].
macro_rules! kinds {
    ($($(#[$m:meta])* $v:ident($t:ty),)*) => {
        /// The connection toward the destination, of one of the kinds.
        #[derive(Debug)]
        pub enum Upstream { $($(#[$m])* $v(Box<$t>),)* }

        impl Deref for Upstream {
            type Target = dyn UpstreamConn;
            fn deref(&self) -> &Self::Target {
                match self { $(Upstream::$v(c) => &**c,)* }
            }
        }

        impl DerefMut for Upstream {
            fn deref_mut(&mut self) -> &mut Self::Target {
                match self { $(Upstream::$v(c) => &mut **c,)* }
            }
        }
    };
}

kinds! {
    /// Plain TCP on one interface.
    Tcp(TcpUpstream),
    /// MPTCP (or its regular-TCP fallback).
    Mptcp(MptcpUpstream),
    /// MPTCP to an RFC 8803 converter that relays to the destination.
    Convert(ConvertUpstream),
}

impl Upstream {
    /// Opens a new upstream connection of the kind `via` says.
    pub fn connect(dial: &Dial<'_>, via: Via) -> Upstream {
        match via {
            Via::Tcp => Upstream::Tcp(Box::new(TcpUpstream::connect(dial))),
            Via::Mptcp {
                cfg,
                key,
                paths,
                offer,
            } => Upstream::Mptcp(Box::new(MptcpUpstream::connect(dial, cfg, key, &paths, offer))),
            Via::Convert {
                cfg,
                key,
                paths,
                converter,
                request,
                early,
            } => Upstream::Convert(Box::new(ConvertUpstream::connect(
                dial, cfg, key, &paths, converter, &request, early,
            ))),
        }
    }
}

/// Smoothed RTT in µs, 0 when not measured.
fn srtt_us(srtt: Option<Duration>) -> u64 {
    srtt.map_or(0, |d| d.as_micros() as u64)
}
