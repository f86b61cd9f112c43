//! TCP header (RFC 9293 §3.1): a checked view, an option walker that never panics, the
//! [`SegmentHeader`] summary the engine works with, and a builder writing header, options and
//! payload with the checksum into a caller's buffer without allocating.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use super::checksum::Checksum;
use super::ip::PROTO_TCP;
use crate::tcp::SeqNum;

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// Maximum length of the options area (data offset 15 words).
pub const MAX_OPTIONS_LEN: usize = 40;
/// Length of the timestamps option as sent in every segment once negotiated: NOP, NOP and the
/// 10-octet option (RFC 7323 Appendix A layout).
pub const TIMESTAMPS_LEN: usize = 12;
/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod kind {
    /// End of option list.
    pub const END: u8 = 0;
    /// No-operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size, RFC 9293 §3.2.
    pub const MSS: u8 = 2;
    /// Window scale, RFC 7323 §2.
    pub const WSCALE: u8 = 3;
    /// SACK permitted, RFC 2018 §2.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks, RFC 2018 §3.
    pub const SACK: u8 = 5;
    /// Timestamps, RFC 7323 §3.
    pub const TIMESTAMPS: u8 = 8;
    /// Multipath TCP, RFC 8684 §2.
    pub const MPTCP: u8 = 30;
}

/// Why a TCP segment was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TcpError {
    /// Fewer than 20 bytes.
    #[error("TCP segment shorter than its header")]
    Truncated,
    /// Data offset below 5 words or past the end of the buffer.
    #[error("bad TCP data offset")]
    BadDataOffset,
    /// An option's length byte is below 2 or runs past the options area.
    #[error("malformed TCP option")]
    BadOption,
    /// The checksum over pseudo-header, header and payload does not verify.
    #[error("bad TCP checksum")]
    BadChecksum,
    /// The caller's buffer is too small, or options exceed 40 bytes.
    #[error("buffer too small for the segment")]
    BufferTooSmall,
}

/// The flags byte of the header.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// True if every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// True if `FIN` is set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// True if `SYN` is set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// True if `RST` is set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    /// True if `ACK` is set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, o: TcpFlags) {
        self.0 |= o.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// One SACK block, RFC 2018 §3: `left` is the first sequence number of the block, `right` the
/// sequence number just after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlock {
    /// Left edge (inclusive).
    pub left: SeqNum,
    /// Right edge (exclusive).
    pub right: SeqNum,
}

/// The timestamps option, RFC 7323 §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamps {
    /// TSval: the sender's timestamp clock.
    pub val: u32,
    /// TSecr: the echoed timestamp (meaningful when ACK is set).
    pub ecr: u32,
}

/// The raw MPTCP options (kind 30) of a segment, each kept whole (kind, length, data), concatenated,
/// for the MPTCP layer to decode. Fixed capacity: the options area is 40 bytes at most.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MptcpOptions {
    buf: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl Default for MptcpOptions {
    fn default() -> Self {
        MptcpOptions {
            buf: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }
}

impl MptcpOptions {
    /// True if the segment had no MPTCP option.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The concatenated raw options.
    pub fn raw(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
    /// Each MPTCP option as its whole bytes (kind 30, length, subtype, ...).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        OptionIter::new(self.raw()).filter_map(|o| match o {
            Ok(TcpOption::Mptcp(raw)) => Some(raw),
            _ => None,
        })
    }
    fn push(&mut self, raw: &[u8]) {
        let at = usize::from(self.len);
        if let Some(dst) = self.buf.get_mut(at..at + raw.len()) {
            dst.copy_from_slice(raw);
            self.len += raw.len() as u8; // raw.len() <= 40 (it came from the options area)
        }
    }
}

impl fmt::Debug for MptcpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MptcpOptions({:02x?})", self.raw())
    }
}

/// Summary of the options the engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// MSS option (SYN only, RFC 9293 §3.7.1).
    pub mss: Option<u16>,
    /// Window scale shift as received (RFC 7323 §2.3; the receiver clamps it to 14).
    pub wscale: Option<u8>,
    /// SACK-permitted (RFC 2018 §2).
    pub sack_permitted: bool,
    /// Timestamps (RFC 7323 §3).
    pub timestamps: Option<Timestamps>,
    sack: [SackBlock; 4],
    sack_count: u8,
    /// Raw MPTCP options, kept for the MPTCP layer.
    pub mptcp: MptcpOptions,
}

impl TcpOptions {
    /// The SACK blocks received (at most 4).
    pub fn sack_blocks(&self) -> &[SackBlock] {
        &self.sack[..usize::from(self.sack_count)]
    }
    /// Appends a SACK block (ignored past 4).
    pub fn push_sack(&mut self, b: SackBlock) {
        if let Some(slot) = self.sack.get_mut(usize::from(self.sack_count)) {
            *slot = b;
            self.sack_count += 1;
        }
    }
}

/// One option as seen by the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: the walk stops after it.
    End,
    /// Kind 1.
    Nop,
    /// Kind 2.
    Mss(u16),
    /// Kind 3.
    WindowScale(u8),
    /// Kind 4.
    SackPermitted,
    /// Kind 5: the blocks' bytes (a multiple of 8).
    Sack(&'a [u8]),
    /// Kind 8.
    Timestamps(Timestamps),
    /// Kind 30: the whole option (kind, length, data).
    Mptcp(&'a [u8]),
    /// Any other kind, or a known kind with a wrong length: its data bytes.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Data after kind and length.
        data: &'a [u8],
    },
}

/// Walks an options area; yields `Err(BadOption)` once on a malformed length and then stops.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> OptionIter<'a> {
    /// A walker over `data` (the bytes between the fixed header and the payload).
    pub fn new(data: &'a [u8]) -> Self {
        OptionIter {
            data,
            pos: 0,
            done: false,
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    match b {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<TcpOption<'a>, TcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let Some(&k) = rest.first() else {
            self.done = true;
            return None;
        };
        match k {
            kind::END => {
                self.done = true;
                return Some(Ok(TcpOption::End));
            }
            kind::NOP => {
                self.pos += 1;
                return Some(Ok(TcpOption::Nop));
            }
            _ => {}
        }
        // RFC 9293 §3.2: MUST be prepared to handle an illegal option length without crashing.
        let len = usize::from(rest.get(1).copied().unwrap_or(0));
        let Some(whole) = rest.get(..len).filter(|_| len >= 2) else {
            self.done = true;
            return Some(Err(TcpError::BadOption));
        };
        self.pos += len;
        let data = &whole[2..];
        let opt = match (k, data.len()) {
            (kind::MSS, 2) => TcpOption::Mss(be16(data)),
            (kind::WSCALE, 1) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK, n) if n % 8 == 0 && n > 0 => TcpOption::Sack(data),
            (kind::TIMESTAMPS, 8) => TcpOption::Timestamps(Timestamps {
                val: be32(data),
                ecr: be32(&data[4..]),
            }),
            (kind::MPTCP, _) => TcpOption::Mptcp(whole),
            _ => TcpOption::Unknown { kind: k, data },
        };
        Some(Ok(opt))
    }
}

/// Parses an options area into a [`TcpOptions`] summary.
pub fn parse_options(data: &[u8]) -> Result<TcpOptions, TcpError> {
    let mut o = TcpOptions::default();
    for opt in OptionIter::new(data) {
        match opt? {
            TcpOption::Mss(m) => o.mss = Some(m),
            TcpOption::WindowScale(s) => o.wscale = Some(s),
            TcpOption::SackPermitted => o.sack_permitted = true,
            TcpOption::Timestamps(t) => o.timestamps = Some(t),
            TcpOption::Sack(blocks) => {
                for b in blocks.chunks_exact(8) {
                    o.push_sack(SackBlock {
                        left: SeqNum(be32(b)),
                        right: SeqNum(be32(&b[4..])),
                    });
                }
            }
            TcpOption::Mptcp(raw) => o.mptcp.push(raw),
            TcpOption::End | TcpOption::Nop | TcpOption::Unknown { .. } => {}
        }
    }
    Ok(o)
}

/// A checked view over a TCP segment: the header is at least 20 bytes and the data offset lies
/// within the buffer.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeaderView<'a> {
    buf: &'a [u8],
    hlen: usize,
}

impl<'a> TcpHeaderView<'a> {
    /// Checks lengths; does not verify the checksum (see [`verify_checksum`]).
    pub fn new(buf: &'a [u8]) -> Result<Self, TcpError> {
        if buf.len() < TCP_HEADER_LEN {
            return Err(TcpError::Truncated);
        }
        let hlen = usize::from(buf[12] >> 4) * 4;
        if hlen < TCP_HEADER_LEN || hlen > buf.len() {
            return Err(TcpError::BadDataOffset);
        }
        Ok(TcpHeaderView { buf, hlen })
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(&self.buf[0..])
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(&self.buf[2..])
    }
    /// Sequence number.
    pub fn seq(&self) -> SeqNum {
        SeqNum(be32(&self.buf[4..]))
    }
    /// Acknowledgment number.
    pub fn ack(&self) -> SeqNum {
        SeqNum(be32(&self.buf[8..]))
    }
    /// Flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buf[13])
    }
    /// Window field (unscaled).
    pub fn window(&self) -> u16 {
        be16(&self.buf[14..])
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buf[16..])
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(&self.buf[18..])
    }
    /// Header length including options.
    pub fn header_len(&self) -> usize {
        self.hlen
    }
    /// The options area.
    pub fn options(&self) -> &'a [u8] {
        &self.buf[TCP_HEADER_LEN..self.hlen]
    }
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.hlen..]
    }
    /// The summary (parses the options).
    pub fn summary(&self) -> Result<SegmentHeader, TcpError> {
        Ok(SegmentHeader {
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            seq: self.seq(),
            ack: self.ack(),
            flags: self.flags(),
            window: self.window(),
            urgent: self.urgent(),
            options: parse_options(self.options())?,
        })
    }
}

/// The parts of a segment the engine works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNum,
    /// Acknowledgment number.
    pub ack: SeqNum,
    /// Flags.
    pub flags: TcpFlags,
    /// Window field as carried (unscaled).
    pub window: u16,
    /// Urgent pointer (the engine does not implement urgent data, RFC 9293 §3.8.5 / RFC 6093).
    pub urgent: u16,
    /// Options summary.
    pub options: TcpOptions,
}

/// Parses a TCP segment: its header summary and the offset of the payload in `buf`.
pub fn parse_segment(buf: &[u8]) -> Result<(SegmentHeader, usize), TcpError> {
    let v = TcpHeaderView::new(buf)?;
    Ok((v.summary()?, v.header_len()))
}

/// True if the checksum of `segment` (header + payload) over the pseudo-header verifies.
pub fn verify_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    Checksum::new()
        .add_pseudo_header(src, dst, PROTO_TCP, len)
        .add_bytes(segment)
        .fold()
        == 0xffff
}

/// Builds an options area: MSS, window scale, SACK-permitted, timestamps, SACK blocks and raw
/// options (MPTCP), each padded the usual way (NOPs) so the total is a multiple of 4.
#[derive(Clone, Copy)]
pub struct OptionWriter {
    buf: [u8; MAX_OPTIONS_LEN],
    len: usize,
}

impl Default for OptionWriter {
    fn default() -> Self {
        OptionWriter {
            buf: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }
}

impl fmt::Debug for OptionWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OptionWriter({:02x?})", self.bytes())
    }
}

impl OptionWriter {
    /// An empty options area.
    pub fn new() -> Self {
        Self::default()
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes still free in the 40-byte area.
    pub fn remaining(&self) -> usize {
        MAX_OPTIONS_LEN - self.len
    }
    /// The options written, padded with NOPs to a multiple of 4 by [`OptionWriter::pad`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Appends raw bytes; returns false (and writes nothing) if they do not fit.
    pub fn raw(&mut self, b: &[u8]) -> bool {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
                true
            }
            None => false,
        }
    }
    /// The free tail of the area, for a hook writing in place; follow with [`OptionWriter::advance`].
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }
    /// Marks `n` bytes of [`OptionWriter::spare`] as written (clamped to the area).
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(MAX_OPTIONS_LEN);
    }
    /// MSS option (4 bytes).
    pub fn mss(&mut self, mss: u16) -> bool {
        let m = mss.to_be_bytes();
        self.raw(&[kind::MSS, 4, m[0], m[1]])
    }
    /// NOP + window scale (4 bytes).
    pub fn wscale(&mut self, shift: u8) -> bool {
        self.raw(&[kind::NOP, kind::WSCALE, 3, shift])
    }
    /// NOP NOP SACK-permitted (4 bytes).
    pub fn sack_permitted(&mut self) -> bool {
        self.raw(&[kind::NOP, kind::NOP, kind::SACK_PERMITTED, 2])
    }
    /// NOP NOP timestamps (12 bytes), the layout of RFC 7323 Appendix A.
    pub fn timestamps(&mut self, ts: Timestamps) -> bool {
        let mut b = [kind::NOP, kind::NOP, kind::TIMESTAMPS, 10, 0, 0, 0, 0, 0, 0, 0, 0];
        b[4..8].copy_from_slice(&ts.val.to_be_bytes());
        b[8..12].copy_from_slice(&ts.ecr.to_be_bytes());
        self.raw(&b)
    }
    /// NOP NOP SACK with as many of `blocks` as fit (at most 4); returns how many were written.
    pub fn sack(&mut self, blocks: &[SackBlock]) -> usize {
        let fit = (self.remaining().saturating_sub(4) / 8).min(blocks.len()).min(4);
        if fit == 0 {
            return 0;
        }
        let mut b = [0u8; 36];
        b[..4].copy_from_slice(&[kind::NOP, kind::NOP, kind::SACK, (2 + 8 * fit) as u8]);
        for (i, blk) in blocks.iter().take(fit).enumerate() {
            b[4 + 8 * i..8 + 8 * i].copy_from_slice(&blk.left.0.to_be_bytes());
            b[8 + 8 * i..12 + 8 * i].copy_from_slice(&blk.right.0.to_be_bytes());
        }
        self.raw(&b[..4 + 8 * fit]);
        fit
    }
    /// Pads with NOPs to a multiple of 4 bytes.
    pub fn pad(&mut self) {
        while self.len % 4 != 0 && self.len < MAX_OPTIONS_LEN {
            self.buf[self.len] = kind::NOP;
            self.len += 1;
        }
    }
}

/// The fixed-header fields of a segment to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFields {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNum,
    /// Acknowledgment number.
    pub ack: SeqNum,
    /// Flags.
    pub flags: TcpFlags,
    /// Window field (already scaled down).
    pub window: u16,
}

/// Writes a TCP segment (header, `options` padded to 4 bytes with NOPs, then the payload given as
/// up to several pieces) into `buf` and fills in the checksum over the pseudo-header of
/// `src`/`dst`. Returns the segment length.
pub fn write_segment(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    f: &SegmentFields,
    options: &[u8],
    payload: &[&[u8]],
) -> Result<usize, TcpError> {
    write_segment_with(buf, src, dst, f, options, payload, false)
}

/// [`write_segment`], but with `partial` the checksum field gets only the folded pseudo-header
/// sum, for a device (or `wire::gso`) that completes it: a super-segment's payload is then not
/// summed here at all.
pub fn write_segment_with(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    f: &SegmentFields,
    options: &[u8],
    payload: &[&[u8]],
    partial: bool,
) -> Result<usize, TcpError> {
    if options.len() > MAX_OPTIONS_LEN {
        return Err(TcpError::BufferTooSmall);
    }
    let hlen = TCP_HEADER_LEN + options.len().div_ceil(4) * 4;
    let plen: usize = payload.iter().map(|p| p.len()).sum();
    let total = hlen + plen;
    let seg = buf.get_mut(..total).ok_or(TcpError::BufferTooSmall)?;
    seg[0..2].copy_from_slice(&f.src_port.to_be_bytes());
    seg[2..4].copy_from_slice(&f.dst_port.to_be_bytes());
    seg[4..8].copy_from_slice(&f.seq.0.to_be_bytes());
    seg[8..12].copy_from_slice(&f.ack.0.to_be_bytes());
    seg[12] = ((hlen / 4) as u8) << 4;
    seg[13] = f.flags.0;
    seg[14..16].copy_from_slice(&f.window.to_be_bytes());
    seg[16..20].copy_from_slice(&[0, 0, 0, 0]);
    seg[20..20 + options.len()].copy_from_slice(options);
    seg[20 + options.len()..hlen].fill(kind::NOP);
    let mut at = hlen;
    for p in payload {
        seg[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    let len = u32::try_from(total).map_err(|_| TcpError::BufferTooSmall)?;
    let mut sum = Checksum::new();
    sum.add_pseudo_header(src, dst, PROTO_TCP, len);
    let c = if partial {
        sum.fold()
    } else {
        sum.add_bytes(seg).finish()
    };
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

impl OptionWriter {
    /// SACK-permitted followed directly by timestamps (12 bytes, as Linux lays them out).
    pub fn sack_permitted_timestamps(&mut self, ts: Timestamps) -> bool {
        let mut b = [
            kind::SACK_PERMITTED,
            2,
            kind::TIMESTAMPS,
            10,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        b[4..8].copy_from_slice(&ts.val.to_be_bytes());
        b[8..12].copy_from_slice(&ts.ecr.to_be_bytes());
        self.raw(&b)
    }
}
