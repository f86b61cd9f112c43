//! The option-30 middlebox: NOPs, SYN drops, stripping after the handshake; and a kernel MPTCP
//! client joining a second subflow over wwan0.

mod common;

use netlab::client::{self, ClientOpts};
use netlab::{MptcpOption, Path, Server};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn mptcp_via(dev: &str) -> ClientOpts {
    ClientOpts {
        mptcp: true,
        device: Some(dev.to_owned()),
        timeout: Duration::from_secs(20),
    }
}

#[test]
fn nop_option_30_makes_mptcp_fall_back_on_that_path_only() {
    let Some(lab) = common::lab() else { return };
    lab.set_mptcp_option(Path::Wifi, MptcpOption::Nop).unwrap();
    let stats = lab.server_stats().unwrap();
    for v6 in [false, true] {
        let (wifi, cell) = lab
            .run_in(&lab.ns().laptop, || {
                (
                    client::http_get(Server::Mptcp.addr(v6), 200_000, &mptcp_via("wlan0")).unwrap(),
                    client::http_get(Server::Mptcp.addr(v6), 200_000, &mptcp_via("wwan0")).unwrap(),
                )
            })
            .unwrap();
        assert!(
            wifi.mptcp.is_none(),
            "v6={v6}: MPTCP survived the NOPing router: {wifi:?}"
        );
        assert!(
            cell.mptcp.is_some(),
            "v6={v6}: clean path did not give MPTCP: {cell:?}"
        );
    }
    assert_eq!(stats.fallback_conns.load(Ordering::Relaxed), 2);
    assert_eq!(stats.mptcp_conns.load(Ordering::Relaxed), 2);
    assert!(lab.mptcp_option_hits(Path::Wifi).unwrap() >= 2);
    lab.set_mptcp_option(Path::Wifi, MptcpOption::Pass).unwrap();
    let r = lab
        .run_in(&lab.ns().laptop, || {
            client::http_get(Server::Mptcp.addr(false), 1000, &mptcp_via("wlan0"))
        })
        .unwrap();
    assert!(r.unwrap().mptcp.is_some());
}

#[test]
fn syns_with_option_30_are_dropped() {
    let Some(lab) = common::lab() else { return };
    lab.set_mptcp_option(Path::Wifi, MptcpOption::DropSyn).unwrap();
    let stats = lab.server_stats().unwrap();
    // The MPTCP SYN gets no answer within half a second (Linux would retry without MPTCP
    // after a few retransmissions; the counter shows the drop without waiting for that).
    let short = ClientOpts {
        timeout: Duration::from_millis(500),
        ..mptcp_via("wlan0")
    };
    let r = lab
        .run_in(&lab.ns().laptop, || {
            client::connect(Server::Mptcp.addr(false), &short)
        })
        .unwrap();
    assert!(
        r.is_err(),
        "MPTCP SYN was answered through a router that drops it"
    );
    assert!(lab.mptcp_option_hits(Path::Wifi).unwrap() >= 1);
    // Plain TCP through the same router is untouched, and MPTCP over the other path works.
    lab.run_in(&lab.ns().laptop, || {
        client::http_get(Server::Tcp.addr(false), 100_000, &ClientOpts::via("wlan0")).unwrap();
        assert!(
            client::http_get(Server::Mptcp.addr(false), 100_000, &mptcp_via("wwan0"))
                .unwrap()
                .mptcp
                .is_some()
        );
    })
    .unwrap();
    assert_eq!(stats.mptcp_conns.load(Ordering::Relaxed), 1);
}

#[test]
fn stripping_after_the_handshake_keeps_the_syn_options() {
    let Some(lab) = common::lab() else { return };
    lab.set_mptcp_option(Path::Wifi, MptcpOption::StripAfterSyn)
        .unwrap();
    // The handshake carries MP_CAPABLE, later segments lose option 30; the kernel copes
    // (falls back or resets — either way the router shows it rewrote non-SYN segments).
    let r = lab
        .run_in(&lab.ns().laptop, || {
            client::http_get(Server::Mptcp.addr(false), 100_000, &mptcp_via("wlan0"))
        })
        .unwrap();
    let hits = lab.mptcp_option_hits(Path::Wifi).unwrap();
    assert!(
        hits >= 1,
        "no non-SYN segment with option 30 was rewritten ({r:?})"
    );
    // No SYN was touched: the server saw MP_CAPABLE on the SYN and accepted an MPTCP socket.
    let stats = lab.server_stats().unwrap();
    assert_eq!(
        stats.mptcp_conns.load(Ordering::Relaxed) + stats.fallback_conns.load(Ordering::Relaxed),
        1
    );
}

#[test]
fn kernel_mptcp_client_joins_a_backup_subflow_over_wwan0() {
    let Some(lab) = common::lab() else { return };
    let laptop = lab.ns().laptop.clone();
    lab.add_kernel_endpoint(Path::Cell, true).unwrap();
    // Primary subflow over wlan0 (the default route), the join over wwan0.
    let opts = ClientOpts {
        mptcp: true,
        device: None,
        timeout: Duration::from_secs(20),
    };
    // The client's connection is fully established (and the path manager adds subflows) once
    // data has been exchanged: one small request.
    let conn = lab
        .run_in(&laptop, || {
            let mut c = client::connect(Server::Mptcp.addr(false), &opts).unwrap();
            c.write_all(b"GET /bytes/10 HTTP/1.1\r\nHost: lab\r\n\r\n")
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            c
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = lab.kernel_subflows(&lab.ns().inet, netlab::HTTP_PORT).unwrap();
        if seen >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        seen,
        2,
        "server-side kernel subflows:\n{}",
        lab.ss_mptcp(&lab.ns().inet).unwrap()
    );
    let subflows = lab
        .kernel_subflow_list(&lab.ns().inet, netlab::HTTP_PORT)
        .unwrap();
    let joined: Vec<_> = subflows.iter().filter(|s| s.join).collect();
    assert_eq!(joined.len(), 1, "{subflows:?}");
    assert!(
        joined[0].backup,
        "the wwan0 subflow is not a backup: {subflows:?}"
    );
    let cell_router = Path::Cell.router_wan_v4().to_string();
    assert!(joined[0].peer.starts_with(&cell_router), "{subflows:?}");
    drop(conn);
    let r = lab
        .run_in(&laptop, || {
            client::http_get(Server::Mptcp.addr(false), 2_000_000, &opts).unwrap()
        })
        .unwrap();
    assert_eq!(r.mptcp.map(|i| i.extra_subflows), Some(1), "{r:?}");
}
