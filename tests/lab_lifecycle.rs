//! Root-only lab tests of `mpbond up` / `status` / `down` in a netlab laptop namespace (skipped
//! when not root). Every wait polls with a deadline; no sleep is an assertion.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failure")]
#![allow(clippy::print_stdout, reason = "the skip notice for non-root runs")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{
    BIN, Daemon, RunDir, exec, lab, mpbond, skip_unless_root, snapshot, status, stderr, wait_for,
};
use mpbond::config::{Config, FileConfig, Overrides};
use mpbond::route::plan::{self, Op, RuleAction};
use netlab::Lab;

/// An address of the lab's internet namespace.
const INET_HOST: &str = "198.19.0.11";
/// Its IPv6 address.
const INET_HOST6: &str = "fd19::11";

fn lab_config() -> Config {
    let flags = Overrides {
        wifi: Some("wlan0".into()),
        cellular: Some("wwan0".into()),
        mode: None,
        ..Overrides::default()
    };
    Config::resolve(FileConfig::default(), &flags, &|_| None).unwrap()
}

/// Checks that every op of the plan is visible in the laptop namespace.
fn assert_plan_applied(lab: &Lab, pre_up: &mpbond::route::HostState) {
    let config = lab_config();
    let p = plan::plan(&config, pre_up).unwrap();
    let rules4 = exec(lab, &["ip", "-4", "rule"]);
    let rules6 = exec(lab, &["ip", "-6", "rule"]);
    let link = exec(lab, &["ip", "link", "show", "dev", "mpbond0"]);
    let addrs = exec(lab, &["ip", "addr", "show", "dev", "mpbond0"]);
    let table = config.routing.table.to_string();
    let routes4 = exec(lab, &["ip", "-4", "route", "show", "table", &table]);
    let routes6 = exec(lab, &["ip", "-6", "route", "show", "table", &table]);
    let nft = exec(lab, &["nft", "list", "table", "inet", "mpbond"]);
    for op in &p.ops {
        match op {
            Op::Sysctl { key, value, .. } => {
                let got = exec(lab, &["sysctl", "-n", &key.replace('/', ".")]);
                assert_eq!(got.trim(), value, "{op}");
            }
            Op::NftCreate { .. } => {
                assert!(nft.contains("iifname @uplinks tcp dport 61000-64999"), "{nft}");
                // nft lists the set's elements one a line.
                let elements: String = nft.split_whitespace().collect();
                assert!(elements.contains(r#"elements={"wlan0","wwan0"}"#), "{nft}");
                assert!(nft.contains("meta mark set ct mark"), "{nft}");
                assert!(nft.contains("ct mark set meta mark"), "{nft}");
            }
            Op::CreateTun { .. } => assert!(link.contains("mpbond0:"), "{link}"),
            Op::SetMtu { mtu, .. } => assert!(link.contains(&format!("mtu {mtu} ")), "{link}"),
            Op::LinkUp { .. } => assert!(link.contains(",UP,") || link.contains("<UP"), "{link}"),
            Op::AddAddr { addr, .. } => assert!(addrs.contains(&addr.to_string()), "{addrs}"),
            Op::AddRoute(r) => {
                let routes = if r.dst.addr().is_ipv4() {
                    &routes4
                } else {
                    &routes6
                };
                assert!(routes.contains(&format!("default dev {}", r.dev)), "{routes}");
            }
            Op::AddRule(r) => {
                let rules = match r.family {
                    plan::Family::V4 => &rules4,
                    plan::Family::V6 => &rules6,
                };
                let mut want = format!("{}:\t", r.priority);
                match r.fwmark {
                    Some(m) if m.invert => want += &format!("not from all fwmark {:#x} ", m.mark),
                    Some(m) => want += &format!("from all fwmark {:#x} ", m.mark),
                    None => want += "from all ",
                }
                match &r.action {
                    RuleAction::Lookup {
                        table,
                        suppress_prefixlength,
                    } => {
                        want += &format!(
                            "lookup {}",
                            if *table == 254 {
                                "main".to_string()
                            } else {
                                table.to_string()
                            }
                        );
                        if let Some(s) = suppress_prefixlength {
                            want += &format!(" suppress_prefixlength {s}");
                        }
                    }
                    RuleAction::Unreachable => want += "unreachable",
                }
                assert!(
                    rules.lines().any(|l| l.trim_end() == want),
                    "{want:?} not in\n{rules}"
                );
            }
            other => panic!("the plan has an unexpected op {other}"),
        }
    }
}

/// Reads the laptop's host state through rtnetlink from inside its namespace.
fn host_state(lab: &Lab) -> mpbond::route::HostState {
    let config = lab_config();
    lab.run_in(&lab.ns().laptop, move || {
        mpbond::route::Applier::new()
            .unwrap()
            .host_state(&config)
            .unwrap()
    })
    .unwrap()
}

/// IPv6: unmarked traffic goes into the TUN (a datagram arrives there), marked traffic over the
/// uplink (a marked ping is answered).
fn assert_ipv6_reaches_the_tun(lab: &Lab, run_dir: &Path) {
    let get = exec(lab, &["ip", "-6", "route", "get", INET_HOST6]);
    assert!(
        get.contains("dev mpbond0") && get.contains("table 28016"),
        "{get}"
    );
    let get = exec(lab, &["ip", "-6", "route", "get", INET_HOST6, "mark", "0x6d70"]);
    assert!(get.contains("dev wlan0"), "{get}");
    exec(
        lab,
        &["ping", "-6", "-c", "1", "-W", "5", "-m", "28016", INET_HOST6],
    );
    let udp1 = status(lab, run_dir).tun.rx_udp;
    exec(
        lab,
        &["bash", "-c", &format!("echo mpbond >/dev/udp/{INET_HOST6}/9")],
    );
    wait_for("the IPv6 datagram on the TUN", Duration::from_secs(10), || {
        status(lab, run_dir).tun.rx_udp > udp1
    });
}

#[test]
fn up_routes_traffic_into_the_tun_and_down_restores_everything() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let pre_up = host_state(&lab);
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    assert_plan_applied(&lab, &pre_up);

    // Unmarked traffic to the internet goes into the TUN; marked traffic uses the uplink.
    let get = exec(&lab, &["ip", "route", "get", INET_HOST]);
    assert!(
        get.contains("dev mpbond0") && get.contains("table 28016"),
        "{get}"
    );
    let get = exec(&lab, &["ip", "route", "get", INET_HOST, "mark", "0x6d70"]);
    assert!(get.contains("dev wlan0"), "{get}");
    // LAN routes of main still win for unmarked traffic (suppress_prefixlength 0).
    let get = exec(&lab, &["ip", "route", "get", "198.18.1.1"]);
    assert!(get.contains("dev wlan0"), "{get}");
    // A marked packet reaches the internet for real over wlan0 (replies pass rp_filter).
    exec(&lab, &["ping", "-c", "1", "-W", "5", "-m", "28016", INET_HOST]);

    // Segments to the subflow port range on a physical interface are dropped before the kernel
    // can answer them with a RST; other ports still get the kernel's RST (connection refused).
    let router = lab.ns().wifi.clone();
    let connect = |port: u16| {
        Command::new("ip")
            .args(["netns", "exec", &router, "timeout", "2", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/198.18.1.2/{port}"))
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(connect(60999), Some(1), "outside the range: refused");
    assert_eq!(connect(61001), Some(124), "inside the range: no answer");
    let nft = exec(&lab, &["nft", "list", "chain", "inet", "mpbond", "preraw"]);
    assert!(!nft.contains("counter packets 0 "), "{nft}");
    let reserved = exec(&lab, &["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"]);
    assert_eq!(reserved.trim(), "61000-64999");

    // A UDP datagram from the laptop to the internet arrives on the TUN.
    let udp0 = status(&lab, rd.path()).tun.rx_udp;
    exec(
        &lab,
        &["bash", "-c", &format!("echo mpbond >/dev/udp/{INET_HOST}/9")],
    );
    wait_for("the datagram on the TUN", Duration::from_secs(10), || {
        status(&lab, rd.path()).tun.rx_udp > udp0
    });
    assert_ipv6_reaches_the_tun(&lab, rd.path());
    let st = status(&lab, rd.path());
    assert_eq!(st.pid, d.pid());
    assert_eq!(st.interfaces.len(), 2);
    assert!(st.interfaces.iter().all(|i| i.up && i.index > 0));
    // The marked ping went out over wlan0: its counters moved.
    assert!(
        st.interfaces[0].tx_bytes > 0 && st.interfaces[0].rx_bytes > 0,
        "{st:?}"
    );
    assert!(
        st.interfaces[0]
            .addresses
            .contains(&"198.18.1.2/24".parse().unwrap()),
        "{st:?}"
    );
    let table = mpbond(&lab, rd.path(), &["status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("wwan0      backup    up"));

    // The watcher follows link changes and puts back the routes the kernel drops with the TUN.
    // Pull the cellular "cable": the wire's end of wwan0 goes down, wwan0 loses its carrier.
    let cwire = lab.ns().cell_wire.clone();
    lab.exec(
        &cwire,
        &["ip", "link", "set", "dev", netlab::WIRE_LAPTOP_SIDE, "down"],
    )
    .unwrap();
    wait_for("wwan0 without carrier in status", Duration::from_secs(10), || {
        !status(&lab, rd.path()).interfaces[1].carrier
    });
    lab.exec(
        &cwire,
        &["ip", "link", "set", "dev", netlab::WIRE_LAPTOP_SIDE, "up"],
    )
    .unwrap();
    wait_for("wwan0 carrier back in status", Duration::from_secs(10), || {
        status(&lab, rd.path()).interfaces[1].carrier
    });
    exec(&lab, &["ip", "link", "set", "mpbond0", "down"]);
    assert!(exec(&lab, &["ip", "-4", "route", "show", "table", "28016"]).is_empty());
    exec(&lab, &["ip", "link", "set", "mpbond0", "up"]);
    wait_for("routes put back", Duration::from_secs(10), || {
        exec(&lab, &["ip", "-4", "route", "show", "table", "28016"]).contains("default dev mpbond0")
            && exec(&lab, &["ip", "-6", "route", "show", "table", "28016"]).contains("default dev mpbond0")
            && exec(&lab, &["ip", "-6", "addr", "show", "dev", "mpbond0"])
                .contains("fd6d:7062:6f6e:6400::1/128")
    });

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
    assert_eq!(before, snapshot(&lab), "down did not restore the laptop");
    // Repeating `down` is fine and changes nothing.
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before, snapshot(&lab));
    // Without a daemon, `status` says so and exits 1.
    let o = mpbond(&lab, rd.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("mpbond is not running"), "{}", stderr(&o));
}

#[test]
fn the_unreachable_guard_keeps_marked_packets_out_of_the_tun() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let _d = Daemon::start(&lab, rd.path(), &[]);
    // Without physical default routes, a marked packet gets "unreachable", never the TUN.
    let defaults = exec(&lab, &["ip", "-4", "route", "show", "default"]);
    for line in defaults.lines() {
        let mut args = vec!["ip", "-4", "route", "del"];
        args.extend(line.split_whitespace());
        exec(&lab, &args);
    }
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.ns().laptop])
        .args(["ip", "route", "get", INET_HOST, "mark", "0x6d70"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success() && text.contains("unreachable"), "{text}");
    // Unmarked traffic still goes to the TUN.
    assert!(exec(&lab, &["ip", "route", "get", INET_HOST]).contains("dev mpbond0"));
    for line in defaults.lines() {
        let mut args = vec!["ip", "-4", "route", "add"];
        args.extend(line.split_whitespace());
        exec(&lab, &args);
    }
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before, snapshot(&lab));
}

#[test]
fn down_cleans_up_after_kill_9_and_up_cleans_a_stale_journal() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let before = snapshot(&lab);

    let mut d = Daemon::start(&lab, rd.path(), &[]);
    d.kill9();
    // The TUN went with the process; the rules, nft table and sysctls stay until `down`.
    assert!(exec(&lab, &["ip", "-4", "rule"]).contains("7110:"));
    assert!(rd.path().join("journal.jsonl").exists());
    let o = mpbond(&lab, rd.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before, snapshot(&lab), "down after kill -9");
    assert!(!rd.path().join("journal.jsonl").exists());

    // Killed again; this time the next `up` cleans the stale journal itself.
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    d.kill9();
    let d = Daemon::start(&lab, rd.path(), &[]);
    assert!(d.log().contains("did not shut down cleanly"), "{}", d.log());
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(d);
    assert_eq!(before, snapshot(&lab), "up after kill -9, then down");
}

#[test]
fn second_up_fails_cleanly_and_a_missing_interface_leaves_nothing() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let d = Daemon::start(&lab, rd.path(), &[]);
    let o = mpbond(
        &lab,
        rd.path(),
        &["up", "--foreground", "--wifi", "wlan0", "--cellular", "wwan0"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("already up") && err.contains(&d.pid().to_string()),
        "{err}"
    );
    // The first instance is untouched and still working.
    assert_ipv6_reaches_the_tun(&lab, rd.path());
    let st = status(&lab, rd.path());
    assert_eq!(st.pid, d.pid());
    let udp0 = st.tun.rx_udp;
    exec(
        &lab,
        &["bash", "-c", &format!("echo again >/dev/udp/{INET_HOST}/9")],
    );
    wait_for(
        "the first instance still counting",
        Duration::from_secs(10),
        || status(&lab, rd.path()).tun.rx_udp > udp0,
    );
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(d);
    assert_eq!(before, snapshot(&lab));

    // A missing interface: exit 1, one line, nothing left behind (foreground and background).
    for extra in [&["--foreground"][..], &[]] {
        let mut args = vec!["up", "--wifi", "wlan9", "--cellular", "wwan0"];
        args.extend_from_slice(extra);
        let o = mpbond(&lab, rd.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(
            err.trim_end(),
            "mpbond: primary interface wlan9 not found",
            "{args:?}"
        );
        assert_eq!(before, snapshot(&lab));
        assert!(!rd.path().join("journal.jsonl").exists());
        assert!(!rd.path().join("mpbond.pid").exists());
    }
}

#[test]
fn background_up_returns_once_ready_then_down() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let o = mpbond(&lab, rd.path(), &["up", "--wifi", "wlan0", "--cellular", "wwan0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // No waiting: once `up` returned, the TUN, routes and control socket are there.
    assert!(exec(&lab, &["ip", "link", "show", "dev", "mpbond0"]).contains("UP"));
    assert!(exec(&lab, &["ip", "-4", "route", "show", "table", "28016"]).contains("dev mpbond0"));
    let st = status(&lab, rd.path());
    let pid = st.pid;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // `down` returned after the daemon exited (its lock is released at exit).
    assert!(!rd.path().join("mpbond.pid").exists());
    assert_eq!(before, snapshot(&lab));
}

#[test]
fn a_failing_up_rolls_back_everything_it_did() {
    if skip_unless_root() {
        return;
    }
    let lab = lab();
    let rd = RunDir::new();
    // New devices get no IPv6: the TUN's IPv6 address is refused after the sysctls, the nft
    // table, the TUN and its IPv4 address were already made.
    exec(&lab, &["sysctl", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
    let before = snapshot(&lab);
    let o = mpbond(
        &lab,
        rd.path(),
        &[
            "-v",
            "up",
            "--foreground",
            "--wifi",
            "wlan0",
            "--cellular",
            "wwan0",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mpbond: `ip -6 addr add fd6d:7062:6f6e:6400::1/128 dev mpbond0 nodad` failed: "),
        "{err}"
    );
    // The log shows the steps done, then undone in reverse.
    let done = err.find("ip -4 addr add 100.127.77.1/32").unwrap();
    let undone = err.find("ip -4 addr del 100.127.77.1/32").unwrap();
    assert!(done < undone, "{err}");
    assert!(err.contains("nft delete table inet mpbond"), "{err}");
    assert_eq!(before, snapshot(&lab), "a failed up left something behind");
    assert!(!rd.path().join("journal.jsonl").exists());
    assert!(!rd.path().join("mpbond.pid").exists());
}

#[test]
fn up_and_down_refuse_to_run_without_root() {
    if skip_unless_root() {
        return;
    }
    for cmd in [&["up", "--wifi", "wlan0", "--cellular", "wwan0"][..], &["down"]] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["--run-dir", "/nonexistent/mpbond"])
            .args(cmd)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        assert_eq!(stderr(&o), "mpbond: must be run as root\n", "{cmd:?}");
    }
}
