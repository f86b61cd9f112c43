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

#[test]
fn curl_talks_to_both_http_servers() {
    let Some(lab) = common::lab() else { return };
    for url in [
        "http://198.19.0.10/bytes/300000",
        "http://[fd19::11]/bytes/300000",
    ] {
        let out = lab
            .command(&lab.ns().laptop, "curl")
            .args(["-sS", "--max-time", "20", url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), 300_000);
        assert_eq!(
            netlab::pattern::first_mismatch(0, &out.stdout),
            None,
            "curl {url}: body differs from the pattern"
        );
    }
    // An upload larger than curl's 100-continue threshold, checksum computed here.
    let body = vec![0x5au8; 200_000];
    let mut fnv = netlab::pattern::Fnv64::default();
    fnv.update(&body);
    let path = lab.state_dir().join("upload.bin");
    std::fs::write(&path, &body).unwrap();
    let out = lab
        .command(&lab.ns().laptop, "curl")
        .args(["-sS", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", path.display()))
        .arg("http://198.19.0.11/sink")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{{\"bytes\":200000,\"fnv1a64\":\"{:016x}\"}}", fnv.value())
    );
}
