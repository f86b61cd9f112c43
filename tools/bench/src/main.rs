//! `mpbond-bench`: builds a netlab lab, measures mpbond and the Linux kernel side by side (rows
//! P1–P7 of issue 6), writes `BENCHMARKS.md` and the raw JSON. Needs root.
#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "a command-line tool reporting progress"
)]

use anyhow::{Context, bail};
use clap::Parser;
use mpbond_bench::machine::{Machine, now_utc};
use mpbond_bench::report::Report;
use mpbond_bench::scenarios::{self, Config};
use std::path::PathBuf;
use std::time::Duration;

/// Benchmarks mpbond against the Linux kernel in a network-namespace lab.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Repetitions of every measurement (median and min–max over them).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// One short run of everything (CI smoke): 1 run, small transfers, 10 and 1,000 flows.
    #[arg(long)]
    quick: bool,
    /// Rows to run, comma-separated (P1,P2,…; P7 comes with P1; P8 adds the converter host;
    /// P8.goodput, P8.ttfb, P8.failover run one part of P8; P10 needs wrk and nginx-light; P11 is UDP
    /// through the converter (P11.goodput, P11.gaps one part of it); P12 is the idle cellular cost of handover mode).
    #[arg(long, value_delimiter = ',', default_value = "P1,P2,P3,P4,P5,P6")]
    only: Vec<String>,
    /// Bytes per single-flow transfer (P1/P7); default 100 MB (20 MB with --quick).
    #[arg(long)]
    bytes: Option<u64>,
    /// Flow counts for P6; default 10,1000,10000 (10,1000 with --quick).
    #[arg(long, value_delimiter = ',')]
    flows: Option<Vec<usize>>,
    /// Round-trip times for P3/P4 in ms.
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    rtts: Vec<u64>,
    /// The mpbond binary; default: `mpbond` next to this program (`cargo build --release`).
    #[arg(long)]
    mpbond: Option<PathBuf>,
    /// `-v` flags for every mpbond daemon (1 info, 2 debug, 3 trace).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    daemon_verbose: u8,
    /// Append every daemon's log to FILE (kept; default: a temporary file per daemon, removed).
    #[arg(long, value_name = "FILE")]
    daemon_log: Option<PathBuf>,
    /// The markdown table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The raw JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// Internal: serve P6's idle flows in namespace NS at ADDR (a child of the runner).
    #[arg(long, num_args = 2, value_names = ["NS", "ADDR"], hide = true)]
    hold_server: Option<Vec<String>>,
    /// Internal: P9's baseline relay in namespace NS from LISTEN to DEST (a child of the runner).
    #[arg(long, num_args = 3, value_names = ["NS", "LISTEN", "DEST"], hide = true)]
    splice_relay: Option<Vec<String>>,
}

fn find_mpbond(arg: Option<PathBuf>) -> Result<PathBuf, String> {
    let p = match arg {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("locate this program: {e}"))?
            .with_file_name("mpbond"),
    };
    if p.is_file() {
        p.canonicalize().map_err(|e| format!("{}: {e}", p.display()))
    } else {
        Err(format!(
            "no mpbond binary at {} (run `cargo build --release --workspace` first, or pass --mpbond)",
            p.display()
        ))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(v) = &args.hold_server {
        let addr = v[1].parse().context("--hold-server address")?;
        return mpbond_bench::measure::run_hold_child(&v[0], addr).map_err(anyhow::Error::msg);
    }
    if let Some(v) = &args.splice_relay {
        let (l, d) = (
            v[1].parse().context("--splice-relay LISTEN")?,
            v[2].parse().context("--splice-relay DEST")?,
        );
        return mpbond_bench::splice_relay::run_child(&v[0], l, d).map_err(anyhow::Error::msg);
    }
    if !netlab::is_root() {
        bail!("mpbond-bench needs root (network namespaces, nft, tc, the daemon)");
    }
    // P6 holds 10,000 client and 10,000 server sockets in this process.
    let (_, hard) = rlimit::Resource::NOFILE.get().context("read RLIMIT_NOFILE")?;
    let want = hard.max(65_536);
    rlimit::Resource::NOFILE
        .set(want, want)
        .or_else(|_| rlimit::Resource::NOFILE.set(hard, hard))
        .context("raise RLIMIT_NOFILE")?;
    let q = args.quick;
    let runs = if q { 1 } else { args.runs as usize };
    let mb = 1_000_000;
    let cfg = Config {
        runs,
        bytes: args.bytes.unwrap_or(if q { 20 * mb } else { 100 * mb }),
        agg_bytes: if q { 10 * mb } else { 40 * mb },
        agg_rate_mbit: 100,
        failover_bytes: if q { 12 * mb } else { 40 * mb },
        failover_rate_mbit: 50,
        failover_after: Duration::from_millis(if q { 500 } else { 1000 }),
        failover_timeout: Duration::from_secs(if q { 20 } else { 30 }),
        rtts_ms: args.rtts.clone(),
        requests: if q { 300 } else { 2000 },
        connects: if q { 200 } else { 1000 },
        churn_secs: Duration::from_secs(if q { 10 } else { 60 }),
        flows: args
            .flows
            .clone()
            .unwrap_or_else(|| if q { vec![10, 1000] } else { vec![10, 1000, 10_000] }),
        messages: if q { 5000 } else { 20_000 },
        mpbond: find_mpbond(args.mpbond.clone()),
        run_dir: std::env::temp_dir().join(format!("mpbond-bench-{}", std::process::id())),
        exe: std::env::current_exe().context("locate this program")?,
        daemon_verbose: args.daemon_verbose,
        daemon_log: args.daemon_log.clone(),
    };
    if let Err(e) = &cfg.mpbond {
        eprintln!("warning: {e}; the mpbond cells will say so");
    }
    let machine = Machine::current();
    let started = now_utc();
    let command = std::iter::once("mpbond-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("building the lab…");
    let mut lab = netlab::Lab::build(netlab::LabOptions::default()).context("build the lab")?;
    let mut log = |s: &str| eprintln!("[{}] {s}", now_utc());
    let want = |id: &str| args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let mut rows = Vec::new();
    if want("P1") || want("P7") {
        rows.extend(scenarios::goodput_iperf(&lab, &cfg, &mut log));
        rows.extend(scenarios::goodput(&lab, &cfg, &mut log));
    }
    if want("P2") {
        rows.extend(scenarios::aggregate(&lab, &cfg, &mut log));
    }
    if want("P3") || want("P4") {
        rows.extend(scenarios::failover(&lab, &cfg, &mut log));
    }
    if want("P5") {
        rows.extend(scenarios::latency(&lab, &cfg, &mut log));
    }
    if want("P6") {
        rows.extend(scenarios::flows(&lab, &cfg, &mut log));
    }
    let p8 = mpbond_bench::convert::Parts {
        goodput: want("P8") || want("P8.goodput"),
        ttfb: want("P8") || want("P8.ttfb"),
        failover: want("P8") || want("P8.failover"),
    };
    if p8.any() {
        rows.extend(mpbond_bench::convert::converter(&mut lab, &cfg, p8, &mut log));
    }
    if want("P10") {
        rows.extend(mpbond_bench::churn::rows(&lab, &cfg, &mut log));
    }
    if want("P9") {
        rows.extend(mpbond_bench::convert_scale::rows(&mut lab, &cfg, &mut log));
    }
    let p11 = mpbond_bench::convert_udp::Parts {
        goodput: want("P11") || want("P11.goodput"),
        gaps: want("P11") || want("P11.gaps"),
    };
    if p11.any() {
        rows.extend(mpbond_bench::convert_udp::rows(&mut lab, &cfg, p11, &mut log));
    }
    if want("P12") {
        rows.extend(mpbond_bench::idle_cost::rows(&lab, &cfg, &mut log));
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&cfg.run_dir);
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let report = Report {
        machine,
        started,
        command,
        runs,
        notes: mpbond_bench::report::method_notes(),
        rows,
    };
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&args.json, report.to_json()).with_context(|| format!("write {}", args.json.display()))?;
    let md = report.to_markdown();
    std::fs::write(&args.out, &md).with_context(|| format!("write {}", args.out.display()))?;
    println!("{md}");
    eprintln!("wrote {} and {}", args.out.display(), args.json.display());
    Ok(())
}
