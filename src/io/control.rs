//! The control socket: `control.sock` in the run dir, mode 0600, one line of JSON per request
//! and one per answer (`{"cmd":"status"}` → the status; `{"cmd":"shutdown"}` → `{"ok":true}`).

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use super::Worker;

const LISTENER: Token = Token(1);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long one client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request on the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's status.
    Status,
    /// Shut down cleanly.
    Shutdown,
}

/// Answers requests; runs on the control thread.
pub type Handler = Box<dyn Fn(Request) -> serde_json::Value + Send>;

/// Binds `path` (removing a stale socket), sets mode 0600 and starts the control thread.
pub fn spawn(path: &Path, handler: Handler) -> io::Result<Worker> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    crate::sys::proc::chmod(path, 0o600)?;
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    Worker::spawn("mpbond-control", poll, move |poll, stop| {
        run(poll, &stop, &listener, &handler);
    })
}

fn run(mut poll: Poll, stop: &AtomicBool, listener: &UnixListener, handler: &Handler) {
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("control poll failed: {e}");
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = serve(stream, handler) {
                        tracing::debug!("control client: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("control accept failed: {e}");
                    break;
                }
            }
        }
    }
}

fn serve(stream: UnixStream, handler: &Handler) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => handler(req),
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let mut out = serde_json::to_string(&answer).map_err(io::Error::other)?;
    out.push('\n');
    (&stream).write_all(out.as_bytes())
}

/// Sends `req` to the daemon listening on `path` and returns its answer.
pub fn request(path: &Path, req: Request) -> io::Result<serde_json::Value> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_string(&req).map_err(io::Error::other)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new((&stream).take(16 << 20)).read_line(&mut answer)?;
    serde_json::from_str(answer.trim()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_answer_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("mpbond-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let mut worker = spawn(
            &path,
            Box::new(|req| serde_json::json!({ "got": format!("{req:?}") })),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = request(&path, Request::Status).unwrap();
        assert_eq!(a["got"], "Status");
        let a = request(&path, Request::Shutdown).unwrap();
        assert_eq!(a["got"], "Shutdown");
        // A garbage line gets an error answer, not a dead thread.
        let s = UnixStream::connect(&path).unwrap();
        (&s).write_all(b"{\"cmd\":\"dance\"}\n").unwrap();
        let mut l = String::new();
        BufReader::new(&s).read_line(&mut l).unwrap();
        assert!(l.contains("bad request"), "{l}");
        assert_eq!(request(&path, Request::Status).unwrap()["got"], "Status");
        worker.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
