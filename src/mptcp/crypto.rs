//! Keys, tokens, IDSNs and the HMAC-SHA256 handshake algorithm of RFC 8684 v1 (flag H).
//!
//! Byte order: keys are hashed and used as HMAC keys in network byte order, random numbers
//! likewise (RFC 8684 §3.1: "the key MUST be hashed in network byte order"). The HMAC for a
//! message *sent* by a host uses that host's key first and its random number first (§3.2,
//! Figure 8). Verification compares in constant time (`hmac`'s `verify_truncated_*`).

use std::collections::HashSet;
use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::seq::DataSeq;

type HmacSha256 = Hmac<Sha256>;

/// A 64-bit MPTCP key (RFC 8684 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

impl std::fmt::Debug for Key {
    // Keys authenticate subflows: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A 32-bit connection token: the most significant 32 bits of SHA-256(key) (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u32);

/// A 32-bit random number ("R-A", "R-B") of the MP_JOIN handshake (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub u32);

impl Key {
    fn digest(self) -> [u8; 32] {
        // RFC 8684 §3.1: "the key MUST be hashed in network byte order".
        Sha256::digest(self.0.to_be_bytes()).into()
    }

    /// The token: RFC 8684 §3.1 "the token MUST be a truncated (most significant 32 bits)
    /// SHA-256 hash of the key".
    pub fn token(self) -> Token {
        let d = self.digest();
        Token(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
    }

    /// The initial data sequence number: RFC 8684 §3.1 "the IDSN of a host MUST be the least
    /// significant 64 bits of the SHA-256 hash of its key", and "the 'least significant' bits
    /// MUST be the rightmost bits of the SHA-256 digest". The SYN occupies this DSN, so the first
    /// data octet is `idsn + 1`.
    pub fn idsn(self) -> DataSeq {
        let d = self.digest();
        let mut low = [0u8; 8];
        low.copy_from_slice(&d[24..32]);
        DataSeq(u64::from_be_bytes(low))
    }

    /// Token and IDSN from one hash computation.
    pub fn token_and_idsn(self) -> (Token, DataSeq) {
        (self.token(), self.idsn())
    }
}

/// The OS random source failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("OS random number generator failed: {0}")]
pub struct RandomError(#[source] pub getrandom::Error);

/// A 64-bit value from the OS CSPRNG (RFC 8684 §3.1: the key "MUST be hard to guess"; RFC 4086).
/// This is the production source; [`TokenTable::generate_with`] takes any other for tests.
pub fn os_random_u64() -> Result<u64, RandomError> {
    getrandom::u64().map_err(RandomError)
}

/// A fresh MP_JOIN random number from the OS CSPRNG (§3.2, RFC 4086).
pub fn os_random_nonce() -> Result<Nonce, RandomError> {
    getrandom::u32().map(Nonce).map_err(RandomError)
}

/// Why no key could be generated.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum KeyGenError {
    /// The random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// [`TokenTable::MAX_ATTEMPTS`] keys in a row hashed to tokens already in use (a broken
    /// random source, or a table that is nearly full).
    #[error("no unique MPTCP token after {attempts} attempts")]
    Exhausted {
        /// Keys tried.
        attempts: u32,
    },
}

/// The local tokens in use by one engine; issues keys whose tokens are unique.
///
/// RFC 8684 §3.1: the key "MUST be unique for the sending host across all its current MPTCP
/// connections", and a host "SHOULD check its list of connection tokens to ensure that there is
/// no collision before sending its key, and if there is, then it should generate a new key".
/// Distinct tokens imply distinct keys, so checking tokens covers both.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: HashSet<Token>,
}

impl TokenTable {
    /// Keys tried before [`KeyGenError::Exhausted`].
    pub const MAX_ATTEMPTS: u32 = 64;

    /// An empty table.
    pub fn new() -> TokenTable {
        TokenTable::default()
    }

    /// A new key from the OS CSPRNG whose token is not in use; the token is reserved until
    /// [`release`](Self::release).
    pub fn generate(&mut self) -> Result<(Key, Token), KeyGenError> {
        self.generate_with(os_random_u64)
    }

    /// As [`generate`](Self::generate) with another random source (tests, simulation).
    pub fn generate_with(
        &mut self,
        mut random: impl FnMut() -> Result<u64, RandomError>,
    ) -> Result<(Key, Token), KeyGenError> {
        for _ in 0..Self::MAX_ATTEMPTS {
            let key = Key(random()?);
            let token = key.token();
            // §3.1: on a token collision, generate a new key.
            if self.tokens.insert(token) {
                return Ok((key, token));
            }
        }
        Err(KeyGenError::Exhausted {
            attempts: Self::MAX_ATTEMPTS,
        })
    }

    /// Whether `token` is in use (demultiplexing MP_JOIN SYNs, §3.2: "MUST be done using the
    /// token").
    pub fn contains(&self, token: Token) -> bool {
        self.tokens.contains(&token)
    }

    /// Frees `token` when its connection is gone; returns whether it was in use.
    pub fn release(&mut self, token: Token) -> bool {
        self.tokens.remove(&token)
    }

    /// Tokens in use.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// No tokens in use.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// An HMAC did not verify (a forged or corrupted MP_JOIN / ADD_ADDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MPTCP HMAC mismatch")]
pub struct HmacMismatch;

/// HMAC-SHA256 keyed with `sender_key ‖ receiver_key` (both big-endian, 16 bytes).
fn mac(sender_key: Key, receiver_key: Key) -> HmacSha256 {
    // HMAC (RFC 2104 §2) zero-pads a key shorter than the 64-byte SHA-256 block, so passing the
    // padded block is the same function as passing the 16-byte key, and cannot fail.
    let mut block = [0u8; 64];
    block[..8].copy_from_slice(&sender_key.0.to_be_bytes());
    block[8..16].copy_from_slice(&receiver_key.0.to_be_bytes());
    HmacSha256::new(&block.into())
}

fn join_mac(sender_key: Key, receiver_key: Key, sender_nonce: Nonce, receiver_nonce: Nonce) -> HmacSha256 {
    // RFC 8684 §3.2: "The key for the HMAC algorithm, in the case of the message transmitted by
    // Host A, will be Key-A followed by Key-B ... The 'message' ... for Host A, R-A followed by
    // R-B" (Figure 8: HMAC-A = HMAC(Key=(Key-A + Key-B), Msg=(R-A + R-B))).
    let mut m = mac(sender_key, receiver_key);
    m.update(&sender_nonce.0.to_be_bytes());
    m.update(&receiver_nonce.0.to_be_bytes());
    m
}

/// The full 256-bit MP_JOIN HMAC for a message sent by the holder of `sender_key`.
pub fn join_hmac(sender_key: Key, receiver_key: Key, sender_nonce: Nonce, receiver_nonce: Nonce) -> [u8; 32] {
    join_mac(sender_key, receiver_key, sender_nonce, receiver_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// The responder's HMAC for the MP_JOIN **SYN/ACK** (Figure 6): RFC 8684 §3.2 "the HMAC
/// included in the SYN/ACK is truncated to the leftmost 64 bits". Sent by B:
/// `join_synack_hmac(key_b, key_a, r_b, r_a)`.
pub fn join_synack_hmac(
    sender_key: Key,
    receiver_key: Key,
    sender_nonce: Nonce,
    receiver_nonce: Nonce,
) -> u64 {
    let full = join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce);
    let mut left = [0u8; 8];
    left.copy_from_slice(&full[..8]);
    u64::from_be_bytes(left)
}

/// The initiator's HMAC for the MP_JOIN **third ACK** (Figure 7): RFC 8684 §3.2 "the output is
/// truncated to the leftmost 160 bits (20 octets)". Sent by A:
/// `join_ack_hmac(key_a, key_b, r_a, r_b)`.
pub fn join_ack_hmac(
    sender_key: Key,
    receiver_key: Key,
    sender_nonce: Nonce,
    receiver_nonce: Nonce,
) -> [u8; 20] {
    let full = join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce);
    let mut left = [0u8; 20];
    left.copy_from_slice(&full[..20]);
    left
}

/// Checks, in constant time, the truncated HMAC of a received MP_JOIN SYN/ACK. The *sender*
/// is the peer (responder B): pass its key and nonce first. RFC 8684 §3.2: if it "does not
/// match the one expected, Host A MUST close the subflow with a TCP RST".
pub fn verify_join_synack_hmac(
    received: u64,
    sender_key: Key,
    receiver_key: Key,
    sender_nonce: Nonce,
    receiver_nonce: Nonce,
) -> Result<(), HmacMismatch> {
    join_mac(sender_key, receiver_key, sender_nonce, receiver_nonce)
        .verify_truncated_left(&received.to_be_bytes())
        .map_err(|_| HmacMismatch)
}

/// Checks, in constant time, the 160-bit HMAC of a received MP_JOIN third ACK (sender = the
/// initiator A). RFC 8684 §3.2: "If Host B does not receive the expected HMAC ... it MUST close
/// the subflow with a TCP RST."
pub fn verify_join_ack_hmac(
    received: &[u8; 20],
    sender_key: Key,
    receiver_key: Key,
    sender_nonce: Nonce,
    receiver_nonce: Nonce,
) -> Result<(), HmacMismatch> {
    join_mac(sender_key, receiver_key, sender_nonce, receiver_nonce)
        .verify_truncated_left(received)
        .map_err(|_| HmacMismatch)
}

fn add_addr_mac(
    sender_key: Key,
    receiver_key: Key,
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> HmacSha256 {
    // RFC 8684 §3.4.1: key as for MP_JOIN (sender's key first); "The message for the HMAC is the
    // Address ID, IP address, and port that precede the HMAC in the ADD_ADDR option. If the port
    // is not present in the ADD_ADDR option, the HMAC message will nevertheless include 2 octets
    // of value zero."
    let mut m = mac(sender_key, receiver_key);
    m.update(&[addr_id]);
    match addr {
        IpAddr::V4(v4) => m.update(&v4.octets()),
        IpAddr::V6(v6) => m.update(&v6.octets()),
    }
    m.update(&port.unwrap_or(0).to_be_bytes());
    m
}

/// The truncated HMAC of an ADD_ADDR sent by the holder of `sender_key`. RFC 8684 §3.4.1: "The
/// Truncated HMAC parameter present in this option is the **rightmost** 64 bits of an HMAC" —
/// unlike the MP_JOIN SYN/ACK, which takes the leftmost 64 (the Linux kernel agrees:
/// `add_addr_generate_hmac` reads `hmac[SHA256_DIGEST_SIZE - 8..]`).
pub fn add_addr_hmac(
    sender_key: Key,
    receiver_key: Key,
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> u64 {
    let full: [u8; 32] = add_addr_mac(sender_key, receiver_key, addr_id, addr, port)
        .finalize()
        .into_bytes()
        .into();
    let mut right = [0u8; 8];
    right.copy_from_slice(&full[24..32]);
    u64::from_be_bytes(right)
}

/// Checks, in constant time, the HMAC of a received ADD_ADDR (sender = the peer). RFC 8684
/// §3.4.1: "If a host receives an ADD_ADDR option for which it cannot validate the HMAC, it
/// SHOULD silently ignore the option."
pub fn verify_add_addr_hmac(
    received: u64,
    sender_key: Key,
    receiver_key: Key,
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> Result<(), HmacMismatch> {
    add_addr_mac(sender_key, receiver_key, addr_id, addr, port)
        .verify_truncated_right(&received.to_be_bytes())
        .map_err(|_| HmacMismatch)
}
