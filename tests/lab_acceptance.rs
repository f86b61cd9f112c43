//! Root-only acceptance tests of the data plane (issue 5) as the laptop's applications see it,
//! with `mpbond up --foreground --wifi wlan0 --cellular wwan0` in a netlab laptop. They assert
//! what a user sees (replies, byte-exact transfers, errors, `status` counters, which link carries
//! the bytes), never how the relay reaches the destination, so they hold whether the upstream is
//! plain TCP or MPTCP.
//!
//! 1. UDP echo, DNS and ping, IPv4 and IPv6, through mpbond; the Wi-Fi link goes down: sockets and
//!    pings that stay open carry on over cellular (the time to the first reply is printed and
//!    bounded), new UDP and TCP flows use cellular; Wi-Fi comes back: the traffic returns to it.
//! 2. 500 connections open at once (GET and POST, 1 KB to 2 MB, to the plain TCP and the kernel
//!    MPTCP server, IPv4 and IPv6), all byte-exact; the wall time is printed.
//! 3. Malformed packets written into the TUN and put on both physical links toward the subflow
//!    port range (bad checksums, lengths, data offsets, TCP and MPTCP options, fragments) are
//!    counted in `status` by reason and dropped; a transfer running meanwhile and the ones after
//!    are byte-exact.
//!
//! Each test ends with `mpbond down` and checks that the laptop's routing is as before.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "lab test: panics are failures; wall-clock measurements"
)]
#![allow(clippy::print_stdout, reason = "the measurements and the skip notice")]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{
    Daemon, RunDir, counter, exec, lab_with, mpbond, skip_unless_root, snapshot, status, stderr, wait_for,
    wait_usable,
};
use mpbond::daemon::Status;
use mpbond::wire::{self, SegmentFields, TcpFlags, icmp, udp};
use netlab::client::{self, ClientOpts};
use netlab::{Lab, LabOptions, Path, Server};

const SERVER_TCP4: &str = "198.19.0.11:80";
const SERVER_TCP6: &str = "[fd19::11]:80";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn opts(secs: u64) -> ClientOpts {
    ClientOpts {
        timeout: Duration::from_secs(secs),
        ..ClientOpts::default()
    }
}

/// Kernel byte counters (received, sent) of the laptop's interface `ifname`.
fn link_bytes(lab: &Lab, ifname: &str) -> (u64, u64) {
    let out = exec(lab, &["ip", "-s", "-j", "link", "show", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().unwrap(),
        s["tx"]["bytes"].as_u64().unwrap(),
    )
}

fn get(lab: &Lab, a: SocketAddr, n: u64) -> u64 {
    lab.run_in(&lab.ns().laptop, || client::http_get(a, n, &opts(30)))
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {n} from {a}: {e}"))
        .bytes
}

fn post(lab: &Lab, a: SocketAddr, n: u64) -> u64 {
    lab.run_in(&lab.ns().laptop, || client::http_post(a, n, &opts(30)))
        .unwrap()
        .unwrap_or_else(|e| panic!("POST {n} to {a}: {e}"))
        .bytes
}

/// Fraction of 20 UDP echoes (fresh socket) that came back.
fn udp_echo(lab: &Lab, v6: bool) -> f64 {
    let a = Server::UdpEcho.addr(v6);
    lab.run_in(&lab.ns().laptop, || {
        client::udp_echo(a, 20, 10, Duration::from_millis(500), None)
    })
    .unwrap()
    .unwrap()
    .fraction()
}

fn dns_server(v6: bool) -> SocketAddr {
    SocketAddr::new(Server::UdpEcho.ip(v6), netlab::dns::DNS_PORT)
}

/// Resolves a name through mpbond with a fresh socket (type AAAA over IPv6, A over IPv4).
fn resolve(lab: &Lab, v6: bool) -> Vec<IpAddr> {
    lab.run_in(&lab.ns().laptop, || {
        client::dns_lookup(
            dns_server(v6),
            "server.lab",
            v6,
            Duration::from_millis(500),
            6,
            None,
        )
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("DNS lookup (v6 {v6}): {e}"))
}

/// `ping -c N` through mpbond; true when every echo came back.
fn ping(lab: &Lab, v6: bool, count: u32, size: u32) -> bool {
    let dst = Server::UdpEcho.ip(v6).to_string();
    lab.command(&lab.ns().laptop, "ping")
        .args(["-n", "-q", "-i", "0.05", "-W", "2", "-c", &count.to_string()])
        .args(["-s", &size.to_string(), &dst])
        .output()
        .unwrap()
        .status
        .success()
}

// ---- 1. UDP, DNS and ping across the loss and return of Wi-Fi --------------------------------

/// What a prober does with its kept socket.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// 1,000-byte datagrams to the UDP echo server.
    Echo,
    /// A/AAAA queries to the DNS server.
    Dns { v6: bool },
}

#[derive(Default)]
struct ProbeLog {
    /// Send time of each probe (index = sequence number).
    sent: Vec<Instant>,
    /// (sequence number, receive time) of each correct reply.
    replies: Vec<(usize, Instant)>,
}

/// A thread that keeps one connected UDP socket (made in the laptop namespace) and sends a probe
/// every `every`, recording the replies, until stopped (at most 60 s).
struct Prober {
    name: &'static str,
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(lab: &Lab, name: &'static str, dst: SocketAddr, probe: Probe, every: Duration) -> Prober {
        let sock = lab
            .run_in(&lab.ns().laptop, || {
                let s = UdpSocket::bind(if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
                s.connect(dst)?;
                s.set_read_timeout(Some(Duration::from_millis(2)))?;
                Ok::<_, std::io::Error>(s)
            })
            .unwrap()
            .unwrap();
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = vec![0u8; 2048];
            let mut next = Instant::now();
            let mut seq = 0usize;
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                if Instant::now() >= next {
                    let msg = match probe {
                        Probe::Echo => {
                            let mut m = vec![0xa5u8; 1000];
                            m[..8].copy_from_slice(&(seq as u64).to_be_bytes());
                            m
                        }
                        Probe::Dns { v6 } => {
                            let qt = if v6 {
                                netlab::dns::TYPE_AAAA
                            } else {
                                netlab::dns::TYPE_A
                            };
                            netlab::dns::build_query(seq as u16, "probe.lab", qt).unwrap()
                        }
                    };
                    l.lock().unwrap().sent.push(Instant::now());
                    // A send error (the link went away under the socket) is a lost probe.
                    let _ = sock.send(&msg);
                    seq += 1;
                    next += every;
                }
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let now = Instant::now();
                let got = match probe {
                    Probe::Echo if n == 1000 => {
                        Some(u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize)
                    }
                    Probe::Echo => None,
                    // The ID is the low 16 bits of the sequence number: look back at most 65,535.
                    Probe::Dns { .. } if n >= 2 => {
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        let last = seq.saturating_sub(1);
                        let back = usize::from((last as u16).wrapping_sub(id));
                        netlab::dns::parse_response(&buf[..n], id)
                            .ok()
                            .filter(|a| !a.is_empty())
                            .and_then(|_| last.checked_sub(back))
                    }
                    Probe::Dns { .. } => None,
                };
                if let Some(s) = got {
                    l.lock().unwrap().replies.push((s, now));
                }
            }
        });
        Prober {
            name,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn replies(&self) -> usize {
        self.log.lock().unwrap().replies.len()
    }

    /// Time from `t` to the first reply to a probe sent at or after `t`.
    fn first_reply_after(&self, t: Instant) -> Option<Duration> {
        let log = self.log.lock().unwrap();
        log.replies
            .iter()
            .find(|(s, _)| log.sent.get(*s).is_some_and(|&at| at >= t))
            .map(|(_, r)| r.duration_since(t))
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `ping -D` running in the laptop namespace for `count` echoes `interval` apart.
fn spawn_ping(lab: &Lab, v6: bool, count: u32, interval: &str) -> std::process::Child {
    lab.command(&lab.ns().laptop, "ping")
        .args(["-n", "-D", "-i", interval, "-W", "1", "-c", &count.to_string()])
        .arg(Server::UdpEcho.ip(v6).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// From `ping -D` output: the receive times (Unix seconds) of the replies.
fn ping_reply_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A bound on the outage after Wi-Fi is lost, far above what is expected (well under a second):
/// a correctness bound (traffic does resume), not a performance assertion.
const RESUME_BOUND: Duration = Duration::from_secs(10);

#[test]
fn udp_dns_and_ping_survive_the_loss_of_wifi_and_return_to_it() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    wait_usable(&lab, rd.path());

    // Through mpbond over Wi-Fi: UDP echo, DNS (then a connection to the address it gave), ping.
    for v6 in [false, true] {
        assert!(udp_echo(&lab, v6) >= 0.9, "UDP echo (v6 {v6}): {}", d.log());
        let addrs = resolve(&lab, v6);
        assert_eq!(addrs, vec![Server::Tcp.ip(v6)], "DNS answer (v6 {v6})");
        assert_eq!(get(&lab, SocketAddr::new(addrs[0], 80), 100_000), 100_000);
        assert!(ping(&lab, v6, 3, 56), "ping (v6 {v6}): {}", d.log());
    }
    // A UDP port without a listener: the application's connected socket sees "connection
    // refused", as without mpbond.
    let refused = lab
        .run_in(&lab.ns().laptop, || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect("198.19.0.12:9").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut buf = [0u8; 16];
            (0..10).any(|_| {
                let _ = s.send(b"anyone?");
                matches!(s.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        })
        .unwrap();
    assert!(refused, "no ECONNREFUSED: {}", d.log());
    let st = status(&lab, rd.path());
    assert!(
        counter(&st, "udp_sessions") >= 5 && counter(&st, "icmp_sessions") >= 2,
        "{:?}",
        st.counters
    );
    assert!(st.flows.iter().any(|f| f.protocol == "udp"), "{:?}", st.flows);

    // Sockets and pings that stay open across the loss of Wi-Fi.
    let mut probers = vec![
        Prober::start(
            &lab,
            "UDP echo v4",
            Server::UdpEcho.addr(false),
            Probe::Echo,
            Duration::from_millis(10),
        ),
        Prober::start(
            &lab,
            "UDP echo v6",
            Server::UdpEcho.addr(true),
            Probe::Echo,
            Duration::from_millis(10),
        ),
        Prober::start(
            &lab,
            "DNS v4",
            dns_server(false),
            Probe::Dns { v6: false },
            Duration::from_millis(50),
        ),
        Prober::start(
            &lab,
            "DNS v6",
            dns_server(true),
            Probe::Dns { v6: true },
            Duration::from_millis(50),
        ),
    ];
    // 400 pings 20 ms apart: about 8 s, long enough to see Wi-Fi go and the replies come back.
    let pings = [
        spawn_ping(&lab, false, 400, "0.02"),
        spawn_ping(&lab, true, 400, "0.02"),
    ];
    wait_for(
        "replies over Wi-Fi before it goes",
        Duration::from_secs(10),
        || probers.iter().all(|p| p.replies() >= 5),
    );

    lab.set_link(Path::Wifi, false).unwrap();
    // From here on wlan0 is down: a probe sent now can only be answered over cellular.
    let (t_down, unix_down) = (Instant::now(), unix_now());
    wait_for("every kept socket answered over cellular", RESUME_BOUND, || {
        probers.iter().all(|p| p.first_reply_after(t_down).is_some())
    });
    for p in &probers {
        let t = p.first_reply_after(t_down).unwrap();
        println!(
            "Wi-Fi link down: kept {} socket answered again after {:.0} ms",
            p.name,
            t.as_secs_f64() * 1e3
        );
        assert!(t < RESUME_BOUND);
    }
    for (child, v6) in pings.into_iter().zip([false, true]) {
        // ping ends by itself after its count (bounded: 400 x 20 ms, plus 1 s for the last).
        let out = child.wait_with_output().unwrap();
        let times = ping_reply_times(&String::from_utf8_lossy(&out.stdout));
        let after: Vec<f64> = times.iter().copied().filter(|&t| t > unix_down).collect();
        let last_before = times
            .iter()
            .copied()
            .filter(|&t| t <= unix_down)
            .fold(f64::NAN, f64::max);
        assert!(
            !after.is_empty() && last_before.is_finite(),
            "ping (v6 {v6}) did not go on over cellular: {} replies, {} after Wi-Fi went\n{}",
            times.len(),
            after.len(),
            d.log()
        );
        let gap = after[0] - last_before;
        println!(
            "Wi-Fi link down: a running ping over {} (20 ms interval) had its longest silence of \
             {:.0} ms; {} of 400 echoes answered",
            if v6 { "IPv6" } else { "IPv4" },
            gap * 1e3,
            times.len()
        );
        assert!(gap < RESUME_BOUND.as_secs_f64());
    }
    let st = status(&lab, rd.path());
    assert!(!st.interfaces[0].usable, "Wi-Fi still usable in status");
    assert!(counter(&st, "failovers") >= 1, "{:?}", st.counters);

    // New flows while Wi-Fi is gone leave by cellular.
    let cell0 = link_bytes(&lab, "wwan0");
    for v6 in [false, true] {
        assert!(
            udp_echo(&lab, v6) >= 0.9,
            "UDP over cellular (v6 {v6}): {}",
            d.log()
        );
        assert_eq!(resolve(&lab, v6), vec![Server::Tcp.ip(v6)]);
        assert!(ping(&lab, v6, 3, 56), "ping over cellular (v6 {v6})");
    }
    assert_eq!(get(&lab, addr(SERVER_TCP4), 2_000_000), 2_000_000);
    assert_eq!(post(&lab, addr(SERVER_TCP6), 1_000_000), 1_000_000);
    let cell1 = link_bytes(&lab, "wwan0");
    assert!(
        cell1.0 > cell0.0 + 1_500_000 && cell1.1 > cell0.1 + 800_000,
        "traffic did not move to wwan0: {cell0:?} -> {cell1:?}"
    );

    // Wi-Fi back: the kept sockets and new flows return to it.
    let t_up = Instant::now();
    lab.set_link(Path::Wifi, true).unwrap();
    wait_for("Wi-Fi usable again", Duration::from_secs(10), || {
        status(&lab, rd.path()).interfaces[0].usable
    });
    let usable_after = t_up.elapsed();
    // The two echo probers send ~100 KB/s each (1,000-byte datagrams every 10 ms): wait until,
    // over a 300 ms window, Wi-Fi carries both (>= 40 KB) and cellular next to nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        let (w0, c0) = (link_bytes(&lab, "wlan0"), link_bytes(&lab, "wwan0"));
        std::thread::sleep(Duration::from_millis(300));
        let (w1, c1) = (link_bytes(&lab, "wlan0"), link_bytes(&lab, "wwan0"));
        if w1.0 - w0.0 >= 40_000 && c1.0 - c0.0 < 10_000 && c1.1 - c0.1 < 10_000 {
            break t_up.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "kept sockets did not return to Wi-Fi: wlan0 rx +{} B, wwan0 rx +{} tx +{} B in 300 ms",
            w1.0 - w0.0,
            c1.0 - c0.0,
            c1.1 - c0.1
        );
    };
    println!(
        "Wi-Fi link up: usable in status after {:.0} ms; kept UDP sockets back on wlan0 within {:.0} ms",
        usable_after.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3
    );
    for p in &mut probers {
        p.stop();
    }
    for p in &probers {
        // Every prober kept getting answers after Wi-Fi returned.
        let log = p.log.lock().unwrap();
        assert!(
            log.replies.last().is_some_and(|(_, t)| *t > t_up + usable_after),
            "{}: no reply after Wi-Fi returned",
            p.name
        );
    }
    let (w0, c0) = (link_bytes(&lab, "wlan0"), link_bytes(&lab, "wwan0"));
    for v6 in [false, true] {
        assert!(ping(&lab, v6, 20, 1200), "ping after Wi-Fi returned (v6 {v6})");
        assert_eq!(resolve(&lab, v6), vec![Server::Tcp.ip(v6)]);
    }
    assert_eq!(get(&lab, addr(SERVER_TCP6), 2_000_000), 2_000_000);
    let (w1, c1) = (link_bytes(&lab, "wlan0"), link_bytes(&lab, "wwan0"));
    assert!(
        w1.0 > w0.0 + 2_000_000 && c1.0 < c0.0 + 100_000,
        "traffic did not return to wlan0: wlan0 {w0:?} -> {w1:?}, wwan0 {c0:?} -> {c1:?}"
    );

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
    // The Wi-Fi link flap re-created wlan0's routes after wwan0's: compare as sets.
    assert_eq!(
        sorted(&before),
        sorted(&snapshot(&lab)),
        "down did not restore the laptop"
    );
}

fn sorted(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

// ---- 2. many connections at once -------------------------------------------------------------

/// Number of simultaneous connections; `MPBOND_LAB_CONNS` overrides.
fn conns() -> usize {
    std::env::var("MPBOND_LAB_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
}

/// Sizes from 1 KB to 2 MB, spread evenly on a log scale (a fixed xorshift sequence).
fn sizes(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = (x >> 11) as f64 / (1u64 << 53) as f64;
            (1_000.0 * 2_000f64.powf(f)) as u64
        })
        .collect()
}

#[test]
fn five_hundred_connections_at_once_with_mixed_sizes_are_byte_exact() {
    if skip_unless_root() {
        return;
    }
    // Client and server sockets of every connection live in this process.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let want = hard.max(65_536);
        let _ = rlimit::Resource::NOFILE
            .set(want, want)
            .or_else(|_| rlimit::Resource::NOFILE.set(hard, hard));
    }
    let lab = lab_with(LabOptions::default());
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    wait_usable(&lab, rd.path());

    let n = conns();
    let sizes = sizes(n);
    // Connection i: GET or POST, to the plain TCP or the kernel MPTCP server, every tenth over
    // IPv6.
    let target = |i: usize| {
        let server = if i % 4 < 2 { Server::Tcp } else { Server::Mptcp };
        (server.addr(i % 10 == 9), i % 2 == 0)
    };
    let connected = Barrier::new(n + 1);
    let go = Barrier::new(n + 1);
    let t0 = Instant::now();
    let (results, open_at_once, t_connected) = lab
        .run_in(&lab.ns().laptop, || {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let (connected, go, size) = (&connected, &go, sizes[i]);
                        std::thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn_scoped(s, move || {
                                let (a, is_get) = target(i);
                                // Nothing here may panic before both barriers: the others wait.
                                let c = client::connect(a, &opts(60));
                                connected.wait();
                                go.wait();
                                let r = c.and_then(|c| {
                                    if is_get {
                                        client::http_get_on(c, a, size, Duration::from_secs(90))
                                    } else {
                                        client::http_post_on(c, a, size, Duration::from_secs(90))
                                    }
                                });
                                (i, a, is_get, size, r)
                            })
                            .unwrap()
                    })
                    .collect();
                connected.wait();
                let t_connected = t0.elapsed();
                // Every connection is open now: the daemon relays them all at once.
                let st = status(&lab, rd.path());
                let open = st.flows.iter().filter(|f| f.protocol == "tcp").count();
                go.wait();
                let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
                (results, open, t_connected)
            })
        })
        .unwrap();
    let wall = t0.elapsed();
    let mut failed = Vec::new();
    let mut total = 0u64;
    for (i, a, is_get, size, r) in &results {
        match r {
            Ok(rep) if rep.bytes == *size => total += size,
            Ok(rep) => failed.push(format!("#{i} {a} get={is_get} {size} B: got {}", rep.bytes)),
            Err(e) => failed.push(format!("#{i} {a} get={is_get} {size} B: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} transfers failed:\n{}\n{}",
        failed.len(),
        failed.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        d.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(
        open_at_once >= n,
        "only {open_at_once} of {n} TCP flows open at once in status"
    );
    println!(
        "{n} connections open at once ({open_at_once} TCP flows in status, all connected after \
         {:.2} s): {:.1} MB byte-exact (1 KB-2 MB each, GET and POST, TCP and MPTCP servers, 10% \
         IPv6) in {:.2} s wall, {:.0} Mbit/s aggregate",
        t_connected.as_secs_f64(),
        total as f64 / 1e6,
        wall.as_secs_f64(),
        total as f64 * 8.0 / wall.as_secs_f64() / 1e6
    );
    let st = status(&lab, rd.path());
    assert!(counter(&st, "tcp_established") >= n as u64, "{:?}", st.counters);

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
    assert_eq!(before, snapshot(&lab), "down did not restore the laptop");
}

// ---- 3. malformed packets --------------------------------------------------------------------

/// A malformed packet and the `status` counter that must count it (`None`: some `dropped_*`
/// counter, the reason depending on how deep the engine reads it).
type Bad = (Vec<u8>, Option<&'static str>);

/// Where a batch of bad packets goes: (namespace, interface, Ethernet destination or none for
/// bare IP on a TUN, the packets).
type Batch = (String, &'static str, Option<[u8; 6]>, Vec<Bad>);

fn tcp_packet(src: SocketAddr, dst: SocketAddr, flags: TcpFlags, options: &[u8]) -> Vec<u8> {
    let f = SegmentFields {
        seq: mpbond::tcp::SeqNum(0x1000_0000),
        ack: mpbond::tcp::SeqNum(0x2000_0000),
        flags,
        window: 1000,
        ..Default::default()
    };
    let mut b = vec![0u8; 200];
    let n = wire::write_tcp_packet(&mut b, src, dst, &f, options, &[b"payload!"], 77).unwrap();
    b.truncate(n);
    b
}

/// Recomputes an IPv4 header checksum after a header field was changed.
fn fix_ipv4(mut p: Vec<u8>) -> Vec<u8> {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = wire::checksum::checksum(&p[..hl.clamp(20, p.len())]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn set_u16(mut p: Vec<u8>, at: usize, v: u16) -> Vec<u8> {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
    p
}

fn xor(mut p: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    p[at] ^= v;
    p
}

/// TCP segments from `src` to `dst` that are malformed in ways every receiver must catch before
/// looking up a connection: IP checksum and lengths, fragments, TCP checksum, data offset,
/// truncation, option lengths (MPTCP's too). `syn` picks a SYN (host side) or an ACK (peer side).
fn bad_tcp(src: SocketAddr, dst: SocketAddr, syn: bool) -> Vec<Bad> {
    let flags = if syn { TcpFlags::SYN } else { TcpFlags::ACK };
    let good = tcp_packet(src, dst, flags, &[]);
    let (ip, t) = if src.is_ipv4() { (20, 20) } else { (40, 40) };
    let mut v: Vec<Bad> = vec![
        (xor(good.clone(), t + 16, 0xff), Some("dropped_tcp_checksum")),
        // Data offset 15 (60 bytes) past the end of the segment, and 3 (below the 20-byte header).
        (xor(good.clone(), t + 12, 0xa0), Some("dropped_tcp_header")),
        (
            set_u16(good.clone(), t + 12, 0x3000 | u16::from(good[t + 13])),
            Some("dropped_tcp_header"),
        ),
        // Options whose lengths are broken (the checksum is right): MSS of length 0, an option
        // running past the options area, MPTCP of length 1, MPTCP running past the area.
        (
            tcp_packet(src, dst, flags, &[2, 0, 1, 1]),
            Some("dropped_tcp_options"),
        ),
        (
            tcp_packet(src, dst, flags, &[2, 44, 5, 0]),
            Some("dropped_tcp_options"),
        ),
        (
            tcp_packet(src, dst, flags, &[30, 1, 0, 0]),
            Some("dropped_tcp_options"),
        ),
        (
            tcp_packet(src, dst, flags, &[30, 40, 0x01, 0x81]),
            Some("dropped_tcp_options"),
        ),
    ];
    if src.is_ipv4() {
        let trunc = fix_ipv4(set_u16(good[..ip + 10].to_vec(), 2, (ip + 10) as u16));
        v.extend([
            (xor(good.clone(), 10, 0xff), Some("dropped_ip_checksum")),
            // Total length past the packet, and below the header.
            (
                fix_ipv4(set_u16(good.clone(), 2, good.len() as u16 + 20)),
                Some("dropped_ip_length"),
            ),
            (fix_ipv4(set_u16(good.clone(), 2, 16)), Some("dropped_ip_length")),
            // A first fragment (more fragments, offset 0): not reassembled, dropped.
            (
                fix_ipv4(set_u16(good.clone(), 6, 0x2000)),
                Some("dropped_ip_fragment"),
            ),
            // Only 10 bytes of TCP header.
            (trunc, Some("dropped_tcp_header")),
        ]);
    } else {
        let mut trunc = set_u16(good[..ip + 10].to_vec(), 4, 10);
        trunc.truncate(ip + 10);
        v.extend([
            (
                set_u16(good.clone(), 4, (good.len() - ip + 100) as u16),
                Some("dropped_ip_length"),
            ),
            (trunc, Some("dropped_tcp_header")),
        ]);
    }
    v
}

/// Well-formed TCP whose MPTCP options have the wrong length for their subtype (MP_CAPABLE of 5
/// bytes, DSS of 6): the TCP option walk accepts them; sent to a port with no connection.
fn bad_mptcp(src: SocketAddr, dst: SocketAddr) -> Vec<Bad> {
    vec![
        (
            tcp_packet(
                src,
                dst,
                TcpFlags::SYN | TcpFlags::ACK,
                &[30, 5, 0x01, 0x81, 0x00, 0, 0, 0],
            ),
            None,
        ),
        (
            tcp_packet(src, dst, TcpFlags::ACK, &[30, 6, 0x20, 0x01, 0xaa, 0xbb, 0, 0]),
            None,
        ),
    ]
}

/// ICMP from the router `from` to the laptop `to` (the daemon's raw ICMP sockets get these: the
/// errors about its connections and the echo replies): a destination unreachable with a bad
/// checksum or a quote too short to name a connection, an echo reply with a bad checksum or cut
/// short. (The kernel itself keeps from raw sockets an ICMPv6 message with a bad checksum and an
/// ICMPv4 one under 8 bytes.)
fn bad_icmp(from: IpAddr, to: IpAddr) -> Vec<Bad> {
    let mut b = vec![0u8; 200];
    let mut msg = |m: &[u8]| {
        let n = icmp::write_packet(&mut b, from, to, m).unwrap();
        b[..n].to_vec()
    };
    if from.is_ipv4() {
        let quote = tcp_packet(SocketAddr::new(to, 61_000), addr(SERVER_TCP4), TcpFlags::SYN, &[]);
        let mut unreach = vec![3, 1, 0, 0, 0, 0, 0, 0];
        unreach.extend_from_slice(&quote[..28]);
        let unreach = msg(&unreach);
        let short = msg(&[3, 1, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 40, 0, 0]);
        let reply = msg(&[0, 0, 0, 0, 0x12, 0x34, 0, 1, 7, 7, 7, 7]);
        vec![
            (
                xor(unreach.clone(), unreach.len() - 1, 1),
                Some("dropped_icmp_checksum"),
            ),
            (short, Some("dropped_icmp_header")),
            (
                xor(reply.clone(), reply.len() - 1, 1),
                Some("dropped_icmp_checksum"),
            ),
        ]
    } else {
        vec![
            (
                msg(&[1, 3, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 0]),
                Some("dropped_icmp_header"),
            ),
            (msg(&[129, 0, 0, 0, 0x12, 0x34]), Some("dropped_icmp_header")),
        ]
    }
}

/// Packets only the TUN side can receive (the interface filter admits TCP to our ports only):
/// IP version and header length, later fragments, other protocols, bad UDP and ICMP.
fn bad_tun_only(src: IpAddr, v6src: IpAddr) -> Vec<Bad> {
    let s4 = SocketAddr::new(src, 40_001);
    let d4 = addr(SERVER_TCP4);
    let good = tcp_packet(s4, d4, TcpFlags::SYN, &[]);
    let mut b = vec![0u8; 2000];
    let echo4 = Server::UdpEcho.addr(false);
    let n = udp::write_packet(&mut b, SocketAddr::new(src, 5000), echo4, b"xyz").unwrap();
    let udp4 = b[..n].to_vec();
    let s6 = SocketAddr::new(v6src, 5000);
    let n = udp::write_packet(&mut b, s6, Server::UdpEcho.addr(true), b"xyz").unwrap();
    let udp6 = b[..n].to_vec();
    let (i4, i6) = (Server::UdpEcho.ip(false), Server::UdpEcho.ip(true));
    let n = icmp::write_packet(&mut b, src, i4, &[8, 0, 0, 0, 1, 2, 0, 1, 9, 9]).unwrap();
    let ping4 = b[..n].to_vec();
    let n = icmp::write_packet(&mut b, src, i4, &[8, 0, 0, 0, 1, 2]).unwrap();
    let short_icmp = b[..n].to_vec();
    let n = icmp::write_packet(&mut b, src, i4, &[13, 0, 0, 0, 1, 2, 0, 1]).unwrap();
    let timestamp = b[..n].to_vec();
    let n = icmp::write_packet(&mut b, v6src, i6, &[128, 0, 0, 0, 1, 2, 0, 1]).unwrap();
    let ping6 = b[..n].to_vec();
    vec![
        (xor(good.clone(), 0, 0x10), Some("dropped_ip_version")), // version 5
        (fix_ipv4(xor(good.clone(), 0, 0x01)), Some("dropped_ip_header")), // IHL 4
        // A later fragment (offset 104 bytes).
        (
            fix_ipv4(set_u16(good.clone(), 6, 13)),
            Some("dropped_ip_fragment"),
        ),
        (
            fix_ipv4(set_u16(good.clone(), 8, 0x402f)),
            Some("dropped_protocol"),
        ), // GRE
        (set_u16(udp4.clone(), 24, 200), Some("dropped_udp_length")),
        (
            xor(udp4.clone(), udp4.len() - 1, 0x55),
            Some("dropped_udp_checksum"),
        ),
        // RFC 8200 §8.1: a zero UDP checksum over IPv6 is invalid.
        (set_u16(udp6.clone(), 46, 0), Some("dropped_udp_checksum")),
        (
            xor(ping4.clone(), ping4.len() - 1, 1),
            Some("dropped_icmp_checksum"),
        ),
        (
            xor(ping6.clone(), ping6.len() - 1, 1),
            Some("dropped_icmp_checksum"),
        ),
        (short_icmp, Some("dropped_icmp_header")),
        (timestamp, Some("dropped_icmp_not_echo")),
    ]
}

const SLOW_BYTES: u64 = 12_000_000;

/// `GET /bytes/N` read at 8 MB/s at most, so the connection stays open a while (about 1.5 s for
/// [`SLOW_BYTES`]), every byte checked against the pattern; returns the bytes received.
fn slow_get(a: SocketAddr, n: u64) -> Result<u64, String> {
    use std::io::{Read, Write};
    let mut s = client::connect(a, &opts(30)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /bytes/{n} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let body_at = loop {
        if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if pending.len() > 16 * 1024 {
            return Err("response head over 16 KiB".into());
        }
        let k = s.read(&mut buf).map_err(|e| format!("read head: {e}"))?;
        if k == 0 {
            return Err("closed before the response head".into());
        }
        pending.extend_from_slice(&buf[..k]);
    };
    let head = String::from_utf8_lossy(&pending[..body_at]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("response {head}"));
    }
    let mut got = 0u64;
    let check = |data: &[u8], got: &mut u64| match netlab::pattern::first_mismatch(*got, data) {
        Some(i) => Err(format!("byte {} differs from the pattern", *got + i as u64)),
        None => {
            *got += data.len() as u64;
            Ok(())
        }
    };
    check(&pending[body_at..], &mut got)?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    while got < n {
        let ahead = Duration::from_secs_f64(got as f64 / 8e6).saturating_sub(t0.elapsed());
        std::thread::sleep(ahead.min(Duration::from_millis(50)));
        if Instant::now() > deadline {
            return Err(format!("timed out after {got} of {n} bytes"));
        }
        let k = s
            .read(&mut buf)
            .map_err(|e| format!("read body after {got} bytes: {e}"))?;
        if k == 0 {
            return Err(format!("connection ended after {got} of {n} bytes"));
        }
        check(&buf[..k], &mut got)?;
    }
    Ok(got)
}

fn mac(lab: &Lab, ns: &str, ifname: &str) -> [u8; 6] {
    let out = lab.exec(ns, &["ip", "-j", "link", "show", ifname]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    netlab::inject::parse_mac(v[0]["address"].as_str().unwrap()).unwrap()
}

/// Sends `packets` on `ifname` in namespace `ns`, each behind an Ethernet header to `dst_mac`
/// when given (else bare, as on a TUN).
fn inject(lab: &Lab, ns: &str, ifname: &str, dst_mac: Option<[u8; 6]>, packets: &[Bad]) {
    let frames: Vec<Vec<u8>> = match dst_mac {
        Some(dst) => {
            let src = mac(lab, ns, ifname);
            packets
                .iter()
                .map(|(p, _)| netlab::inject::ethernet_frame(dst, src, p))
                .collect()
        }
        None => packets.iter().map(|(p, _)| p.clone()).collect(),
    };
    let sent = lab
        .run_in(ns, || netlab::inject::send_frames(ifname, &frames))
        .unwrap()
        .unwrap();
    assert_eq!(sent, frames.len(), "frames sent on {ifname} in {ns}");
}

fn dropped(st: &Status) -> BTreeMap<String, u64> {
    st.counters
        .iter()
        .filter(|(k, _)| k.starts_with("dropped_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[test]
fn malformed_packets_from_the_host_and_both_links_are_counted_and_dropped() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    wait_usable(&lab, rd.path());
    let laptop = lab.ns().laptop.clone();

    // A transfer runs while the bad packets arrive.
    let running = {
        let laptop = laptop.clone();
        std::thread::spawn(move || netlab::netns::run_in(&laptop, || slow_get(addr(SERVER_TCP4), SLOW_BYTES)))
    };
    // Its local port, when status lists the connection: the bad segments on Wi-Fi are aimed at
    // it (they must not disturb it); else at a port of the range with no connection.
    let mut live = None;
    let t = Instant::now();
    while live.is_none() && t.elapsed() < Duration::from_secs(3) {
        live = status(&lab, rd.path())
            .subflows
            .iter()
            .find(|s| s.remote == addr(SERVER_TCP4) && s.interface == "wlan0")
            .map(|s| s.local.port());
        std::thread::sleep(Duration::from_millis(20));
    }
    let live_port = live.unwrap_or(64_001);
    let st0 = status(&lab, rd.path());

    // Into the TUN, as the host's stack would write them (source: the TUN's addresses).
    let tun4 = st0
        .tun
        .addresses
        .iter()
        .find(|a| a.addr().is_ipv4())
        .unwrap()
        .addr();
    let tun6 = st0
        .tun
        .addresses
        .iter()
        .find(|a| a.addr().is_ipv6())
        .unwrap()
        .addr();
    let mut from_host = bad_tcp(SocketAddr::new(tun4, 40_000), addr(SERVER_TCP4), true);
    from_host.extend(bad_tcp(SocketAddr::new(tun6, 40_000), addr(SERVER_TCP6), true));
    from_host.extend(bad_tun_only(tun4, tun6));
    let mut sends: Vec<Batch> = vec![(laptop.clone(), "mpbond0", None, from_host)];
    // At both physical interfaces from their routers, toward the subflow port range.
    for path in Path::ALL {
        let port = if path == Path::Wifi { live_port } else { 62_002 };
        let to4 = SocketAddr::new(path.laptop_v4().into(), port);
        let to6 = SocketAddr::new(path.laptop_v6().into(), port);
        let mut bad = bad_tcp(addr(SERVER_TCP4), to4, false);
        bad.extend(bad_tcp(addr(SERVER_TCP6), to6, false));
        let free4 = SocketAddr::new(path.laptop_v4().into(), 64_003);
        let free6 = SocketAddr::new(path.laptop_v6().into(), 64_003);
        bad.extend(bad_mptcp(addr(SERVER_TCP4), free4));
        bad.extend(bad_mptcp(addr(SERVER_TCP6), free6));
        bad.extend(bad_icmp(path.gateway_v4().into(), path.laptop_v4().into()));
        bad.extend(bad_icmp(path.gateway_v6().into(), path.laptop_v6().into()));
        let laptop_mac = mac(&lab, &laptop, path.laptop_iface());
        let router = lab.ns().router(path).to_owned();
        sends.push((router, netlab::ROUTER_LAN, Some(laptop_mac), bad));
    }
    let d0 = dropped(&st0);
    let delta = |st: &Status| -> BTreeMap<String, u64> {
        dropped(st)
            .into_iter()
            .map(|(k, v)| {
                let b = d0.get(&k).copied().unwrap_or(0);
                (k, v - b)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    };
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut got = BTreeMap::new();
    // A second round re-sends the kinds the first left short: a frame lost in the lab under
    // load (seen once in many runs) is not the daemon's doing. Each kind must still be counted
    // under its own reason.
    for round in 0..2 {
        let short: Vec<&str> = want
            .iter()
            .filter(|(k, n)| got.get(**k).copied().unwrap_or(0) < **n)
            .map(|(k, _)| *k)
            .collect();
        if round == 1 {
            println!("round 1 left {short:?} short of {want:?} (got {got:?}): sending those again");
        }
        for (ns, ifname, dst_mac, packets) in &sends {
            let batch: Vec<Bad> = packets
                .iter()
                .filter(|(_, k)| round == 0 || k.is_some_and(|k| short.contains(&k)))
                .cloned()
                .collect();
            for k in batch.iter().filter_map(|(_, k)| *k) {
                *want.entry(k).or_default() += 1;
            }
            total += batch.len() as u64;
            inject(&lab, ns, ifname, *dst_mac, &batch);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let ok = loop {
            got = delta(&status(&lab, rd.path()));
            let ok = want.iter().all(|(k, n)| got.get(*k).copied().unwrap_or(0) >= *n)
                && got.values().sum::<u64>() >= total;
            if ok || Instant::now() > deadline {
                break ok;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if ok {
            break;
        }
        assert!(
            round == 0,
            "malformed packets not counted as expected:\n wanted at least {want:?} ({total} in all)\n got {got:?}\n{}",
            d.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    println!(
        "{total} malformed packets ({} into the TUN, the rest on wlan0 and wwan0; Wi-Fi ones aimed at {}): dropped counters rose by {got:?}",
        sends[0].3.len(),
        if live.is_some() {
            "a live connection"
        } else {
            "a free port"
        }
    );

    // The transfer that ran meanwhile is intact; new ones work, UDP and ping too.
    let r = running.join().unwrap().unwrap();
    assert_eq!(
        r.unwrap_or_else(|e| panic!("transfer during the bad packets: {e}")),
        SLOW_BYTES
    );
    assert_eq!(get(&lab, addr(SERVER_TCP4), 1_000_000), 1_000_000);
    assert_eq!(post(&lab, addr(SERVER_TCP6), 1_000_000), 1_000_000);
    assert!(udp_echo(&lab, false) >= 0.9 && udp_echo(&lab, true) >= 0.9);
    assert!(ping(&lab, false, 3, 56) && ping(&lab, true, 3, 56));
    let table = mpbond(&lab, rd.path(), &["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("dropped packets:") && table.contains("tcp_checksum"),
        "{table}"
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
    assert_eq!(before, snapshot(&lab), "down did not restore the laptop");
}
