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

#[test]
fn lookups_ride_the_failover_and_down_restores_resolv_conf() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    // The round trips: 20 ms over Wi-Fi, 50 ms over cellular.
    lab.set_delay(netlab::Path::Wifi, Duration::from_millis(20))
        .unwrap();
    lab.set_delay(netlab::Path::Cell, Duration::from_millis(50))
        .unwrap();
    let rd = RunDir::new();
    let _wifi_dns = Dnsmasq::start(&lab, &lab.ns().wifi, WIFI_DNS, WIFI_ANSWER, rd.path());
    let _cell_dns = Dnsmasq::start(&lab, &lab.ns().cell, CELL_DNS, CELL_ANSWER, rd.path());
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
    lab.set_delay(netlab::Path::Wifi, Duration::from_millis(20))
        .unwrap();
    lab.set_delay(netlab::Path::Cell, Duration::from_millis(50))
        .unwrap();
    let rd = RunDir::new();
    let _wifi_dns = Dnsmasq::start(&lab, &lab.ns().wifi, WIFI_DNS, WIFI_ANSWER, rd.path());
    let _cell_dns = Dnsmasq::start(&lab, &lab.ns().cell, CELL_DNS, CELL_ANSWER, rd.path());
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
