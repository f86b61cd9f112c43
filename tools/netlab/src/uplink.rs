//! Extra uplinks: a laptop interface joined straight to `inet` by a veth pair (no wire, no
//! router, no NAT), for labs with more than two interfaces (a dock's Ethernet) or an interface
//! that appears after start (a USB tether plugged in). Addresses: laptop 198.18.N.2/24 and
//! fd18:N::2/64, its gateway (`inet`'s end, named `upN`) 198.18.N.1 and fd18:N::1. It lives in
//! the lab's namespaces, so the lab's teardown removes it with them.

use crate::cmd;
use crate::lab::{Lab, LabError};

/// An extra uplink of the laptop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The laptop's interface name.
    pub name: String,
    /// The third octet of its subnet (3-99: 1 and 2 are the Wi-Fi and cellular paths).
    pub n: u8,
}

impl Uplink {
    /// `inet`'s end of the veth.
    pub fn inet_iface(&self) -> String {
        format!("up{}", self.n)
    }

    /// The laptop's IPv4 address on it.
    pub fn laptop_v4(&self) -> String {
        format!("198.18.{}.2", self.n)
    }
}

impl Lab {
    /// Adds laptop interface `name` joined to `inet` on subnet `n` (see the module), up, with
    /// default routes through it of `metric`, and a rate limit of `rate` bit/s both ways (tbf,
    /// queue up to 50 ms) when given.
    pub fn add_uplink(&self, name: &str, n: u8, metric: u32, rate: Option<u64>) -> Result<Uplink, LabError> {
        if !(3..=99).contains(&n) {
            return Err(LabError::BadValue(format!("uplink subnet {n}: use 3-99")));
        }
        let up = Uplink {
            name: name.to_string(),
            n,
        };
        let (laptop, inet) = (&self.ns().laptop, &self.ns().inet);
        let peer = up.inet_iface();
        cmd::run(&[
            "ip", "-n", laptop, "link", "add", name, "type", "veth", "peer", "name", &peer, "netns", inet,
        ])?;
        for (ns, dev, host) in [(laptop, name, 2), (inet, peer.as_str(), 1)] {
            for addr in [format!("198.18.{n}.{host}/24"), format!("fd18:{n}::{host}/64")] {
                let mut args = vec!["ip", "-n", ns, "addr", "add", &addr, "dev", dev];
                if addr.contains(':') {
                    args.push("nodad");
                }
                cmd::run(&args)?;
            }
            // AF_PACKET readers must see complete checksums.
            cmd::run_in(ns, &["ethtool", "-K", dev, "tx", "off"])?;
            if let Some(bps) = rate {
                crate::impair::tbf(ns, dev, bps)?;
            }
            cmd::run(&["ip", "-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        let metric = metric.to_string();
        for (fam, gw) in [("-4", format!("198.18.{n}.1")), ("-6", format!("fd18:{n}::1"))] {
            cmd::run(&[
                "ip", "-n", laptop, fam, "route", "replace", "default", "via", &gw, "dev", name, "metric",
                &metric,
            ])?;
        }
        Ok(up)
    }

    /// Removes laptop interface `name` (an uplink unplugged); its veth peer goes with it.
    pub fn remove_uplink(&self, name: &str) -> Result<(), LabError> {
        cmd::run(&["ip", "-n", &self.ns().laptop, "link", "del", name])?;
        Ok(())
    }
}
