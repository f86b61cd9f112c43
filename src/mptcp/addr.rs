//! Address signalling (RFC 8684 §3.4): building and authenticating ADD_ADDR, its echo, and the
//! table of the peer's announced addresses kept as soft state, updated by ADD_ADDR, REMOVE_ADDR
//! and MP_JOIN address IDs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::crypto::{add_addr_hmac, verify_add_addr_hmac};
use super::handshake::Negotiated;
use crate::wire::mptcp::{AddAddr, AddrIdList, AddrSignal, MptcpOption};

/// The ADD_ADDR announcing our address `addr` (and `port`, if it differs from the current
/// subflow's) under `addr_id`, with the truncated HMAC computed with our key first (§3.4.1: "in
/// the case of the message transmitted by Host A, will be Key-A followed by Key-B").
pub fn announce(conn: &Negotiated, addr_id: u8, addr: IpAddr, port: Option<u16>) -> MptcpOption {
    MptcpOption::AddAddr(AddAddr {
        addr_id,
        addr,
        port,
        signal: AddrSignal::Announce {
            truncated_hmac: add_addr_hmac(conn.local_key, conn.remote_key, addr_id, addr, port),
        },
    })
}

/// The echo acknowledging a received announcement: §3.4.1 "a receiver receiving a fresh ADD_ADDR
/// option (where E=0) will send the same option back to the sender, but not including the HMAC
/// and with E=1".
pub fn echo(received: &AddAddr) -> MptcpOption {
    MptcpOption::AddAddr(AddAddr {
        signal: AddrSignal::Echo,
        ..*received
    })
}

/// The REMOVE_ADDR for our address IDs `ids` (1 to 37 of them; `None` otherwise) (§3.4.2).
pub fn remove(ids: &[u8]) -> Option<MptcpOption> {
    AddrIdList::new(ids).map(|addr_ids| MptcpOption::RemoveAddr { addr_ids })
}

/// Why a received address signal is not acted on. §3.4.1: an ADD_ADDR whose HMAC does not
/// validate "SHOULD silently ignore the option": count it, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The truncated HMAC does not verify (forged, or altered in flight).
    #[error("ADD_ADDR HMAC mismatch for address ID {addr_id}")]
    HmacMismatch {
        /// Address ID claimed.
        addr_id: u8,
    },
    /// An address ID re-announced with another address: §3.4.1 "the address MUST be the same as
    /// the address previously assigned to this Address ID"; "A host wishing to replace an
    /// existing Address ID MUST first remove the existing one".
    #[error("address ID {addr_id} re-announced with another address")]
    IdReused {
        /// The address ID.
        addr_id: u8,
    },
}

/// A peer address as we know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    /// The address.
    pub addr: IpAddr,
    /// Port to connect to: announced, or `None` for "the port of the subflow the ADD_ADDR came
    /// on" (§3.4.1: "If no port is specified, MPTCP SHOULD attempt to connect to the specified
    /// address on the same port").
    pub port: Option<u16>,
}

/// What a received ADD_ADDR did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddAddrOutcome {
    /// A new, authenticated address: send [`echo`] and consider a subflow to it.
    New(RemoteAddr),
    /// A refresh of a known address (same ID and address; the port may differ — §3.4.1: "If the
    /// port number is different, the receiving host SHOULD try to set up a new subflow"). Echo
    /// it too.
    Refreshed {
        /// The entry now.
        addr: RemoteAddr,
        /// The port changed.
        port_changed: bool,
    },
    /// The peer echoed one of *our* announcements (E=1): stop retransmitting it.
    EchoOfOurs {
        /// Our address ID that was echoed.
        addr_id: u8,
    },
}

/// The peer's addresses by address ID, for one connection (§3.2: "A host MUST store the
/// mappings between Address IDs and addresses both for itself and the remote host"). Address ID
/// 0 is the initial subflow's address (§3.2: "implicit and have the value zero").
#[derive(Debug, Default)]
pub struct RemoteAddrs {
    by_id: BTreeMap<u8, RemoteAddr>,
}

impl RemoteAddrs {
    /// A table holding the initial subflow's peer address as ID 0.
    pub fn new(initial: IpAddr) -> RemoteAddrs {
        let mut by_id = BTreeMap::new();
        by_id.insert(
            0,
            RemoteAddr {
                addr: initial,
                port: None,
            },
        );
        RemoteAddrs { by_id }
    }

    /// The address for `id`.
    pub fn get(&self, id: u8) -> Option<RemoteAddr> {
        self.by_id.get(&id).copied()
    }

    /// All known addresses, by ID.
    pub fn iter(&self) -> impl Iterator<Item = (u8, RemoteAddr)> + '_ {
        self.by_id.iter().map(|(&id, &a)| (id, a))
    }

    /// Number of known addresses.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No known address.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Processes a received ADD_ADDR (after the TCP validity checks, §3.4.1 "MUST undertake
    /// standard TCP validity checks").
    pub fn on_add_addr(&mut self, conn: &Negotiated, opt: &AddAddr) -> Result<AddAddrOutcome, AddrError> {
        let AddrSignal::Announce { truncated_hmac } = opt.signal else {
            return Ok(AddAddrOutcome::EchoOfOurs { addr_id: opt.addr_id });
        };
        // The peer sent it: its key first (§3.4.1).
        verify_add_addr_hmac(
            truncated_hmac,
            conn.remote_key,
            conn.local_key,
            opt.addr_id,
            opt.addr,
            opt.port,
        )
        .map_err(|_| AddrError::HmacMismatch { addr_id: opt.addr_id })?;
        let new = RemoteAddr {
            addr: opt.addr,
            port: opt.port,
        };
        match self.by_id.get_mut(&opt.addr_id) {
            None => {
                self.by_id.insert(opt.addr_id, new);
                Ok(AddAddrOutcome::New(new))
            }
            Some(old) if old.addr == opt.addr => {
                let port_changed = old.port != opt.port;
                *old = new;
                Ok(AddAddrOutcome::Refreshed {
                    addr: new,
                    port_changed,
                })
            }
            Some(_) => Err(AddrError::IdReused { addr_id: opt.addr_id }),
        }
    }

    /// Records the address ID the peer gave in an MP_JOIN for a subflow from `addr` (§3.4.1:
    /// "All Address IDs learned via either MP_JOIN or ADD_ADDR SHOULD be stored").
    pub fn on_join(&mut self, addr_id: u8, addr: IpAddr) {
        self.by_id
            .entry(addr_id)
            .or_insert(RemoteAddr { addr, port: None });
    }

    /// Processes a REMOVE_ADDR: returns the removed IDs with their addresses (the subflows using
    /// them are to be closed, §3.4.2); unknown IDs are ignored ("If an Address ID is not known,
    /// the receiver will silently ignore the request").
    pub fn on_remove_addr(&mut self, ids: &AddrIdList) -> Vec<(u8, RemoteAddr)> {
        ids.as_slice()
            .iter()
            .filter_map(|id| self.by_id.remove(id).map(|a| (*id, a)))
            .collect()
    }
}

/// A set of address IDs (0–255).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrIdSet([u64; 4]);

impl AddrIdSet {
    /// Adds `id`.
    pub fn insert(&mut self, id: u8) {
        self.0[usize::from(id >> 6)] |= 1 << (id & 63);
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u8) -> bool {
        self.0[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }
}
