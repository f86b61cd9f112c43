//! RFC 8803, the 0-RTT TCP Convert Protocol, sans-IO: no sockets, threads or clock here (time is
//! passed in as `unix_now`). `src/server/` (the converter's I/O around the kernel's MPTCP
//! listener) and the laptop side drive it.
//!
//! | file | owns |
//! |---|---|
//! | `msg.rs` | the §6 codec: fixed header, TLV framing, every TLV; a checked view for untrusted bytes and builders |
//! | `tcpopt.rs` | walking the TCP options fields that Connect and Extended TCP Header TLVs carry |
//! | `key.rs` | [`key::ClientKey`] / [`key::KeyId`], the one-line key file, its permissions |
//! | `cookie.rs` | our Cookie TLV content (HMAC-SHA256 proof of a client key), the bounded replay cache |
//! | `converter.rs` | the converter's checks of a request and its replies |
//! | `client.rs` | the laptop's request and the parse of the converter's reply |
//! | `scope.rs` | the address scopes neither side sends through a converter |
//! | `dgram.rs` | the datagram relay (UDP through the converter): codec, MAC, anti-replay window, the laptop's session |
//! | `relay.rs` | the converter's table of relayed UDP sessions, tombstones, roaming |
//!
//! Call order for one proxied connection:
//! 1. laptop: [`client::connect_request`] → the first bytes of its SYN to the converter (TFO-style
//!    SYN data), followed by the host's own early data;
//! 2. converter: [`converter::Converter::check_request`] on every byte received so far, until it
//!    answers `Connect` (dial `dst`, then write [`converter::connected_reply`] or
//!    [`converter::error_reply`]) or `Refused` (write its reply, close);
//! 3. laptop: [`client::parse_reply`] on every byte received so far, until `Connected` (the rest
//!    is the destination's data) or `Error`/`Malformed` (reset).
//!
//! Security model:
//! - **Never an open relay.** RFC 8803 §9.2: outside a managed network "a strong mutual
//!   authentication scheme MUST be defined". Ours: every request carries a Cookie TLV that is an
//!   HMAC-SHA256, under a client key the converter holds, over the key id, a timestamp, a nonce and
//!   the exact Connect TLV (destination and options). `check_request` returns `Connect` only after
//!   that MAC verified, so nothing is dialed for a peer without a key; a captured cookie cannot be
//!   moved to another destination. Keys are revocable at once (`replace_keys`).
//! - **Replay-proof.** A cookie is valid `max_clock_skew` either side of its timestamp, and the
//!   replay cache refuses a (key id, nonce) accepted before; when the cache must forget an entry
//!   early it tightens the accepted window past it, so a forgotten cookie is refused too
//!   (`cookie::ReplayCache`).
//! - **Bounded memory and work.** A request is at most `max_request_len` (≤ 1020, §6.1) bytes; the
//!   replay cache at most `replay_capacity` entries; parsing never reads past the declared lengths
//!   and never panics (fuzzed: `fuzz/fuzz_targets/convert_msg.rs`).
//! - **Not covered:** confidentiality (the Convert message is clear text, as is the user data it
//!   carries unless end-to-end TLS is used, §4.1) and the early user data after the Convert message,
//!   which the MAC does not cover (an on-path attacker able to rewrite it can rewrite the whole TCP
//!   stream anyway).

pub mod client;
pub mod converter;
pub mod cookie;
pub mod dgram;
pub mod key;
pub mod msg;
pub mod relay;
pub mod scope;
pub mod tcpopt;

/// The TCP port RFC 8803 tools use.
pub const DEFAULT_PORT: u16 = 5124;
