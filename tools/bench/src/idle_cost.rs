//! P12: what handover mode costs on cellular while nothing is sent (issue 16's budget row): 100
//! MPTCP flows from the laptop to the kernel MPTCP server, each after one request and answer
//! (100 bytes) idle with its backup subflow joined on cellular (the default `join =
//! "immediate"`), then the bytes through the laptop's
//! wwan0 (rx + tx, its kernel counters) over a bounded window (60 s), extrapolated to an hour
//! (× 60; said so in the row). The joins themselves, paid once, are reported in the note.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netlab::{Lab, Server, client};

use crate::report::{Cell, Goal, Row};
use crate::scenarios::{Config, Log, link_stats, opts, row, set_note, with_daemon};

/// Idle flows.
const FLOWS: usize = 100;
/// The measured window.
const WINDOW: Duration = Duration::from_secs(60);

/// wwan0's rx + tx bytes in the laptop namespace.
fn cell_bytes(lab: &Lab) -> Result<u64, String> {
    let s = link_stats(lab, &lab.ns().laptop, "wwan0")?;
    match (s["rx"]["bytes"].as_u64(), s["tx"]["bytes"].as_u64()) {
        (Some(r), Some(t)) => Ok(r + t),
        _ => Err("no byte counters for wwan0".into()),
    }
}

/// One run: (MB per idle hour, extrapolated; the setup's bytes).
fn idle_run(lab: &Lab, cfg: &Config) -> Result<(f64, u64), String> {
    let addr = SocketAddr::new(Server::Mptcp.ip(false), 80);
    with_daemon(lab, cfg, |_| {
        let b0 = cell_bytes(lab)?;
        let o = opts(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(60);
        let streams: Vec<TcpStream> = lab
            .run_in(&lab.ns().laptop, || {
                let mut v = Vec::with_capacity(FLOWS);
                for i in 0..FLOWS {
                    if Instant::now() > deadline {
                        return Err(format!("only {i} of {FLOWS} flows connected within 60 s"));
                    }
                    let mut c = client::connect(addr, &o).map_err(|e| format!("flow {i}: {e}"))?;
                    // One exchange first (a real flow's request and answer: it also confirms
                    // MP_CAPABLE, after which the backup subflow may join), then idle.
                    c.write_all(b"GET /bytes/100 HTTP/1.1\r\nHost: bench\r\n\r\n")
                        .map_err(|e| format!("flow {i}: {e}"))?;
                    let mut got = 0;
                    let mut buf = [0u8; 1024];
                    while got < 100 {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return Err(format!("flow {i}: no answer")),
                            Ok(n) => got += n,
                        }
                    }
                    v.push(c);
                }
                Ok(v)
            })
            .map_err(|e| e.to_string())??;
        // The backup joins (one cellular round trip each) are done well within 3 s.
        std::thread::sleep(Duration::from_secs(3));
        let b1 = cell_bytes(lab)?;
        std::thread::sleep(WINDOW);
        let b2 = cell_bytes(lab)?;
        drop(streams);
        let per_hour = (b2 - b1) as f64 * (3600.0 / WINDOW.as_secs_f64()) / 1e6;
        Ok((per_hour, b1 - b0))
    })?
}

/// The P12 row.
pub fn rows(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    for run in 0..cfg.runs {
        log(&format!("P12 idle cellular cost run {}/{}", run + 1, cfg.runs));
        let r = idle_run(lab, cfg);
        if let Ok((h, setup)) = &r {
            log(&format!("  {h:.3} MB/h extrapolated, setup {setup} bytes"));
            notes.push(format!("setup (connects and joins) {setup} bytes"));
        }
        samples.push(r.map(|r| r.0));
    }
    let mut c = Cell::from_results(samples);
    set_note(&mut c, notes.join("; "));
    vec![row(
        "P12",
        format!(
            "cellular bytes (wwan0 rx + tx) per idle hour in handover mode, {FLOWS} idle MPTCP flows to the \
             kernel server with their backup subflows on cellular; measured over {} s after the joins and \
             extrapolated × {}",
            WINDOW.as_secs(),
            3600 / WINDOW.as_secs()
        ),
        "MB/h",
        c,
        Cell::None,
        Goal::AtMost {
            max: 1.0,
            below_kernel: false,
        },
    )]
}
