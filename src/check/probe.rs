//! The option-30 path prober, sans-IO (STYLE.md point 1): packets in through
//! [`Prober::handle_packet`], packets out through [`Prober::poll_transmit`], time through
//! [`Prober::poll_timeout`] / [`Prober::handle_timeout`], and the [`PathReport`] at the end.
//!
//! What it does on one path, in order:
//! 1. **MP_CAPABLE SYN** (RFC 8684 §3.1, v1, flag H) with the usual options of a Linux SYN, retried.
//!    A SYN/ACK carrying MP_CAPABLE means option 30 went through both ways.
//! 2. No answer at all: a **plain SYN** from another port. If that one is answered, the network
//!    drops SYNs that carry option 30.
//! 3. A SYN/ACK without MP_CAPABLE: **TTL-limited copies** of the SYN (as tracebox does). Each
//!    router where one expires answers ICMP Time Exceeded quoting the SYN *as it arrived there*
//!    (Linux quotes up to 576 bytes, the whole TCP header with options), so the first hop whose
//!    quote shows the option replaced by NOPs, or gone, is after the middlebox that did it. If every
//!    quote shows the option intact, the server does not speak MPTCP.
//! 4. A SYN/ACK with MP_CAPABLE: the **handshake is completed** (third ACK with both keys, then a
//!    first data segment with MP_CAPABLE and data, then a second one with a DSS mapping); the
//!    server's DATA_ACKs show whether MPTCP options survive on data segments after the handshake.
//!    Then the connection is closed with MP_FASTCLOSE and RST (§3.5).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::mptcp::crypto::Key;
use crate::mptcp::mapping::dss_checksum;
use crate::mptcp::seq::{DataSeq, SubflowSeq};
use crate::tcp::seq::SeqNum;
use crate::time::Instant;
use crate::wire::checksum::Checksum;
use crate::wire::mptcp::{CapableFlags, CapablePayload, DsnField, Dss, DssMapping, MpCapable, MptcpOption};
use crate::wire::tcp::{self, OptionWriter, SegmentFields, TcpFlags, Timestamps};
use crate::wire::{self, ip};

/// What to probe and with what.
#[derive(Debug, Clone)]
pub struct ProbeSetup {
    /// Our address on the interface.
    pub src: IpAddr,
    /// The MPTCP-capable server.
    pub target: SocketAddr,
    /// Local ports: MP_CAPABLE probe, plain-SYN probe, TTL trace.
    pub ports: [u16; 3],
    /// Our MPTCP key (from a CSPRNG).
    pub key: Key,
    /// Initial sequence number of the MP_CAPABLE probe (the others derive from it).
    pub isn: u32,
    /// SYN transmissions per probe.
    pub attempts: u32,
    /// Wait for an answer to each transmission.
    pub attempt_timeout: Duration,
    /// Highest TTL of the trace.
    pub max_hops: u8,
}

/// How option 30 fared at one router, from its ICMP Time Exceeded quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotedOption {
    /// The option arrived there as sent.
    Intact,
    /// The option's bytes were overwritten with NOPs (kind 1).
    ReplacedByNops,
    /// The option was removed (shorter TCP header).
    Stripped,
    /// The option is gone and the header was rewritten otherwise.
    Modified,
    /// The quote is too short to show the options.
    NotQuoted,
}

/// One router that answered a TTL-limited probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// TTL at which the probe expired.
    pub ttl: u8,
    /// The router's address.
    pub router: IpAddr,
    /// What its quote showed.
    pub option: QuotedOption,
}

/// Whether MPTCP options survive on data segments after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DssResult {
    /// The server acknowledged both data segments at the data level (DATA_ACK).
    Passes,
    /// The server's ACKs carried no DATA_ACK: MPTCP options are removed after the handshake, and a
    /// real connection falls back to plain TCP.
    StrippedAfterHandshake,
    /// The server did not acknowledge the data in time.
    NoAnswer,
}

/// The verdict for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Verdict {
    /// Option 30 passes both ways; `dss` says how data segments fared.
    Pass {
        /// DSS on data segments.
        dss: DssResult,
    },
    /// A middlebox overwrote option 30 with NOPs, before `at_ttl` (the first router whose quote
    /// shows it), if known.
    ReplacedByNops {
        /// First TTL whose quote shows NOPs.
        at_ttl: Option<u8>,
    },
    /// A middlebox removed option 30.
    Stripped {
        /// First TTL whose quote shows it gone.
        at_ttl: Option<u8>,
    },
    /// SYNs carrying option 30 are dropped (a plain SYN is answered).
    SynDropped,
    /// Every router's quote shows option 30 intact: the server answered without MP_CAPABLE.
    ServerNoMptcp,
    /// The server speaks MPTCP (it answered MP_CAPABLE on another path), but not on this one:
    /// a middlebox after the last router that quoted the option intact removed it.
    RemovedOnPath {
        /// The last TTL whose quote showed the option intact.
        intact_until_ttl: Option<u8>,
    },
    /// The SYN/ACK has no MP_CAPABLE and no router on the path told what it forwarded: the server
    /// does not speak MPTCP, or a middlebox removed the option.
    NoMptcpUnlocated,
    /// The server refused the connection (RST).
    Refused,
    /// Neither an MPTCP nor a plain SYN was answered.
    Unreachable,
}

impl Verdict {
    /// Whether the server answered MP_CAPABLE.
    pub fn server_speaks_mptcp(&self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }

    /// Whether an MPTCP connection over this path works end to end.
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Verdict::Pass {
                dss: DssResult::Passes
            }
        )
    }
}

/// Everything learned on one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathReport {
    /// Our address.
    pub src: IpAddr,
    /// The server.
    pub target: SocketAddr,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Round-trip time of the SYN, milliseconds.
    pub syn_rtt_ms: Option<f64>,
    /// Whether the server asked for DSS checksums (flag A).
    pub checksum_required: Option<bool>,
    /// Routers that answered the trace, by TTL.
    pub hops: Vec<Hop>,
    /// ICMP destination unreachable from a router, if any: (router, type, code).
    pub unreachable_from: Option<(IpAddr, u8, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    MptcpSyn,
    PlainSyn,
    Trace,
    /// Waiting for the DATA_ACK of the first (MP_CAPABLE) data segment.
    DataCapable,
    /// Waiting for the DATA_ACK of the second (DSS) data segment.
    DataDss,
    Done,
}

/// First payload (carried with MP_CAPABLE) and second payload (carried with a DSS mapping).
const PAYLOAD_1: &[u8] = b"mpbond check: option 30 probe\r\n";
const PAYLOAD_2: &[u8] = b"mpbond check: DSS probe\r\n";
const MSS: u16 = 1400;
const WSCALE: u8 = 7;
const WINDOW: u16 = 64240;
/// Timestamp value we send (the server only echoes it).
const TSVAL: u32 = 0x6d70_0001;

/// The prober for one path. See the module documentation for the sequence.
#[derive(Debug)]
pub struct Prober {
    setup: ProbeSetup,
    phase: Phase,
    attempt: u32,
    deadline: Instant,
    out: VecDeque<Vec<u8>>,
    first_syn_at: Option<Instant>,
    syn_rtt: Option<Duration>,
    /// Server's MP_CAPABLE from the SYN/ACK: (key, flags).
    server: Option<(Key, CapableFlags)>,
    /// The server's ISN on the MP_CAPABLE probe connection.
    server_isn: SeqNum,
    /// Server's last timestamp value, echoed in our segments.
    server_tsval: u32,
    synack_without_mpc: bool,
    refused: bool,
    hops: BTreeMap<u8, Hop>,
    unreachable_from: Option<(IpAddr, u8, u8)>,
    verdict: Option<Verdict>,
    /// The options of our MP_CAPABLE SYN, and where option 30 starts in them.
    syn_options: OptionWriter,
    mpc_offset: usize,
}

impl Prober {
    /// A prober that starts probing at `now`.
    pub fn new(now: Instant, setup: ProbeSetup) -> Prober {
        let mut syn_options = plain_syn_options();
        let mpc_offset = syn_options.len();
        // RFC 8684 §3.1: the v1 SYN carries MP_CAPABLE without a key; H selects HMAC-SHA256.
        let mpc = MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(CapableFlags::HMAC_SHA256),
            payload: CapablePayload::NoKeys,
        });
        let n = mpc.write(syn_options.spare()).unwrap_or(0);
        syn_options.advance(n);
        let mut p = Prober {
            setup,
            phase: Phase::MptcpSyn,
            attempt: 0,
            deadline: now,
            out: VecDeque::new(),
            first_syn_at: None,
            syn_rtt: None,
            server: None,
            server_isn: SeqNum(0),
            server_tsval: 0,
            synack_without_mpc: false,
            refused: false,
            hops: BTreeMap::new(),
            unreachable_from: None,
            verdict: None,
            syn_options,
            mpc_offset,
        };
        p.send_attempt(now);
        p
    }

    fn port(&self, which: usize) -> u16 {
        self.setup.ports[which]
    }

    fn plain_isn(&self) -> u32 {
        self.setup.isn ^ 0x5a5a_5a5a
    }

    fn trace_isn(&self, ttl: u8) -> u32 {
        (self.setup.isn ^ 0xa5a5_0000).wrapping_add(u32::from(ttl) << 8)
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When [`Prober::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.deadline)
    }

    /// The report, once the probing is over.
    pub fn report(&self) -> Option<PathReport> {
        let verdict = self.verdict?;
        Some(PathReport {
            src: self.setup.src,
            target: self.setup.target,
            verdict,
            syn_rtt_ms: self.syn_rtt.map(|d| d.as_secs_f64() * 1000.0),
            checksum_required: self.server.map(|(_, f)| f.checksum_required()),
            hops: self.hops.values().copied().collect(),
            unreachable_from: self.unreachable_from,
        })
    }

    fn finish(&mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
        self.phase = Phase::Done;
    }

    /// Time has come: retransmit, move to the next probe, or conclude.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done || now < self.deadline {
            return;
        }
        match self.phase {
            Phase::MptcpSyn | Phase::PlainSyn | Phase::DataCapable | Phase::DataDss
                if self.attempt < self.setup.attempts =>
            {
                self.send_attempt(now)
            }
            Phase::MptcpSyn => self.start(now, Phase::PlainSyn),
            Phase::PlainSyn => self.finish(Verdict::Unreachable),
            Phase::Trace => self.conclude_trace(),
            Phase::DataCapable | Phase::DataDss => {
                self.close_connection();
                self.finish(Verdict::Pass {
                    dss: DssResult::NoAnswer,
                });
            }
            Phase::Done => {}
        }
    }

    fn start(&mut self, now: Instant, phase: Phase) {
        self.phase = phase;
        self.attempt = 0;
        if phase == Phase::Trace {
            // All TTLs at once; the routers' answers come back within one timeout.
            for ttl in 1..=self.setup.max_hops {
                let isn = self.trace_isn(ttl);
                let opts = self.syn_options;
                self.emit(self.port(2), isn, 0, TcpFlags::SYN, opts.bytes(), &[], ttl);
            }
            self.deadline = now + self.setup.attempt_timeout * 2;
        } else {
            self.send_attempt(now);
        }
    }

    fn send_attempt(&mut self, now: Instant) {
        self.attempt += 1;
        // RFC 6298 §5.5-style doubling between SYN retransmissions.
        let backoff = self.setup.attempt_timeout * (1 << (self.attempt - 1).min(4));
        self.deadline = now + backoff;
        match self.phase {
            Phase::MptcpSyn => {
                self.first_syn_at.get_or_insert(now);
                let opts = self.syn_options;
                self.emit(
                    self.port(0),
                    self.setup.isn,
                    0,
                    TcpFlags::SYN,
                    opts.bytes(),
                    &[],
                    64,
                );
            }
            Phase::PlainSyn => {
                let o = plain_syn_options();
                self.emit(
                    self.port(1),
                    self.plain_isn(),
                    0,
                    TcpFlags::SYN,
                    o.bytes(),
                    &[],
                    64,
                );
            }
            Phase::DataCapable => self.send_data_capable(),
            Phase::DataDss => self.send_data_dss(),
            Phase::Trace | Phase::Done => {}
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per segment kind; all fields differ"
    )]
    fn emit(
        &mut self,
        sport: u16,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        opts: &[u8],
        payload: &[u8],
        ttl: u8,
    ) {
        let mut buf = vec![0u8; 60 + 60 + payload.len()];
        let fields = SegmentFields {
            src_port: sport,
            dst_port: self.setup.target.port(),
            seq: SeqNum(seq),
            ack: SeqNum(ack),
            flags,
            window: WINDOW,
        };
        let src = SocketAddr::new(self.setup.src, sport);
        if let Ok(n) = wire::write_tcp_packet(&mut buf, src, self.setup.target, &fields, opts, &[payload], 0)
        {
            buf.truncate(n);
            set_ttl(&mut buf, ttl);
            self.out.push_back(buf);
        }
    }

    /// A packet arrived on the interface (IP, from the network header). `csum_ready` is false when
    /// the kernel said the checksum is not computed yet (it is then not verified).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8], csum_ready: bool) {
        if self.phase == Phase::Done {
            return;
        }
        let Ok(iph) = ip::parse(packet) else { return };
        let Some(l4) = packet.get(iph.payload.clone()) else {
            return;
        };
        match iph.proto {
            ip::PROTO_TCP if iph.src == self.setup.target.ip() && iph.dst == self.setup.src => {
                if csum_ready && !tcp::verify_checksum(iph.src, iph.dst, l4) {
                    return;
                }
                let Ok(view) = tcp::TcpHeaderView::new(l4) else {
                    return;
                };
                let Ok(h) = view.summary() else { return };
                if h.src_port != self.setup.target.port() {
                    return;
                }
                self.on_segment(now, &h);
            }
            1 | 58 => self.on_icmp(iph.src, iph.proto == 58, l4),
            _ => {}
        }
    }

    fn on_segment(&mut self, now: Instant, h: &tcp::SegmentHeader) {
        let f = h.flags;
        if let Some(ts) = h.options.timestamps {
            self.server_tsval = ts.val;
        }
        match (self.phase, h.dst_port) {
            (Phase::MptcpSyn, p) if p == self.port(0) => {
                if f.contains(TcpFlags::RST) && h.ack == SeqNum(self.setup.isn.wrapping_add(1)) {
                    self.refused = true;
                    self.finish(Verdict::Refused);
                    return;
                }
                if !(f.contains(TcpFlags::SYN) && f.contains(TcpFlags::ACK)) {
                    return;
                }
                if h.ack != SeqNum(self.setup.isn.wrapping_add(1)) {
                    return;
                }
                self.syn_rtt = self.first_syn_at.map(|t| now - t);
                self.server_isn = h.seq;
                let mpc = h
                    .options
                    .mptcp
                    .iter()
                    .find_map(|raw| match MptcpOption::parse(raw) {
                        Ok(MptcpOption::MpCapable(m)) => Some(m),
                        _ => None,
                    });
                match mpc {
                    Some(MpCapable {
                        version: 1,
                        flags,
                        payload: CapablePayload::SenderKey { sender_key },
                    }) => {
                        self.server = Some((Key(sender_key), flags));
                        self.phase = Phase::DataCapable;
                        self.attempt = 0;
                        self.send_third_ack();
                        self.send_attempt(now);
                    }
                    _ => {
                        // RFC 8684 §3.7: no MP_CAPABLE on the SYN/ACK → the connection is plain TCP.
                        self.synack_without_mpc = true;
                        self.reset(self.port(0), self.setup.isn.wrapping_add(1));
                        self.start(now, Phase::Trace);
                    }
                }
            }
            (Phase::PlainSyn, p) if p == self.port(1) => {
                if f.contains(TcpFlags::SYN) && f.contains(TcpFlags::ACK) {
                    self.reset(self.port(1), self.plain_isn().wrapping_add(1));
                    self.finish(Verdict::SynDropped);
                } else if f.contains(TcpFlags::RST) {
                    // The server answers plain SYNs (with a RST): it is reachable, and the SYN with
                    // option 30 is what got lost.
                    self.finish(Verdict::SynDropped);
                }
            }
            (Phase::Trace, p)
                if p == self.port(2) && f.contains(TcpFlags::SYN) && f.contains(TcpFlags::ACK) =>
            {
                self.reset(self.port(2), h.ack.0);
            }
            (Phase::DataCapable | Phase::DataDss, p) if p == self.port(0) => self.on_data_ack(now, h),
            _ => {}
        }
    }

    fn on_icmp(&mut self, router: IpAddr, v6: bool, icmp: &[u8]) {
        let (ty, code) = match icmp {
            [t, c, ..] => (*t, *c),
            _ => return,
        };
        let time_exceeded = if v6 { ty == 3 } else { ty == 11 };
        let unreachable = if v6 { ty == 1 } else { ty == 3 };
        if !time_exceeded && !unreachable {
            return;
        }
        let Some(quote) = icmp.get(8..) else { return };
        let Some((qsrc, qdst, qtcp)) = quoted_tcp(quote) else {
            return;
        };
        if qsrc != self.setup.src || qdst != self.setup.target.ip() {
            return;
        }
        let (Some(sport), Some(seq)) = (qtcp.get(0..2), qtcp.get(4..8)) else {
            return;
        };
        let sport = u16::from_be_bytes([sport[0], sport[1]]);
        let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
        if unreachable && self.setup.ports.contains(&sport) {
            self.unreachable_from = Some((router, ty, code));
            return;
        }
        if self.phase != Phase::Trace || sport != self.port(2) {
            return;
        }
        let Some(ttl) = (1..=self.setup.max_hops).find(|&t| self.trace_isn(t) == seq) else {
            return;
        };
        let option = classify_quote(self.syn_options.bytes(), self.mpc_offset, qtcp);
        self.hops.entry(ttl).or_insert(Hop { ttl, router, option });
    }

    fn conclude_trace(&mut self) {
        // The first router whose quote shows the option changed is just after the middlebox.
        let changed = self.hops.values().find(|h| {
            matches!(
                h.option,
                QuotedOption::ReplacedByNops | QuotedOption::Stripped | QuotedOption::Modified
            )
        });
        let verdict = match changed {
            Some(h) if h.option == QuotedOption::ReplacedByNops => {
                Verdict::ReplacedByNops { at_ttl: Some(h.ttl) }
            }
            Some(h) => Verdict::Stripped { at_ttl: Some(h.ttl) },
            None if self.hops.values().any(|h| h.option == QuotedOption::Intact) => Verdict::ServerNoMptcp,
            None => Verdict::NoMptcpUnlocated,
        };
        self.finish(verdict);
    }

    // ---- the MP_CAPABLE connection (phase 4) ---------------------------------------------------

    fn keys(&self) -> Option<(Key, CapableFlags)> {
        self.server
    }

    /// The options of a segment on the probe connection: timestamps (echoing the server's) when
    /// `with_ts`, then the MPTCP option `opt`.
    fn conn_options(&self, opt: &MptcpOption, with_ts: bool) -> OptionWriter {
        let mut o = OptionWriter::new();
        if with_ts {
            o.timestamps(Timestamps {
                val: TSVAL.wrapping_add(1),
                ecr: self.server_tsval,
            });
        }
        let n = opt.write(o.spare()).unwrap_or(0);
        o.advance(n);
        o
    }

    fn our_idsn(&self) -> DataSeq {
        self.setup.key.idsn()
    }

    fn send_third_ack(&mut self) {
        let Some((server_key, _)) = self.keys() else {
            return;
        };
        // RFC 8684 §3.1: the third ACK carries both keys (length 20).
        let mpc = MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(CapableFlags::HMAC_SHA256),
            payload: CapablePayload::BothKeys {
                sender_key: self.setup.key.0,
                receiver_key: server_key.0,
            },
        });
        let o = self.conn_options(&mpc, true);
        let seq = self.setup.isn.wrapping_add(1);
        let ack = self.server_isn.0.wrapping_add(1);
        self.emit(self.port(0), seq, ack, TcpFlags::ACK, o.bytes(), &[], 64);
    }

    fn send_data_capable(&mut self) {
        let Some((server_key, flags)) = self.keys() else {
            return;
        };
        let dsn = self.our_idsn().wrapping_add(1);
        let checksum = flags
            .checksum_required()
            .then(|| dss_checksum(dsn, SubflowSeq(1), PAYLOAD_1.len() as u16, PAYLOAD_1));
        // RFC 8684 §3.1: the first data segment repeats both keys, with the Data-Level Length.
        let mpc = MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(CapableFlags::HMAC_SHA256),
            payload: CapablePayload::BothKeysWithData {
                sender_key: self.setup.key.0,
                receiver_key: server_key.0,
                data_len: PAYLOAD_1.len() as u16,
                checksum,
            },
        });
        let o = self.conn_options(&mpc, true);
        let seq = self.setup.isn.wrapping_add(1);
        let ack = self.server_isn.0.wrapping_add(1);
        self.emit(
            self.port(0),
            seq,
            ack,
            TcpFlags::ACK | TcpFlags::PSH,
            o.bytes(),
            PAYLOAD_1,
            64,
        );
    }

    fn send_data_dss(&mut self) {
        let Some((server_key, flags)) = self.keys() else {
            return;
        };
        let ssn = SubflowSeq(1 + PAYLOAD_1.len() as u32);
        let dsn = self.our_idsn().wrapping_add(1 + PAYLOAD_1.len() as u64);
        let checksum = flags
            .checksum_required()
            .then(|| dss_checksum(dsn, ssn, PAYLOAD_2.len() as u16, PAYLOAD_2));
        let dss = MptcpOption::Dss(Dss {
            data_ack: Some(DsnField::Long(server_key.idsn().wrapping_add(1).0)),
            mapping: Some(DssMapping {
                dsn: DsnField::Long(dsn.0),
                subflow_seq: ssn.0,
                data_len: PAYLOAD_2.len() as u16,
                checksum,
            }),
            data_fin: false,
        });
        let o = self.conn_options(&dss, true);
        let seq = self.setup.isn.wrapping_add(1 + PAYLOAD_1.len() as u32);
        let ack = self.server_isn.0.wrapping_add(1);
        self.emit(
            self.port(0),
            seq,
            ack,
            TcpFlags::ACK | TcpFlags::PSH,
            o.bytes(),
            PAYLOAD_2,
            64,
        );
    }

    fn on_data_ack(&mut self, now: Instant, h: &tcp::SegmentHeader) {
        if h.flags.contains(TcpFlags::RST) {
            self.finish(Verdict::Pass {
                dss: DssResult::StrippedAfterHandshake,
            });
            return;
        }
        let (sent, want_data) = match self.phase {
            Phase::DataCapable => (
                PAYLOAD_1.len() as u32,
                self.our_idsn().wrapping_add(1 + PAYLOAD_1.len() as u64),
            ),
            _ => (
                (PAYLOAD_1.len() + PAYLOAD_2.len()) as u32,
                self.our_idsn()
                    .wrapping_add(1 + (PAYLOAD_1.len() + PAYLOAD_2.len()) as u64),
            ),
        };
        let want = SeqNum(self.setup.isn.wrapping_add(1 + sent));
        if h.ack.diff(want) < 0 {
            return; // not yet covering our data (e.g. a duplicate of the SYN/ACK)
        }
        let data_ack = h
            .options
            .mptcp
            .iter()
            .find_map(|raw| match MptcpOption::parse(raw) {
                Ok(MptcpOption::Dss(Dss {
                    data_ack: Some(a), ..
                })) => Some(DataSeq::from_field(a, want_data)),
                _ => None,
            });
        match data_ack {
            Some(a) if a.diff(want_data) >= 0 => {
                if self.phase == Phase::DataCapable {
                    self.phase = Phase::DataDss;
                    self.attempt = 0;
                    self.send_attempt(now);
                } else {
                    self.close_connection();
                    self.finish(Verdict::Pass {
                        dss: DssResult::Passes,
                    });
                }
            }
            // A DATA_ACK behind the TCP-level ACK: the data reached the subflow but not yet the
            // connection-level receive queue (Linux acks at the subflow level first when the
            // application holds its socket). Not a fallback: wait, and the retransmission this
            // phase's timer sends draws a fresh DATA_ACK.
            Some(_) => {}
            // A TCP-level ACK of our data without a DATA_ACK: the server fell back to TCP, because
            // our options (or its own) were removed on the way (RFC 8684 §3.7).
            None => {
                self.close_connection();
                self.finish(Verdict::Pass {
                    dss: DssResult::StrippedAfterHandshake,
                });
            }
        }
    }

    fn close_connection(&mut self) {
        let seq = self
            .setup
            .isn
            .wrapping_add(1 + (PAYLOAD_1.len() + PAYLOAD_2.len()) as u32);
        if let Some((server_key, _)) = self.keys() {
            // RFC 8684 §3.5: MP_FASTCLOSE carries the receiver's key; then a RST.
            let fc = MptcpOption::MpFastclose {
                receiver_key: server_key.0,
            };
            let o = self.conn_options(&fc, false);
            let ack = self.server_isn.0.wrapping_add(1);
            self.emit(self.port(0), seq, ack, TcpFlags::ACK, o.bytes(), &[], 64);
        }
        self.reset(self.port(0), seq);
    }

    fn reset(&mut self, sport: u16, seq: u32) {
        self.emit(sport, seq, 0, TcpFlags::RST, &[], &[], 64);
    }
}

/// Cross-path reasoning: when one path got MP_CAPABLE from the server, another path that saw no
/// MP_CAPABLE cannot blame the server; its middlebox removed the option.
pub fn reconcile(reports: &mut [PathReport]) {
    if !reports.iter().any(|r| r.verdict.server_speaks_mptcp()) {
        return;
    }
    for r in reports.iter_mut() {
        if matches!(r.verdict, Verdict::ServerNoMptcp | Verdict::NoMptcpUnlocated) {
            let intact_until_ttl = r
                .hops
                .iter()
                .filter(|h| h.option == QuotedOption::Intact)
                .map(|h| h.ttl)
                .max();
            r.verdict = Verdict::RemovedOnPath { intact_until_ttl };
        }
    }
}

/// The options of a Linux SYN: MSS, SACK-permitted, timestamps, window scale.
fn plain_syn_options() -> OptionWriter {
    let mut o = OptionWriter::new();
    o.mss(MSS);
    o.sack_permitted_timestamps(Timestamps { val: TSVAL, ecr: 0 });
    o.wscale(WSCALE);
    o
}

/// Sets the IPv4 TTL (fixing the header checksum) or the IPv6 hop limit of a built packet.
fn set_ttl(packet: &mut [u8], ttl: u8) {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            packet[8] = ttl;
            packet[10..12].copy_from_slice(&[0, 0]);
            let ihl = usize::from(packet[0] & 0xf) * 4;
            let c = Checksum::new()
                .add_bytes(&packet[..ihl.min(packet.len())])
                .finish();
            packet[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if packet.len() >= 40 => packet[7] = ttl,
        _ => {}
    }
}

/// The addresses and the (possibly truncated) TCP header of a packet quoted in an ICMP error.
/// Lenient on purpose: a quote is cut short by design, so lengths are not checked against it.
fn quoted_tcp(quote: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match quote.first()? >> 4 {
        4 => {
            let ihl = usize::from(quote[0] & 0xf) * 4;
            if ihl < 20 || *quote.get(9)? != ip::PROTO_TCP {
                return None;
            }
            let src: [u8; 4] = quote.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = quote.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), quote.get(ihl..)?))
        }
        6 => {
            if *quote.get(6)? != ip::PROTO_TCP {
                return None;
            }
            let src: [u8; 16] = quote.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = quote.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), quote.get(40..)?))
        }
        _ => None,
    }
}

/// Compares the options of a quoted SYN with the ones we sent (option 30 at `mpc_offset`).
pub fn classify_quote(sent: &[u8], mpc_offset: usize, quoted_tcp: &[u8]) -> QuotedOption {
    let Some(&off_byte) = quoted_tcp.get(12) else {
        return QuotedOption::NotQuoted;
    };
    let hlen = usize::from(off_byte >> 4) * 4;
    let sent_hlen = 20 + sent.len().div_ceil(4) * 4;
    let Some(opts) = quoted_tcp.get(20..hlen.max(20)) else {
        // Header shorter than what we sent and cut short, or the quote stops inside the options.
        let avail = quoted_tcp.get(20..).unwrap_or(&[]);
        if hlen < sent_hlen {
            return QuotedOption::Stripped;
        }
        return if avail.len() > mpc_offset + 3 {
            classify_opts(sent, mpc_offset, avail)
        } else {
            QuotedOption::NotQuoted
        };
    };
    if hlen < sent_hlen {
        return if opts.contains(&30) && classify_opts(sent, mpc_offset, opts) == QuotedOption::Intact {
            QuotedOption::Intact
        } else {
            QuotedOption::Stripped
        };
    }
    classify_opts(sent, mpc_offset, opts)
}

fn classify_opts(sent: &[u8], mpc_offset: usize, opts: &[u8]) -> QuotedOption {
    let mpc_sent = &sent[mpc_offset..];
    let mpc_len = usize::from(mpc_sent.get(1).copied().unwrap_or(4)).min(mpc_sent.len());
    let has_mptcp = tcp::OptionIter::new(opts)
        .any(|o| matches!(o, Ok(tcp::TcpOption::Mptcp(raw)) if raw == &mpc_sent[..mpc_len]));
    if has_mptcp {
        return QuotedOption::Intact;
    }
    match opts.get(mpc_offset..mpc_offset + mpc_len) {
        Some(b) if b.iter().all(|&x| x == 1) => QuotedOption::ReplacedByNops,
        _ => QuotedOption::Modified,
    }
}
