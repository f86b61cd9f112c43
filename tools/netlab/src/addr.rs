//! The lab's fixed addresses. Everything is inside 198.18.0.0/15 (RFC 2544 benchmarking range)
//! and the ULA prefixes fd18::/16, fd19::/16.
//!
//! ```text
//!  laptop                wire (delay)        router (NAT)                 inet
//!  wlan0 198.18.1.2 ─ l [br0|relay] r ─ lan 198.18.1.1  wan 198.19.1.2 ─ wifi 198.19.1.1
//!  wwan0 198.18.2.2 ─ l [br0|relay] r ─ lan 198.18.2.1  wan 198.19.2.2 ─ cell 198.19.2.1
//!                                                                        lo 198.19.0.10 MPTCP http
//!                                                                           198.19.0.11 TCP http
//!                                                                           198.19.0.12 UDP echo
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP port of both HTTP servers.
pub const HTTP_PORT: u16 = 80;
/// UDP port of the echo server.
pub const UDP_ECHO_PORT: u16 = 7;

/// One of the laptop's two uplinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Path {
    /// `wlan0` through the Wi-Fi router.
    Wifi,
    /// `wwan0` through the cellular router.
    Cell,
}

impl Path {
    /// Both paths.
    pub const ALL: [Path; 2] = [Path::Wifi, Path::Cell];

    fn n(self) -> u8 {
        match self {
            Path::Wifi => 1,
            Path::Cell => 2,
        }
    }

    /// Short name: `wifi` or `cell`.
    pub fn name(self) -> &'static str {
        match self {
            Path::Wifi => "wifi",
            Path::Cell => "cell",
        }
    }

    /// The laptop's interface on this path.
    pub fn laptop_iface(self) -> &'static str {
        match self {
            Path::Wifi => "wlan0",
            Path::Cell => "wwan0",
        }
    }

    /// Route metric of the laptop's default route on this path (as NetworkManager sets).
    pub fn metric(self) -> u32 {
        match self {
            Path::Wifi => 100,
            Path::Cell => 200,
        }
    }

    /// The laptop's IPv4 address on this path (198.18.N.2/24).
    pub fn laptop_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.n(), 2)
    }

    /// The router's LAN address, the laptop's gateway (198.18.N.1).
    pub fn gateway_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.n(), 1)
    }

    /// The laptop's IPv6 address on this path (fd18:N::2/64).
    pub fn laptop_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd18, u16::from(self.n()), 0, 0, 0, 0, 0, 2)
    }

    /// The router's LAN IPv6 address (fd18:N::1).
    pub fn gateway_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd18, u16::from(self.n()), 0, 0, 0, 0, 0, 1)
    }

    /// The router's WAN address, what servers see after NAT (198.19.N.2).
    pub fn router_wan_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.n(), 2)
    }

    /// The router's WAN IPv6 address (fd19:N::2).
    pub fn router_wan_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd19, u16::from(self.n()), 0, 0, 0, 0, 0, 2)
    }

    /// The internet side of the router's WAN link (198.19.N.1), the router's gateway.
    pub fn inet_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.n(), 1)
    }

    /// The internet side of the router's WAN link, IPv6 (fd19:N::1).
    pub fn inet_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd19, u16::from(self.n()), 0, 0, 0, 0, 0, 1)
    }

    /// The laptop's address on this path in the given family.
    pub fn laptop_addr(self, v6: bool) -> IpAddr {
        if v6 {
            self.laptop_v6().into()
        } else {
            self.laptop_v4().into()
        }
    }
}

impl std::str::FromStr for Path {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wifi" | "wlan0" | "wlan" => Ok(Path::Wifi),
            "cell" | "cellular" | "wwan0" | "wwan" => Ok(Path::Cell),
            _ => Err(format!("unknown path `{s}` (expected wifi or cell)")),
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A server the lab runs in the `inet` namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// Linux-kernel MPTCP socket speaking minimal HTTP/1.1 (198.19.0.10, fd19::10, port 80).
    Mptcp,
    /// Plain TCP socket speaking minimal HTTP/1.1 (198.19.0.11, fd19::11, port 80).
    Tcp,
    /// UDP echo (198.19.0.12, fd19::12, port 7).
    UdpEcho,
}

impl Server {
    /// All servers.
    pub const ALL: [Server; 3] = [Server::Mptcp, Server::Tcp, Server::UdpEcho];

    fn host(self) -> u8 {
        match self {
            Server::Mptcp => 10,
            Server::Tcp => 11,
            Server::UdpEcho => 12,
        }
    }

    /// The server's IP address.
    pub fn ip(self, v6: bool) -> IpAddr {
        if v6 {
            // fd19::10, fd19::11, fd19::12: the same digits as the IPv4 host part.
            let h = u16::from(self.host() / 10) << 4 | u16::from(self.host() % 10);
            Ipv6Addr::new(0xfd19, 0, 0, 0, 0, 0, 0, h).into()
        } else {
            Ipv4Addr::new(198, 19, 0, self.host()).into()
        }
    }

    /// The server's socket address.
    pub fn addr(self, v6: bool) -> SocketAddr {
        let port = if self == Server::UdpEcho {
            UDP_ECHO_PORT
        } else {
            HTTP_PORT
        };
        SocketAddr::new(self.ip(v6), port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_the_documented_ones() {
        assert_eq!(Server::Mptcp.addr(false).to_string(), "198.19.0.10:80");
        assert_eq!(Server::Tcp.addr(true).to_string(), "[fd19::11]:80");
        assert_eq!(Server::UdpEcho.addr(true).to_string(), "[fd19::12]:7");
        assert_eq!(Path::Cell.laptop_v6().to_string(), "fd18:2::2");
    }
}
