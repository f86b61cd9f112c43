//! A foreground `mpbond up` in the lab's laptop namespace, stopped with `mpbond down` (killed
//! and cleaned on drop if something went wrong).

use netlab::Lab;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    bin: PathBuf,
    laptop: String,
    run_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pid: u32,
}

fn mpbond(bin: &Path, laptop: &str, run_dir: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", laptop])
        .arg(bin)
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

impl Daemon {
    /// Starts `BIN --run-dir RUN_DIR up --foreground --wifi wlan0 --cellular wwan0 EXTRA…` in
    /// the laptop namespace and waits (≤ 30 s) until `status` answers and the engine uses both
    /// interfaces (`status` answers a little before that; a flow opened in between is refused
    /// with an ICMP unreachable). The daemon's stderr goes to `log` (appended, after a line naming
    /// the run) or, when `None`, to `RUN_DIR/daemon.log` (replaced).
    pub fn start(
        lab: &Lab,
        bin: &Path,
        run_dir: &Path,
        log: Option<&Path>,
        extra: &[&str],
    ) -> Result<Daemon, String> {
        use std::io::Write as _;
        std::fs::create_dir_all(run_dir).map_err(|e| format!("create {}: {e}", run_dir.display()))?;
        let log_path = log.map_or_else(|| run_dir.join("daemon.log"), Path::to_owned);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(log.is_some())
            .truncate(log.is_none())
            .open(&log_path)
            .map_err(|e| format!("daemon log {}: {e}", log_path.display()))?;
        writeln!(
            log,
            "=== {} mpbond up {}",
            crate::machine::now_utc(),
            extra.join(" ")
        )
        .map_err(|e| format!("daemon log {}: {e}", log_path.display()))?;
        let laptop = lab.ns().laptop.clone();
        let child = Command::new("ip")
            .args(["netns", "exec", &laptop])
            .arg(bin)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["up", "--foreground", "--wifi", "wlan0", "--cellular", "wwan0"])
            // The laptop namespace shares the machine's files: never its /etc/resolv.conf.
            .arg("--resolv-conf")
            .arg(run_dir.join("resolv.conf"))
            // Nor its data budget's counts.
            .arg("--budget-file")
            .arg(run_dir.join("budget.json"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        // `ip netns exec` execs the program: the child's pid is the daemon's.
        let pid = child.id();
        let mut d = Daemon {
            bin: bin.to_owned(),
            laptop,
            run_dir: run_dir.to_owned(),
            log: log_path,
            child: Some(child),
            pid,
        };
        let comm: String = bin
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(st))) = d.child.as_mut().map(Child::try_wait) {
                return Err(format!("mpbond exited at start ({st}): {}", d.log_tail()));
            }
            // `ip netns exec` has exec'd the daemon once its comm is the binary's name (the
            // kernel keeps 15 bytes of it).
            let ready = crate::procfs::comm(pid).as_deref() == Some(comm.as_str())
                && d.status()
                    .is_ok_and(|s| !s.interfaces.is_empty() && s.interfaces.iter().all(|i| i.usable));
            if ready {
                return Ok(d);
            }
            if Instant::now() > deadline {
                return Err(format!("mpbond not ready after 30 s: {}", d.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `mpbond status --json`.
    pub fn status(&self) -> Result<mpbond::daemon::Status, String> {
        let o = mpbond(&self.bin, &self.laptop, &self.run_dir, &["status", "--json"])
            .map_err(|e| format!("mpbond status: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "mpbond status: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("mpbond status --json: {e}"))
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// `mpbond down`, then waits (≤ 20 s) for the daemon to exit; kills it past that.
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let down = mpbond(&self.bin, &self.laptop, &self.run_dir, &["down"]);
        if !crate::child::wait_exit(&mut child, Duration::from_secs(20)) {
            let _ = mpbond(&self.bin, &self.laptop, &self.run_dir, &["down"]);
            return Err("mpbond did not exit after `down`; killed".into());
        }
        match down {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "mpbond down: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("mpbond down: {e}")),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
