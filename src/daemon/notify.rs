//! `mpbond status --notify`: desktop notifications, for the user's session (the package starts it
//! there with an XDG autostart entry): a failover, a converter going down or coming back. It reads
//! the status as `status` does (so the user must be allowed to, `[status]`), and hands each
//! notification to `notify-send` (libnotify: the freedesktop notification service of the session).
//! `[status] notify = false` turns it off; while mpbond is down it waits quietly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::status::Status;
use crate::sys;

/// How often the status is read.
pub const POLL: Duration = Duration::from_secs(1);

/// A desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// One line.
    pub summary: String,
    /// Details.
    pub body: String,
}

/// What changed from `prev` to `cur` that the user should hear about.
pub fn notices(prev: &Status, cur: &Status) -> Vec<Notice> {
    let mut out = Vec::new();
    let new = cur.failovers.saturating_sub(prev.failovers) as usize;
    let mut recent: Vec<_> = cur.recent_failovers.iter().collect();
    recent.sort_by_key(|f| f.ago_ms);
    for f in recent.into_iter().take(new).rev() {
        let why = if f.cause == "unresponsive" {
            "stopped answering"
        } else {
            "went away"
        };
        let others: Vec<&str> = cur
            .interfaces
            .iter()
            .filter(|i| i.name != f.from && i.usable)
            .map(|i| i.name.as_str())
            .collect();
        let to = if others.is_empty() {
            "no other path is usable".to_string()
        } else {
            format!("traffic moved to {}", others.join(", "))
        };
        out.push(Notice {
            summary: format!("{} {why}: {to}", f.from),
            body: format!(
                "{} connection{} kept going; nothing to do.",
                f.flows,
                if f.flows == 1 { "" } else { "s" }
            ),
        });
    }
    for c in &cur.converters {
        let Some(was) = prev.converters.iter().find(|p| p.addr == c.addr) else {
            continue;
        };
        if was.up && !c.up {
            out.push(Notice {
                summary: format!("converter {} is down", c.addr),
                body: format!(
                    "{}: new connections to servers without MPTCP go direct (no failover) until it answers again.",
                    c.last_failure.as_deref().unwrap_or("failed")
                ),
            });
        } else if !was.up && c.up {
            out.push(Notice {
                summary: format!("converter {} is back", c.addr),
                body: "New connections to servers without MPTCP survive the loss of Wi-Fi again.".into(),
            });
        }
    }
    out
}

/// Whether `[status] notify` in the configuration file at `config` allows notifications (yes
/// when the file or the key is missing).
pub fn enabled(config: &Path) -> anyhow::Result<bool> {
    match std::fs::read_to_string(config) {
        Ok(text) => Ok(crate::config::FileConfig::parse(&text, config)?
            .status
            .notify
            .unwrap_or(true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", config.display())),
    }
}

/// Runs until SIGINT or SIGTERM, notifying through `notify-send`.
pub fn run(run_dir: &Path, config: &Path) -> anyhow::Result<()> {
    if !enabled(config)? {
        tracing::info!("notifications are off ([status] notify = false)");
        return Ok(());
    }
    if Command::new("notify-send").arg("--version").output().is_err() {
        anyhow::bail!("notify-send not found (install libnotify-bin)");
    }
    sys::proc::block_termination_signals()?;
    let mut prev: Option<Status> = None;
    loop {
        match super::fetch_status(run_dir) {
            Ok(cur) => {
                if let Some(p) = &prev {
                    for n in notices(p, &cur) {
                        let sent = Command::new("notify-send")
                            .args([
                                "--app-name=mpbond",
                                "--icon=network-wireless",
                                &n.summary,
                                &n.body,
                            ])
                            .status();
                        if !sent.is_ok_and(|s| s.success()) {
                            tracing::warn!(summary = %n.summary, "notify-send failed");
                        }
                    }
                }
                prev = Some(cur);
            }
            // Down or restarting: start over once it answers (its counters start over too).
            Err(_) => prev = None,
        }
        if sys::proc::wait_for_termination(POLL).is_some() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(failovers: u64, recent: &str, conv_up: bool) -> Status {
        serde_json::from_str(
            &r#"{"pid":7,"uptime_secs":5,"mode":"handover",
            "tun":{"name":"mpbond0","mtu":65000,"addresses":[],"rx_packets":0,"rx_bytes":0,"tx_packets":0,
                   "tx_bytes":0,"rx_invalid":0,"rx_tcp":0,"rx_udp":0,"rx_icmp":0},
            "interfaces":[
              {"name":"wlan0","role":"primary","index":3,"up":true,"carrier":true,"addresses":[],
               "rx_bytes":0,"tx_bytes":0,"usable":false},
              {"name":"wwan0","role":"backup","index":4,"up":true,"carrier":true,"addresses":[],
               "rx_bytes":0,"tx_bytes":0,"usable":true}],
            "flows":[],"subflows":[],"failovers":@N@,"recent_failovers":@RECENT@,"counters":{},
            "converters":[{"addr":"198.19.3.2:5124","up":@UP@,"retry_in_ms":0,"flows":1,"failures":0,
                           "last_failure":"no_reply"}]}"#
                .replace("@N@", &failovers.to_string())
                .replace("@RECENT@", recent)
                .replace("@UP@", &conv_up.to_string()),
        )
        .unwrap()
    }

    const ONE: &str = r#"[{"from":"wlan0","cause":"unresponsive","ago_ms":300,"flows":3,"resumed":3,
        "first_resume_us":24800,"last_resume_us":30000}]"#;

    #[test]
    fn a_failover_and_converter_changes_are_told_once() {
        let quiet = status(0, "[]", true);
        assert!(notices(&quiet, &quiet).is_empty());
        let failed = status(1, ONE, true);
        let n = notices(&quiet, &failed);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].summary, "wlan0 stopped answering: traffic moved to wwan0");
        assert_eq!(n[0].body, "3 connections kept going; nothing to do.");
        // The same failover is not told again.
        assert!(notices(&failed, &failed).is_empty());
        let down = status(1, ONE, false);
        let n = notices(&failed, &down);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].summary.contains("is down") && n[0].body.starts_with("no_reply"),
            "{n:?}"
        );
        assert!(notices(&down, &failed)[0].summary.ends_with("is back"));
    }

    #[test]
    fn notifications_can_be_turned_off() {
        let dir = std::env::temp_dir().join(format!("mpbond-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("mpbond.toml");
        assert!(enabled(&p).unwrap(), "no file: on");
        std::fs::write(&p, "[status]\nnotify = false\n").unwrap();
        assert!(!enabled(&p).unwrap());
        std::fs::write(&p, "[status]\nnotify = 1\n").unwrap();
        assert!(enabled(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
