//! The data budget of each physical interface (a phone tether or a prepaid modem has a cap):
//! bytes today and in the current monthly period, from the interface's own kernel counters
//! (every byte the carrier bills, mpbond's or not), kept across restarts; and what the limits
//! in `[budget.<role>]` make of them.
//!
//! - Past the *soft* share of a limit (`soft_percent`, default 80 %), `status` says so and the
//!   interface is used only when nothing else works: no new flow starts on it while another
//!   interface works, no standing backup subflow or keep-alive stays on it, and a connection
//!   joins it on demand at a failover (`engine::IfaceState::last_resort`).
//! - Past the limit itself, with `at_limit = "block"` (the default), mpbond does not use the
//!   interface at all until the day or the period renews; with `"warn"` it says so and keeps
//!   using it as a last resort, as past the soft share.
//!
//! Pure logic: the caller samples the counters with the local date ([`Usage::observe`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::time::Instant;

/// A local calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date {
    /// Year.
    pub y: i32,
    /// Month, 1–12.
    pub m: u32,
    /// Day of the month, 1–31.
    pub d: u32,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

impl Date {
    /// The first day of the monthly period holding `self`, for periods that start on day
    /// `starts` (1–28) of each month.
    pub fn period_start(self, starts: u32) -> Date {
        if self.d >= starts {
            Date { d: starts, ..self }
        } else if self.m == 1 {
            Date {
                y: self.y - 1,
                m: 12,
                d: starts,
            }
        } else {
            Date {
                m: self.m - 1,
                d: starts,
                ..self
            }
        }
    }
}

/// `[budget.<role>]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileBudget {
    /// Megabytes (10^6 bytes) a day, local time.
    pub daily_mb: Option<u64>,
    /// Megabytes per monthly period.
    pub monthly_mb: Option<u64>,
    /// The day of the month the period renews (1–28, default 1).
    pub month_starts: Option<u32>,
    /// Share of a limit past which `status` warns (1–100, default 80).
    pub soft_percent: Option<u32>,
    /// What happens at a limit: `"block"` (default) or `"warn"`.
    pub at_limit: Option<AtLimit>,
    /// Rate cap, kbit/s (1,000 bit/s), for what mpbond sends out of the interface.
    pub rate_kbit: Option<u64>,
}

/// `[budget]`: one table per interface role.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileBudgets {
    /// The Wi-Fi interface.
    pub wifi: Option<FileBudget>,
    /// The cellular interface.
    pub cellular: Option<FileBudget>,
    /// Where the counts are kept (default `/var/lib/mpbond/budget.json`).
    pub state_file: Option<std::path::PathBuf>,
}

/// What a limit does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtLimit {
    /// The interface is not used until the day or the period renews.
    #[default]
    Block,
    /// Only reported.
    Warn,
}

/// The default state file.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/mpbond/budget.json";

/// One interface's limits, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a day.
    pub daily: Option<u64>,
    /// Bytes a period.
    pub monthly: Option<u64>,
    /// Day the period renews.
    pub month_starts: u32,
    /// Soft share, percent.
    pub soft_percent: u32,
    /// At the limit.
    pub at_limit: AtLimit,
    /// Rate cap, bytes/s ([`RateCap`]).
    pub rate: Option<u64>,
}

impl Limits {
    /// Resolves `[budget.<role>]`; `key` names it in errors.
    pub fn resolve(f: &FileBudget, key: &'static str) -> Result<Limits, ConfigError> {
        let month_starts = f.month_starts.unwrap_or(1);
        if !(1..=28).contains(&month_starts) {
            return Err(ConfigError::Invalid {
                key,
                reason: format!("month_starts {month_starts} is outside 1-28"),
            });
        }
        let soft_percent = f.soft_percent.unwrap_or(80);
        if !(1..=100).contains(&soft_percent) {
            return Err(ConfigError::Invalid {
                key,
                reason: format!("soft_percent {soft_percent} is outside 1-100"),
            });
        }
        if f.daily_mb == Some(0) || f.monthly_mb == Some(0) {
            return Err(ConfigError::Invalid {
                key,
                reason: "a limit of 0 MB: leave it out for no limit".into(),
            });
        }
        if f.rate_kbit == Some(0) {
            return Err(ConfigError::Invalid {
                key,
                reason: "a rate cap of 0 kbit/s: leave it out for no cap".into(),
            });
        }
        Ok(Limits {
            rate: f.rate_kbit.map(|k| k.saturating_mul(1000) / 8),
            daily: f.daily_mb.map(|m| m.saturating_mul(1_000_000)),
            monthly: f.monthly_mb.map(|m| m.saturating_mul(1_000_000)),
            month_starts,
            soft_percent,
            at_limit: f.at_limit.unwrap_or_default(),
        })
    }
}

/// A rate cap on what mpbond sends out of one interface: a token bucket of `rate` bytes a
/// second holding at most a burst of 100 ms at the rate (at least 64 KB, one super-segment),
/// full at the start. The engine asks it for every packet and datagram it sends to the
/// interface and drops what does not fit (a policer: TCP backs off as from any loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCap {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Option<Instant>,
}

impl RateCap {
    /// A cap of `rate` bytes a second.
    pub fn new(rate: u64) -> RateCap {
        let burst = (rate / 10).max(64 * 1024);
        RateCap {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// The rate, bytes a second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether `bytes` may go at `now` (their tokens are taken if so).
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        if let Some(last) = self.last {
            let us = now.saturating_duration_since(last).as_micros();
            let add = u64::try_from(us.saturating_mul(u128::from(self.rate)) / 1_000_000).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
        }
        self.last = Some(now);
        let b = bytes as u64;
        if self.tokens < b {
            return false;
        }
        self.tokens -= b;
        true
    }
}

/// Where an interface stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Within every soft share.
    #[default]
    Normal,
    /// Past a soft share.
    Soft,
    /// At or past a limit.
    Hard,
}

/// One interface's counts (the state file holds one per interface name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The day counted in `today`.
    pub day: Option<Date>,
    /// Bytes (received + sent) that day.
    pub today: u64,
    /// First day of the period counted in `period`.
    pub period_start: Option<Date>,
    /// Bytes this period.
    pub period: u64,
    /// Bytes per day (`YYYY-MM-DD`), the last [`HISTORY_DAYS`] days.
    #[serde(default)]
    pub history: BTreeMap<String, u64>,
    /// The counters (rx, tx) last seen (not kept across restarts: bytes while mpbond was not
    /// running are not counted).
    #[serde(skip)]
    pub last: Option<(u64, u64)>,
    /// Of `today`, handover mode's own bytes (joins, probes, keep-alives, relay acks: what the
    /// engine counts on a backup interface as `cellular_overhead_bytes`).
    #[serde(default)]
    pub overhead_today: u64,
    /// The same per day (`YYYY-MM-DD`), the last [`HISTORY_DAYS`] days.
    #[serde(default)]
    pub overhead_history: BTreeMap<String, u64>,
    /// The engine's overhead count last seen (it counts from zero when the daemon starts).
    #[serde(skip)]
    pub last_overhead: Option<u64>,
}

/// Days of history kept.
pub const HISTORY_DAYS: usize = 62;

/// How much a counter grew from `before` to `now`; one that went down was reset (the interface
/// created again, the daemon restarted), so its new value is all new.
fn growth(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// Adds `delta` to `today` in a per-day `history` of at most [`HISTORY_DAYS`] days.
fn add_to_day(history: &mut BTreeMap<String, u64>, today: Date, delta: u64) {
    *history.entry(today.to_string()).or_default() += delta;
    while history.len() > HISTORY_DAYS {
        history.pop_first();
    }
}

impl Usage {
    /// Counts the growth of the interface's counters `rx`, `tx` on `today`. A counter that went
    /// down was reset (the interface was created again): its new value is all new.
    pub fn observe(&mut self, today: Date, month_starts: u32, rx: u64, tx: u64) {
        let delta = match self.last {
            None => 0,
            Some((lr, lt)) => growth(rx, lr).saturating_add(growth(tx, lt)),
        };
        self.last = Some((rx, tx));
        self.roll(today, month_starts);
        self.today = self.today.saturating_add(delta);
        self.period = self.period.saturating_add(delta);
        add_to_day(&mut self.history, today, delta);
    }

    /// Counts the growth of the engine's overhead count `total` (since the daemon started) on
    /// `today`, after [`Usage::observe`] or [`Usage::roll`] for that day.
    pub fn observe_overhead(&mut self, today: Date, total: u64) {
        let delta = growth(total, self.last_overhead.unwrap_or(0));
        self.last_overhead = Some(total);
        self.overhead_today = self.overhead_today.saturating_add(delta);
        add_to_day(&mut self.overhead_history, today, delta);
    }

    /// Starts a new day or period when `today` is past the counted ones.
    pub fn roll(&mut self, today: Date, month_starts: u32) {
        if self.day != Some(today) {
            self.day = Some(today);
            self.today = 0;
            self.overhead_today = 0;
        }
        let start = today.period_start(month_starts);
        if self.period_start != Some(start) {
            self.period_start = Some(start);
            self.period = 0;
        }
    }

    /// Where these counts stand against `lim`.
    pub fn level(&self, lim: &Limits) -> Level {
        let of = |used: u64, limit: Option<u64>| match limit {
            Some(l) if used >= l => Level::Hard,
            Some(l) if u128::from(used) * 100 >= u128::from(l) * u128::from(lim.soft_percent) => Level::Soft,
            _ => Level::Normal,
        };
        of(self.today, lim.daily).max(of(self.period, lim.monthly))
    }
}

/// What the daemon shows of one interface's budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Interface name.
    pub name: String,
    /// Bytes today.
    pub today: u64,
    /// Bytes this period.
    pub period: u64,
    /// First day of the period.
    pub period_start: Option<Date>,
    /// Daily limit, bytes.
    pub daily_limit: Option<u64>,
    /// Period limit, bytes.
    pub monthly_limit: Option<u64>,
    /// Where it stands.
    pub level: Level,
    /// Whether mpbond stopped using it (hard limit, `at_limit = "block"`).
    pub blocked: bool,
    /// Of `today`, handover mode's own bytes ([`Usage::overhead_today`]).
    #[serde(default)]
    pub overhead_today: u64,
    /// Handover mode's own bytes per day ([`Usage::overhead_history`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overhead_by_day: BTreeMap<String, u64>,
}

impl BudgetStatus {
    /// The status of `usage` against `lim`.
    pub fn of(name: &str, usage: &Usage, lim: &Limits) -> BudgetStatus {
        let level = usage.level(lim);
        BudgetStatus {
            name: name.to_owned(),
            today: usage.today,
            period: usage.period,
            period_start: usage.period_start,
            daily_limit: lim.daily,
            monthly_limit: lim.monthly,
            level,
            blocked: level == Level::Hard && lim.at_limit == AtLimit::Block,
            overhead_today: usage.overhead_today,
            overhead_by_day: usage.overhead_history.clone(),
        }
    }

    /// One line for `status`.
    pub fn line(&self) -> String {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let of = |used: u64, lim: Option<u64>| match lim {
            Some(l) => format!("{} of {}", mb(used), mb(l)),
            None => mb(used),
        };
        format!(
            "{}: today {}{}, this period {}{}{}",
            self.name,
            of(self.today, self.daily_limit),
            if self.overhead_today > 0 {
                let o = self.overhead_today as f64;
                let o = if o < 1e6 {
                    format!("{:.1} kB", o / 1e3)
                } else {
                    mb(self.overhead_today)
                };
                format!(" ({o} of it handover overhead)")
            } else {
                String::new()
            },
            of(self.period, self.monthly_limit),
            self.period_start
                .map(|d| format!(" (since {d})"))
                .unwrap_or_default(),
            match (self.level, self.blocked) {
                (_, true) => " — limit reached, not used",
                (Level::Hard, false) => " — limit reached",
                (Level::Soft, _) => " — near the limit: used only when nothing else works",
                (Level::Normal, _) => "",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date { y, m, d }
    }

    fn limits(daily: Option<u64>, monthly: Option<u64>) -> Limits {
        Limits::resolve(
            &FileBudget {
                daily_mb: daily,
                monthly_mb: monthly,
                month_starts: Some(15),
                ..FileBudget::default()
            },
            "budget.cellular",
        )
        .unwrap()
    }

    #[test]
    fn handover_overhead_is_counted_per_day_from_the_engines_running_total() {
        let mut u = Usage::default();
        let d1 = day(2026, 12, 2);
        u.observe(d1, 1, 0, 0);
        // The engine counted 300 bytes before the first sample: they count.
        u.observe_overhead(d1, 300);
        u.observe(d1, 1, 1_000, 0);
        u.observe_overhead(d1, 500);
        assert_eq!((u.today, u.overhead_today), (1_000, 500));
        let d2 = day(2026, 12, 3);
        u.observe(d2, 1, 3_000, 0);
        u.observe_overhead(d2, 2_000);
        assert_eq!((u.today, u.overhead_today), (2_000, 1_500));
        assert_eq!(u.overhead_history["2026-12-02"], 500);
        assert_eq!(u.overhead_history["2026-12-03"], 1_500);
        let st = BudgetStatus::of("wwan0", &u, &limits(None, None));
        assert_eq!(st.overhead_today, 1_500);
        assert!(
            st.line()
                .contains("today 0.0 MB (1.5 kB of it handover overhead)"),
            "{}",
            st.line()
        );
        // A restarted daemon counts from zero again.
        u.last_overhead = None;
        u.observe_overhead(d2, 40);
        assert_eq!(u.overhead_today, 1_540);
    }

    #[test]
    fn periods_start_on_the_configured_day() {
        assert_eq!(day(2026, 12, 20).period_start(15), day(2026, 12, 15));
        assert_eq!(day(2026, 12, 14).period_start(15), day(2026, 11, 15));
        assert_eq!(day(2027, 1, 3).period_start(15), day(2026, 12, 15));
        assert_eq!(day(2027, 1, 1).period_start(1), day(2027, 1, 1));
    }

    #[test]
    fn counts_growth_across_days_periods_and_counter_resets() {
        let mut u = Usage::default();
        u.observe(day(2026, 12, 13), 15, 1_000, 2_000);
        assert_eq!((u.today, u.period), (0, 0), "the first sample is the baseline");
        u.observe(day(2026, 12, 13), 15, 1_500, 2_500);
        assert_eq!((u.today, u.period), (1_000, 1_000));
        // A new day; the period goes on.
        u.observe(day(2026, 12, 14), 15, 2_000, 2_500);
        assert_eq!((u.today, u.period), (500, 1_500));
        // The period renews on the 15th.
        u.observe(day(2026, 12, 15), 15, 2_100, 2_500);
        assert_eq!((u.today, u.period), (100, 100));
        // The interface came back: its counters restarted from 0.
        u.observe(day(2026, 12, 15), 15, 300, 200);
        assert_eq!((u.today, u.period), (600, 600));
        assert_eq!(u.history["2026-12-13"], 1_000);
        assert_eq!(u.history["2026-12-15"], 600);
        // Kept across a restart: counts yes, counter readings no.
        let back: Usage = serde_json::from_str(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!((back.today, back.period, back.last), (600, 600, None));
    }

    #[test]
    fn levels_follow_the_soft_share_and_the_limits() {
        let lim = limits(Some(100), Some(1_000));
        let mut u = Usage {
            today: 79_999_999,
            period: 10,
            ..Usage::default()
        };
        assert_eq!(u.level(&lim), Level::Normal);
        u.today = 80_000_000;
        assert_eq!(u.level(&lim), Level::Soft);
        u.today = 100_000_000;
        assert_eq!(u.level(&lim), Level::Hard);
        let st = BudgetStatus::of("wwan0", &u, &lim);
        assert!(st.blocked);
        assert!(st.line().contains("100.0 MB of 100.0 MB"), "{}", st.line());
        // The period limit counts too.
        u.today = 0;
        u.period = 1_000_000_000;
        assert_eq!(u.level(&lim), Level::Hard);
        assert_eq!(Usage::default().level(&limits(None, None)), Level::Normal);
    }

    #[test]
    fn the_rate_cap_lets_its_rate_and_one_burst_through() {
        // 8 Mbit/s = 1 MB/s: a burst of 100 kB, then 1 MB a second.
        let mut c = RateCap::new(1_000_000);
        let t0 = Instant::ZERO;
        let mut sent = 0u64;
        let mut dropped = 0u64;
        // 1,500-byte packets offered at 2 MB/s for 2 s.
        for i in 0..2_667u64 {
            let now = t0 + std::time::Duration::from_micros(i * 750);
            if c.take(now, 1500) {
                sent += 1500;
            } else {
                dropped += 1;
            }
        }
        // 2 s at 1 MB/s plus the 100 kB burst, within a packet.
        assert!((2_098_500..=2_101_500).contains(&sent), "{sent}");
        assert!(dropped > 1_000);
        // Idle refills up to the burst only.
        let later = t0 + std::time::Duration::from_secs(60);
        let mut burst = 0;
        while c.take(later, 1500) {
            burst += 1500;
        }
        assert_eq!(burst, 99_000, "one burst of 100 kB, whole packets: {burst}");
        // A super-segment larger than the burst never fits a small cap's bucket: 64 KB at least.
        assert!(RateCap::new(1000).take(t0, 65_536));
    }

    #[test]
    fn bad_limits_are_named() {
        for (f, want) in [
            (
                FileBudget {
                    month_starts: Some(31),
                    ..FileBudget::default()
                },
                "month_starts",
            ),
            (
                FileBudget {
                    soft_percent: Some(0),
                    ..FileBudget::default()
                },
                "soft_percent",
            ),
            (
                FileBudget {
                    daily_mb: Some(0),
                    ..FileBudget::default()
                },
                "0 MB",
            ),
        ] {
            let e = Limits::resolve(&f, "budget.cellular").unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
