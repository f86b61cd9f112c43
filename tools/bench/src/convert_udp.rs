//! P11: UDP through the converter's datagram relay (issue 16). `mpbond server` in the lab's
//! converter namespace; the daemon runs `mpbond up --converter … --converter-key-file …`, so the
//! laptop's UDP to the lab's servers goes through the converter as relay datagrams.
//!
//! - single-flow UDP goodput, host → server, with iperf3 -u (1,200-byte datagrams, so that a relay
//!   datagram fits the 1,500-byte path): the highest receive rate among offered rates of 25 %,
//!   50 %, 75 % and 100 % of the path's rate whose loss stays at or below 1 %; via the converter
//!   vs. the laptop's UDP straight to the server without mpbond, same path;
//! - the longest gap of a 50 pkt/s RTP-like stream (172-byte datagrams) to the lab's UDP echo
//!   server when Wi-Fi goes down or is blackholed for 2.5 s, 1.5 s into a 5 s stream: via the
//!   converter vs. mpbond without a converter (today's re-binding of the session's socket);
//! - the same gap in redundant mode (`--mode redundant`: each datagram on both paths) vs. via the
//!   converter in handover mode; goal ≤ one packet interval (20 ms), no datagram lost.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use netlab::{Lab, Server, client};

use crate::convert::{
    Converter, GOODPUT_RATE_MBIT, GOODPUT_RTT, IPERF_PORT, IperfServer, destination, have_iperf3, set_delays,
    with_converter, with_converter_args,
};
use crate::report::{Cell, Goal, Row};
use crate::scenarios::{
    Config, Log, Outage, Samples, counters, grew, impair, row, set_note, set_rates, with_daemon,
};

/// iperf3 -u datagram size.
const UDP_LEN: usize = 1200;
/// Seconds per iperf3 -u test.
const UDP_SECS: u64 = 3;
/// The round trip of both paths during the gap rows (P3/P4's 20 ms row).
const GAP_RTT: Duration = Duration::from_millis(20);
/// The most loss a goodput test may show to count.
const MAX_LOSS_PERCENT: f64 = 1.0;

/// One iperf3 -u test offering `mbit` Mbit/s from the laptop: (received Mbit/s, loss %).
fn iperf3_udp(lab: &Lab, mbit: u64) -> Result<(f64, f64), String> {
    let ip = destination().ip().to_string();
    let (port, t, b, l) = (
        IPERF_PORT.to_string(),
        UDP_SECS.to_string(),
        format!("{mbit}M"),
        UDP_LEN.to_string(),
    );
    let mut child = lab
        .command(&lab.ns().laptop, "iperf3")
        .args([
            "-c",
            &ip,
            "-p",
            &port,
            "-u",
            "-b",
            &b,
            "-l",
            &l,
            "-t",
            &t,
            "-J",
            "--connect-timeout",
            "5000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn iperf3 -c -u: {e}"))?;
    let reader = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        })
    });
    if !crate::child::wait_exit(&mut child, Duration::from_secs(60)) {
        return Err("iperf3 -u did not finish within 60 s".into());
    }
    let out = reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 -J output: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    // The receiver's view (iperf3 3.12 reports it in end.sum for UDP).
    let sum = &v["end"]["sum"];
    let (bps, lost) = (sum["bits_per_second"].as_f64(), sum["lost_percent"].as_f64());
    match (bps, lost) {
        (Some(b), Some(l)) => Ok((b / 1e6 * (1.0 - l / 100.0), l)),
        _ => Err("iperf3 -J without end.sum bits_per_second / lost_percent".into()),
    }
}

/// The best received rate with loss ≤ 1 % over the offered ladder; the note lists each step.
fn ladder(lab: &Lab, log: Log) -> Result<(f64, String), String> {
    let mut best = None::<f64>;
    let mut steps = Vec::new();
    for pct in [25, 50, 75, 100] {
        let offered = GOODPUT_RATE_MBIT * pct / 100;
        let (got, lost) = iperf3_udp(lab, offered)?;
        log(&format!(
            "  offered {offered} Mbit/s: {got:.1} Mbit/s, {lost:.2} % lost"
        ));
        steps.push(format!("{offered}→{got:.0} ({lost:.1} % lost)"));
        if lost <= MAX_LOSS_PERCENT {
            best = Some(best.map_or(got, |b: f64| b.max(got)));
        } else {
            break;
        }
    }
    let best = best.ok_or_else(|| format!("loss above {MAX_LOSS_PERCENT} % at every rate: {steps:?}"))?;
    Ok((best, steps.join(", ")))
}

/// The P11 goodput row.
fn goodput(lab: &Lab, cfg: &Config, conv: &Converter, log: Log) -> Row {
    let metric = format!(
        "UDP through the converter: single-flow goodput host → server (iperf3 -u -l {UDP_LEN}, loss ≤ 1 %, \
         Wi-Fi {GOODPUT_RATE_MBIT} Mbit/s {} ms RTT); mpbond = via the converter, baseline = direct UDP \
         without mpbond",
        GOODPUT_RTT.as_millis()
    );
    let goal = Goal::RatioAtLeast {
        min: 0.5,
        stretch: None,
    };
    if !have_iperf3() {
        let e = "iperf3 not installed".to_string();
        return row(
            "P11",
            metric,
            "Mbit/s",
            Cell::Failed { error: e.clone() },
            Cell::Failed { error: e },
            goal,
        );
    }
    let server = IperfServer::start(lab);
    let set = set_rates(lab, Some(GOODPUT_RATE_MBIT)).and_then(|()| set_delays(lab, GOODPUT_RTT));
    let (mut m, mut k) = (Samples::new(), Samples::new());
    let (mut mnotes, mut knotes) = (Vec::new(), Vec::new());
    for run in 0..cfg.runs {
        let ready = set
            .clone()
            .and_then(|()| server.as_ref().map(|_| ()).map_err(Clone::clone));
        log(&format!("P11 UDP goodput run {}/{}: direct", run + 1, cfg.runs));
        let r = ready.clone().and_then(|()| ladder(lab, log));
        k.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
        knotes.extend(r.ok().map(|r| r.1));
        log(&format!(
            "P11 UDP goodput run {}/{}: via the converter",
            run + 1,
            cfg.runs
        ));
        let r = ready.and_then(|()| {
            with_converter(lab, cfg, conv, |d| {
                let c0 = counters(d)?;
                let r = ladder(lab, log);
                let c1 = counters(d)?;
                let via = grew(&c0, &c1, "udp_via_converter");
                let fell = grew(&c0, &c1, "relay_fallbacks");
                // A failed step says what the daemon did meanwhile.
                let r = r.map_err(|e| {
                    let seen: Vec<String> = [
                        "relay_fallbacks",
                        "unresponsive_failovers",
                        "suspect_resends",
                        "session_moves",
                        "failovers",
                    ]
                    .iter()
                    .map(|k| format!("{k} +{}", grew(&c0, &c1, k)))
                    .collect();
                    format!("{e} ({})", seen.join(", "))
                })?;
                if via == 0 || fell > 0 {
                    return Err(format!(
                        "not through the converter: udp_via_converter +{via}, relay_fallbacks +{fell}"
                    ));
                }
                Ok(r)
            })
            .and_then(|r| r)
        });
        if let Err(e) = &r {
            log(&format!("  via the converter failed: {e}"));
        }
        m.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
        mnotes.extend(r.ok().map(|r| r.1));
    }
    drop(server);
    let _ = set_delays(lab, Duration::ZERO);
    let _ = set_rates(lab, None);
    let mut mc = Cell::from_results(m);
    set_note(
        &mut mc,
        format!("offered→received Mbit/s per run: {}", mnotes.join("; ")),
    );
    let mut kc = Cell::from_results(k);
    set_note(
        &mut kc,
        format!("offered→received Mbit/s per run: {}", knotes.join("; ")),
    );
    row("P11", metric, "Mbit/s", mc, kc, goal)
}

/// One stream run with `o` 1.5 s in (none: the same stream without an outage, the path's and
/// the machine's own jitter): the longest gap of the echoes (ms) and a note.
fn gap_run(lab: &Lab, o: Option<Outage>) -> Result<(f64, String), String> {
    let dst = Server::UdpEcho.addr(false);
    let laptop = lab.ns().laptop.clone();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| {
            lab.run_in(&laptop, || {
                client::udp_stream(dst, 172, Duration::from_millis(20), Duration::from_secs(5))
            })
        });
        std::thread::sleep(Duration::from_millis(1500));
        let on = o.map_or(Ok(()), |o| impair(lab, o, true));
        std::thread::sleep(Duration::from_millis(2500));
        let off = o.map_or(Ok(()), |o| impair(lab, o, false));
        let r = h.join().map_err(|_| "the stream panicked".to_string())?;
        on.and(off)?;
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    })?;
    // Wi-Fi back before the next run.
    std::thread::sleep(Duration::from_millis(1500));
    Ok((
        r.longest_gap.as_secs_f64() * 1e3,
        format!(
            "{}/{} echoed, {} lost, sender's longest gap {:.1} ms (latest departure {:.2} ms late{}), \
             round trips {}",
            r.echoed,
            r.sent,
            r.lost,
            r.longest_send_gap.as_secs_f64() * 1e3,
            r.latest_departure.as_secs_f64() * 1e3,
            if r.realtime { ", real-time sender" } else { "" },
            match (r.rtt_min, r.rtt_max) {
                (Some(a), Some(b)) => format!("{:.1}–{:.1} ms", a.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3),
                _ => "none".into(),
            }
        ),
    ))
}

/// The P11 gap rows.
fn gaps(lab: &Lab, cfg: &Config, conv: &Converter, log: Log) -> Vec<Row> {
    let mut rows = Vec::new();
    // P3/P4's first row's round trip, so that the TCP failover gap there is the one to compare.
    if let Err(e) = set_delays(lab, GAP_RTT) {
        log(&format!("P11 gaps: setting {GAP_RTT:?} RTT failed: {e}"));
    }
    // The redundant stream without an outage: the gap the path's own jitter opens.
    let (mut calm, mut calm_n) = (Samples::new(), Vec::new());
    for run in 0..cfg.runs {
        log(&format!(
            "P11 no outage run {}/{}: mpbond via the converter, redundant mode",
            run + 1,
            cfg.runs
        ));
        let r = with_converter_args(lab, cfg, conv, &["--mode", "redundant"], |_| gap_run(lab, None))
            .and_then(|r| r);
        calm.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
        calm_n.extend(r.ok().map(|r| r.1));
    }
    let calm = Cell::from_results(calm);
    for o in [Outage::LinkDown, Outage::Blackhole] {
        let (mut m, mut k, mut red) = (Samples::new(), Samples::new(), Samples::new());
        let (mut mn, mut kn, mut rn) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..cfg.runs {
            log(&format!(
                "P11 {o:?} run {}/{}: mpbond direct (re-binding)",
                run + 1,
                cfg.runs
            ));
            let r = with_daemon(lab, cfg, |_| gap_run(lab, Some(o))).and_then(|r| r);
            k.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
            kn.extend(r.ok().map(|r| r.1));
            log(&format!(
                "P11 {o:?} run {}/{}: mpbond via the converter",
                run + 1,
                cfg.runs
            ));
            let r = with_converter(lab, cfg, conv, |d| {
                let c0 = counters(d)?;
                let r = gap_run(lab, Some(o))?;
                let c1 = counters(d)?;
                if grew(&c0, &c1, "udp_via_converter") == 0 {
                    return Err("the stream did not go through the converter".into());
                }
                Ok(r)
            })
            .and_then(|r| r);
            m.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
            mn.extend(r.ok().map(|r| r.1));
            log(&format!(
                "P11 {o:?} run {}/{}: mpbond via the converter, redundant mode",
                run + 1,
                cfg.runs
            ));
            let r = with_converter_args(lab, cfg, conv, &["--mode", "redundant"], |d| {
                let c0 = counters(d)?;
                let r = gap_run(lab, Some(o))?;
                let c1 = counters(d)?;
                let copies = grew(&c0, &c1, "redundant_copies");
                if grew(&c0, &c1, "udp_redundant") == 0 || copies == 0 {
                    return Err("the stream was not sent redundantly".into());
                }
                Ok((r.0, format!("{}, {copies} copies", r.1)))
            })
            .and_then(|r| r);
            red.push(r.as_ref().map(|r| r.0).map_err(Clone::clone));
            rn.extend(r.ok().map(|r| r.1));
        }
        let mut rc = Cell::from_results(red);
        set_note(&mut rc, rn.join(", "));
        let mut mc = Cell::from_results(m);
        set_note(&mut mc, mn.join(", "));
        let mut kc = Cell::from_results(k);
        set_note(&mut kc, kn.join(", "));
        rows.push(row(
            "P11",
            format!(
                "UDP through the converter: longest gap of a 50 pkt/s stream (echoed), Wi-Fi {o:?} for 2.5 s, \
                 {} ms RTT; goal: at most P3/P4's TCP failover gap at that RTT; mpbond = via the converter \
                 (one source address at the server), baseline = mpbond direct (the session's socket re-bound \
                 to cellular: a new source address)",
                GAP_RTT.as_millis()
            ),
            "ms",
            mc,
            kc,
            Goal::FlatVs {
                base: crate::scenarios::failover_metric(cfg, o, GAP_RTT.as_millis() as u64),
                factor: 1.0,
            },
        ));
        let mut cc = calm.clone();
        set_note(&mut cc, calm_n.join(", "));
        rows.push(row(
            "P11",
            format!(
                "UDP through the converter: longest gap of a 50 pkt/s stream (echoed), Wi-Fi {o:?} for 2.5 s, \
                 {} ms RTT; mpbond = redundant mode (each datagram on both paths), baseline = the same \
                 stream without an outage (the path's own jitter); goal: the outage adds less than half \
                 a packet interval (a datagram missed adds a whole one)",
                GAP_RTT.as_millis()
            ),
            "ms",
            rc,
            cc,
            Goal::AddedAtMost { max: 10.0 },
        ));
    }
    let _ = set_delays(lab, Duration::ZERO);
    rows
}

/// Which P11 rows to run.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub goodput: bool,
    pub gaps: bool,
}

impl Parts {
    pub fn any(&self) -> bool {
        self.goodput || self.gaps
    }
}

/// The P11 rows of `parts` (the converter namespace is added if not there yet).
pub fn rows(lab: &mut Lab, cfg: &Config, parts: Parts, log: Log) -> Vec<Row> {
    let conv = crate::convert::start_converter(lab, cfg);
    let lab: &Lab = lab;
    let conv = match conv {
        Ok(c) => c,
        Err(e) => {
            return vec![row(
                "P11",
                "the UDP converter rows",
                "",
                Cell::Failed { error: e.clone() },
                Cell::Failed { error: e },
                Goal::None,
            )];
        }
    };
    let mut rows = Vec::new();
    if parts.goodput {
        rows.push(goodput(lab, cfg, &conv, log));
    }
    if parts.gaps {
        rows.extend(gaps(lab, cfg, &conv, log));
    }
    rows
}
