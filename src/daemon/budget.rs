//! The budget thread: every [`SAMPLE`] it reads the physical interfaces' byte counters (over
//! netlink), counts them into each interface's [`Usage`] by local date, keeps the counts in the
//! state file (every [`SAVE`], and when it stops; written to a temporary file and renamed, so a
//! crash leaves the old counts or the new ones), and blocks an interface past a limit with
//! `at_limit = "block"` (its [`InterfaceStatus::budget_blocked`]; the engine then treats it as
//! unusable). Past the soft share it sets [`InterfaceStatus::budget_soft`]: the engine uses the
//! interface only when nothing else works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::{Events, Poll};

use super::status::InterfaceStatus;
use crate::budget::{BudgetStatus, Level, Limits, Usage};
use crate::config::{BudgetConfig, Config, IfaceRole};
use crate::io::Worker;
use crate::io::engine::Overhead;
use crate::sys;

/// How often the counters are read.
pub const SAMPLE: Duration = Duration::from_secs(2);
/// How often the counts are written to the state file.
pub const SAVE: Duration = Duration::from_secs(60);

/// What the thread shares with the status handler.
pub type Shown = Arc<Mutex<Vec<BudgetStatus>>>;

/// The counts by interface name, as the state file holds them.
fn load(path: &Path) -> BTreeMap<String, Usage> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!("{}: unreadable ({e}); counting from zero", path.display());
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; counting from zero", path.display());
            BTreeMap::new()
        }
    }
}

fn save(path: &Path, counts: &BTreeMap<String, Usage>) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(counts).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot keep the data budget in {}: {e}", path.display());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Iface {
    name: String,
    /// The engine's id of the interface (its place in the interface list).
    id: usize,
    limits: Option<Limits>,
}

/// Follows the interface list (`(name, role)` by engine id): an interface picked up while running
/// gets the limits of its role as those present at `up` do, and one that took the place of a
/// vanished one (its id reused) gets its own. Returns the ids that changed.
fn sync_ifaces(ifaces: &mut Vec<Iface>, list: &[(String, IfaceRole)], budget: &BudgetConfig) -> Vec<usize> {
    let mut changed = Vec::new();
    for (id, (name, role)) in list.iter().enumerate() {
        let want = Iface {
            name: name.clone(),
            id,
            limits: budget.limits_for(*role),
        };
        match ifaces.iter_mut().find(|i| i.id == id) {
            Some(i) if i.name == *name => continue,
            Some(i) => *i = want,
            None => ifaces.push(want),
        }
        changed.push(id);
    }
    changed
}

struct Thread {
    ifaces: Vec<Iface>,
    budget: BudgetConfig,
    counts: BTreeMap<String, Usage>,
    state_file: PathBuf,
    interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    shown: Shown,
    changed: Sender<()>,
    overhead: Overhead,
}

impl Thread {
    fn sample(&mut self) {
        let list: Vec<(String, IfaceRole)> = match self.interfaces.lock() {
            Ok(g) => g.iter().map(|i| (i.name.clone(), i.role)).collect(),
            Err(_) => return,
        };
        for id in sync_ifaces(&mut self.ifaces, &list, &self.budget) {
            // The engine's overhead count of this id so far was another interface's (or none).
            if let (Some((name, _)), Some(o)) = (list.get(id), self.overhead.get(id)) {
                self.counts.entry(name.clone()).or_default().last_overhead = Some(o.load(Ordering::Relaxed));
            }
        }
        let bytes = match crate::route::netlink::Rtnl::open().and_then(|mut r| r.link_bytes()) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("budget: cannot read the link counters: {e}");
                return;
            }
        };
        let today = sys::clock::local_date();
        let mut shown = Vec::new();
        let mut blocked_changed = false;
        for i in &self.ifaces {
            let u = self.counts.entry(i.name.clone()).or_default();
            let starts = i.limits.map_or(1, |l| l.month_starts);
            match bytes.iter().find(|(n, _, _)| *n == i.name) {
                Some((_, rx, tx)) => u.observe(today, starts, *rx, *tx),
                // Gone: its counters restart when it is back.
                None => {
                    u.last = None;
                    u.roll(today, starts);
                }
            }
            if let Some(o) = self.overhead.get(i.id) {
                u.observe_overhead(today, o.load(Ordering::Relaxed));
            }
            let st = match &i.limits {
                Some(l) => BudgetStatus::of(&i.name, u, l),
                None => BudgetStatus {
                    name: i.name.clone(),
                    today: u.today,
                    period: u.period,
                    period_start: u.period_start,
                    overhead_today: u.overhead_today,
                    overhead_by_day: u.overhead_history.clone(),
                    ..BudgetStatus::default()
                },
            };
            // Past the soft share (or at a limit that only warns): used only when nothing
            // else works.
            let soft = !st.blocked && st.level != Level::Normal;
            if let Ok(mut g) = self.interfaces.lock()
                && let Some(s) = g.iter_mut().find(|s| s.name == i.name)
            {
                if s.budget_blocked != st.blocked {
                    s.budget_blocked = st.blocked;
                    blocked_changed = true;
                    if st.blocked {
                        tracing::warn!("{}: data budget used up; not used until it renews", i.name);
                    } else {
                        tracing::info!("{}: data budget renewed; used again", i.name);
                    }
                }
                if s.budget_soft != soft {
                    s.budget_soft = soft;
                    blocked_changed = true;
                    if soft {
                        tracing::warn!(
                            "{}: data budget near its limit; used only when nothing else works",
                            i.name
                        );
                    }
                }
            }
            shown.push(st);
        }
        if let Ok(mut g) = self.shown.lock() {
            *g = shown;
        }
        if blocked_changed {
            // The engine reads the interfaces again.
            let _ = self.changed.try_send(());
        }
    }
}

/// Starts the thread for `config`'s interfaces; what it shows goes to `shown`.
pub fn spawn(
    config: &Config,
    interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    changed: Sender<()>,
    shown: Shown,
    overhead: Overhead,
) -> std::io::Result<Worker> {
    let b = &config.budget;
    let mut t = Thread {
        // `[budget.wifi]` limits each primary interface, `[budget.cellular]` each backup; the
        // first sample reads them from the interface list.
        ifaces: Vec::new(),
        budget: b.clone(),
        counts: load(&b.state_file),
        state_file: b.state_file.clone(),
        interfaces,
        shown: shown.clone(),
        changed,
        overhead,
    };
    let worker = Worker::spawn(
        "mpbond-budget",
        Poll::new()?,
        move |mut poll, stop: Arc<AtomicBool>| {
            let mut events = Events::with_capacity(4);
            let mut since_save = Duration::ZERO;
            t.sample();
            while !stop.load(Ordering::SeqCst) {
                if poll.poll(&mut events, Some(SAMPLE)).is_err() {
                    std::thread::sleep(SAMPLE);
                }
                // Woken through WAKE: stopping.
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                t.sample();
                since_save += SAMPLE;
                if since_save >= SAVE {
                    since_save = Duration::ZERO;
                    save(&t.state_file, &t.counts);
                }
            }
            t.sample();
            save(&t.state_file, &t.counts);
        },
    )?;
    Ok(worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_picked_up_later_gets_the_limits_of_its_role() {
        let lim = |daily| Limits {
            daily: Some(daily),
            monthly: None,
            month_starts: 1,
            soft_percent: 80,
            at_limit: crate::budget::AtLimit::Block,
            rate: None,
        };
        let budget = BudgetConfig {
            wifi: Some(lim(1)),
            cellular: Some(lim(2)),
            ..BudgetConfig::default()
        };
        let mut ifaces = Vec::new();
        let mut list = vec![
            ("wlan0".to_string(), IfaceRole::Primary),
            ("wwan0".to_string(), IfaceRole::Backup),
        ];
        assert_eq!(sync_ifaces(&mut ifaces, &list, &budget), [0, 1]);
        assert_eq!(ifaces.len(), 2);
        assert_eq!(ifaces[1].limits, Some(lim(2)));
        // A tether appears (backup), then an Ethernet takes the place of a vanished one.
        list.push(("usb0".to_string(), IfaceRole::Backup));
        sync_ifaces(&mut ifaces, &list, &budget);
        assert_eq!(
            ifaces[2],
            Iface {
                name: "usb0".into(),
                id: 2,
                limits: Some(lim(2))
            }
        );
        list[2] = ("enp5s0".to_string(), IfaceRole::Primary);
        assert_eq!(sync_ifaces(&mut ifaces, &list, &budget), [2]);
        assert_eq!(ifaces.len(), 3);
        assert_eq!(
            (ifaces[2].name.as_str(), ifaces[2].id, ifaces[2].limits),
            ("enp5s0", 2, Some(lim(1)))
        );
        // Nothing changed: nothing moves.
        let before = ifaces.clone();
        assert!(sync_ifaces(&mut ifaces, &list, &budget).is_empty());
        assert_eq!(ifaces, before);
    }

    #[test]
    fn counts_survive_a_save_and_a_load() {
        let dir = std::env::temp_dir().join(format!("mpbond-budget-{}", std::process::id()));
        let path = dir.join("budget.json");
        let mut counts = BTreeMap::new();
        let mut u = Usage::default();
        let d = crate::budget::Date { y: 2026, m: 12, d: 2 };
        u.observe(d, 1, 0, 0);
        u.observe(d, 1, 700, 300);
        counts.insert("wwan0".to_owned(), u);
        save(&path, &counts);
        let back = load(&path);
        assert_eq!(back["wwan0"].today, 1_000);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path).is_empty(), "a corrupt file counts from zero");
        assert!(load(&dir.join("missing.json")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
