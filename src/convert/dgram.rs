//! The datagram relay between the laptop and the converter, sans-IO: the codec of one relay
//! datagram, its MAC under the client's key, the anti-replay window, and the laptop's state of
//! one relayed session ([`ClientSession`]). The converter's table of sessions is `relay.rs`.
//!
//! UDP and ICMP echo of the laptop's hosts are carried as UDP datagrams to the converter's
//! port (the TCP listener's port), never inside a TCP byte stream, so a datagram never waits
//! behind a lost one. One datagram:
//!
//! ```text
//! 0      magic 0xd7
//! 1      kind: 1 data up (laptop → converter), 2 data down, 3 ack (down), 4 refused (down),
//!        5 echo up (an ICMP/ICMPv6 echo request), 6 echo down (its echo reply)
//! 2      flags: bit 0 ACK_REQUESTED (up: answer with an ack), bit 1 REDUNDANT (up: this
//!        datagram goes on every path, same number; send the session's down datagrams to each
//!        return path verified for it, see `relay.rs`), bits 2-3 the copy's index (0 on the
//!        first path, 1.. on the others; each copy is MAC'd on its own)
//! 3      family of the inner address: 4, 6 (or 0: none, ack and refused)
//! 4..12  key id (the client key's public id, as in the Cookie TLV, `cookie.rs`)
//! 12..20 session id (chosen by the laptop, random)
//! 20..28 sequence number (per session and direction, from 1; refused: the refused datagram's)
//! 28..36 timestamp (unix seconds of the sender)
//! ...    inner address (4 or 16 bytes) and port (2): up the destination, down the source
//!        (echo: port 0)
//! ...    payload (the host's UDP payload; echo: the whole ICMP message, type to data, as the
//!        host sent it or the destination answered; refused: one reason byte)
//! last16 HMAC-SHA256(secret, LABEL ‖ every byte before the MAC), truncated to 16 bytes
//! ```
//!
//! Security (the converter's Cookie TLV model, `convert/mod.rs`, applied per datagram):
//! - every datagram is authenticated under the client key; the direction is in the MAC'd kind,
//!   so a datagram cannot be reflected back to its sender as the other direction;
//! - replay-proof within a session by a sliding window (RFC 4303 §3.4.3, bitmap as RFC 6479):
//!   a sequence number accepted once, or older than the window, is refused;
//! - the first datagram of a session proves the key (MAC) and is fresh (timestamp within the
//!   allowed clock skew) before the converter creates any state or sends anything anywhere; an
//!   ended session leaves a tombstone (its last sequence number) for as long as its datagrams'
//!   timestamps are fresh, so a captured datagram cannot reopen it (`relay.rs`);
//! - the return path moves to the address of the newest authenticated datagram (as WireGuard's
//!   roaming): a replayed or forged datagram from elsewhere moves nothing;
//! - not covered: confidentiality (payloads are clear text, as the host's UDP is without us).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::key::{ClientKey, KeyId};
use crate::time::Instant;

type HmacSha256 = Hmac<Sha256>;

/// First byte of every relay datagram.
pub const MAGIC: u8 = 0xd7;
/// Bytes of the truncated MAC.
pub const MAC_LEN: usize = 16;
/// Bytes before the inner address.
pub const FIXED_LEN: usize = 36;
/// The largest overhead a relay datagram adds to a payload (IPv6 inner address).
pub const MAX_OVERHEAD: usize = FIXED_LEN + 18 + MAC_LEN;
/// Domain separation of this MAC from the cookie's (the same secret).
const LABEL: &[u8; 24] = b"mpbond-relay-datagram-v1";
/// Ask-for-ack flag.
pub const ACK_REQUESTED: u8 = 1;
/// Redundant-session flag: the laptop sends each datagram of the session on every path with
/// the same sequence number (the second copy is a duplicate to the window, not an attack) and
/// wants the converter's datagrams on every return path too.
pub const REDUNDANT: u8 = 2;
/// Where a redundant datagram's copy index is in the flags (bits 2-3).
pub const COPY_SHIFT: u8 = 2;
/// Copies of one datagram at most (the first and three others: one per path).
pub const MAX_COPIES: u8 = 4;

/// The copy index in `flags`.
pub fn copy_index(flags: u8) -> u8 {
    (flags >> COPY_SHIFT) & (MAX_COPIES - 1)
}

/// What a relay datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A host's datagram, laptop → converter → destination.
    Up,
    /// A destination's datagram, converter → laptop.
    Down,
    /// The converter's answer to [`ACK_REQUESTED`]: the path and the session are alive.
    Ack,
    /// The converter will not relay this session (the reason byte is the payload).
    Refused,
    /// A host's ICMP / ICMPv6 echo request, laptop → converter → destination (the converter
    /// sends it from its own address with an identifier of its own).
    EchoUp,
    /// The destination's echo reply, converter → laptop (the identifier is the converter's; the
    /// laptop puts back the host's).
    EchoDown,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Up => 1,
            Kind::Down => 2,
            Kind::Ack => 3,
            Kind::Refused => 4,
            Kind::EchoUp => 5,
            Kind::EchoDown => 6,
        }
    }

    /// Whether datagrams of this kind carry an inner address and a payload of a session.
    pub fn is_data(self) -> bool {
        matches!(self, Kind::Up | Kind::Down | Kind::EchoUp | Kind::EchoDown)
    }

    /// Whether only the laptop sends this kind.
    pub fn is_up(self) -> bool {
        matches!(self, Kind::Up | Kind::EchoUp)
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Up,
            2 => Kind::Down,
            3 => Kind::Ack,
            4 => Kind::Refused,
            5 => Kind::EchoUp,
            6 => Kind::EchoDown,
            _ => return None,
        })
    }
}

/// A relay session's id (the laptop picks it at random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// Why the converter refuses a session (the payload byte of a [`Kind::Refused`] datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Its egress policy prohibits the destination.
    Policy,
    /// A limit (per key, in all).
    Limit,
    /// It could not open a socket toward the destination.
    Failure,
}

impl RefuseReason {
    /// The payload byte.
    pub fn code(self) -> u8 {
        match self {
            RefuseReason::Policy => 1,
            RefuseReason::Limit => 2,
            RefuseReason::Failure => 3,
        }
    }
    fn from_code(c: u8) -> RefuseReason {
        match c {
            1 => RefuseReason::Policy,
            2 => RefuseReason::Limit,
            _ => RefuseReason::Failure,
        }
    }
    /// snake_case name (status, logs).
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::Policy => "policy",
            RefuseReason::Limit => "limit",
            RefuseReason::Failure => "failure",
        }
    }
}

/// The header of a relay datagram (everything but the payload and the MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What it is.
    pub kind: Kind,
    /// Flags ([`ACK_REQUESTED`]).
    pub flags: u8,
    /// The client key.
    pub key: KeyId,
    /// The session.
    pub session: RelayId,
    /// Sequence number.
    pub seq: u64,
    /// The sender's unix time, seconds.
    pub timestamp: u64,
    /// Up: the destination; down: the source. None for ack and refused.
    pub addr: Option<SocketAddr>,
}

/// Why bytes are not a relay datagram we accept. Every variant is a counted drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DgramError {
    /// Shorter than its header and MAC.
    #[error("datagram too short")]
    Short,
    /// Does not start with [`MAGIC`].
    #[error("not a relay datagram")]
    NotRelay,
    /// Unknown kind or address family, or an address where none belongs.
    #[error("malformed relay datagram")]
    Malformed,
    /// The MAC does not verify (wrong key, altered bytes).
    #[error("relay datagram MAC does not verify")]
    BadMac,
    /// The output buffer is too small.
    #[error("buffer too small for the relay datagram")]
    NoRoom,
}

fn addr_len(a: Option<SocketAddr>) -> usize {
    match a {
        None => 0,
        Some(SocketAddr::V4(_)) => 6,
        Some(SocketAddr::V6(_)) => 18,
    }
}

fn mac(key: &ClientKey, bytes: &[u8]) -> HmacSha256 {
    // Zero-padded to the block as in `cookie.rs` (the same HMAC, RFC 2104 §2).
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key.secret());
    let mut m = HmacSha256::new(&block.into());
    m.update(LABEL);
    m.update(bytes);
    m
}

/// Writes the datagram `h` ‖ `payload` ‖ MAC under `key` into `out`; its length.
pub fn seal(key: &ClientKey, h: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, DgramError> {
    let alen = addr_len(h.addr);
    let total = FIXED_LEN + alen + payload.len() + MAC_LEN;
    let out = out.get_mut(..total).ok_or(DgramError::NoRoom)?;
    out[0] = MAGIC;
    out[1] = h.kind.code();
    out[2] = h.flags;
    out[3] = match h.addr {
        None => 0,
        Some(SocketAddr::V4(_)) => 4,
        Some(SocketAddr::V6(_)) => 6,
    };
    out[4..12].copy_from_slice(&h.key.0);
    out[12..20].copy_from_slice(&h.session.0.to_be_bytes());
    out[20..28].copy_from_slice(&h.seq.to_be_bytes());
    out[28..36].copy_from_slice(&h.timestamp.to_be_bytes());
    let mut at = FIXED_LEN;
    if let Some(a) = h.addr {
        match a.ip() {
            IpAddr::V4(v4) => out[at..at + 4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out[at..at + 16].copy_from_slice(&v6.octets()),
        }
        at += alen - 2;
        out[at..at + 2].copy_from_slice(&a.port().to_be_bytes());
        at += 2;
    }
    out[at..at + payload.len()].copy_from_slice(payload);
    at += payload.len();
    let tag = mac(key, &out[..at]).finalize().into_bytes();
    out[at..].copy_from_slice(&tag[..MAC_LEN]);
    Ok(total)
}

/// A relay datagram read but not yet authenticated: the header (to find the key and the
/// session, and to check the replay window first, RFC 4303 §3.4.3) and where the payload is.
#[derive(Debug, Clone, Copy)]
pub struct Unverified<'a> {
    /// The header as received.
    pub header: Header,
    bytes: &'a [u8],
    payload_at: usize,
}

impl<'a> Unverified<'a> {
    /// Checks the MAC with `key` (constant time); the payload once it verified.
    pub fn verify(&self, key: &ClientKey) -> Result<&'a [u8], DgramError> {
        let end = self.bytes.len() - MAC_LEN;
        if key.id() != self.header.key {
            return Err(DgramError::BadMac);
        }
        mac(key, &self.bytes[..end])
            .verify_truncated_left(&self.bytes[end..])
            .map_err(|_| DgramError::BadMac)?;
        Ok(&self.bytes[self.payload_at..end])
    }
}

/// Parses the framing of `bytes` (no MAC check yet). Never panics.
pub fn parse(bytes: &[u8]) -> Result<Unverified<'_>, DgramError> {
    if bytes.first() != Some(&MAGIC) {
        return Err(DgramError::NotRelay);
    }
    if bytes.len() < FIXED_LEN + MAC_LEN {
        return Err(DgramError::Short);
    }
    let kind = Kind::from_code(bytes[1]).ok_or(DgramError::Malformed)?;
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let mut key = [0u8; 8];
    key.copy_from_slice(&bytes[4..12]);
    let alen = match bytes[3] {
        0 => 0,
        4 => 6,
        6 => 18,
        _ => return Err(DgramError::Malformed),
    };
    if bytes.len() < FIXED_LEN + alen + MAC_LEN {
        return Err(DgramError::Short);
    }
    let a = &bytes[FIXED_LEN..FIXED_LEN + alen];
    let addr = match alen {
        6 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            u16::from_be_bytes([a[4], a[5]]),
        )),
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                u16::from_be_bytes([a[16], a[17]]),
            ))
        }
        _ => None,
    };
    // Data carries an address; ack and refused do not.
    if kind.is_data() != addr.is_some() {
        return Err(DgramError::Malformed);
    }
    Ok(Unverified {
        header: Header {
            kind,
            flags: bytes[2],
            key: KeyId(key),
            session: RelayId(u64_at(12)),
            seq: u64_at(20),
            timestamp: u64_at(28),
            addr,
        },
        bytes,
        payload_at: FIXED_LEN + alen,
    })
}

/// Bits of the anti-replay window (RFC 4303 §3.4.3: "a minimum window size of 32 packets MUST
/// be supported"; we keep 1024, room for reordering between two paths at a failover).
pub const WINDOW: u64 = 1024;

/// A sequence number the window refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Zero is never sent.
    #[error("sequence number zero")]
    Zero,
    /// Older than the window (RFC 4303 §3.4.3: "packets that fall to the left of the window
    /// MUST be rejected").
    #[error("sequence number left of the window")]
    TooOld,
    /// Received before (RFC 4303 §3.4.3: "duplicates are rejected").
    #[error("sequence number seen before")]
    Duplicate,
}

/// The sliding anti-replay window of one direction of one session: the highest sequence number
/// accepted and a bitmap of the [`WINDOW`] numbers up to it (RFC 6479's bitmap, indexed by the
/// number modulo the window). Call [`ReplayWindow::check`] before the MAC check, and
/// [`ReplayWindow::accept`] only after the MAC verified (RFC 4303 §3.4.3: "the receive window
/// is updated only if the integrity verification succeeds").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    top: u64,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// Nothing accepted yet.
    pub fn new() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            bits: [0; (WINDOW / 64) as usize],
        }
    }

    /// A window whose numbers up to `floor` count as seen (a session reopened after its
    /// tombstone: nothing at or below its last number may come again).
    pub fn starting_after(floor: u64) -> ReplayWindow {
        let mut w = ReplayWindow::new();
        w.top = floor;
        w.bits = [u64::MAX; (WINDOW / 64) as usize];
        w
    }

    /// The highest number accepted (0: none).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `seq` would be accepted.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(Replay::TooOld);
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Accepts `seq` (after the MAC verified); true if it is the newest so far.
    pub fn accept(&mut self, seq: u64) -> Result<bool, Replay> {
        self.check(seq)?;
        let newest = seq > self.top;
        if newest {
            if seq - self.top >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                // Clear the bits of the numbers the window slides over (at most WINDOW - 1).
                for s in self.top + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
        }
        let (w, b) = Self::bit(seq);
        self.bits[w] |= b;
        Ok(newest)
    }
}

/// The laptop asks for an ack when it heard nothing from the converter for this long (three
/// packets of a 50 pkt/s stream), on a path whose ack round trip is not measured yet; on one
/// that is, after one round trip of silence (at least [`ACK_AFTER_MIN`]): a blackhole is then
/// suspected, and copies go out, two round trips after the last datagram came back.
pub const ACK_AFTER: Duration = Duration::from_millis(60);
/// The shortest silence that asks for an ack (one packet interval of a 50 pkt/s stream).
pub const ACK_AFTER_MIN: Duration = Duration::from_millis(20);
/// At most one ack request per this interval.
pub const ACK_EVERY: Duration = Duration::from_millis(50);
/// A path on which acks were asked for this long without an answer is silent (at least; three
/// times the ack round trip measured on the path when that is longer, so that a slow path is not
/// taken for a dead one). As aggressive as the MPTCP subflows' own liveness (2 RTTs, at least
/// RTT + 20 ms), whose verdict (the interface held unresponsive) it shares.
pub const SILENT_MIN: Duration = Duration::from_millis(150);
/// The same on a path whose ack round trip is not measured yet (the first ack request of a
/// session measures it; after a move the new path has none until its first ack): slow enough
/// for any real path's round trip.
pub const SILENT_UNMEASURED: Duration = Duration::from_secs(1);
/// At most this many recent datagrams are kept per session to be sent again on the other paths
/// when its path becomes suspect ([`ClientSession::take_resend`]): a 50 pkt/s stream's datagrams
/// of the 120 ms before a suspicion (a round trip before the last answer, the silence that asks,
/// the wait for the ack).
pub const RECENT_MAX: usize = 6;
/// A datagram older than this is not sent again at a suspicion: it either arrived, or is too
/// late to matter to an interactive flow.
pub const RECENT_AGE: Duration = Duration::from_millis(200);
/// A session that sealed more than this many datagrams in the last [`RATE_WINDOW`] (above
/// 500 a second: a bulk transfer, not an interactive stream — RTP, games and DNS send tens to a
/// few hundred) gets no copies while its path is suspect: they would double a bulk flow's
/// load on the other path (and cellular data) for the suspicion's length, and the load they
/// add is itself the queueing that keeps the path suspect.
pub const BULK_DATAGRAMS: u32 = 50;
/// The window of [`BULK_DATAGRAMS`].
pub const RATE_WINDOW: Duration = Duration::from_millis(100);
/// A session never answered for this long (and asked at least twice): the converter is not there.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A session the converter answered before is taken for one whose converter is gone (and
/// goes direct, from another address) only once nothing came from the converter on any path
/// for this long, after a path was found silent: a path that is congested, blackholed for a
/// moment or the only one left is waited for, since going direct changes the session's
/// address at the destination. As long as the first silence on a path never measured
/// ([`SILENT_UNMEASURED`]), so a converter that died is still left as soon as the second
/// path is found silent too.
pub const CONVERTER_GONE: Duration = SILENT_UNMEASURED;

/// What the laptop concludes about a relayed session's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answers come (or it is too early to tell).
    Fine,
    /// The converter never answered: relay this session direct instead.
    ConverterSilent,
    /// The converter answered before but no longer does on this path: move the path.
    PathSilent,
}

/// The laptop's state of a session before the converter answered, and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Nothing heard yet: every datagram asks for an ack (rate-limited).
    Opening { since: Instant },
    /// Heard from the converter at `last_heard`.
    Open { last_heard: Instant },
}

/// What a verified datagram from the converter says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down<'a> {
    /// A destination's datagram for the host: from `from`.
    Data {
        /// Its source.
        from: SocketAddr,
        /// The UDP payload.
        payload: &'a [u8],
    },
    /// The path and the session are alive.
    Ack,
    /// The converter will not relay this session.
    Refused(RefuseReason),
}

/// Why a datagram from the converter was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DownError {
    /// Not a valid relay datagram.
    #[error(transparent)]
    Dgram(#[from] DgramError),
    /// A replay or a number left of the window.
    #[error(transparent)]
    Replay(#[from] Replay),
    /// Another session's, an up datagram, or a refusal of a number never sent.
    #[error("relay datagram not for this session")]
    NotOurs,
    /// A redundant session's authentic copy of a datagram already received (it came on the
    /// other path too): dropped, counted apart from replays.
    #[error("the other path's copy of a datagram already received")]
    Copy,
}

/// One host UDP session relayed through a converter, the laptop's side: sealing what the host
/// sends, opening what comes back, and whether the current path still answers.
///
/// Call order: [`ClientSession::seal_up`] for each host datagram (then send it to the converter
/// on the session's path); [`ClientSession::open_down`] for each datagram from the converter;
/// [`ClientSession::health`] before each send; [`ClientSession::path_moved`] after the path
/// changed.
#[derive(Debug, Clone)]
pub struct ClientSession {
    id: RelayId,
    dst: SocketAddr,
    next_seq: u64,
    recv: ReplayWindow,
    state: ClientState,
    /// When an unanswered ack request was first sent on this path.
    asked_since: Option<Instant>,
    /// When the first ack request not answered by an ack was sent (data answers end
    /// `asked_since`, not this): the round trip's sample runs from it.
    ack_wait: Option<Instant>,
    /// Smoothed time between the converter's answers on this path (data or acks): a session
    /// answered more often than the silence that asks is a two-way stream, whose silence is
    /// itself the sign of a blackhole.
    answer_every: Option<Duration>,
    last_ask: Option<Instant>,
    asks: u32,
    /// Smoothed time from the first unanswered ack request to the answer, on this path.
    srtt: Option<Duration>,
    /// Redundant: every datagram goes on every path ([`REDUNDANT`]).
    redundant: bool,
    /// Copies go on the other paths too while this path is suspect ([`ClientSession::suspect`]).
    copy_when_suspect: bool,
    /// An ICMP echo session ([`Kind::EchoUp`] / [`Kind::EchoDown`]), else UDP.
    echo: bool,
    /// The small datagrams sent lately (copy-when-suspect sessions only): sent again on the
    /// other paths when the path becomes suspect, since those sent into a blackhole before the
    /// suspicion are lost.
    recent: VecDeque<Recent>,
    /// This suspicion's datagrams were sent again ([`ClientSession::take_resend`]).
    resent: bool,
    /// The suspicion time last handed out by [`ClientSession::arm`].
    armed: Option<Instant>,
    /// When an authentic datagram of this session last came from the converter, on any path.
    heard_any: Option<Instant>,
    /// The rate window: its start, the datagrams sealed in it and in the one before.
    window: (Instant, u32, u32),
}

/// A datagram a copy-when-suspect session sent lately ([`ClientSession::remember`]).
#[derive(Debug, Clone)]
struct Recent {
    seq: u64,
    at: Instant,
    payload: Vec<u8>,
}

impl ClientSession {
    /// A new session `id` toward `dst`, started at `now`.
    pub fn new(id: RelayId, dst: SocketAddr, now: Instant) -> ClientSession {
        ClientSession {
            id,
            dst,
            next_seq: 1,
            recv: ReplayWindow::new(),
            state: ClientState::Opening { since: now },
            asked_since: None,
            ack_wait: None,
            answer_every: None,
            last_ask: None,
            asks: 0,
            srtt: None,
            redundant: false,
            copy_when_suspect: false,
            echo: false,
            recent: VecDeque::new(),
            resent: false,
            armed: None,
            heard_any: None,
            window: (now, 0, 0),
        }
    }

    /// A new ICMP echo session `id` toward `dst` (the host's echo requests to it go up as
    /// [`Kind::EchoUp`], the replies come down as [`Kind::EchoDown`]), started at `now`.
    pub fn new_echo(id: RelayId, dst: IpAddr, now: Instant) -> ClientSession {
        let mut s = ClientSession::new(id, SocketAddr::new(dst, 0), now);
        s.echo = true;
        s
    }

    /// Whether it carries ICMP echo (else UDP).
    pub fn is_echo(&self) -> bool {
        self.echo
    }

    /// The kind of what it sends.
    fn up_kind(&self) -> Kind {
        if self.echo { Kind::EchoUp } else { Kind::Up }
    }

    /// While the path is suspect, send copies on the other paths (handover mode: a blackhole
    /// then costs the suspicion's start, not the whole wait until the path is declared silent).
    pub fn set_copy_when_suspect(&mut self, on: bool) {
        self.copy_when_suspect = on;
    }

    /// Whether it sends copies while its path is suspect: a copy-when-suspect session that is
    /// not a bulk flow ([`BULK_DATAGRAMS`]).
    fn copies_when_suspect(&self) -> bool {
        self.copy_when_suspect && self.window.1.max(self.window.2) <= BULK_DATAGRAMS
    }

    /// Counts a datagram sealed at `now` in the rate window.
    fn count_rate(&mut self, now: Instant) {
        let (start, cur, _) = self.window;
        let since = now.saturating_duration_since(start);
        if since >= RATE_WINDOW * 2 {
            self.window = (now, 0, 0);
        } else if since >= RATE_WINDOW {
            self.window = (start + RATE_WINDOW, 0, cur);
        }
        self.window.1 = self.window.1.saturating_add(1);
    }

    /// Whether the path is suspect at `now`, before [`Health::PathSilent`] declares it: an ack
    /// asked for is late by a quarter of the ack round trip measured (by [`ACK_EVERY`] when none
    /// is), or a two-way stream (answered more often than [`ClientSession::ask_after`]) has been
    /// silent that long past the silence that asks.
    pub fn suspect(&self, now: Instant) -> bool {
        self.suspect_since().is_some_and(|t| now >= t)
    }

    /// When the path becomes suspect if no answer comes (see [`ClientSession::suspect`]);
    /// `None` if no suspicion can come without a new ack request.
    fn suspect_since(&self) -> Option<Instant> {
        let ClientState::Open { last_heard } = self.state else {
            return None;
        };
        // The measured round trip runs from the first unanswered request (an over-estimate),
        // so a quarter more is late already.
        let late = self.srtt.map_or(ACK_EVERY, |r| r + r / 4);
        let asked = self.asked_since.map(|t| t + late);
        let ask_after = self.ask_after();
        let silent = self
            .answer_every
            .filter(|&e| e < ask_after)
            .map(|_| last_heard + ask_after + late);
        match (asked, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A suspicion time not handed out before: when the engine should look at the session
    /// again ([`ClientSession::take_resend`]). `None`: no suspicion can come (no ack request
    /// outstanding, not a copy-when-suspect session, or this suspicion's resend is done).
    pub fn arm(&mut self) -> Option<Instant> {
        if !self.copies_when_suspect() || self.redundant || self.resent {
            return None;
        }
        let t = self.suspect_since()?;
        if self.armed == Some(t) {
            return None;
        }
        self.armed = Some(t);
        Some(t)
    }

    /// Keeps the datagram [`ClientSession::seal_up`] sealed last (its host payload), to send it
    /// again on the other paths if the path becomes suspect before an answer (a copy-when-suspect
    /// session only, for datagrams the caller would copy; at most [`RECENT_MAX`], none older
    /// than [`RECENT_AGE`]).
    pub fn remember(&mut self, now: Instant, payload: &[u8]) {
        if !self.copies_when_suspect() || self.redundant || self.next_seq <= 1 {
            return;
        }
        // The oldest's buffer is reused: a steady stream allocates nothing.
        let mut buf = Vec::new();
        while self.recent.len() >= RECENT_MAX
            || self
                .recent
                .front()
                .is_some_and(|r| now.saturating_duration_since(r.at) > RECENT_AGE)
        {
            if let Some(r) = self.recent.pop_front() {
                buf = r.payload;
            }
        }
        buf.clear();
        buf.extend_from_slice(payload);
        self.recent.push_back(Recent {
            seq: self.next_seq - 1,
            at: now,
            payload: buf,
        });
    }

    /// At the path's suspicion: the datagrams sent since a round trip before the converter was
    /// last heard (those a blackhole may have swallowed; a copy of one that did arrive is
    /// dropped by the converter's window), once per suspicion, as (number, host payload), to
    /// seal with [`ClientSession::seal_copy_of`] for the other paths. Empty if the path is not
    /// suspect at `now`.
    pub fn take_resend(&mut self, now: Instant) -> Vec<(u64, Vec<u8>)> {
        if self.resent || self.redundant || !self.copies_when_suspect() || !self.suspect(now) {
            return Vec::new();
        }
        self.resent = true;
        self.take_recent(now)
    }

    /// The recent datagrams a path that failed may have swallowed: those sent since a round trip
    /// before the converter was last heard (all kept ones before it was ever heard), none older
    /// than [`RECENT_AGE`], as (number, host payload); for the other paths when the session
    /// moves off a path that went away (before [`ClientSession::path_moved`]) or at a
    /// suspicion ([`ClientSession::take_resend`]).
    pub fn take_recent(&mut self, now: Instant) -> Vec<(u64, Vec<u8>)> {
        let since = match self.state {
            ClientState::Open { last_heard } => last_heard.saturating_sub(self.srtt.unwrap_or(ACK_AFTER)),
            ClientState::Opening { .. } => Instant::ZERO,
        };
        self.recent
            .drain(..)
            .filter(|r| r.at >= since && now.saturating_duration_since(r.at) <= RECENT_AGE)
            .map(|r| (r.seq, r.payload))
            .collect()
    }

    /// Whether the datagram sealed now goes on every path: a redundant session, or one whose
    /// path is suspect (when it copies then, and is no bulk flow).
    pub fn sends_copies(&self, now: Instant) -> bool {
        self.redundant || (self.copies_when_suspect() && self.suspect(now))
    }

    /// From now on the session is (or is not) redundant: its datagrams carry [`REDUNDANT`] (the
    /// caller sends each on every path) and the converter answers on every path.
    pub fn set_redundant(&mut self, on: bool) {
        self.redundant = on;
    }

    /// Whether the session is redundant.
    pub fn is_redundant(&self) -> bool {
        self.redundant
    }

    /// How long a silence asks for an ack ([`ACK_AFTER`]).
    pub fn ask_after(&self) -> Duration {
        self.srtt.map_or(ACK_AFTER, |r| r.clamp(ACK_AFTER_MIN, ACK_AFTER))
    }

    /// How long ack requests may go unanswered before the path is silent.
    pub fn silent_after(&self) -> Duration {
        self.srtt.map_or(SILENT_UNMEASURED, |r| (3 * r).max(SILENT_MIN))
    }

    /// The smoothed ack round trip measured on this path, if any.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Its id.
    pub fn id(&self) -> RelayId {
        self.id
    }

    /// Whether the converter answered at least once.
    pub fn is_open(&self) -> bool {
        matches!(self.state, ClientState::Open { .. })
    }

    /// Seals the host's `payload` into `out` (sequence number, timestamp `unix_secs`, the MAC);
    /// its length.
    pub fn seal_up(
        &mut self,
        now: Instant,
        unix_secs: u64,
        key: &ClientKey,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DgramError> {
        let silent = match self.state {
            ClientState::Opening { .. } => true,
            ClientState::Open { last_heard } => now.saturating_duration_since(last_heard) >= self.ask_after(),
        };
        let ask = silent
            && self
                .last_ask
                .is_none_or(|t| now.saturating_duration_since(t) >= ACK_EVERY);
        let copies = self.sends_copies(now);
        let h = Header {
            kind: self.up_kind(),
            flags: if ask { ACK_REQUESTED } else { 0 } | if copies { REDUNDANT } else { 0 },
            key: key.id(),
            session: self.id,
            seq: self.next_seq,
            timestamp: unix_secs,
            addr: Some(self.dst),
        };
        let n = seal(key, &h, payload, out)?;
        self.next_seq += 1;
        self.count_rate(now);
        if ask {
            self.last_ask = Some(now);
            self.asked_since.get_or_insert(now);
            self.ack_wait.get_or_insert(now);
            self.asks = self.asks.saturating_add(1);
        }
        Ok(n)
    }

    /// The number of the datagram [`ClientSession::seal_up`] sealed last (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Seals copy `index` (1..[`MAX_COPIES`]) of the datagram numbered `seq` (one sealed
    /// before, with this `payload`: [`ClientSession::take_resend`]) for another path.
    pub fn seal_copy_of(
        &self,
        seq: u64,
        unix_secs: u64,
        key: &ClientKey,
        payload: &[u8],
        index: u8,
        out: &mut [u8],
    ) -> Result<usize, DgramError> {
        if index == 0 || index >= MAX_COPIES || seq == 0 || seq >= self.next_seq {
            return Err(DgramError::Malformed);
        }
        let h = Header {
            kind: self.up_kind(),
            flags: REDUNDANT | (index << COPY_SHIFT),
            key: key.id(),
            session: self.id,
            seq,
            timestamp: unix_secs,
            addr: Some(self.dst),
        };
        seal(key, &h, payload, out)
    }

    /// Opens a datagram from the converter that came on the session's path.
    pub fn open_down<'a>(
        &mut self,
        now: Instant,
        key: &ClientKey,
        bytes: &'a [u8],
    ) -> Result<Down<'a>, DownError> {
        self.open_down_on(now, key, bytes, true)
    }

    /// Opens a datagram from the converter; `on_path`: it came on the session's path (else on
    /// another one, where a copy went: it proves the converter alive but not this path, whose
    /// ack requests stay unanswered — unless the session is redundant, for which any path's
    /// answer counts).
    pub fn open_down_on<'a>(
        &mut self,
        now: Instant,
        key: &ClientKey,
        bytes: &'a [u8],
        on_path: bool,
    ) -> Result<Down<'a>, DownError> {
        let u = parse(bytes)?;
        let h = u.header;
        // Our direction only, and data of this session's kind (a UDP session's number cannot
        // be spent by an echo reply, nor the other way round).
        let other_kind = match h.kind {
            Kind::Down => self.echo,
            Kind::EchoDown => !self.echo,
            k => k.is_up(),
        };
        if h.session != self.id || h.key != key.id() || other_kind {
            return Err(DownError::NotOurs);
        }
        if h.kind == Kind::Refused {
            // Not in the window (the converter keeps no state for a refused session): it names
            // the refused number instead, which must be one we sent.
            let payload = u.verify(key)?;
            if h.seq == 0 || h.seq >= self.next_seq {
                return Err(DownError::NotOurs);
            }
            return Ok(Down::Refused(RefuseReason::from_code(
                payload.first().copied().unwrap_or(0),
            )));
        }
        if let Err(r) = self.recv.check(h.seq) {
            if r == Replay::Duplicate && (self.redundant || self.copy_when_suspect) {
                // The converter sent it on every return path (REDUNDANT): the second copy is
                // expected. The MAC tells an authentic copy from a replayed forgery attempt.
                u.verify(key)?;
                return Err(DownError::Copy);
            }
            return Err(r.into());
        }
        let payload = u.verify(key)?;
        self.recv.accept(h.seq)?;
        self.heard_any = Some(now);
        let data = match (h.kind, h.addr) {
            (Kind::Down | Kind::EchoDown, Some(from)) => Down::Data { from, payload },
            _ => Down::Ack,
        };
        if !on_path && !self.redundant && self.is_open() {
            return Ok(data);
        }
        if h.kind == Kind::Ack
            && let Some(t) = self.ack_wait.take()
        {
            // From the first request not answered: an over-estimate, on the safe side.
            let sample = now.saturating_duration_since(t);
            self.srtt = Some(self.srtt.map_or(sample, |r| (r * 7 + sample) / 8));
        }
        if let ClientState::Open { last_heard } = self.state {
            let gap = now.saturating_duration_since(last_heard);
            self.answer_every = Some(self.answer_every.map_or(gap, |e| (e * 7 + gap) / 8));
        }
        self.state = ClientState::Open { last_heard: now };
        self.asked_since = None;
        self.asks = 0;
        self.resent = false;
        Ok(data)
    }

    /// Whether the session's path answers at `now`.
    pub fn health(&self, now: Instant) -> Health {
        match self.state {
            ClientState::Opening { since } => {
                if self.asks >= 2 && now.saturating_duration_since(since) >= OPEN_TIMEOUT {
                    Health::ConverterSilent
                } else {
                    Health::Fine
                }
            }
            ClientState::Open { .. } => match self.asked_since {
                Some(t) if self.asks >= 2 && now.saturating_duration_since(t) >= self.silent_after() => {
                    Health::PathSilent
                }
                _ => Health::Fine,
            },
        }
    }

    /// How long nothing came from the converter on any path (`None`: it never answered).
    pub fn unheard_for(&self, now: Instant) -> Option<Duration> {
        self.heard_any.map(|t| now.saturating_duration_since(t))
    }

    /// The session stays on its path after [`Health::PathSilent`] (no other path can take it,
    /// or it is held already): the silence so far is counted, the path is watched afresh with
    /// the round trip it measured. The wait for the answer is not a round-trip sample.
    pub fn watch_again(&mut self) {
        self.asked_since = None;
        self.ack_wait = None;
        self.last_ask = None;
        self.asks = 0;
    }

    /// The session now leaves on another path: its silence so far was the old path's.
    pub fn path_moved(&mut self, now: Instant) {
        // Watched afresh, and nothing measured on the old path holds on this one.
        self.watch_again();
        self.answer_every = None;
        self.srtt = None;
        // What went on the old path is not sent again from the new one.
        self.recent.clear();
        self.resent = false;
        if let ClientState::Opening { since } = &mut self.state {
            *since = now;
        }
    }
}

#[cfg(test)]
#[path = "dgram_tests.rs"]
mod tests;
