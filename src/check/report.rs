//! The administrator's view of a check: one line per path with the verdict in words, the routers
//! that reported, and what to do about it.

use std::fmt::Write as _;

use serde::Serialize;

use super::probe::{DssResult, PathReport, QuotedOption, Verdict};

/// The result on one interface.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceResult {
    /// Interface name.
    pub interface: String,
    /// Whether MPTCP works end to end on this path.
    pub pass: bool,
    /// The verdict in words.
    pub summary: String,
    /// The findings (absent when the probe could not run).
    #[serde(flatten)]
    pub report: Option<PathReport>,
    /// Why the probe could not run.
    pub error: Option<String>,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The target as given.
    pub target: String,
    /// Per interface.
    pub interfaces: Vec<InterfaceResult>,
    /// Rules of this machine's own firewall that would interfere with option 30.
    pub local_firewall: Vec<String>,
    /// Whether every path passes and the local firewall is clean.
    pub pass: bool,
}

/// The verdict in one sentence.
pub fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Pass { dss: DssResult::Passes } => {
            "option 30 passes: MPTCP handshake and data (DSS) both work".into()
        }
        Verdict::Pass { dss: DssResult::StrippedAfterHandshake } => {
            "option 30 passes on the handshake but DSS is stripped from data segments: MPTCP falls back to TCP"
                .into()
        }
        Verdict::Pass { dss: DssResult::NoAnswer } => {
            "option 30 passes on the handshake; the server did not acknowledge the data probe".into()
        }
        Verdict::ReplacedByNops { at_ttl } => format!(
            "option 30 is replaced by NOPs{}: MPTCP falls back to TCP",
            at_ttl.map(|t| format!(" before hop {t}")).unwrap_or_default()
        ),
        Verdict::Stripped { at_ttl } => format!(
            "option 30 is stripped{}: MPTCP falls back to TCP",
            at_ttl.map(|t| format!(" before hop {t}")).unwrap_or_default()
        ),
        Verdict::SynDropped => "the SYN carrying option 30 is dropped (a plain SYN is answered)".into(),
        Verdict::ServerNoMptcp => "the server does not speak MPTCP (option 30 was intact at every router that \
             answered; the server's SYN/ACK has none)"
            .into(),
        Verdict::RemovedOnPath { intact_until_ttl } => format!(
            "option 30 is removed on this path{} (the server answers MP_CAPABLE on another path): MPTCP falls \
             back to TCP",
            intact_until_ttl.map(|t| format!(" after hop {t}")).unwrap_or_default()
        ),
        Verdict::NoMptcpUnlocated => "no MPTCP in the SYN/ACK: the server does not speak MPTCP, or a middlebox \
             removed option 30 (no router on the path reported what it forwarded)"
            .into(),
        Verdict::Refused => "the server refused the connection (RST)".into(),
        Verdict::Unreachable => "no answer to an MPTCP SYN nor to a plain SYN: server or path unreachable".into(),
    }
}

/// Human-readable output.
pub fn render(result: &CheckResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mpbond check {}", result.target);
    for i in &result.interfaces {
        let mark = if i.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "  {:<10} {mark}  {}", i.interface, i.summary);
        if let Some(r) = &i.report {
            let rtt = r
                .syn_rtt_ms
                .map(|ms| format!(", SYN RTT {ms:.1} ms"))
                .unwrap_or_default();
            let _ = writeln!(out, "             from {} to {}{rtt}", r.src, r.target);
            for h in &r.hops {
                let what = match h.option {
                    QuotedOption::Intact => "option 30 intact",
                    QuotedOption::ReplacedByNops => "option 30 replaced by NOPs",
                    QuotedOption::Stripped => "option 30 stripped",
                    QuotedOption::Modified => "option 30 rewritten",
                    QuotedOption::NotQuoted => "quote too short to tell",
                };
                let _ = writeln!(
                    out,
                    "             hop {:>2} {:<16} {what}",
                    h.ttl,
                    h.router.to_string()
                );
            }
            if let Some((router, ty, code)) = r.unreachable_from {
                let _ = writeln!(
                    out,
                    "             ICMP unreachable (type {ty} code {code}) from {router}"
                );
            }
        }
    }
    if result.local_firewall.is_empty() {
        let _ = writeln!(out, "  local firewall: nothing touches option 30");
    } else {
        let _ = writeln!(out, "  local firewall: these rules interfere with option 30:");
        for r in &result.local_firewall {
            let _ = writeln!(out, "             {r}");
        }
    }
    if !result.pass {
        let _ = writeln!(
            out,
            "  Fix: allow TCP option 30 (MPTCP, RFC 8684) through every router and firewall unchanged.\n  \
             Many routers replace unknown TCP options with NOPs: ask the vendor how to let option 30 pass."
        );
    }
    out
}

/// Lines of an `nft list ruleset` or `iptables-save` output that touch TCP option 30.
pub fn firewall_findings(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .map(str::trim)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("option mptcp") || l.contains("option 30") || l.contains("tcpoptstrip"))
                && !l.starts_with('#')
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_option_30_rules() {
        let nft = "table inet filter {\n chain fwd {\n  tcp flags syn reset tcp option mptcp\n  tcp dport 22 accept\n }\n}\n\
                   -A FORWARD -p tcp -j TCPOPTSTRIP --strip-options 30\n";
        let f = firewall_findings(nft);
        assert_eq!(
            f,
            vec![
                "tcp flags syn reset tcp option mptcp",
                "-A FORWARD -p tcp -j TCPOPTSTRIP --strip-options 30"
            ]
        );
        assert!(firewall_findings("table inet mpbond {\n tcp dport 61000-64999 drop\n}").is_empty());
    }

    #[test]
    fn every_verdict_has_words() {
        for v in [
            Verdict::Pass {
                dss: DssResult::Passes,
            },
            Verdict::ReplacedByNops { at_ttl: Some(2) },
            Verdict::Stripped { at_ttl: None },
            Verdict::SynDropped,
            Verdict::ServerNoMptcp,
            Verdict::RemovedOnPath {
                intact_until_ttl: Some(1),
            },
            Verdict::NoMptcpUnlocated,
            Verdict::Refused,
            Verdict::Unreachable,
        ] {
            assert!(!describe(&v).is_empty());
        }
        assert!(
            describe(&Verdict::ReplacedByNops { at_ttl: Some(2) }).contains("replaced by NOPs before hop 2")
        );
    }
}
