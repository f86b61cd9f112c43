//! netlab: the mpbond network lab, in Linux network namespaces.
//!
//! A laptop with two uplinks (`wlan0`, `wwan0`), each through a *wire* namespace (where delay is
//! added) and a NATing router (where loss, rate, blackhole and the option-30 middlebox live) to an
//! `inet` namespace with a kernel MPTCP HTTP server, a plain TCP HTTP server and a UDP echo, on
//! IPv4 and IPv6. See [`addr`] for the addresses and the picture, [`Lab`] for the API, and
//! `netlab --help` for the command line.
//!
//! ```no_run
//! use netlab::{Lab, LabOptions, Path, Server, client};
//! let lab = Lab::build(LabOptions::default())?;
//! lab.set_delay(Path::Wifi, std::time::Duration::from_millis(20))?;
//! let r = lab.run_in(&lab.ns().laptop, || {
//!     client::http_get(Server::Tcp.addr(false), 1 << 20, &client::ClientOpts::via("wlan0"))
//! })??;
//! println!("{:.0} Mbit/s", r.mbit_per_s());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod addr;
pub mod client;
pub mod cmd;
pub mod converter;
pub mod dns;
mod impair;
pub mod inject;
mod lab;
pub mod netns;
pub mod pattern;
mod relay;
pub mod serve;
mod sys;
pub mod uplink;

pub use addr::{HTTP_PORT, Path, Server, UDP_ECHO_PORT};
pub use impair::{KernelSubflow, MptcpOption, parse_duration, parse_rate};
pub use lab::{
    Lab, LabError, LabOptions, LabState, NS_PREFIX, Namespaces, ROUTER_LAN, ROUTER_WAN, STATE_ROOT, cleanup,
};
pub use relay::{WIRE_BRIDGE, WIRE_LAPTOP_SIDE, WIRE_ROUTER_SIDE};
pub use sys::{MptcpInfo, is_root, mptcp_info, terminate};
