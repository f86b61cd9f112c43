//! The result table: rows with an mpbond cell and a kernel-baseline cell, the goal, whether it is
//! met, rendered as markdown (`BENCHMARKS.md`) and serialised as JSON.

use crate::machine::Machine;
use crate::stats::Summary;
use serde::Serialize;

/// One side (mpbond or kernel) of a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Cell {
    /// Measured: every run's sample and their summary.
    Measured {
        /// Summary of `samples`.
        summary: Summary,
        /// One value per run, in run order.
        samples: Vec<f64>,
        /// Remarks on the samples (e.g. runs that hit a bound).
        #[serde(skip_serializing_if = "String::is_empty")]
        note: String,
    },
    /// This side cannot be measured with the code as it is; says why.
    NotYet {
        /// Why (e.g. "needs MPTCP in the data plane").
        reason: String,
    },
    /// Every run failed; the first error.
    Failed {
        /// The error.
        error: String,
    },
    /// No such side for this metric (e.g. no kernel baseline for memory per flow).
    None,
}

impl Cell {
    /// A measured cell from per-run samples (NaN samples are dropped); `Failed` if none is left.
    pub fn from_samples(samples: Vec<f64>, note: impl Into<String>) -> Cell {
        match Summary::of(&samples) {
            Some(summary) => Cell::Measured {
                summary,
                samples,
                note: note.into(),
            },
            None => Cell::Failed {
                error: "no run produced a value".into(),
            },
        }
    }

    /// A cell from per-run results: the values of the runs that worked; `Failed` with the first
    /// error when none did; a note counting the failed runs otherwise.
    pub fn from_results(results: Vec<Result<f64, String>>) -> Cell {
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let ok: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        if ok.is_empty() {
            return Cell::Failed {
                error: failed
                    .first()
                    .map_or_else(|| "no runs".to_owned(), |e| (*e).clone()),
            };
        }
        let note = if failed.is_empty() {
            String::new()
        } else {
            format!("{} of {} runs failed: {}", failed.len(), results.len(), failed[0])
        };
        Cell::from_samples(ok, note)
    }

    /// The median, when measured.
    pub fn median(&self) -> Option<f64> {
        match self {
            Cell::Measured { summary, .. } => Some(summary.median),
            _ => None,
        }
    }
}

/// What a row must achieve.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Goal {
    /// mpbond / kernel ≥ this (higher is better: goodput, rates).
    RatioAtLeast {
        /// The least ratio.
        min: f64,
        /// A stretch ratio shown beside it.
        stretch: Option<f64>,
    },
    /// mpbond / kernel ≤ this (lower is better: gaps, CPU).
    RatioAtMost {
        /// The largest ratio.
        max: f64,
    },
    /// mpbond ≤ this value (in the row's unit), and below the kernel's when `below_kernel`.
    AtMost {
        /// The largest value.
        max: f64,
        /// Also strictly below the kernel baseline.
        below_kernel: bool,
    },
    /// mpbond − kernel ≤ this (in the row's unit): added latency.
    AddedAtMost {
        /// The largest difference.
        max: f64,
    },
    /// mpbond ≤ `factor` × the mpbond median of row `base` ("flat" across load levels).
    FlatVs {
        /// The row compared with.
        base: String,
        /// The largest factor.
        factor: f64,
    },
    /// Reported only.
    None,
}

/// Whether a goal is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Met {
    /// Met.
    Yes,
    /// Not met.
    No,
    /// Cannot tell (a side is missing).
    Unknown,
    /// No goal.
    NoGoal,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `P1`, `P3`, … (unique with `metric`).
    pub id: String,
    /// What is measured, with its conditions.
    pub metric: String,
    /// Unit of both cells (`Mbit/s`, `ms`, `µs`, …).
    pub unit: String,
    /// mpbond's side.
    pub mpbond: Cell,
    /// The Linux kernel baseline.
    pub kernel: Cell,
    /// The goal.
    pub goal: Goal,
}

impl Row {
    /// mpbond median / kernel median, when both are measured and the kernel's is not zero.
    pub fn ratio(&self) -> Option<f64> {
        let (m, k) = (self.mpbond.median()?, self.kernel.median()?);
        (k != 0.0).then(|| m / k)
    }

    /// Evaluates the goal; `rows` is the whole table (for [`Goal::FlatVs`]).
    pub fn met(&self, rows: &[Row]) -> Met {
        let yes = |b: bool| if b { Met::Yes } else { Met::No };
        match &self.goal {
            Goal::None => Met::NoGoal,
            Goal::RatioAtLeast { min, .. } => self.ratio().map_or(Met::Unknown, |r| yes(r >= *min)),
            Goal::RatioAtMost { max } => self.ratio().map_or(Met::Unknown, |r| yes(r <= *max)),
            Goal::AtMost { max, below_kernel } => match (self.mpbond.median(), self.kernel.median()) {
                (Some(m), _) if m > *max => Met::No,
                (Some(m), Some(k)) if *below_kernel => yes(m < k),
                (Some(_), None) if *below_kernel => Met::Unknown,
                (Some(_), _) => Met::Yes,
                (None, _) => Met::Unknown,
            },
            Goal::AddedAtMost { max } => match (self.mpbond.median(), self.kernel.median()) {
                (Some(m), Some(k)) => yes(m - k <= *max),
                _ => Met::Unknown,
            },
            Goal::FlatVs { base, factor } => {
                let b = rows
                    .iter()
                    .find(|r| r.metric == *base)
                    .and_then(|r| r.mpbond.median());
                match (self.mpbond.median(), b) {
                    (Some(m), Some(b)) => yes(m <= b * factor),
                    _ => Met::Unknown,
                }
            }
        }
    }

    fn goal_text(&self) -> String {
        let u = &self.unit;
        match &self.goal {
            Goal::None => "—".into(),
            Goal::RatioAtLeast { min, stretch: None } => format!("≥ {min}×"),
            Goal::RatioAtLeast {
                min,
                stretch: Some(s),
            } => format!("≥ {min}× (stretch {s}×)"),
            Goal::RatioAtMost { max } => format!("≤ {max}×"),
            Goal::AtMost {
                max,
                below_kernel: true,
            } => format!("≤ {} {u} and below the kernel", fmt_num(*max)),
            Goal::AtMost { max, .. } => format!("≤ {} {u}", fmt_num(*max)),
            Goal::AddedAtMost { max } => format!("≤ +{} {u}", fmt_num(*max)),
            Goal::FlatVs { base, factor } => format!("flat: ≤ {factor}× “{base}”"),
        }
    }
}

/// A number with about three significant digits, without exponent.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell_text(c: &Cell, unit: &str) -> String {
    match c {
        Cell::Measured { summary: s, note, .. } => {
            let mut t = if s.n > 1 {
                format!(
                    "{} {unit} ({}–{}, n={})",
                    fmt_num(s.median),
                    fmt_num(s.min),
                    fmt_num(s.max),
                    s.n
                )
            } else {
                format!("{} {unit} (n=1)", fmt_num(s.median))
            };
            if !note.is_empty() {
                t.push_str(&format!("; {note}"));
            }
            t
        }
        Cell::NotYet { reason } => format!("not yet measurable: {reason}"),
        Cell::Failed { error } => format!("failed: {error}"),
        Cell::None => "—".into(),
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The whole result: where and when, how, and the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine and kernel.
    pub machine: Machine,
    /// UTC time the run started, RFC 3339.
    pub started: String,
    /// The command line.
    pub command: String,
    /// Runs per metric.
    pub runs: usize,
    /// Method notes, printed under the table.
    pub notes: Vec<String>,
    /// The table.
    pub rows: Vec<Row>,
}

impl Report {
    /// `BENCHMARKS.md`.
    pub fn to_markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str("# mpbond benchmarks\n\n");
        s.push_str("Generated by `mpbond-bench` (see README, “Benchmarks”); do not edit by hand.\n\n");
        s.push_str(&format!("- date (UTC): {}\n", self.started));
        s.push_str(&format!("- command: `{}`\n", self.command));
        s.push_str(&format!(
            "- machine: {} × {}, {} MiB RAM, load average at start {}\n",
            m.nproc, m.cpu_model, m.mem_mib, m.loadavg
        ));
        s.push_str(&format!("- kernel: Linux {}\n", m.kernel));
        s.push_str(&format!(
            "- runs per metric: {}; cells show the median (min–max, n = runs that produced a value)\n\n",
            self.runs
        ));
        s.push_str("| id | metric | mpbond | kernel baseline | ratio | goal | met? |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let ratio = r.ratio().map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×"));
            let met = match r.met(&self.rows) {
                Met::Yes => "yes",
                Met::No => "**no**",
                Met::Unknown => "—",
                Met::NoGoal => "",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.id,
                escape(&r.metric),
                escape(&cell_text(&r.mpbond, &r.unit)),
                escape(&cell_text(&r.kernel, &r.unit)),
                ratio,
                escape(&r.goal_text()),
                met
            ));
        }
        if !self.notes.is_empty() {
            s.push_str("\n## How each row is measured\n\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }

    /// The raw JSON (every sample).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// How each row is measured (printed under the table).
pub fn method_notes() -> Vec<String> {
    [
        "Lab: `netlab` namespaces (laptop with wlan0/wwan0, wire, NAT routers, inet servers); \
         tx checksum offload off on every veth. Kernel and mpbond alternate run by run in the same \
         invocation; mpbond runs get a freshly started `mpbond up --foreground --wifi wlan0 \
         --cellular wwan0` that is stopped with `mpbond down` afterwards.",
        "P1 (iperf3 rows): `iperf3 -c 198.19.0.11 -t T -J` (upload) and `-R` (download) from the \
         laptop namespace to `iperf3 -s` in inet, one flow, first with tx checksum offload on on \
         every veth (as Linux sets them up: TSO/GSO on) and then off; kernel and mpbond alternate \
         in each run. iperf3's own CPU (the busier end, from its JSON) is given for the kernel \
         runs; its kernel time includes the TCP stack's work in its system calls. The daemon's \
         CPU s/GB is over the bytes both iperf3 runs moved.",
        "P1: `GET /bytes/N` and `POST /sink` on the plain TCP server 198.19.0.11:80 from the laptop \
         namespace, every byte verified. Kernel: the laptop's TCP straight over wlan0 (veth, no TUN). \
         mpbond: the same client, routed into mpbond0 and relayed by the daemon over wlan0.",
        "P2: `GET /bytes/N` from the kernel MPTCP server 198.19.0.10:80, both paths rate-limited \
         (tbf at the routers) so that aggregation is visible on a CPU-bound veth lab. Kernel: an \
         MPTCP client (IPPROTO_MPTCP) with `ip mptcp endpoint add 198.18.2.2 dev wwan0 subflow`. \
         mpbond: the endpoints flushed, `mpbond up … --mode aggregate`, the laptop's plain TCP \
         client (into mpbond0; the daemon's counters must show the bytes relayed over MPTCP). The \
         notes give the subflows per run and the share of the bytes the laptop received on wwan0.",
        "P3/P4: MPTCP download, both paths rate-limited and delayed (userspace relay, half the RTT \
         each way); cellular endpoint marked `backup`. After the first body byte plus a fixed wait, \
         wlan0 is set down (P3) or the Wi-Fi router drops everything (P4). Gap = the longest interval \
         without received bytes at the receiver, starting at the moment of the impairment. A run whose \
         transfer does not finish within its bound counts as failed (the note says how far it got). \
         Kernel: an MPTCP client, cellular endpoint `subflow backup`. mpbond: the endpoints flushed, \
         `mpbond up` in handover mode (Wi-Fi primary, cellular backup subflow), the laptop's plain \
         TCP client; the note lists the daemon's own failover record per run (cause and the time \
         from the path's last good moment to the first data moved again) and whether the cellular \
         subflow was established just before the outage (`mpbond status`).",
        "P11: UDP through the converter's datagram relay (`mpbond server` in the converter namespace, \
         the daemon with `--converter`). Goodput: iperf3 -u -l 1200 from the laptop to 198.19.0.11:5201, \
         Wi-Fi 200 Mbit/s 20 ms RTT, offered 25/50/75/100 % of the path rate for 3 s each; the value \
         is the best received rate with at most 1 % loss; baseline: the laptop's UDP without mpbond. \
         Gap: both paths at 20 ms RTT, a 50 pkt/s stream of 172-byte datagrams to the UDP echo \
         server 198.19.0.12:7 for 5 s, paced exactly (the sender at SCHED_FIFO, each departure \
         spun for, the note gives the latest departure's lateness), wlan0 down or the Wi-Fi router \
         dropping everything from 1.5 s to 4 s; the value is the longest time between two echoes; \
         baseline: mpbond without a converter; the goal is P3/P4's TCP failover gap at 20 ms RTT. Redundant rows: \
         the same stream with `--mode redundant` (each datagram on both paths); baseline: handover \
         mode via the converter; goal one packet interval (20 ms).",
        "P12: 100 MPTCP flows (netlab's client, plain TCP sockets into the TUN) from the laptop to \
         the kernel MPTCP server 198.19.0.10:80, each idle after one `GET /bytes/100`, mpbond in handover mode with its defaults (backup \
         subflows joined at once on cellular, no keep-alive, nat_idle 15 s); 3 s after the last \
         connect, wwan0's rx + tx byte counters are read, again 60 s later; the difference × 60 is \
         the value (an extrapolation to one idle hour). No kernel baseline.",
        "P5: a TCP echo server in inet (198.19.0.12:7, TCP_NODELAY); 64-byte request, 64-byte answer, \
         one after the other on one connection (10 unmeasured first); p50/p99 of each run, median over \
         runs; goal: mpbond p50 − kernel p50. Setup rate: sequential connect (handshake complete) + \
         close to the same server, up to the count or 2 s.",
        "P6: a one-thread server in inet accepts and discards; the laptop opens N TCP flows through \
         mpbond. Memory per idle flow = (daemon VmRSS after the flows are up − before) / N. CPU per \
         packet = daemon CPU (sum of /proc/<pid>/task/*/schedstat) while 64-byte writes spread \
         round-robin over the N flows are relayed and delivered, / packets in and out of mpbond0 and \
         wlan0 in the same window (`ip -s link`; host segments, their relayed copies, the ACKs). \
         No kernel baseline.",
        "P7: CPU seconds per GB during the P1 transfers (download + upload). Counted: utime + stime \
         (/proc/<pid>/stat) of the benchmark process — which holds the client, the servers and the lab \
         relays, and which the kernel charges for the TCP/IP, NAT and veth work its sends trigger \
         (softirq on the way out of the send syscall) — plus, for mpbond, the daemon's utime + stime \
         (its own threads and the kernel work of its TUN/AF_PACKET/raw-socket calls). Softirq work \
         that happens in ksoftirqd or on behalf of other processes is not counted on either side.",
        "P8: the RFC 8803 converter: `mpbond server` in netlab's converter namespace (198.19.3.2:5124, \
         one client key); mpbond runs add `--converter 198.19.3.2:5124 --converter-key-file KEY` and \
         must show every flow relayed through it (`tcp_via_converter`, no `converter_failed`). \
         Goodput: iperf3 (netlab's HTTP client without it) from the laptop to the plain TCP server \
         198.19.0.11, both paths limited to 200 Mbit/s with 20 ms RTT so that the direct baseline \
         (the laptop's TCP without mpbond) is path-limited. Time to first byte: curl \
         `%{time_starttransfer}` of `GET /bytes/1000` from the plain server, a new connection each \
         time, 20 ms RTT, median of 20 per run. Failover: P3/P4's outage and gap measurement on a \
         download from the plain server through the converter; the baseline is the kernel's MPTCP \
         client (IPPROTO_MPTCP, wwan0 as `subflow backup` endpoint) sending the Convert request and \
         the GET in its SYN (TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_NO_COOKIE) to the same converter.",
        "P9: `mpbond server` in the converter namespace (198.19.3.2:5124) beside a plain splice relay \
         (`--splice-relay`: kernel MPTCP listener on :5125, plain TCP to the destination, splice both \
         ways); both relay to a discarding server in inet (a child process). N idle connections from \
         the laptop (kernel MPTCP; for the converter with the Convert request in a TFO SYN) opened one \
         after another; served = has its socket (converter: a Connected reply), reached the \
         destination, and counted live by the relay. Memory = relay VmRSS growth ÷ N and \
         /proc/net/sockstat TCP mem growth ÷ N (a whole-kernel counter). CPU per GB = the relay \
         process's utime + stime during one upload of 10 × the P1 size, alone.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
