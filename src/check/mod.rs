//! `mpbond check`: does TCP option 30 (MPTCP) survive each path to a server?
//!
//! [`probe`] is the sans-IO prober for one path; [`report`] turns its findings into the
//! administrator's words and JSON. The I/O driver lives in `io::check`.

pub mod probe;
pub mod report;

pub use probe::{DssResult, Hop, PathReport, ProbeSetup, Prober, QuotedOption, Verdict, reconcile};
