//! The status the daemon reports on its control socket (`{"cmd":"status"}`), and its rendering
//! as a table for `mpbond status`. The structure is meant to grow: flows, subflows and failover
//! counters are real (empty) fields that the forwarding engine fills.

use std::fmt::Write as _;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::Mode;

/// Role of a physical interface (`primary`, `backup`, `never`).
pub use crate::config::IfaceRole as Role;

impl InterfaceStatus {
    /// Interface `name` of `role` and `priority`, not present (yet).
    pub fn absent(name: String, role: Role, priority: u8) -> InterfaceStatus {
        InterfaceStatus {
            name,
            role,
            priority,
            index: 0,
            up: false,
            carrier: false,
            addresses: Vec::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            mtu: 0,
            rx_above_mtu: 0,
            rx_largest: 0,
            usable: false,
            budget_blocked: false,
            budget_soft: false,
            adopted: false,
        }
    }
}

/// The flows by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKinds {
    /// TCP as MPTCP straight to the destination.
    pub mptcp: usize,
    /// TCP through a converter.
    pub via_converter: usize,
    /// TCP as plain TCP.
    pub plain_tcp: usize,
    /// UDP sessions.
    pub udp: usize,
    /// Of them, through a converter's datagram relay.
    pub udp_via_converter: usize,
    /// ICMP sessions.
    pub icmp: usize,
}

/// One physical interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Order among interfaces of the same role, higher first.
    #[serde(default)]
    pub priority: u8,
    /// Interface index (0 while the interface does not exist).
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    /// Carrier (lower layer up).
    pub carrier: bool,
    /// Addresses.
    pub addresses: Vec<IpNet>,
    /// Bytes received by the interface (kernel counter).
    pub rx_bytes: u64,
    /// Bytes sent by the interface (kernel counter).
    pub tx_bytes: u64,
    /// The MTU its interface thread saw when it opened the interface (0: not open yet).
    #[serde(default)]
    pub mtu: u32,
    /// Packets mpbond received on it larger than the MTU: GRO super-segments taken whole.
    #[serde(default)]
    pub rx_above_mtu: u64,
    /// The largest packet mpbond received on it, bytes.
    #[serde(default)]
    pub rx_largest: u64,
    /// The engine uses it for new flows (up, carrier, its I/O thread open).
    #[serde(default)]
    pub usable: bool,
    /// Its data budget is used up (`at_limit = "block"`): mpbond does not use it.
    #[serde(default)]
    pub budget_blocked: bool,
    /// Its data budget is past the soft share (`soft_percent`), or at the limit with
    /// `at_limit = "warn"`: mpbond uses it only when nothing else works.
    #[serde(default)]
    pub budget_soft: bool,
    /// Detected while running (not listed nor named at `up`): once it vanished, its place
    /// (engine id) may go to another interface that appears.
    #[serde(default)]
    pub adopted: bool,
}

/// The TUN device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TunStatus {
    /// Device name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Addresses.
    pub addresses: Vec<IpNet>,
    /// Packets the host sent into the TUN (read by mpbond).
    pub rx_packets: u64,
    /// Bytes the host sent into the TUN.
    pub rx_bytes: u64,
    /// Packets mpbond wrote to the TUN.
    pub tx_packets: u64,
    /// Bytes mpbond wrote to the TUN.
    pub tx_bytes: u64,
    /// Packets read from the TUN that were not valid IPv4 or IPv6 (counted and dropped).
    pub rx_invalid: u64,
    /// Of the packets read, those carrying TCP.
    pub rx_tcp: u64,
    /// Of the packets read, those carrying UDP.
    pub rx_udp: u64,
    /// Of the packets read, those carrying ICMP or ICMPv6.
    pub rx_icmp: u64,
    /// The TUN has the vnet header, with checksum and TSO offload.
    #[serde(default)]
    pub offload: bool,
    /// Packets read that were TCP super-packets (the host's TSO).
    #[serde(default)]
    pub rx_super: u64,
    /// Packets read whose checksum the kernel left partial or had checked (not verified again).
    #[serde(default)]
    pub rx_csum_offloaded: u64,
    /// Super-segments written whole, for the kernel to cut or take whole.
    #[serde(default)]
    pub tx_super: u64,
    /// Packets written with a partial checksum for the kernel to complete.
    #[serde(default)]
    pub tx_csum_offloaded: u64,
    /// Super-segments or partial checksums finished in software (no vnet header).
    #[serde(default)]
    pub tx_software: u64,
}

/// One host flow relayed by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatus {
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// Host-side source.
    pub source: SocketAddr,
    /// Destination.
    pub destination: SocketAddr,
    /// Whether the peer speaks MPTCP (false: fell back to plain TCP).
    pub mptcp: bool,
    /// The RFC 8803 converter the flow goes through (the MPTCP peer is then the converter).
    #[serde(default)]
    pub converter: Option<SocketAddr>,
    /// Bytes from the host.
    pub bytes_up: u64,
    /// Bytes to the host.
    pub bytes_down: u64,
}

/// One RFC 8803 converter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConverterStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// New flows may use it now.
    pub up: bool,
    /// While down: milliseconds until it is tried again.
    pub retry_in_ms: u64,
    /// Flows that went through it.
    pub flows: u64,
    /// UDP sessions that went through it.
    #[serde(default)]
    pub sessions: u64,
    /// Times it was marked down.
    pub failures: u64,
    /// Why it was marked down last (`unreachable`, `reset`, `refused`, `malformed`).
    pub last_failure: Option<String>,
}

/// One MPTCP subflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubflowStatus {
    /// Index of the flow in [`Status::flows`].
    pub flow: usize,
    /// Interface it runs on.
    pub interface: String,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// TCP state name.
    pub state: String,
    /// Smoothed RTT in microseconds.
    pub srtt_us: u64,
    /// Carrying data now.
    #[serde(default)]
    pub usable: bool,
    /// Backup subflow (RFC 8684 §3.3.8).
    #[serde(default)]
    pub backup: bool,
    /// Payload bytes sent on it.
    #[serde(default)]
    pub bytes_sent: u64,
}

/// One failover from a path to the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// Interface that failed.
    pub from: String,
    /// `unavailable` (link, carrier or address gone) or `unresponsive` (link up, no answers).
    pub cause: String,
    /// Milliseconds ago (from when the path was last known good).
    pub ago_ms: u64,
    /// Flows that had traffic on it.
    pub flows: u32,
    /// Of those, flows whose data moved again.
    pub resumed: u32,
    /// Time until the first of them moved data again, in µs.
    pub first_resume_us: Option<u64>,
    /// Time until the last of them moved data again, in µs.
    pub last_resume_us: Option<u64>,
}

/// The whole status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Daemon pid.
    pub pid: u32,
    /// Seconds since the daemon came up.
    pub uptime_secs: u64,
    /// Spreading mode.
    pub mode: Mode,
    /// The TUN device.
    pub tun: TunStatus,
    /// Wi-Fi then cellular.
    pub interfaces: Vec<InterfaceStatus>,
    /// Relayed flows (filled by the engine).
    #[serde(default)]
    pub flows: Vec<FlowStatus>,
    /// Subflows (filled by the engine).
    #[serde(default)]
    pub subflows: Vec<SubflowStatus>,
    /// Failovers from one path to the other since start.
    #[serde(default)]
    pub failovers: u64,
    /// The most recent failovers, oldest first.
    #[serde(default)]
    pub recent_failovers: Vec<FailoverStatus>,
    /// The engine's counters by name (flows by kind, bytes, dropped packets by reason).
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The RFC 8803 converters.
    #[serde(default)]
    pub converters: Vec<ConverterStatus>,
    /// The data budget of each interface.
    #[serde(default)]
    pub budget: Vec<crate::budget::BudgetStatus>,
    /// mpbond's DNS forwarder (absent when off).
    #[serde(default)]
    pub dns: Option<DnsStatus>,
}

/// One path of the DNS forwarder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPathStatus {
    /// Interface.
    pub interface: String,
    /// Its resolvers, best first.
    pub resolvers: Vec<std::net::IpAddr>,
    /// Answers relayed from them.
    pub answered: u64,
}

/// mpbond's DNS forwarder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// The addresses it answers on (port 53, UDP and TCP).
    pub listen: Vec<std::net::IpAddr>,
    /// How it is the system's resolver (`resolved` or `resolv-conf`).
    pub backend: String,
    /// Per path.
    pub paths: Vec<DnsPathStatus>,
    /// The forwarder's counters (queries, failovers, SERVFAILs, ...; answers are per path).
    #[serde(flatten)]
    pub counters: crate::dns::forwarder::DnsCounters,
}

fn join(addrs: &[IpNet]) -> String {
    if addrs.is_empty() {
        return "-".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Status {
    /// The flows counted by kind.
    pub fn flow_kinds(&self) -> FlowKinds {
        let mut k = FlowKinds::default();
        for f in &self.flows {
            match (f.protocol.as_str(), f.converter.is_some(), f.mptcp) {
                ("tcp", true, _) => k.via_converter += 1,
                ("tcp", false, true) => k.mptcp += 1,
                ("tcp", false, false) => k.plain_tcp += 1,
                ("udp", via, _) => {
                    k.udp += 1;
                    k.udp_via_converter += usize::from(via);
                }
                ("icmp", ..) => k.icmp += 1,
                _ => {}
            }
        }
        k
    }

    /// A human-readable table; with `flows`, every flow and its subflows too.
    pub fn render(&self, flows: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mpbond is up (pid {}, up {}s, mode {})",
            self.pid, self.uptime_secs, self.mode
        );
        let _ = writeln!(
            s,
            "tun {} mtu {} {}  rx {} pkts / {} B (tcp {} udp {} icmp {})  tx {} pkts / {} B",
            self.tun.name,
            self.tun.mtu,
            join(&self.tun.addresses),
            self.tun.rx_packets,
            self.tun.rx_bytes,
            self.tun.rx_tcp,
            self.tun.rx_udp,
            self.tun.rx_icmp,
            self.tun.tx_packets,
            self.tun.tx_bytes
        );
        let _ = writeln!(
            s,
            "{:<10} {:<9} {:<5} {:<8} {:>12} {:>12}  addresses",
            "interface", "role", "state", "carrier", "rx bytes", "tx bytes"
        );
        for i in &self.interfaces {
            let role = i.role.name();
            let state = match (i.index, i.up) {
                (0, _) => "gone",
                (_, true) => "up",
                (_, false) => "down",
            };
            let budget = match (i.budget_blocked, i.budget_soft) {
                (true, _) => "  (budget used up: not used)",
                (false, true) => "  (budget near its limit: last resort)",
                (false, false) => "",
            };
            let _ = writeln!(
                s,
                "{:<10} {:<9} {:<5} {:<8} {:>12} {:>12}  {}{budget}",
                i.name,
                role,
                state,
                if i.carrier { "yes" } else { "no" },
                i.rx_bytes,
                i.tx_bytes,
                join(&i.addresses)
            );
        }
        let k = self.flow_kinds();
        let _ = writeln!(
            s,
            "flows {} (tcp mptcp {}, via converter {}, tcp fallback {}, udp {} ({} via converter), icmp {})  subflows {}  failovers {}",
            self.flows.len(),
            k.mptcp,
            k.via_converter,
            k.plain_tcp,
            k.udp,
            k.udp_via_converter,
            k.icmp,
            self.subflows.len(),
            self.failovers
        );
        let fallbacks: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, v)| k.starts_with("fallback_") && **v > 0)
            .map(|(k, v)| format!("{} {v}", &k["fallback_".len()..]))
            .collect();
        if !fallbacks.is_empty() {
            let _ = writeln!(s, "MPTCP fallbacks: {}", fallbacks.join(", "));
        }
        for b in &self.budget {
            let _ = writeln!(s, "data {}", b.line());
        }
        for c in &self.converters {
            let state = if c.up {
                "up".to_string()
            } else {
                format!(
                    "down ({}, retry in {}s)",
                    c.last_failure.as_deref().unwrap_or("failed"),
                    c.retry_in_ms.div_ceil(1000)
                )
            };
            let _ = writeln!(
                s,
                "converter {} {state}, {} flows, {} udp sessions, {} failures",
                c.addr, c.flows, c.sessions, c.failures
            );
        }
        if let Some(d) = &self.dns {
            let listen: Vec<String> = d.listen.iter().map(ToString::to_string).collect();
            let paths: Vec<String> = d
                .paths
                .iter()
                .map(|p| {
                    let r: Vec<String> = p.resolvers.iter().map(ToString::to_string).collect();
                    let r = if r.is_empty() {
                        "-".to_string()
                    } else {
                        r.join(" ")
                    };
                    format!("{} [{r}] {}", p.interface, p.answered)
                })
                .collect();
            let _ = writeln!(
                s,
                "dns on {} ({}): {} queries, answered {}, {} failovers, {} servfail, {} bad queries, {} unmatched replies",
                listen.join(", "),
                d.backend,
                d.counters.queries,
                paths.join(" / "),
                d.counters.failovers,
                d.counters.servfail,
                d.counters.bad_queries,
                d.counters.unmatched_replies
            );
        }
        for f in &self.recent_failovers {
            let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.1} ms", v as f64 / 1e3));
            let _ = writeln!(
                s,
                "failover {}s ago: {} {}, {} flows, {} resumed, first after {}, last after {}",
                f.ago_ms / 1000,
                f.from,
                f.cause,
                f.flows,
                f.resumed,
                ms(f.first_resume_us),
                ms(f.last_resume_us)
            );
        }
        let dropped: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, v)| k.starts_with("dropped_") && **v > 0)
            .map(|(k, v)| format!("{} {v}", &k["dropped_".len()..]))
            .collect();
        if !dropped.is_empty() {
            let _ = writeln!(s, "dropped packets: {}", dropped.join(", "));
        }
        if flows {
            for (n, f) in self.flows.iter().enumerate() {
                let how = match (f.protocol.as_str(), f.mptcp) {
                    ("tcp", true) => "mptcp",
                    ("tcp", false) => "tcp",
                    _ => "",
                };
                let via = f
                    .converter
                    .map(|c| format!(" via converter {c}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  #{n} {} {} -> {} {how}{via} up {} B down {} B",
                    f.protocol, f.source, f.destination, f.bytes_up, f.bytes_down
                );
                for sf in self.subflows.iter().filter(|sf| sf.flow == n) {
                    let _ = writeln!(
                        s,
                        "      {} {} -> {} {}{}{} srtt {} us sent {} B",
                        sf.interface,
                        sf.local,
                        sf.remote,
                        sf.state,
                        if sf.backup { " backup" } else { "" },
                        if sf.usable { " active" } else { "" },
                        sf.srtt_us,
                        sf.bytes_sent
                    );
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            pid: 42,
            uptime_secs: 7,
            mode: Mode::Handover,
            tun: TunStatus {
                name: "mpbond0".into(),
                mtu: 65000,
                rx_packets: 3,
                ..TunStatus::default()
            },
            interfaces: vec![InterfaceStatus {
                name: "wlan0".into(),
                role: Role::Primary,
                priority: 10,
                index: 2,
                up: true,
                carrier: true,
                addresses: vec!["198.18.1.2/24".parse().unwrap()],
                rx_bytes: 1,
                tx_bytes: 2,
                mtu: 1500,
                rx_above_mtu: 3,
                rx_largest: 64_000,
                usable: true,
                budget_blocked: false,
                budget_soft: true,
                adopted: false,
            }],
            flows: Vec::new(),
            subflows: Vec::new(),
            failovers: 0,
            recent_failovers: Vec::new(),
            counters: [("dropped_tcp_checksum".to_string(), 2)].into_iter().collect(),
            converters: Vec::new(),
            budget: Vec::new(),
            dns: None,
        }
    }

    #[test]
    fn json_round_trips_and_table_shows_interfaces() {
        let s = sample();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&j).unwrap(), s);
        let t = s.render(true);
        assert!(t.contains("pid 42"), "{t}");
        assert!(t.contains("wlan0      primary   up"), "{t}");
        assert!(
            t.contains("198.18.1.2/24  (budget near its limit: last resort)"),
            "{t}"
        );
        assert!(t.contains("rx 3 pkts"), "{t}");
        assert!(t.contains("dropped packets: tcp_checksum 2"), "{t}");
    }

    #[test]
    fn flows_through_a_converter_and_converters_are_shown() {
        let mut s = sample();
        let conv: SocketAddr = "198.19.3.1:5124".parse().unwrap();
        let flow = |converter, mptcp| FlowStatus {
            protocol: "tcp".into(),
            source: "100.127.77.1:40000".parse().unwrap(),
            destination: "198.19.0.11:80".parse().unwrap(),
            mptcp,
            converter,
            bytes_up: 1,
            bytes_down: 2,
        };
        s.flows = vec![flow(Some(conv), true), flow(None, true), flow(None, false)];
        s.converters = vec![
            ConverterStatus {
                addr: conv,
                up: true,
                retry_in_ms: 0,
                flows: 5,
                sessions: 0,
                failures: 0,
                last_failure: None,
            },
            ConverterStatus {
                addr: "198.19.3.2:5124".parse().unwrap(),
                up: false,
                retry_in_ms: 8_500,
                flows: 1,
                sessions: 0,
                failures: 1,
                last_failure: Some("unreachable".into()),
            },
        ];
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&j).unwrap(), s);
        let t = s.render(true);
        assert!(t.contains("tcp mptcp 1, via converter 1, tcp fallback 1"), "{t}");
        assert!(t.contains("converter 198.19.3.1:5124 up, 5 flows"), "{t}");
        assert!(
            t.contains("converter 198.19.3.2:5124 down (unreachable, retry in 9s)"),
            "{t}"
        );
        assert!(t.contains("mptcp via converter 198.19.3.1:5124 up 1 B"), "{t}");
    }
}
