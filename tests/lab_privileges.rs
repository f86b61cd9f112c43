//! Root-only: once up, every thread of the daemon holds only CAP_NET_ADMIN and CAP_NET_RAW (even
//! when started with full root privileges), and `down` still restores everything; who may read
//! the status and who may stop the daemon; `status --watch`.
#![allow(clippy::unwrap_used, reason = "a lab test: panics are failures")]
#![allow(clippy::disallowed_methods, reason = "lab test: wall-clock deadlines")]

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

/// `mpbond` in the laptop namespace as user `nobody` with primary group `gid` and no others.
fn as_nobody(lab: &netlab::Lab, gid: u32, run_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns().laptop, "setpriv", "--reuid=65534"])
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", daemon::BIN, "--run-dir"])
        .arg(run_dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn status_is_for_root_and_the_status_group_and_shutdown_for_root_alone() {
    if daemon::skip_unless_root() {
        return;
    }
    let readers = mpbond::sys::sock::group_id("nogroup").expect("Debian's nogroup");
    let other = mpbond::sys::sock::group_id("daemon").expect("Debian's daemon group");
    let lab = daemon::lab();
    let run_dir = RunDir::new();
    let cfg = run_dir.path().join("mpbond.toml");
    std::fs::write(&cfg, "[status]\nreaders = \"group\"\ngroup = \"nogroup\"\n").unwrap();
    let mut d = Daemon::start(&lab, run_dir.path(), &["--config", cfg.to_str().unwrap()]);
    let pid = daemon::status(&lab, run_dir.path()).pid;

    // A member of the group reads the status.
    let o = as_nobody(&lab, readers, run_dir.path(), &["status", "--json"]);
    assert!(o.status.success(), "{}", daemon::stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["pid"], pid);
    // Anyone else gets a one-line refusal.
    let o = as_nobody(&lab, other, run_dir.path(), &["status"]);
    assert!(!o.status.success());
    let err = daemon::stderr(&o);
    assert!(
        err.contains("permission denied") && err.trim().lines().count() == 1,
        "{err}"
    );
    // Not even a member may stop it, whatever it sends on the socket.
    let sock = run_dir.path().join("control.sock");
    let py = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
              s.sendall(b'{\"cmd\":\"shutdown\"}\\n')\nprint(s.makefile().readline().strip())";
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={readers}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            py,
        ])
        .arg(&sock)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&o.stdout);
    assert!(
        answer.contains("permission denied"),
        "{answer} {}",
        daemon::stderr(&o)
    );
    assert_eq!(daemon::status(&lab, run_dir.path()).pid, pid, "still running");
    let down = daemon::mpbond(&lab, run_dir.path(), &["down"]);
    assert!(down.status.success(), "{}", daemon::stderr(&down));
    assert!(d.wait_exit().success());
}

#[test]
fn status_watch_redraws_every_second_and_ends_on_ctrl_c() {
    if daemon::skip_unless_root() {
        return;
    }
    let lab = daemon::lab();
    let run_dir = RunDir::new();
    let mut d = Daemon::start(&lab, run_dir.path(), &[]);
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns().laptop, daemon::BIN, "--run-dir"])
        .arg(run_dir.path())
        .args(["status", "--watch"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // `ip netns exec` execs mpbond: the child's pid is the watcher's.
    mpbond::sys::proc::signal(child.id(), libc::SIGINT).unwrap();
    let t = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", daemon::stderr(&out));
    assert!(
        t.elapsed() < std::time::Duration::from_millis(1500),
        "Ctrl-C ends it at once"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.matches("Ctrl-C to quit").count();
    assert!((2..=4).contains(&frames), "one frame a second: {frames}\n{text}");
    assert!(text.contains("wlan0") && text.contains("failovers"), "{text}");
    // Not a terminal: no escape sequences.
    assert!(!text.contains('\x1b'), "{text}");
    let down = daemon::mpbond(&lab, run_dir.path(), &["down"]);
    assert!(down.status.success(), "{}", daemon::stderr(&down));
    assert!(d.wait_exit().success());
}
