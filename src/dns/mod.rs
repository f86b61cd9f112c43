//! mpbond's DNS forwarder: it answers on the TUN addresses while up and is the system's
//! resolver ([`system`]), forwarding each query over the path that is alive ([`forwarder`],
//! sans-IO) to that path's own resolvers; the sockets are in `io/dns.rs`.

pub mod forwarder;
pub mod msg;
pub mod paths;
pub mod system;

pub use forwarder::{
    AttemptId, ClientId, DnsCounters, Forwarder, ForwarderConfig, Output, PathSignal, Transport,
};
