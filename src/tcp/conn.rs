//! The connection: its state (the send half in `send.rs`, the receive half in `recv.rs`, the
//! congestion window and loss recovery in `recovery.rs`, plus what belongs to the connection as a
//! whole: addresses, RFC 9293 state, negotiated options, RTT, timers, events), construction and
//! the SYN options, and the application API. Input processing is in `input.rs`, the output path
//! (`poll_transmit`) in `output.rs`.

use std::net::SocketAddr;

use super::isn::{IsnKey, isn_and_ts_offset};
use super::recovery::Recovery;
use super::recv::RecvState;
use super::rtt::RttEstimator;
use super::send::SendState;
use super::timer::Timers;
use super::{Config, Event, Health, SeqNum, State};
use crate::time::Instant;
use crate::wire::tcp::SegmentHeader;

pub(super) const EV_CONNECTED: u8 = 1;
pub(super) const EV_READABLE: u8 = 2;
pub(super) const EV_WRITABLE: u8 = 4;
pub(super) const EV_PEER_CLOSED: u8 = 8;
pub(super) const EV_CLOSED: u8 = 16;
pub(super) const EV_RESET: u8 = 32;
pub(super) const EV_TIMED_OUT: u8 = 64;

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
/// The `_with` variants take an [`OptionHook`](super::OptionHook) (MPTCP); the plain ones use
/// [`NoHook`](super::NoHook). The buffer given to `poll_transmit` must hold a whole packet: at
/// least `mss + 100` bytes.
#[derive(Debug)]
pub struct Connection {
    pub(super) cfg: Config,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) state: State,
    /// Send sequence space, send buffer, RTT timing, probes, pacing.
    pub(super) snd: SendState,
    /// Receive sequence space, reassembly, TS.Recent, ACK bookkeeping.
    pub(super) rcv: RecvState,
    /// Congestion window and loss recovery.
    pub(super) recovery: Recovery,
    // --- negotiated options (fixed by the SYNs, `on_syn_options`)
    pub(super) peer_mss: u16,
    pub(super) sack_ok: bool,
    pub(super) ts_ok: bool,
    pub(super) ws_ok: bool,
    /// Offset added to our clock in TSval (RFC 7323 §5.4, from the ISN key).
    pub(super) ts_offset: u32,
    // --- RTT, timers and liveness
    pub(super) rtt: RttEstimator,
    pub(super) timers: Timers,
    /// Consecutive retransmission timeouts without progress.
    pub(super) rto_count: u32,
    /// When SND.UNA last advanced.
    pub(super) last_progress: Instant,
    /// When the last acceptable segment arrived.
    pub(super) last_recv: Instant,
    /// Unanswered keep-alive probes.
    pub(super) keepalive_sent: u32,
    /// RFC 5961 §7 rate limit: start of the current one-second window and challenge ACKs in it.
    pub(super) challenge_window: Instant,
    pub(super) challenge_count: u32,
    // --- output to the caller
    pub(super) events: u8,
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
        let rcv_wscale = if cfg.window_scaling {
            wscale_for(cfg.recv_buffer)
        } else {
            0
        };
        Connection {
            cfg,
            local,
            remote,
            state: State::SynSent,
            snd: SendState::new(now, iss, cfg.send_buffer, cfg.initial_window),
            rcv: RecvState::new(now, cfg.recv_buffer, rcv_wscale),
            recovery: Recovery::new(&cfg),
            peer_mss: default_mss(remote),
            sack_ok: false,
            ts_ok: false,
            ws_ok: false,
            ts_offset,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            timers: Timers::default(),
            rto_count: 0,
            last_progress: now,
            last_recv: now,
            keepalive_sent: 0,
            challenge_window: now,
            challenge_count: 0,
            events: 0,
            rst_pending: None,
            ip_ident: (ts_offset >> 16) as u16,
        }
    }

    /// Active open (RFC 9293 §3.10.1): the SYN is written by the next `poll_transmit`. The ISN comes
    /// from `key` and `now` (RFC 6528). With [`Config::fast_open`] the SYN carries the data
    /// [`send`](Self::send) queued before that `poll_transmit` (RFC 7413).
    pub fn connect(now: Instant, local: SocketAddr, remote: SocketAddr, cfg: Config, key: &IsnKey) -> Self {
        Connection::new(now, local, remote, cfg, key)
    }

    /// Turns on [`Config::fast_open`] for this connection alone (before its first
    /// `poll_transmit`: the SYN then carries what was queued).
    pub fn enable_fast_open(&mut self) {
        self.cfg.fast_open = true;
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
        c.rcv.on_syn(syn.seq);
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        c.snd.open_window(syn.window);
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
                self.snd.set_wscale(s.min(14));
            }
            _ => {
                self.ws_ok = false;
                self.snd.set_wscale(0);
                self.rcv.disable_wscale();
            }
        }
        // RFC 2018 §2: SACK only if both sides sent SACK-permitted.
        self.sack_ok = self.cfg.sack && o.sack_permitted;
        // RFC 7323 §3.2: timestamps only if both SYNs carried TSopt.
        if let (true, Some(ts)) = (self.cfg.timestamps, o.timestamps) {
            self.ts_ok = true;
            self.rcv.set_ts_recent(ts.val, now);
        } else {
            self.ts_ok = false;
        }
        // Leave room for the options that every segment carries (RFC 9293 §3.7.1).
        let eff = u32::from(self.eff_mss());
        let mss = eff.saturating_sub(if self.ts_ok { 12 } else { 0 }).max(32);
        self.recovery
            .on_handshake(self.sack_ok, mss, self.cfg.initial_window);
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
        self.snd.iss()
    }
    /// The peer's initial sequence number (meaningful once its SYN arrived).
    pub fn irs(&self) -> SeqNum {
        self.rcv.irs()
    }
    /// True if SACK was negotiated.
    pub fn sack_enabled(&self) -> bool {
        self.sack_ok
    }
    /// True if timestamps were negotiated.
    pub fn timestamps_enabled(&self) -> bool {
        self.ts_ok
    }

    /// Whether the peer's new SYN `syn` may open a new connection on this one's 4-tuple while
    /// this one lingers in TIME-WAIT (closed: always). RFC 6191 §2: with timestamps on both,
    /// the SYN is accepted when its TSval is greater than TS.Recent (an old duplicate cannot
    /// carry a newer timestamp); otherwise when its sequence number is greater than RCV.NXT
    /// (RFC 9293 §3.6.1, the host's clock-driven ISNs, RFC 6528, grow).
    pub fn accepts_new_syn(&self, syn: &crate::wire::tcp::SegmentHeader) -> bool {
        match self.state {
            State::Closed => true,
            State::TimeWait => match syn.options.timestamps {
                Some(ts) if self.ts_ok => (ts.val.wrapping_sub(self.rcv.ts_recent()) as i32) > 0,
                _ => syn.seq > self.rcv_nxt_seq(),
            },
            _ => false,
        }
    }
    /// (send shift, receive shift) if window scaling was negotiated.
    pub fn window_scale(&self) -> Option<(u8, u8)> {
        self.ws_ok.then_some((self.snd.wscale(), self.rcv.wscale()))
    }
    /// The MSS the peer announced (or the default).
    pub fn peer_mss(&self) -> u16 {
        self.peer_mss
    }
    /// How many MSS-sized segments a new data packet may carry (1 without super-segments).
    pub fn super_segment_count(&self) -> usize {
        let max = self.cfg.super_segments.min(crate::wire::gso::MAX_PACKET);
        let per = usize::from(self.eff_mss()) + crate::wire::ip::IPV6_HEADER_LEN;
        (max / per).max(1)
    }

    /// The largest payload per segment before options: min(peer MSS, our MSS).
    pub fn eff_mss(&self) -> u16 {
        self.peer_mss.min(self.cfg.mss).max(64)
    }
    /// The peer's window in bytes (scaled).
    pub fn send_window(&self) -> u64 {
        self.snd.wnd()
    }
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// SND.NXT: the sequence number of the next new byte.
    pub fn snd_nxt(&self) -> SeqNum {
        self.snd.seq(self.snd.nxt())
    }
    /// SND.UNA: the oldest unacknowledged sequence number.
    pub fn snd_una(&self) -> SeqNum {
        self.snd.seq(self.snd.una())
    }
    /// RCV.NXT.
    pub fn rcv_nxt_seq(&self) -> SeqNum {
        self.rcv.seq(self.rcv.nxt())
    }
    /// Sequence number the next byte passed to [`send`](Self::send) will carry.
    pub fn send_seq(&self) -> SeqNum {
        self.snd.seq(self.snd.data_end())
    }
    /// Sequence number of the next byte [`recv`](Self::recv) will return.
    pub fn recv_seq(&self) -> SeqNum {
        self.rcv.seq(1 + self.rcv.read_offset())
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
        if !open {
            return 0;
        }
        self.snd.push(data)
    }

    /// Space left in the send buffer.
    pub fn send_capacity(&self) -> usize {
        self.snd.capacity()
    }

    /// Bytes queued and not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.snd.queued()
    }

    /// Reads in-order received bytes; returns the count (0: nothing now, see
    /// [`Event::Readable`] / [`Event::PeerClosed`]).
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        self.recv_into(out.len(), super::slice_sink(out))
    }

    /// As [`recv`](Self::recv), up to `max` bytes handed to `sink` in one or two slices straight
    /// from the receive buffer (a relay passes them on without a copy of its own).
    pub fn recv_into(&mut self, max: usize, sink: impl FnMut(&[u8])) -> usize {
        self.rcv.read_into(max, sink, self.state.is_synchronized())
    }

    /// Bytes ready for [`recv`](Self::recv).
    pub fn recv_available(&self) -> usize {
        self.rcv.readable()
    }

    /// True once the peer's FIN was received and every byte before it read.
    pub fn recv_finished(&self) -> bool {
        self.rcv.finished()
    }

    /// Half-close (RFC 9293 §3.10.4): a FIN follows the queued data; receiving continues.
    pub fn close(&mut self) {
        match self.state {
            // RFC 9293 §3.10.4, SYN-SENT: nothing was sent yet; with no queued data the TCB goes.
            State::SynSent if self.snd.queued() == 0 => self.enter_closed(),
            // SYN-SENT with queued data, SYN-RECEIVED: "queue for processing after entering
            // ESTABLISHED state" (the FIN follows the data once synchronized).
            State::SynSent | State::SynReceived => self.snd.queue_fin(),
            State::Established => {
                self.snd.queue_fin();
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.snd.queue_fin();
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
            self.rst_pending = Some(self.snd.seq(self.snd.nxt()));
        }
        self.enter_closed();
    }

    /// Asks for an ACK to be sent on the next `poll_transmit` (the MPTCP layer uses it to carry a
    /// DATA_ACK or an address option).
    pub fn request_ack(&mut self) {
        if self.state.is_synchronized() || self.state == State::SynReceived {
            self.rcv.set_ack_now();
        }
    }

    /// Sends a segment the peer must answer at once with an ACK, to test whether the path
    /// still carries packets; its answer updates [`Health::last_recv`]. It is the keep-alive
    /// form with one garbage octet (RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1 "and may or may not
    /// contain one garbage octet of data"): an octet the peer already has is a duplicate that
    /// it acknowledges at once (RFC 9293 §3.10.7.4; RFC 5681 §4.2 immediate ACK), whereas a
    /// segment wholly left of the window draws a rate-limited answer from many stacks.
    pub fn send_probe(&mut self) {
        if matches!(self.state, State::Established | State::CloseWait) && self.snd.una() > 0 {
            self.snd.request_probe(true);
        }
    }

    pub(super) fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.timers.clear();
        self.rcv.cancel_acks();
        self.snd.cancel_probe();
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
            bytes_in_flight: self.snd.nxt().saturating_sub(self.snd.una()),
            cwnd: self.recovery.cwnd(),
            ssthresh: self.recovery.window().ssthresh,
            in_recovery: self.recovery.in_recovery(),
        }
    }

    /// The congestion controller (tests, diagnostics).
    pub fn congestion(&self) -> &super::cc::Controller {
        self.recovery.controller()
    }

    /// Heap bytes held by buffers (for memory accounting; `size_of::<Connection>()` is the rest).
    pub fn heap_bytes(&self) -> usize {
        self.snd.heap_bytes() + self.rcv.heap_bytes() + self.recovery.heap_bytes()
    }
}
