//! Root-only: once up, every thread of the daemon holds only CAP_NET_ADMIN and CAP_NET_RAW (even
//! when started with full root privileges), and `down` still restores everything.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a lab test: real time, panics are failures"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlab::{Lab, LabOptions};

const BIN: &str = env!("CARGO_BIN_EXE_mpbond");

/// Kills the daemon if the test ends early (its `down` then runs through the journal when the
/// lab's namespaces go away).
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_running_daemon_keeps_only_network_capabilities() {
    require_root!();
    let lab = Lab::build(LabOptions {
        no_servers: true,
        ..LabOptions::default()
    })
    .unwrap();
    let laptop = lab.ns().laptop.clone();
    let run_dir = std::env::temp_dir().join(format!("mpbond-priv-{}", std::process::id()));
    let rd = run_dir.to_str().unwrap().to_owned();
    let mut daemon = Daemon(
        lab.command(&laptop, BIN)
            .args([
                "--run-dir",
                &rd,
                "up",
                "--foreground",
                "--wifi",
                "wlan0",
                "--cellular",
                "wwan0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = |laptop: &str| {
        Command::new("ip")
            .args(["netns", "exec", laptop, BIN, "--run-dir", &rd, "status", "--json"])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let out = status(&laptop);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            break v["pid"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "mpbond did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cap = |path: String, field: &str| -> u64 {
        let s = std::fs::read_to_string(path).unwrap();
        let v = s.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        u64::from_str_radix(v.trim(), 16).unwrap()
    };
    let net = (1u64 << 12) | (1 << 13);
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let st = task.join("status").to_str().unwrap().to_owned();
        assert_eq!(cap(st.clone(), "CapEff:"), net, "thread {}", name.trim());
        assert_eq!(cap(st.clone(), "CapPrm:"), net, "thread {}", name.trim());
        assert_eq!(cap(st.clone(), "CapBnd:"), net, "thread {}", name.trim());
        assert_eq!(cap(st, "NoNewPrivs:"), 1, "thread {}", name.trim());
        threads += 1;
    }
    assert!(threads >= 2, "the daemon runs worker threads");
    let down = lab
        .command(&laptop, BIN)
        .args(["--run-dir", &rd, "down"])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let _ = daemon.0.wait();
    let rules = lab.exec(&laptop, &["nft", "list", "ruleset"]).unwrap();
    assert!(
        !rules.contains("mpbond"),
        "down removed the nft table with reduced privileges: {rules}"
    );
    let _ = std::fs::remove_dir_all(&run_dir);
}
