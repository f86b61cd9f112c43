//! Row family P9, converter scale: `mpbond server` (the RFC 8803 converter, in the lab's
//! converter namespace) beside a plain kernel splice relay ([`crate::splice_relay`]) on the same
//! path (laptop → Wi-Fi router → inet → converter namespace → a destination in inet):
//!
//! - N idle relayed connections opened one after another and held at once (N = 10,000; for the
//!   baseline at most what the hard `RLIMIT_NOFILE` lets its one descriptor table hold: two
//!   sockets per connection), counted
//!   as served when the client has its socket (for the converter: a Connected reply), the
//!   destination accepted the relayed connection, and the relay counts it live;
//! - memory per idle relayed connection: the relay process's RSS growth ÷ N, and the kernel's TCP
//!   buffer memory (`/proc/net/sockstat` `TCP … mem`, a counter of the whole kernel) growth ÷ N;
//! - CPU seconds per GB relayed: the relay process's `utime + stime` during one bulk upload.
//!
//! Both relays take the laptop's connection on a kernel MPTCP listener, so the kernel work on
//! that side is the same; the converter's client also sends the Convert request in its SYN (TCP
//! Fast Open) and reads the reply.

use crate::convert::Converter;
use crate::measure::HoldServer;
use crate::procfs;
use crate::report::{Cell, Goal, Row};
use crate::scenarios::{Config, Log};
use mpbond::convert::client::{self, Reply};
use mpbond::convert::key::ClientKey;
use netlab::Lab;
use netlab::converter::CONVERTER_V4;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connections the row aims at.
pub const GOAL: usize = 10_000;
/// `mpbond server`'s port (RFC 8803 tools use 5124).
const CONVERT_PORT: u16 = 5124;
/// The baseline relay's port, on the converter's address.
const BASELINE_PORT: u16 = 5125;
/// `IPPROTO_MPTCP`.
const IPPROTO_MPTCP: i32 = 262;
/// Bytes per write of the bulk upload.
const WRITE: usize = 1 << 20;

/// The destination: a discarding server (a child process, so its sockets are not ours).
fn dest() -> SocketAddr {
    SocketAddr::from(([198, 19, 0, 11], 9109))
}

fn conv_addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(CONVERTER_V4, port))
}

/// Connections one relay process can hold under a hard descriptor limit of `hard`: two sockets
/// each (idle connections hold no pipe), less what the process has open anyway (~15 measured).
pub fn relays_within(hard: u64) -> usize {
    usize::try_from(hard.saturating_sub(32) / 2).unwrap_or(usize::MAX)
}

/// The kernel's TCP buffer memory in KiB: `mem` (pages) of the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat_tcp_mem_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let pages: u64 = w.windows(2).find(|p| p[0] == "mem")?[1].parse().ok()?;
    Some(pages * 4)
}

fn sockstat_mem_kib(lab: &Lab, ns: &str) -> Result<u64, String> {
    let text = lab
        .exec(ns, &["cat", "/proc/net/sockstat"])
        .map_err(|e| e.to_string())?;
    parse_sockstat_tcp_mem_kib(&text).ok_or_else(|| "no TCP mem in /proc/net/sockstat".into())
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn mptcp_socket(to: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(to),
        Type::STREAM,
        Some(Protocol::from(IPPROTO_MPTCP)),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// A converted connection: the Convert request rides in the SYN (TCP Fast Open, no cookie);
/// returns the socket once the Connected reply is read.
fn convert_open(key: &ClientKey, conv: SocketAddr, dst: SocketAddr) -> Result<Socket, String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| format!("nonce: {e}"))?;
    let data = client::connect_request(key, unix_now(), nonce, dst, &[]);
    let s = mptcp_socket(conv).map_err(|e| format!("socket: {e}"))?;
    mpbond::sys::sock::set_tcp_fastopen_no_cookie(s.as_fd(), true).map_err(|e| format!("TFO: {e}"))?;
    let n = s
        .send_to_with_flags(&data, &SockAddr::from(conv), libc::MSG_FASTOPEN)
        .map_err(|e| format!("connect: {e}"))?;
    (&s).write_all(&data[n..]).map_err(|e| format!("request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match client::parse_reply(&buf) {
            Reply::Incomplete => {}
            Reply::Connected { .. } => return Ok(s),
            r => return Err(format!("reply {r:?}")),
        }
        match (&s).read(&mut chunk) {
            Ok(0) => return Err("closed before the reply".into()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("reading the reply: {e}")),
        }
    }
}

/// A connection to the baseline relay (kernel MPTCP, plain connect); returns once the relay's
/// one-byte answer (its destination accepted) is read.
fn plain_open(to: SocketAddr) -> Result<Socket, String> {
    let s = mptcp_socket(to).map_err(|e| format!("socket: {e}"))?;
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let mut b = [0u8; 1];
    (&s).read_exact(&mut b)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(s)
}

/// The baseline relay as a child process (`--splice-relay`); stopped on drop.
struct Baseline {
    child: Option<(Child, ChildStdin)>,
    live: Arc<AtomicU64>,
}

impl Baseline {
    fn start(exe: &Path, ns: &str) -> Result<Baseline, String> {
        let (relay, dst) = (conv_addr(BASELINE_PORT).to_string(), dest().to_string());
        let crate::child::Helper {
            mut child,
            stdin,
            lines,
            first,
        } = crate::child::spawn_helper(exe, &["--splice-relay", ns, &relay, &dst], "splice relay")?;
        if first != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the splice relay did not start".into());
        }
        let live = Arc::new(AtomicU64::new(0));
        let l = live.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(n) = line.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    l.store(n, Ordering::Relaxed);
                }
            }
        });
        Ok(Baseline {
            child: Some((child, stdin)),
            live,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.0.id())
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            // Closing its stdin stops it; past 5 s it is killed.
            drop(stdin);
            crate::child::wait_exit(&mut child, Duration::from_secs(5));
        }
    }
}

/// One relay under test.
enum Relay {
    Converter(Converter, ClientKey),
    Baseline(Baseline),
}

impl Relay {
    fn pid(&self) -> u32 {
        match self {
            Relay::Converter(c, _) => c.pid(),
            Relay::Baseline(b) => b.pid(),
        }
    }

    fn open(&self) -> Result<Socket, String> {
        match self {
            Relay::Converter(_, key) => convert_open(key, conv_addr(CONVERT_PORT), dest()),
            Relay::Baseline(_) => plain_open(conv_addr(BASELINE_PORT)),
        }
    }

    /// Connections the relay holds now.
    fn live(&self) -> Result<u64, String> {
        match self {
            Relay::Converter(c, _) => Ok(c.status()?.now.relaying),
            Relay::Baseline(b) => Ok(b.live.load(Ordering::Relaxed)),
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// What the idle phase measured.
struct Idle {
    served: usize,
    rss_kib_per: f64,
    sock_kib_per: f64,
    open_s: f64,
    /// Why not all were served.
    short: Option<String>,
}

/// Opens `n` connections through `relay` one after another, holds them, measures, closes them.
fn idle(lab: &Lab, conv: &str, relay: &Relay, n: usize, holder: &HoldServer) -> Result<Idle, String> {
    let pid = relay.pid();
    let (rss0, mem0) = (
        procfs::rss_kib(pid).map_err(|e| e.to_string())?,
        sockstat_mem_kib(lab, conv)?,
    );
    let acc0 = holder.accepted.load(Ordering::Relaxed);
    let t = Instant::now();
    let (socks, err) = lab
        .run_in(&lab.ns().laptop, || {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                match relay.open() {
                    Ok(s) => v.push(s),
                    Err(e) => return (v, Some(format!("connection {i}: {e}"))),
                }
            }
            (v, None)
        })
        .map_err(|e| e.to_string())?;
    let open_s = t.elapsed().as_secs_f64();
    let opened = socks.len() as u64;
    let counts = || {
        let dialed = holder.accepted.load(Ordering::Relaxed).saturating_sub(acc0);
        (dialed, relay.live().unwrap_or(0))
    };
    let _ = wait_until("every relayed connection up", Duration::from_secs(30), || {
        let (d, l) = counts();
        d >= opened && l >= opened
    });
    let (dialed, live) = counts();
    let (rss1, mem1) = (
        procfs::rss_kib(pid).map_err(|e| e.to_string())?,
        sockstat_mem_kib(lab, conv)?,
    );
    for s in &socks {
        // RST: no TIME_WAIT left on the laptop for the next run.
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    drop(socks);
    wait_until("the relay's connections closed", Duration::from_secs(30), || {
        relay.live().is_ok_and(|l| l == 0)
    })?;
    let served = opened.min(dialed).min(live) as usize;
    let short = err.or_else(|| {
        (served < n)
            .then(|| format!("{opened} opened, {dialed} reached the destination, {live} live in the relay"))
    });
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / opened.max(1) as f64;
    Ok(Idle {
        served,
        rss_kib_per: per(rss1, rss0),
        sock_kib_per: per(mem1, mem0),
        open_s,
        short,
    })
}

/// One bulk upload of `bytes` through `relay`: (relay CPU s per GB, Mbit/s).
fn bulk(lab: &Lab, relay: &Relay, bytes: u64, holder: &HoldServer) -> Result<(f64, f64), String> {
    let pid = relay.pid();
    let b0 = holder.bytes.load(Ordering::Relaxed);
    let c0 = procfs::process_cpu_secs(&pid.to_string()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let s = lab
        .run_in(&lab.ns().laptop, || {
            let s = relay.open()?;
            let buf = vec![0x5au8; WRITE];
            let mut left = bytes;
            while left > 0 {
                let k = left.min(WRITE as u64) as usize;
                (&s).write_all(&buf[..k]).map_err(|e| format!("upload: {e}"))?;
                left -= k as u64;
            }
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            Ok::<_, String>(s)
        })
        .map_err(|e| e.to_string())??;
    wait_until(
        "the destination received the upload",
        Duration::from_secs(120),
        || holder.bytes.load(Ordering::Relaxed).saturating_sub(b0) >= bytes,
    )?;
    let secs = t.elapsed().as_secs_f64();
    let c1 = procfs::process_cpu_secs(&pid.to_string()).map_err(|e| e.to_string())?;
    drop(s);
    Ok(((c1 - c0) / (bytes as f64 / 1e9), bytes as f64 * 8.0 / secs / 1e6))
}

/// Per-side samples of every run.
#[derive(Default)]
struct Side {
    served: Vec<Result<f64, String>>,
    rss: Vec<Result<f64, String>>,
    sock: Vec<Result<f64, String>>,
    cpu: Vec<Result<f64, String>>,
    rate: Vec<Result<f64, String>>,
    notes: Vec<String>,
}

impl Side {
    fn record(&mut self, r: Result<(Idle, (f64, f64)), String>) {
        match r {
            Ok((i, (cpu, rate))) => {
                self.served.push(Ok(i.served as f64));
                self.rss.push(Ok(i.rss_kib_per));
                self.sock.push(Ok(i.sock_kib_per));
                self.cpu.push(Ok(cpu));
                self.rate.push(Ok(rate));
                self.notes.push(format!(
                    "opened in {:.1} s{}",
                    i.open_s,
                    i.short.map(|s| format!(", short: {s}")).unwrap_or_default()
                ));
            }
            Err(e) => {
                for v in [
                    &mut self.served,
                    &mut self.rss,
                    &mut self.sock,
                    &mut self.cpu,
                    &mut self.rate,
                ] {
                    v.push(Err(e.clone()));
                }
            }
        }
    }

    fn cell(v: &[Result<f64, String>], note: &str) -> Cell {
        match Cell::from_results(v.to_vec()) {
            Cell::Measured {
                summary,
                samples,
                note: n,
            } => Cell::Measured {
                summary,
                samples,
                note: [n, note.to_owned()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            c => c,
        }
    }
}

fn one_side(
    lab: &Lab,
    conv: &str,
    relay: Result<Relay, String>,
    n: usize,
    bytes: u64,
    holder: &HoldServer,
) -> Result<(Idle, (f64, f64)), String> {
    let relay = relay?;
    let i = idle(lab, conv, &relay, n, holder)?;
    let b = bulk(lab, &relay, bytes, holder)?;
    Ok((i, b))
}

/// The P9 rows. Adds the lab's converter namespace if it is not there yet.
pub fn rows(lab: &mut Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let hard = rlimit::Resource::NOFILE.get().map_or(0, |(_, h)| h);
    // The baseline is one process with one descriptor table; `mpbond server`'s event loops
    // each have their own (two on this 2-core machine), so it is not bound by one table.
    let n = GOAL.min(relays_within(hard));
    // 1 GB (200 MB with --quick): ten times the P1 transfer.
    let bytes = cfg.bytes.saturating_mul(10);
    let fail = |e: String| {
        vec![Row {
            id: "P9".into(),
            metric: "converter scale".into(),
            unit: "connections".into(),
            mpbond: Cell::Failed { error: e.clone() },
            kernel: Cell::Failed { error: e },
            goal: Goal::None,
        }]
    };
    let conv = match lab.add_converter() {
        Ok(c) => c,
        Err(e) => return fail(format!("add the converter namespace: {e}")),
    };
    let lab = &*lab;
    let holder = match HoldServer::start_process(&cfg.exe, &lab.ns().inet, dest()) {
        Ok(h) => h,
        Err(e) => return fail(format!("destination: {e}")),
    };
    let (mut m, mut k) = (Side::default(), Side::default());
    for run in 0..cfg.runs {
        log(&format!(
            "P9 run {}/{}: plain splice relay, {n} idle connections, {} MB",
            run + 1,
            cfg.runs,
            bytes / 1_000_000
        ));
        k.record(one_side(
            lab,
            &conv,
            Baseline::start(&cfg.exe, &conv).map(Relay::Baseline),
            n,
            bytes,
            &holder,
        ));
        log(&format!("P9 run {}/{}: mpbond server", run + 1, cfg.runs));
        let c = cfg.mpbond.clone().and_then(|bin| {
            let dir = cfg.run_dir.join("p9");
            let c = Converter::start(&bin, &conv, &dir, &dir.join("server.log"), cfg.daemon_verbose)?;
            let key = c.client_key()?;
            Ok(Relay::Converter(c, key))
        });
        m.record(one_side(lab, &conv, c, GOAL, bytes, &holder));
    }
    let cap = if n < GOAL {
        format!(
            "N = {GOAL}; the baseline holds {n}: the hard RLIMIT_NOFILE here is {hard} and cannot be \
             raised, and its one descriptor table holds two sockets per connection"
        )
    } else {
        format!("N = {n}")
    };
    let (mn, kn) = (m.notes.join(" | "), k.notes.join(" | "));
    let mb = bytes / 1_000_000;
    let row = |metric: String, unit: &str, mpbond: Cell, kernel: Cell, goal: Goal| Row {
        id: "P9".into(),
        metric,
        unit: unit.into(),
        mpbond,
        kernel,
        goal,
    };
    vec![
        row(
            format!("converter scale: idle relayed connections held at once ({cap}; kernel column: a plain splice relay)"),
            "connections",
            Side::cell(&m.served, &mn),
            Side::cell(&k.served, &kn),
            Goal::RatioAtLeast { min: 1.0, stretch: None },
        ),
        row(
            "converter scale: memory per idle relayed connection (relay process RSS growth ÷ N)".into(),
            "KiB",
            Side::cell(&m.rss, ""),
            Side::cell(&k.rss, ""),
            Goal::None,
        ),
        row(
            "converter scale: kernel TCP buffer memory per idle relayed connection (/proc/net/sockstat TCP mem growth ÷ N; whole kernel)".into(),
            "KiB",
            Side::cell(&m.sock, ""),
            Side::cell(&k.sock, ""),
            Goal::None,
        ),
        row(
            format!("converter scale: CPU seconds per GB relayed (relay process utime + stime, {mb} MB upload, one connection)"),
            "s/GB",
            Side::cell(&m.cpu, ""),
            Side::cell(&k.cpu, ""),
            Goal::None,
        ),
        row(
            format!("converter scale: goodput of that upload ({mb} MB)"),
            "Mbit/s",
            Side::cell(&m.rate, ""),
            Side::cell(&k.rate, ""),
            Goal::None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_tcp_mem() {
        let s =
            "sockets: used 7398\nTCP: inuse 3699 orphan 0 tw 0 alloc 14811 mem 7458\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat_tcp_mem_kib(s), Some(7458 * 4));
        assert_eq!(parse_sockstat_tcp_mem_kib("UDP: inuse 0 mem 3\n"), None);
    }

    #[test]
    fn relays_per_descriptor_limit() {
        assert_eq!(relays_within(20_000), 9_984);
        assert!(relays_within(131_072) >= GOAL);
        assert_eq!(relays_within(10), 0);
    }
}
