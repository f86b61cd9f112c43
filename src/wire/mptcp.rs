//! MPTCP v1 option codec (RFC 8684 §3, option kind 30, every subtype of §7.2 Table 2).
//!
//! # Which bytes
//!
//! [`MptcpOption::parse`] takes **exactly one whole TCP option**: the kind byte (30), the length
//! byte, then the body, and nothing else: `opt.len()` must equal the length byte (RFC 8684 §3:
//! "the Length field is specified in bytes and includes the 2 bytes of Kind and Length"). The TCP
//! option walker cuts the slice; this module never sees NOP/EOL padding.
//! [`MptcpOption::write`] writes the same layout (kind, length, body) at the start of `out` and
//! returns the number of bytes written, which is always [`MptcpOption::len`]. No padding is
//! written; aligning the options area is the TCP header builder's job.
//!
//! # Representation
//!
//! The parsed value is a plain summary (STYLE.md point 3) of raw protocol integers: keys are the
//! 64-bit values as sent in network byte order, DSNs are either the 4- or the 8-byte form as on
//! the wire ([`DsnField`]). The types in `crate::mptcp` give them meaning (expanding a 32-bit DSN
//! needs connection state). Reserved bits are ignored on parse (RFC 8684: reserved bits "MUST be
//! set to 0 by the sender" and receivers ignore them) and written as 0, so for every value `v`
//! this module can build, `parse(write(v)) == v`, and for every byte string `b` that parses,
//! `parse(write(parse(b))) == parse(b)`.
//!
//! Nothing here allocates or panics, whatever the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP option kind assigned to MPTCP (RFC 8684 §7.1).
pub const KIND_MPTCP: u8 = 30;

/// A TCP header carries at most 40 bytes of options (RFC 9293 §3.1), so no well-formed MPTCP
/// option is longer than this.
pub const MAX_OPTION_LEN: usize = 40;

/// Most address IDs a REMOVE_ADDR can carry inside [`MAX_OPTION_LEN`] (length = 3 + n).
pub const MAX_REMOVE_ADDR_IDS: usize = MAX_OPTION_LEN - 3;

/// Octets of a DSS option (RFC 8684 §3.3, Figure 9) before its DATA_ACK: kind, length,
/// subtype and flags.
pub const DSS_HEADER_LEN: usize = 4;
/// Octets of a 64-bit DATA_ACK in a DSS (flags A and a).
pub const DSS_DATA_ACK64_LEN: usize = 8;
/// Octets of a DSS mapping with a 64-bit DSN (flags M and m): DSN, subflow sequence number and
/// data-level length, without the checksum.
pub const DSS_MAPPING64_LEN: usize = 8 + 4 + 2;
/// Octets of the DSS checksum, present when checksums are in use (§3.3.1).
pub const DSS_CHECKSUM_LEN: usize = 2;

/// MPTCP option subtypes (RFC 8684 §7.2, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Subtype {
    /// 0x0 Multipath Capable (§3.1).
    MpCapable = 0x0,
    /// 0x1 Join Connection (§3.2).
    MpJoin = 0x1,
    /// 0x2 Data Sequence Signal (§3.3).
    Dss = 0x2,
    /// 0x3 Add Address (§3.4.1).
    AddAddr = 0x3,
    /// 0x4 Remove Address (§3.4.2).
    RemoveAddr = 0x4,
    /// 0x5 Change Subflow Priority (§3.3.8).
    MpPrio = 0x5,
    /// 0x6 Fallback (§3.7).
    MpFail = 0x6,
    /// 0x7 Fast Close (§3.5).
    MpFastclose = 0x7,
    /// 0x8 Subflow Reset (§3.6).
    MpTcpRst = 0x8,
}

impl Subtype {
    /// The subtype for a 4-bit code, `None` for unassigned codes (0x9–0xe) and
    /// MP_EXPERIMENTAL (0xf).
    pub fn from_code(code: u8) -> Option<Subtype> {
        Some(match code {
            0x0 => Subtype::MpCapable,
            0x1 => Subtype::MpJoin,
            0x2 => Subtype::Dss,
            0x3 => Subtype::AddAddr,
            0x4 => Subtype::RemoveAddr,
            0x5 => Subtype::MpPrio,
            0x6 => Subtype::MpFail,
            0x7 => Subtype::MpFastclose,
            0x8 => Subtype::MpTcpRst,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid MPTCP option. Every variant means "ignore this option"; what the
/// connection does next (e.g. fall back when the MP_CAPABLE on a SYN/ACK is unusable, RFC 8684
/// §3.1) is decided by `crate::mptcp`, which knows the segment and the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Fewer than 3 bytes: not even kind, length and subtype.
    #[error("MPTCP option truncated: {len} bytes")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The kind byte is not 30.
    #[error("not an MPTCP option: kind {kind}")]
    NotMptcp {
        /// The kind byte found.
        kind: u8,
    },
    /// The length byte does not match the slice handed in (the caller must pass exactly one
    /// option).
    #[error("MPTCP option length byte {declared} but {actual} bytes given")]
    LengthMismatch {
        /// The option's length byte.
        declared: u8,
        /// Length of the slice.
        actual: usize,
    },
    /// A subtype this implementation does not know (unassigned or MP_EXPERIMENTAL): RFC 8684 §3
    /// leaves it to be ignored; it is not a protocol violation.
    #[error("unknown MPTCP subtype {subtype:#x}")]
    UnknownSubtype {
        /// The 4-bit subtype code.
        subtype: u8,
    },
    /// A known subtype with a length that the RFC does not define for it (or, for DSS, that
    /// does not agree with the flags).
    #[error("{subtype:?} option with invalid length {len}")]
    BadLength {
        /// The subtype.
        subtype: Subtype,
        /// The length byte.
        len: u8,
    },
}

impl OptionError {
    /// `true` for an unknown subtype, which RFC 8684 says to ignore silently; `false` for
    /// malformed options (worth counting as a peer or middlebox fault).
    pub fn is_unknown_subtype(&self) -> bool {
        matches!(self, OptionError::UnknownSubtype { .. })
    }
}

/// Why an option could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// `out` is shorter than [`MptcpOption::len`].
    #[error("buffer too small for MPTCP option: need {needed}, have {available}")]
    BufferTooSmall {
        /// Bytes the option needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A field does not fit its wire width (the MP_CAPABLE version is 4 bits).
    #[error("MPTCP option field `{field}` out of range")]
    FieldOutOfRange {
        /// The field's name.
        field: &'static str,
    },
}

/// MP_CAPABLE flag octet (RFC 8684 §3.1, Figure 4: bits A–H, A leftmost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapableFlags(pub u8);

impl CapableFlags {
    /// A: checksum required.
    pub const CHECKSUM_REQUIRED: u8 = 0x80;
    /// B: extensibility; MUST be 0 in this version (§3.1).
    pub const EXTENSIBILITY: u8 = 0x40;
    /// C: do not open additional subflows to the sender's source address and port (§3.1).
    pub const NO_SUBFLOWS_TO_SOURCE: u8 = 0x20;
    /// D–H: crypto algorithm negotiation bits.
    pub const CRYPTO_MASK: u8 = 0x1f;
    /// H: HMAC-SHA256 (§3.2).
    pub const HMAC_SHA256: u8 = 0x01;

    /// Flag A.
    pub fn checksum_required(self) -> bool {
        self.0 & Self::CHECKSUM_REQUIRED != 0
    }
    /// Flag B.
    pub fn extensibility(self) -> bool {
        self.0 & Self::EXTENSIBILITY != 0
    }
    /// Flag C.
    pub fn no_subflows_to_source(self) -> bool {
        self.0 & Self::NO_SUBFLOWS_TO_SOURCE != 0
    }
    /// Flag H.
    pub fn hmac_sha256(self) -> bool {
        self.0 & Self::HMAC_SHA256 != 0
    }
    /// Bits D–H.
    pub fn crypto_bits(self) -> u8 {
        self.0 & Self::CRYPTO_MASK
    }
}

/// The length-dependent part of MP_CAPABLE (RFC 8684 §3.1, list after Figure 4). Which packet
/// it is on (SYN, SYN/ACK, ACK) is known from the TCP flags, not from the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapablePayload {
    /// Length 4: the SYN (A→B) carries no key in v1.
    NoKeys,
    /// Length 12: the sender's key (the listener's key on the SYN/ACK).
    SenderKey {
        /// Option sender's key.
        sender_key: u64,
    },
    /// Length 20: the third ACK without data: sender's key then receiver's key.
    BothKeys {
        /// Option sender's key.
        sender_key: u64,
        /// Option receiver's key.
        receiver_key: u64,
    },
    /// Length 22 (no checksum) or 24 (with checksum): the first data packet from the initiator.
    BothKeysWithData {
        /// Option sender's key.
        sender_key: u64,
        /// Option receiver's key.
        receiver_key: u64,
        /// Data-Level Length of the payload.
        data_len: u16,
        /// DSS checksum if checksums are in use.
        checksum: Option<u16>,
    },
}

/// MP_CAPABLE (RFC 8684 §3.1, Figure 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpCapable {
    /// MPTCP version (4 bits; 1 for RFC 8684).
    pub version: u8,
    /// Flags A–H.
    pub flags: CapableFlags,
    /// Keys and data parameters, by option length.
    pub payload: CapablePayload,
}

/// MP_JOIN, one form per handshake packet (RFC 8684 §3.2, Figures 5–7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpJoin {
    /// Length 12, on the SYN (Figure 5).
    Syn {
        /// B: the sender wants this subflow used as backup only.
        backup: bool,
        /// Sender's address ID.
        addr_id: u8,
        /// Token of the receiver's key.
        receiver_token: u32,
        /// Sender's random number.
        sender_nonce: u32,
    },
    /// Length 16, on the SYN/ACK (Figure 6).
    SynAck {
        /// B flag.
        backup: bool,
        /// Sender's address ID.
        addr_id: u8,
        /// Leftmost 64 bits of the sender's HMAC.
        truncated_hmac: u64,
        /// Sender's random number.
        sender_nonce: u32,
    },
    /// Length 24, on the initiator's third ACK (Figure 7).
    Ack {
        /// Leftmost 160 bits of the sender's HMAC.
        hmac: [u8; 20],
    },
}

/// A DSN or DATA_ACK as carried: the 4-byte form holds the low 32 bits (RFC 8684 §3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnField {
    /// 4 octets (flag a/m clear).
    Short(u32),
    /// 8 octets (flag a/m set).
    Long(u64),
}

impl DsnField {
    fn wire_len(self) -> usize {
        match self {
            DsnField::Short(_) => 4,
            DsnField::Long(_) => 8,
        }
    }
}

/// The Data Sequence Mapping part of a DSS option (flag M).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DssMapping {
    /// Data sequence number of the first mapped octet.
    pub dsn: DsnField,
    /// Subflow sequence number, relative to the subflow's ISN (SYN = 0) (§3.3.1).
    pub subflow_seq: u32,
    /// Data-Level Length; 0 means an infinite mapping (§3.3.1, §3.7).
    pub data_len: u16,
    /// DSS checksum, present when negotiated (inferred from the length, §3.3).
    pub checksum: Option<u16>,
}

/// Data Sequence Signal (RFC 8684 §3.3, Figure 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dss {
    /// DATA_ACK (flag A; flag a selects 8 octets).
    pub data_ack: Option<DsnField>,
    /// Mapping (flag M; flag m selects an 8-octet DSN).
    pub mapping: Option<DssMapping>,
    /// F: DATA_FIN; the mapping's last data-level octet is the DATA_FIN (§3.3.3).
    pub data_fin: bool,
}

/// Whether an ADD_ADDR announces (E=0, with HMAC) or echoes (E=1, without HMAC) (§3.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrSignal {
    /// E = 0: a fresh announcement carrying the rightmost 64 bits of the HMAC.
    Announce {
        /// Truncated HMAC.
        truncated_hmac: u64,
    },
    /// E = 1: the receiver echoes the option back, without HMAC, to acknowledge it.
    Echo,
}

/// ADD_ADDR (RFC 8684 §3.4.1, Figure 12). IPv4 vs IPv6 is inferred from the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddAddr {
    /// Address ID.
    pub addr_id: u8,
    /// The announced address.
    pub addr: IpAddr,
    /// Port, when given.
    pub port: Option<u16>,
    /// Announcement or echo.
    pub signal: AddrSignal,
}

/// A non-empty list of at most [`MAX_REMOVE_ADDR_IDS`] address IDs (REMOVE_ADDR), stored
/// inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrIdList {
    ids: [u8; MAX_REMOVE_ADDR_IDS],
    len: u8,
}

impl AddrIdList {
    /// A list of `ids`; `None` if empty or longer than [`MAX_REMOVE_ADDR_IDS`].
    pub fn new(ids: &[u8]) -> Option<AddrIdList> {
        if ids.is_empty() || ids.len() > MAX_REMOVE_ADDR_IDS {
            return None;
        }
        let mut list = AddrIdList {
            ids: [0; MAX_REMOVE_ADDR_IDS],
            len: ids.len() as u8,
        };
        list.ids[..ids.len()].copy_from_slice(ids);
        Some(list)
    }

    /// The IDs.
    pub fn as_slice(&self) -> &[u8] {
        &self.ids[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for AddrIdList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// MP_TCPRST reason code (RFC 8684 §3.6, §7.4 Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RstReason {
    /// 0x00 Unspecified error.
    Unspecified,
    /// 0x01 MPTCP-specific error.
    MptcpSpecific,
    /// 0x02 Lack of resources.
    LackOfResources,
    /// 0x03 Administratively prohibited.
    AdminProhibited,
    /// 0x04 Too much outstanding data.
    TooMuchOutstandingData,
    /// 0x05 Unacceptable performance.
    UnacceptablePerformance,
    /// 0x06 Middlebox interference.
    MiddleboxInterference,
    /// Any other code (not assigned by RFC 8684; never one of 0x00–0x06).
    Other(u8),
}

impl RstReason {
    /// The reason for a code.
    pub fn from_code(code: u8) -> RstReason {
        match code {
            0x00 => RstReason::Unspecified,
            0x01 => RstReason::MptcpSpecific,
            0x02 => RstReason::LackOfResources,
            0x03 => RstReason::AdminProhibited,
            0x04 => RstReason::TooMuchOutstandingData,
            0x05 => RstReason::UnacceptablePerformance,
            0x06 => RstReason::MiddleboxInterference,
            other => RstReason::Other(other),
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            RstReason::Unspecified => 0x00,
            RstReason::MptcpSpecific => 0x01,
            RstReason::LackOfResources => 0x02,
            RstReason::AdminProhibited => 0x03,
            RstReason::TooMuchOutstandingData => 0x04,
            RstReason::UnacceptablePerformance => 0x05,
            RstReason::MiddleboxInterference => 0x06,
            RstReason::Other(code) => code,
        }
    }
}

/// MP_TCPRST (RFC 8684 §3.6, Figure 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpTcpRst {
    /// T: the error is transient (the receiver MAY retry the path later).
    pub transient: bool,
    /// U, V, W as received (bits 3..1 of this value = U, V, W). RFC 8684 §3.6: a sender MUST
    /// set them to 0 and a receiver MUST ignore them; kept only for logging.
    pub reserved_flags: u8,
    /// Reason code.
    pub reason: RstReason,
}

/// One parsed MPTCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MptcpOption {
    /// MP_CAPABLE (§3.1).
    MpCapable(MpCapable),
    /// MP_JOIN (§3.2).
    MpJoin(MpJoin),
    /// DSS (§3.3).
    Dss(Dss),
    /// ADD_ADDR (§3.4.1).
    AddAddr(AddAddr),
    /// REMOVE_ADDR (§3.4.2, Figure 13): length 3 + n.
    RemoveAddr {
        /// Address IDs to remove.
        addr_ids: AddrIdList,
    },
    /// MP_PRIO (§3.3.8, Figure 11): length 3.
    MpPrio {
        /// B: the subflow becomes backup (true) or regular (false).
        backup: bool,
    },
    /// MP_FAIL (§3.7, Figure 16): length 12; always the 64-bit DSN.
    MpFail {
        /// DSN at the start of the mapping whose checksum failed.
        dsn: u64,
    },
    /// MP_FASTCLOSE (§3.5, Figure 14): length 12.
    MpFastclose {
        /// The option receiver's key.
        receiver_key: u64,
    },
    /// MP_TCPRST (§3.6, Figure 15): length 4.
    MpTcpRst(MpTcpRst),
}

// DSS flag bits (Figure 9: "(reserved) |F|m|M|a|A|").
const DSS_A: u8 = 0x01;
const DSS_LA: u8 = 0x02;
const DSS_M: u8 = 0x04;
const DSS_LM: u8 = 0x08;
const DSS_F: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl MptcpOption {
    /// Parses one whole MPTCP option: `opt` = kind (30), length, body, with
    /// `opt.len() == opt[1]` (see the module documentation). Never panics.
    pub fn parse(opt: &[u8]) -> Result<MptcpOption, OptionError> {
        if opt.len() < 3 {
            return Err(OptionError::Truncated { len: opt.len() });
        }
        if opt[0] != KIND_MPTCP {
            return Err(OptionError::NotMptcp { kind: opt[0] });
        }
        let len = opt[1];
        if usize::from(len) != opt.len() {
            return Err(OptionError::LengthMismatch {
                declared: len,
                actual: opt.len(),
            });
        }
        let code = opt[2] >> 4;
        let subtype = Subtype::from_code(code).ok_or(OptionError::UnknownSubtype { subtype: code })?;
        let bad = OptionError::BadLength { subtype, len };
        // From here on `opt.len() == len`, and each arm checks `len` before indexing.
        match subtype {
            Subtype::MpCapable => {
                let version = opt[2] & 0x0f;
                // Figure 4 puts the flag octet at offset 3, so length 3 is invalid.
                let payload = match len {
                    4 => CapablePayload::NoKeys,
                    12 => CapablePayload::SenderKey {
                        sender_key: be64(opt, 4),
                    },
                    20 => CapablePayload::BothKeys {
                        sender_key: be64(opt, 4),
                        receiver_key: be64(opt, 12),
                    },
                    22 | 24 => CapablePayload::BothKeysWithData {
                        sender_key: be64(opt, 4),
                        receiver_key: be64(opt, 12),
                        data_len: be16(opt, 20),
                        checksum: (len == 24).then(|| be16(opt, 22)),
                    },
                    _ => return Err(bad),
                };
                Ok(MptcpOption::MpCapable(MpCapable {
                    version,
                    flags: CapableFlags(opt[3]),
                    payload,
                }))
            }
            Subtype::MpJoin => {
                let backup = opt[2] & 0x01 != 0;
                Ok(MptcpOption::MpJoin(match len {
                    12 => MpJoin::Syn {
                        backup,
                        addr_id: opt[3],
                        receiver_token: be32(opt, 4),
                        sender_nonce: be32(opt, 8),
                    },
                    16 => MpJoin::SynAck {
                        backup,
                        addr_id: opt[3],
                        truncated_hmac: be64(opt, 4),
                        sender_nonce: be32(opt, 12),
                    },
                    24 => {
                        let mut hmac = [0u8; 20];
                        hmac.copy_from_slice(&opt[4..24]);
                        MpJoin::Ack { hmac }
                    }
                    _ => return Err(bad),
                }))
            }
            Subtype::Dss => parse_dss(opt, bad).map(MptcpOption::Dss),
            Subtype::AddAddr => {
                // Figure 12; the E flag and the length together give the layout. A truncated
                // HMAC is present iff E = 0 (§3.4.1).
                let echo = opt[2] & 0x01 != 0;
                let hmac_len = if echo { 0 } else { 8 };
                let rest = usize::from(len).checked_sub(4 + hmac_len).ok_or(bad)?;
                let (addr_len, has_port) = match rest {
                    4 => (4, false),
                    6 => (4, true),
                    16 => (16, false),
                    18 => (16, true),
                    _ => return Err(bad),
                };
                let addr = if addr_len == 4 {
                    IpAddr::V4(Ipv4Addr::new(opt[4], opt[5], opt[6], opt[7]))
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&opt[4..20]);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                let mut at = 4 + addr_len;
                let port = if has_port {
                    at += 2;
                    Some(be16(opt, at - 2))
                } else {
                    None
                };
                let signal = if echo {
                    AddrSignal::Echo
                } else {
                    AddrSignal::Announce {
                        truncated_hmac: be64(opt, at),
                    }
                };
                Ok(MptcpOption::AddAddr(AddAddr {
                    addr_id: opt[3],
                    addr,
                    port,
                    signal,
                }))
            }
            Subtype::RemoveAddr => {
                // Figure 13: length = 3 + n, n >= 1.
                let addr_ids = AddrIdList::new(&opt[3..]).ok_or(bad)?;
                Ok(MptcpOption::RemoveAddr { addr_ids })
            }
            Subtype::MpPrio => {
                if len != 3 {
                    return Err(bad);
                }
                Ok(MptcpOption::MpPrio {
                    backup: opt[2] & 0x01 != 0,
                })
            }
            Subtype::MpFail => {
                if len != 12 {
                    return Err(bad);
                }
                Ok(MptcpOption::MpFail { dsn: be64(opt, 4) })
            }
            Subtype::MpFastclose => {
                if len != 12 {
                    return Err(bad);
                }
                Ok(MptcpOption::MpFastclose {
                    receiver_key: be64(opt, 4),
                })
            }
            Subtype::MpTcpRst => {
                if len != 4 {
                    return Err(bad);
                }
                let flags = opt[2] & 0x0f;
                Ok(MptcpOption::MpTcpRst(MpTcpRst {
                    transient: flags & 0x01 != 0,
                    reserved_flags: flags & 0x0e,
                    reason: RstReason::from_code(opt[3]),
                }))
            }
        }
    }

    /// The subtype of this option.
    pub fn subtype(&self) -> Subtype {
        match self {
            MptcpOption::MpCapable(_) => Subtype::MpCapable,
            MptcpOption::MpJoin(_) => Subtype::MpJoin,
            MptcpOption::Dss(_) => Subtype::Dss,
            MptcpOption::AddAddr(_) => Subtype::AddAddr,
            MptcpOption::RemoveAddr { .. } => Subtype::RemoveAddr,
            MptcpOption::MpPrio { .. } => Subtype::MpPrio,
            MptcpOption::MpFail { .. } => Subtype::MpFail,
            MptcpOption::MpFastclose { .. } => Subtype::MpFastclose,
            MptcpOption::MpTcpRst(_) => Subtype::MpTcpRst,
        }
    }

    /// Length on the wire, including kind and length bytes (the value of the length byte).
    #[allow(clippy::len_without_is_empty, reason = "an option is never empty")]
    pub fn len(&self) -> usize {
        match self {
            MptcpOption::MpCapable(c) => match c.payload {
                CapablePayload::NoKeys => 4,
                CapablePayload::SenderKey { .. } => 12,
                CapablePayload::BothKeys { .. } => 20,
                CapablePayload::BothKeysWithData { checksum, .. } => {
                    if checksum.is_some() {
                        24
                    } else {
                        22
                    }
                }
            },
            MptcpOption::MpJoin(MpJoin::Syn { .. }) => 12,
            MptcpOption::MpJoin(MpJoin::SynAck { .. }) => 16,
            MptcpOption::MpJoin(MpJoin::Ack { .. }) => 24,
            MptcpOption::Dss(d) => dss_len(d),
            MptcpOption::AddAddr(a) => {
                let addr = if a.addr.is_ipv4() { 4 } else { 16 };
                let port = if a.port.is_some() { 2 } else { 0 };
                let hmac = match a.signal {
                    AddrSignal::Announce { .. } => 8,
                    AddrSignal::Echo => 0,
                };
                4 + addr + port + hmac
            }
            MptcpOption::RemoveAddr { addr_ids } => 3 + addr_ids.as_slice().len(),
            MptcpOption::MpPrio { .. } => 3,
            MptcpOption::MpFail { .. } | MptcpOption::MpFastclose { .. } => 12,
            MptcpOption::MpTcpRst(_) => 4,
        }
    }

    /// Writes kind, length and body at the start of `out`; returns the bytes written
    /// (= [`len`](Self::len)). Reserved bits are written as 0 (RFC 8684: "MUST be set to 0").
    pub fn write(&self, out: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.len();
        if out.len() < len {
            return Err(WriteError::BufferTooSmall {
                needed: len,
                available: out.len(),
            });
        }
        let out = &mut out[..len];
        out.fill(0);
        out[0] = KIND_MPTCP;
        out[1] = len as u8; // every form is at most 40 bytes
        out[2] = (self.subtype() as u8) << 4;
        match self {
            MptcpOption::MpCapable(c) => {
                if c.version > 0x0f {
                    return Err(WriteError::FieldOutOfRange { field: "version" });
                }
                out[2] |= c.version;
                out[3] = c.flags.0;
                match c.payload {
                    CapablePayload::NoKeys => {}
                    CapablePayload::SenderKey { sender_key } => {
                        out[4..12].copy_from_slice(&sender_key.to_be_bytes());
                    }
                    CapablePayload::BothKeys {
                        sender_key,
                        receiver_key,
                    } => {
                        out[4..12].copy_from_slice(&sender_key.to_be_bytes());
                        out[12..20].copy_from_slice(&receiver_key.to_be_bytes());
                    }
                    CapablePayload::BothKeysWithData {
                        sender_key,
                        receiver_key,
                        data_len,
                        checksum,
                    } => {
                        out[4..12].copy_from_slice(&sender_key.to_be_bytes());
                        out[12..20].copy_from_slice(&receiver_key.to_be_bytes());
                        out[20..22].copy_from_slice(&data_len.to_be_bytes());
                        if let Some(csum) = checksum {
                            out[22..24].copy_from_slice(&csum.to_be_bytes());
                        }
                    }
                }
            }
            MptcpOption::MpJoin(j) => match *j {
                MpJoin::Syn {
                    backup,
                    addr_id,
                    receiver_token,
                    sender_nonce,
                } => {
                    out[2] |= u8::from(backup);
                    out[3] = addr_id;
                    out[4..8].copy_from_slice(&receiver_token.to_be_bytes());
                    out[8..12].copy_from_slice(&sender_nonce.to_be_bytes());
                }
                MpJoin::SynAck {
                    backup,
                    addr_id,
                    truncated_hmac,
                    sender_nonce,
                } => {
                    out[2] |= u8::from(backup);
                    out[3] = addr_id;
                    out[4..12].copy_from_slice(&truncated_hmac.to_be_bytes());
                    out[12..16].copy_from_slice(&sender_nonce.to_be_bytes());
                }
                MpJoin::Ack { hmac } => out[4..24].copy_from_slice(&hmac),
            },
            MptcpOption::Dss(d) => write_dss(d, out),
            MptcpOption::AddAddr(a) => {
                if a.signal == AddrSignal::Echo {
                    out[2] |= 0x01;
                }
                out[3] = a.addr_id;
                let mut at = 4;
                match a.addr {
                    IpAddr::V4(v4) => {
                        out[4..8].copy_from_slice(&v4.octets());
                        at += 4;
                    }
                    IpAddr::V6(v6) => {
                        out[4..20].copy_from_slice(&v6.octets());
                        at += 16;
                    }
                }
                if let Some(port) = a.port {
                    out[at..at + 2].copy_from_slice(&port.to_be_bytes());
                    at += 2;
                }
                if let AddrSignal::Announce { truncated_hmac } = a.signal {
                    out[at..at + 8].copy_from_slice(&truncated_hmac.to_be_bytes());
                }
            }
            MptcpOption::RemoveAddr { addr_ids } => out[3..].copy_from_slice(addr_ids.as_slice()),
            MptcpOption::MpPrio { backup } => out[2] |= u8::from(*backup),
            MptcpOption::MpFail { dsn } => out[4..12].copy_from_slice(&dsn.to_be_bytes()),
            MptcpOption::MpFastclose { receiver_key } => {
                out[4..12].copy_from_slice(&receiver_key.to_be_bytes());
            }
            MptcpOption::MpTcpRst(r) => {
                if r.reserved_flags & !0x0e != 0 {
                    return Err(WriteError::FieldOutOfRange {
                        field: "reserved_flags",
                    });
                }
                // RFC 8684 §3.6: U, V, W "MUST set these flags to 0" — we write what the value
                // holds so a relay can reproduce a received option; our own senders use 0.
                out[2] |= r.reserved_flags | u8::from(r.transient);
                out[3] = r.reason.code();
            }
        }
        Ok(len)
    }
}

fn dss_len(d: &Dss) -> usize {
    let ack = d.data_ack.map_or(0, DsnField::wire_len);
    let map = d.mapping.map_or(0, |m| {
        m.dsn.wire_len() + 4 + 2 + if m.checksum.is_some() { DSS_CHECKSUM_LEN } else { 0 }
    });
    DSS_HEADER_LEN + ack + map
}

fn parse_dss(opt: &[u8], bad: OptionError) -> Result<Dss, OptionError> {
    // Figure 9: the flag octet is at offset 3.
    let Some(&flags) = opt.get(3) else {
        return Err(bad);
    };
    // Figure 9 and the text after it: "a" and "m" only have meaning if "A"/"M" are set.
    let ack_len = match (flags & DSS_A != 0, flags & DSS_LA != 0) {
        (false, _) => 0,
        (true, false) => 4,
        (true, true) => 8,
    };
    let map_len = match (flags & DSS_M != 0, flags & DSS_LM != 0) {
        (false, _) => 0,
        (true, false) => 4 + 4 + 2,
        (true, true) => 8 + 4 + 2,
    };
    let base = 4 + ack_len + map_len;
    let len = opt.len();
    // §3.3: "The presence of the checksum can be inferred from the length of the option."
    let has_checksum = if len == base {
        false
    } else if map_len != 0 && len == base + 2 {
        true
    } else {
        return Err(bad);
    };
    let mut at = 4;
    let data_ack = match ack_len {
        4 => Some(DsnField::Short(be32(opt, at))),
        8 => Some(DsnField::Long(be64(opt, at))),
        _ => None,
    };
    at += ack_len;
    let mapping = if map_len == 0 {
        None
    } else {
        let dsn = if flags & DSS_LM != 0 {
            at += 8;
            DsnField::Long(be64(opt, at - 8))
        } else {
            at += 4;
            DsnField::Short(be32(opt, at - 4))
        };
        let subflow_seq = be32(opt, at);
        let data_len = be16(opt, at + 4);
        let checksum = has_checksum.then(|| be16(opt, at + 6));
        Some(DssMapping {
            dsn,
            subflow_seq,
            data_len,
            checksum,
        })
    };
    Ok(Dss {
        data_ack,
        mapping,
        data_fin: flags & DSS_F != 0,
    })
}

fn write_dss(d: &Dss, out: &mut [u8]) {
    let mut flags = 0u8;
    let mut at = 4;
    match d.data_ack {
        Some(DsnField::Short(v)) => {
            flags |= DSS_A;
            out[at..at + 4].copy_from_slice(&v.to_be_bytes());
            at += 4;
        }
        Some(DsnField::Long(v)) => {
            flags |= DSS_A | DSS_LA;
            out[at..at + 8].copy_from_slice(&v.to_be_bytes());
            at += 8;
        }
        None => {}
    }
    if let Some(m) = d.mapping {
        flags |= DSS_M;
        match m.dsn {
            DsnField::Short(v) => {
                out[at..at + 4].copy_from_slice(&v.to_be_bytes());
                at += 4;
            }
            DsnField::Long(v) => {
                flags |= DSS_LM;
                out[at..at + 8].copy_from_slice(&v.to_be_bytes());
                at += 8;
            }
        }
        out[at..at + 4].copy_from_slice(&m.subflow_seq.to_be_bytes());
        out[at + 4..at + 6].copy_from_slice(&m.data_len.to_be_bytes());
        if let Some(c) = m.checksum {
            out[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
        }
    }
    if d.data_fin {
        flags |= DSS_F;
    }
    out[3] = flags;
}
