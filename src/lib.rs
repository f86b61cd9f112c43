//! mpbond: Multipath TCP (RFC 8684) for a whole Linux laptop.
//!
//! Host TCP flows arrive on a TUN device, are terminated by a userspace TCP stack ([`tcp`]) and
//! re-emitted as MPTCP connections ([`mptcp`]) whose subflows run over the Wi-Fi and cellular
//! interfaces. The protocol core (`wire`, `tcp`, `mptcp`, `engine`) is sans-IO: it is driven by
//! events and an explicit `now`, and never touches sockets, threads or the clock. `io` holds the
//! threads, `sys` the only `unsafe`, `route` the routing plan and its applier. See `STYLE.md`.

pub mod budget;
pub mod check;
pub mod cli;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod dns;
pub mod engine;
pub mod expiring;
pub mod fuzz;
pub mod io;
pub mod mptcp;
pub mod redundancy;
pub mod route;
pub mod server;
pub mod sim;
pub mod sys;
pub mod tcp;
pub mod time;
pub mod wire;
