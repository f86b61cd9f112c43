//! Root-only: the kernel MPTCP server announces a second address and port with ADD_ADDR and
//! refuses joins to its first one (flag C, `net.mptcp.allow_join_initial_addr_port=0`).
//! `mpbond up` in a netlab laptop must join its cellular backup subflow toward the announced
//! address (RFC 8684 §3.1, §3.4.1), and a download must survive the loss of Wi-Fi over it.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]
#![allow(
    clippy::disallowed_methods,
    reason = "lab test: wall-clock deadlines and timings"
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, RunDir, counter, iface_rx, lab_client_opts as opts, lab_with, skip_unless_root, status,
};
use netlab::client;
use netlab::{Lab, LabOptions, Path};

const MPTCP_SERVER: &str = "198.19.0.10:80";
/// The address and port the server announces.
const ANNOUNCED: &str = "198.19.0.13";
const ANNOUNCED_PORT: u16 = 8080;

/// Runs `args` in the lab's internet namespace (a failure panics with its stderr).
fn inet(lab: &Lab, args: &[&str]) {
    lab.exec(&lab.ns().inet, args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

#[test]
fn the_backup_subflow_joins_the_address_the_kernel_server_announces() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let laptop = lab.ns().laptop.clone();
    // The server's second address, announced with its own port (the kernel then listens there
    // for joins), and no joins accepted toward the first address and port (flag C).
    inet(
        &lab,
        &["ip", "addr", "add", &format!("{ANNOUNCED}/32"), "dev", "lo"],
    );
    inet(
        &lab,
        &[
            "ip",
            "mptcp",
            "endpoint",
            "add",
            ANNOUNCED,
            "port",
            &ANNOUNCED_PORT.to_string(),
            "signal",
        ],
    );
    inet(
        &lab,
        &["sysctl", "-q", "-w", "net.mptcp.allow_join_initial_addr_port=0"],
    );
    // A rate keeps the download going past the moment Wi-Fi goes down.
    for p in Path::ALL {
        lab.set_rate(p, Some(40_000_000)).unwrap();
    }
    let rd = RunDir::new();
    let d = Daemon::start(&lab, rd.path(), &[]);
    common::daemon::wait_usable(&lab, rd.path());

    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    let n: u64 = 20_000_000;
    let (joined, first_port, took) = std::thread::scope(|s| {
        let t = Instant::now();
        let h = s.spawn(|| {
            lab.run_in(&laptop, || client::http_get(server, n, &opts()))
                .unwrap()
        });
        let mut joined = Vec::new();
        let mut first_port = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !h.is_finished() {
            joined = lab.kernel_subflow_list(&lab.ns().inet, ANNOUNCED_PORT).unwrap();
            if !joined.is_empty() {
                first_port = lab.kernel_subflow_list(&lab.ns().inet, 80).unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Wi-Fi goes away: the rest comes over the subflow to the announced address.
        lab.set_link(Path::Wifi, false).unwrap();
        let r = h.join().unwrap();
        assert_eq!(
            r.unwrap_or_else(|e| panic!("download: {e}\n{}", d.log())).bytes,
            n
        );
        (joined, first_port, t.elapsed())
    });
    lab.set_link(Path::Wifi, true).unwrap();
    println!(
        "kernel subflows to {ANNOUNCED}:{ANNOUNCED_PORT}: {joined:?}; to {MPTCP_SERVER}: {first_port:?}; \
         {} MB byte-exact in {:.2} s with Wi-Fi lost midway",
        n / 1_000_000,
        took.as_secs_f64()
    );
    assert_eq!(
        joined.len(),
        1,
        "one join toward the announced address: {joined:?}"
    );
    let j = &joined[0];
    assert!(j.join && j.backup, "{j:?}");
    assert!(
        j.peer.starts_with(&Path::Cell.router_wan_v4().to_string()),
        "the join came over cellular: {j:?}"
    );
    // Flag C: nothing joined toward the first address and port.
    assert!(
        first_port.iter().all(|s| !s.join),
        "a join toward {MPTCP_SERVER} despite flag C: {first_port:?}"
    );
    let st = status(&lab, rd.path());
    let c = |k: &str| counter(&st, k);
    assert_eq!(c("tcp_refused") + c("tcp_timed_out"), 0, "{:?}", st.counters);
    assert!(c("subflows_up") >= 2, "{:?}", st.counters);
    let cell_rx = iface_rx(&st, "wwan0");
    assert!(
        cell_rx > n / 2,
        "most of the download came over cellular: {cell_rx} bytes"
    );
    drop(d);
}
