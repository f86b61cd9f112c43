//! The converter upstream kind (RFC 8803): an MPTCP connection to a Transport Converter
//! (`mpbond server`), which relays the flow to a destination that does not speak MPTCP over
//! plain TCP. The flow then has its primary subflow on Wi-Fi and its backup on cellular to the
//! converter, with every failover behaviour of a direct MPTCP flow.
//!
//! The Convert request ([`client::connect_request`]: the destination and a cookie proving this
//! laptop's key) rides in the MP_CAPABLE SYN as TCP Fast Open data (§4.2: the client "places
//! the destination address and port number of the Server in the payload of the SYN"; RFC 8684
//! Appendix B; `mpbond server` takes SYN data without a TFO cookie), so the converter dials the
//! destination half a round trip after the host's SYN, with no extra round trip. If the
//! converter's SYN-ACK does not take it (the SYN with data was lost and retransmitted without
//! it, or a listener without TFO), it goes again as the stream's first bytes
//! ([`mptcp::Connection::send_in_syn`]). The converter dials the destination and answers
//! with a Convert message before any of the destination's data; only then is the host's SYN
//! answered, so the host sees what it would see directly:
//!
//! - reply `Connected`: [`Event::Connected`], then the destination's bytes;
//! - Error "Connection Reset" or "Destination Unreachable": [`Event::Reset`] (the host gets a
//!   reset, as from a refusing destination); "Network Failure" (the destination did not
//!   answer): [`Event::TimedOut`];
//! - the converter itself failing — no handshake within [`ANSWER_WITHIN`], no reply within
//!   [`REPLY_WITHIN`] of the SYN, a reset or close before its reply, a refusal of this laptop
//!   (key, limits), a reply that is not a Convert message — is a [`Note::ConverterFailed`]:
//!   the engine marks the converter down and dials the destination directly for the same host
//!   SYN, so nothing is lost and nothing hangs.
//!
//! With `early` (the destination accepted through this converter a moment ago,
//! [`crate::engine::converters`]), the host is answered ([`Event::Connected`]) as soon as the
//! converter's handshake completes, and its bytes follow the request at once; the reply is
//! still read and checked before any of the destination's bytes reach the host. A refusal or a
//! converter failure then resets the host's connection ([`Event::Reset`]; the converter is still
//! marked down on a failure).
//!
//! §6.2.8: "Upon reception of an Error TLV, a Client MUST reset the associated connection": the
//! connection to the converter is aborted on every Error and on a malformed reply.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::mptcp::MptcpUpstream;
use super::{Dial, Note, SubflowView, UpstreamConn};
use crate::convert::client::{self, Reply};
use crate::convert::msg::ErrorCode;
use crate::convert::tcpopt;
use crate::engine::IfaceId;
use crate::engine::converters::ConverterFailure;
use crate::mptcp::crypto::Key;
use crate::mptcp::{self, LocalPath, MptcpConfig};
use crate::tcp::Event;
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// How long the converter has to answer the MPTCP handshake before the flow goes direct.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(1000);
/// How long after its SYN the converter's Convert reply may take: longer than the converter's
/// own dial timeout (`mpbond server`: 10 s by default, then it replies "Network Failure"), so
/// a slow destination is the converter's to report; a converter that accepted the connection
/// but never replies (hung, or another service on its port) must not leave the host's SYN
/// unanswered for ever.
pub const REPLY_WITHIN: Duration = Duration::from_secs(15);
/// Most bytes read while waiting for the reply (a Convert message is at most 1,020 bytes; what
/// follows it is the destination's, kept for the host).
const REPLY_READ_MAX: usize = 4096;
/// The TCP option kind of Multipath TCP (RFC 8684 §3).
const MPTCP_KIND: u8 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The MPTCP handshake with the converter is under way.
    Handshake,
    /// Connected to the converter; its Convert reply has not fully arrived.
    Reply,
    /// The destination accepted: the stream is the destination's.
    Relaying,
    /// Over before relaying (refused by the destination, or the converter failed).
    Failed,
}

/// A flow carried through a converter.
#[derive(Debug)]
pub struct ConvertUpstream {
    inner: MptcpUpstream,
    /// The converter's index in the engine's list, and its address.
    converter: (usize, SocketAddr),
    phase: Phase,
    /// The converter must complete the handshake by then.
    answer_by: Option<Instant>,
    /// Its reply must have arrived by then.
    reply_by: Instant,
    /// What arrived of the reply (and possibly the destination's first bytes after it).
    reply: Vec<u8>,
    /// The destination's bytes that came with the reply, from `early_at` on.
    early: Vec<u8>,
    early_at: usize,
    events: VecDeque<Event>,
    notes: VecDeque<Note>,
    /// The host is answered before the reply (see the module documentation).
    answer_early: bool,
}

impl ConvertUpstream {
    /// Opens the MPTCP connection to the converter (`dial.dst` is the converter's address) with
    /// `request`, the Convert message, in its SYN; `early`: answer the host before the reply.
    pub fn connect(
        dial: &Dial<'_>,
        cfg: MptcpConfig,
        key: Key,
        paths: &[LocalPath],
        converter: usize,
        request: &[u8],
        early: bool,
    ) -> Self {
        let mut inner = MptcpUpstream::connect(dial, cfg, key, paths, true);
        let queued = inner.send_in_syn(request);
        debug_assert_eq!(queued, request.len(), "a Convert request fits any send buffer");
        ConvertUpstream {
            inner,
            converter: (converter, dial.dst),
            phase: Phase::Handshake,
            answer_by: Some(dial.now + ANSWER_WITHIN),
            reply_by: dial.now + REPLY_WITHIN,
            reply: Vec::new(),
            early: Vec::new(),
            early_at: 0,
            events: VecDeque::new(),
            notes: VecDeque::new(),
            answer_early: early,
        }
    }

    /// Reads what arrived of the reply and acts on it once whole.
    fn read_reply(&mut self) {
        let room = REPLY_READ_MAX - self.reply.len();
        let mut buf = [0u8; REPLY_READ_MAX];
        let n = self.inner.recv(&mut buf[..room]);
        self.reply.extend_from_slice(&buf[..n]);
        match client::parse_reply(&self.reply) {
            Reply::Incomplete => {
                if self.reply.len() >= REPLY_READ_MAX || self.inner.recv_finished() {
                    self.converter_failed(ConverterFailure::Malformed);
                }
            }
            Reply::Connected {
                consumed,
                tcp_options,
                ..
            } => {
                // Whether the destination speaks MPTCP is in its SYN+ACK options, which the
                // Extended TCP Header TLV returns (§6.2.6). The Supported TCP Extensions TLV
                // (`supports_mptcp`) lists what the *converter* converts (§6.2.4; §7.5: a
                // converter serving MPTCP "MUST advertise" kind 30, ours always does), so it
                // says nothing about the destination.
                let dst_mptcp = tcpopt::tcp_options(&tcp_options).any(|(k, _)| k == MPTCP_KIND);
                self.early = self.reply.split_off(consumed);
                self.reply = Vec::new();
                self.phase = Phase::Relaying;
                self.notes.push_back(Note::ConverterConnected {
                    supports_mptcp: dst_mptcp,
                    accepted: true,
                });
                if !self.answer_early {
                    self.events.push_back(Event::Connected);
                } else if !self.early_bytes_empty() || self.inner.recv_available() > 0 {
                    self.events.push_back(Event::Readable);
                }
            }
            Reply::Error { code, .. } => {
                let dst_said = match code {
                    ErrorCode::ConnectionReset | ErrorCode::DestinationUnreachable => Some(Event::Reset),
                    ErrorCode::NetworkFailure => Some(Event::TimedOut),
                    _ => None,
                };
                match dst_said {
                    Some(ev) => {
                        // The converter did its part: the destination refused or was silent.
                        self.notes.push_back(Note::ConverterConnected {
                            supports_mptcp: false,
                            accepted: false,
                        });
                        self.phase = Phase::Failed;
                        self.inner.abort();
                        // An answered host can only be reset.
                        self.events
                            .push_back(if self.answer_early { Event::Reset } else { ev });
                    }
                    None => self.converter_failed(ConverterFailure::Refused(code.code())),
                }
            }
            Reply::Malformed => self.converter_failed(ConverterFailure::Malformed),
        }
    }

    /// The converter failed this flow before the destination answered: the engine goes direct.
    fn converter_failed(&mut self, why: ConverterFailure) {
        if self.phase == Phase::Failed {
            return;
        }
        let answered = self.answer_early && self.phase == Phase::Reply;
        self.phase = Phase::Failed;
        self.answer_by = None;
        self.inner.abort();
        self.notes.push_back(Note::ConverterFailed(why));
        if answered {
            // Too late to go direct for this flow: the host's connection is reset.
            self.events.push_back(Event::Reset);
        }
    }

    /// Takes the inner connection's events, keeping back what belongs to the exchange with the
    /// converter.
    fn pump(&mut self) {
        while let Some(ev) = self.inner.poll_event() {
            match (self.phase, ev) {
                (Phase::Relaying, ev) => self.events.push_back(ev),
                (Phase::Handshake, Event::Connected) => {
                    self.phase = Phase::Reply;
                    self.answer_by = None;
                    if self.answer_early {
                        self.events.push_back(Event::Connected);
                    }
                }
                // Early: room for the host's bytes behind the request.
                (Phase::Reply, Event::Writable) if self.answer_early => {
                    self.events.push_back(Event::Writable)
                }
                (Phase::Reply, Event::Readable | Event::PeerClosed) => self.read_reply(),
                (Phase::Handshake | Phase::Reply, Event::Reset) => {
                    self.converter_failed(ConverterFailure::Reset)
                }
                (Phase::Handshake | Phase::Reply, Event::TimedOut | Event::Closed) => {
                    self.converter_failed(ConverterFailure::Unreachable)
                }
                _ => {}
            }
        }
        // Bytes may already wait (the reply and data in one segment, read before the event).
        if self.phase == Phase::Reply && self.inner.recv_available() > 0 {
            self.read_reply();
        }
    }

    fn early_left(&self) -> usize {
        self.early.len() - self.early_at
    }

    fn early_bytes_empty(&self) -> bool {
        self.early_left() == 0
    }

    /// The host's bytes may go to the converter: relaying, or answered early.
    fn may_send(&self) -> bool {
        self.phase == Phase::Relaying || (self.answer_early && self.phase == Phase::Reply)
    }
}

impl UpstreamConn for ConvertUpstream {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn remote(&self) -> SocketAddr {
        self.converter.1
    }
    fn local(&self) -> SocketAddr {
        self.inner.local()
    }
    fn iface(&self) -> IfaceId {
        self.inner.iface()
    }
    fn handle_segment(
        &mut self,
        now: Instant,
        iface: IfaceId,
        tuple: (SocketAddr, SocketAddr),
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        self.inner.handle_segment(now, iface, tuple, hdr, payload)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(IfaceId, crate::tcp::Transmit)> {
        self.inner.poll_transmit(now, buf)
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.pump();
        self.events.pop_front()
    }
    fn poll_note(&mut self) -> Option<Note> {
        self.pump();
        self.notes.pop_front().or_else(|| self.inner.poll_note())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let waiting = matches!(self.phase, Phase::Handshake | Phase::Reply);
        [
            self.inner.poll_timeout(),
            self.answer_by,
            waiting.then_some(self.reply_by),
        ]
        .into_iter()
        .flatten()
        .min()
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.inner.poll_timeout().is_some_and(|t| t <= now) {
            self.inner.handle_timeout(now);
        }
        if self.answer_by.is_some_and(|t| t <= now) {
            self.pump();
            if self.phase == Phase::Handshake {
                self.converter_failed(ConverterFailure::Unreachable);
            }
        }
        if self.reply_by <= now && matches!(self.phase, Phase::Handshake | Phase::Reply) {
            self.pump();
            if self.phase == Phase::Reply {
                self.converter_failed(ConverterFailure::NoReply);
            }
        }
    }
    fn send(&mut self, data: &[u8]) -> usize {
        if self.may_send() { self.inner.send(data) } else { 0 }
    }
    fn send_capacity(&self) -> usize {
        if self.may_send() {
            self.inner.send_capacity()
        } else {
            0
        }
    }
    fn recv_into(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        if self.phase != Phase::Relaying {
            return 0;
        }
        let n = self.early_left().min(max);
        if n > 0 {
            sink(&self.early[self.early_at..self.early_at + n]);
        }
        self.early_at += n;
        if self.early_left() == 0 && !self.early.is_empty() {
            self.early = Vec::new();
            self.early_at = 0;
        }
        n + self.inner.recv_into(max - n, sink)
    }
    fn recv_available(&self) -> usize {
        if self.phase != Phase::Relaying {
            return 0;
        }
        self.early_left() + self.inner.recv_available()
    }
    fn recv_finished(&self) -> bool {
        self.phase == Phase::Relaying && self.early_left() == 0 && self.inner.recv_finished()
    }
    fn close(&mut self) {
        self.inner.close()
    }
    fn abort(&mut self) {
        self.answer_by = None;
        self.inner.abort()
    }
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    fn state_name(&self) -> String {
        match self.phase {
            Phase::Handshake | Phase::Relaying => self.inner.state_name(),
            Phase::Reply => "ConvertReply".into(),
            Phase::Failed => "ConvertFailed".into(),
        }
    }
    fn srtt_us(&self) -> u64 {
        self.inner.srtt_us()
    }
    fn subflows(&self) -> Vec<SubflowView> {
        self.inner.subflows()
    }
    fn mptcp(&mut self) -> Option<&mut mptcp::Connection> {
        self.inner.mptcp()
    }
    fn converter(&self) -> Option<(usize, SocketAddr)> {
        Some(self.converter)
    }
}
