//! Child processes of the benchmark: helpers it runs as `mpbond-bench --…` (so their sockets count
//! against their own open-file limit), and waiting for programs with a bound.

use std::io::{BufRead as _, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A started helper: the process, its stdin (closing it stops the helper), the rest of its
/// stdout's lines, and the first one (what it printed once ready).
#[derive(Debug)]
pub struct Helper {
    /// The process.
    pub child: Child,
    /// Its stdin.
    pub stdin: ChildStdin,
    /// Its further output lines.
    pub lines: Lines<BufReader<ChildStdout>>,
    /// Its first line.
    pub first: String,
}

/// Runs `exe args…` with piped stdin and stdout and waits for its first line; `what` names it in
/// errors. A helper that exits or closes its output first is an error (and reaped).
pub fn spawn_helper(exe: &Path, args: &[&str], what: &str) -> Result<Helper, String> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} child without pipes"));
    };
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(first)) => Ok(Helper {
            child,
            stdin,
            lines,
            first,
        }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{what} child exited at start"))
        }
    }
}

/// Waits up to `within` for `child` to exit; past that kills it. Whether it exited by itself.
pub fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
