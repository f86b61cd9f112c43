//! Sans-IO Multipath TCP v1 (RFC 8684) building blocks that do not depend on the TCP engine:
//! keys, tokens and HMACs ([`crypto`]), MP_CAPABLE/MP_JOIN negotiation ([`handshake`]),
//! sequence spaces ([`seq`]), DSS mappings and their checksum ([`mapping`]), and the data-level
//! receive ([`recv`]) and send ([`send`]) buffers, address signalling ([`addr`]). Nothing here reads a clock, touches a socket
//! or spawns a thread.

pub mod addr;
pub mod crypto;
pub mod handshake;
pub mod mapping;
pub mod recv;
pub mod send;
pub mod seq;
