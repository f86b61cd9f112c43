//! Entering a named network namespace (`/run/netns/NAME`, as made by `ip netns add`) from the
//! current thread. Used by the lab and by interop tests that drive the engine from a test process.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into network namespace `name`. Sockets opened afterwards by this
/// thread live in that namespace (and stay there when the thread leaves).
pub fn enter(name: &str) -> io::Result<()> {
    if name.contains('/') || name.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad namespace name"));
    }
    let f = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: `f` is an open namespace file; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
