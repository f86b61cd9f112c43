//! Process-level system calls the daemon lifecycle needs: identity, file locks, signals, and
//! detaching a child into its own session.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    euid() == 0
}

/// The process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Tries to take an exclusive `flock` on `file` without blocking. `Ok(false)` when another
/// process holds it. The lock lives as long as the open file description.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: the fd is valid for the lifetime of `file`; flock does not touch memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Sends `signal` to process `pid`. `Ok(false)` when no such process exists.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<bool> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    if pid <= 0 {
        return Err(io::Error::other("refusing to signal a process group"));
    }
    // SAFETY: kill has no memory preconditions; pid > 0 targets exactly one process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Sends SIGTERM to this process (the control socket's `shutdown`).
pub fn terminate_self() {
    let _ = signal(std::process::id(), libc::SIGTERM);
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it spawns later), so
/// that [`wait_for_termination`] can collect them synchronously.
pub fn block_termination_signals() -> io::Result<()> {
    let set = term_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits up to `timeout` for SIGTERM/SIGINT/SIGHUP (blocked beforehand with
/// [`block_termination_signals`]). Returns the signal number, or `None` on timeout.
pub fn wait_for_termination(timeout: Duration) -> Option<libc::c_int> {
    let set = term_set();
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (rc > 0).then_some(rc)
}

/// Makes `cmd` start its child in a new session (setsid), detached from the terminal.
pub fn detach(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls setsid, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets the mode bits of a path (used for the control socket: 0600).
pub fn chmod(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Gives the calling thread a file descriptor table of its own (`unshare(CLONE_FILES)`): a copy
/// of the process's table as it is now, from then on separate. `RLIMIT_NOFILE` bounds the
/// descriptor numbers of each table, so a thread with its own table can hold that many
/// descriptors again. Descriptors opened later by other threads are not visible to it, and its
/// own are not visible to them.
pub fn unshare_fd_table() -> io::Result<()> {
    // SAFETY: unshare with a flag only; it affects the calling thread's own task.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
