//! The connection: construction, the application API, events, timers' entry point and the output
//! path (`poll_transmit`). Input processing is in `input.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use super::cc::{Controller, Window};
use super::isn::{IsnKey, isn_and_ts_offset};
use super::reassembly::Reassembler;
use super::rtt::RttEstimator;
use super::sack::Scoreboard;
use super::send_buf::SendBuffer;
use super::timer::{Timer, Timers};
use super::{
    Config, Event, Health, InSegment, NoHook, OptionHook, OutSegment, SegmentPlan, SeqNum, State, Transmit,
};
use crate::time::Instant;
use crate::wire::tcp::{
    MAX_OPTIONS_LEN, OptionWriter, SackBlock, SegmentFields, SegmentHeader, TcpFlags, Timestamps,
};
use crate::wire::write_tcp_packet;

pub(super) const EV_CONNECTED: u8 = 1;
pub(super) const EV_READABLE: u8 = 2;
pub(super) const EV_WRITABLE: u8 = 4;
pub(super) const EV_PEER_CLOSED: u8 = 8;
pub(super) const EV_CLOSED: u8 = 16;
pub(super) const EV_RESET: u8 = 32;
pub(super) const EV_TIMED_OUT: u8 = 64;

/// Loss-recovery phase of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovery {
    /// Normal operation.
    None,
    /// Fast recovery (RFC 6675 with SACK, RFC 6582 without) until `recover` is acknowledged.
    Fast,
    /// After a retransmission timeout, until `recover` is acknowledged.
    Rto,
}

/// Why [`Connection::accept`] refused a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The segment is not a bare SYN (it has ACK, RST or FIN set, or lacks SYN).
    #[error("not a connection request (SYN without ACK/RST)")]
    NotASyn,
    /// Local and remote addresses are of different families.
    #[error("address families differ")]
    MixedFamilies,
}

/// One TCP connection, sans-IO.
///
/// # Call order
///
/// Create with [`Connection::connect`] (active open; the SYN leaves on the first
/// `poll_transmit`) or [`Connection::accept`] (passive open from a received SYN). Then, whenever
/// something happens:
///
/// 1. feed input: [`handle_segment`](Self::handle_segment) for each segment of this 4-tuple
///    (already parsed and checksum-verified, e.g. with [`crate::wire::parse_tcp_packet`]),
///    [`handle_timeout`](Self::handle_timeout) when the deadline from `poll_timeout` passed, and the
///    application's [`send`](Self::send) / [`recv`](Self::recv) / [`close`](Self::close) /
///    [`abort`](Self::abort);
/// 2. drain output: call [`poll_transmit`](Self::poll_transmit) until it returns `None`, sending
///    each packet it wrote;
/// 3. drain [`poll_event`](Self::poll_event) until `None`;
/// 4. sleep until [`poll_timeout`](Self::poll_timeout) (or the next input).
///
/// The `_with` variants take an [`OptionHook`] (MPTCP); the plain ones use [`NoHook`]. The buffer
/// given to `poll_transmit` must hold a whole packet: at least `mss + 100` bytes.
#[derive(Debug)]
pub struct Connection {
    pub(super) cfg: Config,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) state: State,
    // --- send side; sequence-space offsets from the ISS (the SYN is 0, data starts at 1)
    pub(super) iss: SeqNum,
    pub(super) snd_una: u64,
    pub(super) snd_nxt: u64,
    pub(super) snd_max: u64,
    pub(super) snd_wnd: u64,
    pub(super) max_snd_wnd: u64,
    pub(super) snd_wl1: u64,
    pub(super) snd_wl2: u64,
    pub(super) snd_wscale: u8,
    pub(super) rcv_wscale: u8,
    pub(super) sbuf: SendBuffer,
    pub(super) sbuf_base: u64,
    pub(super) fin_queued: bool,
    // --- receive side; offsets from the IRS (the peer's SYN is 0)
    pub(super) irs: SeqNum,
    pub(super) syn_received: bool,
    pub(super) rcv: Reassembler,
    pub(super) rcv_fin: Option<u64>,
    pub(super) fin_received: bool,
    pub(super) rcv_adv: u64,
    pub(super) rcv_mss: u32,
    pub(super) unacked_rcv: u32,
    pub(super) ack_now: bool,
    /// Further immediate ACKs owed (one per out-of-order segment, RFC 5681 §4.2), capped.
    pub(super) extra_acks: u8,
    // --- negotiated options
    pub(super) peer_mss: u16,
    pub(super) sack_ok: bool,
    pub(super) ts_ok: bool,
    pub(super) ws_ok: bool,
    pub(super) ts_recent: u32,
    pub(super) ts_recent_at: Instant,
    pub(super) last_ack_sent: u64,
    pub(super) ts_offset: u32,
    // --- RTT and congestion control
    pub(super) rtt: RttEstimator,
    pub(super) rtt_probe: Option<(u64, Instant)>,
    pub(super) cc: Controller,
    pub(super) win: Window,
    pub(super) recovery: Recovery,
    pub(super) recover: u64,
    pub(super) dupacks: u32,
    pub(super) high_rxt: u64,
    /// RFC 6937 PRR state of the current fast recovery: bytes delivered to the receiver and bytes
    /// sent since it began, and the flight size when it began (RecoverFS).
    pub(super) prr_delivered: u64,
    pub(super) prr_out: u64,
    pub(super) recover_fs: u64,
    pub(super) rtx_una: bool,
    pub(super) scoreboard: Scoreboard,
    // --- timers and bookkeeping
    pub(super) timers: Timers,
    pub(super) rto_count: u32,
    pub(super) last_progress: Instant,
    pub(super) last_recv: Instant,
    pub(super) persist_backoff: u32,
    pub(super) probe_pending: bool,
    /// The pending probe carries one garbage octet (see [`Connection::send_probe`]).
    pub(super) garbage_probe: bool,
    pub(super) keepalive_sent: u32,
    pub(super) pace_next: Instant,
    /// Segments that may still leave back to back before the rest is paced (refilled by an ACK
    /// unless an earlier excess is still being paced out; see `after_paced_send`).
    pub(super) burst_budget: u32,
    pub(super) last_data_sent: Instant,
    pub(super) challenge_window: Instant,
    pub(super) challenge_count: u32,
    pub(super) events: u8,
    pub(super) want_writable: bool,
    pub(super) rst_pending: Option<SeqNum>,
    pub(super) ip_ident: u16,
}

/// RFC 7323 §2.3: the smallest shift that lets `buf` be advertised, at most 14.
fn wscale_for(buf: usize) -> u8 {
    let mut s = 0u8;
    while s < 14 && (buf >> s) > 65535 {
        s += 1;
    }
    s
}

/// RFC 9293 §3.7.1: the default send MSS when the peer sent none (536 for IPv4, MUST); RFC 8200
/// §5: 1220 for IPv6.
fn default_mss(remote: SocketAddr) -> u16 {
    if remote.is_ipv4() { 536 } else { 1220 }
}

impl Connection {
    fn new(now: Instant, local: SocketAddr, remote: SocketAddr, cfg: Config, key: &IsnKey) -> Self {
        let (iss, ts_offset) = isn_and_ts_offset(key, local, remote, now);
        let mss = u32::from(cfg.mss.max(64));
        Connection {
            cfg,
            local,
            remote,
            state: State::SynSent,
            iss,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            snd_wscale: 0,
            rcv_wscale: if cfg.window_scaling {
                wscale_for(cfg.recv_buffer)
            } else {
                0
            },
            sbuf: SendBuffer::new(cfg.send_buffer),
            sbuf_base: 1,
            fin_queued: false,
            irs: SeqNum(0),
            syn_received: false,
            rcv: Reassembler::new(0, cfg.recv_buffer.max(1)),
            rcv_fin: None,
            fin_received: false,
            rcv_adv: 0,
            rcv_mss: 536,
            unacked_rcv: 0,
            ack_now: false,
            extra_acks: 0,
            peer_mss: default_mss(remote),
            sack_ok: false,
            ts_ok: false,
            ws_ok: false,
            ts_recent: 0,
            ts_recent_at: now,
            last_ack_sent: 0,
            ts_offset,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            rtt_probe: None,
            cc: Controller::new(cfg.congestion),
            // RFC 6928 / RFC 5681 §3.1: IW; ssthresh initially arbitrarily high.
            win: Window {
                cwnd: cfg.initial_window.max(1) * mss,
                ssthresh: u32::MAX,
                mss,
            },
            recovery: Recovery::None,
            recover: 0,
            dupacks: 0,
            high_rxt: 0,
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: 0,
            rtx_una: false,
            scoreboard: Scoreboard::new(),
            timers: Timers::default(),
            rto_count: 0,
            last_progress: now,
            last_recv: now,
            persist_backoff: 0,
            probe_pending: false,
            garbage_probe: false,
            keepalive_sent: 0,
            pace_next: now,
            burst_budget: cfg.initial_window.max(1),
            last_data_sent: now,
            challenge_window: now,
            challenge_count: 0,
            events: 0,
            want_writable: false,
            rst_pending: None,
            ip_ident: (ts_offset >> 16) as u16,
        }
    }

    /// Active open (RFC 9293 §3.10.1): the SYN is written by the next `poll_transmit`. The ISN comes
    /// from `key` and `now` (RFC 6528).
    pub fn connect(now: Instant, local: SocketAddr, remote: SocketAddr, cfg: Config, key: &IsnKey) -> Self {
        Connection::new(now, local, remote, cfg, key)
    }

    /// Passive open from a received SYN `syn` sent by `remote` to `local` (RFC 9293 §3.10.7.2,
    /// LISTEN state: the engine answers on behalf of the destination). The SYN-ACK is written by
    /// the next `poll_transmit`. The caller inspects `syn.options` itself (e.g. MP_CAPABLE). Data
    /// carried on the SYN is not accepted (RFC 9293 allows queueing it; the peer retransmits it).
    pub fn accept(
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &SegmentHeader,
        cfg: Config,
        key: &IsnKey,
    ) -> Result<Self, AcceptError> {
        // RFC 9293 §3.10.7.2: a RST is ignored, an ACK draws a reset; only a SYN opens.
        if !syn.flags.syn() || syn.flags.ack() || syn.flags.rst() {
            return Err(AcceptError::NotASyn);
        }
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(AcceptError::MixedFamilies);
        }
        let mut c = Connection::new(now, local, remote, cfg, key);
        c.state = State::SynReceived;
        c.on_syn_options(now, syn);
        c.irs = syn.seq;
        c.syn_received = true;
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        c.snd_wnd = u64::from(syn.window);
        c.max_snd_wnd = c.snd_wnd;
        c.rcv_adv = c.rcv_nxt() + c.rcv.window() as u64;
        Ok(c)
    }

    /// Applies the options of the peer's SYN (or SYN-ACK): MSS, window scale, SACK-permitted, TS.
    pub(super) fn on_syn_options(&mut self, now: Instant, syn: &SegmentHeader) {
        let o = &syn.options;
        if let Some(m) = o.mss {
            // RFC 9293 §3.7.1: SendMSS is the MSS option value; guard against absurd values.
            self.peer_mss = m.max(64);
        }
        // RFC 7323 §2.2: scaling is used only if both SYNs carried the option (ours is sent only
        // when allowed, see `emit`). §2.3: a shift above 14 MUST be treated as 14.
        match (self.cfg.window_scaling, o.wscale) {
            (true, Some(s)) => {
                self.ws_ok = true;
                self.snd_wscale = s.min(14);
            }
            _ => {
                self.ws_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        // RFC 2018 §2: SACK only if both sides sent SACK-permitted.
        self.sack_ok = self.cfg.sack && o.sack_permitted;
        // RFC 7323 §3.2: timestamps only if both SYNs carried TSopt.
        if let (true, Some(ts)) = (self.cfg.timestamps, o.timestamps) {
            self.ts_ok = true;
            self.ts_recent = ts.val;
            self.ts_recent_at = now;
        } else {
            self.ts_ok = false;
        }
        // Leave room for the options that every segment carries (RFC 9293 §3.7.1).
        let eff = u32::from(self.eff_mss());
        self.win.mss = eff.saturating_sub(if self.ts_ok { 12 } else { 0 }).max(32);
        self.win.cwnd = self.cfg.initial_window.max(1) * self.win.mss;
    }

    // ------------------------------------------------------------------ addressing & sequence space

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }
    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// RFC 9293 state.
    pub fn state(&self) -> State {
        self.state
    }
    /// True once no more segments will be produced or accepted (the flow can be forgotten).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.rst_pending.is_none()
    }
    /// Our initial sequence number.
    pub fn iss(&self) -> SeqNum {
        self.iss
    }
    /// The peer's initial sequence number (meaningful once its SYN arrived).
    pub fn irs(&self) -> SeqNum {
        self.irs
    }
    /// True if SACK was negotiated.
    pub fn sack_enabled(&self) -> bool {
        self.sack_ok
    }
    /// True if timestamps were negotiated.
    pub fn timestamps_enabled(&self) -> bool {
        self.ts_ok
    }
    /// (send shift, receive shift) if window scaling was negotiated.
    pub fn window_scale(&self) -> Option<(u8, u8)> {
        self.ws_ok.then_some((self.snd_wscale, self.rcv_wscale))
    }
    /// The MSS the peer announced (or the default).
    pub fn peer_mss(&self) -> u16 {
        self.peer_mss
    }
    /// The largest payload per segment before options: min(peer MSS, our MSS).
    pub fn eff_mss(&self) -> u16 {
        self.peer_mss.min(self.cfg.mss).max(64)
    }
    /// The peer's window in bytes (scaled).
    pub fn send_window(&self) -> u64 {
        self.snd_wnd
    }
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(super) fn snd_seq(&self, off: u64) -> SeqNum {
        self.iss + off as u32
    }
    /// `seq` as a send-side offset (relative to SND.UNA, so wrap-safe within 2^31).
    pub(super) fn snd_off(&self, seq: SeqNum) -> i64 {
        self.snd_una as i64 + i64::from(seq.diff(self.snd_seq(self.snd_una)))
    }
    pub(super) fn rcv_seq(&self, off: u64) -> SeqNum {
        self.irs + off as u32
    }
    /// RCV.NXT as an offset from the IRS.
    pub(super) fn rcv_nxt(&self) -> u64 {
        if !self.syn_received {
            return 0;
        }
        1 + self.rcv.contiguous_end() + u64::from(self.fin_received)
    }
    pub(super) fn rcv_off(&self, seq: SeqNum) -> i64 {
        let nxt = self.rcv_nxt();
        nxt as i64 + i64::from(seq.diff(self.rcv_seq(nxt)))
    }
    /// Offset just past the last byte queued for sending.
    pub(super) fn data_end(&self) -> u64 {
        self.sbuf_base + self.sbuf.len() as u64
    }
    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// SND.NXT: the sequence number of the next new byte.
    pub fn snd_nxt(&self) -> SeqNum {
        self.snd_seq(self.snd_nxt)
    }
    /// SND.UNA: the oldest unacknowledged sequence number.
    pub fn snd_una(&self) -> SeqNum {
        self.snd_seq(self.snd_una)
    }
    /// RCV.NXT.
    pub fn rcv_nxt_seq(&self) -> SeqNum {
        self.rcv_seq(self.rcv_nxt())
    }
    /// Sequence number the next byte passed to [`send`](Self::send) will carry.
    pub fn send_seq(&self) -> SeqNum {
        self.snd_seq(self.data_end())
    }
    /// Sequence number of the next byte [`recv`](Self::recv) will return.
    pub fn recv_seq(&self) -> SeqNum {
        self.rcv_seq(1 + self.rcv.read_offset())
    }

    // ------------------------------------------------------------------ application API

    /// Queues bytes for sending; returns how many fit (backpressure: fewer than offered means
    /// wait for [`Event::Writable`]). Refused (0) after `close`/`abort` or before a passive open
    /// completes its handshake is fine too: bytes queue while in SYN-SENT / SYN-RECEIVED.
    pub fn send(&mut self, data: &[u8]) -> usize {
        // RFC 9293 §3.10.2: SEND is allowed in SYN-SENT/SYN-RECEIVED (queued), ESTABLISHED and
        // CLOSE-WAIT; an error ("connection closing") afterwards.
        let open = matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        );
        if !open || self.fin_queued {
            return 0;
        }
        let n = self.sbuf.push(data);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    /// Space left in the send buffer.
    pub fn send_capacity(&self) -> usize {
        if self.fin_queued { 0 } else { self.sbuf.free() }
    }

    /// Bytes queued and not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.sbuf.len()
    }

    /// Reads in-order received bytes; returns the count (0: nothing now, see
    /// [`Event::Readable`] / [`Event::PeerClosed`]).
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        let before_adv = self.rcv_adv.saturating_sub(self.rcv_nxt());
        let n = self.rcv.read(out);
        if n > 0 && self.state.is_synchronized() {
            // RFC 9293 §3.8.6.2.2 (receiver SWS avoidance) decides when the window update is worth
            // a segment: only if the advertised window had become small.
            let potential = self.rcv_nxt() + self.rcv.window() as u64;
            let cap = self.rcv.cap() as u64;
            let thresh = (2 * u64::from(self.rcv_mss)).min(cap / 2);
            if before_adv < cap / 2 && potential >= self.rcv_adv + thresh {
                self.ack_now = true;
            }
        }
        n
    }

    /// Bytes ready for [`recv`](Self::recv).
    pub fn recv_available(&self) -> usize {
        self.rcv.readable()
    }

    /// True once the peer's FIN was received and every byte before it read.
    pub fn recv_finished(&self) -> bool {
        self.fin_received && self.rcv.readable() == 0
    }

    /// Half-close (RFC 9293 §3.10.4): a FIN follows the queued data; receiving continues.
    pub fn close(&mut self) {
        match self.state {
            // RFC 9293 §3.10.4, SYN-SENT: nothing was sent yet; with no queued data the TCB goes.
            State::SynSent if self.sbuf.is_empty() => self.enter_closed(),
            // SYN-SENT with queued data, SYN-RECEIVED: "queue for processing after entering
            // ESTABLISHED state" (the FIN follows the data once synchronized).
            State::SynSent | State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Aborts (RFC 9293 §3.10.5): a RST is sent if synchronized, everything is dropped; no event.
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        ) {
            self.rst_pending = Some(self.snd_seq(self.snd_nxt));
        }
        self.enter_closed();
    }

    /// Asks for an ACK to be sent on the next `poll_transmit` (the MPTCP layer uses it to carry a
    /// DATA_ACK or an address option).
    pub fn request_ack(&mut self) {
        if self.state.is_synchronized() || self.state == State::SynReceived {
            self.ack_now = true;
        }
    }

    /// Sends a segment the peer must answer at once with an ACK, to test whether the path
    /// still carries packets; its answer updates [`Health::last_recv`]. It is the keep-alive
    /// form with one garbage octet (RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1 "and may or may not
    /// contain one garbage octet of data"): an octet the peer already has is a duplicate that
    /// it acknowledges at once (RFC 9293 §3.10.7.4; RFC 5681 §4.2 immediate ACK), whereas a
    /// segment wholly left of the window draws a rate-limited answer from many stacks.
    pub fn send_probe(&mut self) {
        if matches!(self.state, State::Established | State::CloseWait) && self.snd_una > 0 {
            self.probe_pending = true;
            self.garbage_probe = true;
        }
    }

    pub(super) fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.timers.clear();
        self.ack_now = false;
        self.extra_acks = 0;
        self.probe_pending = false;
    }

    pub(super) fn emit_event(&mut self, ev: u8) {
        self.events |= ev;
    }

    /// The next event, in the order Connected, Readable, Writable, PeerClosed, then the terminal one.
    pub fn poll_event(&mut self) -> Option<Event> {
        const ORDER: [(u8, Event); 7] = [
            (EV_CONNECTED, Event::Connected),
            (EV_READABLE, Event::Readable),
            (EV_WRITABLE, Event::Writable),
            (EV_PEER_CLOSED, Event::PeerClosed),
            (EV_RESET, Event::Reset),
            (EV_TIMED_OUT, Event::TimedOut),
            (EV_CLOSED, Event::Closed),
        ];
        for (bit, ev) in ORDER {
            if self.events & bit != 0 {
                self.events &= !bit;
                return Some(ev);
            }
        }
        None
    }

    /// The earliest time `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Health signals (RTT, RTO, progress, window).
    pub fn health(&self) -> Health {
        Health {
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            consecutive_rtos: self.rto_count,
            last_ack_progress: self.last_progress,
            last_recv: self.last_recv,
            bytes_in_flight: self.snd_nxt.saturating_sub(self.snd_una),
            cwnd: self.win.cwnd,
            ssthresh: self.win.ssthresh,
            in_recovery: self.recovery != Recovery::None,
        }
    }

    /// The congestion controller (tests, diagnostics).
    pub fn congestion(&self) -> &super::cc::Controller {
        &self.cc
    }

    /// Heap bytes held by buffers (for memory accounting; `size_of::<Connection>()` is the rest).
    pub fn heap_bytes(&self) -> usize {
        self.sbuf.heap_bytes() + self.rcv.heap_bytes() + self.scoreboard.heap_bytes()
    }

    // ------------------------------------------------------------------ output

    /// [`poll_transmit_with`](Self::poll_transmit_with) without an option hook.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_transmit_with(now, buf, &mut NoHook)
    }

    /// Writes the next segment due (a whole IP packet) into `buf`.
    pub fn poll_transmit_with<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
    ) -> Option<Transmit> {
        if let Some(seq) = self.rst_pending.take() {
            let f = SegmentFields {
                seq,
                flags: TcpFlags::RST,
                ..Default::default()
            };
            // RSTs carry no TCP options of ours, but the hook may add one (MPTCP's MP_TCPRST,
            // RFC 8684 §3.6).
            let mut opts = OptionWriter::new();
            let plan = SegmentPlan {
                flags: f.flags,
                has_payload: false,
                retransmission: false,
            };
            let space = hook.reserve(&plan).min(MAX_OPTIONS_LEN);
            if space > 0 {
                let out = OutSegment {
                    seq,
                    ack: f.ack,
                    flags: f.flags,
                    payload_len: 0,
                    retransmission: false,
                };
                let n = hook.write_options(&out, &mut opts.spare()[..space]);
                opts.advance(n.min(space));
            }
            let len =
                write_tcp_packet(buf, self.local, self.remote, &f, opts.bytes(), &[], self.ip_ident).ok()?;
            return Some(Transmit {
                len,
                seq,
                payload_len: 0,
                flags: f.flags,
                retransmission: false,
            });
        }
        match self.state {
            State::Closed => return None,
            State::SynSent | State::SynReceived => {
                if self.snd_nxt == 0 {
                    let mut flags = TcpFlags::SYN;
                    if self.state == State::SynReceived {
                        flags |= TcpFlags::ACK;
                    }
                    let rtx = self.snd_max > 0;
                    let t = self.emit(now, buf, hook, 0, flags, None, rtx)?;
                    // Time the SYN (Karn: not a retransmitted one).
                    self.rtt_probe = if rtx { None } else { Some((1, now)) };
                    self.snd_nxt = 1;
                    self.snd_max = 1;
                    return Some(t);
                }
                return None;
            }
            _ => {}
        }
        if let Some(t) = self.transmit_data(now, buf, hook) {
            return Some(t);
        }
        if self.probe_pending {
            // RFC 9293 §3.8.6.1 zero-window probe / §3.8.4 keep-alive: a segment the peer must
            // answer with an ACK carrying its window; SEG.SEQ = SND.UNA - 1 with no data.
            self.probe_pending = false;
            let off = self.snd_una.saturating_sub(1);
            let t = self.emit(now, buf, hook, off, TcpFlags::ACK, None, true);
            self.garbage_probe = false;
            return t;
        }
        if self.ack_now {
            // A pure ACK carries the highest sequence number sent (SND.NXT may have been pulled back
            // by an RTO), so the peer finds it in its window (as Linux's tcp_acceptable_seq).
            return self.emit(
                now,
                buf,
                hook,
                self.snd_max.max(self.snd_nxt),
                TcpFlags::ACK,
                None,
                false,
            );
        }
        None
    }

    fn sendable_state(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
        )
    }

    /// RFC 6675 §4 SetPipe(): outstanding bytes not SACKed and not lost, plus retransmissions.
    pub(super) fn pipe(&self) -> u64 {
        let lb = self
            .scoreboard
            .lost_boundary(self.cfg.dupthresh, self.win.mss)
            .clamp(self.snd_una, self.snd_max);
        let hr = self.high_rxt.clamp(self.snd_una, self.snd_max);
        // Holes below HighRxt were retransmitted: counted once.
        let below = (hr - self.snd_una) - self.scoreboard.sacked_in(self.snd_una, hr);
        // Holes between HighRxt and the loss boundary are lost and not retransmitted: not counted.
        let from = lb.max(hr);
        let above = (self.snd_max - from) - self.scoreboard.sacked_in(from, self.snd_max);
        below + above
    }

    fn pacing_blocked(&mut self, now: Instant) -> bool {
        let paced = self.cfg.pacing || self.burst_budget == 0;
        if paced && self.rtt.srtt().is_some() && now < self.pace_next {
            self.timers.set(Timer::Pacing, self.pace_next);
            return true;
        }
        false
    }

    fn after_paced_send(&mut self, now: Instant, bytes: usize) {
        let Some(srtt) = self.rtt.srtt() else { return };
        if !self.cfg.pacing {
            // RFC 6582 §3.2 step 6 and §6: when the window allows far more than is in flight (the
            // end of a recovery whose cumulative ACK covers a whole window, a receive window that
            // reopens) the implementation is encouraged to avoid a burst: "limit the number of
            // data packets that can be sent in response to a single acknowledgment" ... "Other
            // possible mechanisms ... include rate-based pacing". Up to IW segments (a burst
            // RFC 6928 already allows) leave at once per ACK; the rest is paced at the window's
            // rate, so the window is still used in full within one RTT.
            if self.burst_budget > 0 {
                self.burst_budget -= 1;
                if self.burst_budget > 0 {
                    return;
                }
            }
        }
        // Rate = factor * cwnd / SRTT (factor 2 in slow start, 1.25 after, as Linux does).
        let factor = if self.win.in_slow_start() { 2.0 } else { 1.25 };
        let rate = factor * f64::from(self.win.cwnd) / srtt.as_secs_f64().max(1e-6);
        let gap = Duration::from_secs_f64(bytes as f64 / rate);
        self.pace_next = self.pace_next.max(now) + gap;
    }

    fn transmit_data<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
    ) -> Option<Transmit> {
        if !self.sendable_state() {
            return None;
        }
        let data_end = self.data_end();
        let fin_end = data_end + u64::from(self.fin_queued);
        // 1. Fast retransmit of SND.UNA (RFC 6675 §5 step 4.3, RFC 6582 §3.2 steps 3 and 5).
        if self.rtx_una && self.snd_una < self.snd_max {
            if self.pacing_blocked(now) {
                return None;
            }
            self.rtx_una = false;
            let end = data_end.min(self.snd_max);
            let t = if self.snd_una < end {
                self.emit(
                    now,
                    buf,
                    hook,
                    self.snd_una,
                    TcpFlags::ACK,
                    Some(end - self.snd_una),
                    true,
                )?
            } else {
                self.emit(
                    now,
                    buf,
                    hook,
                    self.snd_una,
                    TcpFlags::ACK | TcpFlags::FIN,
                    None,
                    true,
                )?
            };
            self.high_rxt = self.high_rxt.max(self.snd_una + t.payload_len as u64);
            self.after_paced_send(now, t.payload_len);
            self.prr_out += t.payload_len as u64;
            return Some(t);
        }
        let sack_recovery = self.recovery == Recovery::Fast && self.sack_ok;
        let flight = if sack_recovery {
            self.pipe()
        } else {
            self.snd_nxt - self.snd_una
        };
        let cwnd = u64::from(self.win.cwnd);
        // 2. RFC 6675 §5 step (C): while cwnd - pipe >= 1 SMSS, NextSeg() rule 1: the first lost
        // hole above HighRxt.
        if sack_recovery {
            if flight + u64::from(self.win.mss) > cwnd {
                return None;
            }
            let lb = self
                .scoreboard
                .lost_boundary(self.cfg.dupthresh, self.win.mss)
                .clamp(self.snd_una, self.snd_max);
            let from = self.high_rxt.max(self.snd_una);
            if let Some((a, b)) = self.scoreboard.next_hole(from, lb) {
                if self.pacing_blocked(now) {
                    return None;
                }
                let t = if a < data_end {
                    self.emit(now, buf, hook, a, TcpFlags::ACK, Some(b.min(data_end) - a), true)?
                } else {
                    self.emit(now, buf, hook, a, TcpFlags::ACK | TcpFlags::FIN, None, true)?
                };
                self.high_rxt = a + (t.payload_len as u64).max(1);
                self.rtt_probe = None;
                self.after_paced_send(now, t.payload_len);
                self.prr_out += t.payload_len as u64;
                return Some(t);
            }
        }
        // 3. New data (or data after SND.NXT was pulled back by an RTO), then the FIN.
        if self.snd_nxt >= fin_end {
            return None;
        }
        let rtx = self.snd_nxt < self.snd_max;
        let avail = data_end.saturating_sub(self.snd_nxt);
        if avail == 0 {
            // Only the FIN is left (it needs no window).
            let t = self.emit(
                now,
                buf,
                hook,
                self.snd_nxt,
                TcpFlags::ACK | TcpFlags::FIN,
                None,
                rtx,
            )?;
            self.snd_nxt = fin_end;
            self.snd_max = self.snd_max.max(self.snd_nxt);
            return Some(t);
        }
        let wnd_room = (self.snd_una + self.snd_wnd).saturating_sub(self.snd_nxt);
        let cwnd_room = cwnd.saturating_sub(flight);
        let seg = u64::from(self.win.mss);
        let len = avail.min(wnd_room).min(cwnd_room).min(seg);
        if wnd_room == 0 {
            // RFC 9293 §3.8.6.1: the peer's window is closed with data waiting: probe on a timer
            // (the persist timer), backing off exponentially.
            if self.snd_nxt == self.snd_una && !self.timers.is_set(Timer::Persist) {
                let d = self
                    .rtt
                    .rto()
                    .saturating_mul(1 << self.persist_backoff.min(10))
                    .min(self.cfg.max_rto);
                self.timers.set(Timer::Persist, now + d);
            }
            return None;
        }
        // RFC 9293 §3.8.6.2.1 sender SWS avoidance (and §3.7.4 Nagle when enabled): send a full
        // segment, or everything queued when nothing is outstanding (or Nagle is off), or at
        // least half the largest window the peer offered.
        let idle = self.snd_nxt == self.snd_una;
        let ok = len >= seg || idle || len >= self.max_snd_wnd / 2 || (len == avail && !self.cfg.nagle);
        // Do not send a runt just because the congestion window has less than a segment left.
        let cwnd_runt = len < avail.min(seg) && len == cwnd_room && !idle;
        if len == 0 || !ok || cwnd_runt {
            return None;
        }
        if self.pacing_blocked(now) {
            return None;
        }
        if idle && !rtx && now - self.last_data_sent > self.rtt.rto() {
            // RFC 5681 §4.1: after an idle period longer than the RTO, cwnd SHOULD restart from
            // min(IW, cwnd) (the ACK clock is gone).
            let iw = self.cfg.initial_window.max(1) * self.win.mss;
            self.win.cwnd = self.win.cwnd.min(iw);
        }
        let t = self.emit(now, buf, hook, self.snd_nxt, TcpFlags::ACK, Some(len), rtx)?;
        let consumed = t.payload_len as u64 + u64::from(t.flags.fin());
        if !rtx && self.rtt_probe.is_none() {
            self.rtt_probe = Some((self.snd_nxt + consumed, now));
        }
        if rtx {
            self.rtt_probe = None;
        }
        self.snd_nxt += consumed;
        self.snd_max = self.snd_max.max(self.snd_nxt);
        self.after_paced_send(now, t.payload_len);
        self.prr_out += t.payload_len as u64;
        Some(t)
    }

    /// Lays out options, sizes the payload, calls the hook and writes the packet. `data` is the
    /// largest payload wanted from offset `off`; FIN is added when the payload reaches the end of
    /// queued data and a FIN is queued (and dropped from `flags` otherwise).
    #[expect(
        clippy::too_many_arguments,
        reason = "internal builder with one call site per kind"
    )]
    pub(super) fn emit<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
        off: u64,
        mut flags: TcpFlags,
        data: Option<u64>,
        rtx: bool,
    ) -> Option<Transmit> {
        let syn = flags.syn();
        let mut opts = OptionWriter::new();
        let ts = Timestamps {
            val: self.ts_now(now),
            ecr: if flags.ack() { self.ts_recent } else { 0 },
        };
        if syn {
            opts.mss(self.cfg.mss);
            let active = self.state == State::SynSent;
            // RFC 7323 §2.2/§3.2, RFC 2018 §2: offer in a SYN; in a SYN-ACK only if the SYN had it.
            if self.cfg.window_scaling && (active || self.ws_ok) {
                opts.wscale(self.rcv_wscale);
            }
            let sack = self.cfg.sack && (active || self.sack_ok);
            let tsopt = self.cfg.timestamps && (active || self.ts_ok);
            match (sack, tsopt) {
                (true, true) => {
                    opts.sack_permitted_timestamps(ts);
                }
                (true, false) => {
                    opts.sack_permitted();
                }
                (false, true) => {
                    opts.timestamps(ts);
                }
                (false, false) => {}
            }
        } else if self.ts_ok {
            // RFC 7323 §3.2: once negotiated, TSopt MUST be sent in every non-RST segment.
            opts.timestamps(ts);
        }
        let plan = SegmentPlan {
            flags,
            has_payload: data.is_some_and(|d| d > 0),
            retransmission: rtx,
        };
        let reserve = hook.reserve(&plan).min(MAX_OPTIONS_LEN);
        // RFC 2018 §4: SACK blocks in ACKs while out-of-order data is held; fewer blocks if the hook
        // needs the room.
        if flags.ack() && self.sack_ok && !syn && self.rcv.has_out_of_order() {
            let mut blocks = [(0u64, 0u64); 4];
            let n = self.rcv.sack_blocks(&mut blocks);
            let room = MAX_OPTIONS_LEN.saturating_sub(opts.len() + reserve);
            let fit = (room.saturating_sub(4) / 8).min(n);
            let mut sb = [SackBlock::default(); 4];
            for (i, &(l, r)) in blocks.iter().take(fit).enumerate() {
                sb[i] = SackBlock {
                    left: self.rcv_seq(1 + l),
                    right: self.rcv_seq(1 + r),
                };
            }
            opts.sack(&sb[..fit]);
        }
        let mut payload_len = 0usize;
        if let Some(max) = data {
            // RFC 9293 §3.7.1: the segment MUST fit the Eff.snd.MSS, whose TCPhdrsize counts the
            // options as sent: padded to a 32-bit boundary (§3.1), e.g. TS (12) + DSS without
            // checksum (26) occupy 40 bytes.
            let opt_space = (opts.len() + reserve).next_multiple_of(4).min(MAX_OPTIONS_LEN);
            let room = usize::from(self.eff_mss()).saturating_sub(opt_space).max(1);
            payload_len = (max as usize).min(room);
            if payload_len > 1 {
                payload_len = hook
                    .limit_payload(self.snd_seq(off), payload_len)
                    .clamp(1, payload_len);
            }
        }
        let garbage = self.garbage_probe && data.is_none() && !syn;
        if garbage {
            payload_len = 1;
        }
        let end = off + payload_len as u64;
        if garbage {
            flags = TcpFlags(flags.0 & !TcpFlags::FIN.0);
        } else if self.fin_queued && end == self.data_end() && !syn && (flags.fin() || data.is_some()) {
            flags |= TcpFlags::FIN;
        } else {
            flags = TcpFlags(flags.0 & !TcpFlags::FIN.0);
        }
        if payload_len > 0 && !garbage && !flags.fin() && end == self.data_end() {
            flags |= TcpFlags::PSH;
        }
        let rcv_nxt = self.rcv_nxt();
        let seq = self.snd_seq(off);
        let ack = if flags.ack() {
            self.rcv_seq(rcv_nxt)
        } else {
            SeqNum(0)
        };
        let out = OutSegment {
            seq,
            ack,
            flags,
            payload_len,
            retransmission: rtx,
        };
        let space = reserve.min(opts.remaining());
        if space > 0 {
            let n = hook.write_options(&out, &mut opts.spare()[..space]);
            opts.advance(n.min(space));
        }
        let window = if syn {
            // RFC 7323 §2.2: the window field of a SYN or SYN-ACK is not scaled.
            self.rcv.window().min(65535) as u16
        } else {
            self.advertise_window()
        };
        let (a, b) = if garbage {
            (&[0u8][..], &[][..])
        } else if payload_len > 0 {
            let start = (off - self.sbuf_base) as usize;
            self.sbuf.slices(start, payload_len)
        } else {
            (&[][..], &[][..])
        };
        let f = SegmentFields {
            seq,
            ack,
            flags,
            window,
            ..Default::default()
        };
        let len = write_tcp_packet(
            buf,
            self.local,
            self.remote,
            &f,
            opts.bytes(),
            &[a, b],
            self.ip_ident,
        )
        .ok()?;
        self.ip_ident = self.ip_ident.wrapping_add(1);
        if flags.ack() {
            if self.extra_acks > 0 {
                self.extra_acks -= 1;
            } else {
                self.ack_now = false;
            }
            self.unacked_rcv = 0;
            self.timers.stop(Timer::DelayedAck);
            self.last_ack_sent = rcv_nxt;
        }
        // The garbage octet of a probe is no data: nothing to time or retransmit.
        let data_len = if garbage { 0 } else { payload_len };
        if data_len > 0 {
            self.last_data_sent = now;
        }
        let consumes = data_len > 0 || syn || flags.fin();
        // RFC 6298 §5.1: every time a segment containing data (SYN/FIN included) is sent, start the
        // timer if it is not running.
        if consumes && !self.timers.is_set(Timer::Retransmit) {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        if consumes {
            self.timers.stop(Timer::Persist);
        }
        Some(Transmit {
            len,
            seq,
            payload_len,
            flags,
            retransmission: rtx,
        })
    }

    /// The window field for a non-SYN segment; moves the advertised right edge following RFC 9293
    /// §3.8.6.2.2 (receiver SWS avoidance) and never moves it left (§3.8.6: SHOULD NOT shrink).
    fn advertise_window(&mut self) -> u16 {
        let nxt = self.rcv_nxt();
        let potential = nxt + self.rcv.window() as u64;
        let cap = self.rcv.cap() as u64;
        let step = u64::from(self.rcv_mss).min(cap / 2).max(1);
        if potential >= self.rcv_adv + step || self.rcv_adv < nxt {
            self.rcv_adv = self.rcv_adv.max(potential);
        }
        let wnd = self.rcv_adv.saturating_sub(nxt) >> self.rcv_wscale;
        wnd.min(65535) as u16
    }

    pub(super) fn in_segment(&self, hdr: &SegmentHeader, payload_len: usize) -> InSegment {
        InSegment {
            seq: hdr.seq + u32::from(hdr.flags.syn()),
            payload_len,
            state: self.state,
        }
    }
}
