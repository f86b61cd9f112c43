//! Lifecycle of the daemon: `up` (foreground or spawned in the background), `down`, `status`.
//!
//! The run dir holds `mpbond.pid` (flock'ed by the live daemon for its whole life), the control
//! socket `control.sock` (0600) and the journal `journal.jsonl` of every change made.

mod background;
mod budget;
mod dns;
pub mod notify;
mod run;
pub mod status;
pub mod watch;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::io::control::{self, Request};
use crate::route::{Applier, journal};
use crate::sys;

pub use status::Status;

/// File names inside the run dir.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The run dir at `dir`.
    pub fn new(dir: &Path) -> RunDir {
        RunDir { dir: dir.to_owned() }
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The pid file, also the lock.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("mpbond.pid")
    }
    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    /// The journal.
    pub fn journal(&self) -> PathBuf {
        journal::path_in(&self.dir)
    }
    /// The log of a daemon started in the background.
    pub fn log(&self) -> PathBuf {
        self.dir.join("mpbond.log")
    }
}

/// Why `up`, `down` or `status` refused to start.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Changing routes needs root.
    #[error("must be run as root")]
    NotRoot,
    /// No TUN support.
    #[error("/dev/net/tun is missing (is the tun module loaded?)")]
    NoTun,
    /// nft is not installed.
    #[error("`nft` not found (install nftables)")]
    NoNft,
    /// A daemon already runs with this run dir.
    #[error("mpbond is already up (pid {pid}, run dir {dir})")]
    AlreadyUp {
        /// Its pid (0 if unreadable).
        pid: u32,
        /// The run dir.
        dir: PathBuf,
    },
    /// No daemon answers.
    #[error("mpbond is not running (no daemon answers on {0})")]
    NotRunning(PathBuf),
    /// The daemon does not let this user read its status.
    #[error(
        "permission denied on {0}: run as root, or as a member of the group the daemon lets read it ([status] in mpbond.toml; the package creates \"mpbond\")"
    )]
    NotAllowed(PathBuf),
    /// The daemon did not exit in time.
    #[error("the daemon (pid {0}) did not exit")]
    Stuck(u32),
}

fn preflight() -> Result<(), LifecycleError> {
    if !sys::proc::is_root() {
        return Err(LifecycleError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(LifecycleError::NoTun);
    }
    if !crate::route::apply::nft_available() {
        return Err(LifecycleError::NoNft);
    }
    Ok(())
}

fn read_pid(rd: &RunDir) -> Option<u32> {
    std::fs::read_to_string(rd.pid_file()).ok()?.trim().parse().ok()
}

/// Whether a daemon holds the lock of `rd`.
fn daemon_alive(rd: &RunDir) -> io::Result<bool> {
    match File::open(rd.pid_file()) {
        Ok(f) => Ok(!sys::proc::try_lock(&f)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Brings mpbond up with `config`. With `foreground` the daemon runs in this process until
/// SIGTERM/SIGINT; otherwise a detached child runs it and this returns once it is ready (or with
/// the error that stopped it).
pub fn up(run_dir: &Path, config: &Config, foreground: bool) -> anyhow::Result<()> {
    preflight()?;
    let rd = RunDir::new(run_dir);
    if daemon_alive(&rd).unwrap_or(false) {
        return Err(LifecycleError::AlreadyUp {
            pid: read_pid(&rd).unwrap_or(0),
            dir: rd.dir().to_owned(),
        }
        .into());
    }
    if foreground {
        run::run(&rd, config)
    } else {
        background::spawn_and_wait(&rd)
    }
}

/// Replays a journal left behind (crash, SIGKILL), if any.
fn clean_stale_journal(rd: &RunDir) -> anyhow::Result<()> {
    if !rd.journal().exists() {
        return Ok(());
    }
    tracing::warn!(
        "undoing the changes of a daemon that did not shut down cleanly ({})",
        rd.journal().display()
    );
    let mut applier = Applier::new().context("cannot open rtnetlink")?;
    let n = journal::replay(&rd.journal(), &mut applier).context("cleaning the stale journal")?;
    tracing::info!("undid {n} journaled change(s)");
    Ok(())
}

fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = sys::clock::boottime();
    loop {
        if done() {
            return true;
        }
        if sys::clock::boottime().saturating_duration_since(start) >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Takes mpbond down: asks the daemon to shut down (SIGTERM if its socket does not answer,
/// SIGKILL as the last resort), waits for it, then undoes whatever its journal still lists.
/// Safe to repeat; works after the daemon was killed.
pub fn down(run_dir: &Path) -> anyhow::Result<()> {
    if !sys::proc::is_root() {
        return Err(LifecycleError::NotRoot.into());
    }
    let rd = RunDir::new(run_dir);
    if daemon_alive(&rd)? {
        let pid = read_pid(&rd).unwrap_or(0);
        let gone = |rd: &RunDir| !daemon_alive(rd).unwrap_or(true);
        let asked = control::request(&rd.socket(), Request::Shutdown).is_ok();
        if !asked && pid > 0 {
            tracing::warn!("control socket does not answer; sending SIGTERM to {pid}");
            sys::proc::signal(pid, libc::SIGTERM)?;
        }
        if !wait_until(Duration::from_secs(15), || gone(&rd)) {
            if pid == 0 {
                return Err(LifecycleError::Stuck(pid).into());
            }
            tracing::warn!("daemon {pid} did not exit; sending SIGKILL");
            sys::proc::signal(pid, libc::SIGKILL)?;
            if !wait_until(Duration::from_secs(5), || gone(&rd)) {
                return Err(LifecycleError::Stuck(pid).into());
            }
        }
    }
    clean_stale_journal(&rd)?;
    for p in [rd.socket(), rd.pid_file()] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", p.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Asks the daemon for its status.
pub fn fetch_status(run_dir: &Path) -> anyhow::Result<Status> {
    let rd = RunDir::new(run_dir);
    let answer = control::request(&rd.socket(), Request::Status).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            LifecycleError::NotAllowed(rd.socket())
        } else {
            LifecycleError::NotRunning(rd.socket())
        }
    })?;
    if answer.get("error").and_then(|e| e.as_str()) == Some("permission denied") {
        return Err(LifecycleError::NotAllowed(rd.socket()).into());
    }
    serde_json::from_value(answer).context("the daemon sent an unreadable status")
}

/// Prints the daemon's status (a table, or JSON with `json`).
pub fn status(run_dir: &Path, json: bool, flows: bool) -> anyhow::Result<()> {
    let s = fetch_status(run_dir)?;
    let text = if json {
        serde_json::to_string_pretty(&s)?
    } else {
        s.render(flows)
    };
    #[expect(clippy::print_stdout, reason = "`mpbond status` prints its answer")]
    {
        println!("{}", text.trim_end());
    }
    Ok(())
}
