//! Row family P10, HTTP through tools nobody here wrote: `wrk` on the laptop against `nginx` in
//! inet (Debian packages `wrk` and `nginx-light`), serving a 1 KB file on the plain server's
//! address, the lab's paths without delay. Each row runs the kernel alone (the baseline) and
//! through `mpbond up`, in one lab:
//!
//! - new connections per second: `Connection: close`, 4 at a time, sustained
//!   ([`Config::churn_secs`]), with every SYN the daemon dropped for a full table and every
//!   socket error `wrk` saw;
//! - keep-alive requests per second: 32 connections.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::child;
use crate::report::{Cell, Goal, Row};
use crate::scenarios::{Config, Log, Samples, counters, grew, row, set_note, with_daemon};
use netlab::Lab;

/// nginx's address: the plain TCP server's, another port.
const ADDR: &str = "198.19.0.11:8088";
/// The file served.
const BODY: usize = 1000;

/// nginx in inet, stopped on drop.
struct Nginx {
    child: std::process::Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(lab: &Lab, run_dir: &Path) -> Result<Nginx, String> {
        let dir = run_dir.join("nginx");
        let _ = std::fs::remove_dir_all(&dir);
        let www = dir.join("www");
        std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
        std::fs::write(www.join("1k"), vec![b'x'; BODY]).map_err(|e| e.to_string())?;
        // One process (`master_process off`): killing the child stops nginx (a master killed
        // with SIGKILL left its worker behind, still listening in the lab's namespace).
        // The files must be readable by all (nginx may serve them as an unprivileged user).
        for d in [run_dir, &dir, &www] {
            let _ = mpbond::sys::proc::chmod(d, 0o755);
        }
        let _ = mpbond::sys::proc::chmod(&www.join("1k"), 0o644);
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "master_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 16384; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
                 fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
                 keepalive_requests 1000000;\n  server {{\n    listen {ADDR} backlog=16384;\n    \
                 location / {{ root {w}; }}\n  }}\n}}\n",
                d = dir.display(),
                w = www.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = lab
            .command(&lab.ns().inet, "nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nginx: {e} (apt install nginx-light)"))?;
        let mut n = Nginx { child, dir };
        // Up once it answers.
        for _ in 0..50 {
            if wrk(lab, 1, 1, Duration::from_secs(1), false).is_ok_and(|w| w.requests > 0) {
                return Ok(n);
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                return Err(format!(
                    "nginx exited ({st}): {}",
                    std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = n.child.kill();
        Err("nginx does not answer".into())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = child::wait_exit(&mut self.child, Duration::from_secs(5));
    }
}

/// What one `wrk` run reports.
#[derive(Debug, Clone, PartialEq)]
struct Wrk {
    /// Requests per second.
    rate: f64,
    /// Requests completed.
    requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx answers.
    errors: u64,
    /// wrk's own error lines.
    detail: String,
}

/// Parses `wrk`'s summary.
fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk {
        rate: f64::NAN,
        requests: 0,
        errors: 0,
        detail: String::new(),
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rate = v.trim().parse().ok()?;
        } else if let Some(rest) = line.split_once(" requests in ") {
            w.requests = rest.0.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            w.detail = line.to_owned();
            // "Socket errors: connect 0, read 0, write 0, timeout 0"
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().ok()?;
        }
    }
    w.rate.is_finite().then_some(w)
}

/// `wrk` from the laptop: `conns` connections on `threads` threads for `secs`; `close`: a new
/// connection per request.
fn wrk(lab: &Lab, threads: u32, conns: u32, secs: Duration, close: bool) -> Result<Wrk, String> {
    let mut c = lab.command(&lab.ns().laptop, "wrk");
    c.args([
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{}s", secs.as_secs().max(1)),
        "--timeout",
        "2s",
    ]);
    if close {
        c.args(["-H", "Connection: close"]);
    }
    let o = c
        .arg(format!("http://{ADDR}/1k"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("wrk: {e} (apt install wrk)"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    match parse_wrk(&text) {
        Some(w) if o.status.success() => Ok(w),
        _ => Err(format!(
            "wrk: {} {}",
            text.trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// A diagnostic line on stderr (the runner's progress stream).
fn tracing_line(s: &str) {
    eprintln!("  {s}");
}

/// The P10 rows.
pub fn rows(lab: &Lab, cfg: &Config, log: Log) -> Vec<Row> {
    // The laptop's kernel reuses its TIME-WAIT ports as a browser's would.
    let _ = lab.exec(
        &lab.ns().laptop,
        &["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"],
    );
    let nginx = Nginx::start(lab, &cfg.run_dir);
    let secs = cfg.churn_secs;
    let (mut kc, mut mc, mut kk, mut mk) = (Samples::new(), Samples::new(), Samples::new(), Samples::new());
    let mut notes = Vec::new();
    let mut kernel_notes = Vec::new();
    for run in 0..cfg.runs {
        if let Err(e) = &nginx {
            for s in [&mut kc, &mut mc, &mut kk, &mut mk] {
                s.push(Err(e.clone()));
            }
            continue;
        }
        log(&format!("P10 run {}/{}: direct", run + 1, cfg.runs));
        let k = wrk(lab, 1, 4, secs, true);
        if let Ok(w) = &k {
            kernel_notes.push(format!("{} errors", w.errors));
        }
        kc.push(k.map(|w| w.rate));
        kk.push(wrk(lab, 2, 32, secs, false).map(|w| w.rate));
        log(&format!("P10 run {}/{}: through mpbond", run + 1, cfg.runs));
        let r = with_daemon(lab, cfg, |d| {
            let c0 = counters(d)?;
            let churn = wrk(lab, 1, 4, secs, true)?;
            let c1 = counters(d)?;
            let moved: Vec<String> = c1
                .keys()
                .filter(|k| grew(&c0, &c1, k) > 0)
                .map(|k| format!("{k} +{}", grew(&c0, &c1, k)))
                .collect();
            tracing_line(&format!(
                "daemon counters during the churn run: {}",
                moved.join(", ")
            ));
            let keep = wrk(lab, 2, 32, secs, false)?;
            let st = d.status()?;
            notes.push(format!(
                "{} SYNs dropped table full, {} wrk errors {}, {} flows at the end",
                grew(&c0, &c1, "dropped_table_full"),
                churn.errors,
                churn.detail,
                st.flows.len()
            ));
            Ok::<_, String>((churn.rate, keep.rate))
        })
        .and_then(|r| r);
        match r {
            Ok((c, k)) => {
                mc.push(Ok(c));
                mk.push(Ok(k));
            }
            Err(e) => {
                log(&format!("  through mpbond failed: {e}"));
                mc.push(Err(e.clone()));
                mk.push(Err(e));
            }
        }
    }
    drop(nginx);
    let mut churn = Cell::from_results(mc);
    set_note(&mut churn, format!("per run: [{}]", notes.join("; ")));
    let mut kchurn = Cell::from_results(kc);
    set_note(&mut kchurn, format!("per run: [{}]", kernel_notes.join("; ")));
    vec![
        row(
            "P10",
            format!(
                "new connections/s, HTTP GET 1 KB with `Connection: close`, 4 at a time, {} s \
                 (wrk → nginx on the plain server, Wi-Fi)",
                secs.as_secs()
            ),
            "conn/s",
            churn,
            kchurn,
            Goal::RatioAtLeast {
                min: 0.5,
                stretch: None,
            },
        ),
        row(
            "P10",
            format!(
                "HTTP keep-alive requests/s, 1 KB, 32 connections, {} s (wrk → nginx, Wi-Fi)",
                secs.as_secs()
            ),
            "req/s",
            Cell::from_results(mk),
            Cell::from_results(kk),
            Goal::RatioAtLeast {
                min: 0.7,
                stretch: None,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://198.19.0.11:8088/1k
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   311.02us  120.11us   4.06ms   87.55%
    Req/Sec    12.01k   512.33    13.10k    70.00%
  119552 requests in 10.00s, 142.11MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:  11954.11
Transfer/sec:     14.21MB
";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.requests, 119_552);
        assert_eq!(w.errors, 6);
        assert!((w.rate - 11_954.11).abs() < 1e-6);
        assert_eq!(
            parse_wrk("unable to connect to 198.19.0.11:8088 Connection refused"),
            None
        );
    }
}
