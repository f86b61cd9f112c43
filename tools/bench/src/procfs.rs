//! CPU time and memory of processes, from `/proc`.
//!
//! How CPU is counted (see also the notes in `BENCHMARKS.md`):
//! - a process's CPU is `utime + stime` of `/proc/<pid>/stat` (fields 14 and 15, in clock ticks
//!   of 1/100 s: `USER_HZ` is 100 on every Linux ABI). It includes its exited threads. Kernel
//!   work done in softirq context is charged to whichever task was running when the softirq ran;
//!   on veth pairs that is almost always the sending task itself (veth's `netif_rx` → backlog →
//!   `do_softirq` on the way out of the send syscall), so the receive-side TCP/IP, NAT and
//!   forwarding work a transfer causes lands in the `stime` of the process that sent the packet.
//! - a long-lived multi-threaded daemon is read with nanosecond resolution from the sum of
//!   `/proc/<pid>/task/*/schedstat` (first field: time on CPU).

use std::io;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`).
pub const USER_HZ: f64 = 100.0;

/// `utime + stime` in ticks from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (`utime + stime`) of `pid` (`"self"` for this process).
pub fn process_cpu_secs(pid: &str) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&stat)
        .map(|t| t as f64 / USER_HZ)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat")))
}

/// On-CPU nanoseconds of the first field of a `schedstat` text.
pub fn parse_schedstat_ns(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// CPU seconds of all live threads of `pid`, from `/proc/<pid>/task/*/schedstat`.
pub fn threads_cpu_secs(pid: u32) -> io::Result<f64> {
    let mut ns = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let p = e?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(p) {
            ns += parse_schedstat_ns(&s).unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// The command name of `pid` (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}
