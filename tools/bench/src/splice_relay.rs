//! The baseline of the converter-scale row (P9): the least a TCP relay can do with the Linux
//! kernel. It accepts on a kernel MPTCP listener (the same kind of socket `mpbond server`
//! accepts on, without TCP Fast Open or any protocol), connects to one fixed destination with
//! plain TCP, and moves bytes both ways with `splice(2)` through a pipe per direction (created
//! once the direction's source is first reported readable, kept for the connection's life, so
//! idle connections hold none), FIN carried as `shutdown`. One
//! thread, one mio `Poll`, edge-triggered, every socket drained until `WouldBlock`, no budget.
//!
//! Once the destination accepted, it writes one byte (`+`) to the client, as the converter
//! writes its Connected reply once the dial succeeded: the client waits for it, so both relays
//! are driven at the pace they can take connections (an unpaced client would overflow the
//! accept queue, and its connections would not all be relayed).
//!
//! It runs as a child process of `mpbond-bench` (`--splice-relay NS LISTEN DEST`, see
//! [`run_child`]) so that its CPU time and memory are its own, measured the same way as the
//! converter's. The `splice` and `pipe` calls are mpbond's own wrappers (`mpbond::sys::sock`).

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use mpbond::sys::sock;
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
/// Bytes one `splice` moves at most (the default pipe capacity, as `mpbond server`'s).
const CHUNK: usize = 64 * 1024;
/// `IPPROTO_MPTCP`.
const IPPROTO_MPTCP: i32 = 262;

/// One direction: bytes from a source socket through the pipe to a destination socket.
#[derive(Debug, Default)]
struct Dir {
    /// The source was reported readable (data, FIN or an error) at least once.
    readable: bool,
    pipe: Option<(OwnedFd, OwnedFd)>,
    in_pipe: usize,
    eof: bool,
    shut: bool,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

impl Dir {
    /// Moves everything that can move now; `Ok(true)` once the FIN was carried.
    fn pump(&mut self, src: &TcpStream, dst: &TcpStream, moved: &mut u64) -> io::Result<bool> {
        loop {
            if self.in_pipe > 0 {
                let Some((r, _)) = &self.pipe else {
                    return Err(io::Error::other("bytes in a missing pipe"));
                };
                match sock::splice(r.as_fd(), dst.as_fd(), self.in_pipe) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        *moved += n as u64;
                        continue;
                    }
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            if !self.readable {
                return Ok(false);
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    dst.shutdown(Shutdown::Write)?;
                }
                return Ok(true);
            }
            if self.pipe.is_none() {
                self.pipe = Some(sock::pipe()?);
            }
            let Some((_, w)) = &self.pipe else { continue };
            match sock::splice(src.as_fd(), w.as_fd(), CHUNK) {
                Ok(0) => self.eof = true,
                Ok(n) => self.in_pipe = n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

#[derive(Debug)]
struct Conn {
    up: TcpStream,
    down: TcpStream,
    /// `[client → destination, destination → client]`.
    dirs: [Dir; 2],
}

/// The child process's side: relays `listen` (in namespace `ns`) to `dest` until its stdin
/// closes, printing `ready` once listening, then `connections bytes` every 100 ms.
pub fn run_child(ns: &str, listen: SocketAddr, dest: SocketAddr) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        s.store(true, Ordering::Relaxed);
    });
    netlab::netns::run_in(ns, move || serve(listen, dest, &stop))
        .map_err(|e| format!("enter {ns}: {e}"))?
        .map_err(|e| format!("splice relay {listen} → {dest}: {e}"))
}

fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(IPPROTO_MPTCP)),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(TcpListener::from_std(s.into()))
}

fn serve(listen: SocketAddr, dest: SocketAddr, stop: &AtomicBool) -> io::Result<()> {
    let mut l = listener(listen)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut l, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let (mut live, mut moved) = (0u64, 0u64);
    let mut out = io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut next_print = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            if ev.token() == LISTENER {
                while let Ok((mut up, _)) = l.accept() {
                    // A blocking connect: the destination is one hop away.
                    let Ok(d) = std::net::TcpStream::connect_timeout(&dest, Duration::from_secs(5)) else {
                        continue;
                    };
                    d.set_nonblocking(true)?;
                    let mut down = TcpStream::from_std(d);
                    // A fresh established socket has room for one byte.
                    if (&up).write(b"+").ok() != Some(1) {
                        continue;
                    }
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let both = Interest::READABLE | Interest::WRITABLE;
                    poll.registry().register(&mut up, Token(2 * slot), both)?;
                    poll.registry().register(&mut down, Token(2 * slot + 1), both)?;
                    conns[slot] = Some(Conn {
                        up,
                        down,
                        dirs: [Dir::default(), Dir::default()],
                    });
                    live += 1;
                }
                continue;
            }
            let slot = ev.token().0 / 2;
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            // Token 2s is the client's socket (the source of direction 0), 2s + 1 the destination's.
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                c.dirs[ev.token().0 % 2].readable = true;
            }
            let [a, b] = &mut c.dirs;
            let ra = a.pump(&c.up, &c.down, &mut moved);
            let rb = b.pump(&c.down, &c.up, &mut moved);
            let end = match (ra, rb) {
                (Ok(fa), Ok(fb)) => fa && fb,
                _ => {
                    for s in [&c.up, &c.down] {
                        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    }
                    true
                }
            };
            if end && let Some(mut c) = conns[slot].take() {
                let _ = poll.registry().deregister(&mut c.up);
                let _ = poll.registry().deregister(&mut c.down);
                free.push(slot);
                live -= 1;
            }
        }
        if Instant::now() >= next_print {
            next_print = Instant::now() + Duration::from_millis(100);
            if writeln!(out, "{live} {moved}")
                .and_then(|()| out.flush())
                .is_err()
            {
                break;
            }
        }
    }
    Ok(())
}
