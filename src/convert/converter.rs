//! The converter's side (skeleton).

use std::net::SocketAddr;
use std::time::Duration;

use super::key::{ClientKey, KeyId};
use super::msg::ErrorCode;

/// Converter limits.
#[derive(Debug, Clone)]
pub struct ConverterConfig {
    /// A cookie timestamp further than this from now is stale (default 120 s).
    pub max_clock_skew: Duration,
    /// Bounded replay cache size (default 1 << 16 entries).
    pub replay_capacity: usize,
    /// Bytes of a Convert message at most (default 1024); longer = Malformed.
    pub max_request_len: usize,
}

impl Default for ConverterConfig {
    fn default() -> Self {
        ConverterConfig {
            max_clock_skew: Duration::from_secs(120),
            replay_capacity: 1 << 16,
            max_request_len: 1024,
        }
    }
}

/// The converter's protocol state: the keyring and the replay cache.
#[derive(Debug)]
pub struct Converter {
    keys: Vec<ClientKey>,
    cfg: ConverterConfig,
}

impl Converter {
    /// A converter accepting `keys`.
    pub fn new(keys: Vec<ClientKey>, cfg: ConverterConfig) -> Converter {
        Converter { keys, cfg }
    }

    /// Replaces the keyring.
    pub fn replace_keys(&mut self, keys: Vec<ClientKey>) {
        self.keys = keys;
    }

    /// Checks the bytes received so far (skeleton: refuses everything as Not Authorized).
    pub fn check_request(&mut self, _unix_now: Duration, _data: &[u8]) -> Request {
        let _ = (&self.keys, &self.cfg);
        Request::Refused {
            cause: RefusalCause::BadMac,
            key: None,
            reply: error_reply(ErrorCode::NotAuthorized, &[]),
        }
    }
}

/// What to do with an upstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `data` is a prefix of a possibly valid message: wait for more bytes (bounded by max_request_len).
    Incomplete,
    /// Authenticated Connect. The caller applies its egress policy and limits, then dials `dst`.
    /// `consumed` bytes are the Convert message; `data[consumed..]` is early user data for `dst`.
    Connect {
        /// The destination.
        dst: SocketAddr,
        /// The key whose proof verified.
        key: KeyId,
        /// Bytes of the Convert message.
        consumed: usize,
        /// TCP options the client asked the converter to use toward `dst`.
        tcp_options: Vec<u8>,
    },
    /// Refused before any dial: write `reply` to the client, then close.
    Refused {
        /// Why.
        cause: RefusalCause,
        /// The key, when the refusal came after its proof verified.
        key: Option<KeyId>,
        /// The Convert message to write back.
        reply: Vec<u8>,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCause {
    /// The message cannot be parsed and validated.
    Malformed,
    /// Not version 1.
    UnsupportedVersion,
    /// No Cookie TLV.
    MissingCookie,
    /// The cookie names a key not in the keyring.
    UnknownKey,
    /// The cookie's MAC does not verify.
    BadMac,
    /// The cookie's timestamp is too far from now.
    Stale,
    /// The cookie was seen before.
    Replay,
    /// A TLV type the converter does not serve (added to CONVERT_API.md).
    Unsupported,
    /// A TCP option the converter cannot use toward the destination (added to CONVERT_API.md).
    UnsupportedOption,
    /// Egress policy refused the destination (server/).
    Policy,
    /// A limit was reached (server/).
    Limit,
    /// The destination answered with an RST (server/).
    DestRefused,
    /// An ICMP hard error came back (server/).
    DestUnreachable,
    /// The destination did not answer in time (server/).
    DestTimeout,
}

impl RefusalCause {
    /// Every cause.
    pub const ALL: &[RefusalCause] = &[
        RefusalCause::Malformed,
        RefusalCause::UnsupportedVersion,
        RefusalCause::MissingCookie,
        RefusalCause::UnknownKey,
        RefusalCause::BadMac,
        RefusalCause::Stale,
        RefusalCause::Replay,
        RefusalCause::Unsupported,
        RefusalCause::UnsupportedOption,
        RefusalCause::Policy,
        RefusalCause::Limit,
        RefusalCause::DestRefused,
        RefusalCause::DestUnreachable,
        RefusalCause::DestTimeout,
    ];

    /// snake_case name, for status keys.
    pub fn name(self) -> &'static str {
        match self {
            RefusalCause::Malformed => "malformed",
            RefusalCause::UnsupportedVersion => "unsupported_version",
            RefusalCause::MissingCookie => "missing_cookie",
            RefusalCause::UnknownKey => "unknown_key",
            RefusalCause::BadMac => "bad_mac",
            RefusalCause::Stale => "stale",
            RefusalCause::Replay => "replay",
            RefusalCause::Unsupported => "unsupported",
            RefusalCause::UnsupportedOption => "unsupported_option",
            RefusalCause::Policy => "policy",
            RefusalCause::Limit => "limit",
            RefusalCause::DestRefused => "dest_refused",
            RefusalCause::DestUnreachable => "dest_unreachable",
            RefusalCause::DestTimeout => "dest_timeout",
        }
    }

    /// The Error TLV code the reply carries (RFC 8803 §6.2.8).
    pub fn error_code(self) -> ErrorCode {
        match self {
            RefusalCause::Malformed => ErrorCode::MalformedMessage,
            RefusalCause::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            RefusalCause::MissingCookie
            | RefusalCause::UnknownKey
            | RefusalCause::BadMac
            | RefusalCause::Stale
            | RefusalCause::Replay
            | RefusalCause::Policy => ErrorCode::NotAuthorized,
            RefusalCause::Unsupported => ErrorCode::UnsupportedMessage,
            RefusalCause::UnsupportedOption => ErrorCode::UnsupportedTcpOption,
            RefusalCause::Limit => ErrorCode::ResourceExceeded,
            RefusalCause::DestRefused => ErrorCode::ConnectionReset,
            RefusalCause::DestUnreachable => ErrorCode::DestinationUnreachable,
            RefusalCause::DestTimeout => ErrorCode::NetworkFailure,
        }
    }
}

/// The reply once the destination accepted (skeleton: fixed header + empty Extended TCP Header).
pub fn connected_reply(_dst_synack_options: &[u8]) -> Vec<u8> {
    vec![1, 2, 0x22, 0x63, 20, 1, 0, 0]
}

/// A Convert message with one Error TLV.
pub fn error_reply(code: ErrorCode, _value: &[u8]) -> Vec<u8> {
    vec![1, 2, 0x22, 0x63, 30, 1, code.code(), 0]
}
