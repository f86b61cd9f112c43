//! Shared helpers for the root-only lab tests.
#![allow(dead_code, reason = "each test file uses a subset")]
#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

use netlab::client::{self, ClientOpts};
use netlab::{Lab, LabOptions, Path, Server};
use std::time::Duration;

/// Builds a fresh lab, or `None` (with a line on stderr) when not root.
pub fn lab() -> Option<Lab> {
    if !netlab::is_root() {
        eprintln!("skipped: lab tests need root");
        return None;
    }
    Some(Lab::build(LabOptions::default()).expect("build lab"))
}

/// Median UDP echo round trip from the laptop through `path` (after a warm-up that fills the
/// neighbour caches), one datagram in flight at a time.
pub fn udp_rtt(lab: &Lab, path: Path, v6: bool) -> Duration {
    let dev = path.laptop_iface();
    let r = lab
        .run_in(&lab.ns().laptop, || {
            client::udp_echo(Server::UdpEcho.addr(v6), 3, 1, Duration::from_secs(2), Some(dev))?;
            client::udp_echo(Server::UdpEcho.addr(v6), 15, 1, Duration::from_secs(2), Some(dev))
        })
        .unwrap()
        .unwrap();
    assert!(r.received >= 12, "echo through {path} lost too much: {r:?}");
    r.rtt_median.unwrap()
}

/// Smallest of three TCP handshake times to the plain TCP server through `path`.
pub fn tcp_rtt(lab: &Lab, path: Path, v6: bool) -> Duration {
    let opts = ClientOpts {
        timeout: Duration::from_secs(5),
        ..ClientOpts::via(path.laptop_iface())
    };
    lab.run_in(&lab.ns().laptop, || {
        (0..3)
            .map(|_| client::tcp_connect_rtt(Server::Tcp.addr(v6), &opts).unwrap())
            .min()
            .unwrap()
    })
    .unwrap()
}

/// Fraction of `count` UDP echoes through `path` that came back.
pub fn echo_fraction(lab: &Lab, path: Path, v6: bool, count: u32, window: u32) -> f64 {
    let dev = path.laptop_iface();
    lab.run_in(&lab.ns().laptop, || {
        client::udp_echo(
            Server::UdpEcho.addr(v6),
            count,
            window,
            Duration::from_millis(300),
            Some(dev),
        )
    })
    .unwrap()
    .unwrap()
    .fraction()
}
