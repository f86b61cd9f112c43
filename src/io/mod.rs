//! Threads and the messages between them (STYLE.md point 7): each thread owns its file
//! descriptors and one mio `Poll`, nothing else. Protocol state lives in the engine; bounded
//! crossbeam channels carry batches of pooled packet buffers; a `mio::Waker` wakes a thread after a
//! send. Nothing else is shared but the daemon's small status state.

pub mod check;
pub mod control;
pub mod dgram;
pub mod dns;
pub mod engine;
pub mod iface;
pub mod pool;
pub mod tun;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use mio::{Poll, Token, Waker};

/// The token of every thread's stop waker.
pub const WAKE: Token = Token(0);

/// Asks a thread to stop and waits for it.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns `body` on a named thread with its own `Poll`; `body` must return once the flag it
    /// is given is set (it is woken through [`WAKE`]).
    pub fn spawn(
        name: &str,
        poll: Poll,
        body: impl FnOnce(Poll, Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || body(poll, flag))?;
        Ok(Worker {
            stop,
            waker,
            handle: Some(handle),
        })
    }

    /// The waker of the thread's `Poll` (a `Poll` has one): wakes the thread without stopping it.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Stops the thread and joins it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("a worker thread panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
