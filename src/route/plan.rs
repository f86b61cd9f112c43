//! The routing plan: a pure function from the validated [`Config`] and a snapshot of the host
//! ([`HostState`]) to an ordered list of [`Op`]s. Nothing here touches the system; the applier
//! (`route::apply`) executes the ops and the journal (`route::journal`) records them.
//!
//! The design follows wg-quick and Tailscale (STYLE.md point 12). With fwmark `M`, table `T` and
//! first priority `P` (defaults 0x6d70, 28016, 7100), for IPv4 and IPv6 alike:
//!
//! | priority | rule | why |
//! |---|---|---|
//! | `P`    | `lookup main suppress_prefixlength 0` | LAN and other specific routes of `main` win for everyone |
//! | `P+10` | `not fwmark M lookup T`               | everything else that is not ours goes to the TUN |
//! | `P+20` | `fwmark M lookup main`                | our own (marked) packets use the physical default routes |
//! | `P+30` | `fwmark M unreachable`                | … and nothing else: no physical route → "network unreachable", never the TUN |
//!
//! Table `T` holds `default dev <tun>` (IPv4 and IPv6). Marked packets can never reach table `T`
//! (only `P+10` looks it up, and it excludes them), so they cannot loop into the TUN. Because the
//! default routes live in their own table behind a rule, they need not be split into `0/1` +
//! `128/1` (that trick is for setups that put the TUN routes into `main`).
//!
//! The nft table `inet mpbond` drops, before conntrack, TCP segments arriving on the two physical
//! interfaces for the subflow port range, so the kernel never answers them with RSTs (AF_PACKET
//! readers tap before netfilter and still see them). It also copies the fwmark into conntrack and
//! back (as wg-quick does), which together with `src_valid_mark=1` keeps strict reverse-path
//! filtering from dropping replies to mpbond's own marked sockets. The same port range goes into
//! `net.ipv4.ip_local_reserved_ports` so the kernel never hands those ports to other sockets.
//!
//! Order: sysctls and nft first, then the TUN, its routes, and the rules last (guards before the
//! rule that diverts traffic), so traffic moves to the TUN only once everything is in place.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The sysctl holding the ports the kernel never picks as ephemeral ports (IPv4 and IPv6).
pub const SYSCTL_RESERVED_PORTS: &str = "net/ipv4/ip_local_reserved_ports";
/// Lets reverse-path filtering use the packet's fwmark (restored from conntrack by the nft table).
pub const SYSCTL_SRC_VALID_MARK: &str = "net/ipv4/conf/all/src_valid_mark";
/// Every sysctl the plan may change; the caller reads their current values into [`HostState`].
pub const SYSCTLS: &[&str] = &[SYSCTL_SRC_VALID_MARK, SYSCTL_RESERVED_PORTS];

/// Name of mpbond's nft table (family `inet`).
pub const NFT_TABLE: &str = "mpbond";

/// Offsets of mpbond's rules from `routing.rule_priority`.
pub mod prio {
    /// `lookup main suppress_prefixlength 0`.
    pub const SUPPRESS_MAIN: u32 = 0;
    /// `not fwmark M lookup T`.
    pub const TO_TUN: u32 = 10;
    /// `fwmark M lookup main`.
    pub const MARKED_MAIN: u32 = 20;
    /// `fwmark M unreachable`.
    pub const MARKED_UNREACHABLE: u32 = 30;
}

/// IP version of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// What a policy routing rule does with a packet it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum RuleAction {
    /// Look the packet up in `table`; with `suppress_prefixlength`, ignore results whose prefix
    /// length is at most that (0: ignore default routes).
    Lookup {
        /// Routing table id (254 = main).
        table: u32,
        /// `suppress_prefixlength`.
        suppress_prefixlength: Option<u8>,
    },
    /// Fail the lookup with ENETUNREACH.
    Unreachable,
}

/// One `ip rule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Fixed priority.
    pub priority: u32,
    /// `fwmark M` (`invert`: `not fwmark M`); `None` matches every packet.
    pub fwmark: Option<FwmarkMatch>,
    /// Action.
    pub action: RuleAction,
}

/// The fwmark selector of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwmarkMatch {
    /// Mark value (mask 0xffffffff).
    pub mark: u32,
    /// `not fwmark`.
    pub invert: bool,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix (its family is the route's family).
    pub dst: IpNet,
    /// Routing table id.
    pub table: u32,
    /// Output device.
    pub dev: String,
}

/// One step of the plan. Every op knows its inverse ([`Op::inverse`]); inverses are idempotent
/// when applied (removing something already gone succeeds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// Write `value` to `/proc/sys/<key>`; `old` is what was there.
    Sysctl {
        /// Path under /proc/sys, with slashes.
        key: String,
        /// Value to write.
        value: String,
        /// Value before, restored by the inverse.
        old: String,
    },
    /// Load an nft script that creates table `inet <name>`.
    NftCreate {
        /// Table name (family inet).
        name: String,
        /// The script for `nft -f -`.
        script: String,
    },
    /// Delete table `inet <name>` if it exists.
    NftDelete {
        /// Table name (family inet).
        name: String,
    },
    /// Create the (non-persistent) TUN device; it lives as long as the daemon holds its fd.
    CreateTun {
        /// Device name.
        name: String,
    },
    /// Delete a link if it exists.
    DeleteLink {
        /// Device name.
        name: String,
    },
    /// Set a link's MTU. Only used on the TUN, whose deletion undoes it.
    SetMtu {
        /// Device name.
        dev: String,
        /// MTU.
        mtu: u32,
    },
    /// Add an address (IPv6 ones with `nodad`).
    AddAddr {
        /// Device name.
        dev: String,
        /// Address and prefix length.
        addr: IpNet,
    },
    /// Remove an address if present.
    DelAddr {
        /// Device name.
        dev: String,
        /// Address and prefix length.
        addr: IpNet,
    },
    /// Set a link administratively up.
    LinkUp {
        /// Device name.
        dev: String,
    },
    /// Set a link administratively down (if it still exists).
    LinkDown {
        /// Device name.
        dev: String,
    },
    /// Add a route.
    AddRoute(Route),
    /// Remove a route if present.
    DelRoute(Route),
    /// Add a policy routing rule.
    AddRule(Rule),
    /// Remove a policy routing rule if present.
    DelRule(Rule),
    /// Replace a file (the resolv.conf mpbond takes over) with `content`; `old` is what was
    /// there, put back byte for byte by the inverse.
    ReplaceFile {
        /// The file.
        path: PathBuf,
        /// What mpbond writes.
        content: String,
        /// What was there.
        old: FileBefore,
    },
    /// Put a file back as it was, if it still holds what mpbond wrote (a file rewritten since
    /// by someone else is left alone).
    RestoreFile {
        /// The file.
        path: PathBuf,
        /// What mpbond wrote.
        ours: String,
        /// What to put back.
        old: FileBefore,
    },
    /// systemd-resolved: per-link DNS servers and domains of `dev` (`resolvectl dns`/`domain`,
    /// and `default-route yes`).
    ResolvedLink {
        /// The TUN.
        dev: String,
        /// Its DNS servers (mpbond's own addresses).
        servers: Vec<IpAddr>,
        /// Its domains (`~.`: every lookup).
        domains: Vec<String>,
    },
    /// systemd-resolved: forget what was set on `dev` (`resolvectl revert`).
    ResolvedRevert {
        /// The link.
        dev: String,
    },
    /// systemd-resolved: whether `dev` is a DNS default route (`resolvectl default-route`).
    ResolvedDefaultRoute {
        /// The link.
        dev: String,
        /// The new setting.
        value: bool,
        /// The setting before.
        old: bool,
    },
}

/// A file as it was before mpbond replaced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FileBefore {
    /// There was none.
    Missing,
    /// A regular file.
    Content {
        /// Its bytes.
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symbolic link (as NetworkManager and systemd-resolved set it up).
    Symlink {
        /// Its target, as written in the link.
        target: PathBuf,
    },
}

impl fmt::Display for FileBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileBefore::Missing => f.write_str("missing"),
            FileBefore::Content { bytes, mode, .. } => write!(f, "{} bytes, mode {mode:o}", bytes.len()),
            FileBefore::Symlink { target } => write!(f, "symlink to {}", target.display()),
        }
    }
}

impl Op {
    /// The op that undoes this one, or `None` when nothing needs undoing on its own (the MTU of
    /// the TUN goes away with the TUN).
    pub fn inverse(&self) -> Option<Op> {
        Some(match self {
            Op::Sysctl { key, value, old } => Op::Sysctl {
                key: key.clone(),
                value: old.clone(),
                old: value.clone(),
            },
            Op::NftCreate { name, .. } => Op::NftDelete { name: name.clone() },
            Op::NftDelete { .. } => return None,
            Op::CreateTun { name } => Op::DeleteLink { name: name.clone() },
            Op::DeleteLink { .. } | Op::SetMtu { .. } => return None,
            Op::AddAddr { dev, addr } => Op::DelAddr {
                dev: dev.clone(),
                addr: *addr,
            },
            Op::DelAddr { .. } => return None,
            Op::LinkUp { dev } => Op::LinkDown { dev: dev.clone() },
            Op::LinkDown { .. } => return None,
            Op::AddRoute(r) => Op::DelRoute(r.clone()),
            Op::DelRoute(_) => return None,
            Op::AddRule(r) => Op::DelRule(r.clone()),
            Op::DelRule(_) => return None,
            Op::ReplaceFile { path, content, old } => Op::RestoreFile {
                path: path.clone(),
                ours: content.clone(),
                old: old.clone(),
            },
            Op::RestoreFile { .. } | Op::ResolvedRevert { .. } => return None,
            Op::ResolvedLink { dev, .. } => Op::ResolvedRevert { dev: dev.clone() },
            Op::ResolvedDefaultRoute { dev, value, old } => Op::ResolvedDefaultRoute {
                dev: dev.clone(),
                value: *old,
                old: *value,
            },
        })
    }

    /// The device an op configures, if any.
    pub fn dev(&self) -> Option<&str> {
        match self {
            Op::CreateTun { name } | Op::DeleteLink { name } => Some(name),
            Op::SetMtu { dev, .. }
            | Op::AddAddr { dev, .. }
            | Op::DelAddr { dev, .. }
            | Op::LinkUp { dev }
            | Op::LinkDown { dev } => Some(dev),
            Op::AddRoute(r) | Op::DelRoute(r) => Some(&r.dev),
            _ => None,
        }
    }
}

fn table_name(t: u32) -> String {
    match t {
        254 => "main".into(),
        253 => "default".into(),
        255 => "local".into(),
        t => t.to_string(),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "priority {}", self.priority)?;
        if let Some(m) = self.fwmark {
            if m.invert {
                f.write_str(" not")?;
            }
            write!(f, " fwmark {:#x}", m.mark)?;
        }
        match &self.action {
            RuleAction::Lookup {
                table,
                suppress_prefixlength,
            } => {
                write!(f, " lookup {}", table_name(*table))?;
                if let Some(p) = suppress_prefixlength {
                    write!(f, " suppress_prefixlength {p}")?;
                }
                Ok(())
            }
            RuleAction::Unreachable => f.write_str(" unreachable"),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        write!(f, "{dst} dev {} table {}", self.dev, table_name(self.table))
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn ip_flag(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    }
}

impl fmt::Display for Op {
    /// Renders the op as the shell command that would do the same (`ip …`, `sysctl …`, `nft …`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Sysctl { key, value, old } => {
                write!(f, "sysctl -w {}={value:?}  # was {old:?}", key.replace('/', "."))
            }
            Op::NftCreate { script, .. } => write!(f, "nft -f - <<'EOF'\n{script}EOF"),
            Op::NftDelete { name } => write!(f, "nft delete table inet {name}"),
            Op::CreateTun { name } => write!(f, "ip tuntap add dev {name} mode tun  # fd held by the daemon"),
            Op::DeleteLink { name } => write!(f, "ip link del dev {name}"),
            Op::SetMtu { dev, mtu } => write!(f, "ip link set dev {dev} mtu {mtu}"),
            Op::AddAddr { dev, addr } => {
                let nodad = if matches!(addr, IpNet::V6(_)) {
                    " nodad"
                } else {
                    ""
                };
                write!(f, "ip {} addr add {addr} dev {dev}{nodad}", ip_flag(addr))
            }
            Op::DelAddr { dev, addr } => write!(f, "ip {} addr del {addr} dev {dev}", ip_flag(addr)),
            Op::LinkUp { dev } => write!(f, "ip link set dev {dev} up"),
            Op::LinkDown { dev } => write!(f, "ip link set dev {dev} down"),
            Op::AddRoute(r) => write!(f, "ip {} route add {r}", ip_flag(&r.dst)),
            Op::DelRoute(r) => write!(f, "ip {} route del {r}", ip_flag(&r.dst)),
            Op::AddRule(r) => write!(f, "ip {} rule add {r}", r.family.flag()),
            Op::DelRule(r) => write!(f, "ip {} rule del {r}", r.family.flag()),
            Op::ReplaceFile { path, content, old } => write!(
                f,
                "write {} ({} bytes)  # was {old}",
                path.display(),
                content.len()
            ),
            Op::RestoreFile { path, old, .. } => write!(f, "restore {} ({old})", path.display()),
            Op::ResolvedLink {
                dev,
                servers,
                domains,
            } => {
                let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "resolvectl dns {dev} {}; resolvectl domain {dev} {}; resolvectl default-route {dev} yes",
                    servers.join(" "),
                    domains.join(" ")
                )
            }
            Op::ResolvedRevert { dev } => write!(f, "resolvectl revert {dev}"),
            Op::ResolvedDefaultRoute { dev, value, old } => write!(
                f,
                "resolvectl default-route {dev} {}  # was {}",
                yes_no(*value),
                yes_no(*old)
            ),
        }
    }
}

/// One network interface as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkState {
    /// Name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier / lower layer up (IFF_LOWER_UP).
    pub carrier: bool,
    /// Addresses with prefix lengths.
    pub addresses: Vec<IpNet>,
}

/// A snapshot of what the plan depends on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HostState {
    /// Every link.
    pub links: Vec<LinkState>,
    /// Priorities of the existing IPv4 rules.
    pub rule_priorities_v4: Vec<u32>,
    /// Priorities of the existing IPv6 rules.
    pub rule_priorities_v6: Vec<u32>,
    /// Number of routes already in mpbond's table (both families).
    pub table_routes: usize,
    /// Whether the nft table `inet mpbond` exists.
    pub nft_table_exists: bool,
    /// Whether the kernel has IPv6 and it is not disabled everywhere (`all.disable_ipv6=0`).
    pub ipv6_available: bool,
    /// Current value of each of [`SYSCTLS`] (trimmed).
    pub sysctls: BTreeMap<String, String>,
}

impl HostState {
    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Why no plan can be made for this host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A configured physical interface does not exist.
    #[error("{role} interface {name} not found")]
    InterfaceMissing {
        /// `primary` or `backup`.
        role: &'static str,
        /// Interface name.
        name: String,
    },
    /// A link with the TUN's name already exists (another mpbond, or a leftover).
    #[error("a link named {0} already exists (another mpbond with a different run dir?)")]
    TunExists(String),
    /// A rule already sits at one of mpbond's fixed priorities.
    #[error("an IPv{family} rule already uses priority {priority} (set routing.rule_priority elsewhere)")]
    PriorityTaken {
        /// 4 or 6.
        family: u8,
        /// The priority.
        priority: u32,
    },
    /// mpbond's routing table already holds routes.
    #[error("routing table {0} already holds routes (set routing.table elsewhere)")]
    TableInUse(u32),
    /// The nft table exists already.
    #[error(
        "nft table inet {NFT_TABLE} already exists (another mpbond with a different run dir? \
         a leftover goes with `nft delete table inet {NFT_TABLE}`)"
    )]
    NftTableExists,
    /// A sysctl the plan changes could not be read.
    #[error("sysctl {0} is not available")]
    SysctlMissing(&'static str),
    /// An interface name cannot be quoted in an nft script.
    #[error("interface name {0:?} cannot be used in an nft rule")]
    UnquotableName(String),
}

/// The ordered operations that bring mpbond up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Ops in application order.
    pub ops: Vec<Op>,
    /// Name of the TUN device.
    pub tun: String,
}

impl Plan {
    /// Ops to apply again (idempotently) when the TUN comes back up: the kernel removes routes
    /// through a link when it goes down, and IPv6 addresses too (`keep_addr_on_down=0`), but does
    /// not put them back when it returns.
    pub fn on_tun_up(&self) -> Vec<Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op, Op::AddAddr { .. } | Op::AddRoute(_)))
            .filter(|op| op.dev() == Some(self.tun.as_str()))
            .cloned()
            .collect()
    }

    /// Renders the plan as shell-like lines (the golden test format).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            let _ = writeln!(out, "{op}");
        }
        out
    }
}

/// Merges `range` into a `ip_local_reserved_ports` value (`"8080,9000-9010"`).
pub fn merge_reserved_ports(old: &str, range: &std::ops::RangeInclusive<u16>) -> String {
    let ours = format!("{}-{}", range.start(), range.end());
    let old = old.trim();
    if old.is_empty() {
        ours
    } else if old.split(',').any(|p| p.trim() == ours) {
        old.to_string()
    } else {
        format!("{old},{ours}")
    }
}

fn nft_quote(name: &str) -> Result<String, PlanError> {
    if name
        .chars()
        .any(|c| c == '"' || c == '\\' || !c.is_ascii_graphic())
    {
        return Err(PlanError::UnquotableName(name.to_string()));
    }
    Ok(format!("\"{name}\""))
}

/// The nft set of the interfaces whose kernel TCP is kept off the subflow ports (an interface
/// picked up while running is added to it: [`nft_add_uplink`]).
pub const NFT_UPLINKS: &str = "uplinks";

/// The nft script adding interface `name` to [`NFT_UPLINKS`].
pub fn nft_add_uplink(name: &str) -> Result<String, PlanError> {
    Ok(format!(
        "add element inet {NFT_TABLE} {NFT_UPLINKS} {{ {} }}\n",
        nft_quote(name)?
    ))
}

/// The nft script creating table `inet mpbond`.
pub fn nft_script(config: &Config) -> Result<String, PlanError> {
    let ifaces = config
        .used_interfaces()
        .map(|i| nft_quote(&i.name))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let ports = &config.routing.subflow_ports;
    let mark = config.routing.fwmark;
    Ok(format!(
        "table inet {NFT_TABLE} {{
\tset {NFT_UPLINKS} {{
\t\ttype ifname
\t\telements = {{ {ifaces} }}
\t}}
\tchain preraw {{
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname @{NFT_UPLINKS} tcp dport {lo}-{hi} counter drop
\t}}
\tchain premangle {{
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tct mark {mark:#x} meta mark set ct mark
\t}}
\tchain postmangle {{
\t\ttype filter hook postrouting priority mangle; policy accept;
\t\tmeta mark {mark:#x} ct mark set meta mark
\t}}
}}
",
        lo = ports.start(),
        hi = ports.end(),
    ))
}

/// The four rules of one family, in the order they are added (guards first, the rule that
/// diverts traffic into the TUN last).
fn rules(config: &Config, family: Family) -> Vec<Rule> {
    let p = config.routing.rule_priority;
    let mark = config.routing.fwmark;
    let marked = Some(FwmarkMatch { mark, invert: false });
    vec![
        Rule {
            family,
            priority: p + prio::MARKED_UNREACHABLE,
            fwmark: marked,
            action: RuleAction::Unreachable,
        },
        Rule {
            family,
            priority: p + prio::MARKED_MAIN,
            fwmark: marked,
            action: RuleAction::Lookup {
                table: 254,
                suppress_prefixlength: None,
            },
        },
        Rule {
            family,
            priority: p + prio::SUPPRESS_MAIN,
            fwmark: None,
            action: RuleAction::Lookup {
                table: 254,
                suppress_prefixlength: Some(0),
            },
        },
        Rule {
            family,
            priority: p + prio::TO_TUN,
            fwmark: Some(FwmarkMatch { mark, invert: true }),
            action: RuleAction::Lookup {
                table: config.routing.table,
                suppress_prefixlength: None,
            },
        },
    ]
}

/// Computes the ops that bring mpbond up on `host`.
pub fn plan(config: &Config, host: &HostState) -> Result<Plan, PlanError> {
    // A listed interface may appear later (the interface threads and the netlink watcher pick
    // it up); the `wifi` and `cellular` ones must be there.
    for i in config.used_interfaces().filter(|i| !i.may_be_absent) {
        if host.link(&i.name).is_none() {
            return Err(PlanError::InterfaceMissing {
                role: i.role.name(),
                name: i.name.clone(),
            });
        }
    }
    let tun = config.tun.name.clone();
    if host.link(&tun).is_some() {
        return Err(PlanError::TunExists(tun));
    }
    if host.nft_table_exists {
        return Err(PlanError::NftTableExists);
    }
    if host.table_routes > 0 {
        return Err(PlanError::TableInUse(config.routing.table));
    }
    let ipv6 = config.tun.ipv6.filter(|_| host.ipv6_available);
    let mut families = vec![Family::V4];
    if ipv6.is_some() {
        families.push(Family::V6);
    }
    for &family in &families {
        let (taken, n) = match family {
            Family::V4 => (&host.rule_priorities_v4, 4),
            Family::V6 => (&host.rule_priorities_v6, 6),
        };
        for r in rules(config, family) {
            if taken.contains(&r.priority) {
                return Err(PlanError::PriorityTaken {
                    family: n,
                    priority: r.priority,
                });
            }
        }
    }
    let sysctl = |key: &'static str| {
        host.sysctls
            .get(key)
            .map(|v| v.trim().to_string())
            .ok_or(PlanError::SysctlMissing(key))
    };

    let mut ops = Vec::new();
    let old_mark = sysctl(SYSCTL_SRC_VALID_MARK)?;
    if old_mark != "1" {
        ops.push(Op::Sysctl {
            key: SYSCTL_SRC_VALID_MARK.into(),
            value: "1".into(),
            old: old_mark,
        });
    }
    let old_ports = sysctl(SYSCTL_RESERVED_PORTS)?;
    let ports = merge_reserved_ports(&old_ports, &config.routing.subflow_ports);
    if ports != old_ports {
        ops.push(Op::Sysctl {
            key: SYSCTL_RESERVED_PORTS.into(),
            value: ports,
            old: old_ports,
        });
    }
    ops.push(Op::NftCreate {
        name: NFT_TABLE.into(),
        script: nft_script(config)?,
    });

    ops.push(Op::CreateTun { name: tun.clone() });
    ops.push(Op::SetMtu {
        dev: tun.clone(),
        mtu: config.tun.mtu,
    });
    let mut addrs = vec![IpNet::from(IpAddr::V4(config.tun.ipv4))];
    if let Some(v6) = ipv6 {
        addrs.push(IpNet::from(IpAddr::V6(v6)));
    }
    for addr in addrs {
        ops.push(Op::AddAddr {
            dev: tun.clone(),
            addr,
        });
    }
    ops.push(Op::LinkUp { dev: tun.clone() });
    for &family in &families {
        let dst = match family {
            Family::V4 => IpNet::V4(ipnet::Ipv4Net::default()),
            Family::V6 => IpNet::V6(ipnet::Ipv6Net::default()),
        };
        ops.push(Op::AddRoute(Route {
            dst,
            table: config.routing.table,
            dev: tun.clone(),
        }));
    }
    for &family in &families {
        ops.extend(rules(config, family).into_iter().map(Op::AddRule));
    }
    Ok(Plan { ops, tun })
}
