//! Root-only: the data budget. With Wi-Fi down, downloads go over cellular; `mpbond status`
//! counts the cellular interface's bytes (its kernel counters' growth, within 1 %), and once
//! `daily_mb` is used up with `at_limit = "block"` the interface is no longer used (a new
//! connection gets no path). The counts survive a restart of the daemon.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured lines and the skip notice")]
#![allow(clippy::disallowed_methods, reason = "lab test: a wall-clock timing")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::daemon::{
    Daemon, RunDir, kernel_bytes, lab_client_opts as opts, lab_with, skip_unless_root, status, wait_for,
};
use netlab::{LabOptions, Path, client};

#[test]
fn cellular_bytes_are_counted_and_the_daily_limit_blocks_the_interface() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let laptop = lab.ns().laptop.clone();
    let server: SocketAddr = "198.19.0.11:80".parse().unwrap();
    let rd = RunDir::new();
    let cfg = rd.path().join("mpbond.toml");
    std::fs::write(&cfg, "[budget.cellular]\ndaily_mb = 8\nat_limit = \"block\"\n").unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut d = Daemon::start(&lab, rd.path(), &args);
    common::daemon::wait_usable(&lab, rd.path());
    lab.set_link(Path::Wifi, false).unwrap();
    wait_for("Wi-Fi unusable", Duration::from_secs(10), || {
        status(&lab, rd.path())
            .interfaces
            .iter()
            .any(|i| i.name == "wlan0" && !i.usable)
    });
    let k0 = kernel_bytes(&lab, "wwan0");
    let c0 = status(&lab, rd.path())
        .budget
        .iter()
        .find(|b| b.name == "wwan0")
        .unwrap()
        .today;
    // 3 MB over cellular: counted, within the limit.
    let got = lab
        .run_in(&laptop, || client::http_get(server, 3_000_000, &opts()))
        .unwrap()
        .unwrap_or_else(|e| panic!("download over cellular: {e}\n{}", d.log()));
    assert_eq!(got.bytes, 3_000_000);
    // The budget thread samples every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    let k1 = kernel_bytes(&lab, "wwan0");
    let b = status(&lab, rd.path())
        .budget
        .into_iter()
        .find(|b| b.name == "wwan0")
        .unwrap();
    let (counted, kernel) = (b.today - c0, k1 - k0);
    println!("cellular: budget counted {counted} B, kernel counters grew {kernel} B");
    assert!(
        counted.abs_diff(kernel) * 100 <= kernel,
        "within 1 %: counted {counted}, kernel {kernel}"
    );
    assert!(!b.blocked);
    // 6 MB more: past the 8 MB a day, the interface is blocked.
    let _ = lab.run_in(&laptop, || client::http_get(server, 6_000_000, &opts()));
    wait_for("cellular blocked by its budget", Duration::from_secs(10), || {
        let st = status(&lab, rd.path());
        st.budget.iter().any(|b| b.name == "wwan0" && b.blocked)
            && st
                .interfaces
                .iter()
                .any(|i| i.name == "wwan0" && i.budget_blocked && !i.usable)
    });
    let text = common::daemon::mpbond(&lab, rd.path(), &["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("limit reached, not used"), "{text}");
    // No interface left: a new connection is not carried.
    let r = lab
        .run_in(&laptop, || client::http_get(server, 1_000, &opts()))
        .unwrap();
    assert!(r.is_err(), "no path once the budget is used up: {r:?}");
    let today = status(&lab, rd.path())
        .budget
        .into_iter()
        .find(|b| b.name == "wwan0")
        .unwrap()
        .today;
    // Kept across a restart (the daemon writes its counts when it stops).
    let o = common::daemon::mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "down: {}", common::daemon::stderr(&o));
    assert!(d.wait_exit().success());
    assert!(rd.path().join("budget.json").exists());
    let d2 = Daemon::start(&lab, rd.path(), &args);
    wait_for("the budget read again", Duration::from_secs(10), || {
        !status(&lab, rd.path()).budget.is_empty()
    });
    let again = status(&lab, rd.path())
        .budget
        .into_iter()
        .find(|b| b.name == "wwan0")
        .unwrap();
    assert!(again.today >= today, "kept: {} then {}", today, again.today);
    assert!(again.blocked, "still blocked after the restart");
    drop(d2);
    lab.set_link(Path::Wifi, true).unwrap();
}

/// Subflows of the daemon on `iface`.
fn subflows_on(lab: &netlab::Lab, rd: &RunDir, iface: &str) -> usize {
    status(lab, rd.path())
        .subflows
        .iter()
        .filter(|s| s.interface == iface)
        .count()
}

/// One small request and its reply on a keep-alive connection to `server`.
fn request(s: &mut std::net::TcpStream, server: SocketAddr) {
    client::http_get_again(s, server, 64, Duration::from_secs(10)).unwrap();
}

#[test]
fn past_the_soft_limit_cellular_is_joined_only_when_wifi_is_lost() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let laptop = lab.ns().laptop.clone();
    let mptcp_server: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let rd = RunDir::new();
    let cfg = rd.path().join("mpbond.toml");
    // Soft share at 1 % of 8 MB: 80 KB.
    std::fs::write(&cfg, "[budget.cellular]\ndaily_mb = 8\nsoft_percent = 1\n").unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let d = Daemon::start(&lab, rd.path(), &args);
    common::daemon::wait_usable(&lab, rd.path());
    // Below the soft share: a connection keeps a standing cellular backup.
    let mut s = lab
        .run_in(&laptop, || client::connect(mptcp_server, &opts()).unwrap())
        .unwrap();
    request(&mut s, mptcp_server);
    wait_for("a standing cellular subflow", Duration::from_secs(5), || {
        subflows_on(&lab, &rd, "wwan0") > 0
    });
    drop(s);
    // 300 KB over cellular (Wi-Fi down) passes the soft share.
    lab.set_link(Path::Wifi, false).unwrap();
    let got = lab
        .run_in(&laptop, || client::http_get(mptcp_server, 300_000, &opts()))
        .unwrap()
        .unwrap_or_else(|e| panic!("download over cellular: {e}\n{}", d.log()));
    assert_eq!(got.bytes, 300_000);
    wait_for("cellular past its soft share", Duration::from_secs(10), || {
        let st = status(&lab, rd.path());
        st.interfaces
            .iter()
            .any(|i| i.name == "wwan0" && i.budget_soft && i.usable)
            && st
                .budget
                .iter()
                .any(|b| b.name == "wwan0" && b.level == mpbond::budget::Level::Soft)
    });
    let text = common::daemon::mpbond(&lab, rd.path(), &["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("used only when nothing else works"), "{text}");
    lab.set_link(Path::Wifi, true).unwrap();
    common::daemon::wait_usable(&lab, rd.path());
    wait_for("the old subflows gone", Duration::from_secs(10), || {
        subflows_on(&lab, &rd, "wwan0") == 0
    });
    // Past it: a new connection starts on Wi-Fi and keeps no cellular subflow...
    let mut s = lab
        .run_in(&laptop, || client::connect(mptcp_server, &opts()).unwrap())
        .unwrap();
    request(&mut s, mptcp_server);
    std::thread::sleep(Duration::from_millis(500));
    let st = status(&lab, rd.path());
    assert!(
        st.subflows.iter().any(|s| s.interface == "wlan0"),
        "{:?}",
        st.subflows
    );
    assert_eq!(subflows_on(&lab, &rd, "wwan0"), 0, "{:?}", st.subflows);
    // ... until Wi-Fi is lost: then it joins cellular and carries on.
    lab.set_link(Path::Wifi, false).unwrap();
    let t = std::time::Instant::now();
    lab.run_in(&laptop, || request(&mut s, mptcp_server)).unwrap();
    println!(
        "soft limit: the next request after the Wi-Fi loss answered in {:?} (on-demand cellular join)",
        t.elapsed()
    );
    assert!(subflows_on(&lab, &rd, "wwan0") > 0);
    drop(s);
    drop(d);
    lab.set_link(Path::Wifi, true).unwrap();
}
