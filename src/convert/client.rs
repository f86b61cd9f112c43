//! The laptop's side: the Convert request that goes in the SYN to the converter, and the parse of
//! the converter's reply at the start of the returned byte stream.
//!
//! Call order, per upstream connection: [`connect_request`] once (its bytes are the first bytes of
//! the stream, RFC 8803 §6: "Convert messages MUST be included as the first bytes of the
//! bytestream"; user data the host sent in its own SYN goes right after, §6: "that data MUST be
//! placed right after the Convert TLVs"); then [`parse_reply`] on every byte received so far until
//! it answers something other than [`Reply::Incomplete`]. After [`Reply::Error`] or
//! [`Reply::Malformed`] the client resets the connection (§6.2.8: "Upon reception of an Error TLV,
//! a Client MUST reset the associated connection"; §6.2.1/§6.2.2 for duplicate and type-0 TLVs).

use std::net::SocketAddr;
use std::time::Duration;

use super::cookie::Cookie;
use super::key::ClientKey;
use super::msg::{self, ErrorCode, FixedHeader, HEADER_LEN, Message, Tlv, VERSION, kind};

/// TCP option kinds the client asks the converter to use toward the destination, each without a
/// value: SACK-Permitted (§7.3), Timestamps (§7.4: "but without any timestamp"), Multipath TCP
/// (§7.5: "but without any content"). MSS, Window Scale and SACK must be ignored by the converter
/// (§7.1-§7.3) and TCP-AO refused (§7.7), so they are not sent; nor are options the converter
/// would have to copy with their value.
const TRAVELLING_KINDS: &[u8] = &[4, 8, 30];

/// The Connect TLV's TCP Options field for the host's SYN options `host_syn_options`: the
/// [`TRAVELLING_KINDS`] present, once each, as 2-byte options without value, in their order.
pub fn travelling_options(host_syn_options: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for (k, _) in msg::tcp_options(host_syn_options) {
        if TRAVELLING_KINDS.contains(&k) && !out.chunks(2).any(|o| o[0] == k) {
            out.extend_from_slice(&[k, 2]);
        }
    }
    out
}

/// The request the laptop puts in its SYN to the converter: fixed header + Connect TLV (`dst`,
/// and the host's SYN TCP options the RFC lets travel, see [`travelling_options`]) + Cookie TLV
/// (proof of `key` at `unix_now` with the fresh `nonce`, bound to the Connect TLV's bytes).
pub fn connect_request(
    key: &ClientKey,
    unix_now: Duration,
    nonce: [u8; 16],
    dst: SocketAddr,
    tcp_options: &[u8],
) -> Vec<u8> {
    let connect = msg::connect_tlv_bytes(dst, &travelling_options(tcp_options));
    let cookie = Cookie::mint(key, unix_now.as_secs(), nonce, &connect);
    let mut out = vec![0u8; HEADER_LEN];
    out.extend_from_slice(&connect);
    // §6.2.7, Figure 21: Type, Length, Zero (16 bits), then the opaque cookie (64 bytes: no pad).
    let cookie_bytes = cookie.to_bytes();
    out.extend_from_slice(&[kind::COOKIE, ((4 + cookie_bytes.len()) / 4) as u8, 0, 0]);
    out.extend_from_slice(&cookie_bytes);
    // §6.1: "The Client and the Transport Converter MUST send the fixed-sized header ... as the
    // first four bytes of the bytestream." The Connect TLV is at most 276 bytes, so this fits.
    let h = FixedHeader {
        version: VERSION,
        total_words: (out.len() / 4) as u8,
    };
    out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    out
}

/// The converter's reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A prefix of a possibly valid reply: wait for more bytes.
    Incomplete,
    /// `consumed` bytes were the reply; the rest is the destination's data.
    Connected {
        /// Bytes of the Convert message.
        consumed: usize,
        /// The destination's SYN+ACK options from the Extended TCP Header TLV (§6.2.6), padding
        /// removed; empty without that TLV.
        tcp_options: Vec<u8>,
        /// The converter listed Multipath TCP (kind 30) in a Supported TCP Extensions TLV.
        supports_mptcp: bool,
    },
    /// The converter refused (§6.2.8): reset the connection.
    Error {
        /// Bytes of the Convert message.
        consumed: usize,
        /// The Error TLV code.
        code: ErrorCode,
        /// The code-specific Value without padding, as [`msg::ErrorTlv::raw_value`] gives it
        /// (e.g. `[icmp_code]` for Destination Unreachable, `[0]` for Not Authorized).
        value: Vec<u8>,
    },
    /// Not a valid reply: reset the connection.
    Malformed,
}

/// Parses the converter's reply at the start of `data`. Incremental: [`Reply::Incomplete`] until
/// the whole Convert message (at most 1020 bytes) is there. Never panics.
///
/// Receiver rules: TLV type 0 and repeated TLVs are malformed (§6.2.2, §6.2.1: the client "MUST
/// reset"); an Error TLV decides the answer whatever else is present, and an Error Code the RFC
/// does not define is malformed (the client resets either way); TLV types this document does not
/// define are skipped (the RFC gives the client no rule for them; skipping is what lets the
/// protocol "be extended by defining new TLVs", §6).
pub fn parse_reply(data: &[u8]) -> Reply {
    let (m, consumed) = match Message::parse(data) {
        Ok(parsed) => parsed,
        Err(e) if e.is_incomplete() => return Reply::Incomplete,
        Err(_) => return Reply::Malformed,
    };
    let mut tcp_options = Vec::new();
    let mut supports_mptcp = false;
    for t in m.tlvs {
        match t {
            Tlv::Error(e) => {
                return match e.error_code() {
                    Some(code) => Reply::Error {
                        consumed,
                        code,
                        value: e.raw_value(),
                    },
                    None => Reply::Malformed,
                };
            }
            Tlv::ExtendedTcpHeader(o) => tcp_options = o,
            Tlv::SupportedTcpExtensions(kinds) => supports_mptcp = kinds.contains(&30),
            Tlv::Info | Tlv::Connect(_) | Tlv::Cookie(_) | Tlv::Unknown { .. } => {}
        }
    }
    Reply::Connected {
        consumed,
        tcp_options,
        supports_mptcp,
    }
}
