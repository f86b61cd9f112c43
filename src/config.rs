//! Configuration: the file `/etc/mpbond/mpbond.toml` (every key optional), overridden by CLI flags,
//! validated into [`Config`]. Unknown keys are rejected with their line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mpbond/mpbond.toml";

/// How traffic is spread over the Wi-Fi and cellular subflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// All data on Wi-Fi; the cellular subflow is a backup, idle but ready; switch on failure.
    #[default]
    Handover,
    /// Each segment on the lowest-latency subflow that is not failing.
    Interactive,
    /// Use both paths at once for more throughput.
    Aggregate,
    /// Every UDP datagram through a converter goes on both paths (the receiver drops the later
    /// copy); MPTCP connections schedule as in interactive mode.
    Redundant,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Handover => "handover",
            Mode::Interactive => "interactive",
            Mode::Aggregate => "aggregate",
            Mode::Redundant => "redundant",
        })
    }
}

/// What an interface is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfaceRole {
    /// Carries the traffic while it works (Ethernet, Wi-Fi); among primaries the highest
    /// priority is used first.
    Primary,
    /// Used when no primary works (cellular): in handover mode its subflows are MPTCP backups
    /// (RFC 8684 §3.3.8 flag B).
    Backup,
    /// Never used by mpbond.
    Never,
}

impl IfaceRole {
    /// As the config and `status` write it.
    pub fn name(self) -> &'static str {
        match self {
            IfaceRole::Primary => "primary",
            IfaceRole::Backup => "backup",
            IfaceRole::Never => "never",
        }
    }
}

impl fmt::Display for IfaceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Most interfaces mpbond uses at once (engine interface ids are `0..MAX_INTERFACES`).
pub const MAX_INTERFACES: usize = 8;

/// When the backup (cellular) subflow of a connection is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinPolicy {
    /// Right after the primary subflow is established, as iOS does: failover costs no handshake.
    #[default]
    Immediate,
    /// Only when the primary path fails: saves cellular data, costs one RTT at failover.
    OnDemand,
}

/// A configuration error: the file or a flag is wrong. The CLI exits with status 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// A value parsed but does not make sense.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`tun.mtu`).
        key: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// No interface was given and none could be detected.
    #[error("no {role} interface found: pass --{role} IFACE or set interfaces.{role} in the config")]
    NoInterface {
        /// `wifi` or `cellular`.
        role: &'static str,
    },
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Spreading mode.
    pub mode: Option<Mode>,
    /// Physical interfaces.
    #[serde(default)]
    pub interfaces: FileInterfaces,
    /// TUN device.
    #[serde(default)]
    pub tun: FileTun,
    /// Policy routing.
    #[serde(default)]
    pub routing: FileRouting,
    /// Subflow management.
    #[serde(default)]
    pub subflows: FileSubflows,
    /// RFC 8803 Transport Converters (`mpbond server`).
    #[serde(default)]
    pub converter: FileConverter,
    /// Who may read the status.
    #[serde(default)]
    pub status: FileStatus,
    /// Data budgets per interface role.
    #[serde(default)]
    pub budget: crate::budget::FileBudgets,
    /// mpbond's DNS forwarder.
    #[serde(default)]
    pub dns: FileDns,
    /// Flows sent on every path at once.
    #[serde(default)]
    pub redundant: crate::redundancy::FileRedundant,
}

/// How mpbond becomes the system's resolver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsBackend {
    /// systemd-resolved when it runs (and no `resolv_conf` is given), else resolv.conf.
    #[default]
    Auto,
    /// Per-link DNS on the TUN with the `~.` routing domain (`resolvectl`).
    Resolved,
    /// Replace the resolv.conf file.
    ResolvConf,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    /// Answer DNS on the TUN addresses and become the system's resolver (default true).
    pub enable: Option<bool>,
    /// `"auto"`, `"resolved"` or `"resolv-conf"`.
    pub backend: Option<DnsBackend>,
    /// The resolv.conf to take over (default `/etc/resolv.conf`; giving it selects that backend).
    pub resolv_conf: Option<PathBuf>,
    /// Resolvers per interface name, replacing what was learnt for it.
    #[serde(default)]
    pub servers: BTreeMap<String, Vec<IpAddr>>,
}

/// The DNS forwarder's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsConfig {
    /// On.
    pub enable: bool,
    /// How mpbond becomes the system's resolver.
    pub backend: DnsBackend,
    /// The resolv.conf (resolv.conf backend).
    pub resolv_conf: PathBuf,
    /// `resolv_conf` was given (so `auto` does not pick resolved).
    pub resolv_conf_explicit: bool,
    /// Resolvers per interface, replacing what was learnt.
    pub servers: BTreeMap<String, Vec<IpAddr>>,
}

/// The resolv.conf mpbond takes over by default.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enable: true,
            backend: DnsBackend::Auto,
            resolv_conf: PathBuf::from(RESOLV_CONF),
            resolv_conf_explicit: false,
            servers: BTreeMap::new(),
        }
    }
}

/// Who may read `mpbond status` (the daemon's control socket); stopping it is root's alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusReaders {
    /// Root only.
    Root,
    /// Root and the members of [`StatusConfig::group`].
    #[default]
    Group,
    /// Every local user.
    Everyone,
}

/// `[status]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileStatus {
    /// `"root"`, `"group"` or `"everyone"`.
    pub readers: Option<StatusReaders>,
    /// The group whose members may read the status (`readers = "group"`).
    pub group: Option<String>,
    /// Desktop notifications on failovers (`mpbond status --notify`, started in each desktop
    /// session).
    pub notify: Option<bool>,
}

/// Who may read the status, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusConfig {
    /// Who.
    pub readers: StatusReaders,
    /// The group, for [`StatusReaders::Group`].
    pub group: String,
}

/// The group the package creates for users who may read the status.
pub const STATUS_GROUP: &str = "mpbond";

/// `[interfaces]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileInterfaces {
    /// A primary interface (priority [`PRIORITY_WIFI`]).
    pub wifi: Option<String>,
    /// A backup interface.
    pub cellular: Option<String>,
    /// `[[interfaces.list]]`: any number of interfaces, each with a role.
    pub list: Option<Vec<FileInterface>>,
    /// Use an interface that appears while running and is detected as Ethernet, Wi-Fi or
    /// cellular (default: without a list, yes; with a list, which names them all, no).
    pub adopt_new: Option<bool>,
}

/// One `[[interfaces.list]]` entry.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileInterface {
    /// Interface name.
    pub name: String,
    /// `primary`, `backup` or `never`.
    pub role: IfaceRole,
    /// Order among interfaces of the same role, higher first (0-255; default
    /// [`PRIORITY_WIFI`] for a primary, 0 for a backup; equal ones in list order).
    pub priority: Option<u8>,
}

/// Priority of a detected Ethernet interface (before the Wi-Fi).
pub const PRIORITY_ETHERNET: u8 = 20;
/// Priority of the `wifi` interface and default of a listed primary.
pub const PRIORITY_WIFI: u8 = 10;

/// One interface of the validated config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Primary, backup or never.
    pub role: IfaceRole,
    /// Order among interfaces of the same role, higher first.
    pub priority: u8,
    /// May be absent at `up` (a `[[interfaces.list]]` entry: a USB tether or a dock plugged in
    /// later): used once it appears, let go when it vanishes. The `wifi` and `cellular`
    /// interfaces must exist at `up`.
    pub may_be_absent: bool,
}

/// `[tun]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileTun {
    /// Device name.
    pub name: Option<String>,
    /// MTU of the TUN (large: the host then hands over large segments).
    pub mtu: Option<u32>,
    /// IPv4 address of the TUN.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address of the TUN.
    pub ipv6: Option<Ipv6Addr>,
    /// Carry IPv6 at all.
    pub enable_ipv6: Option<bool>,
}

/// `[routing]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRouting {
    /// fwmark carried by mpbond's own packets.
    pub fwmark: Option<u32>,
    /// Routing table holding the default routes into the TUN.
    pub table: Option<u32>,
    /// Priority of the first of mpbond's `ip rule`s; the others follow at +10 steps.
    pub rule_priority: Option<u32>,
    /// Local port range reserved for subflows, `"61000-64999"`.
    pub subflow_ports: Option<String>,
}

/// `[subflows]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSubflows {
    /// When the cellular subflow is opened.
    pub join: Option<JoinPolicy>,
    /// How long a new connection lives before it joins its other paths (`"100ms"` by
    /// default; `"off"`: at once).
    pub join_delay: Option<String>,
    /// Ask peers for DSS checksums (RFC 8684 §3.3.1 flag A).
    pub checksums: Option<bool>,
    /// A backup subflow silent this long may have lost its NAT mapping: when it is needed it
    /// is probed and raced against a fresh join (`"15s"` by default; `"off"`).
    pub nat_idle: Option<String>,
    /// Keep-alive interval of standing backup subflows (`"off"` by default).
    pub backup_keepalive: Option<String>,
    /// Send subflow data as super-segments the kernel cuts (GSO).
    pub super_segments: Option<bool>,
}

/// `[converter]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConverter {
    /// Converters, `"HOST:PORT"` (port 5124 when omitted), tried in this order.
    pub addresses: Option<Vec<String>>,
    /// The client key file written by `mpbond server --gen-key`.
    pub key_file: Option<PathBuf>,
}

/// Flags given on the command line; they override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--resolv-conf`: the resolv.conf to take over.
    pub resolv_conf: Option<PathBuf>,
    /// `--no-dns`: no DNS forwarder.
    pub no_dns: bool,
    /// `--budget-file`: where the data budget's counts are kept.
    pub budget_file: Option<PathBuf>,
    /// `--wifi`.
    pub wifi: Option<String>,
    /// `--cellular`.
    pub cellular: Option<String>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--converter` (repeatable); replaces the file's list when given.
    pub converters: Vec<String>,
    /// `--converter-key-file`.
    pub converter_key_file: Option<PathBuf>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Spreading mode.
    pub mode: Mode,
    /// The interfaces, in the order of their engine ids (`never` ones included: the daemon
    /// leaves them alone; see [`Config::used_interfaces`]).
    pub interfaces: Vec<Interface>,
    /// An interface that appears while running and is detected as Ethernet, Wi-Fi or cellular
    /// is used too (`[interfaces] adopt_new`; default: when there is no list).
    pub adopt_new: bool,
    /// TUN device.
    pub tun: TunConfig,
    /// Policy routing.
    pub routing: RoutingConfig,
    /// When the backup subflow is opened.
    pub join: JoinPolicy,
    /// A new connection joins its other paths once it lived this long, or at once when its
    /// only subflow fails ([`crate::mptcp::MptcpConfig::join_delay`]); zero: at once.
    pub join_delay: Duration,
    /// Ask peers for DSS checksums (peers that require them are accepted either way).
    pub checksums: bool,
    /// A backup subflow idle this long is probed and raced against a fresh join when it is
    /// needed ([`crate::mptcp::MptcpConfig::nat_idle`]); zero: off.
    pub nat_idle: Duration,
    /// Keep-alive interval of standing backups
    /// ([`crate::mptcp::MptcpConfig::backup_keepalive`]); zero: off.
    pub backup_keepalive: Duration,
    /// Subflow data goes to the interfaces as super-segments of up to 64 KB that the kernel (or
    /// the NIC) cuts into segments (GSO/TSO). Default on.
    pub super_segments: bool,
    /// RFC 8803 Transport Converters that carry flows to servers without MPTCP.
    pub converter: Option<ConverterConfig>,
    /// Who may read the status.
    pub status: StatusConfig,
    /// Data budgets.
    pub budget: BudgetConfig,
    /// mpbond's DNS forwarder.
    pub dns: DnsConfig,
    /// Flows sent on every path at once.
    pub redundant: crate::redundancy::Redundancy,
}

/// `[budget]` resolved: limits by interface role, and where the counts are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetConfig {
    /// Wi-Fi's limits, if any.
    #[serde(skip)]
    pub wifi: Option<crate::budget::Limits>,
    /// Cellular's limits, if any.
    #[serde(skip)]
    pub cellular: Option<crate::budget::Limits>,
    /// The state file.
    pub state_file: PathBuf,
}

impl BudgetConfig {
    /// The limits of an interface of `role`: `[budget.wifi]` for each primary, `[budget.cellular]`
    /// for each backup (and for `never`, which mpbond does not use) — the same for the
    /// interfaces present at `up` and those picked up while running.
    pub fn limits_for(&self, role: IfaceRole) -> Option<crate::budget::Limits> {
        match role {
            IfaceRole::Primary => self.wifi,
            IfaceRole::Backup | IfaceRole::Never => self.cellular,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            wifi: None,
            cellular: None,
            state_file: PathBuf::from(crate::budget::DEFAULT_STATE_FILE),
        }
    }
}

/// The converters a laptop uses (`[converter]`, `--converter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConverterConfig {
    /// Their addresses, in order of preference.
    pub addresses: Vec<SocketAddr>,
    /// The client key proving this laptop may use them.
    pub key_file: PathBuf,
}

/// The TCP port of a Transport Converter when none is given (the port RFC 8803 tools use).
pub const CONVERTER_PORT: u16 = 5124;

/// Parses a converter address: `IP`, `IP:PORT`, `[IPv6]:PORT`, `HOST` or `HOST:PORT` (a name is
/// resolved now, once; every address it has is used). The port defaults to [`CONVERTER_PORT`].
pub fn parse_converter_addr(s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, CONVERTER_PORT)]);
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?),
        None => (s, CONVERTER_PORT),
    };
    let bad_name = host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if bad_name || port == 0 {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} has no address"));
    }
    Ok(addrs)
}

fn resolve_converter(file: FileConverter, flags: &Overrides) -> Result<Option<ConverterConfig>, ConfigError> {
    let names = if flags.converters.is_empty() {
        file.addresses.unwrap_or_default()
    } else {
        flags.converters.clone()
    };
    let key_file = flags.converter_key_file.clone().or(file.key_file);
    let invalid = |reason: String| ConfigError::Invalid {
        key: "converter.addresses",
        reason,
    };
    let mut addresses = Vec::new();
    for n in &names {
        for a in parse_converter_addr(n).map_err(invalid)? {
            if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(invalid(format!("{a} cannot be a converter")));
            }
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
    }
    match (addresses.is_empty(), key_file) {
        (true, None) => Ok(None),
        (false, Some(key_file)) => Ok(Some(ConverterConfig { addresses, key_file })),
        (false, None) => Err(ConfigError::Invalid {
            key: "converter.key_file",
            reason: "a converter needs its client key: pass --converter-key-file FILE \
                     (written by `mpbond server --gen-key FILE`)"
                .into(),
        }),
        (true, Some(_)) => Err(invalid(
            "a converter key file was given but no converter: pass --converter HOST:PORT".into(),
        )),
    }
}

/// TUN device settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunConfig {
    /// Device name (≤ 15 bytes).
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// IPv4 address (/32).
    pub ipv4: Ipv4Addr,
    /// IPv6 address (/128), `None` when IPv6 is disabled.
    pub ipv6: Option<Ipv6Addr>,
}

/// Policy routing settings (wg-quick / Tailscale style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingConfig {
    /// fwmark on mpbond's own sockets.
    pub fwmark: u32,
    /// Table with the default routes into the TUN.
    pub table: u32,
    /// Priority of the first rule.
    pub rule_priority: u32,
    /// Local ports used by subflows (reserved from the kernel).
    pub subflow_ports: RangeInclusive<u16>,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: "mpbond0".into(),
            mtu: 65000,
            // Top of the shared address space (RFC 6598): never a LAN, rarely used by carriers,
            // and never on the wire: the engine terminates every flow.
            ipv4: Ipv4Addr::new(100, 127, 77, 1),
            // A ULA (RFC 4193) with a fixed global ID spelling "mpbond".
            ipv6: Some(Ipv6Addr::new(0xfd6d, 0x7062, 0x6f6e, 0x6400, 0, 0, 0, 1)),
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            fwmark: 0x6d70,
            table: 28016,
            rule_priority: 7100,
            subflow_ports: 61000..=64999,
        }
    }
}

impl FileConfig {
    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        parse_toml(text, path)
    }

    /// Reads and parses the file. A missing file at the default path is an empty config; a missing
    /// file that was asked for explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => FileConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(FileConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// Parses TOML text into `T` (a `deny_unknown_fields` file schema); errors carry the line and
/// column of the offending key or value. `path` is only used in error messages.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().replace('\n', " ").trim().to_owned(),
        }
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses `"61000-64999"`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
    let lo: u16 = lo.trim().parse().map_err(|_| format!("bad port {lo:?}"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| format!("bad port {hi:?}"))?;
    if lo < 1024 || hi < lo {
        return Err(format!(
            "range {lo}-{hi} must be within 1024-65535 and LOW ≤ HIGH"
        ));
    }
    if u32::from(hi) - u32::from(lo) + 1 < 64 {
        return Err(format!("range {lo}-{hi} holds fewer than 64 ports"));
    }
    Ok(lo..=hi)
}

/// A Linux interface name: 1–15 bytes, no `/`, whitespace or `:`.
pub fn validate_ifname(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("{name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"),
        });
    }
    Ok(())
}

fn resolve_dns(file: FileDns, flags: &Overrides, ifaces: &[&str]) -> Result<DnsConfig, ConfigError> {
    for (name, list) in &file.servers {
        if !ifaces.contains(&name.as_str()) {
            return Err(ConfigError::Invalid {
                key: "dns.servers",
                reason: format!("{name:?} is not one of the interfaces ({})", ifaces.join(", ")),
            });
        }
        if let Some(a) = list
            .iter()
            .find(|a| a.is_loopback() || a.is_unspecified() || a.is_multicast())
        {
            return Err(ConfigError::Invalid {
                key: "dns.servers",
                reason: format!("{a} cannot be reached over {name}"),
            });
        }
    }
    let explicit = flags.resolv_conf.clone().or(file.resolv_conf);
    let backend = match (&explicit, file.backend) {
        (Some(_), Some(DnsBackend::Resolved)) => {
            return Err(ConfigError::Invalid {
                key: "dns.resolv_conf",
                reason: "a resolv.conf path is for the resolv-conf backend, not resolved".into(),
            });
        }
        (Some(_), _) => DnsBackend::ResolvConf,
        (None, b) => b.unwrap_or_default(),
    };
    Ok(DnsConfig {
        enable: !flags.no_dns && file.enable.unwrap_or(true),
        backend,
        resolv_conf_explicit: explicit.is_some(),
        resolv_conf: explicit.unwrap_or_else(|| PathBuf::from(RESOLV_CONF)),
        servers: file.servers,
    })
}

fn resolve_status(file: FileStatus) -> Result<StatusConfig, ConfigError> {
    let group = file.group.unwrap_or_else(|| STATUS_GROUP.to_owned());
    // A POSIX portable name (useradd's rule): what getgrnam can be asked for.
    let portable = !group.is_empty()
        && group.len() <= 32
        && !group.starts_with('-')
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !portable {
        return Err(ConfigError::Invalid {
            key: "status.group",
            reason: format!("{group:?} is not a group name"),
        });
    }
    Ok(StatusConfig {
        readers: file.readers.unwrap_or_default(),
        group,
    })
}

/// The interfaces from `[interfaces]` and the flags: `wifi` (or `--wifi`) is a primary of
/// priority [`PRIORITY_WIFI`], `cellular` (or `--cellular`) a backup, then the list entries.
/// Without a list, a Wi-Fi and a cellular interface not named are detected (`detect`), and,
/// when the Wi-Fi was not named, an Ethernet interface too (a primary of priority
/// [`PRIORITY_ETHERNET`]); a Wi-Fi (or Ethernet) and a cellular interface are then required.
/// With a list, nothing is detected; at least one primary is required.
fn resolve_interfaces(
    file: FileInterfaces,
    flags: &Overrides,
    detect: &dyn Fn(crate::cli::ifdetect::Role) -> Option<String>,
) -> Result<Vec<Interface>, ConfigError> {
    use crate::cli::ifdetect::Role;
    let wifi_named = flags.wifi.clone().or(file.wifi);
    let cellular_named = flags.cellular.clone().or(file.cellular);
    let list = file.list.unwrap_or_default();
    let entry = |name: String, role, priority| Interface {
        name,
        role,
        priority,
        may_be_absent: false,
    };
    let mut out = Vec::new();
    if list.is_empty() {
        let ethernet = wifi_named.is_none().then(|| detect(Role::Ethernet)).flatten();
        let wifi = wifi_named.clone().or_else(|| detect(Role::Wifi));
        if wifi.is_none() && ethernet.is_none() {
            return Err(ConfigError::NoInterface { role: "wifi" });
        }
        let cellular = cellular_named
            .or_else(|| detect(Role::Cellular))
            .ok_or(ConfigError::NoInterface { role: "cellular" })?;
        if let Some(w) = &wifi {
            validate_ifname("interfaces.wifi", w)?;
        }
        validate_ifname("interfaces.cellular", &cellular)?;
        if wifi.as_ref() == Some(&cellular) {
            return Err(ConfigError::Invalid {
                key: "interfaces",
                reason: format!("wifi and cellular are both {cellular:?}; they must be two interfaces"),
            });
        }
        out.extend(wifi.map(|w| entry(w, IfaceRole::Primary, PRIORITY_WIFI)));
        out.push(entry(cellular, IfaceRole::Backup, 0));
        out.extend(
            ethernet
                .filter(|e| out.iter().all(|i| &i.name != e))
                .map(|e| entry(e, IfaceRole::Primary, PRIORITY_ETHERNET)),
        );
        return Ok(out);
    }
    out.extend(wifi_named.map(|w| entry(w, IfaceRole::Primary, PRIORITY_WIFI)));
    out.extend(cellular_named.map(|c| entry(c, IfaceRole::Backup, 0)));
    for e in list {
        let default = match e.role {
            IfaceRole::Primary => PRIORITY_WIFI,
            IfaceRole::Backup | IfaceRole::Never => 0,
        };
        out.push(Interface {
            may_be_absent: true,
            ..entry(e.name, e.role, e.priority.unwrap_or(default))
        });
    }
    for (k, i) in out.iter().enumerate() {
        validate_ifname("interfaces.list.name", &i.name)?;
        if out[..k].iter().any(|o| o.name == i.name) {
            return Err(ConfigError::Invalid {
                key: "interfaces",
                reason: format!("{:?} is named twice", i.name),
            });
        }
    }
    let used = out.iter().filter(|i| i.role != IfaceRole::Never).count();
    if used > MAX_INTERFACES {
        return Err(ConfigError::Invalid {
            key: "interfaces",
            reason: format!("{used} interfaces to use; at most {MAX_INTERFACES}"),
        });
    }
    if !out.iter().any(|i| i.role == IfaceRole::Primary) {
        return Err(ConfigError::Invalid {
            key: "interfaces",
            reason: "no primary interface (give an entry role = \"primary\", or wifi = \"...\")".into(),
        });
    }
    Ok(out)
}

impl Config {
    /// The interfaces mpbond uses (not `never`), in the order of their engine ids.
    pub fn used_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| i.role != IfaceRole::Never)
    }

    /// Merges the file and the flags, detects missing interfaces through `detect`, and validates.
    pub fn resolve(
        file: FileConfig,
        flags: &Overrides,
        detect: &dyn Fn(crate::cli::ifdetect::Role) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let defaults_tun = TunConfig::default();
        let defaults_routing = RoutingConfig::default();

        // A docked laptop's Ethernet, a tether plugged in later: used without a restart unless
        // the list names every interface (or `adopt_new = false`).
        let adopt_new = file
            .interfaces
            .adopt_new
            .unwrap_or(file.interfaces.list.is_none());
        let interfaces = resolve_interfaces(file.interfaces, flags, detect)?;
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();

        let name = file.tun.name.unwrap_or(defaults_tun.name);
        validate_ifname("tun.name", &name)?;
        if names.contains(&name.as_str()) {
            return Err(ConfigError::Invalid {
                key: "tun.name",
                reason: format!("{name:?} is also a physical interface"),
            });
        }
        let mtu = file.tun.mtu.unwrap_or(defaults_tun.mtu);
        if !(1280..=65535).contains(&mtu) {
            return Err(ConfigError::Invalid {
                key: "tun.mtu",
                reason: format!("{mtu} is outside 1280-65535"),
            });
        }
        let ipv4 = file.tun.ipv4.unwrap_or(defaults_tun.ipv4);
        if ipv4.is_unspecified() || ipv4.is_multicast() || ipv4.is_broadcast() || ipv4.is_loopback() {
            return Err(ConfigError::Invalid {
                key: "tun.ipv4",
                reason: format!("{ipv4} cannot be a host address"),
            });
        }
        let ipv6 = if file.tun.enable_ipv6.unwrap_or(true) {
            let a = file.tun.ipv6.or(defaults_tun.ipv6);
            if let Some(a) = a
                && (a.is_unspecified() || a.is_multicast() || a.is_loopback())
            {
                return Err(ConfigError::Invalid {
                    key: "tun.ipv6",
                    reason: format!("{a} cannot be a host address"),
                });
            }
            a
        } else {
            None
        };

        let fwmark = file.routing.fwmark.unwrap_or(defaults_routing.fwmark);
        if fwmark == 0 {
            return Err(ConfigError::Invalid {
                key: "routing.fwmark",
                reason: "must not be 0".into(),
            });
        }
        let table = file.routing.table.unwrap_or(defaults_routing.table);
        // 253-255 are default/main/local; 0 is unspec.
        if table == 0 || (253..=255).contains(&table) {
            return Err(ConfigError::Invalid {
                key: "routing.table",
                reason: format!("{table} is reserved by the kernel (0, 253, 254, 255)"),
            });
        }
        let rule_priority = file
            .routing
            .rule_priority
            .unwrap_or(defaults_routing.rule_priority);
        if rule_priority == 0 || rule_priority > 32000 {
            return Err(ConfigError::Invalid {
                key: "routing.rule_priority",
                reason: format!(
                    "{rule_priority} must be within 1-32000 (before the main table's rule at 32766)"
                ),
            });
        }
        let subflow_ports = match file.routing.subflow_ports {
            Some(s) => parse_port_range(&s).map_err(|reason| ConfigError::Invalid {
                key: "routing.subflow_ports",
                reason,
            })?,
            None => defaults_routing.subflow_ports,
        };

        let dns = resolve_dns(file.dns, flags, &names)?;
        let mode = flags.mode.or(file.mode).unwrap_or_default();
        let redundant = crate::redundancy::Redundancy::resolve(&file.redundant, mode == Mode::Redundant)?;
        Ok(Config {
            mode,
            redundant,
            interfaces,
            adopt_new,
            tun: TunConfig {
                name,
                mtu,
                ipv4,
                ipv6,
            },
            routing: RoutingConfig {
                fwmark,
                table,
                rule_priority,
                subflow_ports,
            },
            join: file.subflows.join.unwrap_or_default(),
            join_delay: match file.subflows.join_delay.as_deref() {
                Some(s) => parse_duration(s).map_err(|reason| ConfigError::Invalid {
                    key: "subflows.join_delay",
                    reason,
                })?,
                // Aggregate and redundant modes use every path from the start: a copy or a
                // share of each write goes on the other subflow, so it joins at once.
                None if matches!(mode, Mode::Aggregate | Mode::Redundant) => Duration::ZERO,
                None => crate::mptcp::DEFAULT_JOIN_DELAY,
            },
            checksums: file.subflows.checksums.unwrap_or(false),
            nat_idle: match file.subflows.nat_idle.as_deref() {
                Some(s) => parse_duration(s).map_err(|reason| ConfigError::Invalid {
                    key: "subflows.nat_idle",
                    reason,
                })?,
                None => crate::mptcp::DEFAULT_NAT_IDLE,
            },
            backup_keepalive: match file.subflows.backup_keepalive.as_deref() {
                Some(s) => parse_duration(s).map_err(|reason| ConfigError::Invalid {
                    key: "subflows.backup_keepalive",
                    reason,
                })?,
                None => Duration::ZERO,
            },
            super_segments: file.subflows.super_segments.unwrap_or(true),
            converter: resolve_converter(file.converter, flags)?,
            status: resolve_status(file.status)?,
            budget: BudgetConfig {
                wifi: file
                    .budget
                    .wifi
                    .as_ref()
                    .map(|b| crate::budget::Limits::resolve(b, "budget.wifi"))
                    .transpose()?,
                cellular: file
                    .budget
                    .cellular
                    .as_ref()
                    .map(|b| crate::budget::Limits::resolve(b, "budget.cellular"))
                    .transpose()?,
                state_file: flags
                    .budget_file
                    .clone()
                    .or(file.budget.state_file)
                    .unwrap_or_else(|| PathBuf::from(crate::budget::DEFAULT_STATE_FILE)),
            },
            dns,
        })
    }
}

/// A duration as written in the config: `"25s"`, `"500ms"`, `"2m"`, or `"off"` / `"0"` (zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "off" || t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"25s\", \"500ms\" or \"off\""))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        _ => None,
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a duration like \"25s\", \"500ms\" or \"off\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ifdetect::Role;

    fn none(_: Role) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("t.toml"))
    }

    fn flags(wifi: &str, cell: &str) -> Overrides {
        Overrides {
            wifi: Some(wifi.into()),
            cellular: Some(cell.into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::resolve(parse("").unwrap(), &flags("wlan0", "wwan0"), &none).unwrap();
        assert_eq!(c.mode, Mode::Handover);
        assert_eq!(c.tun, TunConfig::default());
        assert_eq!(c.routing, RoutingConfig::default());
        assert_eq!(c.join, JoinPolicy::Immediate);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
mode = "aggregate"
[interfaces]
wifi = "wlp2s0"
cellular = "wwan0"
[tun]
name = "mp0"
mtu = 9000
ipv4 = "100.64.1.1"
ipv6 = "fd00::1"
[routing]
fwmark = 4660
table = 100
rule_priority = 5000
subflow_ports = "40000-40999"
[subflows]
join = "on-demand"
"#;
        let c = Config::resolve(parse(text).unwrap(), &Overrides::default(), &none).unwrap();
        assert_eq!(c.mode, Mode::Aggregate);
        assert_eq!(c.interfaces[0].name, "wlp2s0");
        assert_eq!(c.tun.mtu, 9000);
        assert_eq!(c.tun.ipv6, Some("fd00::1".parse().unwrap()));
        assert_eq!(c.routing.subflow_ports, 40000..=40999);
        assert_eq!(c.join, JoinPolicy::OnDemand);
        assert_eq!(c.nat_idle, crate::mptcp::DEFAULT_NAT_IDLE);
        assert_eq!(c.backup_keepalive, Duration::ZERO);
        // Aggregate mode uses both paths from the start: it joins at once unless told otherwise.
        assert_eq!(c.join_delay, Duration::ZERO);
        for (mode, delay) in [
            ("handover", crate::mptcp::DEFAULT_JOIN_DELAY),
            ("interactive", crate::mptcp::DEFAULT_JOIN_DELAY),
            ("redundant", Duration::ZERO),
        ] {
            let text = format!("mode = \"{mode}\"\n");
            assert_eq!(
                Config::resolve(parse(&text).unwrap(), &flags("a", "b"), &none)
                    .unwrap()
                    .join_delay,
                delay
            );
        }
        let text = "mode = \"redundant\"\n[subflows]\njoin_delay = \"50ms\"\n";
        assert_eq!(
            Config::resolve(parse(text).unwrap(), &flags("a", "b"), &none)
                .unwrap()
                .join_delay,
            Duration::from_millis(50)
        );
    }

    #[test]
    fn standby_durations_parse_and_bad_ones_are_one_line_errors() {
        let text = "[subflows]\nnat_idle = \"3s\"\nbackup_keepalive = \"500ms\"\njoin_delay = \"20ms\"\n";
        let c = Config::resolve(parse(text).unwrap(), &flags("a", "b"), &none).unwrap();
        assert_eq!(c.nat_idle, Duration::from_secs(3));
        assert_eq!(c.backup_keepalive, Duration::from_millis(500));
        assert_eq!(c.join_delay, Duration::from_millis(20));
        let off = "[subflows]\nnat_idle = \"off\"\njoin_delay = \"off\"\n";
        let c = Config::resolve(parse(off).unwrap(), &flags("a", "b"), &none).unwrap();
        assert_eq!(c.nat_idle, Duration::ZERO);
        assert_eq!(c.join_delay, Duration::ZERO);
        for key in ["nat_idle", "join_delay"] {
            for bad in ["3 parsecs", "s", "-1s", "99999999999999999999m"] {
                let text = format!("[subflows]\n{key} = \"{bad}\"\n");
                let e = Config::resolve(parse(&text).unwrap(), &flags("a", "b"), &none).unwrap_err();
                assert!(e.to_string().contains(&format!("subflows.{key}")), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn flags_override_file() {
        let file = parse("mode = \"aggregate\"\n[interfaces]\nwifi = \"a\"\ncellular = \"b\"\n").unwrap();
        let o = Overrides {
            wifi: Some("c".into()),
            cellular: None,
            mode: Some(Mode::Interactive),
            ..Overrides::default()
        };
        let c = Config::resolve(file, &o, &none).unwrap();
        assert_eq!(
            (
                c.interfaces[0].name.as_str(),
                c.interfaces[1].name.as_str(),
                c.mode
            ),
            ("c", "b", Mode::Interactive)
        );
    }

    #[test]
    fn unknown_key_reports_line_and_column() {
        let err = parse("mode = \"handover\"\n[tun]\n  mtux = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("t.toml:3:3: "), "{msg}");
        assert!(msg.contains("mtux"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn bad_values_are_rejected() {
        for (text, key) in [
            ("mode = \"fast\"", "t.toml:1:"),
            ("[tun]\nmtu = 100", "tun.mtu"),
            ("[tun]\nmtu = \"big\"", "t.toml:2:"),
            ("[tun]\nname = \"a/b\"", "tun.name"),
            ("[tun]\nipv4 = \"0.0.0.0\"", "tun.ipv4"),
            ("[tun]\nipv4 = \"1.2.3\"", "t.toml:2:"),
            ("[routing]\ntable = 254", "routing.table"),
            ("[routing]\nfwmark = 0", "routing.fwmark"),
            ("[routing]\nrule_priority = 40000", "routing.rule_priority"),
            ("[routing]\nsubflow_ports = \"9-8\"", "routing.subflow_ports"),
            (
                "[routing]\nsubflow_ports = \"60000-60010\"",
                "routing.subflow_ports",
            ),
            ("[subflows]\njoin = \"later\"", "t.toml:2:"),
        ] {
            let r = parse(text).and_then(|f| Config::resolve(f, &flags("w", "c"), &none));
            let msg = r.expect_err(text).to_string();
            assert!(msg.contains(key), "{text:?} gave {msg:?}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }

    #[test]
    fn interfaces_must_be_distinct_and_present() {
        let e = Config::resolve(FileConfig::default(), &flags("x", "x"), &none).unwrap_err();
        assert!(e.to_string().contains("both"));
        let e = Config::resolve(FileConfig::default(), &Overrides::default(), &none).unwrap_err();
        assert!(e.to_string().contains("no wifi interface"));
        let detect = |r: Role| match r {
            Role::Wifi => Some("wlp1".to_string()),
            Role::Cellular => Some("wwan9".to_string()),
            Role::Ethernet => None,
        };
        let c = Config::resolve(FileConfig::default(), &Overrides::default(), &detect).unwrap();
        assert_eq!(
            roles(&c),
            [
                ("wlp1", IfaceRole::Primary, PRIORITY_WIFI),
                ("wwan9", IfaceRole::Backup, 0)
            ]
        );
    }

    fn roles(c: &Config) -> Vec<(&str, IfaceRole, u8)> {
        c.interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.role, i.priority))
            .collect()
    }

    #[test]
    fn detection_adds_an_ethernet_before_the_wifi_unless_the_wifi_is_named() {
        let detect = |r: Role| {
            Some(match r {
                Role::Wifi => "wlp1".to_string(),
                Role::Cellular => "wwan9".to_string(),
                Role::Ethernet => "enp0s31f6".to_string(),
            })
        };
        let c = Config::resolve(FileConfig::default(), &Overrides::default(), &detect).unwrap();
        assert_eq!(
            roles(&c),
            [
                ("wlp1", IfaceRole::Primary, PRIORITY_WIFI),
                ("wwan9", IfaceRole::Backup, 0),
                ("enp0s31f6", IfaceRole::Primary, PRIORITY_ETHERNET),
            ]
        );
        let named = Overrides {
            wifi: Some("wlan7".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(FileConfig::default(), &named, &detect).unwrap();
        assert_eq!(c.interfaces.len(), 2, "{:?}", c.interfaces);
        // A desktop with Ethernet and a modem, no Wi-Fi.
        let no_wifi = |r: Role| (r != Role::Wifi).then(|| detect(r)).flatten();
        let c = Config::resolve(FileConfig::default(), &Overrides::default(), &no_wifi).unwrap();
        assert_eq!(
            roles(&c),
            [
                ("wwan9", IfaceRole::Backup, 0),
                ("enp0s31f6", IfaceRole::Primary, PRIORITY_ETHERNET)
            ]
        );
    }

    #[test]
    fn the_list_form_gives_any_number_of_interfaces_with_roles() {
        let text = r#"
[interfaces]
cellular = "wwan0"

[[interfaces.list]]
name = "eth0"
role = "primary"
priority = 20

[[interfaces.list]]
name = "wlan0"
role = "primary"

[[interfaces.list]]
name = "wwan1"
role = "backup"
priority = 5

[[interfaces.list]]
name = "docker0"
role = "never"
"#;
        let c = Config::resolve(parse(text).unwrap(), &Overrides::default(), &none).unwrap();
        assert_eq!(
            roles(&c),
            [
                ("wwan0", IfaceRole::Backup, 0),
                ("eth0", IfaceRole::Primary, 20),
                ("wlan0", IfaceRole::Primary, PRIORITY_WIFI),
                ("wwan1", IfaceRole::Backup, 5),
                ("docker0", IfaceRole::Never, 0),
            ]
        );
        let used: Vec<&str> = c.used_interfaces().map(|i| i.name.as_str()).collect();
        assert_eq!(used, ["wwan0", "eth0", "wlan0", "wwan1"]);
        // --wifi and --cellular add to the list.
        let c = Config::resolve(parse(text).unwrap(), &flags("wlp9", "wwan8"), &none).unwrap();
        assert_eq!(
            roles(&c)[..2],
            [("wlp9", IfaceRole::Primary, 10), ("wwan8", IfaceRole::Backup, 0)]
        );
    }

    #[test]
    fn interfaces_that_appear_later_are_adopted_unless_a_list_names_them_all() {
        let adopt =
            |text: &str, f: &Overrides| Config::resolve(parse(text).unwrap(), f, &none).unwrap().adopt_new;
        let list = "[[interfaces.list]]\nname = \"wlan0\"\nrole = \"primary\"\n";
        // Both named on the command line: a dock's Ethernet is still picked up.
        assert!(adopt("", &flags("wlan0", "wwan0")));
        assert!(adopt(
            "[interfaces]\nwifi = \"wlan0\"\ncellular = \"wwan0\"\n",
            &Overrides::default()
        ));
        assert!(!adopt(list, &Overrides::default()));
        assert!(adopt(
            &format!("[interfaces]\nadopt_new = true\n{list}"),
            &Overrides::default()
        ));
        assert!(!adopt(
            "[interfaces]\nadopt_new = false\n",
            &flags("wlan0", "wwan0")
        ));
    }

    #[test]
    fn bad_interface_lists_are_one_line_errors() {
        let entry =
            |name: &str, role: &str| format!("[[interfaces.list]]\nname = \"{name}\"\nrole = \"{role}\"\n");
        let cases = [
            (entry("eth0", "main"), "unknown variant `main`"),
            (
                "[[interfaces.list]]\nname = \"eth0\"\n".to_string(),
                "missing field `role`",
            ),
            (
                entry("eth0", "primary") + "priority = 300\n",
                "4:12: invalid value: integer `300`",
            ),
            (
                entry("eth0", "primary") + &entry("eth0", "backup"),
                "\"eth0\" is named twice",
            ),
            (entry("wwan0", "backup"), "no primary interface"),
            (entry("a/b", "primary"), "not a valid interface name"),
        ];
        for (text, want) in cases {
            let msg = match parse(&text) {
                Err(e) => e.to_string(),
                Ok(f) => Config::resolve(f, &Overrides::default(), &none)
                    .unwrap_err()
                    .to_string(),
            };
            assert!(msg.contains(want), "{text:?} gave {msg:?}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
        let many: String = (0..=MAX_INTERFACES)
            .map(|i| entry(&format!("eth{i}"), "primary"))
            .collect();
        let e = Config::resolve(parse(&many).unwrap(), &Overrides::default(), &none).unwrap_err();
        assert!(e.to_string().contains("at most 8"), "{e}");
    }

    #[test]
    fn converters_from_file_and_flags() {
        let text = "[converter]\naddresses = [\"198.18.9.1\", \"[fd00::9]:6000\", \"198.18.9.2:7000\"]\nkey_file = \"/k\"\n";
        let c = Config::resolve(parse(text).unwrap(), &flags("a", "b"), &none).unwrap();
        let conv = c.converter.unwrap();
        let want: Vec<SocketAddr> = ["198.18.9.1:5124", "[fd00::9]:6000", "198.18.9.2:7000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(conv.addresses, want);
        assert_eq!(conv.key_file, PathBuf::from("/k"));
        // Flags replace the file's list and key.
        let mut o = flags("a", "b");
        o.converters = vec!["198.18.9.7:1".into()];
        o.converter_key_file = Some("/other".into());
        let c = Config::resolve(parse(text).unwrap(), &o, &none).unwrap();
        let conv = c.converter.unwrap();
        assert_eq!(
            conv.addresses,
            vec!["198.18.9.7:1".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(conv.key_file, PathBuf::from("/other"));
        // None configured: none used.
        let c = Config::resolve(FileConfig::default(), &flags("a", "b"), &none).unwrap();
        assert_eq!(c.converter, None);
    }

    #[test]
    fn bad_converters_are_rejected() {
        for (conv, key, want) in [
            ("198.18.9.1", None, "converter.key_file"),
            ("", Some("/k"), "converter.addresses"),
            ("198.18.9.1:99999", Some("/k"), "converter.addresses"),
            ("bad name!", Some("/k"), "converter.addresses"),
            ("0.0.0.0:5124", Some("/k"), "converter.addresses"),
            ("224.0.0.1", Some("/k"), "converter.addresses"),
        ] {
            let mut o = flags("a", "b");
            if !conv.is_empty() {
                o.converters = vec![conv.into()];
            }
            o.converter_key_file = key.map(PathBuf::from);
            let msg = Config::resolve(FileConfig::default(), &o, &none)
                .expect_err(conv)
                .to_string();
            assert!(msg.contains(want), "{conv:?} gave {msg:?}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }

    #[test]
    fn ipv6_can_be_disabled() {
        let c = Config::resolve(
            parse("[tun]\nenable_ipv6 = false").unwrap(),
            &flags("a", "b"),
            &none,
        )
        .unwrap();
        assert_eq!(c.tun.ipv6, None);
    }

    #[test]
    fn status_readers_and_group_are_checked() {
        let resolve = |text: &str| Config::resolve(parse(text).unwrap(), &flags("wlan0", "wwan0"), &none);
        let c = resolve("[status]\nreaders = \"everyone\"\n").unwrap();
        assert_eq!(c.status.readers, StatusReaders::Everyone);
        assert_eq!(c.status.group, STATUS_GROUP);
        let e = resolve("[status]\ngroup = \"-rf\"\n").unwrap_err().to_string();
        assert!(e.contains("status.group"), "{e}");
        let e = parse("[status]\nreaders = \"all\"\n").unwrap_err().to_string();
        assert!(e.contains("t.toml:2:"), "{e}");
    }

    #[test]
    fn dns_section_is_checked() {
        let resolve = |text: &str, f: &Overrides| Config::resolve(parse(text).unwrap(), f, &none);
        let f = flags("wlan0", "wwan0");
        let c = resolve("", &f).unwrap();
        assert!(c.dns.enable);
        assert_eq!(
            (c.dns.backend, c.dns.resolv_conf_explicit),
            (DnsBackend::Auto, false)
        );
        assert_eq!(c.dns.resolv_conf, Path::new(RESOLV_CONF));
        let c = resolve(
            "[dns]\nresolv_conf = \"/tmp/r\"\n[dns.servers]\nwwan0 = [\"10.0.0.1\"]\n",
            &f,
        )
        .unwrap();
        assert_eq!(
            (c.dns.backend, c.dns.resolv_conf_explicit),
            (DnsBackend::ResolvConf, true)
        );
        assert_eq!(
            c.dns.servers["wwan0"],
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let e = resolve("[dns.servers]\neth9 = [\"10.0.0.1\"]\n", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns.servers") && e.contains("eth9"), "{e}");
        let e = resolve("[dns.servers]\nwlan0 = [\"127.0.0.1\"]\n", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns.servers"), "{e}");
        let e = resolve("[dns]\nbackend = \"resolved\"\nresolv_conf = \"/x\"\n", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns.resolv_conf"), "{e}");
        let no = Overrides {
            no_dns: true,
            resolv_conf: Some("/tmp/x".into()),
            ..flags("wlan0", "wwan0")
        };
        let c = resolve("", &no).unwrap();
        assert!(!c.dns.enable);
        assert_eq!(c.dns.resolv_conf, Path::new("/tmp/x"));
    }

    /// The example shipped in the package documents every key with its default value: it parses
    /// as shipped (all commented) and, uncommented, gives exactly the defaults.
    #[test]
    fn shipped_example_documents_the_defaults() {
        let shipped = include_str!("../packaging/mpbond.toml");
        assert_eq!(parse(shipped).unwrap(), FileConfig::default());
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file = parse(&uncommented).unwrap();
        assert_eq!(file.interfaces.wifi.as_deref(), Some("wlan0"));
        let c = Config::resolve(file, &Overrides::default(), &none).unwrap();
        let d = Config::resolve(FileConfig::default(), &flags("wlan0", "wwan0"), &none).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn budgets_resolve_per_role() {
        let f = parse("[budget.cellular]\ndaily_mb = 5\nat_limit = \"warn\"\n").unwrap();
        let c = Config::resolve(f, &flags("wlan0", "wwan0"), &none).unwrap();
        let l = c.budget.cellular.unwrap();
        assert_eq!((l.daily, l.monthly), (Some(5_000_000), None));
        assert_eq!(l.at_limit, crate::budget::AtLimit::Warn);
        assert_eq!(c.budget.wifi, None);
        // Every backup gets the cellular limits, every primary the Wi-Fi ones (none here).
        assert_eq!(c.budget.limits_for(IfaceRole::Backup), Some(l));
        assert_eq!(c.budget.limits_for(IfaceRole::Primary), None);
        let f = parse("[budget.wifi]\nsoft_percent = 120\n").unwrap();
        let e = Config::resolve(f, &flags("wlan0", "wwan0"), &none).unwrap_err();
        assert!(e.to_string().contains("budget.wifi"), "{e}");
        assert!(
            parse("[budget.cellular]\ndaily = 5\n").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn missing_default_file_is_empty_but_explicit_is_error() {
        let p = Path::new("/nonexistent/mpbond.toml");
        assert_eq!(FileConfig::load(p, false).unwrap(), FileConfig::default());
        assert!(
            FileConfig::load(p, true)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
