//! mpbond-bench: measures mpbond side by side with the Linux kernel in the netlab lab and writes
//! `BENCHMARKS.md` plus raw JSON. The pure parts (statistics, the table, `/proc` parsing) are
//! unit-tested; the measurements need root and run only from the `mpbond-bench` binary.
//!
//! Rows (issue 6): P1 single-flow goodput, P2 aggregate goodput, P3/P4 failover gap (link down,
//! blackhole), P5 request/response latency and connection setup rate, P6 memory per idle flow
//! and CPU per message at several flow counts, P7 CPU seconds per GB, P8 the RFC 8803 converter
//! (goodput, time to first byte and failover gap through it), P9 converter scale (10,000 idle
//! relayed connections, memory per connection, CPU per GB beside a plain splice relay), P11 UDP
//! through the converter (goodput, the gap of a 50 pkt/s stream at a Wi-Fi loss).

pub mod child;
pub mod churn;
pub mod convert;
pub mod convert_scale;
pub mod convert_udp;
pub mod daemon;
pub mod idle_cost;
pub mod iperf;
pub mod machine;
pub mod measure;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod splice_relay;
pub mod stats;
