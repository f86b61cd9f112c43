//! Running the lab's helper programs (`ip`, `nft`, `tc`, `ethtool`, `sysctl`, `ss`), with errors
//! that carry the command line and its stderr.

use std::io::Write;
use std::process::{Command, Stdio};

/// Running an external program failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run `{cmdline}`: {cause} (is the package installed? see tools/netlab/APT_PACKAGES)")]
    Spawn {
        /// The command line, space-joined.
        cmdline: String,
        /// Why it did not start.
        cause: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{cmdline}` failed ({status}): {stderr}")]
    Failed {
        /// The command line, space-joined.
        cmdline: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

/// Runs `args[0]` with the remaining arguments; returns its standard output.
pub fn run(args: &[&str]) -> Result<String, CmdError> {
    run_with_stdin(args, None)
}

/// Like [`run`], feeding `stdin` to the program when given.
pub fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Result<String, CmdError> {
    let cmdline = args.join(" ");
    let (prog, rest) = args.split_first().ok_or_else(|| CmdError::Spawn {
        cmdline: String::new(),
        cause: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut cmd = Command::new(prog);
    cmd.args(rest).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|cause| CmdError::Spawn {
        cmdline: cmdline.clone(),
        cause,
    })?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // A write error shows up as the program's failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|cause| CmdError::Spawn {
        cmdline: cmdline.clone(),
        cause,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ");
        if let Some(input) = stdin {
            stderr.push_str(&format!(" [input: {}]", input.trim().replace('\n', "; ")));
        }
        Err(CmdError::Failed {
            cmdline,
            status: out.status,
            stderr,
        })
    }
}

/// Runs a program inside network namespace `ns` (`ip netns exec NS …`).
pub fn run_in(ns: &str, args: &[&str]) -> Result<String, CmdError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Like [`run_in`] with standard input.
pub fn run_in_with_stdin(ns: &str, args: &[&str], stdin: &str) -> Result<String, CmdError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run_with_stdin(&full, Some(stdin))
}
