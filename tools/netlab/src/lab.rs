//! The [`Lab`]: building the topology, tearing it down, persisting it for later CLI calls.

use crate::addr::Path;
use crate::cmd::{self, CmdError};
use crate::relay::{self, WIRE_BRIDGE, WIRE_LAPTOP_SIDE, WIRE_ROUTER_SIDE};
use crate::serve::{ServeSpec, Servers};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Every lab namespace starts with this, so `netlab cleanup` can find leftovers.
pub const NS_PREFIX: &str = "mpblab-";
/// Where labs keep their state (`<dir>/<lab name>/state.json`, relay control sockets).
pub const STATE_ROOT: &str = "/run/netlab";

/// Router-side interface names (in the `wifi` / `cell` router namespaces).
pub const ROUTER_LAN: &str = "lan";
/// The router's uplink toward `inet`.
pub const ROUTER_WAN: &str = "wan";

/// Building or driving the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An external command (`ip`, `nft`, `tc`, …) failed; carries its command line and stderr.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// A system call or file operation failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: io::Error,
    },
    /// The lab name is not usable (must be 1–20 of `[a-z0-9]`).
    #[error("bad lab name `{0}`: use 1-20 characters from [a-z0-9]")]
    BadName(String),
    /// No lab state found under [`STATE_ROOT`] for that name.
    #[error("no running lab named `{0}` (start one with `netlab up`)")]
    NotFound(String),
    /// A lab of that name is already up.
    #[error("a lab named `{0}` already exists (use `netlab down --name {0}` or `netlab cleanup`)")]
    Exists(String),
    /// The caller is not root.
    #[error("the lab needs root (network namespaces, nft, tc)")]
    NotRoot,
    /// A value given to an impairment is out of range.
    #[error("bad value: {0}")]
    BadValue(String),
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let context = context.into();
    move |cause| LabError::Io { context, cause }
}

/// The namespace names of one lab.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Namespaces {
    /// The laptop (`wlan0`, `wwan0`).
    pub laptop: String,
    /// The Wi-Fi path's delay element (`l`, `r`, `br0`).
    pub wifi_wire: String,
    /// The cellular path's delay element.
    pub cell_wire: String,
    /// The Wi-Fi router (`lan`, `wan`; NAT, impairments).
    pub wifi: String,
    /// The cellular router.
    pub cell: String,
    /// The internet with the servers (`wifi`, `cell` links; server addresses on `lo`).
    pub inet: String,
}

impl Namespaces {
    fn new(name: &str) -> Self {
        let n = |role: &str| format!("{NS_PREFIX}{name}-{role}");
        Self {
            laptop: n("laptop"),
            wifi_wire: n("wwire"),
            cell_wire: n("cwire"),
            wifi: n("wifi"),
            cell: n("cell"),
            inet: n("inet"),
        }
    }

    /// All six, in creation order.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.laptop,
            &self.wifi_wire,
            &self.cell_wire,
            &self.wifi,
            &self.cell,
            &self.inet,
        ]
    }

    /// The router namespace of `path`.
    pub fn router(&self, path: Path) -> &str {
        match path {
            Path::Wifi => &self.wifi,
            Path::Cell => &self.cell,
        }
    }

    /// The wire (delay) namespace of `path`.
    pub fn wire(&self, path: Path) -> &str {
        match path {
            Path::Wifi => &self.wifi_wire,
            Path::Cell => &self.cell_wire,
        }
    }

    /// Resolves a role name (`laptop`, `wifi`, `cell`, `inet`, `wwire`, `cwire`) to its namespace.
    pub fn by_role(&self, role: &str) -> Option<&str> {
        Some(match role {
            "laptop" => &self.laptop,
            "wifi" => &self.wifi,
            "cell" => &self.cell,
            "inet" => &self.inet,
            "wwire" | "wifi-wire" => &self.wifi_wire,
            "cwire" | "cell-wire" => &self.cell_wire,
            _ => return None,
        })
    }
}

/// What is persisted in `<STATE_ROOT>/<name>/state.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LabState {
    /// The lab's name (part of every namespace name).
    pub name: String,
    /// The namespaces.
    pub ns: Namespaces,
    /// Process that owns the lab (relays and servers run in it).
    pub pid: u32,
}

/// Options for [`Lab::build`].
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Lab name; default `<pid>x<counter>` (unique per process and call).
    pub name: Option<String>,
    /// Do not start the servers in `inet` (e.g. a test that runs its own).
    pub no_servers: bool,
}

/// A running lab. Built with [`Lab::build`] (owning: dropping it stops its threads and deletes
/// every namespace it made) or found with [`Lab::attach`] (a lab owned by another process, e.g.
/// `netlab up`; dropping does nothing).
///
/// Relays and servers are threads of the owning process, each entered into its namespace with
/// setns(2), so a test that builds a lab needs no separate binary.
#[derive(Debug)]
pub struct Lab {
    state: LabState,
    state_dir: PathBuf,
    owned: bool,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<io::Result<()>>>,
    servers: Option<Servers>,
    created: Vec<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn valid_name(name: &str) -> bool {
    (1..=20).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Lab {
    /// Builds the whole lab: namespaces, links, addresses, routes, NAT, impairment tables, relay
    /// threads and (unless `opts.no_servers`) the servers. On error everything made so far is
    /// removed.
    pub fn build(opts: LabOptions) -> Result<Lab, LabError> {
        if !crate::sys::is_root() {
            return Err(LabError::NotRoot);
        }
        let name = opts.name.unwrap_or_else(|| {
            format!(
                "{}x{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        if !valid_name(&name) {
            return Err(LabError::BadName(name));
        }
        let state_dir = PathBuf::from(STATE_ROOT).join(&name);
        let ns = Namespaces::new(&name);
        let existing = cmd::run(&["ip", "netns", "list"])?;
        if state_dir.exists()
            || existing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.laptop.as_str()))
        {
            return Err(LabError::Exists(name));
        }
        let mut lab = Lab {
            state: LabState {
                name,
                ns,
                pid: std::process::id(),
            },
            state_dir,
            owned: true,
            stop: Arc::new(AtomicBool::new(false)),
            relays: Vec::new(),
            servers: None,
            created: Vec::new(),
        };
        // On error `lab` is dropped here, which tears down whatever was made.
        lab.setup(!opts.no_servers)?;
        Ok(lab)
    }

    /// Finds the lab named `name` that another process owns (see `netlab up`).
    pub fn attach(name: &str) -> Result<Lab, LabError> {
        let state_dir = PathBuf::from(STATE_ROOT).join(name);
        let text = std::fs::read_to_string(state_dir.join("state.json"))
            .map_err(|_| LabError::NotFound(name.to_owned()))?;
        let state: LabState = serde_json::from_str(&text).map_err(|e| LabError::Io {
            context: format!("parse {}/state.json", state_dir.display()),
            cause: e.into(),
        })?;
        Ok(Lab {
            state,
            state_dir,
            owned: false,
            stop: Arc::new(AtomicBool::new(false)),
            relays: Vec::new(),
            servers: None,
            created: Vec::new(),
        })
    }

    /// Names of labs with state under [`STATE_ROOT`].
    pub fn list() -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(STATE_ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn push_created(&mut self, ns: String) {
        self.created.push(ns);
    }

    pub(crate) fn created_contains(&self, ns: &str) -> bool {
        self.created.iter().any(|n| n == ns)
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The namespace names.
    pub fn ns(&self) -> &Namespaces {
        &self.state.ns
    }

    /// The persisted state (names, owner pid).
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// The lab's state directory (relay control sockets live there).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The servers' live counters (only on the owning [`Lab`] with servers).
    pub fn server_stats(&self) -> Option<&crate::serve::ServerStats> {
        self.servers.as_ref().map(|s| &*s.stats)
    }

    /// Runs `f` on a thread inside namespace `ns` (e.g. `&lab.ns().laptop`) and returns its result.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        crate::netns::run_in(ns, f).map_err(io_ctx(format!("enter namespace {ns}")))
    }

    /// A [`std::process::Command`] that runs `program` inside namespace `ns`
    /// (`ip netns exec NS PROGRAM`), for long-running processes such as `mpbond up --foreground`.
    /// The caller owns (and must reap) the child.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Turns tx checksum offload (and with it TSO/GSO of checksummed packets, which depend on it)
    /// on or off on every veth of both paths. The lab starts with it off (the delay relay
    /// forwards frames and needs complete checksums); on is how Linux sets up a veth.
    pub fn set_tx_checksum_offload(&self, on: bool) -> Result<(), LabError> {
        let v = if on { "on" } else { "off" };
        for path in Path::ALL {
            for (n, ifc) in veths(&self.state.ns, path) {
                cmd::run_in(&n, &["ethtool", "-K", ifc, "tx", v])?;
            }
        }
        Ok(())
    }

    /// Runs a program inside namespace `ns`; returns its stdout.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        Ok(cmd::run_in(ns, args)?)
    }

    fn setup(&mut self, servers: bool) -> Result<(), LabError> {
        let ns = self.state.ns.clone();
        std::fs::create_dir_all(&self.state_dir)
            .map_err(io_ctx(format!("create {}", self.state_dir.display())))?;
        for n in ns.all() {
            cmd::run(&["ip", "netns", "add", n])?;
            self.created.push(n.to_owned());
            cmd::run(&["ip", "-n", n, "link", "set", "dev", "lo", "up"])?;
        }
        for n in [&ns.wifi_wire, &ns.cell_wire] {
            // The wire is a pure L2 element: no IPv6 autoconfiguration noise on its ports.
            sysctls(
                n,
                &[
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
            // With br_netfilter loaded (new namespaces start with these at 1), the bridge would
            // validate IP headers and drop frames with bad checksums or lengths: a wire passes
            // them on. Without br_netfilter the keys do not exist and nothing validates.
            let _ = sysctls(
                n,
                &[
                    "net.bridge.bridge-nf-call-iptables=0",
                    "net.bridge.bridge-nf-call-ip6tables=0",
                    "net.bridge.bridge-nf-call-arptables=0",
                ],
            );
        }
        for n in [&ns.laptop, &ns.wifi, &ns.cell, &ns.inet] {
            sysctls(
                n,
                &[
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    "net.ipv6.conf.all.accept_ra=0",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    // No duplicate address detection: a tentative link-local address makes the
                    // first neighbour solicitations go unanswered for up to a second.
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                    "net.mptcp.enabled=1",
                ],
            )?;
        }
        for n in [&ns.wifi, &ns.cell] {
            sysctls(n, &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
        }
        for path in Path::ALL {
            self.setup_path(path)?;
        }
        // Server addresses on the internet's loopback.
        for s in crate::Server::ALL {
            cmd::run(&[
                "ip",
                "-n",
                &ns.inet,
                "addr",
                "add",
                &format!("{}/32", s.ip(false)),
                "dev",
                "lo",
            ])?;
            cmd::run(&[
                "ip",
                "-n",
                &ns.inet,
                "addr",
                "add",
                &format!("{}/128", s.ip(true)),
                "dev",
                "lo",
                "nodad",
            ])?;
        }
        for n in [&ns.inet, &ns.laptop] {
            cmd::run(&[
                "ip",
                "-n",
                n,
                "mptcp",
                "limits",
                "set",
                "subflow",
                "8",
                "add_addr_accepted",
                "8",
            ])?;
        }
        // Relays, one per path, each in its wire namespace.
        for path in Path::ALL {
            let ctl = relay::ctl_path(&self.state_dir, path);
            let _ = std::fs::remove_file(&ctl);
            let wire = ns.wire(path).to_owned();
            let listener = std::os::unix::net::UnixListener::bind(&ctl)
                .map_err(io_ctx(format!("bind {}", ctl.display())))?;
            let stop = self.stop.clone();
            let h = crate::netns::spawn_in(&format!("netlab-relay-{path}"), &wire.clone(), move || {
                relay::run(wire, listener, stop)
            })
            .map_err(io_ctx("spawn relay thread"))?;
            self.relays.push(h);
        }
        if servers {
            self.servers = Some(
                crate::serve::start(Some(&ns.inet), &ServeSpec::lab()).map_err(io_ctx("start servers"))?,
            );
        }
        self.wait_links_active()?;
        if servers {
            self.wait_ready()?;
        }
        let json = serde_json::to_string_pretty(&self.state).map_err(|e| LabError::Io {
            context: "serialize state".into(),
            cause: e.into(),
        })?;
        std::fs::write(self.state_dir.join("state.json"), json).map_err(io_ctx("write state.json"))?;
        Ok(())
    }

    fn setup_path(&mut self, path: Path) -> Result<(), LabError> {
        let ns = self.state.ns.clone();
        let (laptop, wire, router, inet) = (&ns.laptop, ns.wire(path), ns.router(path), &ns.inet);
        let lif = path.laptop_iface();
        let inet_if = path.name();
        // laptop:wlan0 ── wire:l   wire:r ── router:lan   router:wan ── inet:wifi
        cmd::run(&[
            "ip",
            "-n",
            laptop,
            "link",
            "add",
            lif,
            "type",
            "veth",
            "peer",
            "name",
            WIRE_LAPTOP_SIDE,
            "netns",
            wire,
        ])?;
        cmd::run(&[
            "ip",
            "-n",
            wire,
            "link",
            "add",
            WIRE_ROUTER_SIDE,
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_LAN,
            "netns",
            router,
        ])?;
        cmd::run(&[
            "ip", "-n", router, "link", "add", ROUTER_WAN, "type", "veth", "peer", "name", inet_if, "netns",
            inet,
        ])?;
        cmd::run(&[
            "ip",
            "-n",
            wire,
            "link",
            "add",
            WIRE_BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        // AF_PACKET readers (the relay) must see complete checksums.
        for (n, ifc) in veths(&ns, path) {
            cmd::run_in(&n, &["ethtool", "-K", ifc, "tx", "off"])?;
        }
        for ifc in [WIRE_LAPTOP_SIDE, WIRE_ROUTER_SIDE] {
            cmd::run(&["ip", "-n", wire, "link", "set", "dev", ifc, "master", WIRE_BRIDGE])?;
            cmd::run(&["ip", "-n", wire, "link", "set", "dev", ifc, "promisc", "on", "up"])?;
        }
        cmd::run(&["ip", "-n", wire, "link", "set", "dev", WIRE_BRIDGE, "up"])?;
        // Addresses.
        let a = |n: &str, ifc: &str, addr: String| -> Result<(), LabError> {
            let mut args = vec!["ip", "-n", n, "addr", "add", &addr, "dev", ifc];
            if addr.contains(':') {
                args.push("nodad");
            }
            cmd::run(&args)?;
            Ok(())
        };
        a(laptop, lif, format!("{}/24", path.laptop_v4()))?;
        a(laptop, lif, format!("{}/64", path.laptop_v6()))?;
        a(router, ROUTER_LAN, format!("{}/24", path.gateway_v4()))?;
        a(router, ROUTER_LAN, format!("{}/64", path.gateway_v6()))?;
        a(router, ROUTER_WAN, format!("{}/24", path.router_wan_v4()))?;
        a(router, ROUTER_WAN, format!("{}/64", path.router_wan_v6()))?;
        a(inet, inet_if, format!("{}/24", path.inet_v4()))?;
        a(inet, inet_if, format!("{}/64", path.inet_v6()))?;
        for (n, ifc) in [
            (laptop.as_str(), lif),
            (router, ROUTER_LAN),
            (router, ROUTER_WAN),
            (inet.as_str(), inet_if),
        ] {
            cmd::run(&["ip", "-n", n, "link", "set", "dev", ifc, "up"])?;
        }
        add_laptop_routes(laptop, path)?;
        cmd::run(&[
            "ip",
            "-n",
            router,
            "route",
            "add",
            "default",
            "via",
            &path.inet_v4().to_string(),
        ])?;
        cmd::run(&[
            "ip",
            "-n",
            router,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &path.inet_v6().to_string(),
        ])?;
        cmd::run_in_with_stdin(router, &["nft", "-f", "-"], &router_ruleset())?;
        Ok(())
    }

    /// Waits until every lab interface is up with its queueing discipline attached. The kernel
    /// activates a veth's qdisc from its link-watch work up to a second after carrier comes up;
    /// until then it drops every packet (neighbour solicitations included). At most 5 s.
    fn wait_links_active(&self) -> Result<(), LabError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for n in self.state.ns.all() {
            loop {
                let out = cmd::run(&["ip", "-n", n, "-o", "link", "show"])?;
                let pending: Vec<&str> = out
                    .lines()
                    .filter(|l| {
                        l.contains("qdisc noop") || !(l.contains("state UP") || l.contains("state UNKNOWN"))
                    })
                    .filter_map(|l| l.split(':').nth(1).map(str::trim))
                    .collect();
                if pending.is_empty() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(LabError::Io {
                        context: format!("interfaces of {n} not active after 5 s: {}", pending.join(", ")),
                        cause: io::ErrorKind::TimedOut.into(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Waits until a UDP echo comes back over each path in each family (links activated,
    /// neighbours resolved), so the first test packet is not lost to start-up. At most ~5 s per
    /// path and family.
    fn wait_ready(&self) -> Result<(), LabError> {
        for path in Path::ALL {
            for v6 in [false, true] {
                let server = crate::Server::UdpEcho.addr(v6);
                let ok = self.run_in(&self.state.ns.laptop, || {
                    (0..25).any(|_| {
                        crate::client::udp_echo(
                            server,
                            1,
                            1,
                            std::time::Duration::from_millis(200),
                            Some(path.laptop_iface()),
                        )
                        .is_ok_and(|r| r.received == 1)
                    })
                })?;
                if !ok {
                    return Err(LabError::Io {
                        context: format!(
                            "lab not ready: no UDP echo from {server} through {path} within 5 s"
                        ),
                        cause: io::ErrorKind::TimedOut.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops the lab's threads and deletes its namespaces and state (what `Drop` does for an
    /// owning lab). Returns the first error; keeps going past errors.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        self.stop.store(true, Ordering::Relaxed);
        self.servers = None;
        for h in self.relays.drain(..) {
            let _ = h.join();
        }
        let mut first = None;
        for n in self.created.drain(..).rev() {
            if let Err(e) = cmd::run(&["ip", "netns", "del", &n]) {
                first.get_or_insert(LabError::from(e));
            }
        }
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned {
            // Errors while tearing down cannot be returned from drop; `netlab cleanup` is the net.
            let _ = self.teardown();
        }
    }
}

fn sysctls(ns: &str, settings: &[&str]) -> Result<(), LabError> {
    let mut args = vec!["sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    cmd::run_in(ns, &args)?;
    Ok(())
}

/// Default routes like NetworkManager sets them (Wi-Fi metric 100, cellular 200), IPv4 and IPv6.
pub(crate) fn add_laptop_routes(laptop: &str, path: Path) -> Result<(), LabError> {
    let metric = path.metric().to_string();
    let dev = path.laptop_iface();
    cmd::run(&[
        "ip",
        "-n",
        laptop,
        "route",
        "replace",
        "default",
        "via",
        &path.gateway_v4().to_string(),
        "dev",
        dev,
        "metric",
        &metric,
    ])?;
    cmd::run(&[
        "ip",
        "-n",
        laptop,
        "-6",
        "route",
        "replace",
        "default",
        "via",
        &path.gateway_v6().to_string(),
        "dev",
        dev,
        "metric",
        &metric,
    ])?;
    Ok(())
}

/// The router's nft table: NAT on the WAN side, and empty chains the impairments fill. The
/// option-30 middlebox acts as packets enter the router (prerouting), as a router's ingress
/// processing does: a segment whose TTL expires at this router is quoted in the ICMP Time
/// Exceeded as rewritten, which is how `mpbond check` locates the middlebox.
/// Every veth end of `path`: (namespace, interface).
fn veths(ns: &Namespaces, path: Path) -> [(String, &'static str); 6] {
    [
        (ns.laptop.clone(), path.laptop_iface()),
        (ns.wire(path).to_owned(), WIRE_LAPTOP_SIDE),
        (ns.wire(path).to_owned(), WIRE_ROUTER_SIDE),
        (ns.router(path).to_owned(), ROUTER_LAN),
        (ns.router(path).to_owned(), ROUTER_WAN),
        (ns.inet.clone(), path.name()),
    ]
}

fn router_ruleset() -> String {
    format!(
        r#"table inet netlab {{
    chain blackhole {{
    }}
    chain mbox {{
    }}
    chain loss {{
    }}
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        jump mbox
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        jump blackhole
        jump loss
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        jump blackhole
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        jump blackhole
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{ROUTER_WAN}" masquerade
    }}
}}
"#
    )
}

/// The process that owns lab `name`, if it is still running: the pid in its state file, or
/// for labs named `<pid>x<n>` (the default names) that pid.
fn live_owner(name: &str) -> Option<u32> {
    let pid = Lab::attach(name)
        .ok()
        .map(|l| l.state.pid)
        .or_else(|| name.split_once('x').and_then(|(p, _)| p.parse().ok()))?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Removes leftovers of crashed labs: every namespace whose name starts with `prefix` (default
/// [`NS_PREFIX`]) and every state directory, for labs whose owning process is gone. Labs whose
/// owner still runs (another test, a `netlab up`) are left alone unless `force`. Returns the
/// namespaces removed.
pub fn cleanup(prefix: &str, force: bool) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    let list = cmd::run(&["ip", "netns", "list"])?;
    for line in list.lines() {
        let Some(n) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = n.strip_prefix(prefix) else {
            continue;
        };
        // `mpblab-<name>-<role>`
        let lab_name = n
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.rsplit_once('-'))
            .map_or(rest, |(l, _)| l);
        if !force && live_owner(lab_name).is_some() {
            continue;
        }
        cmd::run(&["ip", "netns", "del", n])?;
        removed.push(n.to_owned());
    }
    for name in Lab::list() {
        if force || live_owner(&name).is_none() {
            let _ = std::fs::remove_dir_all(PathBuf::from(STATE_ROOT).join(&name));
        }
    }
    Ok(removed)
}
