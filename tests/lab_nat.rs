//! Root-only (issue 14, "backups that are really there"): the cellular router is a strict
//! carrier NAT — it forgets an idle TCP mapping after 3 s (`nf_conntrack_tcp_timeout_established`
//! in its namespace), picks nothing up mid-stream (`nf_conntrack_tcp_loose = 0`) and drops what
//! it cannot match (`ct state invalid drop`). An interactive connection (one small HTTP
//! keep-alive request and its reply) to the kernel MPTCP server sits idle for 4 s, longer than
//! the NAT remembers, then Wi-Fi is lost (link down; then, on a new connection, blackholed)
//! and the next request is sent at once: its reply must come within a few cellular RTTs (plus
//! the detection of the blackhole). mpbond runs with `nat_idle = "2s"` (below the NAT's 3 s);
//! `MPBOND_LAB_NAT_IDLE=off` runs the same without the check, for the figure before the change.
//! The ignored test measures the Linux kernel's MPTCP client (a backup endpoint on wwan0) in
//! the same setting (`cargo test --test lab_nat -- --ignored`).
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::daemon::{Daemon, RunDir, lab_with, skip_unless_root, status, wait_for, wait_usable};
use netlab::client::{self, ClientOpts};
use netlab::{Lab, LabOptions, Path};

const MPTCP_SERVER: &str = "198.19.0.10:80";
const WIFI_RTT: Duration = Duration::from_millis(20);
const CELL_RTT: Duration = Duration::from_millis(50);
/// The cellular NAT forgets an idle mapping after this long.
const NAT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the connection sits idle before the loss.
const IDLE: Duration = Duration::from_secs(4);
/// Longest wait for a reply.
const REPLY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Loss {
    Down,
    Blackhole,
}

/// One request and its 64-byte reply on `s`; the time it took, or `None` if no reply came
/// within [`REPLY_WAIT`].
fn exchange(s: &mut TcpStream) -> Option<Duration> {
    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    client::http_get_again(s, server, 64, REPLY_WAIT)
        .ok()
        .map(|r| r.elapsed)
}

fn set_loss(lab: &Lab, loss: Loss, lost: bool) {
    match loss {
        Loss::Down => lab.set_link(Path::Wifi, !lost).unwrap(),
        Loss::Blackhole => lab.set_blackhole(Path::Wifi, lost).unwrap(),
    }
}

/// Connects (as an application of the laptop), exchanges once, idles past the NAT's memory,
/// loses Wi-Fi and exchanges again: how long that took (`None`: no reply).
fn idle_then_loss(lab: &Lab, loss: Loss, opts: &ClientOpts) -> Option<Duration> {
    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    let laptop = lab.ns().laptop.clone();
    lab.run_in(&laptop, || {
        let mut s = client::connect(server, opts).unwrap();
        exchange(&mut s).expect("first reply");
        std::thread::sleep(IDLE);
        set_loss(lab, loss, true);
        exchange(&mut s)
    })
    .unwrap()
}

/// The lab at 20/50 ms RTT, its cellular router a strict NAT (or not: `strict` false).
fn nat_lab(strict: bool) -> Lab {
    let lab = lab_with(LabOptions::default());
    lab.set_delay(Path::Wifi, WIFI_RTT).unwrap();
    lab.set_delay(Path::Cell, CELL_RTT).unwrap();
    if strict {
        lab.set_strict_nat(Path::Cell, NAT_TIMEOUT).unwrap();
    }
    lab
}

#[test]
fn after_an_idle_longer_than_the_nat_timeout_the_next_message_gets_through_at_once() {
    if skip_unless_root() {
        return;
    }
    let lab = nat_lab(true);
    let rd = RunDir::new();
    let nat_idle = std::env::var("MPBOND_LAB_NAT_IDLE").unwrap_or_else(|_| "2s".into());
    let cfg = rd.path().join("mpbond.toml");
    std::fs::write(&cfg, format!("[subflows]\nnat_idle = \"{nat_idle}\"\n")).unwrap();
    let d = Daemon::start(&lab, rd.path(), &["--config", cfg.to_str().unwrap()]);
    wait_usable(&lab, rd.path());
    let opts = ClientOpts {
        timeout: Duration::from_secs(10),
        ..ClientOpts::default()
    };
    let mut measured = Vec::new();
    for loss in [Loss::Down, Loss::Blackhole] {
        let drops0 = lab.strict_nat_drops(Path::Cell).unwrap();
        let took = idle_then_loss(&lab, loss, &opts);
        let drops = lab.strict_nat_drops(Path::Cell).unwrap() - drops0;
        println!(
            "mpbond (nat_idle {nat_idle}), Wi-Fi {loss:?} after {IDLE:?} idle (NAT forgets after {NAT_TIMEOUT:?}, \
             cellular RTT {CELL_RTT:?}): next reply after {took:?}; the NAT dropped {drops} packets"
        );
        measured.push((loss, took, drops));
        set_loss(&lab, loss, false);
        wait_for("Wi-Fi usable again", Duration::from_secs(10), || {
            status(&lab, rd.path()).interfaces.iter().all(|i| i.usable)
        });
    }
    // Handover mode's own cellular bytes (the backup's join and probes, the fresh joins) are
    // counted per day in the budget, a part of what the interface carried.
    // The budget thread samples every 2 s.
    std::thread::sleep(Duration::from_millis(2_500));
    let b = status(&lab, rd.path())
        .budget
        .into_iter()
        .find(|b| b.name == "wwan0")
        .unwrap();
    println!(
        "wwan0 today {} B, of it handover overhead {} B ({:?})",
        b.today, b.overhead_today, b.overhead_by_day
    );
    assert!(b.overhead_today > 0 && b.overhead_today < b.today, "{b:?}");
    assert_eq!(b.overhead_by_day.values().sum::<u64>(), b.overhead_today, "{b:?}");
    let log = d.log();
    drop(d);
    for (loss, took, _) in measured {
        // A message and its reply: 3 cellular RTTs for the message (a fresh join and the
        // reinjection; a capture showed it at the server 2.5 RTTs after the loss), one more
        // for the reply (the lab server writes its headers and its body apart: the body waits
        // for the ACK of the headers, Nagle); plus the detection of a blackhole, which mpbond
        // makes in a few Wi-Fi RTTs (bounded here by 10 of them).
        let bound = match loss {
            Loss::Down => CELL_RTT * 4,
            Loss::Blackhole => CELL_RTT * 4 + WIFI_RTT * 10,
        } + Duration::from_millis(100);
        let took = took.unwrap_or_else(|| panic!("Wi-Fi {loss:?}: no reply within {REPLY_WAIT:?}\n{log}"));
        assert!(
            took <= bound,
            "Wi-Fi {loss:?}: reply after {took:?} > {bound:?}\n{log}"
        );
    }
}

#[test]
#[ignore = "a measurement of the Linux kernel's MPTCP client, for the issue's closing note"]
fn kernel_client_after_an_idle_longer_than_the_nat_timeout() {
    if skip_unless_root() {
        return;
    }
    // Without the strict NAT too: the kernel's backup subflow is there and takes over.
    for (strict, loss) in [
        (false, Loss::Down),
        (true, Loss::Down),
        (false, Loss::Blackhole),
        (true, Loss::Blackhole),
    ] {
        let lab = nat_lab(strict);
        lab.add_kernel_endpoint(Path::Cell, true).unwrap();
        let opts = ClientOpts {
            mptcp: true,
            timeout: Duration::from_secs(10),
            ..ClientOpts::default()
        };
        let took = idle_then_loss(&lab, loss, &opts);
        println!(
            "Linux kernel MPTCP client (backup endpoint on wwan0), Wi-Fi {loss:?} after {IDLE:?} idle, \
             strict NAT {strict}: next reply after {took:?} (None: none within {REPLY_WAIT:?})"
        );
    }
}
