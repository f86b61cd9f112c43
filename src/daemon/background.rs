//! `mpbond up` without `--foreground`: start a detached copy of ourselves with `--foreground`,
//! wait until it reports ready (a `READY` line on its stdout) or dies, and relay its error.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::RunDir;
use super::run::READY_STDOUT_ENV;
use crate::sys;

/// How long the daemon may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn spawn_and_wait(rd: &RunDir) -> anyhow::Result<()> {
    std::fs::create_dir_all(rd.dir())
        .with_context(|| format!("cannot create run dir {}", rd.dir().display()))?;
    let log =
        std::fs::File::create(rd.log()).with_context(|| format!("cannot create {}", rd.log().display()))?;
    let exe = std::fs::read_link("/proc/self/exe").context("cannot find our own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(READY_STDOUT_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    sys::proc::detach(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let stdout = child.stdout.take().context("no pipe to the daemon")?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let ready = BufReader::new(stdout).read_line(&mut line).is_ok() && line.trim() == "READY";
        let _ = tx.send(ready);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => {
            tracing::info!("daemon {} is up (log: {})", child.id(), rd.log().display());
            Ok(())
        }
        Ok(false) => {
            // It closed stdout without READY: it is exiting; its error is the last line of the log.
            let _ = child.wait();
            let text = std::fs::read_to_string(rd.log()).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("mpbond: "))
                .unwrap_or("the daemon exited before it was ready");
            anyhow::bail!("{last}")
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "the daemon was not ready after {}s (log: {})",
                READY_TIMEOUT.as_secs(),
                rd.log().display()
            )
        }
    }
}
