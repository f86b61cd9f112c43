//! A sans-IO TCP (RFC 9293) used both to terminate the host's connections arriving on the TUN
//! (passive open: [`Connection::accept`]) and to run MPTCP subflows (active open:
//! [`Connection::connect`], with an [`OptionHook`] through which the MPTCP layer adds and reads
//! its options).
//!
//! No sockets, threads or clock: segments go in through [`Connection::handle_segment`], come out
//! of [`Connection::poll_transmit`] as whole IP packets written into the caller's buffer; timers
//! through [`Connection::poll_timeout`] / [`Connection::handle_timeout`]; events through
//! [`Connection::poll_event`].
//!
//! Implemented: RFC 9293 state machine (simultaneous open/close, half-close, TIME-WAIT), RFC 5961
//! (RST/SYN/ACK validation, rate-limited challenge ACKs), RFC 6528 ISNs, RFC 7323 (window scale,
//! timestamps, PAWS), RFC 2018 SACK, RFC 6675 SACK loss recovery, RFC 6582 NewReno, RFC 6298 RTO,
//! RFC 9438 CUBIC (cwnd never grows past the flight, hence the receive window, §4.6), RFC 6937
//! proportional rate reduction in SACK recovery, delayed ACK, zero-window probing, keep-alive,
//! optional pacing, otherwise at most IW segments per ACK with the excess paced (RFC 6582 §6),
//! cwnd restart after idle (RFC 5681 §4.1), optionally data on the SYN of an active open (RFC 7413
//! client without a cookie, [`Config::fast_open`]). Not implemented: urgent data (URG is ignored,
//! RFC 6093 advises against its use), accepting data on a received SYN (TFO server), ECN, D-SACK,
//! RFC 6675's rescue retransmission (a MAY).
//!
//! Memory: `size_of::<Connection>()` is about 1 KiB (1,032 bytes on x86-64) and buffers are
//! allocated on demand and freed when they drain, so an idle established connection holds no heap
//! memory.
//!
//! Files, top-down: `conn.rs` the [`Connection`] type (construction, SYN options, application
//! API, events); `input.rs` segment arrival, ACK processing and the timers; `output.rs`
//! `poll_transmit` and the segment builder. The connection's state is split in three with their
//! own invariants: `send.rs` (SND.UNA/NXT/WND, send buffer, RTT timing, probes, pacer),
//! `recv.rs` (RCV.NXT, advertised window, reassembly, TS.Recent, immediate/delayed ACKs) and
//! `recovery.rs` (cwnd and its controller, SACK scoreboard, fast/SACK/RTO recovery, PRR). Below
//! them: [`cc`] (window growth and reduction), [`sack`] (scoreboard), [`reassembly`] and
//! [`ranges`] (receive buffer), [`send_buf`], [`rtt`], [`timer`], [`seq`], [`isn`].

pub mod cc;
mod conn;
mod input;
pub mod isn;
mod output;
pub mod ranges;
pub mod reassembly;
mod recovery;
mod recv;
pub mod rtt;
pub mod sack;
mod send;
pub mod send_buf;
pub mod seq;
pub mod timer;

use std::net::SocketAddr;
use std::time::Duration;

pub use cc::CcAlgorithm;
pub use conn::{AcceptError, Connection};
pub use isn::IsnKey;
pub use seq::SeqNum;

use crate::time::Instant;
use crate::wire::tcp::{SegmentFields, SegmentHeader, TcpFlags};
use crate::wire::{self, PacketError};

/// Keep-alive settings, RFC 9293 §3.8.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe (RFC 9293 §3.8.4: MUST default to no less than two hours).
    pub idle: Duration,
    /// Interval between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is declared dead.
    pub probes: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            probes: 9,
        }
    }
}

/// Per-connection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The MSS we advertise and the largest payload we send: path MTU minus 40 (IPv4) or 60
    /// (IPv6) bytes of fixed headers; options are subtracted per segment. Default 1460.
    pub mss: u16,
    /// Send buffer cap in bytes (backpressure beyond it).
    pub send_buffer: usize,
    /// The largest IP packet new data may go out in: a super-segment of several MSS-sized
    /// segments behind one copy of the headers, which the interface (the kernel's GSO, or
    /// [`crate::wire::gso`] in software) cuts into segments of [`Transmit::seg_payload`] bytes,
    /// each with the same headers and options. At most 65,535; up to one MSS (0, the default):
    /// one segment per packet. Retransmissions are one segment each.
    pub super_segments: usize,
    /// Data segments go out with a partial checksum (the pseudo-header sum, see
    /// [`Transmit::csum_partial`]) for the device to complete: a TUN with the vnet header, where
    /// the host's stack then neither needs nor verifies one. Pure ACKs keep a full checksum.
    pub partial_checksums: bool,
    /// Receive buffer cap in bytes: the largest window we advertise.
    pub recv_buffer: usize,
    /// Offer window scaling (RFC 7323 §2).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323 §3).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Congestion control algorithm.
    pub congestion: CcAlgorithm,
    /// Initial window in segments (RFC 6928: 10).
    pub initial_window: u32,
    /// RTO before any measurement (RFC 6298 §2.1: 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the RTO.
    pub min_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5: at least 60 s).
    pub max_rto: Duration,
    /// Delayed-ACK timeout (RFC 9293 §3.8.6.3: MUST be less than 0.5 s); zero acks every segment.
    pub delayed_ack: Duration,
    /// TIME-WAIT duration (2*MSL in RFC 9293; short here since our 4-tuples are not reused
    /// quickly, and configurable).
    pub time_wait: Duration,
    /// SYN (or SYN-ACK) retransmissions before giving up.
    pub syn_retries: u32,
    /// Consecutive data retransmission timeouts before giving up (RFC 9293 §3.8.3 R2).
    pub data_retries: u32,
    /// Keep-alive, off by default (RFC 9293 §3.8.4: MUST default to off).
    pub keepalive: Option<Keepalive>,
    /// Nagle's algorithm (RFC 9293 §3.7.4); off by default for a relay.
    pub nagle: bool,
    /// Pace data segments over the RTT.
    pub pacing: bool,
    /// RFC 5961 §7: challenge ACKs per second per connection.
    pub challenge_ack_limit: u32,
    /// RFC 6675 DupThresh.
    pub dupthresh: u32,
    /// TCP Fast Open, client side (RFC 7413 §4.2.2), off by default: the first SYN of
    /// [`Connection::connect`] carries the data [`Connection::send`] queued before the first
    /// `poll_transmit`, up to one MSS (the peer's is not known yet: 536 bytes for IPv4, 1220 for
    /// IPv6, options included). No Fast Open cookie option is sent: this is for a server that takes
    /// SYN data without one (Linux with `TFO_SERVER_COOKIE_NOT_REQD`, as an RFC 8803 converter
    /// runs). Data the SYN-ACK does not acknowledge is sent again after the handshake.
    pub fast_open: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            send_buffer: 4 << 20,
            super_segments: 0,
            partial_checksums: false,
            recv_buffer: 4 << 20,
            window_scaling: true,
            timestamps: true,
            sack: true,
            congestion: CcAlgorithm::Cubic,
            initial_window: 10,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            time_wait: Duration::from_secs(2),
            syn_retries: 6,
            data_retries: 15,
            keepalive: None,
            nagle: false,
            pacing: false,
            challenge_ack_limit: 10,
            dupthresh: 3,
            fast_open: false,
        }
    }
}

/// RFC 9293 §3.3.2 connection states (LISTEN is the engine's flow table, not a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection (initial for a fresh active open before the SYN leaves, and final).
    Closed,
    /// SYN sent, waiting for SYN-ACK.
    SynSent,
    /// SYN received, SYN-ACK sent, waiting for the ACK.
    SynReceived,
    /// Data flows both ways.
    Established,
    /// We closed; our FIN not yet acknowledged.
    FinWait1,
    /// Our FIN acknowledged; waiting for the peer's.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed simultaneously; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both FINs acknowledged; lingering for retransmitted FINs.
    TimeWait,
}

impl State {
    /// True once the three-way handshake completed (RFC 9293 "synchronized" states).
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::SynSent | State::SynReceived)
    }
}

/// What happened, for the application (polled with [`Connection::poll_event`]).
///
/// Exactly one terminal event is reported: [`Event::Closed`], [`Event::Reset`] or
/// [`Event::TimedOut`] (none after [`Connection::abort`], which the caller initiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// New in-order data can be read with [`Connection::recv`].
    Readable,
    /// Send-buffer space freed after [`Connection::send`] had refused bytes.
    Writable,
    /// The peer sent FIN: no more data will arrive (we may still send: half-close).
    PeerClosed,
    /// The connection closed gracefully (both FINs acknowledged).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// Retransmissions or keep-alive probes went unanswered (RFC 9293 §3.8.3 R2).
    TimedOut,
}

/// A segment written by [`Connection::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written at the start of the caller's buffer (a whole IPv4/IPv6 packet).
    pub len: usize,
    /// Sequence number of the segment.
    pub seq: SeqNum,
    /// Payload bytes carried.
    pub payload_len: usize,
    /// Flags.
    pub flags: TcpFlags,
    /// True if the segment repeats bytes sent before.
    pub retransmission: bool,
    /// A super-segment: the payload bytes of each segment it is to be cut into (every one but
    /// the last carries exactly this many); 0 when the packet is one segment.
    pub seg_payload: usize,
    /// The TCP checksum field holds only the pseudo-header sum: whoever cuts or sends the packet
    /// completes it (every super-segment; every data segment with
    /// [`Config::partial_checksums`]).
    pub csum_partial: bool,
}

/// What the connection is about to send, given to [`OptionHook::reserve`] before the payload is
/// sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Flags the segment will carry.
    pub flags: TcpFlags,
    /// True if it will carry payload.
    pub has_payload: bool,
    /// True if it repeats bytes sent before.
    pub retransmission: bool,
}

/// A segment being written, given to [`OptionHook::write_options`] once sequence number, flags and
/// payload length are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutSegment {
    /// Sequence number (of the SYN, or of the first payload byte).
    pub seq: SeqNum,
    /// Acknowledgment number (meaningful if ACK is set).
    pub ack: SeqNum,
    /// Flags.
    pub flags: TcpFlags,
    /// Payload length: the payload occupies `seq .. seq + payload_len` (plus 1 if SYN is set).
    /// 0 for a keep-alive probe (its one garbage octet is no stream data).
    pub payload_len: usize,
    /// True if it repeats bytes sent before.
    pub retransmission: bool,
    /// A keep-alive or zero-window probe (SEG.SEQ = SND.UNA - 1): out of the peer's window on
    /// purpose, so the peer answers it with an ACK and drops it unprocessed (RFC 9293
    /// §3.10.7.4: "If an incoming segment is not acceptable, an acknowledgment should be sent
    /// in reply ... After sending the acknowledgment, drop the unacceptable segment"); no
    /// option the peer must act on can ride on it.
    pub probe: bool,
}

/// An accepted incoming segment, given to [`OptionHook::on_segment`] before its payload is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSegment {
    /// Sequence number of the first payload byte.
    pub seq: SeqNum,
    /// Payload length as received (before trimming to the window).
    pub payload_len: usize,
    /// State when the segment arrived.
    pub state: State,
}

/// The MPTCP layer's access to the options area.
///
/// For every outgoing segment the connection first lays out its own options (MSS, window scale,
/// SACK-permitted and timestamps on SYNs; timestamps and SACK blocks afterwards), then calls
/// [`reserve`](OptionHook::reserve) to learn how many bytes the hook needs. If its own options plus
/// the reservation exceed 40 bytes it drops SACK blocks until they fit (never MSS/WS/SACK-perm/TS).
/// The payload is then sized so that header + options + payload fits the path MSS, and
/// [`write_options`](OptionHook::write_options) is called with the final sequence number and
/// payload length (so a DSS mapping can cover exactly this payload, retransmissions included) and
/// a buffer of exactly `min(reserved, free)` bytes. The hook returns how many it wrote.
///
/// For every incoming segment that passes the acceptability tests (RFC 9293 §3.10.7.4 and PAWS),
/// [`on_segment`](OptionHook::on_segment) is called with the header (its MPTCP options are in
/// `header.options.mptcp`) before the payload enters the receive buffer; the payload then reaches
/// the application through [`Connection::recv`], whose position is [`Connection::recv_seq`].
pub trait OptionHook {
    /// Option bytes to reserve for a segment of this kind (at most 40).
    fn reserve(&mut self, plan: &SegmentPlan) -> usize {
        let _ = plan;
        0
    }
    /// Writes the hook's options for `seg` into `space`; returns the count written (≤ `space.len()`).
    fn write_options(&mut self, seg: &OutSegment, space: &mut [u8]) -> usize {
        let _ = (seg, space);
        0
    }
    /// Sees an accepted incoming segment.
    fn on_segment(&mut self, header: &SegmentHeader, seg: &InSegment) {
        let _ = (header, seg);
    }
    /// Caps the payload of a data segment starting at `seq` (at most `max` octets; the result is
    /// clamped to `1..=max`). MPTCP uses it so that no segment straddles two DSS mappings.
    fn limit_payload(&mut self, seq: SeqNum, max: usize) -> usize {
        let _ = seq;
        max
    }
}

/// The hook that adds nothing (plain TCP).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl OptionHook for NoHook {}

/// Health signals of a connection (the MPTCP scheduler and the handover policy read them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Smoothed RTT (RFC 6298), if measured.
    pub srtt: Option<Duration>,
    /// RTT variation.
    pub rttvar: Duration,
    /// Current retransmission timeout including backoff.
    pub rto: Duration,
    /// Consecutive retransmission timeouts without progress.
    pub consecutive_rtos: u32,
    /// When SND.UNA last advanced (or the connection was created).
    pub last_ack_progress: Instant,
    /// When the last acceptable segment arrived (or the connection was created).
    pub last_recv: Instant,
    /// Bytes sent and not yet acknowledged.
    pub bytes_in_flight: u64,
    /// Congestion window in bytes.
    pub cwnd: u32,
    /// Slow-start threshold in bytes.
    pub ssthresh: u32,
    /// True while in fast recovery or RTO recovery.
    pub in_recovery: bool,
}

/// RFC 9293 §3.10.7.1 (CLOSED state): the reset to send in answer to `hdr` (carrying
/// `payload_len` bytes) that matches no connection; `None` if `hdr` is itself a RST (MUST NOT
/// answer a RST with a RST).
pub fn rst_reply(hdr: &SegmentHeader, payload_len: usize) -> Option<SegmentFields> {
    if hdr.flags.rst() {
        return None;
    }
    Some(if hdr.flags.ack() {
        // "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>".
        SegmentFields {
            seq: hdr.ack,
            flags: TcpFlags::RST,
            ..Default::default()
        }
    } else {
        // "If the ACK bit is off, sequence number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>".
        let len = payload_len as u32 + u32::from(hdr.flags.syn()) + u32::from(hdr.flags.fin());
        SegmentFields {
            seq: SeqNum(0),
            ack: hdr.seq + len,
            flags: TcpFlags::RST | TcpFlags::ACK,
            ..Default::default()
        }
    })
}

/// Writes the [`rst_reply`] to a segment from `src` to `dst` as an IP packet (from `dst` to `src`)
/// into `buf`; returns its length, or `None` if no reset is due.
pub fn write_rst_reply(
    buf: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    hdr: &SegmentHeader,
    payload_len: usize,
) -> Result<Option<usize>, PacketError> {
    match rst_reply(hdr, payload_len) {
        None => Ok(None),
        Some(f) => wire::write_tcp_packet(buf, dst, src, &f, &[], &[], 0).map(Some),
    }
}

/// A sink for the `read_into`/`recv_into` calls (which hand out bytes slice after slice, never
/// more than asked) that copies them into `out`, one after the other.
pub fn slice_sink(out: &mut [u8]) -> impl FnMut(&[u8]) + '_ {
    let mut at = 0;
    move |s: &[u8]| {
        out[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
}
