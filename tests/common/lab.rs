//! Helpers for the root-only lab tests: root detection, namespaces that delete themselves, and
//! command running with clear errors.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// True when running as root; lab tests print a line and return early otherwise.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Skips the calling test (returns from it) when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::lab::is_root() {
            eprintln!("skipped: needs root (network namespaces)");
            return;
        }
    };
}

/// Runs a command line (split on spaces), panicking with its stderr if it fails.
pub fn sh(cmd: &str) -> String {
    let parts: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(parts[0])
        .args(&parts[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted on drop, with a name unique to this process and call.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "mpbt{}-{}{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name }
    }

    /// Runs a command inside the namespace.
    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Keeps the kernel of `ns` from answering TCP segments to `ports` (as `mpbond up` does on the
/// physical interfaces): the userspace stack owns them.
pub fn drop_kernel_tcp(ns: &Netns, ports: &str) {
    ns.sh("nft add table inet mpbtest");
    ns.sh("nft add chain inet mpbtest in { type filter hook input priority 0 ; }");
    ns.sh(&format!("nft add rule inet mpbtest in tcp dport {ports} drop"));
}

/// Two namespaces joined by a veth pair with IPv4 (198.18.100.1/2) and IPv6 (fd18:100::1/2)
/// addresses, tx checksum offload off.
pub fn veth_pair(a_if: &str, b_if: &str) -> (Netns, Netns) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    sh(&format!(
        "ip link add {a_if} netns {} type veth peer name {b_if} netns {}",
        a.name, b.name
    ));
    for (ns, ifn, n) in [(&a, a_if, 1), (&b, b_if, 2)] {
        ns.sh(&format!("ip addr add 198.18.100.{n}/24 dev {ifn}"));
        ns.sh(&format!("ip addr add fd18:100::{n}/64 dev {ifn} nodad"));
        ns.sh(&format!("ethtool -K {ifn} tx off"));
        ns.sh(&format!("ip link set {ifn} up"));
    }
    (a, b)
}
