//! Sans-IO Multipath TCP v1 (RFC 8684): keys, tokens and HMACs ([`crypto`]), MP_CAPABLE/MP_JOIN
//! negotiation ([`handshake`]), sequence spaces ([`seq`]), DSS mappings and their checksum
//! ([`mapping`]), the data-level receive ([`recv`]) and send ([`send`]) buffers, address
//! signalling ([`addr`]), and on top of the TCP engine the connection itself ([`connection`]:
//! subflows, [`scheduler`], path manager, fallback), the [`endpoint`] demux and the
//! [`hostile_cache`]. Nothing here reads a clock, touches a socket or spawns a thread.

pub mod addr;
pub mod api;
pub mod connection;
pub mod crypto;
pub mod endpoint;
pub mod handshake;
pub mod hostile_cache;
pub mod mapping;
pub mod recv;
pub mod scheduler;
pub mod send;
pub mod seq;
mod subflow;

pub use api::{DEFAULT_JOIN_DELAY, DEFAULT_NAT_IDLE};
pub use connection::{
    Connection, Event, FallbackCause, JoinRefused, LocalPath, MptcpConfig, SubflowInfo, SubflowResetCause,
};

/// The caller's id of a local path (interface): which one a packet came in on, and which one
/// to send a packet on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u8);
