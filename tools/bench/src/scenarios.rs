//! The rows P1–P7: each runs the kernel baseline and mpbond in the same invocation, run by run
//! (kernel, then mpbond with a fresh daemon), so slow drifts of a shared machine hit both sides.

use crate::daemon::Daemon;
use crate::measure::{self, HoldServer};
use crate::procfs;
use crate::report::{Cell, Goal, Row};
use crate::stats::quantile;
use netlab::client::{self, ClientOpts};
use netlab::{Lab, Path, Server};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Config {
    /// Repetitions of every measurement.
    pub runs: usize,
    /// Bytes per single-flow transfer (P1, P7).
    pub bytes: u64,
    /// Bytes of the aggregate transfer (P2).
    pub agg_bytes: u64,
    /// Rate limit of each path for P2, Mbit/s.
    pub agg_rate_mbit: u64,
    /// Bytes of the failover transfer (P3, P4).
    pub failover_bytes: u64,
    /// Rate limit of each path for P3/P4, Mbit/s (keeps the transfer going past the outage).
    pub failover_rate_mbit: u64,
    /// When the impairment starts, after the first body byte.
    pub failover_after: Duration,
    /// Bound on one failover transfer.
    pub failover_timeout: Duration,
    /// Round-trip times for P3/P4, ms.
    pub rtts_ms: Vec<u64>,
    /// Requests per P5 run.
    pub requests: usize,
    /// Most connections per P5 setup-rate run (also bounded to 2 s).
    pub connects: usize,
    /// Length of each P10 run.
    pub churn_secs: Duration,
    /// Flow counts for P6.
    pub flows: Vec<usize>,
    /// Messages per P6 CPU measurement.
    pub messages: usize,
    /// The mpbond binary, or why there is none.
    pub mpbond: Result<PathBuf, String>,
    /// Where daemons keep their run dirs.
    pub run_dir: PathBuf,
    /// `-v` flags given to every daemon (1 info, 2 debug, 3 trace).
    pub daemon_verbose: u8,
    /// Every daemon's log, appended; `None`: each replaces `run_dir/daemon.log`.
    pub daemon_log: Option<PathBuf>,
    /// This program (P6 runs its server as a child: `--hold-server`).
    pub exe: PathBuf,
}

/// Progress lines go here.
pub type Log<'a> = &'a mut dyn FnMut(&str);

fn tcp_server() -> SocketAddr {
    Server::Tcp.addr(false)
}

pub(crate) fn opts(timeout: Duration) -> ClientOpts {
    ClientOpts {
        timeout,
        ..ClientOpts::default()
    }
}

fn self_cpu() -> f64 {
    procfs::process_cpu_secs("self").unwrap_or(f64::NAN)
}

/// Runs `f` with a freshly started daemon; `Err` when it cannot start.
pub(crate) fn with_daemon<T>(lab: &Lab, cfg: &Config, f: impl FnOnce(&Daemon) -> T) -> Result<T, String> {
    with_daemon_args(lab, cfg, &[], f)
}

/// [`with_daemon`] with extra `mpbond up` arguments.
pub(crate) fn with_daemon_args<T>(
    lab: &Lab,
    cfg: &Config,
    extra: &[&str],
    f: impl FnOnce(&Daemon) -> T,
) -> Result<T, String> {
    let bin = cfg.mpbond.as_ref().map_err(Clone::clone)?;
    let verbose = (cfg.daemon_verbose > 0).then(|| format!("-{}", "v".repeat(cfg.daemon_verbose.into())));
    let args: Vec<&str> = verbose
        .as_deref()
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let d = Daemon::start(lab, bin, &cfg.run_dir, cfg.daemon_log.as_deref(), &args)?;
    let out = f(&d);
    d.stop()?;
    Ok(out)
}

/// Per-run values of one side: `Err` for a failed run.
pub(crate) type Samples = Vec<Result<f64, String>>;

pub(crate) fn row(
    id: &str,
    metric: impl Into<String>,
    unit: &str,
    mpbond: Cell,
    kernel: Cell,
    goal: Goal,
) -> Row {
    Row {
        id: id.into(),
        metric: metric.into(),
        unit: unit.into(),
        mpbond,
        kernel,
        goal,
    }
}

/// One goodput run: download then upload; returns (down Mbit/s, up Mbit/s, CPU s per GB, the
/// daemon's CPU s per GB). With a daemon, its counters must show the bytes went through it.
fn transfer_pair(bytes: u64, lab: &Lab, daemon: Option<&Daemon>) -> Result<(f64, f64, f64, f64), String> {
    let other = |d: Option<&Daemon>| {
        d.map_or(0.0, |d| {
            procfs::process_cpu_secs(&d.pid().to_string()).unwrap_or(f64::NAN)
        })
    };
    let counted = |d: &Daemon| -> Result<(u64, u64), String> {
        let st = d.status()?;
        let c = |k: &str| st.counters.get(k).copied().unwrap_or(0);
        Ok((c("tcp_bytes_down"), c("tcp_bytes_up")))
    };
    let before = daemon.map(counted).transpose()?;
    let (c0, d0) = (self_cpu(), other(daemon));
    let o = opts(Duration::from_secs(120));
    let (down, up) = lab
        .run_in(&lab.ns().laptop, || {
            let down = client::http_get(tcp_server(), bytes, &o).map_err(|e| format!("download: {e}"))?;
            let up = client::http_post(tcp_server(), bytes, &o).map_err(|e| format!("upload: {e}"))?;
            Ok::<_, String>((down, up))
        })
        .map_err(|e| e.to_string())??;
    let (c1, d1) = (self_cpu(), other(daemon));
    if let (Some(d), Some((bd, bu))) = (daemon, before) {
        let (ad, au) = counted(d)?;
        if ad - bd < bytes || au - bu < bytes {
            return Err(format!(
                "the transfers did not go through mpbond (its counters grew by {} down, {} up)",
                ad - bd,
                au - bu
            ));
        }
    }
    let gb = 2.0 * bytes as f64 / 1e9;
    Ok((
        down.mbit_per_s(),
        up.mbit_per_s(),
        (c1 - c0 + d1 - d0) / gb,
        (d1 - d0) / gb,
    ))
}

/// P1 (single-flow goodput both directions) and P7 (CPU per GB), from the same transfers.
pub fn goodput(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let (mut kd, mut ku, mut kc) = (Samples::new(), Samples::new(), Samples::new());
    let (mut md, mut mu, mut mc, mut mdc) = (Samples::new(), Samples::new(), Samples::new(), Samples::new());
    for run in 0..cfg.runs {
        log(&format!("P1/P7 run {}/{}: kernel TCP", run + 1, cfg.runs));
        match transfer_pair(cfg.bytes, lab, None) {
            Ok((d, u, c, _)) => {
                kd.push(Ok(d));
                ku.push(Ok(u));
                kc.push(Ok(c));
            }
            Err(e) => {
                for v in [&mut kd, &mut ku, &mut kc] {
                    v.push(Err(e.clone()));
                }
            }
        }
        log(&format!("P1/P7 run {}/{}: through mpbond", run + 1, cfg.runs));
        let r = with_daemon(lab, cfg, |d| transfer_pair(cfg.bytes, lab, Some(d))).and_then(|r| r);
        match r {
            Ok((d, u, c, dc)) => {
                md.push(Ok(d));
                mu.push(Ok(u));
                mc.push(Ok(c));
                mdc.push(Ok(dc));
            }
            Err(e) => {
                for v in [&mut md, &mut mu, &mut mc, &mut mdc] {
                    v.push(Err(e.clone()));
                }
            }
        }
    }
    let mb = cfg.bytes / 1_000_000;
    let p1 = Goal::RatioAtLeast {
        min: 0.5,
        stretch: Some(0.8),
    };
    vec![
        row(
            "P1",
            format!("single-flow goodput server → host ({mb} MB download, Wi-Fi, IPv4)"),
            "Mbit/s",
            Cell::from_results(md),
            Cell::from_results(kd),
            p1.clone(),
        ),
        row(
            "P1",
            format!("single-flow goodput host → server ({mb} MB upload, Wi-Fi, IPv4)"),
            "Mbit/s",
            Cell::from_results(mu),
            Cell::from_results(ku),
            p1,
        ),
        row(
            "P7",
            "CPU seconds per GB moved (P1 transfers, both directions)",
            "s/GB",
            Cell::from_results(mc),
            Cell::from_results(kc),
            Goal::RatioAtMost { max: 3.0 },
        ),
        row(
            "P7",
            "CPU seconds per GB: the mpbond daemon's share of the above",
            "s/GB",
            Cell::from_results(mdc),
            Cell::None,
            Goal::None,
        ),
    ]
}

/// Seconds per iperf3 run of P1.
fn iperf_secs(cfg: &Config) -> u64 {
    if cfg.bytes <= 20_000_000 { 3 } else { 8 }
}

/// P1 measured with iperf3 (one flow, fixed time), with the veths' offloads as Linux sets them
/// (the headline) and with tx checksum offload off, the kernel and mpbond alternating in each
/// run; also the daemon's CPU seconds per GB over these transfers and iperf3's own CPU use in
/// the kernel runs (well under 100 %: the baseline is limited by the path, not by the tool).
pub fn goodput_iperf(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let server = match crate::iperf::Server::start(lab) {
        Ok(s) => s,
        Err(e) => {
            log(&format!("P1 (iperf3) skipped: {e}"));
            return Vec::new();
        }
    };
    let secs = iperf_secs(cfg);
    let settings = [
        (true, "veth offloads on (Linux default)"),
        (false, "tx checksum offload off"),
    ];
    let mut rows = Vec::new();
    for (on, label) in settings {
        if let Err(e) = lab.set_tx_checksum_offload(on) {
            log(&format!("P1 (iperf3, {label}) skipped: {e}"));
            continue;
        }
        let (mut kd, mut ku, mut md, mut mu, mut mc) = (
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
        );
        let mut tool_cpu = Samples::new();
        for run in 0..cfg.runs {
            log(&format!(
                "P1 iperf3 run {}/{} ({label}): kernel TCP",
                run + 1,
                cfg.runs
            ));
            for (download, v) in [(true, &mut kd), (false, &mut ku)] {
                let r = crate::iperf::run(lab, secs, download);
                if let Ok(r) = &r {
                    tool_cpu.push(Ok(r.cpu.0.max(r.cpu.1)));
                }
                v.push(r.map(|r| r.mbit_per_s));
            }
            log(&format!(
                "P1 iperf3 run {}/{} ({label}): through mpbond",
                run + 1,
                cfg.runs
            ));
            let r = with_daemon(lab, cfg, |d| {
                let cpu = || procfs::process_cpu_secs(&d.pid().to_string()).unwrap_or(f64::NAN);
                let c0 = cpu();
                let down = crate::iperf::run(lab, secs, true)?;
                let up = crate::iperf::run(lab, secs, false)?;
                let gb = (down.bytes + up.bytes) as f64 / 1e9;
                Ok::<_, String>((down.mbit_per_s, up.mbit_per_s, (cpu() - c0) / gb))
            })
            .and_then(|r| r);
            match r {
                Ok((d, u, c)) => {
                    md.push(Ok(d));
                    mu.push(Ok(u));
                    mc.push(Ok(c));
                }
                Err(e) => {
                    for v in [&mut md, &mut mu, &mut mc] {
                        v.push(Err(e.clone()));
                    }
                }
            }
        }
        let p1 = Goal::RatioAtLeast {
            min: if on { 0.5 } else { 0.8 },
            stretch: Some(0.8),
        };
        rows.push(row(
            "P1",
            format!("iperf3 download, one flow, {secs} s, {label}"),
            "Mbit/s",
            Cell::from_results(md),
            Cell::from_results(kd),
            p1.clone(),
        ));
        rows.push(row(
            "P1",
            format!("iperf3 upload, one flow, {secs} s, {label}"),
            "Mbit/s",
            Cell::from_results(mu),
            Cell::from_results(ku),
            p1,
        ));
        rows.push(row(
            "P7",
            format!("the daemon's CPU seconds per GB, iperf3 P1 transfers, {label}"),
            "s/GB",
            Cell::from_results(mc),
            Cell::None,
            Goal::None,
        ));
        rows.push(row(
            "P1",
            format!("iperf3's own CPU in the kernel runs (busier end), {label}"),
            "% of a core",
            Cell::None,
            Cell::from_results(tool_cpu),
            Goal::None,
        ));
    }
    // The rest of the bench expects the lab as it was built.
    if let Err(e) = lab.set_tx_checksum_offload(false) {
        log(&format!("cannot turn tx checksum offload back off: {e}"));
    }
    drop(server);
    rows
}

/// The laptop's kernel MPTCP endpoints go away: an mpbond run must not inherit the kernel
/// baseline's setup (the daemon opens its own subflows; the host's socket is plain TCP).
pub(crate) fn flush_endpoints(lab: &Lab) -> Result<(), String> {
    lab.exec(&lab.ns().laptop, &["ip", "mptcp", "endpoint", "flush"])
        .map(|_| ())
        .map_err(|e| format!("flush the MPTCP endpoints: {e}"))
}

pub(crate) fn endpoint(lab: &Lab, backup: bool) -> Result<(), String> {
    flush_endpoints(lab)?;
    lab.add_kernel_endpoint(Path::Cell, backup)
        .map_err(|e| e.to_string())
}

pub(crate) fn set_rates(lab: &Lab, mbit: Option<u64>) -> Result<(), String> {
    for p in Path::ALL {
        lab.set_rate(p, mbit.map(|m| m * 1_000_000))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `ip -s -j link` statistics (`stats64`) of interface `dev` in namespace `ns`.
pub(crate) fn link_stats(lab: &Lab, ns: &str, dev: &str) -> Result<serde_json::Value, String> {
    let out = lab
        .exec(ns, &["ip", "-s", "-j", "link", "show", "dev", dev])
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ip -s -j link: {e}"))?;
    Ok(v[0]["stats64"].clone())
}

/// Bytes received by the laptop's wlan0 and wwan0.
fn laptop_rx_bytes(lab: &Lab) -> Result<[u64; 2], String> {
    let rx = |p: Path| -> Result<u64, String> {
        link_stats(lab, &lab.ns().laptop, p.laptop_iface())?["rx"]["bytes"]
            .as_u64()
            .ok_or_else(|| format!("no byte counters for {}", p.laptop_iface()))
    };
    Ok([rx(Path::Wifi)?, rx(Path::Cell)?])
}

/// `GET /bytes/N` from the MPTCP server in the laptop namespace (an MPTCP socket when `mptcp`,
/// else plain TCP); returns (Mbit/s, the MPTCP info of the socket, the share of the bytes the
/// laptop received on wwan0).
fn split_download(
    lab: &Lab,
    bytes: u64,
    mptcp: bool,
) -> Result<(f64, Option<netlab::MptcpInfo>, f64), String> {
    let r0 = laptop_rx_bytes(lab)?;
    let o = ClientOpts {
        mptcp,
        ..opts(Duration::from_secs(120))
    };
    let t = lab
        .run_in(&lab.ns().laptop, || {
            client::http_get(Server::Mptcp.addr(false), bytes, &o)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let r1 = laptop_rx_bytes(lab)?;
    let (wifi, cell) = (r1[0].saturating_sub(r0[0]), r1[1].saturating_sub(r0[1]));
    let share = cell as f64 / (wifi + cell).max(1) as f64;
    Ok((t.mbit_per_s(), t.mptcp, share))
}

/// The daemon's counters.
pub(crate) fn counters(d: &Daemon) -> Result<BTreeMap<String, u64>, String> {
    Ok(d.status()?.counters)
}

/// How much counter `k` grew from `a` to `b`.
pub(crate) fn grew(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str) -> u64 {
    let v = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0);
    v(b).saturating_sub(v(a))
}

/// Checks that a download of `bytes` went through the daemon over MPTCP (its counters grew by
/// the bytes and by one MPTCP connection, and no fallback happened).
fn relayed_over_mptcp(
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
    bytes: u64,
) -> Result<(), String> {
    let down = grew(a, b, "tcp_bytes_down");
    if down < bytes {
        return Err(format!(
            "the download did not go through mpbond (tcp_bytes_down grew by {down})"
        ));
    }
    if grew(a, b, "mptcp_connected") == 0 {
        let fallbacks: Vec<String> = b
            .keys()
            .filter(|k| k.starts_with("fallback_") && grew(a, b, k) > 0)
            .cloned()
            .collect();
        return Err(format!(
            "mpbond relayed the download without MPTCP (fallbacks: {})",
            fallbacks.join(", ")
        ));
    }
    Ok(())
}

/// What the daemon says after a failed mpbond run: the counters that tell the story, the
/// failover records and the last log lines.
pub(crate) fn diagnose(d: &Daemon) -> String {
    let keys = [
        "tcp_flows",
        "tcp_bytes_down",
        "mptcp_connected",
        "subflows_up",
        "subflows_down",
        "failovers",
        "unresponsive_failovers",
    ];
    let st = match d.status() {
        Ok(st) => {
            let c: Vec<String> = keys
                .iter()
                .map(|k| format!("{k} {}", st.counters.get(*k).copied().unwrap_or(0)))
                .collect();
            format!(
                "{}; recent_failovers {}",
                c.join(", "),
                serde_json::to_string(&st.recent_failovers).unwrap_or_default()
            )
        }
        Err(e) => e,
    };
    format!("daemon: {st}; log: {}", d.log_tail())
}

/// One mpbond P2 run: a fresh `mpbond up --mode aggregate`, the laptop's plain TCP download from
/// the MPTCP server; (Mbit/s, subflows the daemon brought up, cellular share of the bytes).
fn aggregate_mpbond(lab: &Lab, cfg: &Config) -> Result<(f64, u64, f64), String> {
    flush_endpoints(lab)?;
    with_daemon_args(lab, cfg, &["--mode", "aggregate"], |d| {
        let c0 = counters(d)?;
        let (mbit, _, share) =
            split_download(lab, cfg.agg_bytes, false).map_err(|e| format!("{e}; {}", diagnose(d)))?;
        let c1 = counters(d)?;
        relayed_over_mptcp(&c0, &c1, cfg.agg_bytes)?;
        Ok((mbit, grew(&c0, &c1, "subflows_up"), share))
    })?
}

fn shares(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|x| format!("{:.0} %", x * 100.0)).collect();
    format!("[{}]", s.join(", "))
}

pub(crate) fn set_note(cell: &mut Cell, text: String) {
    if let Cell::Measured { note, .. } = cell {
        *note = if note.is_empty() {
            text
        } else {
            format!("{text}; {note}")
        };
    }
}

/// P2: aggregate goodput over both paths. Kernel: MPTCP client with a second (subflow) endpoint.
/// mpbond: `--mode aggregate`, the laptop's plain TCP client. Same server, same rate limits.
pub fn aggregate(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let (mut k, mut m) = (Samples::new(), Samples::new());
    let (mut k_subflows, mut k_share) = (Vec::new(), Vec::new());
    let (mut m_subflows, mut m_share) = (Vec::new(), Vec::new());
    let rates = set_rates(lab, Some(cfg.agg_rate_mbit));
    for run in 0..cfg.runs {
        log(&format!(
            "P2 run {}/{}: kernel MPTCP, two endpoints",
            run + 1,
            cfg.runs
        ));
        let r = rates
            .clone()
            .and_then(|()| endpoint(lab, false))
            .and_then(|()| split_download(lab, cfg.agg_bytes, true));
        k.push(r.map(|(mbit, info, share)| {
            k_subflows.push(info.map_or(0, |i| i.extra_subflows));
            k_share.push(share);
            mbit
        }));
        log(&format!(
            "P2 run {}/{}: through mpbond --mode aggregate",
            run + 1,
            cfg.runs
        ));
        let r = rates.clone().and_then(|()| aggregate_mpbond(lab, cfg));
        m.push(r.map(|(mbit, subflows, share)| {
            m_subflows.push(subflows);
            m_share.push(share);
            mbit
        }));
    }
    let _ = set_rates(lab, None);
    let _ = flush_endpoints(lab);
    let mut kernel = Cell::from_results(k);
    set_note(
        &mut kernel,
        format!(
            "extra subflows per run {k_subflows:?}; share on wwan0 {}",
            shares(&k_share)
        ),
    );
    let mut mpbond = Cell::from_results(m);
    set_note(
        &mut mpbond,
        format!(
            "subflows per run {m_subflows:?}; share on wwan0 {}",
            shares(&m_share)
        ),
    );
    vec![row(
        "P2",
        format!(
            "aggregate goodput, both paths ({} MB download, each path limited to {} Mbit/s)",
            cfg.agg_bytes / 1_000_000,
            cfg.agg_rate_mbit
        ),
        "Mbit/s",
        mpbond,
        kernel,
        Goal::RatioAtLeast {
            min: 1.0,
            stretch: None,
        },
    )]
}

/// Waits (≤ 5 s) until a UDP echo comes back through the Wi-Fi path.
fn wait_wifi(lab: &Lab) -> Result<(), String> {
    let ok = lab
        .run_in(&lab.ns().laptop, || {
            (0..25).any(|_| {
                client::udp_echo(
                    Server::UdpEcho.addr(false),
                    1,
                    1,
                    Duration::from_millis(200),
                    Some("wlan0"),
                )
                .is_ok_and(|r| r.received == 1)
            })
        })
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err("Wi-Fi path not back within 5 s".into())
    }
}

/// How the Wi-Fi path fails in P3/P4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The laptop's wlan0 goes down.
    LinkDown,
    /// The Wi-Fi router drops everything; the link stays up.
    Blackhole,
}

pub(crate) fn impair(lab: &Lab, o: Outage, on: bool) -> Result<(), String> {
    match o {
        Outage::LinkDown => lab.set_link(Path::Wifi, !on),
        Outage::Blackhole => lab.set_blackhole(Path::Wifi, on),
    }
    .map_err(|e| e.to_string())
}

/// One failover run: a rate-limited download from the MPTCP server (an MPTCP socket when
/// `mptcp`, else plain TCP, which mpbond turns into MPTCP); `after` the first byte the Wi-Fi
/// fails; the gap (ms) is the longest time without received bytes from that moment. The Wi-Fi is
/// restored (and checked to answer) before this returns. `before` runs just before the
/// impairment (the gap is measured from after it); its value is returned with the gap.
fn failover_run<T: Default>(
    lab: &Lab,
    cfg: &Config,
    o: Outage,
    mptcp: bool,
    before: impl FnOnce() -> T,
) -> Result<(f64, T), String> {
    let (n, timeout) = (cfg.failover_bytes, cfg.failover_timeout);
    let get = |origin, tx| measure::timed_get(Server::Mptcp.addr(false), n, mptcp, timeout, origin, tx);
    failover_run_with(lab, cfg, o, get, before)
}

/// [`failover_run`] with the download `get(origin, first)` of `cfg.failover_bytes` (run in the
/// laptop namespace; it signals `first` at the first body byte, timestamps from `origin`).
pub(crate) fn failover_run_with<T: Default>(
    lab: &Lab,
    cfg: &Config,
    o: Outage,
    get: impl FnOnce(Instant, std::sync::mpsc::Sender<()>) -> Result<measure::Trace, String> + Send,
    before: impl FnOnce() -> T,
) -> Result<(f64, T), String> {
    let origin = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let laptop = lab.ns().laptop.clone();
    let (n, timeout) = (cfg.failover_bytes, cfg.failover_timeout);
    let (trace, event) = std::thread::scope(|s| {
        let h = s.spawn(|| lab.run_in(&laptop, || get(origin, tx)));
        let mut event = None;
        let mut seen = T::default();
        if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            std::thread::sleep(cfg.failover_after);
            seen = before();
            event = Some(origin.elapsed().as_secs_f64());
            if let Err(e) = impair(lab, o, true) {
                let _ = impair(lab, o, false);
                return (h.join(), Err(e));
            }
        }
        (
            h.join(),
            event
                .map(|e| (e, seen))
                .ok_or_else(|| "no first byte within 10 s".to_owned()),
        )
    });
    let restore = impair(lab, o, false).and_then(|()| wait_wifi(lab));
    let trace = trace
        .map_err(|_| "reader thread panicked".to_owned())?
        .map_err(|e| e.to_string())??;
    let (event, seen) = event?;
    restore?;
    let gap = measure::longest_gap(event, &trace.recv, (!trace.complete).then_some(trace.end));
    if !trace.complete {
        return Err(format!(
            "not recovered: {} of {n} bytes after {} s, ≥ {:.0} ms without data",
            trace.bytes,
            timeout.as_secs(),
            gap * 1e3
        ));
    }
    Ok((gap * 1e3, seen))
}

/// One mpbond P3/P4 run: a fresh daemon (handover mode: Wi-Fi primary, cellular backup
/// subflow), the laptop's plain TCP download; (gap ms, the daemon's own failover record).
/// The daemon's failover records as "cause first-resume-ms" (for a row's note).
pub(crate) fn failover_records(recent: &[mpbond::daemon::status::FailoverStatus]) -> Vec<String> {
    recent
        .iter()
        .map(|f| {
            let ms = f
                .first_resume_us
                .map_or_else(|| "-".to_owned(), |us| format!("{:.0}", us as f64 / 1e3));
            format!("{} {ms}", f.cause)
        })
        .collect()
}

fn failover_mpbond(lab: &Lab, cfg: &Config, o: Outage) -> Result<(f64, String), String> {
    flush_endpoints(lab)?;
    with_daemon(lab, cfg, |d| {
        let c0 = counters(d)?;
        // Whether the cellular (backup) subflow was established when the Wi-Fi failed.
        let backup_ready = || {
            d.status().map_or("status failed", |st| {
                if st
                    .subflows
                    .iter()
                    .any(|s| s.interface == "wwan0" && s.state == "Established")
                {
                    "backup up"
                } else {
                    "backup not up"
                }
            })
        };
        let (gap, ready) =
            failover_run(lab, cfg, o, false, backup_ready).map_err(|e| format!("{e}; {}", diagnose(d)))?;
        let st = d.status()?;
        relayed_over_mptcp(&c0, &st.counters, cfg.failover_bytes)?;
        let records = failover_records(&st.recent_failovers);
        let record = if records.is_empty() {
            format!("none recorded, {ready} at the outage")
        } else {
            format!("{}, {ready} at the outage", records.join(" + "))
        };
        Ok((gap, record))
    })?
}

/// The metric of the P3 (link down) or P4 (blackhole) row at `rtt` ms (other rows' goals name it).
pub(crate) fn failover_metric(cfg: &Config, o: Outage, rtt: u64) -> String {
    let what = match o {
        Outage::LinkDown => "Wi-Fi link down",
        Outage::Blackhole => "Wi-Fi blackholed, link up",
    };
    format!(
        "failover gap, {what}, {rtt} ms RTT ({} MB download at {} Mbit/s per path)",
        cfg.failover_bytes / 1_000_000,
        cfg.failover_rate_mbit
    )
}

/// P3 (link down) and P4 (blackhole): failover gap at each RTT. Kernel: MPTCP client with a
/// backup endpoint on the cellular path. mpbond: handover mode, the laptop's plain TCP client.
/// Same server, rate limits, delays and outage timing; kernel and mpbond alternate run by run.
pub fn failover(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let mut rows = Vec::new();
    let rates = set_rates(lab, Some(cfg.failover_rate_mbit));
    let mut results: Vec<(Outage, u64, Samples, Samples, Vec<String>)> = Vec::new();
    for &rtt in &cfg.rtts_ms {
        let delay = Duration::from_millis(rtt);
        let set = rates.clone().and_then(|()| {
            Path::ALL
                .iter()
                .try_for_each(|&p| lab.set_delay(p, delay))
                .map_err(|e| e.to_string())
        });
        for o in [Outage::LinkDown, Outage::Blackhole] {
            let (mut k, mut m, mut records) = (Samples::new(), Samples::new(), Vec::new());
            for run in 0..cfg.runs {
                log(&format!(
                    "{o:?} at {rtt} ms RTT, run {}/{}: kernel MPTCP + backup",
                    run + 1,
                    cfg.runs
                ));
                k.push(
                    set.clone()
                        .and_then(|()| endpoint(lab, true))
                        .and_then(|()| failover_run(lab, cfg, o, true, || ()))
                        .map(|(gap, ())| gap),
                );
                log(&format!(
                    "{o:?} at {rtt} ms RTT, run {}/{}: through mpbond (handover)",
                    run + 1,
                    cfg.runs
                ));
                let r = set.clone().and_then(|()| failover_mpbond(lab, cfg, o));
                if let Err(e) = &r {
                    log(&format!("  mpbond run failed: {e}"));
                }
                m.push(r.map(|(gap, record)| {
                    records.push(record);
                    gap
                }));
            }
            results.push((o, rtt, k, m, records));
        }
    }
    for p in Path::ALL {
        let _ = lab.set_delay(p, Duration::ZERO);
    }
    let _ = set_rates(lab, None);
    let _ = flush_endpoints(lab);
    for (o, rtt, k, m, records) in results {
        let (id, goal) = match o {
            Outage::LinkDown => (
                "P3",
                Goal::AtMost {
                    max: 50.0,
                    below_kernel: true,
                },
            ),
            Outage::Blackhole => ("P4", Goal::RatioAtMost { max: 0.5 }),
        };
        let mut mpbond = Cell::from_results(m);
        set_note(
            &mut mpbond,
            format!(
                "daemon's failover records per run (cause, first resume ms; whether the cellular subflow was established when the Wi-Fi failed): [{}]",
                records.join("; ")
            ),
        );
        rows.push(row(
            id,
            failover_metric(cfg, o, rtt),
            "ms",
            mpbond,
            Cell::from_results(k),
            goal,
        ));
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// The TCP echo server of P5 (inet, beside the UDP echo).
fn echo_addr() -> SocketAddr {
    SocketAddr::new(Server::UdpEcho.ip(false), 7)
}

/// One P5 run: (p50 µs, p99 µs, connections/s).
fn latency_run(lab: &Lab, cfg: &Config) -> Result<(f64, f64, f64), String> {
    lab.run_in(&lab.ns().laptop, || {
        let rtts = measure::request_rtts(echo_addr(), cfg.requests, Duration::from_secs(60))?;
        let rate = measure::connect_rate(echo_addr(), cfg.connects, Duration::from_secs(2))?;
        Ok((quantile(&rtts, 0.5), quantile(&rtts, 0.99), rate))
    })
    .map_err(|e| e.to_string())?
}

/// P5: request/response round trip (p50, p99) and connection setup rate, direct vs mpbond.
pub fn latency(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    // Sequential connections leave TIME_WAIT sockets on the laptop; allow reusing them.
    let _ = lab.exec(
        &lab.ns().laptop,
        &["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"],
    );
    let server = HoldServer::start(&lab.ns().inet, echo_addr(), true);
    let mut k: [Samples; 3] = Default::default();
    let mut m: [Samples; 3] = Default::default();
    let push = |v: &mut [Samples; 3], r: Result<(f64, f64, f64), String>| match r {
        Ok((a, b, c)) => {
            v[0].push(Ok(a));
            v[1].push(Ok(b));
            v[2].push(Ok(c));
        }
        Err(e) => v.iter_mut().for_each(|s| s.push(Err(e.clone()))),
    };
    for run in 0..cfg.runs {
        log(&format!("P5 run {}/{}: direct", run + 1, cfg.runs));
        if let Err(e) = &server {
            push(&mut k, Err(e.clone()));
            push(&mut m, Err(e.clone()));
            continue;
        }
        push(&mut k, latency_run(lab, cfg));
        log(&format!("P5 run {}/{}: through mpbond", run + 1, cfg.runs));
        push(
            &mut m,
            with_daemon(lab, cfg, |_| latency_run(lab, cfg)).and_then(|r| r),
        );
    }
    drop(server);
    let [k50, k99, kr] = k;
    let [m50, m99, mr] = m;
    let what = format!(
        "{} exchanges of 64 bytes on one TCP connection to an echo server, Wi-Fi",
        cfg.requests
    );
    vec![
        row(
            "P5",
            format!("request/response round trip p50 ({what})"),
            "µs",
            Cell::from_results(m50),
            Cell::from_results(k50),
            Goal::AddedAtMost { max: 50.0 },
        ),
        row(
            "P5",
            format!("request/response round trip p99 ({what})"),
            "µs",
            Cell::from_results(m99),
            Cell::from_results(k99),
            Goal::None,
        ),
        row(
            "P5",
            format!(
                "connection setup rate (sequential connect + close, ≤ {} or 2 s)",
                cfg.connects
            ),
            "conn/s",
            Cell::from_results(mr),
            Cell::from_results(kr),
            Goal::RatioAtLeast {
                min: 0.5,
                stretch: None,
            },
        ),
    ]
}

const HOLD_PORT: u16 = 9;

/// P6's daemon configuration: the default `routing.subflow_ports` (61000-64999) allows 4,000
/// concurrent upstream connections; 10,000 flows need a wider range.
const P6_CONFIG: &str = "[routing]\nsubflow_ports = \"41000-64999\"\n";

/// Packets received + sent by interface `dev` of namespace `ns` (`ip -s -j link`).
fn iface_packets(lab: &Lab, ns: &str, dev: &str) -> Result<u64, String> {
    let s = &link_stats(lab, ns, dev)?;
    match (s["rx"]["packets"].as_u64(), s["tx"]["packets"].as_u64()) {
        (Some(r), Some(t)) => Ok(r + t),
        _ => Err(format!("no packet counters for {dev}")),
    }
}

/// Packets the daemon handled: in and out of the TUN and of wlan0, in the laptop namespace.
fn daemon_packets(lab: &Lab) -> Result<u64, String> {
    let ns = &lab.ns().laptop;
    Ok(iface_packets(lab, ns, "mpbond0")? + iface_packets(lab, ns, "wlan0")?)
}

/// One P6 run at `n` flows: (KiB per idle flow, daemon CPU µs per packet).
fn flows_run(lab: &Lab, cfg: &Config, n: usize) -> Result<(f64, f64), String> {
    use std::io::Write;
    let addr = SocketAddr::new(Server::Tcp.ip(false), HOLD_PORT);
    let server = HoldServer::start_process(&cfg.exe, &lab.ns().inet, addr)?;
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| format!("create {}: {e}", cfg.run_dir.display()))?;
    let conf = cfg.run_dir.join("bench-p6.toml");
    std::fs::write(&conf, P6_CONFIG).map_err(|e| format!("write {}: {e}", conf.display()))?;
    let conf = conf.to_string_lossy().into_owned();
    with_daemon_args(lab, cfg, &["--config", &conf], |d| {
        let pid = d.pid();
        std::thread::sleep(Duration::from_millis(300));
        let rss0 = procfs::rss_kib(pid).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(180);
        let o = opts(Duration::from_secs(5));
        let mut streams: Vec<TcpStream> = lab
            .run_in(&lab.ns().laptop, || {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    if Instant::now() > deadline {
                        return Err(format!("only {i} of {n} flows connected within 180 s"));
                    }
                    v.push(client::connect(addr, &o).map_err(|e| format!("flow {i}: {e}"))?);
                }
                Ok(v)
            })
            .map_err(|e| e.to_string())??;
        let until = Instant::now() + Duration::from_secs(10);
        while (server.accepted.load(std::sync::atomic::Ordering::Relaxed) as usize) < n {
            if Instant::now() > until {
                return Err("server did not see every flow within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let rss1 = procfs::rss_kib(pid).map_err(|e| e.to_string())?;
        let per_flow = (rss1 as f64 - rss0 as f64) / n as f64;
        let msg = [0x5au8; 64];
        let b0 = server.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let p0 = daemon_packets(lab)?;
        let c0 = procfs::threads_cpu_secs(pid).map_err(|e| e.to_string())?;
        for i in 0..cfg.messages {
            streams[i % n]
                .write_all(&msg)
                .map_err(|e| format!("write: {e}"))?;
        }
        let want = b0 + (cfg.messages * msg.len()) as u64;
        let until = Instant::now() + Duration::from_secs(60);
        while server.bytes.load(std::sync::atomic::Ordering::Relaxed) < want {
            if Instant::now() > until {
                return Err("messages not all delivered within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the last ACKs pass.
        std::thread::sleep(Duration::from_millis(200));
        let c1 = procfs::threads_cpu_secs(pid).map_err(|e| e.to_string())?;
        let p1 = daemon_packets(lab)?;
        drop(streams);
        Ok((per_flow, (c1 - c0) / (p1 - p0).max(1) as f64 * 1e6))
    })?
}

/// P6: the daemon's memory per idle flow and CPU per relayed message at each flow count.
pub fn flows(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    // The laptop's own ephemeral ports must stay clear of the daemon's wider range (P6_CONFIG)
    // and still leave room for 10,000 client flows.
    let _ = lab.exec(
        &lab.ns().laptop,
        &["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 40999"],
    );
    let mut mem_rows = Vec::new();
    let mut cpu_rows = Vec::new();
    let base = format!(
        "daemon CPU per packet, {} flows",
        cfg.flows.first().copied().unwrap_or(0)
    );
    for &n in &cfg.flows {
        let (mut mem, mut cpu) = (Samples::new(), Samples::new());
        for run in 0..cfg.runs {
            log(&format!("P6 {n} flows, run {}/{}", run + 1, cfg.runs));
            match flows_run(lab, cfg, n) {
                Ok((a, b)) => {
                    mem.push(Ok(a));
                    cpu.push(Ok(b));
                }
                Err(e) => {
                    mem.push(Err(e.clone()));
                    cpu.push(Err(e));
                }
            }
        }
        mem_rows.push(row(
            "P6",
            format!("daemon memory per idle flow (RSS delta / flows), {n} flows (subflow_ports 41000-64999)"),
            "KiB",
            Cell::from_results(mem),
            Cell::None,
            Goal::AtMost {
                max: 16.0,
                below_kernel: false,
            },
        ));
        let metric = format!("daemon CPU per packet, {n} flows");
        let goal = if metric == base {
            Goal::None
        } else {
            Goal::FlatVs {
                base: base.clone(),
                factor: 2.0,
            }
        };
        cpu_rows.push(row("P6", metric, "µs", Cell::from_results(cpu), Cell::None, goal));
    }
    mem_rows.extend(cpu_rows);
    mem_rows
}
