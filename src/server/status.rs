//! What `mpbond server --status` shows: connections now, bytes each way, refusals by cause, per
//! client key. The event loop keeps [`Stats`]; it publishes a [`ServerStatus`] snapshot that the
//! status socket's thread serves.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::convert::converter::RefusalCause;
use crate::convert::key::KeyId;

/// Connections by phase, now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Accepted, still sending their Convert request.
    pub requesting: u64,
    /// Authenticated, dialing the destination.
    pub dialing: u64,
    /// Relaying both ways.
    pub relaying: u64,
    /// Refused, writing the Error TLV and closing.
    pub refusing: u64,
    /// UDP sessions relayed (the datagram relay).
    #[serde(default)]
    pub udp_sessions: u64,
}

/// One event loop, in the merged status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopStatus {
    /// Connections it accepted since start.
    pub accepted: u64,
    /// Connections it relays now.
    pub relaying: u64,
}

/// One client key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// Its connections now (dialing or relaying).
    pub connections: u64,
    /// Connections relayed since start.
    pub connected_total: u64,
    /// Bytes from the client to destinations.
    pub bytes_up: u64,
    /// Bytes from destinations to the client.
    pub bytes_down: u64,
    /// Its refused requests by cause (causes decided after its proof verified).
    pub refusals: BTreeMap<String, u64>,
}

/// The whole status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Server pid.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Listening addresses.
    pub listen: Vec<SocketAddr>,
    /// Client keys loaded.
    pub keys_loaded: u64,
    /// Event-loop threads summed here (each holds its own connections).
    #[serde(default)]
    pub workers: u64,
    /// Per event loop (how the kernel spread the connections over their listeners).
    #[serde(default)]
    pub loops: Vec<LoopStatus>,
    /// Connections now.
    pub now: Phases,
    /// Counters since start (accepted, connected, closed, reset, timeouts, bytes_up, bytes_down, ...).
    pub counters: BTreeMap<String, u64>,
    /// Refused requests by cause (`RefusalCause::name`).
    pub refusals: BTreeMap<String, u64>,
    /// Policy refusals by address class.
    pub policy_denied: BTreeMap<String, u64>,
    /// Limit refusals by limit.
    pub limit_hits: BTreeMap<String, u64>,
    /// Per client key (16 hex digits).
    pub keys: BTreeMap<String, KeyStatus>,
}

/// The event loop's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Counters by name.
    pub counters: HashMap<&'static str, u64>,
    /// Refusals by cause.
    pub refusals: HashMap<&'static str, u64>,
    /// Policy refusals by class.
    pub policy_denied: HashMap<&'static str, u64>,
    /// Limit refusals by limit.
    pub limit_hits: HashMap<&'static str, u64>,
    /// Per key.
    pub keys: HashMap<KeyId, KeyStatus>,
}

impl Stats {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    /// Counts a refusal, for `key` too when known.
    pub fn refused(&mut self, cause: RefusalCause, key: Option<KeyId>) {
        *self.refusals.entry(cause.name()).or_default() += 1;
        if let Some(k) = key {
            *self
                .keys
                .entry(k)
                .or_default()
                .refusals
                .entry(cause.name().to_owned())
                .or_default() += 1;
        }
    }

    /// The per-key entry.
    pub fn key(&mut self, key: KeyId) -> &mut KeyStatus {
        self.keys.entry(key).or_default()
    }

    /// The snapshot (phase counts and header fields are filled by the caller).
    pub fn snapshot(&self) -> ServerStatus {
        let conv = |m: &HashMap<&'static str, u64>| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        ServerStatus {
            counters: conv(&self.counters),
            refusals: conv(&self.refusals),
            policy_denied: conv(&self.policy_denied),
            limit_hits: conv(&self.limit_hits),
            keys: self
                .keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..ServerStatus::default()
        }
    }
}

fn add_all(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl ServerStatus {
    /// The whole converter's status from its event loops' own: counts and counters summed;
    /// what is the same for every loop (pid, keys loaded, a key's connections, which come from
    /// the shared limits) taken once.
    pub fn merged(parts: &[ServerStatus]) -> ServerStatus {
        let mut m = ServerStatus::default();
        for p in parts {
            m.pid = p.pid;
            m.uptime_secs = m.uptime_secs.max(p.uptime_secs);
            for a in &p.listen {
                if !m.listen.contains(a) {
                    m.listen.push(*a);
                }
            }
            m.keys_loaded = m.keys_loaded.max(p.keys_loaded);
            m.workers += p.workers;
            // The datagram relay's part is no event loop (workers 0).
            if p.workers > 0 {
                m.loops.push(LoopStatus {
                    accepted: p.counter("accepted"),
                    relaying: p.now.relaying,
                });
            }
            m.now.udp_sessions += p.now.udp_sessions;
            m.now.requesting += p.now.requesting;
            m.now.dialing += p.now.dialing;
            m.now.relaying += p.now.relaying;
            m.now.refusing += p.now.refusing;
            add_all(&mut m.counters, &p.counters);
            add_all(&mut m.refusals, &p.refusals);
            add_all(&mut m.policy_denied, &p.policy_denied);
            add_all(&mut m.limit_hits, &p.limit_hits);
            for (id, k) in &p.keys {
                let e = m.keys.entry(id.clone()).or_default();
                e.connections = e.connections.max(k.connections);
                e.connected_total += k.connected_total;
                e.bytes_up += k.bytes_up;
                e.bytes_down += k.bytes_down;
                add_all(&mut e.refusals, &k.refusals);
            }
        }
        m
    }

    /// A counter (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Refusals of `cause` (0 when none).
    pub fn refusals_of(&self, cause: &str) -> u64 {
        self.refusals.get(cause).copied().unwrap_or(0)
    }

    /// The status as a table for people.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mpbond server: pid {}, up {} s, {} event loop(s), {} client key(s), listening on {}",
            self.pid,
            self.uptime_secs,
            self.workers,
            self.keys_loaded,
            self.listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let n = &self.now;
        let _ = writeln!(
            s,
            "connections now: {} relaying, {} dialing, {} requesting, {} refusing",
            n.relaying, n.dialing, n.requesting, n.refusing
        );
        if self.loops.len() > 1 {
            let per: Vec<String> = self
                .loops
                .iter()
                .map(|l| format!("{}/{}", l.relaying, l.accepted))
                .collect();
            let _ = writeln!(s, "per event loop (relaying/accepted): {}", per.join(", "));
        }
        let _ = writeln!(
            s,
            "since start: {} accepted, {} relayed, {} bytes up (client → destination), {} bytes down",
            self.counter("accepted"),
            self.counter("connected"),
            self.counter("bytes_up"),
            self.counter("bytes_down")
        );
        let others: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, v)| {
                **v > 0
                    && !k.starts_with("udp_")
                    && !["accepted", "connected", "bytes_up", "bytes_down"].contains(&k.as_str())
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(s, "  {}", others.join(", "));
        }
        let _ = writeln!(
            s,
            "udp: {} sessions now, {} opened, {} expired, {} datagrams up ({} bytes), {} down ({} bytes), {} path moves",
            n.udp_sessions,
            self.counter("udp_sessions_opened"),
            self.counter("udp_sessions_expired"),
            self.counter("udp_datagrams_up"),
            self.counter("udp_bytes_up"),
            self.counter("udp_datagrams_down"),
            self.counter("udp_bytes_down"),
            self.counter("udp_path_moves"),
        );
        let udp_other: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, v)| {
                **v > 0
                    && k.starts_with("udp_")
                    && ![
                        "udp_sessions_opened",
                        "udp_sessions_expired",
                        "udp_datagrams_up",
                        "udp_bytes_up",
                        "udp_datagrams_down",
                        "udp_bytes_down",
                        "udp_path_moves",
                    ]
                    .contains(&k.as_str())
            })
            .map(|(k, v)| format!("{} {v}", &k[4..]))
            .collect();
        if !udp_other.is_empty() {
            let _ = writeln!(s, "  {}", udp_other.join(", "));
        }
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.refusals.is_empty() {
            let _ = writeln!(s, "refusals: none");
        } else {
            let _ = writeln!(s, "refusals: {}", list(&self.refusals));
        }
        if !self.policy_denied.is_empty() {
            let _ = writeln!(s, "  policy: {}", list(&self.policy_denied));
        }
        if !self.limit_hits.is_empty() {
            let _ = writeln!(s, "  limits: {}", list(&self.limit_hits));
        }
        if !self.keys.is_empty() {
            let _ = writeln!(
                s,
                "{:<18} {:>6} {:>8} {:>14} {:>14}  refusals",
                "key", "now", "relayed", "bytes up", "bytes down"
            );
            for (id, k) in &self.keys {
                let _ = writeln!(
                    s,
                    "{id:<18} {:>6} {:>8} {:>14} {:>14}  {}",
                    k.connections,
                    k.connected_total,
                    k.bytes_up,
                    k.bytes_down,
                    if k.refusals.is_empty() {
                        "-".to_owned()
                    } else {
                        list(&k.refusals)
                    }
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_render() {
        let mut st = Stats::default();
        st.add("accepted", 3);
        st.add("bytes_up", 100);
        st.refused(RefusalCause::BadMac, None);
        st.refused(RefusalCause::Policy, Some(KeyId([1; 8])));
        *st.policy_denied.entry("loopback").or_default() += 1;
        st.key(KeyId([1; 8])).bytes_down = 7;
        let mut snap = st.snapshot();
        snap.now.relaying = 2;
        assert_eq!(snap.refusals_of("bad_mac"), 1);
        assert_eq!(snap.keys["0101010101010101"].refusals["policy"], 1);
        let json = serde_json::to_string(&snap).unwrap();
        let back: ServerStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        let text = snap.render();
        assert!(text.contains("2 relaying"), "{text}");
        assert!(text.contains("bad_mac 1"), "{text}");
        assert!(text.contains("policy: loopback 1"), "{text}");
        assert!(text.contains("0101010101010101"), "{text}");
    }

    #[test]
    fn loops_merge_into_one_status() {
        let part = |relaying: u64, bytes: u64, conns: u64| {
            let mut st = Stats::default();
            st.add("bytes_up", bytes);
            st.refused(RefusalCause::Replay, Some(KeyId([2; 8])));
            st.key(KeyId([2; 8])).bytes_up = bytes;
            let mut s = st.snapshot();
            s.pid = 7;
            s.workers = 1;
            s.keys_loaded = 3;
            s.listen = vec!["198.19.3.2:5124".parse().unwrap()];
            s.now.relaying = relaying;
            s.keys.get_mut("0202020202020202").unwrap().connections = conns;
            s
        };
        let m = ServerStatus::merged(&[part(4, 10, 9), part(5, 20, 9)]);
        assert_eq!((m.pid, m.workers, m.keys_loaded), (7, 2, 3));
        assert_eq!(m.listen.len(), 1);
        assert_eq!(m.now.relaying, 9);
        assert_eq!(m.loops.iter().map(|l| l.relaying).collect::<Vec<_>>(), [4, 5]);
        assert!(
            m.render()
                .contains("per event loop (relaying/accepted): 4/0, 5/0"),
            "{}",
            m.render()
        );
        assert_eq!(m.counter("bytes_up"), 30);
        assert_eq!(m.refusals_of("replay"), 2);
        let k = &m.keys["0202020202020202"];
        assert_eq!((k.connections, k.bytes_up, k.refusals["replay"]), (9, 30, 2));
    }
}
