//! Failover records: when the Wi-Fi path failed, how, which flows it affected, and how long
//! until their data moved again (issue 5 point 5: "every failover is recorded").

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::IfaceId;
use crate::time::Instant;

/// How a path failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverCause {
    /// Link down, carrier lost or address removed (a netlink event).
    Unavailable,
    /// The link stayed up but the path stopped answering.
    Unresponsive,
}

/// One failover.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailoverRecord {
    /// Serial number since start.
    pub id: u64,
    /// Interface that failed.
    pub from: IfaceId,
    /// How.
    pub cause: FailoverCause,
    /// When the path was last known good (µs of the engine clock).
    pub at_us: u64,
    /// Flows that had traffic on the failed path.
    pub flows: u32,
    /// Of those, flows whose data moved again since.
    pub resumed: u32,
    /// Time from `at` until data of an affected flow first arrived over another interface (µs).
    pub first_resume_us: Option<u64>,
    /// Time from `at` until the last of the resumed flows moved data again (µs).
    pub last_resume_us: Option<u64>,
}

/// The most recent failovers and the flows still waiting to resume.
#[derive(Debug, Default)]
pub(super) struct Failovers {
    records: VecDeque<(Instant, FailoverRecord)>,
    waiting: HashMap<u64, u64>,
    next_id: u64,
}

/// Records kept.
const KEEP: usize = 32;
/// Unresponsive reports of one interface within this window are one failover.
const MERGE: Duration = Duration::from_secs(2);

impl Failovers {
    /// Records that `from` failed at `at` (for the flows `flows`), or adds the flows to a
    /// failover of the same interface and cause that started within [`MERGE`].
    pub fn record(&mut self, at: Instant, from: IfaceId, cause: FailoverCause, flows: &[u64]) {
        let recent = self.records.iter_mut().rev().find(|(t, r)| {
            r.from == from && r.cause == cause && at.saturating_duration_since(*t) < MERGE && *t <= at + MERGE
        });
        let id = match recent {
            Some((t, r)) => {
                if at < *t {
                    *t = at;
                    r.at_us = at.as_micros();
                }
                r.id
            }
            None => {
                self.next_id += 1;
                let r = FailoverRecord {
                    id: self.next_id,
                    from,
                    cause,
                    at_us: at.as_micros(),
                    flows: 0,
                    resumed: 0,
                    first_resume_us: None,
                    last_resume_us: None,
                };
                self.records.push_back((at, r));
                if self.records.len() > KEEP {
                    self.records.pop_front();
                }
                self.next_id
            }
        };
        for &f in flows {
            if self.waiting.insert(f, id) != Some(id)
                && let Some((_, r)) = self.records.iter_mut().find(|(_, r)| r.id == id)
            {
                r.flows += 1;
            }
        }
    }

    /// Data for flow `flow` arrived on interface `iface` at `now`: it resumed if that is not
    /// the interface that failed.
    pub fn moved(&mut self, now: Instant, flow: u64, iface: IfaceId) {
        if self.waiting.is_empty() {
            return;
        }
        let Some(&id) = self.waiting.get(&flow) else {
            return;
        };
        if self.records.iter().any(|(_, r)| r.id == id && r.from == iface) {
            return;
        }
        self.waiting.remove(&flow);
        if let Some((t, r)) = self.records.iter_mut().find(|(_, r)| r.id == id) {
            let d = now.saturating_duration_since(*t).as_micros() as u64;
            r.resumed += 1;
            r.first_resume_us = Some(r.first_resume_us.map_or(d, |x| x.min(d)));
            r.last_resume_us = Some(r.last_resume_us.map_or(d, |x| x.max(d)));
        }
    }

    /// Flow `flow` is gone.
    pub fn forget(&mut self, flow: u64) {
        self.waiting.remove(&flow);
    }

    /// The records, oldest first.
    pub fn records(&self) -> Vec<FailoverRecord> {
        self.records.iter().map(|(_, r)| r.clone()).collect()
    }
}
