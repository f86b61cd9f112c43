//! Root-only lab test of DNS that rides the failover (issue 14): a dnsmasq resolver on the
//! Wi-Fi router (answering `lab.test` with 198.18.77.1) and one on the cellular router
//! (198.18.77.2), the laptop's resolv.conf naming the Wi-Fi router's. With mpbond up, lookups go
//! to mpbond; after the Wi-Fi link goes down, and after it is blackholed, the first lookup must
//! answer within 1 s (from the cellular resolver). `down`, and `down` after a crash, put the
//! resolv.conf back byte for byte. The test never touches the machine's own /etc/resolv.conf:
//! the daemon takes over one in its run dir (`--resolv-conf`).
//!
//! A second test plugs a USB tether (`usb0`, detected while running) in after `up`, with its
//! own resolver on its router; a stub `nmcli` on the daemon's PATH stands in for
//! NetworkManager and names that resolver as usb0's. Once the Wi-Fi and the cellular paths fail
//! (link down, then blackholed) the tether's resolver must answer the first lookup.
//!
//! A third runs the real systemd-resolved (unpacked by `tools/fetch-resolved`, never installed)
//! in the laptop namespace with a private /run and a private D-Bus: `up` must give mpbond0
//! mpbond's servers and the `~.` routing domain, learn the per-link servers from it, and `down`
//! must leave resolved's per-link state as it was.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "lab test: panics on setup failure, prints the measured times, wall-clock timing"
)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, RunDir, lab, mpbond, resolv_conf, skip_unless_root, status, stderr, wait_for, wait_usable,
};
use netlab::Lab;
use std::os::unix::fs::PermissionsExt as _;

const WIFI_DNS: &str = "198.18.1.1";
const CELL_DNS: &str = "198.18.2.1";
const WIFI_ANSWER: &str = "198.18.77.1";
const CELL_ANSWER: &str = "198.18.77.2";
const NAME: &str = "lab.test";

/// A dnsmasq in a router namespace, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(lab: &Lab, ns: &str, listen: &str, answer: &str, dir: &Path) -> Dnsmasq {
        let child = lab
            .command(ns, "dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                "--port=53",
            ])
            .arg(format!("--listen-address={listen}"))
            .arg(format!("--address=/{NAME}/{answer}"))
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("dnsmasq-{listen}.pid")).display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One UDP lookup of `NAME` at `server` from the laptop (one query, 3 s wait): the addresses
/// and the time it took.
fn lookup(lab: &Lab, server: SocketAddr) -> (Result<Vec<IpAddr>, String>, Duration) {
    lab.run_in(&lab.ns().laptop, move || {
        let start = Instant::now();
        let r = netlab::client::dns_lookup(server, NAME, false, Duration::from_secs(3), 1, None)
            .map_err(|e| e.to_string());
        (r, start.elapsed())
    })
    .unwrap()
}

/// One lookup over TCP (RFC 1035 §4.2.2 framing).
fn lookup_tcp(lab: &Lab, server: SocketAddr) -> Vec<IpAddr> {
    lab.run_in(&lab.ns().laptop, move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let q = netlab::dns::build_query(0x7c01, NAME, netlab::dns::TYPE_A).unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut m).unwrap();
        netlab::dns::parse_response(&m, 0x7c01).unwrap()
    })
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The first `nameserver` of a resolv.conf.
fn nameservers(path: &Path) -> Vec<IpAddr> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|a| a.trim().parse().unwrap())
        .collect()
}

/// Looks up until the answer comes from `want` (bounded).
fn wait_answer_from(lab: &Lab, server: SocketAddr, want: &str) {
    wait_for(
        &format!("answers from {want}"),
        Duration::from_secs(15),
        || matches!(lookup(lab, server).0, Ok(a) if a == vec![ip(want)]),
    );
}

/// The issue's round trips: 20 ms over Wi-Fi, 50 ms over cellular.
fn set_issue_delays(lab: &Lab) {
    lab.set_delay(netlab::Path::Wifi, Duration::from_millis(20))
        .unwrap();
    lab.set_delay(netlab::Path::Cell, Duration::from_millis(50))
        .unwrap();
}

/// A resolver on the Wi-Fi router and one on the cellular router (stopped when dropped).
fn router_resolvers(lab: &Lab, dir: &Path) -> [Dnsmasq; 2] {
    [
        Dnsmasq::start(lab, &lab.ns().wifi, WIFI_DNS, WIFI_ANSWER, dir),
        Dnsmasq::start(lab, &lab.ns().cell, CELL_DNS, CELL_ANSWER, dir),
    ]
}

#[test]
fn lookups_ride_the_failover_and_down_restores_resolv_conf() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    set_issue_delays(&lab);
    let rd = RunDir::new();
    let _dns = router_resolvers(&lab, rd.path());
    // Both resolvers answer directly before mpbond is up.
    for (server, want) in [(WIFI_DNS, WIFI_ANSWER), (CELL_DNS, CELL_ANSWER)] {
        let sa = SocketAddr::new(ip(server), 53);
        wait_for(
            &format!("dnsmasq on {server}"),
            Duration::from_secs(10),
            || matches!(lookup(&lab, sa).0, Ok(a) if a == vec![ip(want)]),
        );
    }
    // The laptop's resolv.conf names the Wi-Fi router (as NetworkManager writes it); the
    // cellular path's resolver comes from the config.
    let rc = resolv_conf(rd.path());
    let original =
        format!("# Generated by NetworkManager\nsearch lab\nnameserver {WIFI_DNS}\noptions timeout:1\n");
    std::fs::write(&rc, &original).unwrap();
    let cfg = rd.path().join("mpbond.toml");
    std::fs::write(&cfg, format!("[dns.servers]\nwwan0 = [\"{CELL_DNS}\"]\n")).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();

    let mut d = Daemon::start(&lab, rd.path(), &["--config", &cfg_s]);
    wait_usable(&lab, rd.path());
    let ours = std::fs::read_to_string(&rc).unwrap();
    assert!(
        ours.contains("search lab\n") && ours.contains("options timeout:1\n"),
        "{ours}"
    );
    let servers = nameservers(&rc);
    assert!(!servers.contains(&ip(WIFI_DNS)), "{ours}");
    let v4 = SocketAddr::new(*servers.iter().find(|a| a.is_ipv4()).unwrap(), 53);
    let v6 = servers
        .iter()
        .find(|a| a.is_ipv6())
        .map(|a| SocketAddr::new(*a, 53));

    // Lookups through mpbond, UDP and TCP, IPv4 and IPv6, answered by the Wi-Fi resolver.
    let (r, took) = lookup(&lab, v4);
    assert_eq!(r.unwrap(), vec![ip(WIFI_ANSWER)]);
    println!(
        "lookup via mpbond, both paths up: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(lookup_tcp(&lab, v4), vec![ip(WIFI_ANSWER)]);
    if let Some(v6) = v6 {
        assert_eq!(lookup(&lab, v6).0.unwrap(), vec![ip(WIFI_ANSWER)]);
        assert_eq!(lookup_tcp(&lab, v6), vec![ip(WIFI_ANSWER)]);
    }

    // Wi-Fi link down: the first lookup answers within 1 s, from the cellular resolver.
    lab.set_link(netlab::Path::Wifi, false).unwrap();
    let (r, down_took) = lookup(&lab, v4);
    println!(
        "first lookup after Wi-Fi link down: {:.1} ms",
        down_took.as_secs_f64() * 1e3
    );
    assert_eq!(r.unwrap(), vec![ip(CELL_ANSWER)]);
    assert!(down_took < Duration::from_secs(1), "{down_took:?}");
    assert_eq!(lookup_tcp(&lab, v4), vec![ip(CELL_ANSWER)]);

    // Back up: Wi-Fi answers again.
    lab.set_link(netlab::Path::Wifi, true).unwrap();
    wait_usable(&lab, rd.path());
    wait_answer_from(&lab, v4, WIFI_ANSWER);

    // Wi-Fi blackholed (link up, nothing answers): the first lookup answers within 1 s.
    lab.set_blackhole(netlab::Path::Wifi, true).unwrap();
    let (r, bh_took) = lookup(&lab, v4);
    println!(
        "first lookup after Wi-Fi blackholed: {:.1} ms",
        bh_took.as_secs_f64() * 1e3
    );
    assert_eq!(r.unwrap(), vec![ip(CELL_ANSWER)]);
    assert!(bh_took < Duration::from_secs(1), "{bh_took:?}");
    // The next one goes to cellular first (Wi-Fi is suspect and only probed).
    let (r, next_took) = lookup(&lab, v4);
    println!(
        "second lookup, Wi-Fi still blackholed: {:.1} ms",
        next_took.as_secs_f64() * 1e3
    );
    assert_eq!(r.unwrap(), vec![ip(CELL_ANSWER)]);
    assert!(next_took < Duration::from_millis(300), "{next_took:?}");
    lab.set_blackhole(netlab::Path::Wifi, false).unwrap();
    wait_answer_from(&lab, v4, WIFI_ANSWER);

    let st = status(&lab, rd.path());
    let dns = st.dns.clone().expect("dns in status");
    println!(
        "{}",
        st.render(false)
            .lines()
            .find(|l| l.starts_with("dns on"))
            .unwrap()
    );
    // The link loss is known from netlink before the lookup (no retry needed); the blackhole is
    // found by the timeout, a failover.
    assert!(dns.counters.failovers >= 1, "{dns:?}");
    assert_eq!(dns.counters.servfail, 0, "{dns:?}");
    assert!(dns.paths.iter().all(|p| p.answered > 0), "{dns:?}");
    assert_eq!(dns.paths[0].resolvers, vec![ip(WIFI_DNS)]);
    assert_eq!(dns.paths[1].resolvers, vec![ip(CELL_DNS)]);

    // `down` puts the resolv.conf back byte for byte.
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    d.wait_exit();
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), original);

    // After a crash too: `down` replays the journal.
    let mut d = Daemon::start(&lab, rd.path(), &["--config", &cfg_s]);
    assert_ne!(std::fs::read_to_string(&rc).unwrap(), original);
    d.kill9();
    assert_ne!(std::fs::read_to_string(&rc).unwrap(), original);
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), original);
}

/// The tether's resolver (its router's address on its subnet, netlab's `add_uplink` 4) and
/// what it answers.
const TETHER_DNS: &str = "198.18.4.1";
const TETHER_ANSWER: &str = "198.18.77.4";

/// Writes a stub `nmcli` into `dir`: it stands in for NetworkManager, which manages only the
/// tether here (the DHCP-given resolver of `usb0` is its router's); every call is logged.
fn stub_nmcli(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         # Stands in for NetworkManager's nmcli in the lab (no NetworkManager runs there).\n\
         echo \"$*\" >> {log}\n\
         case \"$*\" in\n\
         \"-t -f IP4.DNS,IP6.DNS device show usb0\") echo 'IP4.DNS[1]:{TETHER_DNS}'; echo 'IP6.DNS:' ;;\n\
         *) echo \"Error: Device '$6' not found.\" >&2; exit 10 ;;\n\
         esac\n",
        log = dir.join("nmcli.log").display()
    );
    let path = bin.join("nmcli");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_tether_plugged_in_after_up_answers_lookups_with_its_own_resolver_when_the_others_fail() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    set_issue_delays(&lab);
    let rd = RunDir::new();
    let _dns = router_resolvers(&lab, rd.path());
    let rc = resolv_conf(rd.path());
    let original = format!("nameserver {WIFI_DNS}\n");
    std::fs::write(&rc, &original).unwrap();
    let cfg = rd.path().join("mpbond.toml");
    std::fs::write(&cfg, format!("[dns.servers]\nwwan0 = [\"{CELL_DNS}\"]\n")).unwrap();
    let bin = stub_nmcli(rd.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut d = Daemon::start_env(
        &lab,
        rd.path(),
        &["--wifi", "wlan0", "--cellular", "wwan0"],
        &["--config", cfg.to_str().unwrap()],
        &[("PATH", path)],
    );
    wait_usable(&lab, rd.path());
    let v4 = SocketAddr::new(*nameservers(&rc).iter().find(|a| a.is_ipv4()).unwrap(), 53);
    assert_eq!(lookup(&lab, v4).0.unwrap(), vec![ip(WIFI_ANSWER)]);

    // The tether is plugged in, its router's resolver starts.
    let plugged = Instant::now();
    lab.add_uplink("usb0", 4, 300, None).unwrap();
    let _tether_dns = Dnsmasq::start(&lab, &lab.ns().inet, TETHER_DNS, TETHER_ANSWER, rd.path());
    let tether_resolvers = || {
        status(&lab, rd.path())
            .dns
            .and_then(|d| d.paths.into_iter().find(|p| p.interface == "usb0"))
            .map(|p| p.resolvers)
    };
    wait_for("usb0's resolver learnt", Duration::from_secs(15), || {
        tether_resolvers() == Some(vec![ip(TETHER_DNS)])
    });
    println!(
        "usb0 plugged in: its resolver learnt (stub nmcli) {:.0} ms after it appeared",
        plugged.elapsed().as_secs_f64() * 1e3
    );
    wait_for("usb0 usable", Duration::from_secs(10), || {
        status(&lab, rd.path())
            .interfaces
            .iter()
            .any(|i| i.name == "usb0" && i.usable)
    });
    let nm_calls = std::fs::read_to_string(rd.path().join("nmcli.log")).unwrap();
    assert!(nm_calls.contains("device show usb0"), "{nm_calls}");

    // Wi-Fi and cellular links down: the first lookup is answered by the tether's resolver.
    for p in netlab::Path::ALL {
        lab.set_link(p, false).unwrap();
    }
    let (r, down_took) = lookup(&lab, v4);
    println!(
        "first lookup after Wi-Fi and cellular link down, through the hot-plugged usb0: {:.1} ms ({r:?})",
        down_took.as_secs_f64() * 1e3
    );
    assert_eq!(r.unwrap(), vec![ip(TETHER_ANSWER)]);
    assert!(down_took < Duration::from_secs(3), "{down_took:?}");
    for p in netlab::Path::ALL {
        lab.set_link(p, true).unwrap();
    }
    wait_usable(&lab, rd.path());
    wait_answer_from(&lab, v4, WIFI_ANSWER);

    // Both blackholed (links up, nothing answers): the first lookup fails over to the tether.
    for p in netlab::Path::ALL {
        lab.set_blackhole(p, true).unwrap();
    }
    let (r, bh_took) = lookup(&lab, v4);
    println!(
        "first lookup after Wi-Fi and cellular blackholed, through the hot-plugged usb0: {:.1} ms ({r:?})",
        bh_took.as_secs_f64() * 1e3
    );
    assert_eq!(r.unwrap(), vec![ip(TETHER_ANSWER)]);
    assert!(bh_took < Duration::from_secs(3), "{bh_took:?}");
    for p in netlab::Path::ALL {
        lab.set_blackhole(p, false).unwrap();
    }

    // Unplugged: its path is forgotten.
    lab.remove_uplink("usb0").unwrap();
    wait_for("usb0's DNS path forgotten", Duration::from_secs(10), || {
        tether_resolvers().is_none()
    });
    let dns = status(&lab, rd.path()).dns.unwrap();
    assert_eq!(dns.paths[0].resolvers, vec![ip(WIFI_DNS)]);
    assert_eq!(dns.paths[1].resolvers, vec![ip(CELL_DNS)]);

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    d.wait_exit();
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), original);
}

/// Where `tools/fetch-resolved` unpacks systemd-resolved (`MPBOND_LAB_RESOLVED` overrides).
fn resolved_root() -> std::path::PathBuf {
    std::env::var_os("MPBOND_LAB_RESOLVED")
        .map_or_else(|| "/var/cache/mpbond-lab/resolved/root".into(), Into::into)
}

/// systemd-resolved and its private D-Bus in the laptop namespace (a mount namespace of their
/// own: a private /run, and a passwd naming its user), both killed on drop.
struct Resolved {
    child: Child,
    dbus_pid: Option<u32>,
    env: Vec<(&'static str, String)>,
    root: std::path::PathBuf,
    laptop: String,
    dir: std::path::PathBuf,
}

impl Resolved {
    fn start(lab: &Lab, dir: &Path, root: &Path) -> Resolved {
        let bus = dir.join("bus");
        std::fs::write(
            dir.join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\n\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                bus.display()
            ),
        )
        .unwrap();
        for (f, line) in [
            (
                "passwd",
                "systemd-resolve:x:990:990:resolved:/run/systemd:/usr/sbin/nologin\n",
            ),
            ("group", "systemd-resolve:x:990:\n"),
        ] {
            let mut text = std::fs::read_to_string(format!("/etc/{f}")).unwrap();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            std::fs::write(dir.join(f), text).unwrap();
        }
        // The machine's own resolv.conf would be resolved's global servers: none here.
        std::fs::write(dir.join("host-resolv.conf"), "# the lab's: no servers\n").unwrap();
        let d = dir.display();
        let script = format!(
            "set -e\n\
             mount --make-rprivate /\n\
             mount -t tmpfs tmpfs /run\n\
             mount --bind {d}/passwd /etc/passwd\n\
             mount --bind {d}/group /etc/group\n\
             mount --bind {d}/host-resolv.conf /etc/resolv.conf\n\
             mkdir -p /run/systemd /run/dbus\n\
             dbus-daemon --config-file={d}/bus.conf --fork --print-pid=3 3>{d}/dbus.pid\n\
             exec {} \n",
            root.join("lib/systemd/systemd-resolved").display()
        );
        let laptop = lab.ns().laptop.clone();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &laptop, "unshare", "-m", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", bus.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("resolved.log")).unwrap())
            .spawn()
            .unwrap();
        let path = format!(
            "{}:{}",
            root.join("usr/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut r = Resolved {
            child,
            dbus_pid: None,
            env: vec![
                ("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", bus.display())),
                ("PATH", path),
            ],
            root: root.to_owned(),
            laptop,
            dir: dir.to_owned(),
        };
        wait_for("systemd-resolved on its bus", Duration::from_secs(10), || {
            r.dbus_pid = std::fs::read_to_string(dir.join("dbus.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            r.try_ctl(&["dns"]).is_ok()
        });
        r
    }

    fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &self.laptop])
            .arg(self.root.join("usr/bin/resolvectl"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("resolvectl {args:?}: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("resolved.log")).unwrap_or_default()
    }

    /// resolved's per-link state of `links`: servers, domains, default-route flag.
    fn state(&self, links: &[&str]) -> String {
        links
            .iter()
            .flat_map(|l| [vec!["dns", l], vec!["domain", l], vec!["default-route", l]])
            .map(|a| self.ctl(&a))
            .collect()
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.dbus_pid {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn with_systemd_resolved_up_sets_the_tun_as_the_default_dns_route_and_down_puts_it_back() {
    if skip_unless_root() {
        return;
    }
    let root = resolved_root();
    if !root.join("lib/systemd/systemd-resolved").exists() {
        println!(
            "skipped: no systemd-resolved unpacked in {} (run tools/fetch-resolved)",
            root.display()
        );
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let _dns = router_resolvers(&lab, rd.path());
    let resolved = Resolved::start(&lab, rd.path(), &root);
    // What NetworkManager would have told resolved for each link.
    resolved.ctl(&["dns", "wlan0", WIFI_DNS]);
    resolved.ctl(&["domain", "wlan0", "lab"]);
    resolved.ctl(&["dns", "wwan0", CELL_DNS]);
    let links = ["wlan0", "wwan0"];
    let before = resolved.state(&links);
    assert!(before.contains(WIFI_DNS) && before.contains("yes"), "{before}");

    let cfg = rd.path().join("mpbond.toml");
    std::fs::write(&cfg, "[dns]\nbackend = \"resolved\"\n").unwrap();
    // No `--resolv-conf` (it selects the other backend).
    let args: Vec<&str> = "--wifi wlan0 --cellular wwan0 --config"
        .split(' ')
        .chain([cfg.to_str().unwrap()])
        .collect();
    let mut d = Daemon::launch(&lab, rd.path(), &args, &resolved.env);
    wait_usable(&lab, rd.path());
    let dns = status(&lab, rd.path()).dns.expect("dns in status");
    assert_eq!(dns.backend, "resolved");
    // The per-link servers were learnt from resolved.
    assert_eq!(dns.paths[0].resolvers, vec![ip(WIFI_DNS)], "{dns:?}");
    assert_eq!(dns.paths[1].resolvers, vec![ip(CELL_DNS)], "{dns:?}");
    let tun_dns = resolved.ctl(&["dns", "mpbond0"]);
    for a in &dns.listen {
        assert!(tun_dns.contains(&a.to_string()), "{tun_dns}");
    }
    let tun_domain = resolved.ctl(&["domain", "mpbond0"]);
    assert!(tun_domain.contains("~."), "{tun_domain}");
    assert!(resolved.ctl(&["default-route", "mpbond0"]).contains("yes"));
    for l in links {
        let r = resolved.ctl(&["default-route", l]);
        assert!(r.trim_end().ends_with("no"), "{l}: {r}");
    }
    // A lookup through mpbond (resolved's choice of server is its own business).
    let v4 = SocketAddr::new(dns.listen[0], 53);
    let (r, took) = lookup(&lab, v4);
    assert_eq!(r.unwrap(), vec![ip(WIFI_ANSWER)]);
    // Through resolved's own stub: it routes the lookup to mpbond0's servers.
    let stub = SocketAddr::new(ip("127.0.0.53"), 53);
    let (r, stub_took) = lookup(&lab, stub);
    assert_eq!(r.unwrap(), vec![ip(WIFI_ANSWER)]);
    let answered = status(&lab, rd.path()).dns.unwrap().paths[0].answered;
    assert!(answered >= 2, "the stub's lookup went through mpbond: {answered}");
    println!(
        "resolved backend: mpbond0 has {} and `{}`; lookup via mpbond {:.1} ms, via resolved's stub {:.1} ms",
        tun_dns.trim(),
        tun_domain.trim(),
        took.as_secs_f64() * 1e3,
        stub_took.as_secs_f64() * 1e3
    );

    // A tether plugged in while running: its per-link servers (as NetworkManager gives them to
    // resolved) are learnt from resolved.
    let plugged = Instant::now();
    lab.add_uplink("usb0", 4, 300, None).unwrap();
    resolved.ctl(&["dns", "usb0", TETHER_DNS]);
    wait_for(
        "usb0's resolver learnt from resolved",
        Duration::from_secs(15),
        || {
            status(&lab, rd.path())
                .dns
                .unwrap()
                .paths
                .iter()
                .any(|p| p.interface == "usb0" && p.resolvers == vec![ip(TETHER_DNS)])
        },
    );
    println!(
        "usb0's resolver learnt from resolved {:.0} ms after it appeared",
        plugged.elapsed().as_secs_f64() * 1e3
    );
    // Like the links at `up`, it is no DNS default route while mpbond is up...
    wait_for("usb0 no DNS default route", Duration::from_secs(5), || {
        resolved
            .ctl(&["default-route", "usb0"])
            .trim_end()
            .ends_with("no")
    });

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    d.wait_exit();
    let after = resolved.state(&links);
    assert_eq!(after, before, "resolved's per-link state after `down`");
    // ... and is one again after `down`.
    let usb = resolved.ctl(&["default-route", "usb0"]);
    assert!(usb.trim_end().ends_with("yes"), "{usb}");
    println!("after down, resolved's per-link state is as before:\n{after}");
}
