//! The lab carries IPv4 and IPv6 from the laptop to every server over each path.

mod common;

use netlab::client::{self, ClientOpts};
use netlab::{Path, Server};
use std::time::Duration;

#[test]
fn every_server_answers_over_each_path_and_family() {
    let Some(lab) = common::lab() else { return };
    for path in Path::ALL {
        for v6 in [false, true] {
            let what = format!("{path} v6={v6}");
            assert_eq!(
                common::echo_fraction(&lab, path, v6, 20, 20),
                1.0,
                "udp echo {what}"
            );
            let opts = ClientOpts {
                timeout: Duration::from_secs(20),
                ..ClientOpts::via(path.laptop_iface())
            };
            let mptcp = ClientOpts {
                mptcp: true,
                ..opts.clone()
            };
            lab.run_in(&lab.ns().laptop, || {
                let r = client::http_get(Server::Tcp.addr(v6), 1 << 20, &opts)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(r.mptcp.is_none());
                client::http_post(Server::Tcp.addr(v6), 3 << 20, &opts)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let r = client::http_get(Server::Mptcp.addr(v6), 1 << 20, &mptcp)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    r.mptcp.is_some(),
                    "{what}: kernel MPTCP client to MPTCP server is not MPTCP"
                );
                client::http_post(Server::Mptcp.addr(v6), 1 << 20, &mptcp)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            })
            .unwrap();
        }
    }
    let stats = lab.server_stats().unwrap();
    assert_eq!(stats.mptcp_conns.load(std::sync::atomic::Ordering::Relaxed), 8);
    assert_eq!(stats.tcp_conns.load(std::sync::atomic::Ordering::Relaxed), 8);
}

#[test]
fn the_nat_routers_hide_the_laptop() {
    let Some(lab) = common::lab() else { return };
    // The internet sees the routers' WAN addresses, never the laptop's.
    let opts = ClientOpts::via("wwan0");
    let s = lab
        .run_in(&lab.ns().laptop, || {
            client::connect(Server::Tcp.addr(false), &opts).unwrap()
        })
        .unwrap();
    let peers = lab
        .exec(&lab.ns().inet, &["ss", "-tnH", "state", "established"])
        .unwrap();
    assert!(peers.contains(&Path::Cell.router_wan_v4().to_string()), "{peers}");
    assert!(!peers.contains("198.18."), "{peers}");
    drop(s);
}

#[test]
fn dropping_the_lab_removes_its_namespaces() {
    let Some(lab) = common::lab() else { return };
    let names: Vec<String> = lab.ns().all().iter().map(|s| s.to_string()).collect();
    let dir = lab.state_dir().to_owned();
    assert!(dir.join("state.json").exists());
    let attached = netlab::Lab::attach(lab.name()).unwrap();
    assert_eq!(attached.ns(), lab.ns());
    drop(attached); // not the owner: changes nothing
    assert!(
        netlab::cmd::run(&["ip", "netns", "list"])
            .unwrap()
            .contains(&names[0])
    );
    drop(lab);
    let list = netlab::cmd::run(&["ip", "netns", "list"]).unwrap();
    for n in &names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "{n} left behind"
        );
    }
    assert!(!dir.exists());
}
