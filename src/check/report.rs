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

/// The probes of one RFC 8803 converter the laptop uses.
#[derive(Debug, Clone, Serialize)]
pub struct ConverterCheck {
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// Per interface: whether option 30 reaches it.
    pub interfaces: Vec<InterfaceResult>,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The target as given.
    pub target: String,
    /// Per interface.
    pub interfaces: Vec<InterfaceResult>,
    /// The converters, probed the same way.
    pub converters: Vec<ConverterCheck>,
    /// Per interface: flows to the target survive on it only through a converter (the target
    /// does not speak MPTCP, option 30 reaches the converter): the interface's name and the
    /// converter.
    pub via_converter: Vec<(String, std::net::SocketAddr)>,
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

/// The verdict on the whole: a path passes when MPTCP works to the target on it, or when the
/// target does not speak MPTCP and option 30 reaches one of the converters on that path (the
/// laptop's flows to the target then go through that converter).
pub fn conclude(
    target: String,
    mut interfaces: Vec<InterfaceResult>,
    converters: Vec<ConverterCheck>,
    local_firewall: Vec<String>,
) -> CheckResult {
    let mut via_converter = Vec::new();
    for i in &mut interfaces {
        let no_mptcp = i
            .report
            .as_ref()
            .is_some_and(|r| matches!(r.verdict, Verdict::ServerNoMptcp | Verdict::NoMptcpUnlocated));
        if i.pass || !no_mptcp {
            continue;
        }
        let reaches = converters.iter().find(|c| {
            c.interfaces
                .iter()
                .any(|ci| ci.interface == i.interface && ci.pass)
        });
        if let Some(c) = reaches {
            i.pass = true;
            via_converter.push((i.interface.clone(), c.addr));
        }
    }
    let pass = interfaces.iter().all(|i| i.pass)
        && converters.iter().all(|c| c.interfaces.iter().all(|i| i.pass))
        && local_firewall.is_empty();
    CheckResult {
        target,
        interfaces,
        converters,
        via_converter,
        local_firewall,
        pass,
    }
}

/// Human-readable output.
pub fn render(result: &CheckResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mpbond check {}", result.target);
    render_interfaces(&mut out, &result.interfaces);
    for c in &result.converters {
        let _ = writeln!(out, "  converter {}", c.addr);
        render_interfaces(&mut out, &c.interfaces);
    }
    for (iface, conv) in &result.via_converter {
        let _ = writeln!(
            out,
            "  {iface}: flows to {} go through the converter {conv}, where option 30 passes",
            result.target
        );
    }
    if result.local_firewall.is_empty() {
        let _ = writeln!(out, "  local firewall: nothing touches option 30");
    } else {
        let _ = writeln!(out, "  local firewall: these rules interfere with option 30:");
        for r in &result.local_firewall {
            let _ = writeln!(out, "             {r}");
        }
    }
    let _ = write!(out, "{}", advice(result));
    out
}

/// What to do, in words: the fix for what failed, and who is at fault.
fn advice(result: &CheckResult) -> String {
    let verdicts = |l: &[InterfaceResult]| -> Vec<Verdict> {
        l.iter()
            .filter_map(|i| i.report.as_ref().map(|r| r.verdict))
            .filter(|v| !v.passes())
            .collect()
    };
    let failing: Vec<Verdict> = verdicts(&result.interfaces)
        .into_iter()
        .chain(result.converters.iter().flat_map(|c| verdicts(&c.interfaces)))
        .collect();
    let mut out = String::new();
    let server_only = matches!(failing.as_slice(), [_, ..])
        && failing
            .iter()
            .all(|v| matches!(v, Verdict::ServerNoMptcp | Verdict::NoMptcpUnlocated));
    let middlebox = failing.iter().any(|v| {
        matches!(
            v,
            Verdict::ReplacedByNops { .. }
                | Verdict::Stripped { .. }
                | Verdict::SynDropped
                | Verdict::RemovedOnPath { .. }
                | Verdict::Pass { .. }
        )
    });
    let all_via_converter = result.via_converter.len()
        == result
            .interfaces
            .iter()
            .filter(|i| i.report.as_ref().is_some_and(|r| !r.verdict.passes()))
            .count();
    if server_only && all_via_converter {
        // The lines above say which converter carries the flows.
    } else if server_only {
        let fix = if result.converters.is_empty() {
            "run an RFC 8803 converter (`mpbond server` on a host with a kernel that speaks MPTCP) \
             and `mpbond up --converter ADDR:PORT --converter-key-file FILE`"
                .to_string()
        } else {
            let list: Vec<String> = result.converters.iter().map(|c| c.addr.to_string()).collect();
            format!(
                "the laptop sends them to the converter {}, but option 30 does not reach it on every \
                 path (see above)",
                list.join(" or ")
            )
        };
        let _ = writeln!(
            out,
            "  The server does not speak MPTCP: the network is not at fault. Connections to it fall back to \
             TCP and do not survive the loss of Wi-Fi unless a converter carries them: {fix}."
        );
    } else if middlebox {
        let _ = writeln!(
            out,
            "  Fix: allow TCP option 30 (MPTCP, RFC 8684) through every router and firewall unchanged.\n  \
             Many routers replace unknown TCP options with NOPs: ask the vendor how to let option 30 pass."
        );
    }
    out
}

fn render_interfaces(out: &mut String, interfaces: &[InterfaceResult]) {
    for i in interfaces {
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
    use crate::check::probe::PathReport;

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

    fn result(iface: &str, verdict: Verdict, target: &str) -> InterfaceResult {
        InterfaceResult {
            interface: iface.into(),
            pass: verdict.passes(),
            summary: describe(&verdict),
            report: Some(PathReport {
                src: "198.18.1.2".parse().unwrap(),
                target: target.parse().unwrap(),
                verdict,
                syn_rtt_ms: Some(1.0),
                checksum_required: None,
                hops: Vec::new(),
                unreachable_from: None,
            }),
            error: None,
        }
    }

    const PASS: Verdict = Verdict::Pass {
        dss: DssResult::Passes,
    };

    #[test]
    fn a_server_without_mptcp_names_the_converter_not_the_routers() {
        let t = "198.19.0.11:80";
        let targets = || {
            vec![
                result("wlan0", Verdict::ServerNoMptcp, t),
                result("wwan0", Verdict::ServerNoMptcp, t),
            ]
        };
        // No converter: the advice is to run one, not to fix routers.
        let r = conclude(t.into(), targets(), vec![], vec![]);
        assert!(!r.pass);
        let text = render(&r);
        assert!(text.contains("the network is not at fault"), "{text}");
        assert!(text.contains("mpbond server"), "{text}");
        assert!(!text.contains("ask the vendor"), "{text}");
        // A converter that option 30 reaches on both paths: both pass through it.
        let conv = "198.19.3.1:5124";
        let c = ConverterCheck {
            addr: conv.parse().unwrap(),
            interfaces: vec![result("wlan0", PASS, conv), result("wwan0", PASS, conv)],
        };
        let r = conclude(t.into(), targets(), vec![c.clone()], vec![]);
        assert!(r.pass, "{r:#?}");
        assert_eq!(r.via_converter.len(), 2);
        let text = render(&r);
        assert!(
            text.contains("wlan0: flows to 198.19.0.11:80 go through the converter 198.19.3.1:5124"),
            "{text}"
        );
        assert!(!text.contains("Fix:"), "{text}");
        // Option 30 replaced by NOPs on the way to the converter over Wi-Fi: that router is at fault.
        let mut c2 = c;
        c2.interfaces[0] = result("wlan0", Verdict::ReplacedByNops { at_ttl: Some(1) }, conv);
        let r = conclude(t.into(), targets(), vec![c2], vec![]);
        assert!(!r.pass);
        assert_eq!(
            r.via_converter,
            vec![("wwan0".to_string(), conv.parse().unwrap())]
        );
        let text = render(&r);
        assert!(
            text.contains("converter 198.19.3.1:5124\n  wlan0      FAIL"),
            "{text}"
        );
        assert!(text.contains("ask the vendor"), "{text}");
    }

    #[test]
    fn a_middlebox_on_the_target_path_is_still_reported() {
        let t = "198.19.0.10:80";
        let r = conclude(
            t.into(),
            vec![
                result("wlan0", Verdict::ReplacedByNops { at_ttl: Some(1) }, t),
                result("wwan0", PASS, t),
            ],
            vec![],
            vec![],
        );
        assert!(!r.pass);
        assert!(render(&r).contains("ask the vendor"));
        let ok = conclude(t.into(), vec![result("wlan0", PASS, t)], vec![], vec![]);
        assert!(ok.pass);
        assert!(!render(&ok).contains("Fix"));
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
