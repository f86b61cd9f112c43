//! Drives two TCP engines over a [`Network`]: A actively opens to B (B is created by
//! [`Connection::accept`] from the SYN it receives), both send a deterministic byte pattern,
//! read and verify what arrives byte for byte, then close. Used by the simulator tests and the
//! goodput benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use super::net::Network;
use crate::tcp::{Config, Connection, Event, Health, IsnKey, State, write_rst_reply};
use crate::time::Instant;
use crate::wire::parse_tcp_packet;

/// Fills `out` with the pattern of direction `dir` starting at stream offset `off`: 8-byte words
/// of a SplitMix64 hash of their index, so a misplaced segment never matches.
pub fn fill_pattern(dir: u8, off: u64, out: &mut [u8]) {
    let mut i = 0usize;
    while i < out.len() {
        let pos = off + i as u64;
        let word = pos / 8;
        let mut z = word ^ (u64::from(dir) << 56);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[from..from + n]);
        i += n;
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    /// Active opener.
    pub a: SocketAddr,
    /// Passive side.
    pub b: SocketAddr,
    /// A's settings.
    pub cfg_a: Config,
    /// B's settings.
    pub cfg_b: Config,
    /// Bytes A sends to B.
    pub a_to_b: u64,
    /// Bytes B sends to A.
    pub b_to_a: u64,
    /// Both applications stop reading during `[start, start + duration)` (zero-window stalls).
    pub read_stall: Option<(Instant, Duration)>,
    /// Give up at this virtual time.
    pub time_limit: Instant,
    /// Give up after this many loop iterations.
    pub max_steps: u64,
    /// Seed of the ISN keys.
    pub key_seed: u64,
    /// Print every delivered segment to stderr in `[trace_from, trace_until)` (debugging).
    pub trace: Option<(Instant, Instant)>,
    /// Record A's sender state into [`TransferReport::samples`] at this interval (diagnostics).
    pub sample_every: Option<Duration>,
}

/// A's sender state at one instant (see [`TransferSpec::sample_every`]).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// A's health (cwnd, ssthresh, SRTT, bytes in flight, recovery).
    pub health: Health,
    /// The window B advertised to A (scaled), in bytes.
    pub send_window: u64,
    /// Bytes B has read so far.
    pub delivered: u64,
    /// Data segments A sent so far (retransmissions included).
    pub segments: u64,
    /// Retransmitted segments A sent so far.
    pub retransmits: u64,
}

impl TransferSpec {
    /// Defaults: 198.18.0.1:40000 → 198.18.0.2:80, default configs, 1 MB each way.
    pub fn new(a: SocketAddr, b: SocketAddr) -> Self {
        TransferSpec {
            a,
            b,
            cfg_a: Config::default(),
            cfg_b: Config::default(),
            a_to_b: 1 << 20,
            b_to_a: 1 << 20,
            read_stall: None,
            time_limit: Instant::from_millis(3_600_000),
            max_steps: 50_000_000,
            key_seed: 1,
            trace: None,
            sample_every: None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Every byte arrived intact both ways and both sides closed.
    pub completed: bool,
    /// Why not, if not.
    pub error: Option<String>,
    /// Bytes A received (verified).
    pub a_received: u64,
    /// Bytes B received (verified).
    pub b_received: u64,
    /// When A's connection was established.
    pub connected_at: Option<Instant>,
    /// When the last data byte was received on both sides.
    pub data_done_at: Option<Instant>,
    /// When both sides reached CLOSED/TIME-WAIT.
    pub finished_at: Instant,
    /// Packets sent by both engines.
    pub packets: u64,
    /// Packets that failed to parse at the receiver (must be 0).
    pub bad_packets: u64,
    /// A's terminal event.
    pub a_terminal: Option<Event>,
    /// B's terminal event.
    pub b_terminal: Option<Event>,
    /// A's health at the end.
    pub a_health: Health,
    /// B's health at the end (if B existed).
    pub b_health: Option<Health>,
    /// Loop iterations.
    pub steps: u64,
    /// Data segments A sent (retransmissions included).
    pub a_segments: u64,
    /// Segments A retransmitted.
    pub a_retransmits: u64,
    /// A's state over time, if [`TransferSpec::sample_every`] was set.
    pub samples: Vec<Sample>,
}

struct Side {
    sent: u64,
    total_send: u64,
    received: u64,
    closed: bool,
    terminal: Option<Event>,
    dir: u8,
}

impl Side {
    fn write(&mut self, c: &mut Connection, chunk: &mut [u8]) {
        while self.sent < self.total_send {
            let want = (self.total_send - self.sent).min(chunk.len() as u64) as usize;
            let room = c.send_capacity().min(want);
            if room == 0 {
                break;
            }
            fill_pattern(self.dir, self.sent, &mut chunk[..room]);
            let n = c.send(&chunk[..room]);
            self.sent += n as u64;
            if n < room {
                break;
            }
        }
        if self.sent == self.total_send && !self.closed {
            c.close();
            self.closed = true;
        }
    }

    /// Reads and verifies; returns an error text on corruption.
    fn read(
        &mut self,
        c: &mut Connection,
        chunk: &mut [u8],
        expect: &mut [u8],
        peer_dir: u8,
    ) -> Result<(), String> {
        loop {
            let n = c.recv(chunk);
            if n == 0 {
                return Ok(());
            }
            fill_pattern(peer_dir, self.received, &mut expect[..n]);
            if chunk[..n] != expect[..n] {
                let i = chunk[..n]
                    .iter()
                    .zip(&expect[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(format!("corrupt byte at offset {}", self.received + i as u64));
            }
            self.received += n as u64;
        }
    }
}

fn done_state(s: State) -> bool {
    matches!(s, State::Closed | State::TimeWait)
}

/// Runs the transfer to completion or failure.
pub fn run(net: &mut Network, spec: &TransferSpec) -> TransferReport {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&spec.key_seed.to_le_bytes());
    let key = IsnKey(key);
    let mut now = Instant::ZERO;
    let mut a = Connection::connect(now, spec.a, spec.b, spec.cfg_a, &key);
    let mut b: Option<Connection> = None;
    let mut pkt = vec![0u8; 65_600];
    let mut chunk = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut sa = Side {
        sent: 0,
        total_send: spec.a_to_b,
        received: 0,
        closed: false,
        terminal: None,
        dir: 1,
    };
    let mut sb = Side {
        sent: 0,
        total_send: spec.b_to_a,
        received: 0,
        closed: false,
        terminal: None,
        dir: 2,
    };
    let mut rep = TransferReport {
        completed: false,
        error: None,
        a_received: 0,
        b_received: 0,
        connected_at: None,
        data_done_at: None,
        finished_at: now,
        packets: 0,
        bad_packets: 0,
        a_terminal: None,
        b_terminal: None,
        a_health: a.health(),
        b_health: None,
        steps: 0,
        a_segments: 0,
        a_retransmits: 0,
        samples: Vec::new(),
    };
    let mut next_sample = spec.sample_every.map(|_| now);
    let err = loop {
        rep.steps += 1;
        if rep.steps > spec.max_steps {
            break Some("step limit".to_string());
        }
        let stalled = spec.read_stall.is_some_and(|(s, d)| now >= s && now < s + d);
        sa.write(&mut a, &mut chunk);
        if !stalled && let Err(e) = sa.read(&mut a, &mut chunk, &mut expect, 2) {
            break Some(format!("A: {e}"));
        }
        if let Some(bc) = b.as_mut() {
            sb.write(bc, &mut chunk);
            if !stalled && let Err(e) = sb.read(bc, &mut chunk, &mut expect, 1) {
                break Some(format!("B: {e}"));
            }
        }
        while let Some(t) = a.poll_transmit(now, &mut pkt) {
            net.send_transmit(now, &pkt[..t.len], t.seg_payload);
            rep.packets += 1;
            if t.payload_len > 0 {
                rep.a_segments += 1;
                rep.a_retransmits += u64::from(t.retransmission);
            }
        }
        if let (Some(every), Some(at)) = (spec.sample_every, next_sample)
            && now >= at
        {
            rep.samples.push(Sample {
                at: now,
                health: a.health(),
                send_window: a.send_window(),
                delivered: sb.received,
                segments: rep.a_segments,
                retransmits: rep.a_retransmits,
            });
            next_sample = Some(at + every.max(Duration::from_micros(1)));
        }
        if let Some(bc) = b.as_mut() {
            while let Some(t) = bc.poll_transmit(now, &mut pkt) {
                net.send_transmit(now, &pkt[..t.len], t.seg_payload);
                rep.packets += 1;
            }
        }
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Connected => rep.connected_at = Some(now),
                Event::Closed | Event::Reset | Event::TimedOut => sa.terminal = Some(ev),
                _ => {}
            }
        }
        if let Some(bc) = b.as_mut() {
            while let Some(ev) = bc.poll_event() {
                if matches!(ev, Event::Closed | Event::Reset | Event::TimedOut) {
                    sb.terminal = Some(ev);
                }
            }
        }
        if matches!(sa.terminal, Some(Event::Reset | Event::TimedOut))
            || matches!(sb.terminal, Some(Event::Reset | Event::TimedOut))
        {
            break Some(format!(
                "connection failed: A {:?} B {:?}",
                sa.terminal, sb.terminal
            ));
        }
        let data_done = sa.received == spec.b_to_a
            && sb.received == spec.a_to_b
            && a.recv_finished()
            && b.as_ref().is_some_and(|c| c.recv_finished());
        if data_done && rep.data_done_at.is_none() {
            rep.data_done_at = Some(now);
        }
        if data_done && done_state(a.state()) && b.as_ref().is_some_and(|c| done_state(c.state())) {
            break None;
        }
        let mut next = [
            a.poll_timeout(),
            b.as_ref().and_then(|c| c.poll_timeout()),
            net.next_delivery(),
            next_sample,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some((s, d)) = spec.read_stall
            && now < s + d
        {
            let edge = if now < s { s } else { s + d };
            next = Some(next.map_or(edge, |n| n.min(edge)));
        }
        let Some(next) = next else {
            break Some("stuck: nothing scheduled".to_string());
        };
        now = now.max(next);
        if now > spec.time_limit {
            break Some("virtual time limit".to_string());
        }
        while let Some(d) = net.deliver(now) {
            match parse_tcp_packet(&d.packet) {
                Ok(p) => {
                    let payload = &d.packet[p.payload.clone()];
                    if spec.trace.is_some_and(|(f, u)| now >= f && now < u) {
                        trace(now, &p, payload.len());
                    }
                    // A segment for a connection that no longer exists (or not yet, unless it is
                    // a SYN) is answered with a reset, as the engine's flow table does (RFC 9293
                    // §3.10.7.1).
                    let mut no_conn = false;
                    if p.dst == spec.a && p.src == spec.b {
                        if a.is_closed() {
                            no_conn = true;
                        } else {
                            a.handle_segment(now, &p.header, payload);
                        }
                    } else if p.dst == spec.b && p.src == spec.a {
                        match b.as_mut() {
                            Some(bc) if !bc.is_closed() => bc.handle_segment(now, &p.header, payload),
                            Some(_) => no_conn = true,
                            None => {
                                match Connection::accept(now, spec.b, spec.a, &p.header, spec.cfg_b, &key) {
                                    Ok(c) => b = Some(c),
                                    Err(_) => no_conn = true,
                                }
                            }
                        }
                    }
                    if no_conn
                        && let Ok(Some(n)) = write_rst_reply(&mut pkt, p.src, p.dst, &p.header, payload.len())
                    {
                        net.send(now, &pkt[..n]);
                    }
                }
                Err(_) => rep.bad_packets += 1,
            }
            net.recycle(d.packet);
        }
        a.handle_timeout(now);
        if let Some(bc) = b.as_mut() {
            bc.handle_timeout(now);
        }
    };
    rep.completed = err.is_none();
    rep.error = err;
    rep.a_received = sa.received;
    rep.b_received = sb.received;
    rep.finished_at = now;
    rep.a_terminal = sa.terminal;
    rep.b_terminal = sb.terminal;
    rep.a_health = a.health();
    rep.b_health = b.as_ref().map(|c| c.health());
    rep
}

#[expect(clippy::print_stderr, reason = "opt-in debugging trace of the simulator")]
fn trace(now: Instant, p: &crate::wire::TcpPacket, len: usize) {
    let h = &p.header;
    eprintln!(
        "{now:?} {} > {} {:?} seq={} ack={} win={} len={} sack={:?} ts={:?}",
        p.src.port(),
        p.dst.port(),
        h.flags,
        h.seq.0,
        h.ack.0,
        h.window,
        len,
        h.options
            .sack_blocks()
            .iter()
            .map(|b| (b.left.0, b.right.0))
            .collect::<Vec<_>>(),
        h.options.timestamps.map(|t| (t.val, t.ecr)),
    );
}
