//! Helpers of the root-only lab tests that run the `mpbond` binary in a netlab laptop namespace:
//! the lab, a run dir, a foreground daemon killed and cleaned on drop, `status`, and the routing
//! snapshot that `down` must restore. Every wait polls with a deadline.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "lab test helpers: wall-clock deadlines, the skip notice, panics on setup failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mpbond::daemon::Status;
use netlab::{Lab, LabOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpbond");

pub fn skip_unless_root() -> bool {
    if netlab::is_root() {
        return false;
    }
    println!("skipped: lab tests need root");
    true
}

/// A new lab whose laptop has finished IPv6 duplicate address detection (its link-local
/// addresses and their local routes appear only then, which would make snapshots differ).
pub fn lab() -> Lab {
    lab_with(LabOptions {
        no_servers: true,
        ..LabOptions::default()
    })
}

/// A new lab built with `opts`, once IPv6 DAD finished on the laptop.
/// Size of the big lab transfers; `MPBOND_LAB_BYTES` overrides (e.g. for a quick run).
pub fn lab_bytes() -> u64 {
    std::env::var("MPBOND_LAB_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000_000)
}

/// Client options of the big lab transfers: a 120 s bound.
pub fn lab_client_opts() -> netlab::client::ClientOpts {
    netlab::client::ClientOpts {
        timeout: Duration::from_secs(120),
        ..Default::default()
    }
}

pub fn lab_with(opts: LabOptions) -> Lab {
    let lab = Lab::build(opts).unwrap();
    wait_for("IPv6 DAD on the laptop", Duration::from_secs(20), || {
        exec(&lab, &["ip", "-6", "addr", "show", "tentative"])
            .trim()
            .is_empty()
    });
    lab
}

/// A run dir unique to this process and call, removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new() -> RunDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mpbond-lab-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        RunDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The resolv.conf a lab daemon takes over: one in its run dir, never the machine's own
/// (the laptop namespace shares the host's file system).
pub fn resolv_conf(run_dir: &Path) -> PathBuf {
    run_dir.join("resolv.conf")
}

/// Runs `mpbond --run-dir DIR ARGS…` in the laptop namespace and waits for it (`up` gets
/// `--resolv-conf` and `--budget-file` in the run dir).
pub fn mpbond(lab: &Lab, run_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns().laptop, BIN, "--run-dir"])
        .arg(run_dir)
        .args(args);
    if args.contains(&"up") {
        cmd.arg("--resolv-conf").arg(resolv_conf(run_dir));
        cmd.arg("--budget-file").arg(run_dir.join("budget.json"));
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A foreground daemon; killed (and cleaned with `down`) if the test ends while it runs.
pub struct Daemon<'a> {
    lab: &'a Lab,
    run_dir: PathBuf,
    child: Option<Child>,
}

impl<'a> Daemon<'a> {
    /// Starts `mpbond up --foreground` and waits until `status` answers.
    pub fn start(lab: &'a Lab, run_dir: &Path, extra: &[&str]) -> Daemon<'a> {
        Daemon::start_with(lab, run_dir, &["--wifi", "wlan0", "--cellular", "wwan0"], extra)
    }

    /// [`Daemon::start`] with `ifaces` instead of `--wifi wlan0 --cellular wwan0`.
    pub fn start_with(lab: &'a Lab, run_dir: &Path, ifaces: &[&str], extra: &[&str]) -> Daemon<'a> {
        Daemon::start_env(lab, run_dir, ifaces, extra, &[])
    }

    /// [`Daemon::start_with`], the daemon's environment also holding `envs`.
    pub fn start_env(
        lab: &'a Lab,
        run_dir: &Path,
        ifaces: &[&str],
        extra: &[&str],
        envs: &[(&str, String)],
    ) -> Daemon<'a> {
        let rc = resolv_conf(run_dir);
        let mut args = ifaces.to_vec();
        args.extend(["--resolv-conf", rc.to_str().unwrap()]);
        args.extend(extra);
        Daemon::launch(lab, run_dir, &args, envs)
    }

    /// `mpbond up --foreground --budget-file DIR/budget.json ARGS…` (nothing else added: no
    /// `--resolv-conf`), the environment also holding `envs`; waits until `status` answers.
    pub fn launch(lab: &'a Lab, run_dir: &Path, args: &[&str], envs: &[(&str, String)]) -> Daemon<'a> {
        let log = std::fs::File::create(run_dir.join("test-daemon.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns().laptop, BIN, "-v", "--run-dir"])
            .arg(run_dir)
            .args(["up", "--foreground"])
            .arg("--budget-file")
            .arg(run_dir.join("budget.json"))
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            lab,
            run_dir: run_dir.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("daemon exited early ({st}): {}", d.log());
            }
            if mpbond(lab, run_dir, &["status"]).status.success() {
                return d;
            }
            assert!(Instant::now() < deadline, "daemon not ready: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("test-daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits (bounded) for the daemon to exit after a `down`; returns its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
            let _ = mpbond(self.lab, &self.run_dir, &["down"]);
        }
    }
}

pub fn status(lab: &Lab, run_dir: &Path) -> Status {
    let o = mpbond(lab, run_dir, &["status", "--json"]);
    assert!(o.status.success(), "status failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A daemon counter from `status` (0 when absent).
pub fn counter(st: &Status, k: &str) -> u64 {
    st.counters.get(k).copied().unwrap_or(0)
}

/// Bytes received on interface `name`, from `status` (0 when absent).
pub fn iface_rx(st: &Status, name: &str) -> u64 {
    st.interfaces
        .iter()
        .find(|i| i.name == name)
        .map_or(0, |i| i.rx_bytes)
}

pub fn exec(lab: &Lab, args: &[&str]) -> String {
    lab.exec(&lab.ns().laptop, args).unwrap()
}

/// Everything `down` must restore, as text.
pub fn snapshot(lab: &Lab) -> String {
    let mut s = String::new();
    for args in [
        &["ip", "-4", "rule"][..],
        &["ip", "-6", "rule"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["ip", "-br", "link"],
        &["ip", "-br", "addr"],
        &["nft", "list", "ruleset"],
        &[
            "sysctl",
            "net.ipv4.ip_local_reserved_ports",
            "net.ipv4.conf.all.src_valid_mark",
        ],
    ] {
        s.push_str(&format!("$ {}\n{}\n", args.join(" "), exec(lab, args)));
    }
    s
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the engine uses both interfaces (`status` answers a little before the
/// interface threads have opened their sockets).
pub fn wait_usable(lab: &Lab, run_dir: &Path) {
    wait_for("both interfaces usable", Duration::from_secs(10), || {
        status(lab, run_dir).interfaces.iter().all(|i| i.usable)
    });
}

/// The interface's kernel counters (rx + tx) as `ip -s` shows them in the laptop namespace.
pub fn kernel_bytes(lab: &netlab::Lab, ifname: &str) -> u64 {
    let j = lab
        .exec(&lab.ns().laptop, &["ip", "-j", "-s", "link", "show", ifname])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let s = &v[0]["stats64"];
    s["rx"]["bytes"].as_u64().unwrap() + s["tx"]["bytes"].as_u64().unwrap()
}
