//! The laptop's RFC 8803 Transport Converters (`mpbond server`): which one a new TCP flow goes
//! through, which are down and until when, and which destinations go direct instead.
//!
//! Policy (pure, explicit time):
//! - a destination on a LAN (private, link-local, unique-local, loopback, shared carrier space)
//!   never goes through a converter: a converter on the Internet cannot reach it, and it must not
//!   learn of it;
//! - a destination known to speak MPTCP (a direct flow to it connected with MPTCP, or a
//!   converter's reply said so) goes direct for [`MPTCP_CAPABLE_TTL`]: it gets the same failover
//!   without the converter's extra hop;
//! - otherwise the flow goes through a converter that is up. With several, a destination is
//!   spread by a hash of its address over those that are up (the way to scale out: several
//!   converters, no state shared between them), so it keeps its converter while that one answers;
//! - a converter that does not answer (or reply) in time, resets, or refuses this laptop is
//!   marked down for a while (doubling from [`DOWN_MIN`] to [`DOWN_MAX`]) and the flow goes
//!   direct; once the time has passed the next flow tries it again;
//! - "Not Authorized" (RFC 8803 §6.2.8: "administratively prohibited, authorization failure, or
//!   invalid Cookie TLV") from a converter that carried one of our flows in the last
//!   [`TRUSTED_FOR`] means this destination is prohibited there (its egress policy), not that our
//!   key is bad: that destination goes direct for [`REFUSED_TTL`] and the converter stays up;
//! - a destination that accepted a connection through a converter in the last [`ACCEPTED_TTL`]
//!   is expected to accept the next one too: that flow's host SYN is answered as soon as the
//!   converter's handshake completes, before its reply ("early", saving the round trip Linux's
//!   MPTCP adds: it sends nothing before the client's third ACK, so the reply cannot come
//!   sooner). If the destination refuses after all, or the converter fails, the host's
//!   connection is reset instead of refused; a first contact always waits for the reply, so the
//!   host sees exactly what it would see directly.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::convert::msg::ErrorCode;
use crate::expiring::ExpiringSet;
use crate::time::Instant;

/// How long a destination that spoke MPTCP is sent direct.
pub const MPTCP_CAPABLE_TTL: Duration = Duration::from_secs(3600);
/// Most destinations remembered as speaking MPTCP.
pub const MPTCP_CAPABLE_MAX: usize = 4096;
/// A converter that carried a flow this recently accepts our key: its "Not Authorized" is about
/// the destination.
pub const TRUSTED_FOR: Duration = Duration::from_secs(60);
/// How long a destination a converter prohibits is sent direct.
pub const REFUSED_TTL: Duration = Duration::from_secs(600);
/// How long a destination that accepted through a converter gets early answers.
pub const ACCEPTED_TTL: Duration = Duration::from_secs(600);
/// First time a failed converter is left alone.
pub const DOWN_MIN: Duration = Duration::from_secs(10);
/// Longest time a failed converter is left alone before it is tried again.
pub const DOWN_MAX: Duration = Duration::from_secs(300);

/// Why a converter was marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConverterFailure {
    /// Its MPTCP handshake was not answered in time.
    Unreachable,
    /// It completed the handshake but sent no Convert reply in time.
    NoReply,
    /// It reset the connection before its reply.
    Reset,
    /// It refused this laptop (key, limits, its own failure), by Error TLV code.
    Refused(u8),
    /// Its reply was not a Convert message.
    Malformed,
}

impl ConverterFailure {
    /// Short name, for status.
    pub fn name(self) -> &'static str {
        match self {
            ConverterFailure::Unreachable => "unreachable",
            ConverterFailure::Reset => "reset",
            ConverterFailure::Refused(_) => "refused",
            ConverterFailure::Malformed => "malformed",
            ConverterFailure::NoReply => "no_reply",
        }
    }
}

/// A converter as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConverterView {
    /// Its address.
    pub addr: SocketAddr,
    /// New flows may use it now.
    pub up: bool,
    /// While down: milliseconds until it is tried again.
    pub retry_in_ms: u64,
    /// Flows that went through it.
    pub flows: u64,
    /// UDP sessions that went through it.
    pub sessions: u64,
    /// Times it was marked down.
    pub failures: u64,
    /// Why it was marked down last.
    pub last_failure: Option<ConverterFailure>,
}

#[derive(Debug, Clone)]
struct Converter {
    addr: SocketAddr,
    down_until: Option<Instant>,
    backoff: Duration,
    flows: u64,
    sessions: u64,
    failures: u64,
    last_failure: Option<ConverterFailure>,
    /// When it last carried a flow.
    last_success: Option<Instant>,
}

/// The converters and the destinations that go direct.
#[derive(Debug, Clone)]
pub struct Converters {
    list: Vec<Converter>,
    speaks_mptcp: ExpiringSet<SocketAddr>,
    /// Destinations a converter's egress policy prohibits.
    prohibited: ExpiringSet<SocketAddr>,
    /// Destinations that accepted through a converter lately, with its index.
    accepted: ExpiringSet<(usize, SocketAddr)>,
}

impl Converters {
    /// The converters at `addrs` (none: every flow goes direct).
    pub fn new(addrs: &[SocketAddr]) -> Converters {
        Converters {
            list: addrs
                .iter()
                .map(|&addr| Converter {
                    addr,
                    down_until: None,
                    backoff: DOWN_MIN,
                    flows: 0,
                    sessions: 0,
                    failures: 0,
                    last_failure: None,
                    last_success: None,
                })
                .collect(),
            speaks_mptcp: ExpiringSet::new(MPTCP_CAPABLE_TTL, MPTCP_CAPABLE_MAX),
            prohibited: ExpiringSet::new(REFUSED_TTL, MPTCP_CAPABLE_MAX),
            accepted: ExpiringSet::new(ACCEPTED_TTL, MPTCP_CAPABLE_MAX),
        }
    }

    /// Whether any converter is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The converter (index and address) a new flow to `dst` goes through at `now`, or `None`:
    /// direct.
    pub fn choose(&mut self, now: Instant, dst: SocketAddr) -> Option<(usize, SocketAddr)> {
        if self.speaks_mptcp.contains(&dst, now) {
            return None;
        }
        let pick = self.pick(now, dst)?;
        let c = &mut self.list[pick];
        c.flows += 1;
        Some((pick, c.addr))
    }

    /// The converter `dst` is spread to among those up at `now`, unless `dst` goes direct
    /// (local, or prohibited there).
    fn pick(&self, now: Instant, dst: SocketAddr) -> Option<usize> {
        if self.list.is_empty() || is_local(dst.ip()) || self.prohibited.contains(&dst, now) {
            return None;
        }
        let up: Vec<usize> = (0..self.list.len())
            .filter(|&i| self.list[i].down_until.is_none_or(|t| now >= t))
            .collect();
        up.get(spread(dst.ip()) % up.len().max(1)).copied()
    }

    /// The converter (index and address) a new UDP session to `dst` goes through at `now`, or
    /// `None`: direct. As [`Converters::choose`], but whether `dst` speaks MPTCP is no matter.
    pub fn choose_datagram(&mut self, now: Instant, dst: SocketAddr) -> Option<(usize, SocketAddr)> {
        let pick = self.pick(now, dst)?;
        let c = &mut self.list[pick];
        c.sessions += 1;
        Some((pick, c.addr))
    }

    /// A converter refused to relay to `dst` (its policy or limits): direct for a while.
    pub fn prohibit(&mut self, now: Instant, dst: SocketAddr) {
        self.prohibited.insert(dst, now);
    }

    /// Converter `idx` failed a flow to `dst` at `now`: mark it down (its next try waits twice
    /// as long), unless it only prohibits `dst` (see the module documentation).
    pub fn failed(&mut self, now: Instant, idx: usize, why: ConverterFailure, dst: SocketAddr) {
        if let Some(c) = self.list.get_mut(idx) {
            let trusted = c
                .last_success
                .is_some_and(|t| now.saturating_duration_since(t) < TRUSTED_FOR);
            if why == ConverterFailure::Refused(ErrorCode::NotAuthorized.code()) && trusted {
                tracing::info!(converter = %c.addr, %dst, "the converter prohibits this destination: direct");
                self.prohibited.insert(dst, now);
                return;
            }
            // Flows that were already on their way when it failed do not extend the wait.
            if c.down_until.is_some_and(|t| now < t) {
                return;
            }
            c.down_until = Some(now + c.backoff);
            c.backoff = (c.backoff * 2).min(DOWN_MAX);
            c.failures += 1;
            c.last_failure = Some(why);
            tracing::warn!(converter = %c.addr, ?why, retry_in = ?c.backoff / 2, "converter marked down");
        }
    }

    /// Converter `idx` carried a flow at `now`: it is up, its back-off starts over.
    pub fn succeeded(&mut self, now: Instant, idx: usize) {
        if let Some(c) = self.list.get_mut(idx) {
            c.last_success = Some(now);
            if c.down_until.take().is_some() {
                tracing::info!(converter = %c.addr, "converter up again");
            }
            c.backoff = DOWN_MIN;
        }
    }

    /// Converter `idx` reached `dst`, which `accepted` the connection or not.
    pub fn destination_answered(&mut self, now: Instant, idx: usize, dst: SocketAddr, accepted: bool) {
        if accepted {
            self.accepted.insert((idx, dst), now);
        } else {
            self.accepted.remove(&(idx, dst));
        }
    }

    /// Whether `dst` accepted through converter `idx` lately (its next flow is answered early).
    pub fn accepted_recently(&self, now: Instant, idx: usize, dst: SocketAddr) -> bool {
        self.accepted.contains(&(idx, dst), now)
    }

    /// `dst` speaks MPTCP: new flows to it go direct for a while.
    pub fn learn_mptcp(&mut self, now: Instant, dst: SocketAddr) {
        if !self.list.is_empty() {
            self.speaks_mptcp.insert(dst, now);
        }
    }

    /// The address of converter `idx`.
    pub fn addr(&self, idx: usize) -> Option<SocketAddr> {
        self.list.get(idx).map(|c| c.addr)
    }

    /// Every converter, for status.
    pub fn views(&self, now: Instant) -> Vec<ConverterView> {
        self.list
            .iter()
            .map(|c| {
                let retry = c
                    .down_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                ConverterView {
                    addr: c.addr,
                    up: retry.is_zero(),
                    retry_in_ms: retry.as_millis() as u64,
                    flows: c.flows,
                    sessions: c.sessions,
                    failures: c.failures,
                    last_failure: c.last_failure,
                }
            })
            .collect()
    }
}

/// A destination that never goes through a converter: one of the special scopes of
/// [`crate::convert::scope`] (LAN, loopback, multicast, …), IPv4-mapped forms included.
pub fn is_local(ip: IpAddr) -> bool {
    crate::convert::scope::special_scope(ip).is_some()
}

/// FNV-1a of the address: spreads destinations over converters, the same way every time.
fn spread(ip: IpAddr) -> usize {
    let bytes = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_destinations_and_mptcp_servers_go_direct() {
        let mut c = Converters::new(&[sa("198.18.3.1:5124")]);
        let t = Instant::from_millis(0);
        for d in [
            "10.1.2.3:80",
            "192.168.1.1:53",
            "172.16.0.1:22",
            "127.0.0.1:80",
            "169.254.1.1:80",
            "100.64.0.1:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[::ffff:192.168.1.1]:80",
            "[::1]:80",
        ] {
            assert_eq!(c.choose(t, sa(d)), None, "{d}");
        }
        assert_eq!(
            c.choose(t, sa("198.19.0.11:80")),
            Some((0, sa("198.18.3.1:5124")))
        );
        c.learn_mptcp(t, sa("198.19.0.11:80"));
        assert_eq!(c.choose(t, sa("198.19.0.11:80")), None);
        // Another port of the same host is another service.
        assert!(c.choose(t, sa("198.19.0.11:443")).is_some());
        // The knowledge expires.
        assert!(c.choose(t + MPTCP_CAPABLE_TTL, sa("198.19.0.11:80")).is_some());
        assert_eq!(c.views(t)[0].flows, 3);
    }

    #[test]
    fn no_converter_means_direct() {
        let mut c = Converters::new(&[]);
        assert!(c.is_empty());
        assert_eq!(c.choose(Instant::ZERO, sa("198.19.0.11:80")), None);
        c.learn_mptcp(Instant::ZERO, sa("198.19.0.11:80"));
    }

    #[test]
    fn a_failed_converter_is_skipped_then_retried_with_backoff() {
        let a = sa("198.18.3.1:5124");
        let b = sa("198.18.3.2:5124");
        let mut c = Converters::new(&[a, b]);
        let dst = sa("198.19.0.11:80");
        let t0 = Instant::from_millis(1000);
        let (first, _) = c.choose(t0, dst).unwrap();
        c.failed(t0, first, ConverterFailure::Unreachable, dst);
        // A second failure report from a flow already under way does not extend the wait.
        c.failed(
            t0 + Duration::from_secs(1),
            first,
            ConverterFailure::Unreachable,
            dst,
        );
        let (other, _) = c.choose(t0, dst).unwrap();
        assert_ne!(other, first);
        c.failed(t0, other, ConverterFailure::Refused(32), dst);
        assert_eq!(c.choose(t0, dst), None, "both down: direct");
        let v = c.views(t0);
        assert!(v.iter().all(|v| !v.up && v.retry_in_ms == 10_000));
        assert_eq!(v[other].last_failure, Some(ConverterFailure::Refused(32)));
        // Tried again after DOWN_MIN; failing again doubles the wait.
        let t1 = t0 + DOWN_MIN;
        assert!(c.choose(t1, dst).is_some());
        c.failed(t1, first, ConverterFailure::Reset, dst);
        assert_eq!(c.views(t1)[first].retry_in_ms, 20_000);
        assert_eq!(c.views(t1)[first].failures, 2);
        // Success resets the back-off.
        c.succeeded(t1, first);
        assert!(c.views(t1)[first].up);
        c.failed(t1, first, ConverterFailure::Malformed, dst);
        assert_eq!(c.views(t1)[first].retry_in_ms, 10_000);
    }

    #[test]
    fn not_authorized_from_a_converter_that_carries_our_flows_prohibits_only_the_destination() {
        let a = sa("198.18.3.1:5124");
        let mut c = Converters::new(&[a]);
        let (smtp, web) = (sa("198.19.0.11:25"), sa("198.19.0.11:80"));
        let t0 = Instant::from_millis(1000);
        let not_authorized = ConverterFailure::Refused(32);
        // Never carried a flow: a refusal of this laptop (bad key, revoked).
        c.failed(t0, 0, not_authorized, smtp);
        assert!(!c.views(t0)[0].up);
        // Once it carried one, its "Not Authorized" is about the destination.
        let t1 = t0 + DOWN_MIN;
        c.succeeded(t1, 0);
        c.failed(t1, 0, not_authorized, smtp);
        assert!(c.views(t1)[0].up);
        assert_eq!(c.choose(t1, smtp), None, "the prohibited destination goes direct");
        assert!(c.choose(t1, web).is_some(), "the others still go through it");
        assert!(
            c.choose(t1 + REFUSED_TTL, smtp).is_some(),
            "the knowledge expires"
        );
        // Not for other failures, and not once the last success is old.
        c.failed(t1 + TRUSTED_FOR, 0, not_authorized, web);
        assert!(!c.views(t1 + TRUSTED_FOR)[0].up);
    }

    #[test]
    fn destinations_spread_over_converters_and_stick() {
        let list: Vec<SocketAddr> = (1..=4).map(|i| sa(&format!("198.18.3.{i}:5124"))).collect();
        let mut c = Converters::new(&list);
        let mut used = std::collections::HashSet::new();
        for i in 0..64u8 {
            let dst = sa(&format!("198.19.{i}.7:443"));
            let (idx, _) = c.choose(Instant::ZERO, dst).unwrap();
            assert_eq!(c.choose(Instant::ZERO, dst).unwrap().0, idx, "sticks");
            used.insert(idx);
        }
        assert_eq!(used.len(), 4, "spread over all four");
    }
}
