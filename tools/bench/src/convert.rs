//! P8: the RFC 8803 converter (issue 13). `mpbond server` runs in the lab's converter namespace
//! (198.19.3.2:5124); the laptop's flows to the plain TCP server 198.19.0.11 go through it when
//! the daemon runs `mpbond up --converter … --converter-key-file …`. Side by side in one run,
//! alternating run by run:
//!
//! - single-flow goodput, download and upload: via the converter vs. the laptop's plain TCP
//!   straight to the same server without mpbond, on a rate-limited, delayed Wi-Fi path (so the
//!   baseline is limited by the path, not by the load generator: iperf3 where installed);
//! - time to first byte of an HTTP GET (curl, a fresh connection each time): via the converter
//!   vs. direct, with a round-trip delay so that an extra round trip shows;
//! - failover gap (Wi-Fi link down, Wi-Fi blackholed; at each RTT of `--rtts`): a download via
//!   the converter through mpbond vs. the Linux kernel's MPTCP client doing the same through the
//!   same converter (an `IPPROTO_MPTCP` socket with a backup endpoint on wwan0, as P3's kernel
//!   case, sending the Convert request in its SYN with TCP Fast Open).

use crate::daemon::Daemon;
use crate::measure::{self, Trace};
use crate::report::{Cell, Goal, Row};
use crate::scenarios::{
    self, Config, Log, Outage, Samples, counters, diagnose, endpoint, flush_endpoints, grew, row, set_note,
    set_rates, with_daemon_args,
};
use crate::stats::quantile;
use mpbond::convert::client::{Reply, connect_request, parse_reply};
use mpbond::convert::key::ClientKey;
use netlab::client;
use netlab::converter::CONVERTER_V4;
use netlab::{Lab, Path, Server};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The converter's port (RFC 8803 tools use 5124; `mpbond server`'s default).
pub const CONVERTER_PORT: u16 = 5124;
/// The rate of each path in the goodput rows, Mbit/s: a fast Wi-Fi, below what the lab's
/// veths and the load generator reach on this machine, so the direct baseline is path-limited.
pub const GOODPUT_RATE_MBIT: u64 = 200;
/// The round-trip delay of each path in the goodput rows.
pub const GOODPUT_RTT: Duration = Duration::from_millis(20);
/// The round-trip delay of each path in the time-to-first-byte row.
pub const TTFB_RTT: Duration = Duration::from_millis(20);
/// HTTP GETs per time-to-first-byte run (each on a new connection; the run's value is their
/// median), after one unmeasured.
pub const TTFB_REQUESTS: usize = 20;
/// Body size of the time-to-first-byte GET.
const TTFB_BYTES: u64 = 1000;
/// iperf3's port on the plain TCP server's address.
pub(crate) const IPERF_PORT: u16 = 5201;
/// The host's SYN options as the converter is told of them (Linux's: MSS, SACK-Permitted,
/// Timestamps, Window Scale); the kernel client's Convert request carries what the daemon's
/// would for such a host SYN.
const HOST_SYN_OPTIONS: &[u8] = &[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

/// The plain TCP server (no MPTCP), the destination of every P8 flow.
pub(crate) fn destination() -> SocketAddr {
    Server::Tcp.addr(false)
}

/// The converter's address.
pub fn converter_addr() -> SocketAddr {
    SocketAddr::new(CONVERTER_V4.into(), CONVERTER_PORT)
}

/// `mpbond server` in the lab's converter namespace with one client key; killed on drop.
#[derive(Debug)]
pub struct Converter {
    child: Option<Child>,
    /// The client key file (`--converter-key-file` of the daemon).
    pub key: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    ns: String,
}

impl Converter {
    /// Writes a client key with `mpbond server --gen-key` into `dir`, a config listening on
    /// [`converter_addr`], starts `mpbond server --config` in namespace `ns` (its stderr to
    /// `log`) and waits (≤ 20 s) until its status socket answers.
    pub fn start(
        bin: &FsPath,
        ns: &str,
        dir: &FsPath,
        log: &FsPath,
        verbose: u8,
    ) -> Result<Converter, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let key = dir.join("laptop.key");
        let _ = std::fs::remove_file(&key);
        let o = Command::new(bin)
            .args(["server", "--gen-key"])
            .arg(&key)
            .output()
            .map_err(|e| format!("mpbond server --gen-key: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "mpbond server --gen-key: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let socket = dir.join("status.sock");
        let conf = dir.join("server.toml");
        let text = format!(
            "listen = [\"{}\"]\nkey_files = [\"{}\"]\nstatus_socket = \"{}\"\n",
            converter_addr(),
            key.display(),
            socket.display()
        );
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let err = std::fs::File::create(log).map_err(|e| format!("converter log {}: {e}", log.display()))?;
        let v = format!("-{}", "v".repeat(usize::from(verbose.max(1))));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args([v.as_str(), "server", "--config"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn mpbond server: {e}"))?;
        let mut c = Converter {
            child: Some(child),
            key,
            socket,
            log: log.to_owned(),
            ns: ns.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(st))) = c.child.as_mut().map(Child::try_wait) {
                return Err(format!("mpbond server exited at start ({st}): {}", c.log_tail()));
            }
            if c.status().is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(format!("mpbond server not ready after 20 s: {}", c.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mpbond server --status`, from its socket.
    pub fn status(&self) -> Result<mpbond::server::ServerStatus, String> {
        mpbond::server::fetch_status(&self.socket).map_err(|e| format!("{e:#}"))
    }

    /// `ip netns exec` execs the program: the child's pid is the server's (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The client key it accepts (to build Convert requests by hand).
    pub fn client_key(&self) -> Result<mpbond::convert::key::ClientKey, String> {
        mpbond::convert::key::ClientKey::load(&self.key).map_err(|e| e.to_string())
    }

    /// A counter of its status (0 when absent).
    pub fn counter(&self, name: &str) -> Result<u64, String> {
        Ok(self.status()?.counters.get(name).copied().unwrap_or(0))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// The `mpbond up` arguments that use it.
    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "--converter".into(),
            converter_addr().to_string(),
            "--converter-key-file".into(),
            self.key.display().to_string(),
        ]
    }

    /// A counter of the kernel's TCP statistics (`/proc/net/netstat`, `TcpExt:` lines) in the
    /// converter's namespace, e.g. `TCPFastOpenPassive` (SYNs whose data was accepted).
    pub fn tcp_ext(&self, lab: &Lab, name: &str) -> Result<u64, String> {
        let text = lab
            .exec(&self.ns, &["cat", "/proc/net/netstat"])
            .map_err(|e| e.to_string())?;
        netstat_value(&text, "TcpExt:", name).ok_or_else(|| format!("no TcpExt {name} in /proc/net/netstat"))
    }
}

impl Drop for Converter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of `name` in the `prefix` lines of `/proc/net/netstat` (a header line of names,
/// then a line of values).
fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Which parts of P8 to run.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// Single-flow goodput via the converter.
    pub goodput: bool,
    /// Time to first byte of an HTTP GET.
    pub ttfb: bool,
    /// Failover gaps vs. the kernel MPTCP client.
    pub failover: bool,
}

impl Parts {
    /// Whether any part runs.
    pub fn any(self) -> bool {
        self.goodput || self.ttfb || self.failover
    }
}

/// P8: adds the converter namespace, starts `mpbond server` there and measures the P8 rows
/// that `parts` selects.
pub fn converter(lab: &mut Lab, cfg: &Config, parts: Parts, log: Log) -> Vec<Row> {
    let conv = start_converter(lab, cfg);
    let lab: &Lab = lab;
    let conv = match conv {
        Ok(c) => c,
        Err(e) => {
            return vec![row(
                "P8",
                "the converter rows",
                "",
                Cell::Failed { error: e.clone() },
                Cell::Failed { error: e },
                Goal::None,
            )];
        }
    };
    let mut rows = Vec::new();
    if parts.goodput {
        rows.extend(goodput(lab, cfg, &conv, log));
    }
    if parts.ttfb {
        rows.extend(ttfb(lab, cfg, &conv, log));
    }
    if parts.failover {
        rows.extend(failover(lab, cfg, &conv, log));
    }
    rows
}

/// Adds the converter namespace (if not there yet) and starts `mpbond server` in it.
pub(crate) fn start_converter(lab: &mut Lab, cfg: &Config) -> Result<Converter, String> {
    lab.add_converter()
        .map_err(|e| format!("add the converter namespace: {e}"))
        .and_then(|ns| {
            let bin = cfg.mpbond.as_ref().map_err(Clone::clone)?;
            let dir = cfg.run_dir.join("converter");
            let log_file = cfg
                .daemon_log
                .as_ref()
                .map_or_else(|| dir.join("server.log"), |l| l.with_extension("converter.log"));
            Converter::start(bin, &ns, &dir, &log_file, cfg.daemon_verbose)
        })
}

/// Sets the delay of both paths.
pub(crate) fn set_delays(lab: &Lab, rtt: Duration) -> Result<(), String> {
    Path::ALL
        .iter()
        .try_for_each(|&p| lab.set_delay(p, rtt))
        .map_err(|e| e.to_string())
}

/// Runs `f` with a fresh daemon using the converter.
pub(crate) fn with_converter<T>(
    lab: &Lab,
    cfg: &Config,
    conv: &Converter,
    f: impl FnOnce(&Daemon) -> T,
) -> Result<T, String> {
    with_converter_args(lab, cfg, conv, &[], f)
}

/// [`with_converter`] with more `mpbond up` arguments.
pub(crate) fn with_converter_args<T>(
    lab: &Lab,
    cfg: &Config,
    conv: &Converter,
    extra: &[&str],
    f: impl FnOnce(&Daemon) -> T,
) -> Result<T, String> {
    flush_endpoints(lab)?;
    let args = conv.daemon_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    with_daemon_args(lab, cfg, &args, f)
}

/// Checks that the daemon relayed `flows` new flows through the converter, none failed over to
/// direct, and `down`/`up` bytes went through it.
fn through_converter(
    a: &std::collections::BTreeMap<String, u64>,
    b: &std::collections::BTreeMap<String, u64>,
    flows: u64,
    down: u64,
    up: u64,
) -> Result<(), String> {
    let (via, failed) = (grew(a, b, "tcp_via_converter"), grew(a, b, "converter_failed"));
    let (bd, bu) = (grew(a, b, "tcp_bytes_down"), grew(a, b, "tcp_bytes_up"));
    let all = grew(a, b, "tcp_flows");
    if via < flows || via < all || failed > 0 || bd < down || bu < up {
        return Err(format!(
            "not relayed through the converter: tcp_via_converter +{via} of tcp_flows +{all} (want {flows}), \
             converter_failed +{failed}, tcp_bytes_down +{bd} (want {down}), tcp_bytes_up +{bu} (want {up})"
        ));
    }
    Ok(())
}

/// The load generator of the goodput rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// iperf3 (Debian's), client in the laptop namespace, server on the plain server's address.
    Iperf3,
    /// netlab's HTTP client and server (P1's), every byte verified.
    Http,
}

pub(crate) fn have_iperf3() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `iperf3 -s` on the plain server's address in `inet`; killed on drop.
pub(crate) struct IperfServer(Child);

impl IperfServer {
    pub(crate) fn start(lab: &Lab) -> Result<IperfServer, String> {
        let ip = destination().ip().to_string();
        let port = IPERF_PORT.to_string();
        let child = lab
            .command(&lab.ns().inet, "iperf3")
            .args(["-s", "-B", &ip, "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn iperf3 -s: {e}"))?;
        let s = IperfServer(child);
        // Listening? (`ss`, not a probe connection: iperf3 would wait for that one's test.)
        let filter = format!("( sport = :{IPERF_PORT} )");
        for _ in 0..100 {
            let out = lab
                .exec(&lab.ns().inet, &["ss", "-Htln", &filter])
                .unwrap_or_default();
            if !out.trim().is_empty() {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("iperf3 -s not listening after 5 s".into())
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long an iperf3 test runs for a transfer size of `bytes` (P1's `--bytes`): 1 s per 4 MB,
/// 3 to 10 s. Time-based, not `-n`: with `-n` iperf3 ends the test when the sender has written
/// the bytes, so the receiver's count misses what is still in flight.
fn iperf3_secs(bytes: u64) -> u64 {
    (bytes / 4_000_000).clamp(3, 10)
}

/// One iperf3 test sized for `bytes` from the laptop namespace (`-R`: download); (Mbit/s, bytes)
/// at the receiver. Bounded to 60 s.
fn iperf3(lab: &Lab, bytes: u64, download: bool) -> Result<(f64, u64), String> {
    let ip = destination().ip().to_string();
    let (port, t) = (IPERF_PORT.to_string(), iperf3_secs(bytes).to_string());
    let mut c = lab.command(&lab.ns().laptop, "iperf3");
    c.args([
        "-c",
        &ip,
        "-p",
        &port,
        "-t",
        &t,
        "-J",
        "--connect-timeout",
        "5000",
    ]);
    if download {
        c.arg("-R");
    }
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn iperf3 -c: {e}"))?;
    let mut out = String::new();
    let reader = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        })
    });
    if !crate::child::wait_exit(&mut child, Duration::from_secs(60)) {
        return Err("iperf3 did not finish within 60 s".into());
    }
    if let Some(r) = reader {
        out = r.join().unwrap_or_default();
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 -J output: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let sum = &v["end"]["sum_received"];
    let (got, bps) = (sum["bytes"].as_u64(), sum["bits_per_second"].as_f64());
    match (got, bps) {
        (Some(g), Some(b)) if g > 0 => Ok((b / 1e6, g)),
        _ => Err("iperf3 -J without end.sum_received bytes".into()),
    }
}

/// One transfer (download or upload) from the laptop namespace, of `bytes` (netlab's HTTP) or
/// sized for it (iperf3); (Mbit/s, bytes the receiver counted).
fn transfer(lab: &Lab, generator: Generator, bytes: u64, download: bool) -> Result<(f64, u64), String> {
    match generator {
        Generator::Iperf3 => iperf3(lab, bytes, download),
        Generator::Http => {
            let o = scenarios::opts(Duration::from_secs(120));
            lab.run_in(&lab.ns().laptop, || {
                if download {
                    client::http_get(destination(), bytes, &o)
                } else {
                    client::http_post(destination(), bytes, &o)
                }
            })
            .map_err(|e| e.to_string())?
            .map(|r| (r.mbit_per_s(), r.bytes))
            .map_err(|e| e.to_string())
        }
    }
}

/// (download, upload).
type Both<T> = (T, T);

/// Download then upload; ((down, up) Mbit/s, (down, up) bytes).
fn transfer_pair(lab: &Lab, generator: Generator, bytes: u64) -> Result<(Both<f64>, Both<u64>), String> {
    let down = transfer(lab, generator, bytes, true).map_err(|e| format!("download: {e}"))?;
    let up = transfer(lab, generator, bytes, false).map_err(|e| format!("upload: {e}"))?;
    Ok(((down.0, up.0), (down.1, up.1)))
}

fn push_pair(d: &mut Samples, u: &mut Samples, r: Result<(f64, f64), String>) {
    match r {
        Ok((a, b)) => {
            d.push(Ok(a));
            u.push(Ok(b));
        }
        Err(e) => {
            d.push(Err(e.clone()));
            u.push(Err(e));
        }
    }
}

/// The goodput rows: via the converter vs. direct plain TCP without mpbond, same path.
fn goodput(lab: &Lab, cfg: &Config, conv: &Converter, log: Log) -> Vec<Row> {
    let generator = if have_iperf3() {
        Generator::Iperf3
    } else {
        Generator::Http
    };
    let server = match generator {
        Generator::Iperf3 => IperfServer::start(lab).map(Some),
        Generator::Http => Ok(None),
    };
    let set = set_rates(lab, Some(GOODPUT_RATE_MBIT)).and_then(|()| set_delays(lab, GOODPUT_RTT));
    let (mut kd, mut ku, mut md, mut mu) = (Samples::new(), Samples::new(), Samples::new(), Samples::new());
    let mut failovers = Vec::new();
    let bytes = cfg.bytes;
    for run in 0..cfg.runs {
        let ready = set
            .clone()
            .and_then(|()| server.as_ref().map(|_| ()).map_err(Clone::clone));
        log(&format!(
            "P8 goodput run {}/{}: direct plain TCP",
            run + 1,
            cfg.runs
        ));
        let r = ready
            .clone()
            .and_then(|()| flush_endpoints(lab))
            .and_then(|()| transfer_pair(lab, generator, bytes))
            .map(|(mbit, _)| mbit);
        push_pair(&mut kd, &mut ku, r);
        log(&format!(
            "P8 goodput run {}/{}: via the converter",
            run + 1,
            cfg.runs
        ));
        let r = ready.and_then(|()| {
            with_converter(lab, cfg, conv, |d| {
                let c0 = counters(d)?;
                let (mbit, (down, up)) =
                    transfer_pair(lab, generator, bytes).map_err(|e| format!("{e}; {}", diagnose(d)))?;
                let c1 = counters(d)?;
                through_converter(&c0, &c1, 2, down, up)?;
                // A failover during a transfer on a healthy path (e.g. queueing delay taken for
                // silence) is worth knowing beside the number.
                failovers.push(grew(&c0, &c1, "failovers") + grew(&c0, &c1, "unresponsive_failovers"));
                Ok(mbit)
            })
            .and_then(|r| r)
        });
        if let Err(e) = &r {
            log(&format!("  via the converter failed: {e}"));
        }
        push_pair(&mut md, &mut mu, r);
    }
    drop(server);
    let _ = set_delays(lab, Duration::ZERO);
    let _ = set_rates(lab, None);
    let goal = Goal::RatioAtLeast {
        min: 0.5,
        stretch: None,
    };
    let size = match generator {
        Generator::Iperf3 => format!("iperf3 -t {}", iperf3_secs(bytes)),
        Generator::Http => format!(
            "{} MB, netlab's HTTP client (iperf3 not installed)",
            bytes / 1_000_000
        ),
    };
    let mut out = Vec::new();
    for (what, m, k) in [
        ("server → host download", md, kd),
        ("host → server upload", mu, ku),
    ] {
        let mut mpbond = Cell::from_results(m);
        set_note(
            &mut mpbond,
            format!("the daemon's failovers per run (download + upload): {failovers:?}"),
        );
        let mut kernel = Cell::from_results(k);
        if let Some(med) = kernel.median() {
            set_note(
                &mut kernel,
                format!(
                    "direct reached {:.0} % of the path's {GOODPUT_RATE_MBIT} Mbit/s",
                    med / GOODPUT_RATE_MBIT as f64 * 100.0
                ),
            );
        }
        out.push(row(
            "P8",
            format!(
                "converter: single-flow goodput {what} ({size}, Wi-Fi {GOODPUT_RATE_MBIT} Mbit/s \
                 {} ms RTT); mpbond = via the converter, baseline = direct plain TCP without mpbond",
                GOODPUT_RTT.as_millis()
            ),
            "Mbit/s",
            mpbond,
            kernel,
            goal.clone(),
        ));
    }
    out
}

/// `curl`'s time to first byte (s) of `GET /bytes/TTFB_BYTES` from the plain server, a new
/// connection, from the laptop namespace.
fn curl_ttfb(lab: &Lab) -> Result<f64, String> {
    let url = format!("http://{}/bytes/{TTFB_BYTES}", destination());
    let o = lab
        .command(&lab.ns().laptop, "curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            "%{http_code} %{time_starttransfer}",
            &url,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut w = text.split_whitespace();
    match (w.next(), w.next().and_then(|t| t.parse::<f64>().ok())) {
        (Some("200"), Some(t)) if o.status.success() => Ok(t),
        _ => Err(format!(
            "curl {url}: {} {}",
            text.trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// One TTFB run (ms): the first GET to the destination (first contact: through a converter it
/// waits for the converter's reply, see `engine::converters`), then the median of
/// [`TTFB_REQUESTS`] more.
fn ttfb_run(lab: &Lab) -> Result<(f64, f64), String> {
    let first = curl_ttfb(lab)? * 1e3;
    let mut v = Vec::with_capacity(TTFB_REQUESTS);
    for _ in 0..TTFB_REQUESTS {
        v.push(curl_ttfb(lab)? * 1e3);
    }
    Ok((first, quantile(&v, 0.5)))
}

/// The time-to-first-byte row: via the converter vs. direct.
fn ttfb(lab: &Lab, cfg: &Config, conv: &Converter, log: Log) -> Vec<Row> {
    let set = set_delays(lab, TTFB_RTT);
    let (mut k, mut m, mut tfo) = (Samples::new(), Samples::new(), Vec::new());
    let (mut k_first, mut m_first) = (Samples::new(), Samples::new());
    for run in 0..cfg.runs {
        log(&format!(
            "P8 time to first byte run {}/{}: direct",
            run + 1,
            cfg.runs
        ));
        let r = set.clone().and_then(|()| ttfb_run(lab));
        k_first.push(r.clone().map(|r| r.0));
        k.push(r.map(|r| r.1));
        log(&format!(
            "P8 time to first byte run {}/{}: via the converter",
            run + 1,
            cfg.runs
        ));
        let r = set.clone().and_then(|()| {
            with_converter(lab, cfg, conv, |d| {
                let c0 = counters(d)?;
                let t0 = conv.tcp_ext(lab, "TCPFastOpenPassive");
                let ms = ttfb_run(lab).map_err(|e| format!("{e}; {}", diagnose(d)))?;
                let c1 = counters(d)?;
                let flows = TTFB_REQUESTS as u64 + 1;
                through_converter(&c0, &c1, flows, TTFB_BYTES * flows, 0)?;
                if let (Ok(a), Ok(b)) = (t0, conv.tcp_ext(lab, "TCPFastOpenPassive")) {
                    tfo.push(format!("{}/{flows}", b - a));
                }
                Ok(ms)
            })
            .and_then(|r| r)
        });
        if let Err(e) = &r {
            log(&format!("  via the converter failed: {e}"));
        }
        m_first.push(r.clone().map(|r| r.0));
        m.push(r.map(|r| r.1));
    }
    let _ = set_delays(lab, Duration::ZERO);
    let mut mpbond = Cell::from_results(m);
    set_note(
        &mut mpbond,
        format!(
            "SYNs whose data the converter's kernel accepted (TCPFastOpenPassive) per run: [{}]",
            tfo.join(", ")
        ),
    );
    let mut first = Cell::from_results(m_first);
    set_note(
        &mut first,
        "first contact waits for the converter's reply, which Linux's MPTCP sends only after the \
         client's third ACK: about one RTT more"
            .into(),
    );
    vec![
        row(
            "P8",
            format!(
                "converter: time to first byte of an HTTP GET (curl, new connection, median of {TTFB_REQUESTS}, \
                 {} ms RTT); mpbond = via the converter, baseline = direct",
                TTFB_RTT.as_millis()
            ),
            "ms",
            mpbond,
            Cell::from_results(k),
            Goal::RatioAtMost { max: 1.1 },
        ),
        row(
            "P8",
            format!(
                "converter: time to first byte, first GET to the destination (first contact), {} ms RTT",
                TTFB_RTT.as_millis()
            ),
            "ms",
            first,
            Cell::from_results(k_first),
            Goal::None,
        ),
    ]
}

/// 16 random bytes (a Convert cookie's nonce).
fn nonce() -> Result<[u8; 16], String> {
    let mut n = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    Ok(n)
}

/// How the kernel client's Convert request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Sent {
    /// Not yet.
    #[default]
    Nothing,
    /// With the SYN (`TCP_FASTOPEN_CONNECT` + `TCP_FASTOPEN_NO_COOKIE`).
    InSyn,
    /// As the first data after the handshake (TFO options refused).
    AfterHandshake,
}

/// The Linux kernel's MPTCP client through the converter: an `IPPROTO_MPTCP` socket (the
/// laptop's MPTCP endpoints decide its subflows), the Convert request for [`destination`] and
/// `GET /bytes/n` as its first bytes (in the SYN with TCP Fast Open when the kernel lets the
/// socket), the converter's reply read and checked, then the response timed as
/// [`measure::timed_get`] does. Runs in the calling thread's namespace.
fn kernel_get(
    key: &ClientKey,
    n: u64,
    timeout: Duration,
    origin: Instant,
    first: std::sync::mpsc::Sender<()>,
    sent: &mut Sent,
) -> Result<Trace, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let deadline = Instant::now() + timeout;
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| format!("clock: {e}"))?;
    let mut data = connect_request(key, unix, nonce()?, destination(), HOST_SYN_OPTIONS);
    data.extend_from_slice(&measure::get_request(destination(), n));
    let s = Socket::new(
        Domain::IPV4,
        Type::STREAM,
        Some(Protocol::from(netlab::serve::IPPROTO_MPTCP)),
    )
    .map_err(|e| format!("MPTCP socket: {e}"))?;
    let tfo = mpbond::sys::sock::set_tcp_fastopen_no_cookie(s.as_fd(), true)
        .and_then(|()| mpbond::sys::sock::set_tcp_fastopen_connect(s.as_fd()))
        .is_ok();
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    if tfo {
        // TCP_FASTOPEN_CONNECT: connect returns at once, the first write leaves in the SYN.
        s.connect(&converter_addr().into())
            .map_err(|e| format!("connect {}: {e}", converter_addr()))?;
    } else {
        s.connect_timeout(&converter_addr().into(), Duration::from_secs(5))
            .map_err(|e| format!("connect {}: {e}", converter_addr()))?;
    }
    let mut s: TcpStream = s.into();
    s.write_all(&data).map_err(|e| format!("send the request: {e}"))?;
    *sent = if tfo { Sent::InSyn } else { Sent::AfterHandshake };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let rest = loop {
        match parse_reply(&got) {
            Reply::Incomplete => {}
            Reply::Connected { consumed, .. } => break got.split_off(consumed),
            Reply::Error { code, .. } => return Err(format!("the converter refused: {code:?}")),
            Reply::Malformed => return Err("the converter's reply is malformed".into()),
        }
        if Instant::now() > deadline || got.len() > 8192 {
            return Err("no Convert reply".into());
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {} bytes of the Convert reply", got.len())),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return Err(format!("read the Convert reply: {e}")),
        }
    };
    let trace = measure::timed_response(&mut s, n, deadline, origin, first, rest)?;
    match netlab::mptcp_info(&s) {
        Ok(Some(i)) if !i.fallback => Ok(trace),
        Ok(_) => Err("the kernel's connection to the converter fell back to TCP".into()),
        Err(e) => Err(format!("MPTCP_INFO: {e}")),
    }
}

/// One kernel run: the kernel MPTCP client via the converter with wwan0 as a backup endpoint.
fn failover_kernel(lab: &Lab, cfg: &Config, key: &ClientKey, o: Outage) -> Result<(f64, Sent), String> {
    endpoint(lab, true)?;
    let (n, timeout) = (cfg.failover_bytes, cfg.failover_timeout);
    let mut sent = Sent::Nothing;
    let r = scenarios::failover_run_with(
        lab,
        cfg,
        o,
        |origin, tx| kernel_get(key, n, timeout, origin, tx, &mut sent),
        || (),
    );
    r.map(|(gap, ())| (gap, sent))
}

/// One mpbond run: a fresh daemon with the converter, the laptop's plain TCP download from the
/// plain server; (gap ms, the daemon's failover record).
fn failover_mpbond(lab: &Lab, cfg: &Config, conv: &Converter, o: Outage) -> Result<(f64, String), String> {
    with_converter(lab, cfg, conv, |d| {
        let c0 = counters(d)?;
        let (n, timeout) = (cfg.failover_bytes, cfg.failover_timeout);
        let get = |origin, tx| measure::timed_get(destination(), n, false, timeout, origin, tx);
        let (gap, ()) = scenarios::failover_run_with(lab, cfg, o, get, || ())
            .map_err(|e| format!("{e}; {}; converter: {}", diagnose(d), conv.log_tail()))?;
        let st = d.status()?;
        through_converter(&c0, &st.counters, 1, n, 0)?;
        let records = scenarios::failover_records(&st.recent_failovers);
        Ok((
            gap,
            if records.is_empty() {
                "none".into()
            } else {
                records.join(" + ")
            },
        ))
    })?
}

/// The failover rows: via the converter, mpbond vs. the kernel's MPTCP client, at each RTT.
fn failover(lab: &Lab, cfg: &Config, conv: &Converter, log: Log) -> Vec<Row> {
    let key = ClientKey::load(&conv.key).map_err(|e| e.to_string());
    let rates = set_rates(lab, Some(cfg.failover_rate_mbit));
    let mut rows = Vec::new();
    for &rtt in &cfg.rtts_ms {
        let set = rates
            .clone()
            .and_then(|()| set_delays(lab, Duration::from_millis(rtt)));
        for o in [Outage::LinkDown, Outage::Blackhole] {
            let (mut k, mut m, mut records, mut how) =
                (Samples::new(), Samples::new(), Vec::new(), Vec::new());
            for run in 0..cfg.runs {
                log(&format!(
                    "P8 {o:?} at {rtt} ms RTT, run {}/{}: kernel MPTCP client via the converter",
                    run + 1,
                    cfg.runs
                ));
                let tfo0 = conv.tcp_ext(lab, "TCPFastOpenPassive");
                let r = set
                    .clone()
                    .and_then(|()| key.as_ref().map_err(Clone::clone))
                    .and_then(|key| failover_kernel(lab, cfg, key, o));
                if let Err(e) = &r {
                    log(&format!("  kernel run failed: {e}"));
                }
                let tfo = match (tfo0, conv.tcp_ext(lab, "TCPFastOpenPassive")) {
                    (Ok(a), Ok(b)) if b > a => "SYN data accepted",
                    (Ok(_), Ok(_)) => "SYN data not accepted",
                    _ => "TFO count unknown",
                };
                k.push(r.map(|(gap, sent)| {
                    how.push(match sent {
                        Sent::InSyn => format!("in the SYN ({tfo})"),
                        Sent::AfterHandshake => "after the handshake".to_owned(),
                        Sent::Nothing => "-".to_owned(),
                    });
                    gap
                }));
                log(&format!(
                    "P8 {o:?} at {rtt} ms RTT, run {}/{}: mpbond via the converter",
                    run + 1,
                    cfg.runs
                ));
                let r = set.clone().and_then(|()| failover_mpbond(lab, cfg, conv, o));
                if let Err(e) = &r {
                    log(&format!("  mpbond run failed: {e}"));
                }
                m.push(r.map(|(gap, rec)| {
                    records.push(rec);
                    gap
                }));
            }
            let what = match o {
                Outage::LinkDown => "Wi-Fi link down",
                Outage::Blackhole => "Wi-Fi blackholed, link up",
            };
            let mut mpbond = Cell::from_results(m);
            set_note(
                &mut mpbond,
                format!(
                    "daemon's failover records per run (cause, first resume ms): [{}]",
                    records.join("; ")
                ),
            );
            let mut kernel = Cell::from_results(k);
            set_note(
                &mut kernel,
                format!("Convert request sent per run: [{}]", how.join("; ")),
            );
            rows.push(row(
                "P8",
                format!(
                    "converter: failover gap, {what}, {rtt} ms RTT ({} MB download from the plain server at {} \
                     Mbit/s per path); mpbond = via the converter, baseline = the kernel's MPTCP client (backup \
                     endpoint on wwan0) via the same converter",
                    cfg.failover_bytes / 1_000_000,
                    cfg.failover_rate_mbit
                ),
                "ms",
                mpbond,
                kernel,
                Goal::RatioAtMost { max: 0.5 },
            ));
        }
    }
    let _ = set_delays(lab, Duration::ZERO);
    let _ = set_rates(lab, None);
    let _ = flush_endpoints(lab);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tcpext_counter() {
        let text = "TcpExt: SyncookiesSent TCPFastOpenPassive TCPFastOpenActive\nTcpExt: 0 7 3\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(netstat_value(text, "TcpExt:", "TCPFastOpenPassive"), Some(7));
        assert_eq!(netstat_value(text, "TcpExt:", "TCPFastOpenActive"), Some(3));
        assert_eq!(netstat_value(text, "TcpExt:", "Nope"), None);
        assert_eq!(netstat_value("", "TcpExt:", "TCPFastOpenPassive"), None);
    }
}
