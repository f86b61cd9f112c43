//! Running code inside a network namespace: a thread enters it with setns(2) (only that thread
//! moves; sockets it creates stay in that namespace for their whole life).

use std::fs::File;
use std::io;
use std::thread::JoinHandle;

/// Moves the calling thread into the named namespace (`/run/netns/NAME`).
pub fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))
        .map_err(|e| io::Error::new(e.kind(), format!("open /run/netns/{ns}: {e}")))?;
    crate::sys::setns_net(&f).map_err(|e| io::Error::new(e.kind(), format!("setns({ns}): {e}")))
}

/// Runs `f` on a fresh thread inside namespace `ns` and returns its result. A panic in `f` is
/// re-raised in the caller.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter(ns)?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Spawns a named thread that enters `ns` and then runs `f`; entering errors end the thread
/// with the error.
pub fn spawn_in<F>(name: &str, ns: &str, f: F) -> io::Result<JoinHandle<io::Result<()>>>
where
    F: FnOnce() -> io::Result<()> + Send + 'static,
{
    let ns = ns.to_owned();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        enter(&ns)?;
        f()
    })
}
