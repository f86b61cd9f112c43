//! The laptop's side (skeleton).

use std::net::SocketAddr;
use std::time::Duration;

use super::key::ClientKey;
use super::msg::ErrorCode;

/// The request the laptop puts in its SYN to the converter (skeleton: empty).
pub fn connect_request(
    _key: &ClientKey,
    _unix_now: Duration,
    _nonce: [u8; 16],
    _dst: SocketAddr,
    _tcp_options: &[u8],
) -> Vec<u8> {
    Vec::new()
}

/// The converter's reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Not the whole reply yet.
    Incomplete,
    /// `consumed` bytes were the reply; the rest is the destination's data.
    Connected {
        /// Bytes of the Convert message.
        consumed: usize,
        /// The destination's SYN+ACK options as the converter reported them.
        tcp_options: Vec<u8>,
        /// The converter listed MPTCP (kind 30) in a Supported TCP Extensions TLV.
        supports_mptcp: bool,
    },
    /// The converter refused.
    Error {
        /// Bytes of the Convert message.
        consumed: usize,
        /// The Error TLV code.
        code: ErrorCode,
        /// The code-specific value.
        value: Vec<u8>,
    },
    /// Not a valid reply.
    Malformed,
}

/// Parses the converter's reply (skeleton: always `Malformed`).
pub fn parse_reply(_data: &[u8]) -> Reply {
    Reply::Malformed
}
