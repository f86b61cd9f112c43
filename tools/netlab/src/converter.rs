//! The converter host: an optional namespace `mpblab-<name>-conv` attached to `inet` by its own
//! link, for `mpbond server` (the RFC 8803 Transport Converter). Its address is its own (not on
//! `inet`'s loopback), so the servers see connections from the converter's address:
//!
//! ```text
//!  inet                          conv
//!  conv 198.19.3.1/24 ────────── inet 198.19.3.2/24   default via 198.19.3.1
//!       fd19:3::1/64                  fd19:3::2/64    default via fd19:3::1
//! ```
//!
//! `inet` forwards between its links once a converter exists (the laptop's packets reach the
//! converter through a router and `inet`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cmd;
use crate::lab::{Lab, LabError};

/// The converter's IPv4 address.
pub const CONVERTER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 2);
/// The converter's IPv6 address.
pub const CONVERTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd19, 3, 0, 0, 0, 0, 0, 2);
/// `inet`'s address on the converter's link.
pub const CONVERTER_GW_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 1);
/// `inet`'s IPv6 address on the converter's link.
pub const CONVERTER_GW_V6: Ipv6Addr = Ipv6Addr::new(0xfd19, 3, 0, 0, 0, 0, 0, 1);
/// The converter's interface name (in its namespace).
pub const CONVERTER_IFACE: &str = "inet";
/// `inet`'s interface toward the converter.
pub const INET_CONVERTER_IFACE: &str = "conv";

/// The converter's address in one family.
pub fn converter_ip(v6: bool) -> IpAddr {
    if v6 {
        CONVERTER_V6.into()
    } else {
        CONVERTER_V4.into()
    }
}

impl Lab {
    /// Adds the converter namespace (once; later calls return its name). It is deleted with the lab.
    pub fn add_converter(&mut self) -> Result<String, LabError> {
        let conv = self.converter_ns();
        if self.created_contains(&conv) {
            return Ok(conv);
        }
        let inet = self.ns().inet.clone();
        cmd::run(&["ip", "netns", "add", &conv])?;
        self.push_created(conv.clone());
        cmd::run(&["ip", "-n", &conv, "link", "set", "dev", "lo", "up"])?;
        cmd::run_in(
            &conv,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv6.conf.all.accept_ra=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.mptcp.enabled=1",
            ],
        )?;
        cmd::run_in(
            &inet,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        cmd::run(&[
            "ip",
            "-n",
            &inet,
            "link",
            "add",
            INET_CONVERTER_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            CONVERTER_IFACE,
            "netns",
            &conv,
        ])?;
        for (n, ifc, v4, v6) in [
            (&inet, INET_CONVERTER_IFACE, CONVERTER_GW_V4, CONVERTER_GW_V6),
            (&conv, CONVERTER_IFACE, CONVERTER_V4, CONVERTER_V6),
        ] {
            cmd::run_in(n, &["ethtool", "-K", ifc, "tx", "off"])?;
            cmd::run(&["ip", "-n", n, "addr", "add", &format!("{v4}/24"), "dev", ifc])?;
            cmd::run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifc,
                "nodad",
            ])?;
            cmd::run(&["ip", "-n", n, "link", "set", "dev", ifc, "up"])?;
        }
        cmd::run(&[
            "ip",
            "-n",
            &conv,
            "route",
            "add",
            "default",
            "via",
            &CONVERTER_GW_V4.to_string(),
        ])?;
        cmd::run(&[
            "ip",
            "-n",
            &conv,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &CONVERTER_GW_V6.to_string(),
        ])?;
        // Wait (bounded) until the link is active both ways: a ping from the converter to inet.
        let ok = (0..50).any(|_| {
            cmd::run_in(
                &conv,
                &["ping", "-c", "1", "-W", "0.2", "-q", &CONVERTER_GW_V4.to_string()],
            )
            .is_ok()
        });
        if !ok {
            return Err(LabError::Io {
                context: format!("converter link {conv} ↔ {inet} not up within ~10 s"),
                cause: std::io::ErrorKind::TimedOut.into(),
            });
        }
        Ok(conv)
    }

    /// The converter namespace's name (whether or not it was added).
    pub fn converter_ns(&self) -> String {
        format!("{}{}-conv", crate::lab::NS_PREFIX, self.name())
    }
}
