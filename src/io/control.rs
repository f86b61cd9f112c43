//! The control socket: `control.sock` in the run dir, one line of JSON per request and one per
//! answer (`{"cmd":"status"}` → the status; `{"cmd":"shutdown"}` → `{"ok":true}`).
//!
//! Who may ask what ([`Access`]) is checked on every connection with the peer's credentials
//! (`SO_PEERCRED`, `SO_PEERGROUPS`): read-only requests (the status) for root, the socket's owner
//! and, as configured, the members of a group or every local user; everything else (shutdown)
//! for root and the owner alone. A socket only root and the owner may use is mode 0600, one
//! others may read is 0666 (the check is then the daemon's).

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd};
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

impl Request {
    /// It only reads.
    pub fn read_only(self) -> bool {
        matches!(self, Request::Status)
    }
}

/// Who may use a control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Root and the owner (the daemon's own user) only.
    Owner,
    /// Also read-only requests from the members of this group.
    Group(u32),
    /// Also read-only requests from every local user.
    Everyone,
}

impl Access {
    /// Whether a peer with `cred` may make `req`; `owner` is the daemon's own user id.
    pub fn allows(&self, cred: &crate::sys::sock::PeerCred, owner: u32, req: Request) -> bool {
        if cred.uid == 0 || cred.uid == owner {
            return true;
        }
        req.read_only()
            && match self {
                Access::Owner => false,
                Access::Group(g) => cred.gid == *g || cred.groups.contains(g),
                Access::Everyone => true,
            }
    }
}

/// Answers requests; runs on the control thread.
pub type Handler = Box<dyn Fn(Request) -> serde_json::Value + Send>;

/// Binds `path` (removing a stale socket), sets its mode for `access` and starts the control
/// thread.
pub fn spawn(path: &Path, access: Access, handler: Handler) -> io::Result<Worker> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    let mode = if access == Access::Owner { 0o600 } else { 0o666 };
    crate::sys::proc::chmod(path, mode)?;
    let owner = crate::sys::proc::euid();
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    Worker::spawn("mpbond-control", poll, move |poll, stop| {
        run(poll, &stop, &listener, &(access, owner), &handler);
    })
}

fn run(mut poll: Poll, stop: &AtomicBool, listener: &UnixListener, who: &(Access, u32), handler: &Handler) {
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
                    if let Err(e) = serve(stream, who, handler) {
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

fn serve(stream: UnixStream, (access, owner): &(Access, u32), handler: &Handler) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => match crate::sys::sock::peer_cred(stream.as_fd()) {
            Ok(cred) if access.allows(&cred, *owner, req) => handler(req),
            Ok(cred) => {
                tracing::info!(uid = cred.uid, ?req, "control request refused");
                serde_json::json!({ "error": "permission denied" })
            }
            Err(e) => serde_json::json!({ "error": format!("peer credentials: {e}") }),
        },
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
    fn who_may_ask_what() {
        use crate::sys::sock::PeerCred;
        let cred = |uid, gid, groups: &[u32]| PeerCred {
            uid,
            gid,
            groups: groups.to_vec(),
        };
        let (root, owner, member, in_supplementary, stranger) = (
            cred(0, 0, &[]),
            cred(500, 500, &[]),
            cred(1000, 77, &[]),
            cred(1001, 1001, &[5, 77]),
            cred(1002, 1002, &[5]),
        );
        for access in [Access::Owner, Access::Group(77), Access::Everyone] {
            for req in [Request::Status, Request::Shutdown] {
                assert!(access.allows(&root, 500, req));
                assert!(access.allows(&owner, 500, req));
            }
            for c in [&member, &in_supplementary, &stranger] {
                assert!(!access.allows(c, 500, Request::Shutdown), "{access:?} {c:?}");
            }
        }
        assert!(!Access::Owner.allows(&member, 500, Request::Status));
        assert!(Access::Group(77).allows(&member, 500, Request::Status));
        assert!(Access::Group(77).allows(&in_supplementary, 500, Request::Status));
        assert!(!Access::Group(77).allows(&stranger, 500, Request::Status));
        assert!(Access::Everyone.allows(&stranger, 500, Request::Status));
    }

    #[test]
    fn request_answer_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("mpbond-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let mut worker = spawn(
            &path,
            Access::Owner,
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
