//! The DNS forwarder's decisions, sans-IO: which path and resolver a query goes to, when it is
//! retried on the other path, which answer goes back to which client, when a client gets
//! SERVFAIL.
//!
//! Call order (the DNS thread, `io/dns.rs`, drives it):
//! 1. [`Forwarder::handle_paths`] whenever the engine's view of the paths changes (usable,
//!    unresponsive, primary);
//! 2. [`Forwarder::handle_query`] for each message a client sends to mpbond's resolver address,
//!    [`Forwarder::handle_reply`] for each message a path's resolver sends back,
//!    [`Forwarder::handle_send_failed`] when an upstream send or connection failed;
//! 3. [`Forwarder::handle_timeout`] once [`Forwarder::poll_timeout`] is reached;
//! 4. after each of those, [`Forwarder::poll_output`] until `None`.
//!
//! Policy. Each query is sent first to the best path's first resolver: the engine's primary
//! path when it is usable and neither unresponsive (engine) nor suspect (this forwarder saw a
//! query to it go unanswered), else the next path in order. An attempt not answered within the
//! path's timeout (3 × the RTT measured on that path's DNS exchanges, within
//! [`ForwarderConfig::min_timeout`]..[`ForwarderConfig::max_timeout`]) or whose send failed is
//! retried at once on the next path (a failover: counted), and the path becomes suspect; the
//! earlier attempt stays open, so whichever answer comes first is relayed. While the preferred
//! path is suspect, each query also goes to it in parallel (a probe), so its first answer makes
//! it preferred again. A query unanswered after [`ForwarderConfig::lifetime`] is answered
//! SERVFAIL, as is one that no path can carry.
//!
//! Upstream messages carry a fresh random ID per query (RFC 5452 §9.2), and an answer is taken
//! only from a resolver the query was sent to, on that path, with the query's question.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use super::msg::{self, Header, Question};
use crate::engine::IfaceId;
use crate::time::Instant;

/// How a client reached the forwarder (and how its query goes upstream: a TCP client's query
/// goes over TCP, so a large answer is not truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 1035 §4.2.2: two-octet length prefix).
    Tcp,
}

/// A client, as the I/O layer names it (the forwarder only hands it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

/// Names one upstream attempt of a query, for [`Forwarder::handle_send_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId {
    /// The query's upstream ID.
    pub id: u16,
    /// The attempt's index.
    pub n: u8,
}

/// What the forwarder asks the I/O layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `payload` to `resolver` port 53 from `path` (a socket bound to that interface).
    Send {
        /// Path (interface id).
        path: IfaceId,
        /// Resolver.
        resolver: IpAddr,
        /// UDP, or TCP (one connection per attempt).
        transport: Transport,
        /// For a send failure report.
        attempt: AttemptId,
        /// The message.
        payload: Vec<u8>,
    },
    /// Send `payload` to a client.
    Answer {
        /// Client.
        client: ClientId,
        /// The message.
        payload: Vec<u8>,
    },
}

/// What the engine knows of a path (its read-only hook, `Engine::path_health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathSignal {
    /// Up, with carrier and an open I/O thread.
    pub usable: bool,
    /// Its subflows stopped answering.
    pub unresponsive: bool,
    /// New traffic uses it (the engine's primary).
    pub primary: bool,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Shortest wait for an answer before trying the next path.
    pub min_timeout: Duration,
    /// Longest such wait.
    pub max_timeout: Duration,
    /// The wait while a path's RTT is unknown.
    pub initial_timeout: Duration,
    /// A query unanswered this long is answered SERVFAIL.
    pub lifetime: Duration,
    /// Queries in flight at most; beyond, SERVFAIL.
    pub max_pending: usize,
    /// Seed of the upstream IDs (from the OS's random source).
    pub seed: u64,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            min_timeout: Duration::from_millis(150),
            max_timeout: Duration::from_millis(500),
            initial_timeout: Duration::from_millis(300),
            lifetime: Duration::from_secs(4),
            max_pending: 2048,
            seed: 0x6d70_626f_6e64,
        }
    }
}

/// Counters, for `mpbond status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsCounters {
    /// Queries from clients.
    pub queries: u64,
    /// Answers relayed, per path (index = interface id; `status` shows them per path).
    #[serde(skip)]
    pub answered: Vec<u64>,
    /// Queries retried on another path (timeout or send failure).
    pub failovers: u64,
    /// SERVFAIL answers mpbond made (no path, unanswered, too many in flight).
    pub servfail: u64,
    /// Client messages too short or not queries (counted, dropped).
    pub bad_queries: u64,
    /// Queries forwarded untouched but for the ID (another opcode, no readable question).
    pub unparsed_forwarded: u64,
    /// Upstream messages that were not answers to an open query's attempt (late duplicates
    /// from the other path, spoofs, garbage).
    pub unmatched_replies: u64,
    /// Upstream sends or connections that failed.
    pub send_failures: u64,
}

#[derive(Debug, Clone)]
struct Path {
    resolvers: Vec<IpAddr>,
    signal: PathSignal,
    /// When an attempt on this path went unanswered or failed (cleared by an answer).
    suspect_since: Option<Instant>,
    srtt: Option<Duration>,
}

impl Path {
    fn healthy(&self) -> bool {
        self.signal.usable && !self.signal.unresponsive && self.suspect_since.is_none()
    }
}

#[derive(Debug, Clone)]
struct Attempt {
    path: IfaceId,
    resolver: IpAddr,
    sent: Instant,
    /// The next attempt was started (timeout or failure).
    superseded: bool,
}

impl Pending {
    /// Records a new attempt of query `id` (its number is its index) and returns what sends it.
    fn attempt(
        &mut self,
        now: Instant,
        id: u16,
        path: IfaceId,
        resolver: IpAddr,
        superseded: bool,
    ) -> Output {
        let n = self.attempts.len() as u8;
        self.attempts.push(Attempt {
            path,
            resolver,
            sent: now,
            superseded,
        });
        Output::Send {
            path,
            resolver,
            transport: self.transport,
            attempt: AttemptId { id, n },
            payload: self.query.clone(),
        }
    }
}

#[derive(Debug)]
struct Pending {
    client: ClientId,
    client_id: u16,
    transport: Transport,
    question: Option<Question>,
    /// The message as sent upstream (upstream ID in place).
    query: Vec<u8>,
    started: Instant,
    /// Attempts not yet made, best first.
    plan: VecDeque<(IfaceId, IpAddr)>,
    attempts: Vec<Attempt>,
    /// When the newest attempt times out.
    next_try: Instant,
}

/// The forwarder. See the module documentation for the call order and the policy.
#[derive(Debug)]
pub struct Forwarder {
    cfg: ForwarderConfig,
    paths: Vec<Path>,
    pending: HashMap<u16, Pending>,
    out: VecDeque<Output>,
    rng: u64,
    counters: DnsCounters,
}

impl Forwarder {
    /// A forwarder for paths `0..resolvers.len()` (interface ids), each with its resolvers
    /// (best first). Paths start unusable until [`Forwarder::handle_paths`].
    pub fn new(cfg: ForwarderConfig, resolvers: Vec<Vec<IpAddr>>) -> Forwarder {
        let n = resolvers.len();
        Forwarder {
            rng: cfg.seed,
            cfg,
            paths: resolvers
                .into_iter()
                .map(|resolvers| Path {
                    resolvers,
                    signal: PathSignal::default(),
                    suspect_since: None,
                    srtt: None,
                })
                .collect(),
            pending: HashMap::new(),
            out: VecDeque::new(),
            counters: DnsCounters {
                answered: vec![0; n],
                ..DnsCounters::default()
            },
        }
    }

    /// The counters.
    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Queries in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether `path` is suspect (an attempt on it went unanswered since its last answer).
    pub fn is_suspect(&self, path: IfaceId) -> bool {
        self.paths
            .get(usize::from(path))
            .is_some_and(|p| p.suspect_since.is_some())
    }

    /// Path `path`, created (unusable, no resolver) if it is new; `None` beyond
    /// [`MAX_INTERFACES`](crate::config::MAX_INTERFACES).
    fn path_mut(&mut self, path: IfaceId) -> Option<&mut Path> {
        let i = usize::from(path);
        if i >= crate::config::MAX_INTERFACES {
            return None;
        }
        while self.paths.len() <= i {
            self.paths.push(Path {
                resolvers: Vec::new(),
                signal: PathSignal::default(),
                suspect_since: None,
                srtt: None,
            });
        }
        if self.counters.answered.len() <= i {
            self.counters.answered.resize(i + 1, 0);
        }
        self.paths.get_mut(i)
    }

    /// The resolvers of `path` (best first), e.g. one picked up while running, or one whose
    /// resolvers were learnt again. New resolvers are a new network: what was measured or
    /// suspected of the old ones is forgotten.
    pub fn set_resolvers(&mut self, _now: Instant, path: IfaceId, resolvers: Vec<IpAddr>) {
        let Some(p) = self.path_mut(path) else {
            return;
        };
        if p.resolvers != resolvers {
            p.resolvers = resolvers;
            p.suspect_since = None;
            p.srtt = None;
        }
    }

    /// `path`'s interface vanished: it has no resolver until [`Forwarder::set_resolvers`], and
    /// queries waiting on it move on to their next attempt at once.
    pub fn forget_path(&mut self, now: Instant, path: IfaceId) {
        let Some(p) = self.paths.get_mut(usize::from(path)) else {
            return;
        };
        p.resolvers.clear();
        p.suspect_since = None;
        p.srtt = None;
        let mut waiting = Vec::new();
        for (&id, q) in &mut self.pending {
            q.plan.retain(|&(pp, _)| pp != path);
            if q.attempts.iter().any(|a| a.path == path && !a.superseded) {
                waiting.push(id);
            }
        }
        for id in waiting {
            self.next_attempt(now, id);
        }
    }

    /// The resolvers of `path`, best first.
    pub fn resolvers(&self, path: IfaceId) -> &[IpAddr] {
        self.paths
            .get(usize::from(path))
            .map_or(&[], |p| &p.resolvers[..])
    }

    /// The engine's view of the paths changed (`signals[i]` is path `i`). A path that became
    /// usable again is a new network: what was suspected of it is forgotten.
    pub fn handle_paths(&mut self, _now: Instant, signals: &[PathSignal]) {
        if let Some(last) = signals.len().checked_sub(1) {
            self.path_mut(last as IfaceId);
        }
        for (p, s) in self.paths.iter_mut().zip(signals) {
            if s.usable && !p.signal.usable {
                p.suspect_since = None;
                p.srtt = None;
            }
            p.signal = *s;
        }
    }

    fn next_id(&mut self) -> u16 {
        // SplitMix64 over a seed from the OS's random source.
        for _ in 0..64 {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let id = (z ^ (z >> 31)) as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
        // max_pending is far below 65,536, so a free ID exists; scan for it.
        (0..=u16::MAX)
            .find(|id| !self.pending.contains_key(id))
            .unwrap_or(0)
    }

    /// The attempts for a new query, best first: each round takes the next resolver of every
    /// path, the paths ordered healthy before not, the engine's primary first, then by id.
    fn plan(&self) -> VecDeque<(IfaceId, IpAddr)> {
        let mut order: Vec<usize> = (0..self.paths.len())
            .filter(|&i| self.paths[i].signal.usable && !self.paths[i].resolvers.is_empty())
            .collect();
        order.sort_by_key(|&i| (!self.paths[i].healthy(), !self.paths[i].signal.primary, i));
        let rounds = order
            .iter()
            .map(|&i| self.paths[i].resolvers.len())
            .max()
            .unwrap_or(0);
        let mut plan = VecDeque::new();
        for k in 0..rounds {
            for &i in &order {
                if let Some(&r) = self.paths[i].resolvers.get(k) {
                    plan.push_back((i as IfaceId, r));
                }
            }
        }
        plan
    }

    fn timeout(&self, path: IfaceId) -> Duration {
        self.paths
            .get(usize::from(path))
            .and_then(|p| p.srtt)
            .map_or(self.cfg.initial_timeout, |s| s * 3)
            .clamp(self.cfg.min_timeout, self.cfg.max_timeout)
    }

    fn servfail(&mut self, client: ClientId, query: &[u8], question_end: Option<usize>) {
        if let Some(payload) = msg::servfail(query, question_end) {
            self.counters.servfail += 1;
            self.out.push_back(Output::Answer { client, payload });
        }
    }

    /// A message from `client`. Returns false when it was dropped (too short to answer, or not
    /// a query: counted in `bad_queries`); every other query gets an answer or SERVFAIL.
    pub fn handle_query(
        &mut self,
        now: Instant,
        client: ClientId,
        transport: Transport,
        query: &[u8],
    ) -> bool {
        let Ok(h) = Header::parse(query) else {
            self.counters.bad_queries += 1;
            return false;
        };
        if h.is_response() {
            self.counters.bad_queries += 1;
            return false;
        }
        self.counters.queries += 1;
        // Standard queries with a readable question are matched on it too; anything else is
        // forwarded untouched but for the ID, and matched on ID and resolver alone.
        let parsed = (h.opcode() == msg::OPCODE_QUERY)
            .then(|| msg::parse_question(query).ok())
            .flatten();
        if parsed.is_none() {
            self.counters.unparsed_forwarded += 1;
        }
        let question_end = parsed.as_ref().map(|(_, end)| *end);
        if self.pending.len() >= self.cfg.max_pending {
            self.servfail(client, query, question_end);
            return true;
        }
        let plan = self.plan();
        if plan.is_empty() {
            self.servfail(client, query, question_end);
            return true;
        }
        let id = self.next_id();
        let mut upstream = query.to_vec();
        msg::set_id(&mut upstream, id);
        self.pending.insert(
            id,
            Pending {
                client,
                client_id: h.id,
                transport,
                question: parsed.map(|(q, _)| q),
                query: upstream,
                started: now,
                plan,
                attempts: Vec::new(),
                next_try: now,
            },
        );
        self.next_attempt(now, id);
        // While a better path is suspect but up, probe it with this query too.
        let first = self
            .pending
            .get(&id)
            .and_then(|p| p.attempts.first())
            .map(|a| a.path);
        if let Some(first) = first {
            let probe = (0..self.paths.len()).find(|&i| {
                let p = &self.paths[i];
                i != usize::from(first)
                    && p.signal.usable
                    && !p.resolvers.is_empty()
                    && (p.signal.primary || i < usize::from(first))
                    && !p.healthy()
            });
            if let Some(i) = probe {
                self.probe(now, id, i as IfaceId);
            }
        }
        true
    }

    /// Sends query `id` to the next (path, resolver) of its plan; SERVFAIL when none is left
    /// and no attempt is open.
    fn next_attempt(&mut self, now: Instant, id: u16) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        for a in &mut p.attempts {
            a.superseded = true;
        }
        let Some((path, resolver)) = p.plan.pop_front() else {
            // Nothing left to try: wait for a late answer until the lifetime ends.
            p.next_try = p.started + self.cfg.lifetime;
            return;
        };
        if !p.attempts.is_empty() {
            self.counters.failovers += 1;
        }
        let send = p.attempt(now, id, path, resolver, false);
        let t = self.timeout(path);
        if let Some(p) = self.pending.get_mut(&id) {
            p.next_try = (now + t).min(p.started + self.cfg.lifetime);
        }
        self.out.push_back(send);
    }

    /// Also sends query `id` to `path`'s first resolver, without waiting on it.
    fn probe(&mut self, now: Instant, id: u16, path: IfaceId) {
        let Some(&resolver) = self
            .paths
            .get(usize::from(path))
            .and_then(|p| p.resolvers.first())
        else {
            return;
        };
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.plan.retain(|&(pp, r)| (pp, r) != (path, resolver));
        // A probe is never waited on: it is born superseded.
        let send = p.attempt(now, id, path, resolver, true);
        self.out.push_back(send);
    }

    fn mark_suspect(&mut self, now: Instant, path: IfaceId) {
        if let Some(p) = self.paths.get_mut(usize::from(path))
            && p.suspect_since.is_none()
        {
            p.suspect_since = Some(now);
            tracing::info!(
                path,
                "DNS: a resolver on this path did not answer; trying the next path"
            );
        }
    }

    /// Attempt `attempt` could not be sent (no route, connection refused or reset): the path
    /// is suspect and the query moves on to the next path at once.
    pub fn handle_send_failed(&mut self, now: Instant, attempt: AttemptId) {
        self.counters.send_failures += 1;
        let Some(p) = self.pending.get(&attempt.id) else {
            return;
        };
        let Some(a) = p.attempts.get(usize::from(attempt.n)) else {
            return;
        };
        let (path, superseded) = (a.path, a.superseded);
        self.mark_suspect(now, path);
        if !superseded {
            self.next_attempt(now, attempt.id);
        }
    }

    /// A message from `resolver` on `path`. Returns false when it answers no open attempt
    /// (counted in `unmatched_replies`).
    pub fn handle_reply(&mut self, now: Instant, path: IfaceId, resolver: IpAddr, reply: &[u8]) -> bool {
        let matched = self.match_reply(path, resolver, reply);
        let Some((id, n)) = matched else {
            self.counters.unmatched_replies += 1;
            return false;
        };
        let Some(p) = self.pending.remove(&id) else {
            return false;
        };
        let sample = now.saturating_duration_since(p.attempts[n].sent);
        if let Some(st) = self.paths.get_mut(usize::from(path)) {
            if st.suspect_since.take().is_some() {
                tracing::info!(path, "DNS: the path's resolver answers again");
            }
            // RFC 6298 §2.3-style smoothing (α = 1/8) of the path's DNS round trip.
            st.srtt = Some(st.srtt.map_or(sample, |s| (s * 7 + sample) / 8));
        }
        if let Some(c) = self.counters.answered.get_mut(usize::from(path)) {
            *c += 1;
        }
        let mut payload = reply.to_vec();
        msg::set_id(&mut payload, p.client_id);
        self.out.push_back(Output::Answer {
            client: p.client,
            payload,
        });
        true
    }

    /// The open query and attempt `reply` answers, if any.
    fn match_reply(&self, path: IfaceId, resolver: IpAddr, reply: &[u8]) -> Option<(u16, usize)> {
        let h = Header::parse(reply).ok()?;
        if !h.is_response() {
            return None;
        }
        let p = self.pending.get(&h.id)?;
        let n = p
            .attempts
            .iter()
            .position(|a| a.path == path && a.resolver == resolver)?;
        if let Some(q) = &p.question {
            // RFC 5452 §9.1: the question of the answer must be the question asked.
            let (rq, _) = msg::parse_question(reply).ok()?;
            if rq != *q {
                return None;
            }
        }
        Some((h.id, n))
    }

    /// The next instant [`Forwarder::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_try).min()
    }

    /// Runs the timers: attempts unanswered in time move on to the next path (the path becomes
    /// suspect), queries past their lifetime are answered SERVFAIL.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if now >= p.started + self.cfg.lifetime {
                if let Some(p) = self.pending.remove(&id) {
                    for a in p.attempts.iter().filter(|a| !a.superseded) {
                        self.mark_suspect(now, a.path);
                    }
                    let mut query = p.query;
                    msg::set_id(&mut query, p.client_id);
                    let end = p
                        .question
                        .is_some()
                        .then(|| msg::parse_question(&query).ok().map(|(_, e)| e))
                        .flatten();
                    self.servfail(p.client, &query, end);
                }
                continue;
            }
            let open: Vec<IfaceId> = p
                .attempts
                .iter()
                .filter(|a| !a.superseded)
                .map(|a| a.path)
                .collect();
            for path in open {
                self.mark_suspect(now, path);
            }
            self.next_attempt(now, id);
        }
    }

    /// The next thing to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}
