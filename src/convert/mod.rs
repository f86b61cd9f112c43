//! RFC 8803 (0-RTT TCP Convert Protocol), sans-IO. Skeleton: the API of `CONVERT_API.md`.

pub mod client;
pub mod converter;
pub mod cookie;
pub mod key;
pub mod msg;

/// The TCP port RFC 8803 tools use.
pub const DEFAULT_PORT: u16 = 5124;
