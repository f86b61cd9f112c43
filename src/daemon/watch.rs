//! `mpbond status --watch`: a live view of the daemon's status, redrawn in place every second —
//! the interfaces (role, state, RTT, throughput now), their data budgets, the flows by kind, and
//! the failovers as a timeline with their measured gaps. Ctrl-C (or SIGTERM) ends it and gives the terminal back as
//! it was. Not on a terminal, it prints one frame per second, one after the other.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Duration;

use super::status::Status;
use crate::sys;
use crate::time::Instant;

/// How often the view is redrawn.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Alternate screen, cursor hidden / back to the normal screen, cursor shown (xterm, VT220).
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor home, then clear to the end of the screen.
const HOME_CLEAR: &str = "\x1b[H\x1b[J";

/// One frame: `cur`, with throughput from `prev` taken `dt` earlier.
pub fn render(prev: Option<&Status>, cur: &Status, dt: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mpbond (pid {}, up {}, mode {})   {} failovers   Ctrl-C to quit",
        cur.pid,
        clock(cur.uptime_secs),
        cur.mode,
        cur.failovers
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<12} {:<9} {:<13} {:>9} {:>12} {:>12}",
        "interface", "role", "state", "rtt", "down Mbit/s", "up Mbit/s"
    );
    for i in &cur.interfaces {
        let role = i.role.name();
        let state = match (i.index != 0, i.up && i.carrier, i.usable) {
            (false, _, _) => "gone",
            (true, false, _) => "down",
            (true, true, false) => "unresponsive",
            (true, true, true) => "usable",
        };
        // The smoothed RTT of the best subflow on it.
        let rtt = cur
            .subflows
            .iter()
            .filter(|sf| sf.interface == i.name && sf.srtt_us > 0)
            .map(|sf| sf.srtt_us)
            .min()
            .map_or("-".to_string(), |us| format!("{:.1} ms", us as f64 / 1e3));
        let old = prev.and_then(|p| p.interfaces.iter().find(|o| o.name == i.name));
        let rate = |now: u64, then: Option<u64>| match then {
            Some(then) if !dt.is_zero() && now >= then => {
                format!("{:.2}", (now - then) as f64 * 8.0 / dt.as_secs_f64() / 1e6)
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "{:<12} {:<9} {:<13} {:>9} {:>12} {:>12}",
            i.name,
            role,
            state,
            rtt,
            rate(i.rx_bytes, old.map(|o| o.rx_bytes)),
            rate(i.tx_bytes, old.map(|o| o.tx_bytes)),
        );
    }
    for b in &cur.budget {
        let _ = writeln!(s, "data {}", b.line());
    }
    let _ = writeln!(s);
    let k = cur.flow_kinds();
    let _ = writeln!(
        s,
        "flows {:>5}   mptcp {}   via converter {}   plain tcp {}   udp {}   icmp {}",
        cur.flows.len(),
        k.mptcp,
        k.via_converter,
        k.plain_tcp,
        k.udp,
        k.icmp,
    );
    for c in &cur.converters {
        let state = if c.up {
            "up".to_string()
        } else {
            format!(
                "down: {}, retry in {} s",
                c.last_failure.as_deref().unwrap_or("failed"),
                c.retry_in_ms.div_ceil(1000)
            )
        };
        let _ = writeln!(s, "converter {}  {state}", c.addr);
    }
    let _ = writeln!(s);
    if cur.recent_failovers.is_empty() {
        let _ = writeln!(s, "failovers: none yet");
    } else {
        let _ = writeln!(s, "failovers (newest first)");
        let mut list: Vec<_> = cur.recent_failovers.iter().collect();
        list.sort_by_key(|f| f.ago_ms);
        for f in list {
            let gap = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.1} ms", v as f64 / 1e3));
            let _ = writeln!(
                s,
                "  {:>8} ago  {:<10} {:<12} {:>3} flows, {:>3} moved on, gap {} (last {})",
                clock(f.ago_ms / 1000),
                f.from,
                f.cause,
                f.flows,
                f.resumed,
                gap(f.first_resume_us),
                gap(f.last_resume_us)
            );
        }
    }
    s
}

/// `90` → `1m30s`.
fn clock(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

/// Runs the view until SIGINT or SIGTERM.
pub fn watch(run_dir: &Path) -> anyhow::Result<()> {
    // The first answer shows at once whether there is a daemon to watch and may be asked.
    let mut prev: Option<(Status, Instant)> = Some((super::fetch_status(run_dir)?, sys::clock::boottime()));
    sys::proc::block_termination_signals()?;
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    if tty {
        let _ = write!(out, "{ENTER}");
    }
    let mut first = true;
    loop {
        let frame = if first {
            first = false;
            prev.as_ref().map(|(s, _)| render(None, s, Duration::ZERO))
        } else {
            let now = sys::clock::boottime();
            match super::fetch_status(run_dir) {
                Ok(cur) => {
                    let text = match &prev {
                        Some((p, at)) => render(Some(p), &cur, now.saturating_duration_since(*at)),
                        None => render(None, &cur, Duration::ZERO),
                    };
                    prev = Some((cur, now));
                    Some(text)
                }
                Err(e) => {
                    prev = None;
                    Some(format!("{e:#}\n(waiting for it; Ctrl-C to quit)\n"))
                }
            }
        };
        if let Some(text) = frame {
            let res = if tty {
                write!(out, "{HOME_CLEAR}{text}")
            } else {
                writeln!(out, "{text}")
            };
            if res.and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        if sys::proc::wait_for_termination(REFRESH).is_some() {
            break;
        }
    }
    if tty {
        let _ = write!(out, "{LEAVE}");
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: &str) -> Status {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#"{"pid":7,"uptime_secs":75,"mode":"handover",
        "tun":{"name":"mpbond0","mtu":65000,"addresses":[],"rx_packets":0,"rx_bytes":0,"tx_packets":0,
               "tx_bytes":0,"rx_invalid":0,"rx_tcp":0,"rx_udp":0,"rx_icmp":0},
        "interfaces":[
          {"name":"wlan0","role":"primary","index":3,"up":true,"carrier":true,"addresses":[],
           "rx_bytes":RX,"tx_bytes":1000,"usable":USABLE},
          {"name":"wwan0","role":"backup","index":4,"up":true,"carrier":true,"addresses":[],
           "rx_bytes":0,"tx_bytes":0,"usable":true}],
        "flows":[
          {"protocol":"tcp","source":"100.127.77.1:40000","destination":"198.19.0.10:80","mptcp":true,
           "converter":null,"bytes_up":0,"bytes_down":0},
          {"protocol":"tcp","source":"100.127.77.1:40001","destination":"198.19.0.11:80","mptcp":true,
           "converter":"198.19.3.2:5124","bytes_up":0,"bytes_down":0},
          {"protocol":"udp","source":"100.127.77.1:5353","destination":"198.19.0.10:53","mptcp":false,
           "converter":null,"bytes_up":0,"bytes_down":0}],
        "subflows":[
          {"flow":0,"interface":"wlan0","local":"198.18.1.2:61000","remote":"198.19.0.10:80",
           "state":"Established","srtt_us":21400,"usable":true,"backup":false,"bytes_sent":0}],
        "failovers":FAILOVERS,
        "recent_failovers":RECENT,
        "counters":{},
        "converters":[{"addr":"198.19.3.2:5124","up":true,"retry_in_ms":0,"flows":1,"failures":0,
                       "last_failure":null}]}"#;

    fn frame(rx: u64, usable: bool, recent: &str) -> Status {
        let n = if recent == "[]" { "0" } else { "1" };
        status(
            &BASE
                .replace("RX", &rx.to_string())
                .replace("USABLE", &usable.to_string())
                .replace("FAILOVERS", n)
                .replace("RECENT", recent),
        )
    }

    #[test]
    fn a_frame_shows_rates_rtt_kinds_and_the_failover_timeline() {
        let before = frame(0, true, "[]");
        let first = render(None, &before, Duration::ZERO);
        assert!(first.contains("failovers: none yet"), "{first}");
        assert!(first.contains("up 1m15s"), "{first}");
        // 2.5 MB in one second on wlan0 is 20 Mbit/s; its subflow's RTT shows.
        let after = frame(
            2_500_000,
            false,
            r#"[{"from":"wlan0","cause":"unresponsive","ago_ms":4200,
            "flows":2,"resumed":2,"first_resume_us":24800,"last_resume_us":136300}]"#,
        );
        let f = render(Some(&before), &after, Duration::from_secs(1));
        let wlan = f.lines().find(|l| l.starts_with("wlan0")).unwrap();
        assert!(
            wlan.contains("unresponsive") && wlan.contains("21.4 ms") && wlan.contains("20.00"),
            "{wlan}"
        );
        let wwan = f.lines().find(|l| l.starts_with("wwan0")).unwrap();
        assert!(wwan.contains("usable") && wwan.contains(" - "), "{wwan}");
        assert!(
            f.contains("mptcp 1   via converter 1   plain tcp 0   udp 1"),
            "{f}"
        );
        assert!(
            f.contains(
                "4s ago  wlan0      unresponsive   2 flows,   2 moved on, gap 24.8 ms (last 136.3 ms)"
            ),
            "{f}"
        );
    }

    #[test]
    fn a_frame_shows_the_data_budget() {
        let mut st = frame(0, true, "[]");
        st.budget = vec![crate::budget::BudgetStatus {
            name: "wwan0".into(),
            today: 12_300_000,
            period: 456_000_000,
            daily_limit: Some(500_000_000),
            level: crate::budget::Level::Soft,
            ..Default::default()
        }];
        let f = render(None, &st, Duration::ZERO);
        assert!(
            f.contains("data wwan0: today 12.3 MB of 500.0 MB, this period 456.0 MB — near the limit"),
            "{f}"
        );
    }

    #[test]
    fn clock_reads_like_a_clock() {
        assert_eq!(clock(5), "5s");
        assert_eq!(clock(90), "1m30s");
        assert_eq!(clock(7322), "2h02m");
    }
}
