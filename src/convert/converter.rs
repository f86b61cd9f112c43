//! The converter's side: check one upstream connection's first bytes, build the replies.
//!
//! Call order, per accepted upstream connection: feed every byte received so far to
//! [`Converter::check_request`] until it answers something other than [`Request::Incomplete`]
//! (at most `max_request_len` bytes are ever waited for), then stop calling it for that
//! connection. On [`Request::Connect`] the caller applies its policy and limits, dials, and writes
//! [`connected_reply`] or [`error_reply`]; on [`Request::Refused`] it writes `reply` and closes.
//!
//! Nothing is dialed without proof: a Connect is returned only after the cookie's MAC verified
//! with a key of the current keyring, its timestamp is within `max_clock_skew`, and its nonce was
//! never accepted before (`cookie.rs`). The order of checks is: framing and syntax (§6, §9),
//! destination address (§6.2.5), cookie presence, key, MAC, TCP options (§6.2.5, §7), freshness
//! and replay. Refusals before the MAC verified carry `key: None`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::cookie::{Cookie, Freshness, ReplayCache};
use super::key::{ClientKey, KeyId};
use super::msg::{self, ErrorCode, HEADER_LEN, MAX_MESSAGE_LEN, MessageView, MsgError, Tlv, VERSION, kind};

/// The TCP option kinds we announce in the Supported TCP Extensions TLV (§6.2.4) and accept,
/// without a value, in a Connect TLV: SACK-Permitted (§7.3), Timestamps (§7.4: "without any
/// timestamp") and Multipath TCP (§7.5: "MUST advertise the Multipath TCP option (Kind=30)";
/// clients "may include the Multipath TCP option in the Connect TLV but without any content").
/// The Linux stack that dials the destination uses SACK and timestamps by itself.
pub const SUPPORTED_TCP_EXTENSIONS: &[u8] = &[4, 8, 30];

/// Kinds a converter "MUST ignore ... if they appear in a Connect TLV": EOL, NOP, MSS (§7.1),
/// Window Scale (§7.2), SACK (§7.3).
const IGNORED_CONNECT_KINDS: &[u8] = &[0, 1, 2, 3, 5];

/// The suggested retry delay (seconds) sent with Resource Exceeded when the replay cache is full
/// for the current second (§6.2.8: "the suggested delay (in seconds)").
const REPLAY_FULL_RETRY_SECS: u8 = 1;

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

/// The converter's protocol state: the keyring and the replay cache. See the module docs for the
/// call order.
#[derive(Debug)]
pub struct Converter {
    keys: HashMap<KeyId, ClientKey>,
    cfg: ConverterConfig,
    replay: ReplayCache,
}

impl Converter {
    /// A converter accepting `keys` (for a repeated id the last key wins).
    pub fn new(keys: Vec<ClientKey>, cfg: ConverterConfig) -> Converter {
        let replay = ReplayCache::new(cfg.replay_capacity, cfg.max_clock_skew);
        let mut c = Converter {
            keys: HashMap::new(),
            cfg,
            replay,
        };
        c.replace_keys(keys);
        c
    }

    /// Replaces the keyring (reload): a key not in `keys` is refused from the next call on. The
    /// replay cache is kept, so a re-added key cannot replay its old cookies.
    pub fn replace_keys(&mut self, keys: Vec<ClientKey>) {
        self.keys = keys.into_iter().map(|k| (k.id(), k)).collect();
    }

    /// The ids of the keys accepted, sorted.
    pub fn key_ids(&self) -> Vec<KeyId> {
        let mut v: Vec<KeyId> = self.keys.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The key with id `id`, if accepted now (the datagram relay's MAC key).
    pub fn key(&self, id: &KeyId) -> Option<ClientKey> {
        self.keys.get(id).cloned()
    }

    /// Entries in the replay cache (for status).
    pub fn replay_entries(&self) -> usize {
        self.replay.len()
    }

    /// `unix_now`: wall-clock time since the UNIX epoch (cookie timestamps use it); `data`: every
    /// byte received so far on one accepted upstream connection (the SYN payload first).
    pub fn check_request(&mut self, unix_now: Duration, data: &[u8]) -> Request {
        let max = self.cfg.max_request_len.min(MAX_MESSAGE_LEN);
        let view = match MessageView::new_checked(data) {
            Ok(v) if v.len() > max => return malformed(data, max),
            Ok(v) => v,
            Err(MsgError::Incomplete { needed }) if needed <= max => return Request::Incomplete,
            // A message longer than we accept (`needed` is its Total Length).
            Err(MsgError::Incomplete { .. }) => return malformed(data, max),
            // §6: "Absent any policy, the Transport Converter SHOULD silently ignore SYNs with no
            // Convert TLVs": bytes without the Magic Number get no Convert reply.
            // §6.1: Total Length 0: "the connection MUST be reset" — no reply either.
            Err(MsgError::NotConvert | MsgError::ZeroTotalLength) => {
                return refused(RefusalCause::Malformed, None, Vec::new());
            }
            // §6.2.8 Unsupported Version: "This error code MUST be generated by a peer ... when
            // it receives a request having a version number that it does not support. The Value
            // field MUST be set to the version supported by the peer."
            Err(MsgError::UnsupportedVersion(_)) => {
                return refused(
                    RefusalCause::UnsupportedVersion,
                    None,
                    error_reply(ErrorCode::UnsupportedVersion, &[VERSION]),
                );
            }
            Err(_) => return malformed(data, max),
        };
        let msg_bytes = view.as_bytes();

        let mut seen = [false; 256];
        let mut connect = None;
        let mut cookie = None;
        for raw in view.tlvs() {
            if raw.kind == 0 {
                // §6.2.2: "If a Converter receives a TLV of type 0x0, it MUST return an
                // Unsupported Message Error TLV and close the associated TCP connection."
                return unsupported(msg_bytes);
            }
            if std::mem::replace(&mut seen[usize::from(raw.kind)], true) {
                // §6.2.1: "If a Converter receives two or more instances of the same TLV ... it
                // MUST return a Malformed Message Error TLV and close".
                return malformed(msg_bytes, max);
            }
            match raw.kind {
                kind::CONNECT => match raw.decode() {
                    Ok(Tlv::Connect(c)) => connect = Some((c, raw.bytes)),
                    _ => return malformed(msg_bytes, max),
                },
                kind::COOKIE => {
                    // Figure 21 names the field after Length "Zero"; we insist, so that every
                    // byte of an accepted request is either checked or covered by the MAC.
                    if raw.bytes.get(2..4) != Some(&[0, 0]) {
                        return malformed(msg_bytes, max);
                    }
                    cookie = Some(raw.bytes.get(4..).unwrap_or(&[]));
                }
                kind::INFO => {
                    // As for the Cookie TLV's Zero field: checked, since not covered by the MAC.
                    if raw.decode().is_err() || raw.bytes.get(2..4) != Some(&[0, 0]) {
                        return malformed(msg_bytes, max);
                    }
                }
                // §6.2.8: message validation errors include "valid messages but with invalid or
                // unknown TLVs"; Unsupported Message: "a message type received from a Client is
                // not supported". Unknown types and the TLVs only a converter sends (Extended
                // TCP Header, Supported TCP Extensions, Error) get Unsupported Message.
                _ => return unsupported(msg_bytes),
            }
        }
        // An Info-only request (§6.2.3) is not served on its own: every connected reply carries
        // the Supported TCP Extensions TLV instead.
        let Some((connect, connect_bytes)) = connect else {
            return unsupported(msg_bytes);
        };
        // §6.2.5: "the Remote Peer IP Address field MUST NOT include multicast, broadcast, or host
        // loopback addresses ... it MUST reply with a Malformed Message Error TLV".
        if !dialable(connect.dst) {
            return malformed(msg_bytes, max);
        }

        // §6.2.7: "A Transport Converter that has been configured to use the optional Cookie TLV
        // MUST verify the presence of this TLV". We never compute cookies for clients (ours are
        // proofs of a client key), so §6.2.8 Missing Cookie ("MUST return this error ... only if
        // it computes a cookie for this Client") does not apply: an absent cookie is a lack of
        // authorization, Not Authorized (32). See `RefusalCause::error_code`.
        let Some(cookie_bytes) = cookie else {
            return not_authorized(RefusalCause::MissingCookie);
        };
        // §6.2.7: "If the Cookie is valid, the connection establishment procedure can continue.
        // Otherwise, the Transport Converter MUST return an Error TLV set to "Not Authorized"".
        let Some(cookie) = Cookie::parse(cookie_bytes) else {
            return not_authorized(RefusalCause::BadMac);
        };
        let Some(key) = self.keys.get(&cookie.key) else {
            return not_authorized(RefusalCause::UnknownKey);
        };
        if cookie.verify(key, connect_bytes).is_err() {
            return not_authorized(RefusalCause::BadMac);
        }
        let id = cookie.key;

        // §6.2.5: "Upon reception of an Extended Connect TLV, a Transport Converter first checks
        // whether or not it supports the TCP Options listed ... If not, it returns an error TLV
        // set to "Unsupported TCP Option"".
        let mut kept = Vec::new();
        let mut unsupported_kinds = Vec::new();
        for (k, opt) in msg::tcp_options(&connect.options) {
            if IGNORED_CONNECT_KINDS.contains(&k) {
                continue;
            }
            // §7.7: TCP-AO (29) "MUST reject ... with error code set to "Unsupported TCP
            // Option""; anything with a value we would have to copy into the kernel's SYN
            // (§6.2.5 "MUST copy the entire option") is beyond what we can do.
            if SUPPORTED_TCP_EXTENSIONS.contains(&k) && opt.len() == 2 {
                if !kept.chunks(2).any(|o: &[u8]| o[0] == k) {
                    kept.extend_from_slice(opt);
                }
            } else if !unsupported_kinds.contains(&k) {
                unsupported_kinds.push(k);
            }
        }
        if !unsupported_kinds.is_empty() {
            // §6.2.8: "The Value field is set to the type of the unsupported TCP option ... the
            // list of unsupported TCP options is returned."
            return refused(
                RefusalCause::UnsupportedOption,
                Some(id),
                error_reply(ErrorCode::UnsupportedTcpOption, &unsupported_kinds),
            );
        }

        match self
            .replay
            .accept(unix_now.as_secs(), id, cookie.nonce, cookie.timestamp)
        {
            Ok(()) => Request::Connect {
                dst: connect.dst,
                key: id,
                consumed: view.len(),
                tcp_options: kept,
            },
            Err(Freshness::Stale | Freshness::Future | Freshness::BelowWindow) => refused(
                RefusalCause::Stale,
                Some(id),
                error_reply(ErrorCode::NotAuthorized, &[]),
            ),
            Err(Freshness::Replay) => refused(
                RefusalCause::Replay,
                Some(id),
                error_reply(ErrorCode::NotAuthorized, &[]),
            ),
            // §6.2.8 Resource Exceeded: "MUST be sent ... when it does not have sufficient
            // resources to handle a new connection".
            Err(Freshness::Full) => refused(
                RefusalCause::Limit,
                Some(id),
                error_reply(ErrorCode::ResourceExceeded, &[REPLAY_FULL_RETRY_SECS]),
            ),
        }
    }
}

/// Whether the converter may dial `dst`: §6.2.5 forbids "multicast, broadcast, or host loopback
/// addresses [RFC6890]". We also refuse the unspecified address and 0.0.0.0/8 ("this host on this
/// network", RFC 6890 §2.2.2), which Linux dials as the local host, and port 0.
fn dialable(dst: SocketAddr) -> bool {
    let ip_ok = match dst.ip() {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_multicast() || a.is_broadcast() || a.octets()[0] == 0),
        IpAddr::V6(a) => !(a.is_loopback() || a.is_multicast() || a.is_unspecified()),
    };
    ip_ok && dst.port() != 0
}

fn refused(cause: RefusalCause, key: Option<KeyId>, reply: Vec<u8>) -> Request {
    Request::Refused { cause, key, reply }
}

fn not_authorized(cause: RefusalCause) -> Request {
    // §6.2.8 Not Authorized: "The Value field MUST be set to zero."
    refused(cause, None, error_reply(cause.error_code(), &[]))
}

/// The Figure 23 value: a zero byte, then the message from the next 32-bit word, cut to its
/// declared Total Length (what follows is user data, not echoed) and to fit a reply.
fn echo_value(message: &[u8], max: usize) -> Vec<u8> {
    let room = MAX_MESSAGE_LEN - HEADER_LEN - 4;
    let declared = msg::FixedHeader::parse(message).map_or(message.len(), |h| h.message_len());
    let n = message.len().min(declared).min(max).min(room) & !3;
    let mut v = vec![0u8];
    v.extend_from_slice(&message[..n]);
    v
}

fn malformed(message: &[u8], max: usize) -> Request {
    // §6.2.8 Malformed Message: "the Value field MUST echo the received message using the format
    // depicted in Figure 23".
    refused(
        RefusalCause::Malformed,
        None,
        error_reply(ErrorCode::MalformedMessage, &echo_value(message, max)),
    )
}

fn unsupported(message: &[u8]) -> Request {
    // §6.2.8 Unsupported Message: "the Value field MUST echo the received message using the
    // format shown in Figure 23."
    refused(
        RefusalCause::Unsupported,
        None,
        error_reply(
            ErrorCode::UnsupportedMessage,
            &echo_value(message, MAX_MESSAGE_LEN),
        ),
    )
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
        /// TCP options the client asked the converter to use toward `dst` (§6.2.5): 2-byte
        /// options (kind, 2) of kinds in [`SUPPORTED_TCP_EXTENSIONS`], once each; the options
        /// the converter must ignore (§7.1-§7.3) are already removed. "For the TCP options that
        /// are included ... without an optional value, the Transport Converter MUST generate its
        /// own value": the kernel's defaults do.
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
    /// No Cookie TLV (reply: Not Authorized, see [`RefusalCause::error_code`]).
    MissingCookie,
    /// The cookie names a key not in the keyring.
    UnknownKey,
    /// The cookie's MAC does not verify.
    BadMac,
    /// The cookie's timestamp is too far from now (or below the replay cache's tightened window).
    Stale,
    /// The cookie was seen before.
    Replay,
    /// A TLV type the converter does not serve (added to CONVERT_API.md).
    Unsupported,
    /// A TCP option the converter cannot use toward the destination (added to CONVERT_API.md).
    UnsupportedOption,
    /// Egress policy refused the destination (server/).
    Policy,
    /// A limit was reached (server/; convert/ too when the replay cache is full within a second).
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
            // §6.2.7: an invalid cookie "MUST return an Error TLV set to "Not Authorized"".
            // §6.2.8 Missing Cookie is for a converter that "computes a cookie for this Client"
            // and returns it; ours are proofs of a client key that only the client can make, so
            // an absent cookie is also "a lack of authorization (... authorization failure, or
            // invalid Cookie TLV)": Not Authorized, which "MUST be sent ... when a request cannot
            // be successfully processed because the authorization failed".
            RefusalCause::MissingCookie
            | RefusalCause::UnknownKey
            | RefusalCause::BadMac
            | RefusalCause::Stale
            | RefusalCause::Replay => ErrorCode::NotAuthorized,
            // §6.2.8 Not Authorized: "(e.g., administratively prohibited ...)"; §9.2 refuses
            // hairpinned connections the same way.
            RefusalCause::Policy => ErrorCode::NotAuthorized,
            RefusalCause::Unsupported => ErrorCode::UnsupportedMessage,
            RefusalCause::UnsupportedOption => ErrorCode::UnsupportedTcpOption,
            // §6.2.8 Resource Exceeded: "MUST be sent ... when it does not have sufficient
            // resources to handle a new connection".
            RefusalCause::Limit => ErrorCode::ResourceExceeded,
            // §6.2.8 Connection Reset: "the final destination responded with an RST segment".
            RefusalCause::DestRefused => ErrorCode::ConnectionReset,
            // §4.2 / §6.2.8: an ICMP hard error; "The Value field MUST echo the Code field".
            RefusalCause::DestUnreachable => ErrorCode::DestinationUnreachable,
            // §6.2.8 Network Failure: "MUST send this error code when it experiences forwarding
            // issues to proxy a connection" (no answer from the destination in time).
            RefusalCause::DestTimeout => ErrorCode::NetworkFailure,
        }
    }
}

/// The reply once the destination accepted: a Convert message (RFC 8803 §4/§6) with an Extended
/// TCP Header TLV carrying the options the destination sent in its SYN+ACK as far as the caller
/// knows them (§6.2.6: "MUST return this TLV if the Client sent an Extended Connect TLV"; we
/// always do; may be empty), and a Supported TCP Extensions TLV listing
/// [`SUPPORTED_TCP_EXTENSIONS`] (so the client learns on every connection that MPTCP, §7.5, is
/// served). The options are copied up to the first EOL, whole options only, at most 40 bytes (the
/// TCP option space).
pub fn connected_reply(dst_synack_options: &[u8]) -> Vec<u8> {
    let mut opts = Vec::new();
    let mut i = 0;
    while let Some(&k) = dst_synack_options.get(i) {
        let len = match k {
            0 => break,
            1 => 1,
            _ => usize::from(dst_synack_options.get(i + 1).copied().unwrap_or(0)),
        };
        let Some(opt) = dst_synack_options.get(i..i + len).filter(|_| len >= 1) else {
            break;
        };
        if (k > 1 && len < 2) || opts.len() + len > 40 {
            break;
        }
        opts.extend_from_slice(opt);
        i += len;
    }
    let mut out = vec![0u8; HEADER_LEN];
    // §6.2.6: "The Unassigned field MUST be set to zero by the sender".
    out.extend_from_slice(&[kind::EXTENDED_TCP_HEADER, 0, 0, 0]);
    out.extend_from_slice(&opts);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out[HEADER_LEN + 1] = ((out.len() - HEADER_LEN) / 4) as u8;
    let ext = out.len();
    // §6.2.4: "The Unassigned field MUST be set to zero by the Transport Converter"; kinds 1 and
    // 2 "MUST NOT appear in this list" (nor 3, 5 and 29: §7.2, §7.3, §7.7).
    out.extend_from_slice(&[kind::SUPPORTED_TCP_EXTENSIONS, 0, 0, 0]);
    out.extend_from_slice(SUPPORTED_TCP_EXTENSIONS);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out[ext + 1] = ((out.len() - ext) / 4) as u8;
    let h = msg::FixedHeader {
        version: VERSION,
        total_words: (out.len() / 4) as u8,
    };
    out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    out
}

/// A Convert message with one Error TLV (`value`: the code-specific value, e.g. the ICMP code for
/// Destination Unreachable, empty otherwise; zero padded, cut to fit 1020 bytes). §6.2.2: after
/// an error the converter "MUST NOT send an RST immediately ... to let the Error TLV reach the
/// Client": write the reply, then close normally.
pub fn error_reply(code: ErrorCode, value: &[u8]) -> Vec<u8> {
    msg::error_message(code.code(), value)
}
