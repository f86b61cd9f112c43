//! Root-only: `mpbond check` in the lab, against the kernel's MPTCP server, each middlebox case a
//! test (clean path, NOPs, dropped SYNs, DSS stripped after the handshake, plain TCP server, IPv6).
#![allow(clippy::unwrap_used, reason = "a lab test: panics are failures")]

mod common;

use netlab::{Lab, LabOptions, MptcpOption, Path};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mpbond");

/// Runs `mpbond check --json` from the laptop; returns (exit code, per-interface results).
fn check(lab: &Lab, target: &str) -> (i32, Value) {
    let out = lab
        .command(&lab.ns().laptop, BIN)
        .args([
            "check",
            "--json",
            "--interface",
            "wlan0",
            "--interface",
            "wwan0",
            "--max-hops",
            "4",
            target,
        ])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

fn iface<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["interface"] == name)
        .unwrap()
}

fn lab() -> Lab {
    Lab::build(LabOptions::default()).unwrap()
}

#[test]
fn clean_paths_pass_with_dss_on_ipv4_and_ipv6() {
    require_root!();
    let lab = lab();
    for target in ["198.19.0.10:80", "[fd19::10]:80"] {
        let (code, json) = check(&lab, target);
        assert_eq!(code, 0, "{json:#}");
        for name in ["wlan0", "wwan0"] {
            let i = iface(&json, name);
            assert_eq!(i["result"], "pass", "{i:#}");
            assert_eq!(i["dss"], "passes", "{i:#}");
        }
        assert_eq!(json["local_firewall"], Value::Array(vec![]));
    }
    // The temporary nft table is gone.
    let rules = lab.exec(&lab.ns().laptop, &["nft", "list", "ruleset"]).unwrap();
    assert!(!rules.contains("mpbond-check"), "{rules}");
}

#[test]
fn wifi_router_replacing_option_30_with_nops_is_named() {
    require_root!();
    let lab = lab();
    lab.set_mptcp_option(Path::Wifi, MptcpOption::Nop).unwrap();
    let (code, json) = check(&lab, "198.19.0.10:80");
    assert_eq!(code, 1, "{json:#}");
    let w = iface(&json, "wlan0");
    assert_eq!(w["result"], "replaced-by-nops", "{w:#}");
    assert_eq!(w["at_ttl"], 1, "the Wi-Fi router is hop 1: {w:#}");
    assert_eq!(w["hops"][0]["router"], Path::Wifi.gateway_v4().to_string());
    assert!(w["summary"].as_str().unwrap().contains("replaced by NOPs"));
    assert_eq!(iface(&json, "wwan0")["result"], "pass");
    assert!(lab.mptcp_option_hits(Path::Wifi).unwrap() > 0);
}

#[test]
fn wifi_router_dropping_mptcp_syns_is_named() {
    require_root!();
    let lab = lab();
    lab.set_mptcp_option(Path::Wifi, MptcpOption::DropSyn).unwrap();
    let (code, json) = check(&lab, "198.19.0.10:80");
    assert_eq!(code, 1);
    assert_eq!(iface(&json, "wlan0")["result"], "syn-dropped", "{json:#}");
    assert_eq!(iface(&json, "wwan0")["result"], "pass");
}

#[test]
fn dss_stripped_after_the_handshake_is_reported() {
    require_root!();
    let lab = lab();
    lab.set_mptcp_option(Path::Cell, MptcpOption::StripAfterSyn)
        .unwrap();
    let (code, json) = check(&lab, "198.19.0.10:80");
    assert_eq!(code, 1);
    let c = iface(&json, "wwan0");
    assert_eq!(
        (c["result"].as_str(), c["dss"].as_str()),
        (Some("pass"), Some("stripped-after-handshake")),
        "{c:#}"
    );
    assert_eq!(c["pass"], false);
    assert_eq!(iface(&json, "wlan0")["dss"], "passes");
}

#[test]
fn plain_tcp_server_is_told_apart_from_a_middlebox() {
    require_root!();
    let lab = lab();
    let (code, json) = check(&lab, "198.19.0.11:80");
    assert_eq!(code, 1);
    for name in ["wlan0", "wwan0"] {
        let i = iface(&json, name);
        assert_eq!(i["result"], "server-no-mptcp", "{i:#}");
        assert_eq!(i["hops"][0]["option"], "intact", "{i:#}");
    }
}

#[test]
fn the_laptops_own_firewall_is_reported() {
    require_root!();
    let lab = lab();
    let laptop = &lab.ns().laptop;
    lab.exec(laptop, &["nft", "add", "table", "inet", "corp"])
        .unwrap();
    lab.exec(
        laptop,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "corp",
            "out",
            "{ type filter hook output priority 0 ; }",
        ],
    )
    .unwrap();
    lab.exec(
        laptop,
        &[
            "nft", "add", "rule", "inet", "corp", "out", "tcp", "option", "mptcp", "exists", "counter",
        ],
    )
    .unwrap();
    let (code, json) = check(&lab, "198.19.0.10:80");
    assert_eq!(
        code, 1,
        "a firewall rule touching option 30 fails the check: {json:#}"
    );
    let fw = json["local_firewall"].as_array().unwrap();
    assert_eq!(fw.len(), 1, "{json:#}");
    assert!(fw[0].as_str().unwrap().contains("option mptcp"));
    assert_eq!(iface(&json, "wlan0")["result"], "pass");
}
