//! Root-only, end to end: `mpbond up --converter` on the laptop and `mpbond server` (the RFC 8803
//! converter) on its own host in the lab. Flows to the lab's plain TCP server (no MPTCP) go
//! through the converter as MPTCP with a backup subflow, so they survive Wi-Fi going down or
//! going silent; the server sees the converter's address; a converter that does not answer
//! sends new flows direct within about a second and `status` shows it down.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]
#![allow(clippy::disallowed_methods, reason = "lab test: wall-clock deadlines")]

mod common;

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::time::{Duration, Instant};

use common::converter::{Outage, converter_addr, impair, start_converter};

use common::daemon::{Daemon, RunDir, counter, lab_with, skip_unless_root, status, wait_for, wait_usable};
use netlab::client::{self, ClientOpts};
use netlab::converter::CONVERTER_V4;
use netlab::{Lab, LabOptions, Path};

const PLAIN_SERVER: &str = "198.19.0.11:80";

fn opts() -> ClientOpts {
    ClientOpts {
        timeout: Duration::from_secs(60),
        ..ClientOpts::default()
    }
}

fn start_daemon<'a>(lab: &'a Lab, rd: &FsPath, key: &FsPath) -> Daemon<'a> {
    let conv = converter_addr();
    let key = key.to_str().unwrap();
    let d = Daemon::start(lab, rd, &["--converter", &conv, "--converter-key-file", key]);
    wait_usable(lab, rd);
    d
}

/// Peers of established connections to the plain server's port 80, seen in `inet`.
fn plain_server_peers(lab: &Lab) -> String {
    lab.exec(
        &lab.ns().inet,
        &["ss", "-Htn", "state", "established", "( sport = :80 )"],
    )
    .unwrap()
}

/// A `TcpExt` counter of namespace `ns` (`/proc/net/netstat`).
fn tcp_ext(lab: &Lab, ns: &str, name: &str) -> u64 {
    let text = lab.exec(ns, &["cat", "/proc/net/netstat"]).unwrap();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (rows.next().unwrap_or(""), rows.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {name} in {ns}"))
}

/// The interface of the first subflow of the open MPTCP flow through the converter (its initial
/// subflow: `status` lists a connection's subflows in order), or `?`.
fn initial_subflow(st: &mpbond::daemon::Status) -> String {
    let open = |i: usize| {
        st.subflows
            .iter()
            .any(|s| s.flow == i && s.state == "Established")
    };
    (0..st.flows.len())
        .find(|&i| st.flows[i].converter.is_some() && st.flows[i].mptcp && open(i))
        .and_then(|i| st.subflows.iter().find(|s| s.flow == i))
        .map_or_else(|| "?".into(), |s| s.interface.clone())
}

#[test]
fn flows_to_a_plain_server_go_through_the_converter_and_survive_wifi_loss() {
    if skip_unless_root() {
        return;
    }
    let mut lab = lab_with(LabOptions::default());
    let conv_ns = lab.add_converter().unwrap();
    let (conv, key, _dir) = start_converter(&lab, &conv_ns, "conv");
    let laptop = lab.ns().laptop.clone();
    let server: SocketAddr = PLAIN_SERVER.parse().unwrap();
    // Rate-limited paths keep the transfer going well past the outage.
    let n: u64 = 15_000_000;
    for p in Path::ALL {
        lab.set_rate(p, Some(40_000_000)).unwrap();
    }
    let rd = RunDir::new();
    let d = start_daemon(&lab, rd.path(), &key);
    let tfo_before = tcp_ext(&lab, &conv_ns, "TCPFastOpenPassive");

    // Upload and download byte-exact; the destination sees the converter, not the laptop's NAT.
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| {
            lab.run_in(&laptop, || client::http_get(server, n, &opts()))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(800));
        let peers = plain_server_peers(&lab);
        let r = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("download: {e}\n{}", d.log()));
        assert_eq!(r.bytes, n);
        peers
    });
    assert!(
        seen.contains(&CONVERTER_V4.to_string()),
        "the plain server's peers: {seen}"
    );
    for wan in [Path::Wifi.router_wan_v4(), Path::Cell.router_wan_v4()] {
        assert!(
            !seen.contains(&wan.to_string()),
            "the laptop reached the server itself: {seen}"
        );
    }
    let r = lab
        .run_in(&laptop, || client::http_post(server, 5_000_000, &opts()))
        .unwrap()
        .unwrap_or_else(|e| panic!("upload: {e}\n{}", d.log()));
    assert_eq!(r.bytes, 5_000_000);
    let st = status(&lab, rd.path());
    assert_eq!(counter(&st, "tcp_via_converter"), 2, "{:?}", st.counters);
    assert_eq!(
        counter(&st, "converter_failed"),
        0,
        "{:?}\n{}\n{}",
        st.counters,
        d.log(),
        conv.log()
    );
    assert!(st.converters.first().is_some_and(|c| c.up), "{:?}", st.converters);
    // 0-RTT: the converter's kernel took both Convert requests as SYN data (RFC 8803 §4,
    // RFC 8684 Appendix B).
    let tfo = tcp_ext(&lab, &conv_ns, "TCPFastOpenPassive") - tfo_before;
    assert!(tfo >= 2, "Convert requests taken in the SYN: {tfo}");

    // Wi-Fi lost mid-download, down or silent, at 20 and 50 ms RTT: byte-exact, no reset.
    for rtt in [20u64, 50] {
        for p in Path::ALL {
            lab.set_delay(p, Duration::from_millis(rtt)).unwrap();
        }
        for o in [Outage::LinkDown, Outage::Blackhole] {
            let before = status(&lab, rd.path()).recent_failovers.len();
            let t = Instant::now();
            let r = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    lab.run_in(&laptop, || client::http_get(server, n, &opts()))
                        .unwrap()
                });
                // The flow is under way through the converter before Wi-Fi goes.
                let mut via = false;
                for _ in 0..40 {
                    let st = status(&lab, rd.path());
                    if st
                        .flows
                        .iter()
                        .any(|f| f.converter.is_some() && f.mptcp && f.bytes_down > 0)
                    {
                        via = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(700));
                let first = initial_subflow(&status(&lab, rd.path()));
                impair(&lab, o, true);
                let r = h.join().unwrap();
                impair(&lab, o, false);
                assert!(
                    via,
                    "{o:?} at {rtt} ms: no MPTCP flow through the converter\n{}",
                    d.log()
                );
                (r, first)
            });
            let (r, first) = r;
            let r = r.unwrap_or_else(|e| panic!("{o:?} at {rtt} ms: {e}\n{}\n{}", d.log(), conv.log()));
            assert_eq!(r.bytes, n);
            let st = status(&lab, rd.path());
            let gap = st
                .recent_failovers
                .iter()
                .skip(before)
                .filter_map(|f| f.first_resume_us)
                .max();
            println!(
                "via converter, {o:?} at {rtt} ms RTT: {} MB in {:.1} s, failover gap measured by mpbond: {} \
                 (initial subflow on {first})",
                n / 1_000_000,
                t.elapsed().as_secs_f64(),
                gap.map_or("none recorded".into(), |g| format!("{:.1} ms", g as f64 / 1e3))
            );
            let Some(gap) = gap else {
                panic!("{o:?} at {rtt} ms: no failover recorded\n{}", d.log());
            };
            // Link down: the daemon knows at once and tells the converter on the cellular
            // subflow (REMOVE_ADDR for Wi-Fi, MP_PRIO), so the converter's kernel moves to
            // cellular without waiting for its retransmission timer (200 ms at least). The 50 ms
            // run follows a blackhole, after which Wi-Fi is avoided for new flows: the flow starts
            // on cellular and Wi-Fi joins, the case where those signals once waited behind a
            // liveness probe for the converter's RTO (400+ ms).
            if matches!(o, Outage::LinkDown) {
                assert!(
                    gap < 200_000,
                    "{o:?} at {rtt} ms: failover gap {:.1} ms (initial subflow on {first}): the converter \
                     waited for its retransmission timer\n{}",
                    gap as f64 / 1e3,
                    d.log()
                );
            }
            wait_for("Wi-Fi usable again", Duration::from_secs(10), || {
                status(&lab, rd.path()).interfaces.iter().all(|i| i.usable)
            });
        }
    }
    let st = status(&lab, rd.path());
    assert_eq!(
        counter(&st, "tcp_refused") + counter(&st, "tcp_timed_out") + counter(&st, "converter_failed"),
        0,
        "{:?}",
        st.counters
    );
    let text = common::daemon::mpbond(&lab, rd.path(), &["status", "--flows"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("converter 198.19.3.2:5124 up"));
}

#[test]
fn a_converter_that_does_not_answer_sends_flows_direct_within_a_second() {
    if skip_unless_root() {
        return;
    }
    let mut lab = lab_with(LabOptions::default());
    let conv_ns = lab.add_converter().unwrap();
    let (mut conv, key, _dir) = start_converter(&lab, &conv_ns, "conv");
    let laptop = lab.ns().laptop.clone();
    let server: SocketAddr = PLAIN_SERVER.parse().unwrap();
    let rd = RunDir::new();
    let d = start_daemon(&lab, rd.path(), &key);
    // Through the converter first.
    let r = lab
        .run_in(&laptop, || client::http_get(server, 1_000_000, &opts()))
        .unwrap()
        .unwrap();
    assert_eq!(r.bytes, 1_000_000);
    // The user's desktop notifier, with a notify-send that writes down what it is given.
    let bin = rd.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let said = rd.path().join("notified.txt");
    let fake = format!("#!/bin/sh\necho \"$@\" >> {}\n", said.display());
    std::fs::write(bin.join("notify-send"), fake).unwrap();
    std::fs::set_permissions(
        bin.join("notify-send"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let notifier = std::process::Command::new("ip")
        .args(["netns", "exec", &laptop, common::daemon::BIN, "--run-dir"])
        .arg(rd.path())
        .args(["status", "--notify", "--config", "/nonexistent/mpbond.toml"])
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // The converter host goes silent (its packets dropped), then the server process goes too.
    lab.exec(&conv_ns, &["nft", "add", "table", "inet", "silence"])
        .unwrap();
    lab.exec(
        &conv_ns,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "silence",
            "in",
            "{ type filter hook input priority -50 ; }",
        ],
    )
    .unwrap();
    lab.exec(
        &conv_ns,
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "silence",
            "in",
            "tcp dport 5124 drop",
        ],
    )
    .unwrap();
    let r = lab
        .run_in(&laptop, || client::http_get(server, 1_000_000, &opts()))
        .unwrap()
        .unwrap_or_else(|e| panic!("direct after a silent converter: {e}\n{}", d.log()));
    assert_eq!(r.bytes, 1_000_000);
    println!(
        "silent converter: 1 MB direct in {:.2} s (the converter is given 1 s)",
        r.elapsed.as_secs_f64()
    );
    assert!(r.elapsed < Duration::from_secs(3), "took {:?}", r.elapsed);
    let st = status(&lab, rd.path());
    assert_eq!(counter(&st, "converter_failed"), 1, "{:?}", st.counters);
    let c = &st.converters[0];
    assert!(!c.up && c.last_failure.as_deref() == Some("unreachable"), "{c:?}");
    // The desktop hears of it, once.
    wait_for("the converter-down notification", Duration::from_secs(3), || {
        std::fs::read_to_string(&said).is_ok_and(|t| t.contains("is down"))
    });
    mpbond::sys::proc::signal(notifier.id(), libc::SIGTERM).unwrap();
    let out = notifier.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let told = std::fs::read_to_string(&said).unwrap();
    assert_eq!(told.matches("198.19.3.2:5124").count(), 1, "{told}");
    // While it is down, new flows go direct at once (no second wait).
    conv.stop();
    let r = lab
        .run_in(&laptop, || client::http_get(server, 1_000_000, &opts()))
        .unwrap()
        .unwrap();
    assert!(r.elapsed < Duration::from_millis(900), "took {:?}", r.elapsed);
    let st = status(&lab, rd.path());
    assert_eq!(counter(&st, "converter_failed"), 1, "{:?}", st.counters);
    assert_eq!(counter(&st, "tcp_refused") + counter(&st, "tcp_timed_out"), 0);
}
