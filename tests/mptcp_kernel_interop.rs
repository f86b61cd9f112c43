//! Root-only: mpbond's sans-IO MPTCP engine ([`mpbond::mptcp::Connection`]) as the client of the
//! Linux kernel's MPTCP (issue #4, "interop with the Linux kernel MPTCP"). In a netlab laptop a
//! driver thread runs the connection over an AF_PACKET receive ring and a raw sender on each of
//! wlan0 and wwan0 (the laptop kernel's TCP is kept off the subflow ports with nft), against the
//! kernel MPTCP HTTP server (198.19.0.10) and the plain TCP one (198.19.0.11). Each exchange is
//! `POST /sink` with N bytes (the server's byte count and FNV-1a hash compared with ours) followed
//! by `GET /bytes/N` (every byte checked against the pattern), on one connection, then a graceful
//! close both ways.
//!
//! 1. MP_CAPABLE over wlan0, MP_JOIN with the backup flag over wwan0 (handover mode): the kernel
//!    lists one MPTCP connection with two subflows, the joined one a backup.
//! 2. wlan0 goes down halfway through the upload (link down and `path_down`): the rest of the
//!    upload and the whole download go over wwan0.
//! 3. The plain TCP server: fallback (`Connected { mptcp: false }`), the exchange completes.
//! 4. Case 1 over IPv6 (a fifth of the size).
//!
//! Size: `MPBOND_INTEROP_BYTES` (default 50 MB each way). Each case is bounded by [`LIMIT`].
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::print_stdout,
    reason = "a lab test: real time (the driver is the I/O layer), panics are failures, the numbers are printed"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::mptcp::crypto::{TokenTable, os_random_u64};
use mpbond::mptcp::{Connection, Event, LocalPath, MptcpConfig, PathId};
use mpbond::sys::clock::boottime;
use mpbond::sys::packet::PacketRx;
use mpbond::sys::rawtx::{RawTx, TxError};
use mpbond::tcp::{IsnKey, State};
use mpbond::time::Instant;
use mpbond::wire::ip::{self, PROTO_TCP};
use mpbond::wire::tcp::{TcpHeaderView, verify_checksum};
use netlab::pattern::{Fnv64, fill, first_mismatch};
use netlab::{Lab, LabOptions, Path, Server};
use std::os::fd::AsRawFd;

/// Local ports of our subflows (the receive filter's range; the laptop kernel drops them).
const PORTS: std::ops::RangeInclusive<u16> = 61000..=61999;
const FWMARK: u32 = 0x6d70;
/// Receive ring size in 1 MiB blocks: room for more than a whole receive window (4 MB) of
/// segments, so that a busy machine slowing the loop does not drop them.
const RING_BLOCKS: u32 = 16;
/// Bound on one case (connection, both transfers, close).
const LIMIT: Duration = Duration::from_secs(60);

/// The cases build a lab each and move tens of megabytes through a userspace loop: one at a time
/// on the small CI machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn size() -> u64 {
    std::env::var("MPBOND_INTEROP_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000_000)
}

// ---- the application: POST /sink then GET /bytes/N on one connection -------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the head of response `0` (sink) or `1` (bytes).
    Head(u8),
    SinkBody {
        left: u64,
    },
    Bytes {
        got: u64,
    },
    Done,
}

#[derive(Debug)]
struct Exchange {
    n: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Offset in the request stream (head, body, tail) handed to the connection.
    written: u64,
    closed: bool,
    sent_hash: Fnv64,
    phase: Phase,
    resp_head: Vec<u8>,
    sink_json: Vec<u8>,
    scratch: Vec<u8>,
}

impl Exchange {
    fn new(n: u64) -> Exchange {
        Exchange {
            n,
            head: format!("POST /sink HTTP/1.1\r\nHost: lab\r\nContent-Length: {n}\r\n\r\n").into_bytes(),
            tail: format!("GET /bytes/{n} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").into_bytes(),
            written: 0,
            closed: false,
            sent_hash: Fnv64::default(),
            phase: Phase::Head(0),
            resp_head: Vec::new(),
            sink_json: Vec::new(),
            scratch: vec![0u8; 64 * 1024],
        }
    }

    fn total(&self) -> u64 {
        self.head.len() as u64 + self.n + self.tail.len() as u64
    }

    /// Body bytes handed to the connection.
    fn uploaded(&self) -> u64 {
        self.written.saturating_sub(self.head.len() as u64).min(self.n)
    }

    /// Body bytes of the download received and checked.
    fn downloaded(&self) -> u64 {
        match self.phase {
            Phase::Bytes { got } => got,
            Phase::Done => self.n,
            _ => 0,
        }
    }

    fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Writes what fits, closes after the last byte, reads and checks what arrived.
    fn pump(&mut self, conn: &mut Connection) -> Result<(), String> {
        let h = self.head.len() as u64;
        while self.written < self.total() {
            let off = self.written;
            let len = if off < h {
                let s = &self.head[off as usize..];
                self.scratch[..s.len()].copy_from_slice(s);
                s.len()
            } else if off < h + self.n {
                let k = (h + self.n - off).min(self.scratch.len() as u64) as usize;
                fill(off - h, &mut self.scratch[..k]);
                k
            } else {
                let s = &self.tail[(off - h - self.n) as usize..];
                self.scratch[..s.len()].copy_from_slice(s);
                s.len()
            };
            let k = conn.send(&self.scratch[..len]);
            if off >= h && off < h + self.n {
                self.sent_hash.update(&self.scratch[..k]);
            }
            self.written += k as u64;
            if k < len {
                break;
            }
        }
        if self.written == self.total() && !self.closed {
            self.closed = true;
            conn.close();
        }
        loop {
            let k = conn.recv(&mut self.scratch);
            if k == 0 {
                return Ok(());
            }
            let data = std::mem::take(&mut self.scratch);
            let r = self.feed(&data[..k]);
            self.scratch = data;
            r?;
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match self.phase {
                Phase::Head(which) => {
                    let before = self.resp_head.len();
                    self.resp_head.extend_from_slice(data);
                    let Some(p) = self.resp_head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if self.resp_head.len() > 16 * 1024 {
                            return Err("response head too long".into());
                        }
                        return Ok(());
                    };
                    data = &data[p + 4 - before..];
                    let head = String::from_utf8_lossy(&self.resp_head[..p]).into_owned();
                    self.resp_head.clear();
                    if !head.starts_with("HTTP/1.1 200") {
                        return Err(format!("response {which}: {head:?}"));
                    }
                    let len: u64 = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .ok_or_else(|| format!("response {which} without Content-Length: {head:?}"))?;
                    self.phase = if which == 0 {
                        Phase::SinkBody { left: len }
                    } else if len == self.n {
                        Phase::Bytes { got: 0 }
                    } else {
                        return Err(format!("GET answered {len} bytes, asked {}", self.n));
                    };
                }
                Phase::SinkBody { left } => {
                    let k = (left.min(data.len() as u64)) as usize;
                    self.sink_json.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    self.phase = if left == k as u64 {
                        Phase::Head(1)
                    } else {
                        Phase::SinkBody {
                            left: left - k as u64,
                        }
                    };
                }
                Phase::Bytes { got } => {
                    let k = ((self.n - got).min(data.len() as u64)) as usize;
                    if let Some(i) = first_mismatch(got, &data[..k]) {
                        return Err(format!("download corrupt at byte {}", got + i as u64));
                    }
                    data = &data[k..];
                    let got = got + k as u64;
                    self.phase = if got == self.n {
                        Phase::Done
                    } else {
                        Phase::Bytes { got }
                    };
                }
                Phase::Done => return Err(format!("{} bytes after the end of the download", data.len())),
            }
        }
        Ok(())
    }

    /// The server's verdict on the upload: byte count and hash equal to what we sent.
    fn check_sink(&self) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_slice(&self.sink_json)
            .map_err(|e| format!("sink answer {:?}: {e}", String::from_utf8_lossy(&self.sink_json)))?;
        let want_hash = format!("{:016x}", self.sent_hash.value());
        if v["bytes"].as_u64() != Some(self.n) || v["fnv1a64"].as_str() != Some(want_hash.as_str()) {
            return Err(format!(
                "server received {v}, we sent {} bytes with fnv1a64 {want_hash}",
                self.n
            ));
        }
        Ok(())
    }
}

// ---- the driver: the I/O layer around the sans-IO connection ----------------------------------

struct Iface {
    path: PathId,
    rx: PacketRx,
    tx: RawTx,
    /// Taken down by the test: nothing more is sent or received on it.
    down: bool,
}

#[derive(Debug, Default)]
struct Counters {
    rx_packets: u64,
    rx_bad: u64,
    tx_packets: u64,
    tx_errors: u64,
    /// Packets and payload bytes sent per path (index = path id).
    tx_per_path: [(u64, u64); 2],
    /// Payload bytes received per path.
    rx_payload_per_path: [u64; 2],
}

struct Driver {
    conn: Connection,
    ifaces: Vec<Iface>,
    poll: Poll,
    events: Vec<Event>,
    counters: Counters,
    started: std::time::Instant,
    pkt: Vec<u8>,
}

/// How a case went.
#[derive(Debug)]
struct Outcome {
    events: Vec<Event>,
    /// Seconds from the first SYN to the last byte checked / to `Event::Closed`.
    data_secs: f64,
    closed_secs: f64,
    counters: Counters,
}

fn random_isn_key() -> IsnKey {
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&os_random_u64().unwrap().to_le_bytes());
    }
    IsnKey(k)
}

impl Driver {
    /// Opens the interfaces (this thread must be in the laptop namespace) and starts connecting.
    fn connect(cfg: MptcpConfig, remote: SocketAddr, first_port: u16) -> Driver {
        let v6 = remote.is_ipv6();
        let paths = [
            LocalPath {
                id: PathId(0),
                addr: Path::Wifi.laptop_addr(v6),
                backup: false,
                last_resort: false,
                rank: 0,
            },
            LocalPath {
                id: PathId(1),
                addr: Path::Cell.laptop_addr(v6),
                backup: true,
                last_resort: false,
                rank: 0,
            },
        ];
        let poll = Poll::new().unwrap();
        let mut ifaces = Vec::new();
        for (i, p) in [Path::Wifi, Path::Cell].into_iter().enumerate() {
            let rx = PacketRx::open(p.laptop_iface(), &PORTS, false, RING_BLOCKS).unwrap();
            poll.registry()
                .register(&mut SourceFd(&rx.as_raw_fd()), Token(i), Interest::READABLE)
                .unwrap();
            ifaces.push(Iface {
                path: PathId(i as u8),
                rx,
                tx: RawTx::open(p.laptop_iface(), FWMARK).unwrap(),
                down: false,
            });
        }
        let (key, _token) = TokenTable::new().generate().unwrap();
        let conn = Connection::connect(
            boottime(),
            cfg,
            &paths,
            PathId(0),
            remote,
            (first_port..first_port + 8).collect(),
            key,
            &random_isn_key(),
            true,
        );
        Driver {
            conn,
            ifaces,
            poll,
            events: Vec::new(),
            counters: Counters::default(),
            started: std::time::Instant::now(),
            pkt: vec![0u8; 66_000],
        }
    }

    /// Declares `path` gone as the daemon's policy layer would: no more I/O on it, and the
    /// engine told (its subflows dropped, their data reinjected on the others).
    fn path_down(&mut self, path: PathId) {
        if let Some(i) = self.ifaces.iter_mut().find(|i| i.path == path) {
            i.down = true;
        }
        self.conn.path_down(boottime(), path);
    }

    fn receive(&mut self, now: Instant) {
        let (conn, counters) = (&mut self.conn, &mut self.counters);
        for ifc in self.ifaces.iter_mut().filter(|i| !i.down) {
            let path = ifc.path;
            // Until the ring is empty: readiness is edge-triggered.
            for _ in 0..1024 {
                let blocks = ifc.rx.drain(8, |f| {
                    counters.rx_packets += 1;
                    match deliver(conn, now, path, f.data, f.csum_not_ready) {
                        Some(n) if !f.truncated => {
                            counters.rx_payload_per_path[usize::from(path.0).min(1)] += n as u64;
                        }
                        _ => counters.rx_bad += 1,
                    }
                });
                if blocks == 0 {
                    break;
                }
            }
        }
    }

    fn transmit(&mut self, now: Instant) {
        for _ in 0..100_000 {
            let Some((path, t)) = self.conn.poll_transmit(now, &mut self.pkt) else {
                return;
            };
            let Some(ifc) = self.ifaces.iter().find(|i| i.path == path && !i.down) else {
                // The path is down: the packet (a RST of a dropped subflow) is lost.
                self.counters.tx_errors += 1;
                continue;
            };
            let pkt = &self.pkt[..t.len];
            let mut sent = false;
            // The socket buffer may be full for a moment: retry a little, then count it lost
            // (TCP recovers it).
            for _ in 0..2000 {
                match ifc.tx.send(pkt) {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(TxError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Err(_) => break,
                }
            }
            if sent {
                self.counters.tx_packets += 1;
                let p = &mut self.counters.tx_per_path[usize::from(path.0).min(1)];
                p.0 += 1;
                p.1 += t.payload_len as u64;
            } else {
                self.counters.tx_errors += 1;
            }
        }
    }

    /// Runs the exchange to its end (every byte checked both ways and `Event::Closed`), calling
    /// `hook` once per loop turn.
    fn run(
        mut self,
        app: &mut Exchange,
        mut hook: impl FnMut(&mut Driver, &Exchange),
    ) -> Result<Outcome, String> {
        let deadline = self.started + LIMIT;
        let mut events = Events::with_capacity(16);
        let mut data_secs = None;
        loop {
            let now = boottime();
            self.receive(now);
            if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                self.conn.handle_timeout(now);
            }
            app.pump(&mut self.conn)
                .map_err(|e| format!("{e}; events {:?}", self.events))?;
            hook(&mut self, app);
            self.transmit(now);
            while let Some(ev) = self.conn.poll_event() {
                self.events.push(ev);
                if matches!(ev, Event::Reset | Event::TimedOut) {
                    return Err(format!(
                        "connection ended with {ev:?} after {} up / {} down bytes; events {:?}",
                        app.uploaded(),
                        app.downloaded(),
                        self.events
                    ));
                }
            }
            if app.done() && data_secs.is_none() {
                data_secs = Some(self.started.elapsed().as_secs_f64());
            }
            if app.done() && self.events.contains(&Event::Closed) {
                return Ok(Outcome {
                    events: self.events,
                    data_secs: data_secs.unwrap_or_default(),
                    closed_secs: self.started.elapsed().as_secs_f64(),
                    counters: self.counters,
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "not done within {LIMIT:?}: {} of {} bytes up, {} down, phase {:?}, subflows {:?}, \
                     events {:?}, {:?}",
                    app.uploaded(),
                    app.n,
                    app.downloaded(),
                    app.phase,
                    self.conn.subflows(),
                    self.events,
                    self.counters
                ));
            }
            let wait = self
                .conn
                .poll_timeout()
                .map_or(Duration::from_millis(10), |t| {
                    t.saturating_duration_since(boottime())
                })
                .min(Duration::from_millis(10));
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
        }
    }
}

/// Parses one received packet and hands it to the connection; its payload length, or `None` if
/// it was malformed.
fn deliver(
    conn: &mut Connection,
    now: Instant,
    path: PathId,
    pkt: &[u8],
    csum_not_ready: bool,
) -> Option<usize> {
    let ipv = ip::parse(pkt).ok().filter(|i| i.proto == PROTO_TCP)?;
    let seg = pkt.get(ipv.payload.clone())?;
    let view = TcpHeaderView::new(seg).ok()?;
    if !csum_not_ready && !verify_checksum(ipv.src, ipv.dst, seg) {
        return None;
    }
    let hdr = view.summary().ok()?;
    conn.handle_packet(
        now,
        path,
        SocketAddr::new(ipv.dst, hdr.dst_port),
        SocketAddr::new(ipv.src, hdr.src_port),
        &hdr,
        view.payload(),
    );
    Some(view.payload().len())
}

// ---- the lab ------------------------------------------------------------------------------------

/// A lab whose laptop kernel leaves the subflow ports to us (as `mpbond up` arranges).
fn lab() -> Lab {
    let lab = Lab::build(LabOptions::default()).unwrap();
    let laptop = lab.ns().laptop.clone();
    lab.exec(&laptop, &["nft", "add", "table", "inet", "mpbtest"])
        .unwrap();
    lab.exec(
        &laptop,
        &[
            "nft",
            "add chain inet mpbtest in { type filter hook input priority 0 ; }",
        ],
    )
    .unwrap();
    lab.exec(
        &laptop,
        &[
            "nft",
            &format!(
                "add rule inet mpbtest in tcp dport {}-{} drop",
                PORTS.start(),
                PORTS.end()
            ),
        ],
    )
    .unwrap();
    lab
}

fn handover() -> MptcpConfig {
    MptcpConfig {
        mode: Mode::Handover,
        join: JoinPolicy::Immediate,
        ..MptcpConfig::default()
    }
}

fn mb(n: u64) -> f64 {
    n as f64 / 1e6
}

/// Kernel view of the connection (`ss`), taken while it is alive.
#[derive(Debug, Default)]
struct KernelView {
    subflows: Vec<netlab::KernelSubflow>,
    ss: String,
}

fn kernel_view(lab: &Lab) -> KernelView {
    let inet = &lab.ns().inet;
    KernelView {
        subflows: lab.kernel_subflow_list(inet, 80).unwrap(),
        ss: lab.ss_mptcp(inet).unwrap(),
    }
}

/// The inet namespace's non-zero MPTCP and retransmission counters (`nstat`), for the log.
fn kernel_counters(lab: &Lab) -> String {
    let out = lab.exec(&lab.ns().inet, &["nstat", "-az"]).unwrap();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, v) = (w.next()?, w.next()?);
            let wanted = name.starts_with("MPTcp") || name == "TcpRetransSegs";
            (wanted && v != "0").then(|| format!("{}={v}", name.trim_start_matches("MPTcpExt")))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn kernel_server_two_subflows_one_backup_byte_exact() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let n = size();
    let mut app = Exchange::new(n);
    let mut view = None;
    let out = lab
        .run_in(&lab.ns().laptop, || {
            let d = Driver::connect(handover(), Server::Mptcp.addr(false), 61000);
            d.run(&mut app, |d, app| {
                // Once both subflows carry data, look at the kernel's side of the connection.
                if view.is_none()
                    && app.uploaded() >= n / 4
                    && d.conn.subflows().iter().filter(|s| s.usable).count() == 2
                {
                    view = Some(kernel_view(&lab));
                }
            })
        })
        .unwrap();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    println!("kernel counters (inet): {}", kernel_counters(&lab));
    app.check_sink().unwrap();
    let view = view.expect("both subflows were never usable at once");
    println!(
        "kernel MPTCP interop: {:.0} MB up + {:.0} MB down byte-exact, data in {:.2} s, closed at {:.2} s; {:?}",
        mb(n),
        mb(n),
        out.data_secs,
        out.closed_secs,
        out.counters
    );
    println!(
        "kernel subflows: {:?}\nss -MtinH: {}",
        view.subflows,
        view.ss.trim()
    );
    assert_mptcp_with_backup(&out.events);
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, Event::Fallback { .. } | Event::SubflowReset { .. })),
        "{:?}",
        out.events
    );
    // Handover: while Wi-Fi works the backup subflow carries (next to) nothing, either way.
    let c = &out.counters;
    assert!(
        c.tx_per_path[1].1 < n / 10 && c.rx_payload_per_path[1] < n / 10,
        "{c:?}"
    );
    assert!(c.rx_payload_per_path[0] >= n, "{c:?}");
    let stats = lab.server_stats().unwrap();
    assert_eq!(stats.mptcp_conns.load(Ordering::Relaxed), 1);
    assert_eq!(stats.fallback_conns.load(Ordering::Relaxed), 0);
    // The kernel's side: one MPTCP socket, two subflows on it, the MP_JOIN one a backup.
    let subs = &view.subflows;
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(subs.iter().filter(|s| s.join).count(), 1, "{subs:?}");
    let joined = subs.iter().find(|s| s.join).unwrap();
    assert!(joined.backup, "{subs:?}");
    assert!(
        joined.peer.starts_with(&Path::Cell.router_wan_v4().to_string()),
        "{subs:?}"
    );
    let primary = subs.iter().find(|s| !s.join).unwrap();
    assert!(
        !primary.backup && primary.peer.starts_with(&Path::Wifi.router_wan_v4().to_string()),
        "{subs:?}"
    );
    // `ss -M`: one MPTCP socket line, its info on the next line ("subflows:N" counts the
    // additional subflows).
    let lines: Vec<&str> = view.ss.lines().collect();
    let msk: Vec<usize> = (0..lines.len())
        .filter(|&k| lines[k].starts_with("mptcp") && lines[k].contains("198.19.0.10:80"))
        .collect();
    assert_eq!(msk.len(), 1, "{}", view.ss);
    let info = lines.get(msk[0] + 1).copied().unwrap_or("");
    assert!(
        info.contains("subflows:1 "),
        "one additional subflow: {}",
        view.ss
    );
}

#[test]
fn kernel_server_transfer_survives_primary_path_loss() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let n = size();
    let mut app = Exchange::new(n);
    let mut killed_at = None;
    let cfg = MptcpConfig {
        // The kernel does not ask for DSS checksums: run this case without them.
        capable: mpbond::mptcp::handshake::CapableConfig {
            checksum_required: false,
            ..Default::default()
        },
        ..handover()
    };
    let out = lab
        .run_in(&lab.ns().laptop, || {
            let d = Driver::connect(cfg, Server::Mptcp.addr(false), 61100);
            d.run(&mut app, |d, app| {
                if killed_at.is_none() && app.uploaded() >= n / 2 {
                    lab.set_link(Path::Wifi, false).unwrap();
                    d.path_down(PathId(0));
                    killed_at = Some((app.uploaded(), d.started.elapsed().as_secs_f64()));
                }
            })
        })
        .unwrap();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    println!("kernel counters (inet): {}", kernel_counters(&lab));
    app.check_sink().unwrap();
    let (at_bytes, at_secs) = killed_at.unwrap();
    println!(
        "kernel MPTCP failover: wlan0 down at {:.1} MB up ({at_secs:.2} s); {:.0} MB up + {:.0} MB down byte-exact, \
         data in {:.2} s, closed at {:.2} s; {:?}",
        mb(at_bytes),
        mb(n),
        mb(n),
        out.data_secs,
        out.closed_secs,
        out.counters
    );
    assert!(
        out.events.contains(&Event::Connected { mptcp: true }),
        "{:?}",
        out.events
    );
    // Everything written after the loss, and the whole download, went over wwan0.
    let c = &out.counters;
    assert!(c.tx_per_path[1].1 >= n - at_bytes, "{c:?}");
    assert!(c.rx_payload_per_path[1] >= n, "{c:?}");
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::SubflowDown { path: PathId(0), .. })),
        "{:?}",
        out.events
    );
    assert!(
        !out.events.iter().any(|e| matches!(e, Event::Fallback { .. })),
        "{:?}",
        out.events
    );
}

#[test]
fn plain_tcp_server_falls_back_and_completes() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let n = size();
    let mut app = Exchange::new(n);
    let mut subflows_seen = 0;
    let out = lab
        .run_in(&lab.ns().laptop, || {
            let d = Driver::connect(handover(), Server::Tcp.addr(false), 61200);
            d.run(&mut app, |d, _| {
                subflows_seen = subflows_seen.max(
                    d.conn
                        .subflows()
                        .iter()
                        .filter(|s| s.state != State::Closed)
                        .count(),
                );
            })
        })
        .unwrap();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    println!("kernel counters (inet): {}", kernel_counters(&lab));
    app.check_sink().unwrap();
    println!(
        "plain TCP server: fallback; {:.0} MB up + {:.0} MB down byte-exact, data in {:.2} s, closed at {:.2} s; {:?}",
        mb(n),
        mb(n),
        out.data_secs,
        out.closed_secs,
        out.counters
    );
    assert!(
        out.events.contains(&Event::Connected { mptcp: false }),
        "{:?}",
        out.events
    );
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::Fallback { path: PathId(0), .. })),
        "{:?}",
        out.events
    );
    assert_eq!(subflows_seen, 1, "no MP_JOIN after fallback");
    assert_eq!(out.counters.tx_per_path[1].0, 0, "{:?}", out.counters);
    let stats = lab.server_stats().unwrap();
    assert_eq!(stats.tcp_conns.load(Ordering::Relaxed), 1);
}

#[test]
fn kernel_server_over_ipv6() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    // A fifth of the size: the IPv4 cases carry the bulk.
    let n = (size() / 5).max(1_000_000);
    let mut app = Exchange::new(n);
    let mut both_up = false;
    let out = lab
        .run_in(&lab.ns().laptop, || {
            let d = Driver::connect(handover(), Server::Mptcp.addr(true), 61300);
            d.run(&mut app, |d, _| {
                both_up |= d.conn.subflows().iter().filter(|s| s.usable).count() == 2;
            })
        })
        .unwrap();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    println!("kernel counters (inet): {}", kernel_counters(&lab));
    app.check_sink().unwrap();
    println!(
        "kernel MPTCP over IPv6: {:.0} MB up + {:.0} MB down byte-exact, data in {:.2} s; {:?}",
        mb(n),
        mb(n),
        out.data_secs,
        out.counters
    );
    assert!(both_up, "{:?}", out.events);
    assert_mptcp_with_backup(&out.events);
    assert_eq!(lab.server_stats().unwrap().mptcp_conns.load(Ordering::Relaxed), 1);
}

/// MPTCP was negotiated and the cellular path joined as a backup subflow.
fn assert_mptcp_with_backup(events: &[Event]) {
    assert!(events.contains(&Event::Connected { mptcp: true }), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::SubflowUp {
                path: PathId(1),
                backup: true,
                ..
            }
        )),
        "{events:?}"
    );
}
