//! The delay element of a path: the `wire` namespace between the laptop and its router.
//!
//! The wire namespace has two veth ends, `l` (toward the laptop) and `r` (toward the router).
//! With no delay they are ports of a kernel bridge `br0` (kernel speed, no userspace copy). When a
//! delay is set, a relay thread takes them out of the bridge and forwards Ethernet frames itself:
//! one `AF_PACKET` socket per end, `recvmmsg` batches into a per-direction FIFO in which each frame
//! waits until its due time (arrival + half the configured round-trip delay), then `sendmmsg` to
//! the other end. Due times never decrease within a direction, so lowering the delay does not
//! reorder frames. Setting the delay back to 0 flushes the queues and re-bridges the ends.
//!
//! The relay listens on a unix socket (`<state dir>/<path>.ctl`), one text command per
//! connection: `delay <microseconds>` (answer `ok <us>`), `get` (answer
//! `delay <us> relayed <frames> dropped <frames> rx_errors <n>`).

use crate::sys::{PacketSocket, ppoll};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Interface of the wire namespace toward the laptop.
pub const WIRE_LAPTOP_SIDE: &str = "l";
/// Interface of the wire namespace toward the router.
pub const WIRE_ROUTER_SIDE: &str = "r";
/// The bridge joining them when no delay is set.
pub const WIRE_BRIDGE: &str = "br0";

/// Frames queued per direction before new arrivals are dropped (a full queue at 1 Gbit/s and
/// 250 ms one-way delay would need ~21k frames; more than that is a misconfiguration).
const MAX_QUEUE: usize = 65_536;
/// Receive buffer per frame: frames are MTU-sized (tx offloads are off), GSO frames would be
/// larger and are dropped and counted.
const FRAME_BUF: usize = 16_384;
const BATCH: usize = 64;
/// Upper bound on batches handled per wake-up per direction, so control commands stay responsive.
const MAX_BATCHES: usize = 32;

struct Frame {
    due: Instant,
    data: Vec<u8>,
}

#[derive(Default)]
struct Dir {
    q: VecDeque<Frame>,
    last_due: Option<Instant>,
}

struct Relay {
    ns: String,
    one_way: Duration,
    socks: Option<(PacketSocket, PacketSocket)>,
    dirs: [Dir; 2],
    relayed: u64,
    dropped: u64,
    rx_errors: u64,
    bufs: Vec<Vec<u8>>,
    /// Frame buffers handed back after sending, reused for new arrivals (no allocation per frame
    /// in steady state).
    pool: Vec<Vec<u8>>,
}

/// Buffers kept for reuse.
const POOL_MAX: usize = 8192;

/// Runs the relay loop in the calling thread (already inside the wire namespace `ns`) until
/// `stop` is set.
pub(crate) fn run(ns: String, listener: UnixListener, stop: Arc<AtomicBool>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut relay = Relay {
        ns,
        one_way: Duration::ZERO,
        socks: None,
        dirs: [Dir::default(), Dir::default()],
        relayed: 0,
        dropped: 0,
        rx_errors: 0,
        bufs: (0..BATCH).map(|_| vec![0u8; FRAME_BUF]).collect(),
        pool: Vec::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut fds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut timeout = Duration::from_millis(100);
        if let Some((a, b)) = &relay.socks {
            let blocked = |d: &Dir| d.q.front().is_some_and(|f| f.due <= now);
            let ev = |out_blocked: bool| libc::POLLIN | if out_blocked { libc::POLLOUT } else { 0 };
            // Socket a (laptop side) receives direction 0 and sends direction 1.
            fds.push(libc::pollfd {
                fd: a.raw_fd(),
                events: ev(blocked(&relay.dirs[1])),
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: b.raw_fd(),
                events: ev(blocked(&relay.dirs[0])),
                revents: 0,
            });
            for d in &relay.dirs {
                if let Some(f) = d.q.front() {
                    timeout = timeout.min(f.due.saturating_duration_since(now));
                }
            }
        }
        ppoll(&mut fds, Some(timeout))?;
        if fds[0].revents != 0 {
            while let Ok((stream, _)) = listener.accept() {
                relay.control(stream);
            }
        }
        relay.pump()?;
    }
    Ok(())
}

impl Relay {
    fn control(&mut self, stream: UnixStream) {
        // A broken client only loses its own answer.
        let _ = (|| -> io::Result<()> {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line)?;
            let mut words = line.split_whitespace();
            let answer = match (words.next(), words.next()) {
                (Some("delay"), Some(us)) => match us.parse::<u64>() {
                    Ok(us) => match self.set_one_way(Duration::from_micros(us / 2)) {
                        Ok(()) => format!("ok {us}"),
                        Err(e) => format!("error {e}"),
                    },
                    Err(_) => format!("error bad microseconds `{us}`"),
                },
                (Some("get"), None) => format!(
                    "delay {} relayed {} dropped {} rx_errors {}",
                    self.one_way.as_micros() * 2,
                    self.relayed,
                    self.dropped,
                    self.rx_errors
                ),
                _ => format!("error unknown command `{}`", line.trim()),
            };
            (&stream).write_all(format!("{answer}\n").as_bytes())
        })();
    }

    fn set_one_way(&mut self, d: Duration) -> io::Result<()> {
        self.one_way = d;
        if !d.is_zero() && self.socks.is_none() {
            for ifc in [WIRE_LAPTOP_SIDE, WIRE_ROUTER_SIDE] {
                crate::cmd::run(&["ip", "-n", &self.ns, "link", "set", "dev", ifc, "nomaster"])
                    .map_err(io::Error::other)?;
            }
            self.socks = Some((
                PacketSocket::open(WIRE_LAPTOP_SIDE)?,
                PacketSocket::open(WIRE_ROUTER_SIDE)?,
            ));
        } else if d.is_zero() && self.socks.is_some() {
            // Hand what is queued on at once, then give the ends back to the bridge.
            for d in &mut self.dirs {
                for f in &mut d.q {
                    f.due = Instant::now();
                }
            }
            for _ in 0..64 {
                self.flush(Instant::now())?;
                if self.dirs.iter().all(|d| d.q.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            for d in &mut self.dirs {
                self.dropped += d.q.len() as u64;
                d.q.clear();
                d.last_due = None;
            }
            self.socks = None;
            for ifc in [WIRE_LAPTOP_SIDE, WIRE_ROUTER_SIDE] {
                crate::cmd::run(&[
                    "ip",
                    "-n",
                    &self.ns,
                    "link",
                    "set",
                    "dev",
                    ifc,
                    "master",
                    WIRE_BRIDGE,
                ])
                .map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    fn pump(&mut self) -> io::Result<()> {
        if self.socks.is_none() {
            return Ok(());
        }
        let mut lens = [0usize; BATCH];
        for dir in 0..2 {
            for _ in 0..MAX_BATCHES {
                let n = {
                    let Some((a, b)) = &self.socks else { return Ok(()) };
                    let sock = if dir == 0 { a } else { b };
                    match sock.recv_batch(&mut self.bufs, &mut lens) {
                        Ok(n) => n,
                        // E.g. ENETDOWN while an end is down: nothing to read now; the relay
                        // must survive link changes, so count it and move on.
                        Err(_) => {
                            self.rx_errors += 1;
                            // Do not spin on a socket that keeps reporting an error.
                            std::thread::sleep(Duration::from_millis(1));
                            0
                        }
                    }
                };
                let now = Instant::now();
                let d = &mut self.dirs[dir];
                let mut due = now + self.one_way;
                if let Some(last) = d.last_due {
                    due = due.max(last);
                }
                for (buf, &len) in self.bufs.iter().zip(&lens).take(n) {
                    if len > FRAME_BUF || d.q.len() >= MAX_QUEUE {
                        self.dropped += 1;
                        continue;
                    }
                    let mut data = self.pool.pop().unwrap_or_default();
                    data.clear();
                    data.extend_from_slice(&buf[..len]);
                    d.q.push_back(Frame { due, data });
                }
                d.last_due = Some(due);
                if n < BATCH {
                    break;
                }
            }
        }
        self.flush(Instant::now())
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        let Some((a, b)) = &self.socks else { return Ok(()) };
        for (dir, out) in [(0, b), (1, a)] {
            let d = &mut self.dirs[dir];
            for _ in 0..MAX_BATCHES {
                let ready: Vec<&[u8]> =
                    d.q.iter()
                        .take(BATCH)
                        .take_while(|f| f.due <= now)
                        .map(|f| f.data.as_slice())
                        .collect();
                if ready.is_empty() {
                    break;
                }
                let want = ready.len();
                let sent = match out.send_batch(&ready) {
                    Ok(n) => n,
                    // A frame the interface refuses (e.g. larger than its MTU): drop it, go on.
                    Err(_) => {
                        d.q.pop_front();
                        self.dropped += 1;
                        continue;
                    }
                };
                for f in d.q.drain(..sent) {
                    if self.pool.len() < POOL_MAX {
                        self.pool.push(f.data);
                    }
                }
                self.relayed += sent as u64;
                if sent < want {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Sends one control command to the relay listening on `ctl` and returns its answer line.
pub fn command(ctl: &FsPath, cmd: &str) -> io::Result<String> {
    let mut s =
        UnixStream::connect(ctl).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ctl.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let line = line.trim().to_owned();
    if let Some(err) = line.strip_prefix("error ") {
        return Err(io::Error::other(format!("relay: {err}")));
    }
    if line.is_empty() {
        return Err(io::Error::other(
            "relay closed the control connection without answering",
        ));
    }
    Ok(line)
}

/// Where the control socket of `path`'s relay lives in the lab's state directory.
pub fn ctl_path(state_dir: &FsPath, path: crate::Path) -> PathBuf {
    state_dir.join(format!("{}.ctl", path.name()))
}
