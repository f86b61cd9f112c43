//! Becoming the system's resolver while up, and learning each path's own resolvers first.
//!
//! Two backends, as VPNs do it:
//! - **systemd-resolved** (when it runs and no resolv.conf path was set explicitly): the TUN
//!   gets mpbond's addresses as its DNS servers with the routing domain `~.` and
//!   `default-route yes`, and the physical links stop being DNS default routes; their per-link
//!   servers (`resolvectl dns`) are what mpbond forwards to.
//! - **resolv.conf**: the file is replaced by one naming mpbond's addresses (its `search`,
//!   `domain` and `options` lines kept); the servers it named are what mpbond forwards to.
//!
//! Every change is an [`Op`] in the daemon's journal, so `down` and crash recovery put
//! everything back exactly. Each learnt server goes to the path whose subnet holds it (or whose
//! name its IPv6 scope gives); one on no path's subnet is reachable from any path and goes to
//! all. `[dns.servers]` in the config replaces what was learnt for an interface.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{DnsBackend, DnsConfig};
use crate::route::plan::{FileBefore, LinkState, Op};

/// Resolvers per path kept at most (as glibc's MAXNS).
pub const MAX_RESOLVERS: usize = 3;

/// A `nameserver` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    /// The address.
    pub addr: IpAddr,
    /// An IPv6 scope (`fe80::1%wlan0`), if given.
    pub scope: Option<String>,
}

/// Reads one server as resolv.conf or `resolvectl` writes it: `1.1.1.1`, `fe80::1%wlan0`,
/// `1.1.1.1#cloudflare-dns.com`, `[fd00::1]:53`, `9.9.9.9:53`.
pub fn parse_server(s: &str) -> Option<Nameserver> {
    let s = s.split('#').next()?.trim();
    let (addr, scope) = match s.split_once('%') {
        Some((a, sc)) => (a, Some(sc.to_string())),
        None => (s, None),
    };
    let addr = addr.trim_start_matches('[');
    let addr = addr.split_once(']').map_or(addr, |(a, _)| a);
    let ip = addr
        .parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<std::net::SocketAddr>().ok().map(|sa| sa.ip()))?;
    Some(Nameserver { addr: ip, scope })
}

/// The `nameserver` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Vec<Nameserver> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            parse_server(words.next()?)
        })
        .collect()
}

/// The resolv.conf mpbond writes: its own addresses, and the old file's `search`, `domain`
/// and `options` lines.
pub fn render_resolv_conf(old: &str, ours: &[IpAddr]) -> String {
    let mut s = String::from(
        "# Written by mpbond while it is up, so name lookups follow its failover;\n\
         # `mpbond down` puts the previous file back.\n",
    );
    for a in ours {
        s.push_str(&format!("nameserver {a}\n"));
    }
    for l in old.lines() {
        let first = l.split_whitespace().next();
        if matches!(first, Some("search" | "domain" | "options")) {
            s.push_str(l.trim_end());
            s.push('\n');
        }
    }
    s
}

/// The per-link servers in `resolvectl dns` output (`Link 3 (wlan0): 192.168.1.1 fe80::1%wlan0`;
/// the `Global:` line is returned under the name `""`).
pub fn parse_resolvectl_dns(text: &str) -> Vec<(String, Vec<Nameserver>)> {
    text.lines()
        .filter_map(|l| {
            let (head, servers) = l.split_once(':')?;
            let name = if head.trim() == "Global" {
                String::new()
            } else {
                let open = head.find('(')?;
                let close = head.rfind(')')?;
                head.get(open + 1..close)?.to_string()
            };
            Some((
                name,
                servers.split_whitespace().filter_map(parse_server).collect(),
            ))
        })
        .collect()
}

/// The servers in `nmcli -t -f IP4.DNS,IP6.DNS device show DEV` output, in order:
/// `IP4.DNS[1]:192.168.1.1`, `IP6.DNS[1]:fd00::1` (or, with nmcli's terse escaping,
/// `fd00\:\:1`); other lines, empty values and unreadable ones are skipped.
pub fn parse_nmcli_dns(text: &str) -> Vec<Nameserver> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            let field = key.split('[').next()?.trim();
            matches!(field, "IP4.DNS" | "IP6.DNS").then_some(())?;
            let mut v = String::with_capacity(value.len());
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                // Terse mode escapes ':' and '\' with a backslash.
                v.push(if c == '\\' { chars.next()? } else { c });
            }
            parse_server(v.trim())
        })
        .collect()
}

/// `resolvectl default-route LINK` output (`Link 3 (wlan0): yes`) read as a bool.
pub fn parse_default_route(text: &str) -> Option<bool> {
    match text.rsplit(':').next()?.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// What was learnt: servers by interface name (`""`: not tied to one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learnt {
    /// Servers by interface (`""`: global).
    pub servers: Vec<(String, Vec<Nameserver>)>,
}

/// Assigns the learnt servers to the paths `paths` (interface names, in id order): the config's
/// list for an interface replaces what was learnt; a learnt server goes to the path it is tied
/// to (resolved link, IPv6 scope) or whose subnet holds it, else to every path. Loopback
/// servers and mpbond's own addresses are skipped (they cannot be reached over a path).
pub fn assign(
    learnt: &Learnt,
    paths: &[&str],
    links: &[LinkState],
    overrides: &BTreeMap<String, Vec<IpAddr>>,
    own: &[IpAddr],
) -> Vec<Vec<IpAddr>> {
    let mut per: Vec<Vec<IpAddr>> = vec![Vec::new(); paths.len()];
    let mut global = Vec::new();
    // A server a link names as its own (resolved, NetworkManager) is that link's, also where
    // resolv.conf lists it too.
    let linked: Vec<IpAddr> = learnt
        .servers
        .iter()
        .filter(|(link, _)| !link.is_empty())
        .flat_map(|(_, s)| s.iter().map(|n| n.addr))
        .collect();
    let subnet_of = |a: IpAddr| {
        paths.iter().position(|name| {
            links
                .iter()
                .find(|l| l.name == *name)
                .is_some_and(|l| l.addresses.iter().any(|n| n.contains(&a)))
        })
    };
    for (link, servers) in &learnt.servers {
        for s in servers {
            if s.addr.is_loopback() || s.addr.is_unspecified() || own.contains(&s.addr) {
                continue;
            }
            let tied = s.scope.as_deref().or((!link.is_empty()).then_some(link.as_str()));
            let path = match tied {
                Some(name) => paths.iter().position(|p| *p == name),
                None => subnet_of(s.addr),
            };
            match (path, tied) {
                (Some(i), _) => per[i].push(s.addr),
                // Tied to a link that is not a path (another VPN): not ours to use.
                (None, Some(_)) => {}
                (None, None) if linked.contains(&s.addr) => {}
                (None, None) => global.push(s.addr),
            }
        }
    }
    for (i, name) in paths.iter().enumerate() {
        if let Some(list) = overrides.get(*name) {
            per[i] = list.clone();
        } else {
            per[i].extend(&global);
        }
        let mut seen = Vec::new();
        per[i].retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        per[i].truncate(MAX_RESOLVERS);
    }
    per
}

/// The backend to use: resolved when asked, or in `auto` when it runs and no resolv.conf path
/// was given explicitly.
pub fn backend(cfg: &DnsConfig, resolved_running: bool) -> DnsBackend {
    match cfg.backend {
        DnsBackend::Auto if resolved_running && !cfg.resolv_conf_explicit => DnsBackend::Resolved,
        DnsBackend::Auto => DnsBackend::ResolvConf,
        b => b,
    }
}

/// Whether systemd-resolved runs (its runtime directory exists, as its own tools check).
pub fn resolved_running() -> bool {
    Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
        || Path::new("/run/systemd/resolve/resolv.conf").exists()
}

/// What the host's resolver setup was, as read at `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// resolv.conf backend: the file's path and state.
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// What it was.
        old: FileBefore,
    },
    /// resolved backend: the physical links' default-route flags.
    Resolved {
        /// `(link, default-route)` of each path that had servers.
        default_routes: Vec<(String, bool)>,
    },
}

/// The ops that make mpbond the system's resolver (pure; [`Before`] says what was there).
pub fn ops(before: &Before, tun: &str, own: &[IpAddr]) -> Vec<Op> {
    match before {
        Before::ResolvConf { path, old } => {
            let old_text = match old {
                FileBefore::Content { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
                // The target's text is what readers saw; read by the caller into `Learnt`.
                FileBefore::Symlink { .. } | FileBefore::Missing => String::new(),
            };
            vec![Op::ReplaceFile {
                path: path.clone(),
                content: render_resolv_conf(&old_text, own),
                old: old.clone(),
            }]
        }
        Before::Resolved { default_routes } => {
            let mut ops = vec![Op::ResolvedLink {
                dev: tun.to_string(),
                servers: own.to_vec(),
                domains: vec!["~.".into()],
            }];
            for (dev, old) in default_routes {
                ops.push(Op::ResolvedDefaultRoute {
                    dev: dev.clone(),
                    value: false,
                    old: *old,
                });
            }
            ops
        }
    }
}

/// systemd-resolved's per-link servers of `dev` (I/O), with the resolved backend; none otherwise.
pub fn resolved_link(backend: DnsBackend, dev: &str) -> Vec<Nameserver> {
    if backend != DnsBackend::Resolved {
        return Vec::new();
    }
    match crate::route::resolved::resolvectl(&["dns", dev]) {
        Ok(text) => parse_resolvectl_dns(&text)
            .into_iter()
            .filter(|(l, _)| l == dev)
            .flat_map(|(_, s)| s)
            .collect(),
        Err(e) => {
            tracing::debug!(iface = dev, "DNS: no per-link servers from resolved: {e}");
            Vec::new()
        }
    }
}

/// NetworkManager's resolvers of `dev` (`nmcli -t -f IP4.DNS,IP6.DNS device show DEV`). nmcli
/// missing, or NetworkManager not running or not managing `dev`, is no error: none, said once.
pub fn nmcli_dns(dev: &str) -> Vec<Nameserver> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Whether the fallback was logged already (once per process).
    static SAID: AtomicBool = AtomicBool::new(false);
    let out = std::process::Command::new("nmcli")
        .args(["-t", "-f", "IP4.DNS,IP6.DNS", "device", "show", dev])
        .stdin(std::process::Stdio::null())
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return parse_nmcli_dns(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => format!(
            "nmcli device show {dev}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run nmcli: {e}"),
    };
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::info!("DNS: NetworkManager's per-link resolvers not read ({why}); using the others");
    } else {
        tracing::debug!("DNS: {why}");
    }
    Vec::new()
}

/// Reads what the host's resolvers are and how they are set up (files, `resolvectl`, `nmcli`).
pub fn learn(cfg: &DnsConfig, paths: &[&str]) -> anyhow::Result<(Learnt, Before)> {
    use anyhow::Context as _;
    match backend(cfg, resolved_running()) {
        DnsBackend::Resolved => {
            let text = crate::route::resolved::resolvectl(&["dns"])?;
            let mut learnt = Learnt {
                servers: parse_resolvectl_dns(&text),
            };
            // NetworkManager's, for a path resolved has none for.
            for p in paths {
                if !learnt.servers.iter().any(|(l, s)| l == p && !s.is_empty()) {
                    let nm = nmcli_dns(p);
                    if !nm.is_empty() {
                        learnt.servers.push(((*p).to_string(), nm));
                    }
                }
            }
            let mut default_routes = Vec::new();
            for p in paths {
                if learnt.servers.iter().any(|(l, s)| l == p && !s.is_empty()) {
                    let out = crate::route::resolved::resolvectl(&["default-route", p])?;
                    default_routes.push(((*p).to_string(), parse_default_route(&out).unwrap_or(true)));
                }
            }
            Ok((learnt, Before::Resolved { default_routes }))
        }
        DnsBackend::ResolvConf | DnsBackend::Auto => {
            let path = cfg.resolv_conf.clone();
            let old = crate::route::files::read_before(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Through a symlink, what readers see is the target's text.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Each path's own (NetworkManager's) first, then the file's.
            let mut servers: Vec<(String, Vec<Nameserver>)> = paths
                .iter()
                .map(|p| ((*p).to_string(), nmcli_dns(p)))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            servers.push((String::new(), parse_resolv_conf(&text)));
            let learnt = Learnt { servers };
            Ok((learnt, Before::ResolvConf { path, old }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(name: &str, nets: &[&str]) -> LinkState {
        LinkState {
            name: name.into(),
            index: 1,
            up: true,
            carrier: true,
            addresses: nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
        }
    }

    #[test]
    fn reads_servers_in_every_form() {
        assert_eq!(parse_server("1.1.1.1#one.one").unwrap().addr, ip("1.1.1.1"));
        let s = parse_server("fe80::1%wlan0").unwrap();
        assert_eq!((s.addr, s.scope.as_deref()), (ip("fe80::1"), Some("wlan0")));
        assert_eq!(parse_server("[fd00::1]:53").unwrap().addr, ip("fd00::1"));
        assert_eq!(parse_server("9.9.9.9:53").unwrap().addr, ip("9.9.9.9"));
        assert_eq!(parse_server("nonsense"), None);
        let text = "# NM\nnameserver 192.168.1.1\nnameserver\tfd18:1::1 \nsearch lan\nnameserver bad\n";
        let got: Vec<IpAddr> = parse_resolv_conf(text).iter().map(|n| n.addr).collect();
        assert_eq!(got, vec![ip("192.168.1.1"), ip("fd18:1::1")]);
    }

    #[test]
    fn renders_our_servers_and_keeps_search_and_options() {
        let old = "nameserver 192.168.1.1\nsearch lan example.org\noptions edns0 trust-ad\n";
        let new = render_resolv_conf(old, &[ip("100.100.0.1"), ip("fd7a::1")]);
        assert!(
            new.contains("nameserver 100.100.0.1\nnameserver fd7a::1\n"),
            "{new}"
        );
        assert!(new.contains("search lan example.org\n"));
        assert!(new.contains("options edns0 trust-ad\n"));
        assert!(!new.contains("192.168.1.1"));
    }

    #[test]
    fn reads_resolvectl_output() {
        let text = "Global: 1.1.1.1#cloudflare-dns.com\nLink 2 (wlan0): 192.168.1.1 fe80::1%wlan0\nLink 3 (wwan0):\nLink 4 (mpbond0):\n";
        let got = parse_resolvectl_dns(text);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, "");
        assert_eq!(got[1].0, "wlan0");
        assert_eq!(got[1].1.len(), 2);
        assert!(got[2].1.is_empty());
        assert_eq!(parse_default_route("Link 2 (wlan0): no\n"), Some(false));
        assert_eq!(parse_default_route("Link 2 (wlan0): yes"), Some(true));
        assert_eq!(parse_default_route("garbage"), None);
    }

    #[test]
    fn reads_nmcli_output() {
        let addrs = |t: &str| -> Vec<IpAddr> { parse_nmcli_dns(t).iter().map(|n| n.addr).collect() };
        assert_eq!(addrs("IP4.DNS[1]:192.168.1.1\n"), vec![ip("192.168.1.1")]);
        // Several, both families; IPv6 with its colons, plain or escaped as terse mode does.
        let text =
            "IP4.DNS[1]:10.64.0.1\nIP4.DNS[2]:10.64.0.2\nIP6.DNS[1]:fd00::53\nIP6.DNS[2]:2001\\:db8\\:\\:1\n";
        assert_eq!(
            addrs(text),
            vec![
                ip("10.64.0.1"),
                ip("10.64.0.2"),
                ip("fd00::53"),
                ip("2001:db8::1")
            ]
        );
        // A device without DNS prints the fields empty (or nothing at all).
        assert!(addrs("IP4.DNS:\nIP6.DNS:\n").is_empty());
        assert!(addrs("").is_empty());
        // Other fields and garbage are skipped.
        assert!(addrs("GENERAL.DEVICE:wlan0\nIP4.GATEWAY:192.168.1.1\nIP4.DNS[1]:nonsense\n").is_empty());
        let s = &parse_nmcli_dns("IP6.DNS[1]:fe80::1%wlan0")[0];
        assert_eq!((s.addr, s.scope.as_deref()), (ip("fe80::1"), Some("wlan0")));
    }

    #[test]
    fn a_server_a_link_names_is_not_given_to_the_others() {
        let links = [
            link("wlan0", &["198.18.1.2/24"]),
            link("wwan0", &["198.18.2.2/24"]),
        ];
        // NetworkManager says wwan0's carrier resolver is 10.64.0.1 (on no path's subnet);
        // resolv.conf lists it too, beside one reachable from anywhere.
        let learnt = Learnt {
            servers: vec![
                ("wwan0".into(), vec![parse_server("10.64.0.1").unwrap()]),
                (
                    String::new(),
                    vec![
                        parse_server("10.64.0.1").unwrap(),
                        parse_server("9.9.9.9").unwrap(),
                    ],
                ),
            ],
        };
        let per = assign(&learnt, &["wlan0", "wwan0"], &links, &BTreeMap::new(), &[]);
        assert_eq!(
            per,
            vec![vec![ip("9.9.9.9")], vec![ip("10.64.0.1"), ip("9.9.9.9")]]
        );
    }

    #[test]
    fn assigns_servers_by_subnet_scope_and_override() {
        let links = [
            link("wlan0", &["198.18.1.2/24", "fd18:1::2/64"]),
            link("wwan0", &["198.18.2.2/24"]),
        ];
        let learnt = Learnt {
            servers: vec![(
                String::new(),
                vec![
                    parse_server("198.18.1.1").unwrap(),
                    parse_server("198.18.2.1").unwrap(),
                    parse_server("fe80::1%wwan0").unwrap(),
                    parse_server("9.9.9.9").unwrap(),
                    parse_server("127.0.0.53").unwrap(),
                    parse_server("100.100.0.1").unwrap(),
                ],
            )],
        };
        let own = [ip("100.100.0.1")];
        let per = assign(&learnt, &["wlan0", "wwan0"], &links, &BTreeMap::new(), &own);
        assert_eq!(per[0], vec![ip("198.18.1.1"), ip("9.9.9.9")]);
        assert_eq!(per[1], vec![ip("198.18.2.1"), ip("fe80::1"), ip("9.9.9.9")]);
        let mut over = BTreeMap::new();
        over.insert("wwan0".to_string(), vec![ip("10.0.0.1")]);
        let per = assign(&learnt, &["wlan0", "wwan0"], &links, &over, &own);
        assert_eq!(per[1], vec![ip("10.0.0.1")]);
        // Resolved's per-link servers go to their link; a link that is no path is ignored.
        let learnt = Learnt {
            servers: vec![
                ("wlan0".into(), vec![parse_server("10.9.9.9").unwrap()]),
                ("tun-other".into(), vec![parse_server("10.8.8.8").unwrap()]),
            ],
        };
        let per = assign(&learnt, &["wlan0", "wwan0"], &links, &BTreeMap::new(), &own);
        assert_eq!(per, vec![vec![ip("10.9.9.9")], vec![]]);
    }

    #[test]
    fn ops_for_each_backend_undo_to_the_old_state() {
        let old = FileBefore::Content {
            bytes: b"nameserver 198.18.1.1\n".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        let before = Before::ResolvConf {
            path: "/tmp/x/resolv.conf".into(),
            old: old.clone(),
        };
        let ops = ops(&before, "mpbond0", &[ip("100.100.0.1")]);
        assert_eq!(ops.len(), 1);
        let Some(Op::RestoreFile { old: back, .. }) = ops[0].inverse() else {
            panic!("{:?}", ops[0].inverse());
        };
        assert_eq!(back, old);
        let before = Before::Resolved {
            default_routes: vec![("wlan0".into(), true)],
        };
        let ops = super::ops(&before, "mpbond0", &[ip("100.100.0.1")]);
        assert_eq!(
            ops[1].inverse(),
            Some(Op::ResolvedDefaultRoute {
                dev: "wlan0".into(),
                value: true,
                old: false
            })
        );
        assert_eq!(
            ops[0].inverse(),
            Some(Op::ResolvedRevert {
                dev: "mpbond0".into()
            })
        );
        assert_eq!(
            backend(
                &DnsConfig {
                    resolv_conf_explicit: true,
                    ..DnsConfig::default()
                },
                true
            ),
            DnsBackend::ResolvConf
        );
        assert_eq!(backend(&DnsConfig::default(), true), DnsBackend::Resolved);
        assert_eq!(backend(&DnsConfig::default(), false), DnsBackend::ResolvConf);
    }
}
