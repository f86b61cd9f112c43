//! Clients for the lab servers: HTTP download/upload with byte-exact verification, UDP echo with
//! loss and RTT counts, TCP connect RTT. They run in the calling thread's network namespace (use
//! [`crate::Lab::run_in`] or `ip netns exec` to pick one).

use crate::pattern::{Fnv64, fill, first_mismatch};
use crate::sys::MptcpInfo;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Open a kernel MPTCP socket (`IPPROTO_MPTCP`) instead of plain TCP.
    pub mptcp: bool,
    /// Bind to this interface (`SO_BINDTODEVICE`), e.g. `wwan0` to use the cellular path.
    pub device: Option<String>,
    /// Bound on the whole operation (connect included).
    pub timeout: Duration,
}

impl Default for ClientOpts {
    fn default() -> Self {
        Self {
            mptcp: false,
            device: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl ClientOpts {
    /// Plain TCP through `dev`.
    pub fn via(dev: &str) -> Self {
        Self {
            device: Some(dev.to_owned()),
            ..Self::default()
        }
    }
}

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket call failed (connect refused, timeout, reset, …).
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: io::Error,
    },
    /// Received data differs from the pattern.
    #[error("byte {offset} differs from the pattern (got {got:#04x}, expected {expected:#04x})")]
    Mismatch {
        /// Stream offset of the first wrong byte.
        offset: u64,
        /// The byte received.
        got: u8,
        /// The byte expected.
        expected: u8,
    },
    /// The stream ended early.
    #[error("connection ended after {got} of {expected} bytes")]
    Short {
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The server's answer was not what the protocol says.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The operation did not finish within [`ClientOpts::timeout`].
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClientError {
    let context = context.into();
    move |cause| ClientError::Io { context, cause }
}

/// Result of one HTTP transfer.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Payload bytes moved and verified.
    pub bytes: u64,
    /// Time from connect start to verified end.
    pub elapsed: Duration,
    /// The client socket's `MPTCP_INFO` at the end (`None`: plain TCP or fallback).
    pub mptcp: Option<MptcpInfo>,
    /// Longest time between two reads that brought body bytes (downloads; zero for uploads).
    pub longest_stall: Duration,
}

impl TransferReport {
    /// Goodput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Opens a TCP (or MPTCP) connection to `addr` honouring `opts`.
pub fn connect(addr: SocketAddr, opts: &ClientOpts) -> Result<TcpStream, ClientError> {
    let proto = if opts.mptcp {
        Protocol::from(crate::serve::IPPROTO_MPTCP)
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(proto)).map_err(io_err("socket"))?;
    if let Some(dev) = &opts.device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(io_err(format!("bind to device {dev}")))?;
    }
    s.connect_timeout(&SockAddr::from(addr), opts.timeout)
        .map_err(io_err(format!("connect {addr}")))?;
    s.set_tcp_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
    Ok(s.into())
}

/// Time of a TCP handshake to `addr` (one round trip: SYN → SYN/ACK).
pub fn tcp_connect_rtt(addr: SocketAddr, opts: &ClientOpts) -> Result<Duration, ClientError> {
    let t = Instant::now();
    let s = connect(addr, opts)?;
    let rtt = t.elapsed();
    drop(s);
    Ok(rtt)
}

struct Deadline(Instant, Duration);

impl Deadline {
    fn new(d: Duration) -> Self {
        Self(Instant::now() + d, d)
    }
    fn arm(&self, s: &TcpStream) -> Result<(), ClientError> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.1));
        }
        s.set_read_timeout(Some(left)).map_err(io_err("set timeout"))?;
        s.set_write_timeout(Some(left)).map_err(io_err("set timeout"))
    }
}

fn map_timeout(d: &Deadline, context: &str) -> impl FnOnce(io::Error) -> ClientError {
    let (limit, context) = (d.1, context.to_owned());
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(limit),
        _ => ClientError::Io { context, cause: e },
    }
}

/// Reads a response head; returns (status, content-length, leftover body bytes).
fn read_head(s: &mut TcpStream, dl: &Deadline) -> Result<(u16, Option<u64>, Vec<u8>), ClientError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 16 * 1024 {
            return Err(ClientError::BadResponse("response head over 16 KiB".into()));
        }
        dl.arm(s)?;
        let n = s
            .read(&mut chunk)
            .map_err(map_timeout(dl, "read response head"))?;
        if n == 0 {
            return Err(ClientError::BadResponse(
                "connection closed before the response head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            ClientError::BadResponse(format!("status line `{}`", head.lines().next().unwrap_or("")))
        })?;
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    Ok((status, len, buf[end + 4..].to_vec()))
}

/// `GET /bytes/N` from `addr`, verifying every byte against the pattern.
pub fn http_get(addr: SocketAddr, n: u64, opts: &ClientOpts) -> Result<TransferReport, ClientError> {
    let t0 = Instant::now();
    let dl = Deadline::new(opts.timeout);
    let mut s = connect(addr, opts)?;
    get_on(&mut s, (addr, n), true, &dl, t0)
}

/// [`http_get`] on a connection opened beforehand (e.g. with [`connect`], to hold many open at
/// once), within `timeout` from now.
pub fn http_get_on(
    s: TcpStream,
    addr: SocketAddr,
    n: u64,
    timeout: Duration,
) -> Result<TransferReport, ClientError> {
    let mut s = s;
    get_on(&mut s, (addr, n), true, &Deadline::new(timeout), Instant::now())
}

/// One `GET /bytes/N` on a keep-alive connection that stays open for the next (an interactive
/// exchange: a request and its reply), within `timeout` from now; `elapsed` is the time from
/// the request to the last byte of the reply.
pub fn http_get_again(
    s: &mut TcpStream,
    addr: SocketAddr,
    n: u64,
    timeout: Duration,
) -> Result<TransferReport, ClientError> {
    get_on(s, (addr, n), false, &Deadline::new(timeout), Instant::now())
}

/// The GET on `s`; `close`: the last request of the connection (`Connection: close`).
fn get_on(
    s: &mut TcpStream,
    (addr, n): (SocketAddr, u64),
    close: bool,
    dl: &Deadline,
    t0: Instant,
) -> Result<TransferReport, ClientError> {
    dl.arm(s)?;
    let conn = if close { "Connection: close\r\n" } else { "" };
    let req = format!("GET /bytes/{n} HTTP/1.1\r\nHost: {addr}\r\n{conn}\r\n");
    s.write_all(req.as_bytes())
        .map_err(map_timeout(dl, "send request"))?;
    let (status, len, first) = read_head(s, dl)?;
    if status != 200 || len != Some(n) {
        return Err(ClientError::BadResponse(format!(
            "status {status}, content-length {len:?}, wanted 200 and {n}"
        )));
    }
    let mut got = 0u64;
    let check = |data: &[u8], got: &mut u64| -> Result<(), ClientError> {
        let data = &data[..data.len().min((n - *got) as usize)];
        if let Some(i) = first_mismatch(*got, data) {
            let offset = *got + i as u64;
            return Err(ClientError::Mismatch {
                offset,
                got: data[i],
                expected: crate::pattern::byte_at(offset),
            });
        }
        *got += data.len() as u64;
        Ok(())
    };
    check(&first, &mut got)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut last = Instant::now();
    let mut longest_stall = Duration::ZERO;
    while got < n {
        dl.arm(s)?;
        let k = s.read(&mut buf).map_err(map_timeout(dl, "read body"))?;
        if k == 0 {
            return Err(ClientError::Short { got, expected: n });
        }
        longest_stall = longest_stall.max(last.elapsed());
        last = Instant::now();
        check(&buf[..k], &mut got)?;
    }
    let mptcp = crate::sys::mptcp_info(s).ok().flatten().filter(|i| !i.fallback);
    Ok(TransferReport {
        bytes: n,
        elapsed: t0.elapsed(),
        mptcp,
        longest_stall,
    })
}

/// `POST /sink` of N pattern bytes to `addr`; checks the server's byte count and FNV-1a 64.
pub fn http_post(addr: SocketAddr, n: u64, opts: &ClientOpts) -> Result<TransferReport, ClientError> {
    let t0 = Instant::now();
    let dl = Deadline::new(opts.timeout);
    let s = connect(addr, opts)?;
    post_on(s, addr, n, &dl, t0)
}

/// [`http_post`] on a connection opened beforehand, within `timeout` from now.
pub fn http_post_on(
    s: TcpStream,
    addr: SocketAddr,
    n: u64,
    timeout: Duration,
) -> Result<TransferReport, ClientError> {
    post_on(s, addr, n, &Deadline::new(timeout), Instant::now())
}

fn post_on(
    mut s: TcpStream,
    addr: SocketAddr,
    n: u64,
    dl: &Deadline,
    t0: Instant,
) -> Result<TransferReport, ClientError> {
    dl.arm(&s)?;
    let req =
        format!("POST /sink HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(map_timeout(dl, "send request"))?;
    let mut h = Fnv64::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        fill(off, &mut buf[..k]);
        h.update(&buf[..k]);
        dl.arm(&s)?;
        s.write_all(&buf[..k]).map_err(map_timeout(dl, "send body"))?;
        off += k as u64;
    }
    let (status, len, mut body) = read_head(&mut s, dl)?;
    let len = len.ok_or_else(|| ClientError::BadResponse("no content-length".into()))?;
    while (body.len() as u64) < len {
        dl.arm(&s)?;
        let k = s.read(&mut buf).map_err(map_timeout(dl, "read response"))?;
        if k == 0 {
            break;
        }
        body.extend_from_slice(&buf[..k]);
    }
    let text = String::from_utf8_lossy(&body);
    let want = format!("{{\"bytes\":{n},\"fnv1a64\":\"{:016x}\"}}", h.value());
    if status != 200 || text.trim() != want {
        return Err(ClientError::BadResponse(format!(
            "status {status}, body `{}`, expected `{want}`",
            text.trim()
        )));
    }
    let mptcp = crate::sys::mptcp_info(&s).ok().flatten().filter(|i| !i.fallback);
    Ok(TransferReport {
        bytes: n,
        elapsed: t0.elapsed(),
        mptcp,
        longest_stall: Duration::ZERO,
    })
}

/// Result of a UDP echo run.
#[derive(Debug, Clone)]
pub struct UdpEchoReport {
    /// Datagrams sent.
    pub sent: u32,
    /// Distinct datagrams echoed back (within the per-window wait).
    pub received: u32,
    /// Smallest round trip seen.
    pub rtt_min: Option<Duration>,
    /// Median round trip.
    pub rtt_median: Option<Duration>,
}

impl UdpEchoReport {
    /// received / sent.
    pub fn fraction(&self) -> f64 {
        f64::from(self.received) / f64::from(self.sent.max(1))
    }
}

/// Sends `count` numbered datagrams to the echo server `addr` in windows of `window`, waiting up
/// to `wait` after each window for the echoes. Bound to `device` when given.
pub fn udp_echo(
    addr: SocketAddr,
    count: u32,
    window: u32,
    wait: Duration,
    device: Option<&str>,
) -> Result<UdpEchoReport, ClientError> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(io_err("udp socket"))?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(io_err(format!("bind to device {dev}")))?;
    }
    s.connect(&SockAddr::from(addr))
        .map_err(io_err(format!("udp connect {addr}")))?;
    let s: UdpSocket = s.into();
    let window = window.max(1);
    let mut seen = vec![false; count as usize];
    let mut sent_at = vec![None::<Instant>; count as usize];
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    let mut seq = 0u32;
    while seq < count {
        let end = (seq + window).min(count);
        for i in seq..end {
            let mut pkt = [0u8; 32];
            pkt[..4].copy_from_slice(&i.to_be_bytes());
            pkt[4..12].copy_from_slice(b"netlab!!");
            sent_at[i as usize] = Some(Instant::now());
            // A send error (ENOBUFS, unreachable) counts as a lost datagram.
            let _ = s.send(&pkt);
        }
        let deadline = Instant::now() + wait;
        while (seq..end).any(|i| !seen[i as usize]) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.set_read_timeout(Some(left)).map_err(io_err("set timeout"))?;
            match s.recv(&mut buf) {
                Ok(n) if n >= 12 && &buf[4..12] == b"netlab!!" => {
                    let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if let Some(done) = seen.get_mut(i as usize)
                        && !*done
                    {
                        *done = true;
                        if let Some(t) = sent_at[i as usize] {
                            rtts.push(t.elapsed());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                // ICMP errors (e.g. port unreachable) surface as recv errors: the datagram is lost.
                Err(_) => {}
            }
        }
        seq = end;
    }
    rtts.sort();
    Ok(UdpEchoReport {
        sent: count,
        received: seen.iter().filter(|&&b| b).count() as u32,
        rtt_min: rtts.first().copied(),
        rtt_median: rtts.get(rtts.len() / 2).copied(),
    })
}

/// Result of a paced UDP stream ([`udp_stream`]).
#[derive(Debug, Clone)]
pub struct UdpStreamReport {
    /// Datagrams sent.
    pub sent: u32,
    /// Datagrams that came back.
    pub echoed: u32,
    /// The longest time between two datagrams that came back (the stall an outage caused).
    pub longest_gap: Duration,
    /// The longest time between two departures (the sender's own pacing: what the longest gap
    /// of the echoes cannot be below, whatever the path).
    pub longest_send_gap: Duration,
    /// The latest departure after its due time (how exact the pacing was).
    pub latest_departure: Duration,
    /// Whether the sender ran at real-time priority (`SCHED_FIFO`; needs root), so that a busy
    /// machine did not delay its departures.
    pub realtime: bool,
    /// The shortest and the longest round trip of a datagram's first echo: the longest minus
    /// the shortest is how long the path held one datagram beyond the fastest.
    pub rtt_min: Option<Duration>,
    /// See [`UdpStreamReport::rtt_min`].
    pub rtt_max: Option<Duration>,
    /// Datagrams sent that never came back (by sequence number; a duplicate echo is not one).
    pub lost: u32,
}

/// How long before a departure the stream's sender stops sleeping and spins, so that it leaves
/// on time whatever the timer's slack and the wake-up's latency.
const SPIN_BEFORE_DUE: Duration = Duration::from_micros(400);

/// An RTP-like stream to the echo server `addr`: a `size`-byte datagram (RTP version 2 header,
/// sequence number, timestamp at 8 kHz) every `interval` for `dur`, the echoes timed; then
/// 300 ms more for the last ones.
///
/// The pacing is exact: the calling thread asks for real-time priority (root; restored at the
/// end) and spins for the last [`SPIN_BEFORE_DUE`] before each departure, so that the echoes'
/// gaps are the path's, not the sender's.
pub fn udp_stream(
    addr: SocketAddr,
    size: usize,
    interval: Duration,
    dur: Duration,
) -> Result<UdpStreamReport, ClientError> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(io_err("udp socket"))?;
    s.connect(&SockAddr::from(addr))
        .map_err(io_err(format!("udp connect {addr}")))?;
    let s: UdpSocket = s.into();
    s.set_nonblocking(true).map_err(io_err("set nonblocking"))?;
    let interval = interval.max(Duration::from_millis(1));
    let realtime = crate::sys::RealtimeGuard::enter();
    let start = Instant::now();
    let end = start + dur;
    let mut pkt = vec![0u8; size.max(12)];
    let mut buf = vec![0u8; 65_536];
    let (mut sent, mut echoed) = (0u32, 0u32);
    let mut last: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let (mut last_sent, mut longest_send): (Option<Instant>, Duration) = (None, Duration::ZERO);
    let mut latest_departure = Duration::ZERO;
    // Departure time of each datagram, by its index (the RTP timestamp / 160).
    let count = (dur.as_micros() / interval.as_micros().max(1)) as usize + 1;
    let mut departed: Vec<Instant> = Vec::with_capacity(count);
    let mut first_echo: Vec<bool> = Vec::with_capacity(count);
    let (mut rtt_min, mut rtt_max): (Option<Duration>, Option<Duration>) = (None, None);
    loop {
        let now = Instant::now();
        if now >= end + Duration::from_millis(300) {
            break;
        }
        let due = start + interval * sent;
        if now >= due && now < end {
            pkt[0] = 0x80;
            pkt[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
            pkt[4..8].copy_from_slice(&sent.wrapping_mul(160).to_be_bytes());
            // A send error counts as a lost datagram.
            let _ = s.send(&pkt);
            let t = Instant::now();
            latest_departure = latest_departure.max(t - due);
            if let Some(l) = last_sent {
                longest_send = longest_send.max(t - l);
            }
            last_sent = Some(t);
            departed.push(t);
            first_echo.push(false);
            sent += 1;
            continue;
        }
        let until = if now < end {
            due.max(now)
        } else {
            end + Duration::from_millis(300)
        };
        let left = until.saturating_duration_since(now);
        // Sleep until an echo or the departure's spin: ppoll's timeout is a high-resolution
        // timer (SO_RCVTIMEO counts in jiffies, a late wake-up of up to 4-10 ms).
        let sleep = if now < end {
            left.saturating_sub(SPIN_BEFORE_DUE)
        } else {
            left
        };
        if !sleep.is_zero() {
            let mut fds = [libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            crate::sys::ppoll(&mut fds, Some(sleep)).map_err(io_err("ppoll"))?;
        }
        if let Ok(n) = s.recv(&mut buf) {
            let t = Instant::now();
            if n >= 8 {
                let idx = (u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) / 160) as usize;
                if let (Some(&d), Some(seen)) = (departed.get(idx), first_echo.get_mut(idx))
                    && !*seen
                {
                    *seen = true;
                    let rtt = t - d;
                    rtt_min = Some(rtt_min.map_or(rtt, |m| m.min(rtt)));
                    rtt_max = Some(rtt_max.map_or(rtt, |m| m.max(rtt)));
                }
            }
            if let Some(l) = last {
                longest = longest.max(t - l);
            }
            last = Some(t);
            echoed += 1;
        } else if sleep.is_zero() {
            std::hint::spin_loop();
        }
    }
    Ok(UdpStreamReport {
        sent,
        echoed,
        longest_gap: longest,
        longest_send_gap: longest_send,
        latest_departure,
        realtime: realtime.is_some(),
        rtt_min,
        rtt_max,
        lost: sent.saturating_sub(first_echo.iter().filter(|&&b| b).count() as u32),
    })
}

/// Resolves `name` (type AAAA with `v6`, else A) with the DNS server at `server`: up to `tries`
/// queries, each waiting `wait` for its answer (a resolver's retry loop). The socket is bound to
/// `device` when given.
pub fn dns_lookup(
    server: SocketAddr,
    name: &str,
    v6: bool,
    wait: Duration,
    tries: u32,
    device: Option<&str>,
) -> Result<Vec<std::net::IpAddr>, ClientError> {
    let s = Socket::new(Domain::for_address(server), Type::DGRAM, None).map_err(io_err("udp socket"))?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(io_err(format!("bind to device {dev}")))?;
    }
    s.connect(&SockAddr::from(server))
        .map_err(io_err(format!("udp connect {server}")))?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .map_err(io_err("set timeout"))?;
    let qtype = if v6 {
        crate::dns::TYPE_AAAA
    } else {
        crate::dns::TYPE_A
    };
    let mut buf = [0u8; 1500];
    for attempt in 0..tries.max(1) {
        // A different ID per try, as resolvers do, so a late answer to an earlier try is told apart.
        let id = 0x5a00 ^ attempt as u16;
        let q =
            crate::dns::build_query(id, name, qtype).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        // A send error (unreachable) counts as a lost query.
        let _ = s.send(&q);
        let until = Instant::now() + wait;
        while Instant::now() < until {
            match s.recv(&mut buf) {
                Ok(n) => match crate::dns::parse_response(&buf[..n], id) {
                    Ok(addrs) => return Ok(addrs),
                    Err(crate::dns::DnsError::NotOurs(_)) => {}
                    Err(e) => return Err(ClientError::BadResponse(e.to_string())),
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                // ICMP errors surface here: the query is lost, try again.
                Err(_) => break,
            }
        }
    }
    Err(ClientError::Timeout(wait * tries.max(1)))
}
