//! Root-only: once up, every thread of the daemon holds only CAP_NET_ADMIN and CAP_NET_RAW (even
//! when started with full root privileges), and `down` still restores everything.
#![allow(clippy::unwrap_used, reason = "a lab test: panics are failures")]

mod common;

use common::daemon::{self, Daemon, RunDir};

fn caps(task: &std::path::Path, field: &str) -> u64 {
    let s = std::fs::read_to_string(task.join("status")).unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix(field)).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

#[test]
fn the_running_daemon_keeps_only_network_capabilities() {
    if daemon::skip_unless_root() {
        return;
    }
    let lab = daemon::lab();
    let run_dir = RunDir::new();
    let before = daemon::snapshot(&lab);
    let mut d = Daemon::start(&lab, run_dir.path(), &[]);
    // `ip netns exec` runs mpbond as its child: the daemon is the pid in its status.
    let pid = daemon::status(&lab, run_dir.path()).pid;
    let net = (1u64 << 12) | (1 << 13);
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let name = name.trim();
        assert_eq!(caps(&task, "CapEff:"), net, "thread {name}");
        assert_eq!(caps(&task, "CapPrm:"), net, "thread {name}");
        assert_eq!(caps(&task, "CapBnd:"), net, "thread {name}");
        assert_eq!(caps(&task, "NoNewPrivs:"), 1, "thread {name}");
        threads += 1;
    }
    assert!(threads >= 4, "the daemon runs its worker threads: {threads}");
    let down = daemon::mpbond(&lab, run_dir.path(), &["down"]);
    assert!(down.status.success(), "{}", daemon::stderr(&down));
    assert!(d.wait_exit().success());
    assert_eq!(
        daemon::snapshot(&lab),
        before,
        "down restored everything with reduced privileges"
    );
}
