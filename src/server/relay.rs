//! The relay of one direction of a converted connection: bytes from a source socket to a
//! destination socket through a pipe with `splice(2)`, never through user space (except the few
//! bytes of the Convert reply and the SYN's early data, written first). FIN is carried as
//! `shutdown(SHUT_WR)` once everything before it was written (RFC 8803 §4.2: "the Converter will
//! also terminate the downstream connection by using FIN segments").
//!
//! Pipes come from a [`PipePool`] and go back to it whenever a direction has nothing in flight, so
//! ten thousand idle connections hold no pipe at all.

use std::io::{self, Write as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};

use mio::net::TcpStream;

use crate::sys::sock;

/// Bytes one `splice` moves at most (the default pipe capacity).
pub const CHUNK: usize = 64 * 1024;

/// A pipe: read end, write end.
#[derive(Debug)]
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

/// Free pipes, reused across connections.
#[derive(Debug)]
pub struct PipePool {
    free: Vec<Pipe>,
    max_free: usize,
    /// Pipes created since start.
    pub created: u64,
    /// Pipes lent out now.
    pub in_use: u64,
}

impl PipePool {
    /// A pool that keeps at most `max_free` idle pipes.
    pub fn new(max_free: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            max_free,
            created: 0,
            in_use: 0,
        }
    }

    fn take(&mut self) -> io::Result<Pipe> {
        let p = match self.free.pop() {
            Some(p) => p,
            None => {
                let (r, w) = sock::pipe()?;
                self.created += 1;
                Pipe { r, w }
            }
        };
        self.in_use += 1;
        Ok(p)
    }

    fn give(&mut self, p: Pipe) {
        self.in_use = self.in_use.saturating_sub(1);
        if self.free.len() < self.max_free {
            self.free.push(p);
        }
    }
}

/// Why a direction stopped for good with an error.
#[derive(Debug)]
pub enum Fault {
    /// Reading the source failed (it was reset).
    Src(io::Error),
    /// Writing the destination failed (it was reset or is gone).
    Dst(io::Error),
    /// No pipe could be made (descriptor limit).
    Resource(io::Error),
}

/// Where a pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// Waiting for the source to be readable or the destination writable.
    Blocked,
    /// The source's FIN was carried to the destination; nothing more will move.
    Finished,
    /// The work budget ran out with more to do: call again soon (no readiness event will come).
    Budget,
}

/// One direction.
#[derive(Debug, Default)]
pub struct Half {
    prefix: Vec<u8>,
    prefix_off: usize,
    pipe: Option<Pipe>,
    in_pipe: usize,
    src_eof: bool,
    dst_shut: bool,
    /// Bytes written to the destination (prefix included).
    pub bytes: u64,
}

fn is_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

impl Half {
    /// A direction that first writes `prefix` to its destination.
    pub fn with_prefix(prefix: Vec<u8>) -> Half {
        Half {
            prefix,
            ..Half::default()
        }
    }

    /// Whether bytes wait to be written to the destination.
    pub fn has_pending(&self) -> bool {
        self.in_pipe > 0 || self.prefix_off < self.prefix.len()
    }

    /// Whether the FIN was carried.
    pub fn finished(&self) -> bool {
        self.dst_shut
    }

    /// Gives the pipe back (the connection is closing).
    pub fn release(&mut self, pool: &mut PipePool) {
        if let Some(p) = self.pipe.take() {
            if self.in_pipe == 0 {
                pool.give(p);
            } else {
                // Bytes stranded in it: the pipe cannot be reused.
                pool.in_use = pool.in_use.saturating_sub(1);
            }
        }
        self.in_pipe = 0;
    }

    /// Moves what it can from `src` to `dst`, at most about `budget` bytes.
    pub fn pump(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        pool: &mut PipePool,
        budget: usize,
    ) -> Result<Pumped, Fault> {
        let start = self.bytes;
        while self.prefix_off < self.prefix.len() {
            match (&*dst).write(&self.prefix[self.prefix_off..]) {
                Ok(n) => {
                    self.prefix_off += n;
                    self.bytes += n as u64;
                }
                Err(e) if is_block(&e) => return Ok(Pumped::Blocked),
                Err(e) => return Err(Fault::Dst(e)),
            }
        }
        if !self.prefix.is_empty() {
            self.prefix = Vec::new();
            self.prefix_off = 0;
        }
        loop {
            if self.bytes - start >= budget as u64 {
                return Ok(Pumped::Budget);
            }
            if self.in_pipe > 0 {
                let Some(p) = &self.pipe else {
                    self.in_pipe = 0;
                    continue;
                };
                match sock::splice(p.r.as_fd(), dst.as_fd(), self.in_pipe) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.bytes += n as u64;
                        continue;
                    }
                    Err(e) if is_block(&e) => return Ok(Pumped::Blocked),
                    Err(e) => return Err(Fault::Dst(e)),
                }
            }
            if self.src_eof {
                if !self.dst_shut {
                    self.dst_shut = true;
                    self.release(pool);
                    match dst.shutdown(Shutdown::Write) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(e) => return Err(Fault::Dst(e)),
                    }
                }
                return Ok(Pumped::Finished);
            }
            if self.pipe.is_none() {
                self.pipe = Some(pool.take().map_err(Fault::Resource)?);
            }
            let Some(p) = &self.pipe else { continue };
            // The pipe is empty here, so EAGAIN means the socket has nothing (not a full pipe).
            match sock::splice(src.as_fd(), p.w.as_fd(), CHUNK) {
                Ok(0) => self.src_eof = true,
                Ok(n) => self.in_pipe = n,
                Err(e) if is_block(&e) => {
                    if let Some(p) = self.pipe.take() {
                        pool.give(p);
                    }
                    return Ok(Pumped::Blocked);
                }
                Err(e) => return Err(Fault::Src(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::time::Duration;

    fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, TcpStream::from_std(b))
    }

    /// client ⇄ (up) relay (down) ⇄ server, pumped by hand until quiet.
    #[test]
    fn prefix_then_spliced_bytes_then_fin() {
        let (mut client, up) = pair();
        let (mut server, down) = pair();
        let mut pool = PipePool::new(4);
        let mut h = Half::with_prefix(b"early ".to_vec());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sender = {
            let data = data.clone();
            std::thread::spawn(move || {
                std::io::Write::write_all(&mut client, &data).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                client
            })
        };
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            got
        });
        let mut finished = false;
        for _ in 0..20_000 {
            match h.pump(&up, &down, &mut pool, 1 << 20).unwrap() {
                Pumped::Finished => {
                    finished = true;
                    break;
                }
                Pumped::Budget => {}
                Pumped::Blocked => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        assert!(finished, "the FIN was carried");
        let _client = sender.join().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(&got[..6], b"early ");
        assert_eq!(&got[6..], &data[..]);
        assert_eq!(h.bytes, 6 + data.len() as u64);
        assert_eq!(pool.in_use, 0, "pipe returned");
        assert!(pool.created >= 1);
    }

    #[test]
    fn a_reset_source_is_a_source_fault() {
        let (client, up) = pair();
        let (_server, down) = pair();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        std::io::Write::write_all(&mut &client, b"x").unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        let mut pool = PipePool::new(4);
        let mut h = Half::default();
        let mut fault = None;
        for _ in 0..100 {
            match h.pump(&up, &down, &mut pool, 1 << 20) {
                Err(f) => {
                    fault = Some(f);
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(matches!(fault, Some(Fault::Src(_))), "{fault:?}");
    }
}
