//! MP_CAPABLE (RFC 8684 §3.1) and MP_JOIN (§3.2) negotiation as pure state types: each state
//! holds exactly what it needs (STYLE.md point 4) and consumes the MPTCP option found on the next
//! handshake segment. The TCP engine decides *when* (SYN, SYN/ACK, third ACK, retransmissions);
//! these types decide *what* the options say and whether the peer is acceptable.
//!
//! Failures come in two kinds (STYLE.md point 6):
//! - [`Fallback`]: MP_CAPABLE cannot be used — the peer or the path is incompatible; the
//!   connection continues as plain TCP (§3.7), invisible to the application.
//! - [`JoinError`]: an MP_JOIN subflow is refused — reset that subflow with MP_TCPRST
//!   ([`JoinError::rst_reason`]); the connection is unharmed.
//!
//! Client: [`CapableInitiator::syn_option`] → SYN; [`CapableInitiator::on_syn_ack`] →
//! [`Negotiated`]; [`Negotiated::third_ack_option`] on the third ACK (and, with the first data,
//! with data parameters) until a DATA_ACK confirms it.
//! Server: [`CapableListener::on_syn`] → [`CapableSynReceived`] (give it a key from the
//! [`super::crypto::TokenTable`]) → [`CapableSynReceived::syn_ack_option`];
//! [`CapableSynReceived::on_third_ack`] → [`Negotiated`].

use super::crypto::{
    Key, Nonce, Token, join_ack_hmac, join_synack_hmac, verify_join_ack_hmac, verify_join_synack_hmac,
};
use super::mapping::Mapping;
use super::seq::DataSeq;
use crate::wire::mptcp::{CapableFlags, CapablePayload, MpCapable, MpJoin, MptcpOption, RstReason};

/// The only MPTCP version implemented (RFC 8684 = v1).
pub const MPTCP_VERSION: u8 = 1;

/// Why a connection does not use MPTCP (peer or path incompatible): continue as regular TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fallback {
    /// No MP_CAPABLE where one was required: the peer is not MPTCP capable or a middlebox
    /// stripped it. §3.1: "If a SYN contains an MP_CAPABLE option but the SYN/ACK does not ...
    /// the MPTCP session MUST operate as a regular, single-path TCP session"; "If the third packet
    /// (the ACK) does not contain the MP_CAPABLE option, then the session MUST fall back".
    #[error("no MP_CAPABLE option")]
    NoMpCapable,
    /// The peer speaks another MPTCP version (e.g. v0, RFC 6824), which is not implemented.
    #[error("unsupported MPTCP version {version}")]
    Version {
        /// The version the peer sent.
        version: u8,
    },
    /// Flag B set: §3.1 "If receiving a message with the 'B' flag set to 1 and this is not
    /// understood, then the MP_CAPABLE in this SYN MUST be silently ignored".
    #[error("MP_CAPABLE extensibility flag B set")]
    Extensibility,
    /// Flags D–H all 0: §3.1 "the MP_CAPABLE option MUST be treated as invalid and ignored".
    #[error("MP_CAPABLE names no crypto algorithm")]
    NoCrypto,
    /// HMAC-SHA256 (H) not offered, or the responder chose something else: §3.1 "If a responder
    /// does not support ... any of the initiator's proposals, it MUST respond without an
    /// MP_CAPABLE option".
    #[error("MP_CAPABLE crypto bits {bits:#07b} do not select HMAC-SHA256")]
    UnsupportedCrypto {
        /// Flags D–H as received.
        bits: u8,
    },
    /// An MP_CAPABLE whose length does not belong on this packet (e.g. keys on a v1 SYN).
    #[error("MP_CAPABLE of the wrong form for this packet: {payload:?}")]
    WrongForm {
        /// The layout received.
        payload: CapablePayload,
    },
    /// The third ACK echoes a key that is not ours: §3.1 "If at any point in the handshake either
    /// party thinks the MPTCP negotiation is compromised ... the host MUST stop using MPTCP".
    #[error("MP_CAPABLE third ACK echoes another key")]
    KeyMismatch,
    /// Checksums were required (flag A) by a host configured never to use them: §3.1 "If A=1
    /// is received by a host that does not want to use checksums, it MUST fall back".
    #[error("peer requires DSS checksums, which are disabled here")]
    ChecksumRefused,
}

/// The local host's MP_CAPABLE preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapableConfig {
    /// Ask for DSS checksums (flag A). §3.1: "SHOULD be set to 1 ... unless the system
    /// administrator has decided that checksums are not required".
    pub checksum_required: bool,
    /// Accept checksums when the peer requires them (otherwise fall back, §3.1).
    pub accept_checksums: bool,
    /// Flag C: tell the peer not to open subflows to our source address and port.
    pub no_subflows_to_source: bool,
}

impl Default for CapableConfig {
    fn default() -> Self {
        CapableConfig {
            checksum_required: true,
            accept_checksums: true,
            no_subflows_to_source: false,
        }
    }
}

impl CapableConfig {
    fn flags(&self, checksums: bool) -> CapableFlags {
        let mut f = CapableFlags::HMAC_SHA256; // §3.1: "MUST set bit 'H' to 1 and bits 'D' through 'G' to 0"
        if checksums {
            f |= CapableFlags::CHECKSUM_REQUIRED;
        }
        if self.no_subflows_to_source {
            f |= CapableFlags::NO_SUBFLOWS_TO_SOURCE;
        }
        CapableFlags(f)
    }

    /// §3.1: "if either host requires the use of checksums, checksums MUST be used".
    fn checksums_with(&self, peer_requires: bool) -> Result<bool, Fallback> {
        if peer_requires && !self.accept_checksums {
            return Err(Fallback::ChecksumRefused);
        }
        Ok(self.checksum_required || peer_requires)
    }
}

/// What an MP_CAPABLE handshake agreed on: the start of an MPTCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Our key.
    pub local_key: Key,
    /// The peer's key.
    pub remote_key: Key,
    /// DSS checksums in use, both directions (§3.1: "stored ... in a per-connection binary state
    /// variable").
    pub checksums: bool,
    /// The peer set flag C: do not open subflows toward its source address and port (§3.1: the
    /// receiver "MUST NOT try to open any additional subflows toward this address and port").
    pub peer_no_subflows_to_source: bool,
    /// Our flag C.
    pub local_no_subflows_to_source: bool,
}

impl Negotiated {
    /// Our token (how MP_JOIN SYNs name this connection to us).
    pub fn local_token(&self) -> Token {
        self.local_key.token()
    }

    /// The peer's token (what our MP_JOIN SYNs carry, §3.2).
    pub fn remote_token(&self) -> Token {
        self.remote_key.token()
    }

    /// DSN of our first data octet: IDSN + 1 (§3.1: the SYN "occupies the first octet of data
    /// sequence space").
    pub fn local_first_dsn(&self) -> DataSeq {
        self.local_key.idsn().wrapping_add(1)
    }

    /// DSN of the peer's first data octet.
    pub fn remote_first_dsn(&self) -> DataSeq {
        self.remote_key.idsn().wrapping_add(1)
    }

    /// The MP_FASTCLOSE to send: it carries the peer's key (RFC 8684 §3.5: "containing the key
    /// of Host B as declared in the initial connection handshake").
    pub fn fastclose_option(&self) -> MptcpOption {
        MptcpOption::MpFastclose {
            receiver_key: self.remote_key.0,
        }
    }

    /// Whether a received MP_FASTCLOSE is genuine: §3.5 acts only on one "containing the valid
    /// key", i.e. ours. (A single 64-bit comparison; no early exit to time.)
    pub fn is_valid_fastclose(&self, opt: &MptcpOption) -> bool {
        matches!(opt, MptcpOption::MpFastclose { receiver_key } if *receiver_key ^ self.local_key.0 == 0)
    }

    fn flags(&self) -> CapableFlags {
        CapableConfig {
            checksum_required: self.checksums,
            accept_checksums: true,
            no_subflows_to_source: self.local_no_subflows_to_source,
        }
        .flags(self.checksums)
    }

    /// The initiator's MP_CAPABLE for the third ACK: both keys (length 20), or, on the first data
    /// segment, both keys plus Data-Level Length and checksum (length 22/24) (§3.1). Flag A
    /// confirms the checksum decision (§3.1: "This decision is confirmed by the setting of the 'A'
    /// bit in the third packet").
    pub fn third_ack_option(&self, data: Option<(u16, Option<u16>)>) -> MptcpOption {
        let (sender_key, receiver_key) = (self.local_key.0, self.remote_key.0);
        MptcpOption::MpCapable(MpCapable {
            version: MPTCP_VERSION,
            flags: self.flags(),
            payload: match data {
                None => CapablePayload::BothKeys {
                    sender_key,
                    receiver_key,
                },
                Some((data_len, checksum)) => CapablePayload::BothKeysWithData {
                    sender_key,
                    receiver_key,
                    data_len,
                    checksum,
                },
            },
        })
    }
}

/// Checks version, B and D–H of an MP_CAPABLE (§3.1).
fn check_common(c: &MpCapable, responder_choice: bool) -> Result<(), Fallback> {
    if c.version != MPTCP_VERSION {
        return Err(Fallback::Version { version: c.version });
    }
    if c.flags.extensibility() {
        return Err(Fallback::Extensibility);
    }
    let bits = c.flags.crypto_bits();
    if bits == 0 {
        return Err(Fallback::NoCrypto);
    }
    // The initiator proposes a set (H must be in it); the responder "responds with only 1 bit
    // set -- this is the chosen algorithm", which must be H.
    let ok = if responder_choice {
        bits == CapableFlags::HMAC_SHA256
    } else {
        c.flags.hmac_sha256()
    };
    if !ok {
        return Err(Fallback::UnsupportedCrypto { bits });
    }
    Ok(())
}

fn capable(opt: Option<&MptcpOption>) -> Result<&MpCapable, Fallback> {
    match opt {
        Some(MptcpOption::MpCapable(c)) => Ok(c),
        _ => Err(Fallback::NoMpCapable),
    }
}

/// Client side, SYN sent, waiting for the SYN/ACK; holds the local key (§3.1: "A will have
/// generated a key locally before the initial SYN").
#[derive(Debug, Clone, Copy)]
pub struct CapableInitiator {
    config: CapableConfig,
    local_key: Key,
}

impl CapableInitiator {
    /// A new attempt with `local_key` (from [`super::crypto::TokenTable::generate`]).
    pub fn new(config: CapableConfig, local_key: Key) -> CapableInitiator {
        CapableInitiator { config, local_key }
    }

    /// The MP_CAPABLE for the SYN: version 1, flags only, no key (length 4, §3.1).
    pub fn syn_option(&self) -> MptcpOption {
        MptcpOption::MpCapable(MpCapable {
            version: MPTCP_VERSION,
            flags: self.config.flags(self.config.checksum_required),
            payload: CapablePayload::NoKeys,
        })
    }

    /// Processes the MPTCP option of the SYN/ACK (`None` if it had no MP_CAPABLE).
    pub fn on_syn_ack(self, opt: Option<&MptcpOption>) -> Result<Negotiated, Fallback> {
        let c = capable(opt)?;
        check_common(c, true)?;
        let CapablePayload::SenderKey { sender_key } = c.payload else {
            return Err(Fallback::WrongForm { payload: c.payload });
        };
        Ok(Negotiated {
            local_key: self.local_key,
            remote_key: Key(sender_key),
            checksums: self.config.checksums_with(c.flags.checksum_required())?,
            peer_no_subflows_to_source: c.flags.no_subflows_to_source(),
            local_no_subflows_to_source: self.config.no_subflows_to_source,
        })
    }
}

/// Server side, before a SYN: the listener's preferences.
#[derive(Debug, Clone, Copy)]
pub struct CapableListener {
    /// Local preferences.
    pub config: CapableConfig,
}

/// An acceptable MP_CAPABLE SYN: what the initiator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapableSyn {
    /// Flag A of the SYN.
    pub checksum_required: bool,
    /// Flag C of the SYN.
    pub no_subflows_to_source: bool,
}

impl CapableListener {
    /// Checks the MP_CAPABLE of a SYN. `Err` means: answer with a plain SYN/ACK (fallback).
    pub fn on_syn(&self, opt: Option<&MptcpOption>) -> Result<CapableSyn, Fallback> {
        let c = capable(opt)?;
        check_common(c, false)?;
        if c.payload != CapablePayload::NoKeys {
            // A v1 SYN carries no key (§3.1: "SYN (A->B): only the first 4 octets").
            return Err(Fallback::WrongForm { payload: c.payload });
        }
        self.config.checksums_with(c.flags.checksum_required())?;
        Ok(CapableSyn {
            checksum_required: c.flags.checksum_required(),
            no_subflows_to_source: c.flags.no_subflows_to_source(),
        })
    }

    /// Continues an accepted SYN with our key (§3.1: "Upon reception of the initial SYN segment,
    /// a stateful server generates a random key"; unique token: [`super::crypto::TokenTable`]).
    pub fn accept(&self, syn: CapableSyn, local_key: Key) -> CapableSynReceived {
        CapableSynReceived {
            config: self.config,
            syn,
            local_key,
            checksums: self.config.checksum_required || syn.checksum_required,
        }
    }
}

/// Server side, SYN/ACK sent, waiting for the third ACK; holds the local key.
#[derive(Debug, Clone, Copy)]
pub struct CapableSynReceived {
    config: CapableConfig,
    syn: CapableSyn,
    local_key: Key,
    checksums: bool,
}

impl CapableSynReceived {
    /// The MP_CAPABLE for the SYN/ACK: our key (length 12), flag A if checksums will be used,
    /// only H among D–H (§3.1: "The responder responds with only 1 bit set").
    pub fn syn_ack_option(&self) -> MptcpOption {
        MptcpOption::MpCapable(MpCapable {
            version: MPTCP_VERSION,
            flags: self.config.flags(self.checksums),
            payload: CapablePayload::SenderKey {
                sender_key: self.local_key.0,
            },
        })
    }

    /// Processes the MPTCP option of the third ACK (or of the first data segment carrying the
    /// MP_CAPABLE with data). Returns the agreement and, for the length 22/24 form, the mapping
    /// of the data that came with it (§3.1: "semantically equivalent to those in a DSS option").
    pub fn on_third_ack(self, opt: Option<&MptcpOption>) -> Result<(Negotiated, Option<Mapping>), Fallback> {
        let c = capable(opt)?;
        // The initiator's flags again: H must be among D–H (be lenient about an echoed proposal).
        check_common(c, false)?;
        let (sender_key, receiver_key, data) = match c.payload {
            CapablePayload::BothKeys {
                sender_key,
                receiver_key,
            } => (sender_key, receiver_key, None),
            CapablePayload::BothKeysWithData {
                sender_key,
                receiver_key,
                data_len,
                checksum,
            } => (sender_key, receiver_key, Some((data_len, checksum))),
            other => return Err(Fallback::WrongForm { payload: other }),
        };
        if receiver_key != self.local_key.0 {
            return Err(Fallback::KeyMismatch);
        }
        let checksums = self.checksums || c.flags.checksum_required();
        let negotiated = Negotiated {
            local_key: self.local_key,
            remote_key: Key(sender_key),
            checksums,
            peer_no_subflows_to_source: self.syn.no_subflows_to_source || c.flags.no_subflows_to_source(),
            local_no_subflows_to_source: self.config.no_subflows_to_source,
        };
        let mapping =
            data.map(|(len, csum)| Mapping::from_capable_data(negotiated.remote_key.idsn(), len, csum));
        Ok((negotiated, mapping))
    }
}

/// Why an MP_JOIN subflow is refused; reset it (the connection is unaffected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// No MP_JOIN on the SYN/ACK or on the third ACK. §3.2: "If the SYN/ACK as received at
    /// Host A does not have an MP_JOIN option, Host A MUST close the subflow with a TCP RST";
    /// "If Host B does not receive the expected HMAC or the MP_JOIN option is missing from the
    /// ACK, it MUST close the subflow with a TCP RST."
    #[error("MP_JOIN missing")]
    Missing,
    /// An MP_JOIN of the wrong form for this packet (e.g. the SYN form on a SYN/ACK).
    #[error("MP_JOIN of the wrong form for this packet")]
    WrongForm,
    /// The token names no connection of ours. §3.2: "If the token received at Host B is unknown
    /// ... the recipient MUST respond with a TCP RST".
    #[error("MP_JOIN for unknown token {0:?}")]
    UnknownToken(Token),
    /// The HMAC does not verify (forged or corrupted). §3.2: "Host A MUST close the subflow with
    /// a TCP RST" / "it MUST close the subflow with a TCP RST".
    #[error("MP_JOIN HMAC mismatch")]
    HmacMismatch,
}

impl JoinError {
    /// The MP_TCPRST reason to send: §3.2 "the sender SHOULD send an MP_TCPRST option ... with
    /// the reason code for an 'MPTCP-specific error'".
    pub fn rst_reason(&self) -> RstReason {
        RstReason::MptcpSpecific
    }
}

/// A subflow whose MP_JOIN handshake authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The peer asked for this subflow to be a backup (flag B of its MP_JOIN, §3.3.8).
    pub peer_backup: bool,
    /// The peer's address ID for its end of this subflow.
    pub peer_addr_id: u8,
}

/// Joining side, SYN sent, waiting for the SYN/ACK.
#[derive(Debug, Clone, Copy)]
pub struct JoinInitiator {
    local_key: Key,
    remote_key: Key,
    local_nonce: Nonce,
    backup: bool,
    addr_id: u8,
}

impl JoinInitiator {
    /// A join attempt on connection `conn` from local address ID `addr_id`, asking for backup
    /// use if `backup`, with a fresh random `local_nonce` (§3.2, RFC 4086).
    pub fn new(conn: &Negotiated, local_nonce: Nonce, backup: bool, addr_id: u8) -> JoinInitiator {
        JoinInitiator {
            local_key: conn.local_key,
            remote_key: conn.remote_key,
            local_nonce,
            backup,
            addr_id,
        }
    }

    /// The MP_JOIN for the SYN (Figure 5): the receiver's token, our nonce, backup flag, address
    /// ID.
    pub fn syn_option(&self) -> MptcpOption {
        MptcpOption::MpJoin(MpJoin::Syn {
            backup: self.backup,
            addr_id: self.addr_id,
            receiver_token: self.remote_key.token().0,
            sender_nonce: self.local_nonce.0,
        })
    }

    /// Verifies the SYN/ACK's truncated HMAC-B; on success returns the subflow and the MP_JOIN
    /// for the third ACK (Figure 7, HMAC-A truncated to 160 bits). That ACK must be delivered
    /// reliably (§3.2: PRE_ESTABLISHED until the peer ACKs it; no data before).
    pub fn on_syn_ack(self, opt: Option<&MptcpOption>) -> Result<(Joined, MptcpOption), JoinError> {
        let Some(opt) = opt else {
            return Err(JoinError::Missing);
        };
        let MptcpOption::MpJoin(MpJoin::SynAck {
            backup,
            addr_id,
            truncated_hmac,
            sender_nonce,
        }) = *opt
        else {
            return Err(match opt {
                MptcpOption::MpJoin(_) => JoinError::WrongForm,
                _ => JoinError::Missing,
            });
        };
        let remote_nonce = Nonce(sender_nonce);
        // HMAC-B = HMAC(Key=(Key-B + Key-A), Msg=(R-B + R-A)) (Figure 8), sent by the peer.
        verify_join_synack_hmac(
            truncated_hmac,
            self.remote_key,
            self.local_key,
            remote_nonce,
            self.local_nonce,
        )
        .map_err(|_| JoinError::HmacMismatch)?;
        let hmac = join_ack_hmac(self.local_key, self.remote_key, self.local_nonce, remote_nonce);
        Ok((
            Joined {
                peer_backup: backup,
                peer_addr_id: addr_id,
            },
            MptcpOption::MpJoin(MpJoin::Ack { hmac }),
        ))
    }
}

/// Listening side, SYN/ACK sent, waiting for the third ACK.
#[derive(Debug, Clone, Copy)]
pub struct JoinResponder {
    local_key: Key,
    remote_key: Key,
    local_nonce: Nonce,
    remote_nonce: Nonce,
    joined: Joined,
}

impl JoinResponder {
    /// Processes an MP_JOIN SYN: `lookup` maps our token to the connection's agreement
    /// (§3.2: "Demultiplexing subflow SYNs MUST be done using the token"). Returns the state and
    /// the MP_JOIN for the SYN/ACK (Figure 6), which carries our `backup` wish and `addr_id`.
    pub fn on_syn<'a>(
        opt: Option<&MptcpOption>,
        lookup: impl FnOnce(Token) -> Option<&'a Negotiated>,
        local_nonce: Nonce,
        backup: bool,
        addr_id: u8,
    ) -> Result<(JoinResponder, MptcpOption), JoinError> {
        let Some(MptcpOption::MpJoin(join)) = opt else {
            return Err(JoinError::Missing);
        };
        let MpJoin::Syn {
            backup: peer_backup,
            addr_id: peer_addr_id,
            receiver_token,
            sender_nonce,
        } = *join
        else {
            return Err(JoinError::WrongForm);
        };
        let token = Token(receiver_token);
        let conn = lookup(token).ok_or(JoinError::UnknownToken(token))?;
        let remote_nonce = Nonce(sender_nonce);
        let thmac = join_synack_hmac(conn.local_key, conn.remote_key, local_nonce, remote_nonce);
        Ok((
            JoinResponder {
                local_key: conn.local_key,
                remote_key: conn.remote_key,
                local_nonce,
                remote_nonce,
                joined: Joined {
                    peer_backup,
                    peer_addr_id,
                },
            },
            MptcpOption::MpJoin(MpJoin::SynAck {
                backup,
                addr_id,
                truncated_hmac: thmac,
                sender_nonce: local_nonce.0,
            }),
        ))
    }

    /// Verifies the third ACK's 160-bit HMAC-A. §3.2: "receipt of this packet MUST trigger a
    /// regular TCP ACK in response".
    pub fn on_ack(self, opt: Option<&MptcpOption>) -> Result<Joined, JoinError> {
        let Some(opt) = opt else {
            return Err(JoinError::Missing);
        };
        let MptcpOption::MpJoin(MpJoin::Ack { hmac }) = opt else {
            return Err(match opt {
                MptcpOption::MpJoin(_) => JoinError::WrongForm,
                _ => JoinError::Missing,
            });
        };
        verify_join_ack_hmac(
            hmac,
            self.remote_key,
            self.local_key,
            self.remote_nonce,
            self.local_nonce,
        )
        .map_err(|_| JoinError::HmacMismatch)?;
        Ok(self.joined)
    }
}
