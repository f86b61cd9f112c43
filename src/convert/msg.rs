//! RFC 8803 §6 codec: the Convert fixed header (§6.1), the generic TLV framing (§6.2.1) and every
//! TLV of §6.2 (Info, Supported TCP Extensions, Connect, Extended TCP Header, Cookie, Error).
//!
//! Two layers, smoltcp style:
//! - [`MessageView`]: a checked view over untrusted bytes. [`MessageView::new_checked`] validates the
//!   fixed header and the framing of every TLV inside the declared Total Length, and never reads past
//!   it; [`MsgError::Incomplete`] (a prefix that may still become a valid message) is kept apart from
//!   every other error (the bytes can never become one).
//! - [`Message`] / [`Tlv`]: owned summaries; [`Message::parse`] decodes a view (and enforces the
//!   per-message rules: reserved type 0, duplicates), [`Message::to_bytes`] builds the wire form.
//!
//! What to *do* about an error (reset, which Error TLV) is the caller's decision: `converter.rs`
//! and `client.rs` apply the RFC's rules for their side.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::tcpopt::has_eol_or_nop;
pub use super::tcpopt::{TcpOptions, options_len, tcp_options};

/// The only version this document specifies (§6.1: "This document specifies version 1").
pub const VERSION: u8 = 1;
/// §6.1: "The Magic Number field MUST be set to 0x2263."
pub const MAGIC: u16 = 0x2263;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 4;
/// §6.1: Total Length is 8 bits of 32-bit words, so a message is at most 1020 bytes.
pub const MAX_MESSAGE_LEN: usize = 255 * 4;
/// The Connect TLV's length before the TCP Options field (§6.2.5: "Base Connect TLV ... 20 bytes").
pub const CONNECT_BASE_LEN: usize = 20;

/// Convert TLV types (§6.2.2, Table 1).
pub mod kind {
    /// Info TLV (§6.2.3).
    pub const INFO: u8 = 0x01;
    /// Connect TLV (§6.2.5).
    pub const CONNECT: u8 = 0x0A;
    /// Extended TCP Header TLV (§6.2.6).
    pub const EXTENDED_TCP_HEADER: u8 = 0x14;
    /// Supported TCP Extensions TLV (§6.2.4).
    pub const SUPPORTED_TCP_EXTENSIONS: u8 = 0x15;
    /// Cookie TLV (§6.2.7).
    pub const COOKIE: u8 = 0x16;
    /// Error TLV (§6.2.8).
    pub const ERROR: u8 = 0x1E;
    /// Every type this document defines.
    pub const KNOWN: &[u8] = &[
        INFO,
        CONNECT,
        EXTENDED_TCP_HEADER,
        SUPPORTED_TCP_EXTENSIONS,
        COOKIE,
        ERROR,
    ];
}

/// An Error TLV code (RFC 8803 §6.2.8, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: the version in the fixed header is not supported.
    UnsupportedVersion,
    /// 1: the message cannot be parsed and validated.
    MalformedMessage,
    /// 2: a message (TLV) type is not supported.
    UnsupportedMessage,
    /// 3: a cookie is required and the converter computed one for this client.
    MissingCookie,
    /// 32: lack of authorization (including an invalid or absent cookie).
    NotAuthorized,
    /// 33: a requested TCP option cannot be used.
    UnsupportedTcpOption,
    /// 64: the converter lacks resources.
    ResourceExceeded,
    /// 65: the converter has forwarding problems.
    NetworkFailure,
    /// 96: the destination answered with an RST.
    ConnectionReset,
    /// 97: an ICMP hard error came back from the destination.
    DestinationUnreachable,
    /// Not in RFC 8803 Table 2: mpbond's code 192 from the Private Use range (§10.2.3, 192-255),
    /// "the converter does not implement this function". `convert/` never sends it itself.
    FunctionNotImplemented,
}

impl ErrorCode {
    /// Every code, in Table 2 order.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::UnsupportedVersion,
        ErrorCode::MalformedMessage,
        ErrorCode::UnsupportedMessage,
        ErrorCode::MissingCookie,
        ErrorCode::NotAuthorized,
        ErrorCode::UnsupportedTcpOption,
        ErrorCode::ResourceExceeded,
        ErrorCode::NetworkFailure,
        ErrorCode::ConnectionReset,
        ErrorCode::DestinationUnreachable,
        ErrorCode::FunctionNotImplemented,
    ];

    /// The code on the wire (Table 2).
    pub fn code(self) -> u8 {
        match self {
            ErrorCode::UnsupportedVersion => 0,
            ErrorCode::MalformedMessage => 1,
            ErrorCode::UnsupportedMessage => 2,
            ErrorCode::MissingCookie => 3,
            ErrorCode::NotAuthorized => 32,
            ErrorCode::UnsupportedTcpOption => 33,
            ErrorCode::ResourceExceeded => 64,
            ErrorCode::NetworkFailure => 65,
            ErrorCode::ConnectionReset => 96,
            ErrorCode::DestinationUnreachable => 97,
            ErrorCode::FunctionNotImplemented => 192,
        }
    }

    /// The code for a wire value, if Table 2 (or our private 192) defines it.
    pub fn from_code(code: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
    }
}

/// Why bytes are not (yet) a valid Convert message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// A prefix that may still become a valid message: at least `needed` bytes are required.
    #[error("incomplete Convert message: {needed} bytes needed")]
    Incomplete {
        /// Bytes needed before the next decision (the fixed header, then the whole message).
        needed: usize,
    },
    /// The Magic Number is not 0x2263 (§6.1): not a Convert message at all.
    #[error("not a Convert message (magic number is not 0x2263)")]
    NotConvert,
    /// Total Length 0 (§6.1: "invalid and the connection MUST be reset").
    #[error("Convert fixed header with Total Length 0")]
    ZeroTotalLength,
    /// A version other than 1 (§6.1).
    #[error("unsupported Convert version {0}")]
    UnsupportedVersion(u8),
    /// A fixed header and no TLV (§6: "followed by one or more Convert TLVs").
    #[error("Convert message without any TLV")]
    NoTlv,
    /// A TLV runs past the Total Length (§9: TLVs "properly framed within the boundary").
    #[error("Convert TLV at offset {offset} overruns the message")]
    TlvOverrun {
        /// Offset of the TLV in the message.
        offset: usize,
    },
    /// A TLV with Length 0 (§6.2.1: the length covers Type and Length, so at least 1 word).
    #[error("Convert TLV at offset {offset} has length 0")]
    ZeroLengthTlv {
        /// Offset of the TLV in the message.
        offset: usize,
    },
    /// TLV type 0 (§6.2.2: "Type 0x0 is a reserved value").
    #[error("reserved Convert TLV type 0")]
    ReservedType,
    /// The same TLV type twice (§6.2.1: "A given TLV MUST only appear once").
    #[error("Convert TLV type {0} appears twice")]
    Duplicate(u8),
    /// A TLV of a known type whose content is invalid.
    #[error("invalid Convert TLV type {kind}: {reason}")]
    BadTlv {
        /// The TLV type.
        kind: u8,
        /// What is wrong.
        reason: &'static str,
    },
}

impl MsgError {
    /// Whether more bytes may still make a valid message.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, MsgError::Incomplete { .. })
    }
}

/// Why a message cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// More than 1020 bytes (§6.1: Total Length is 8 bits of words).
    #[error("Convert message of {0} bytes exceeds 1020")]
    TooLong(usize),
    /// A message without TLVs (§6: "one or more Convert TLVs").
    #[error("Convert message without any TLV")]
    Empty,
    /// The same TLV type twice (§6.2.1).
    #[error("Convert TLV type {0} twice in one message")]
    Duplicate(u8),
    /// An `Unknown` TLV with type 0 or a type this document defines.
    #[error("Convert TLV type {0} cannot be built as an unknown TLV")]
    BadKind(u8),
    /// A TCP options field that is not a valid option list (or holds EOL/NOP in a Connect TLV).
    #[error("invalid TCP options field: {0}")]
    BadOptions(&'static str),
}

/// The 32-bit fixed header (§6.1, Figure 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Version (1).
    pub version: u8,
    /// Total Length in 32-bit words, header included.
    pub total_words: u8,
}

impl FixedHeader {
    /// Parses the fixed header at the start of `data`. Bytes already present are judged even when
    /// fewer than 4 arrived: a zero Total Length or a wrong Magic Number byte fails at once.
    pub fn parse(data: &[u8]) -> Result<FixedHeader, MsgError> {
        // §6.1: "A Total Length of zero is invalid and the connection MUST be reset."
        if data.get(1) == Some(&0) {
            return Err(MsgError::ZeroTotalLength);
        }
        // §6.1: "The Magic Number field MUST be set to 0x2263."
        let magic = MAGIC.to_be_bytes();
        for (got, want) in data.iter().skip(2).take(2).zip(magic) {
            if *got != want {
                return Err(MsgError::NotConvert);
            }
        }
        match data {
            [version, total_words, _, _, ..] => Ok(FixedHeader {
                version: *version,
                total_words: *total_words,
            }),
            _ => Err(MsgError::Incomplete { needed: HEADER_LEN }),
        }
    }

    /// Bytes of the whole message (Total Length × 4).
    pub fn message_len(self) -> usize {
        usize::from(self.total_words) * 4
    }

    /// The wire form.
    pub fn to_bytes(self) -> [u8; 4] {
        let m = MAGIC.to_be_bytes();
        [self.version, self.total_words, m[0], m[1]]
    }
}

/// A checked view of one Convert message at the start of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    buf: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Validates the fixed header and the framing of every TLV of the message that starts `data`
    /// (bytes after it are user data and are not looked at). Framing is checked on whatever prefix
    /// is present, so a broken TLV fails before the rest arrives.
    pub fn new_checked(data: &'a [u8]) -> Result<MessageView<'a>, MsgError> {
        let h = FixedHeader::parse(data)?;
        if h.version != VERSION {
            return Err(MsgError::UnsupportedVersion(h.version));
        }
        let len = h.message_len();
        if len == HEADER_LEN {
            return Err(MsgError::NoTlv);
        }
        // §9: "An implementation MUST check that the Convert TLVs are properly framed within the
        // boundary indicated by the Total Length in the fixed header."
        let present = &data[..len.min(data.len())];
        let mut off = HEADER_LEN;
        while off < len {
            let Some(&words) = present.get(off + 1) else {
                return Err(MsgError::Incomplete { needed: len });
            };
            let tlv_len = usize::from(words) * 4;
            if tlv_len == 0 {
                return Err(MsgError::ZeroLengthTlv { offset: off });
            }
            if off + tlv_len > len {
                return Err(MsgError::TlvOverrun { offset: off });
            }
            off += tlv_len;
        }
        match data.get(..len) {
            Some(buf) => Ok(MessageView { buf }),
            None => Err(MsgError::Incomplete { needed: len }),
        }
    }

    /// Bytes of the message (the offset of the first byte of user data).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a checked message has a header and at least one TLV.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The TLVs, in wire order (framing already checked).
    pub fn tlvs(&self) -> RawTlvs<'a> {
        RawTlvs {
            rest: self.buf.get(HEADER_LEN..).unwrap_or(&[]),
        }
    }
}

/// Iterator over the framed TLVs of a [`MessageView`].
#[derive(Debug, Clone)]
pub struct RawTlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawTlvs<'a> {
    type Item = RawTlv<'a>;
    fn next(&mut self) -> Option<RawTlv<'a>> {
        let (&kind, tail) = self.rest.split_first()?;
        let len = usize::from(*tail.first()?) * 4;
        let bytes = self.rest.get(..len).filter(|_| len > 0)?;
        self.rest = &self.rest[len..];
        Some(RawTlv { kind, bytes })
    }
}

/// One framed TLV: its type and all its bytes (Type, Length, Value and padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTlv<'a> {
    /// The Type field.
    pub kind: u8,
    /// The whole TLV, a multiple of 4 bytes, at least 4.
    pub bytes: &'a [u8],
}

impl RawTlv<'_> {
    /// Decodes the TLV's content. Type 0 is [`MsgError::ReservedType`]; a type this document does
    /// not define decodes to [`Tlv::Unknown`] (what to do with it is the receiver's rule).
    pub fn decode(&self) -> Result<Tlv, MsgError> {
        let b = self.bytes;
        let bad = |reason| MsgError::BadTlv {
            kind: self.kind,
            reason,
        };
        let after_unassigned = b.get(4..).unwrap_or(&[]);
        Ok(match self.kind {
            0 => return Err(MsgError::ReservedType),
            kind::INFO => {
                // Table 1: the Info TLV has Length 1. Its Zero field is not checked (no MUST).
                if b.len() != 4 {
                    return Err(bad("Info TLV longer than one word"));
                }
                Tlv::Info
            }
            kind::CONNECT => {
                // §6.2.5: Base Connect TLV is 20 bytes; the Extended one is longer.
                let (Some(port), Some(addr)) = (b.get(2..4), b.get(4..CONNECT_BASE_LEN)) else {
                    return Err(bad("Connect TLV shorter than 20 bytes"));
                };
                let port = u16::from_be_bytes([port[0], port[1]]);
                let mut a = [0u8; 16];
                a.copy_from_slice(addr);
                let v6 = Ipv6Addr::from(a);
                // §6.2.5: "IPv4 addresses MUST be encoded using the IPv4-mapped IPv6 address format".
                let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
                let field = b.get(CONNECT_BASE_LEN..).unwrap_or(&[]);
                let end = options_len(field).map_err(bad)?;
                Tlv::Connect(Connect {
                    dst: SocketAddr::new(ip, port),
                    options: field[..end].to_vec(),
                })
            }
            kind::EXTENDED_TCP_HEADER => {
                // §6.2.6: "The Unassigned field MUST be set to zero by the sender and ignored by
                // the receiver."
                let end = options_len(after_unassigned).map_err(bad)?;
                Tlv::ExtendedTcpHeader(after_unassigned[..end].to_vec())
            }
            kind::SUPPORTED_TCP_EXTENSIONS => {
                // §6.2.4: "The Unassigned field MUST be set to zero by the Transport Converter and
                // ignored by the Client"; the list "is padded with 0".
                Tlv::SupportedTcpExtensions(after_unassigned.iter().copied().filter(|&k| k != 0).collect())
            }
            // §6.2.7: an opaque cookie after the Zero field.
            kind::COOKIE => Tlv::Cookie(after_unassigned.to_vec()),
            kind::ERROR => Tlv::Error(ErrorTlv::from_raw(b[2], b.get(3..).unwrap_or(&[]))),
            other => Tlv::Unknown {
                kind: other,
                value: b.get(2..).unwrap_or(&[]).to_vec(),
            },
        })
    }
}

/// A Connect TLV (§6.2.5): the remote peer and the TCP options to use toward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Remote Peer IP Address and Port; an IPv4-mapped address decodes to IPv4.
    pub dst: SocketAddr,
    /// The TCP Options field without its zero padding (empty: a Base Connect TLV).
    pub options: Vec<u8>,
}

/// The Error TLV (§6.2.8), each code with its Value semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorTlv {
    /// 0: "The Value field MUST be set to the version supported by the peer", one byte each,
    /// padded with zeros (version 0 is reserved, so zeros are padding).
    UnsupportedVersion {
        /// Supported versions.
        versions: Vec<u8>,
    },
    /// 1: "the Value field MUST echo the received message" in the format of Figure 23 (a zero
    /// byte, then the echo from the next 32-bit boundary).
    MalformedMessage {
        /// The echoed message, a multiple of 4 bytes on the wire.
        echo: Vec<u8>,
    },
    /// 2: Value as for Malformed Message (Figure 23).
    UnsupportedMessage {
        /// The echoed message.
        echo: Vec<u8>,
    },
    /// 3: "The first byte of the Value field MUST be set to zero and the remaining bytes of the
    /// Error TLV contain the Cookie".
    MissingCookie {
        /// The cookie computed by the converter.
        cookie: Vec<u8>,
    },
    /// 32: "The Value field MUST be set to zero."
    NotAuthorized,
    /// 33: the kinds of the unsupported options, padded with zeros.
    UnsupportedTcpOption {
        /// TCP option kinds.
        kinds: Vec<u8>,
    },
    /// 64: suggested delay in seconds; "A Value of zero corresponds to a default delay of at
    /// least 30 seconds."
    ResourceExceeded {
        /// Seconds (0 = at least 30 s).
        retry_after: u8,
    },
    /// 65: suggested delay as for Resource Exceeded.
    NetworkFailure {
        /// Seconds (0 = at least 30 s).
        retry_after: u8,
    },
    /// 96: "The Value field MUST be set to zero."
    ConnectionReset,
    /// 97: "The Value field MUST echo the Code field of the received ICMP message."
    DestinationUnreachable {
        /// The ICMP Code.
        icmp_code: u8,
    },
    /// A code Table 2 does not define (including our private 192): kept raw.
    Other {
        /// The Error Code.
        code: u8,
        /// The Value bytes after the code, padding included.
        value: Vec<u8>,
    },
}

impl ErrorTlv {
    /// Decodes the Value (`value`: the TLV bytes after the Error Code, padding included).
    pub fn from_raw(code: u8, value: &[u8]) -> ErrorTlv {
        let first = value.first().copied().unwrap_or(0);
        // Figure 23: the echo (or cookie) starts at the next 32-bit word, after one zero byte.
        let from_word = || value.get(1..).unwrap_or(&[]).to_vec();
        let nonzero = || value.iter().copied().filter(|&b| b != 0).collect();
        match code {
            0 => ErrorTlv::UnsupportedVersion { versions: nonzero() },
            1 => ErrorTlv::MalformedMessage { echo: from_word() },
            2 => ErrorTlv::UnsupportedMessage { echo: from_word() },
            3 => ErrorTlv::MissingCookie { cookie: from_word() },
            32 => ErrorTlv::NotAuthorized,
            33 => ErrorTlv::UnsupportedTcpOption { kinds: nonzero() },
            64 => ErrorTlv::ResourceExceeded { retry_after: first },
            65 => ErrorTlv::NetworkFailure { retry_after: first },
            96 => ErrorTlv::ConnectionReset,
            97 => ErrorTlv::DestinationUnreachable { icmp_code: first },
            code => ErrorTlv::Other {
                code,
                value: value.to_vec(),
            },
        }
    }

    /// The Error Code on the wire.
    pub fn code(&self) -> u8 {
        match self {
            ErrorTlv::UnsupportedVersion { .. } => 0,
            ErrorTlv::MalformedMessage { .. } => 1,
            ErrorTlv::UnsupportedMessage { .. } => 2,
            ErrorTlv::MissingCookie { .. } => 3,
            ErrorTlv::NotAuthorized => 32,
            ErrorTlv::UnsupportedTcpOption { .. } => 33,
            ErrorTlv::ResourceExceeded { .. } => 64,
            ErrorTlv::NetworkFailure { .. } => 65,
            ErrorTlv::ConnectionReset => 96,
            ErrorTlv::DestinationUnreachable { .. } => 97,
            ErrorTlv::Other { code, .. } => *code,
        }
    }

    /// The code as an [`ErrorCode`], when defined.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code())
    }

    /// The Value bytes after the Error Code, before padding.
    pub fn raw_value(&self) -> Vec<u8> {
        let word = |rest: &[u8]| {
            let mut v = vec![0u8];
            v.extend_from_slice(rest);
            v
        };
        match self {
            ErrorTlv::UnsupportedVersion { versions } => versions.clone(),
            ErrorTlv::MalformedMessage { echo } | ErrorTlv::UnsupportedMessage { echo } => word(echo),
            ErrorTlv::MissingCookie { cookie } => word(cookie),
            ErrorTlv::NotAuthorized | ErrorTlv::ConnectionReset => vec![0],
            ErrorTlv::UnsupportedTcpOption { kinds } => kinds.clone(),
            ErrorTlv::ResourceExceeded { retry_after } | ErrorTlv::NetworkFailure { retry_after } => {
                vec![*retry_after]
            }
            ErrorTlv::DestinationUnreachable { icmp_code } => vec![*icmp_code],
            ErrorTlv::Other { value, .. } => value.clone(),
        }
    }
}

/// One Convert TLV, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tlv {
    /// Info (§6.2.3): the client asks for the converter's capabilities.
    Info,
    /// Supported TCP Extensions (§6.2.4): TCP option kinds, padding removed.
    SupportedTcpExtensions(Vec<u8>),
    /// Connect (§6.2.5).
    Connect(Connect),
    /// Extended TCP Header (§6.2.6): the destination's SYN+ACK options, padding removed.
    ExtendedTcpHeader(Vec<u8>),
    /// Cookie (§6.2.7): the opaque cookie.
    Cookie(Vec<u8>),
    /// Error (§6.2.8).
    Error(ErrorTlv),
    /// A type this document does not define; `value` is every byte after Type and Length.
    Unknown {
        /// The Type field.
        kind: u8,
        /// The bytes after Type and Length, padding included.
        value: Vec<u8>,
    },
}

impl Tlv {
    /// The Type field.
    pub fn kind(&self) -> u8 {
        match self {
            Tlv::Info => kind::INFO,
            Tlv::SupportedTcpExtensions(_) => kind::SUPPORTED_TCP_EXTENSIONS,
            Tlv::Connect(_) => kind::CONNECT,
            Tlv::ExtendedTcpHeader(_) => kind::EXTENDED_TCP_HEADER,
            Tlv::Cookie(_) => kind::COOKIE,
            Tlv::Error(_) => kind::ERROR,
            Tlv::Unknown { kind, .. } => *kind,
        }
    }

    /// Appends the wire form (§6.2.1: Length in 32-bit words, "Value MUST be padded with zeroes
    /// so that the length of the TLV is a multiple of 32 bits").
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), BuildError> {
        let start = out.len();
        out.push(self.kind());
        out.push(0); // Length, set below.
        match self {
            Tlv::Info => out.extend_from_slice(&[0, 0]),
            Tlv::SupportedTcpExtensions(kinds) => {
                out.extend_from_slice(&[0, 0]);
                out.extend(kinds.iter().copied().filter(|&k| k != 0));
            }
            Tlv::Connect(c) => {
                // §6.2.5: "The TCP options that do not include a length sub-field, i.e., option
                // types 0 (EOL) and 1 (NOP) ... MUST NOT be placed inside the TCP options field".
                if options_len(&c.options) != Ok(c.options.len()) || has_eol_or_nop(&c.options) {
                    out.truncate(start);
                    return Err(BuildError::BadOptions(
                        "not a list of options with a length field (no EOL/NOP, §6.2.5)",
                    ));
                }
                write_connect_body(c.dst, &c.options, out);
            }
            Tlv::ExtendedTcpHeader(opts) => {
                if options_len(opts).is_err() {
                    out.truncate(start);
                    return Err(BuildError::BadOptions("not a TCP option list"));
                }
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(opts);
            }
            Tlv::Cookie(c) => {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(c);
            }
            Tlv::Error(e) => {
                out.push(e.code());
                out.extend_from_slice(&e.raw_value());
            }
            Tlv::Unknown { kind, value } => {
                if *kind == 0 || kind::KNOWN.contains(kind) {
                    out.truncate(start);
                    return Err(BuildError::BadKind(*kind));
                }
                out.extend_from_slice(value);
            }
        }
        finish_tlv(out, start)
    }
}

/// Pads the TLV that starts at `start` to 32 bits and fills in its Length.
fn finish_tlv(out: &mut Vec<u8>, start: usize) -> Result<(), BuildError> {
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    let len = out.len() - start;
    // A TLV fits in a message of at most 1020 bytes with its 4-byte header.
    if len > MAX_MESSAGE_LEN - HEADER_LEN {
        out.truncate(start);
        return Err(BuildError::TooLong(len + HEADER_LEN));
    }
    out[start + 1] = (len / 4) as u8;
    Ok(())
}

fn write_connect_body(dst: SocketAddr, options: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&dst.port().to_be_bytes());
    // §6.2.5: "The Remote Peer IP Address MUST be encoded as an IPv6 address. IPv4 addresses
    // MUST be encoded using the IPv4-mapped IPv6 address format".
    let v6 = match dst.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&v6.octets());
    out.extend_from_slice(options);
}

/// The bytes of a Connect TLV for `dst` with `options` (a valid list without EOL/NOP, as
/// [`client::connect_request`](super::client::connect_request) makes it; longer lists are cut at an
/// option boundary so the TLV always fits).
pub fn connect_tlv_bytes(dst: SocketAddr, options: &[u8]) -> Vec<u8> {
    let mut out = vec![kind::CONNECT, 0];
    let mut kept = Vec::new();
    for (_, opt) in tcp_options(options) {
        if kept.len() + opt.len() > 256 {
            break;
        }
        kept.extend_from_slice(opt);
    }
    write_connect_body(dst, &kept, &mut out);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out[1] = (out.len() / 4) as u8;
    out
}

/// A Convert message: the fixed header and its TLVs in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The TLVs, in wire order.
    pub tlvs: Vec<Tlv>,
}

impl Message {
    /// Parses the message at the start of `data`; returns it and its length in bytes (what
    /// follows is user data). Enforces §6.2.2 (type 0 reserved) and §6.2.1 (each TLV once).
    pub fn parse(data: &[u8]) -> Result<(Message, usize), MsgError> {
        let view = MessageView::new_checked(data)?;
        let mut seen = [false; 256];
        let mut tlvs = Vec::new();
        for raw in view.tlvs() {
            if raw.kind == 0 {
                return Err(MsgError::ReservedType);
            }
            // §6.2.1: "A given TLV MUST only appear once on a connection."
            if std::mem::replace(&mut seen[usize::from(raw.kind)], true) {
                return Err(MsgError::Duplicate(raw.kind));
            }
            tlvs.push(raw.decode()?);
        }
        Ok((Message { tlvs }, view.len()))
    }

    /// The wire form: fixed header (version 1, Total Length, Magic Number) then the TLVs.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BuildError> {
        if self.tlvs.is_empty() {
            return Err(BuildError::Empty);
        }
        let mut seen = [false; 256];
        let mut out = vec![0u8; HEADER_LEN];
        for t in &self.tlvs {
            // §6.2.1: "A given TLV MUST only appear once on a connection."
            if std::mem::replace(&mut seen[usize::from(t.kind())], true) {
                return Err(BuildError::Duplicate(t.kind()));
            }
            t.write(&mut out)?;
            if out.len() > MAX_MESSAGE_LEN {
                return Err(BuildError::TooLong(out.len()));
            }
        }
        let h = FixedHeader {
            version: VERSION,
            total_words: (out.len() / 4) as u8,
        };
        out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
        Ok(out)
    }
}

/// A message with one Error TLV carrying `code` and the raw `value` (zero padded; cut so the
/// message fits in 1020 bytes).
pub fn error_message(code: u8, value: &[u8]) -> Vec<u8> {
    let value = &value[..value.len().min(MAX_MESSAGE_LEN - HEADER_LEN - 3)];
    let mut out = FixedHeader {
        version: VERSION,
        total_words: 0,
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(&[kind::ERROR, 0, code]);
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out[1] = (out.len() / 4) as u8;
    out[HEADER_LEN + 1] = ((out.len() - HEADER_LEN) / 4) as u8;
    out
}
