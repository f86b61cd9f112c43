//! Parsing and building of packets and options (STYLE.md: checked views over untrusted bytes,
//! summaries for logic; never a panic on any input).

pub mod mptcp;
