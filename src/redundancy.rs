//! Which flows are sent redundantly (issue 16): `mode = "redundant"` for every UDP flow through
//! a converter, else the flows of the `[redundant]` classes and ports, UDP and TCP alike. A
//! redundant UDP datagram
//! through a converter goes on every usable path with the same relay sequence number; the
//! converter relays the first copy and answers on every path the session's authenticated
//! datagrams came from (`convert::relay`); each side's anti-replay window drops the later copy.
//!
//! ```toml
//! [redundant]
//! classes = ["voip", "dns", "games"]   # the default; [] for none
//! ports = ["5004-5005", "9000"]        # more destination ports (UDP and TCP)
//! max_payload = 1200                   # larger datagrams of these flows go on one path
//! while_suspect = true                 # the others too while their path is suspect
//! interactive_tcp = true               # MPTCP: small writes waiting on a reply on both subflows
//! ```
//!
//! `interactive_tcp` (and `mode = "redundant"` for every chunk): an MPTCP connection sends a
//! write shorter than a segment, with nothing else in flight, on every subflow with the same
//! mapping (`mptcp/connection/output.rs`). A TCP flow to a port of the classes or `ports`
//! (ssh 22, DNS over TCP 53, ...) does so too (`engine/admission.rs`): its keystrokes and
//! requests are copied, a bulk transfer on the same port is not (a chunk with data in flight
//! before it goes on one path), as a UDP flow's datagrams above `max_payload` go on one path.
//!
//! `while_suspect`: in the other modes, a UDP session through a converter whose path is suspect
//! (an ack asked for is overdue, before the path is declared silent) sends its small datagrams
//! on the other paths too until the path answers again or is declared silent and left: a Wi-Fi
//! blackhole costs it the time to suspect, not the whole wait to be sure.
//!
//! Paths past their budget's soft share (last resort) carry no copies.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The application classes: a name and its destination ports (UDP, and TCP for the small
/// writes of a flow to them).
pub const CLASSES: &[(&str, &[RangeInclusive<u16>])] = &[
    // SIP (RFC 3261 §19.1.2), STUN/TURN (RFC 8489 §18.6; WebRTC ICE, Teams 3478-3481), the
    // common RTP range of SIP phones and WebRTC gateways, Zoom's media ports.
    ("voip", &[5060..=5061, 3478..=3481, 16384..=32767, 8801..=8810]),
    // DNS.
    ("dns", &[53..=53]),
    // Xbox Live and Call of Duty, EA titles, Steam / Source engine game servers.
    ("games", &[3074..=3075, 3659..=3659, 27000..=27050]),
    // SSH (RFC 4253 §4.1; TCP): not on by default.
    ("ssh", &[22..=22]),
];

/// The classes on when the config names none.
pub const DEFAULT_CLASSES: &[&str] = &["voip", "dns", "games"];

/// "Small" datagrams: larger ones of a redundant flow go on one path only (a video frame's
/// burst would double the cellular bill for little gain).
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;

/// `[redundant]` as written.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRedundant {
    /// Application classes (names in [`CLASSES`]).
    pub classes: Option<Vec<String>>,
    /// Destination ports or ranges, `"5004"` or `"5004-5005"`.
    pub ports: Option<Vec<String>>,
    /// Largest payload sent redundantly, bytes.
    pub max_payload: Option<usize>,
    /// Every small datagram through a converter goes on every path while its path is suspect.
    pub while_suspect: Option<bool>,
    /// MPTCP: small writes waiting on a reply go on every subflow.
    pub interactive_tcp: Option<bool>,
}

/// Which UDP datagrams through a converter go on every path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redundancy {
    /// Every flow (`mode = "redundant"`).
    pub all: bool,
    /// The class names in force (for `status`).
    pub classes: Vec<String>,
    /// Destination ports whose flows are redundant (the classes' and the listed ones).
    pub ports: Vec<RangeInclusive<u16>>,
    /// Largest payload sent redundantly.
    pub max_payload: usize,
    /// Copies of every session's small datagrams while its path is suspect.
    pub while_suspect: bool,
    /// MPTCP: small writes waiting on a reply go on every subflow.
    pub interactive_tcp: bool,
}

impl Default for Redundancy {
    /// Nothing redundant.
    fn default() -> Self {
        Redundancy {
            all: false,
            classes: Vec::new(),
            ports: Vec::new(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            while_suspect: false,
            interactive_tcp: false,
        }
    }
}

impl Redundancy {
    /// Validates `[redundant]`; `all`: the machine's mode is redundant.
    pub fn resolve(file: &FileRedundant, all: bool) -> Result<Redundancy, ConfigError> {
        let classes: Vec<String> = match &file.classes {
            Some(c) => c.clone(),
            None => DEFAULT_CLASSES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut ports = Vec::new();
        for c in &classes {
            let Some((_, p)) = CLASSES.iter().find(|(n, _)| n == c) else {
                let known: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
                return Err(ConfigError::Invalid {
                    key: "redundant.classes",
                    reason: format!("unknown class {c:?} (known: {})", known.join(", ")),
                });
            };
            ports.extend(p.iter().cloned());
        }
        for p in file.ports.iter().flatten() {
            ports.push(parse_ports(p).map_err(|reason| ConfigError::Invalid {
                key: "redundant.ports",
                reason,
            })?);
        }
        let max_payload = file.max_payload.unwrap_or(DEFAULT_MAX_PAYLOAD);
        if max_payload == 0 || max_payload > 65_507 {
            return Err(ConfigError::Invalid {
                key: "redundant.max_payload",
                reason: format!("{max_payload} must be within 1-65507 bytes"),
            });
        }
        Ok(Redundancy {
            all,
            classes,
            ports,
            max_payload,
            while_suspect: file.while_suspect.unwrap_or(true),
            // On by default: the issue's default redundant set is the small UDP flows and the
            // interactive TCP flows (a write shorter than a segment with nothing in flight).
            interactive_tcp: file.interactive_tcp.unwrap_or(true),
        })
    }

    /// Whether a flow to destination `port` is redundant.
    pub fn flow(&self, port: u16) -> bool {
        self.all || self.ports.iter().any(|r| r.contains(&port))
    }

    /// Whether a datagram of `len` payload bytes of a redundant flow goes on every path.
    pub fn datagram(&self, len: usize) -> bool {
        len <= self.max_payload
    }
}

/// `"5004"` or `"5004-5005"` (ports 1-65535).
fn parse_ports(s: &str) -> Result<RangeInclusive<u16>, String> {
    let p = |x: &str| match x.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port {x:?} in {s:?}")),
        Ok(n) => Ok(n),
    };
    let r = match s.split_once('-') {
        Some((lo, hi)) => p(lo)?..=p(hi)?,
        None => p(s)?..=p(s)?,
    };
    if r.is_empty() {
        return Err(format!("{s:?}: LOW must be ≤ HIGH"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes_and_extra_ports() {
        let r = Redundancy::resolve(&FileRedundant::default(), false).unwrap();
        assert!(r.flow(5060) && r.flow(53) && r.flow(27015) && r.flow(20000));
        // Interactive TCP writes are copied unless the config says no.
        assert!(r.interactive_tcp);
        let off = FileRedundant {
            interactive_tcp: Some(false),
            ..Default::default()
        };
        assert!(!Redundancy::resolve(&off, false).unwrap().interactive_tcp);
        assert!(!r.flow(443) && !r.flow(5004));
        assert!(r.datagram(172) && !r.datagram(1400));
        let f = FileRedundant {
            classes: Some(vec![]),
            ports: Some(vec!["5004-5005".into(), "9000".into()]),
            max_payload: Some(200),
            while_suspect: None,
            interactive_tcp: None,
        };
        let r = Redundancy::resolve(&f, false).unwrap();
        assert!(r.flow(5004) && r.flow(5005) && r.flow(9000) && !r.flow(53));
        assert!(!r.datagram(201));
        let all = Redundancy::resolve(&FileRedundant::default(), true).unwrap();
        assert!(all.flow(443));
        // The ssh class (TCP 22) is there when named, not by default.
        let ssh = FileRedundant {
            classes: Some(vec!["ssh".into()]),
            ports: Some(vec!["2222".into()]),
            ..Default::default()
        };
        let r = Redundancy::resolve(&ssh, false).unwrap();
        assert!(r.flow(22) && r.flow(2222) && !r.flow(53) && !r.flow(443));
        assert!(
            !Redundancy::resolve(&FileRedundant::default(), false)
                .unwrap()
                .flow(22)
        );
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (f, want) in [
            (
                FileRedundant {
                    classes: Some(vec!["fax".into()]),
                    ..Default::default()
                },
                "redundant.classes",
            ),
            (
                FileRedundant {
                    ports: Some(vec!["9-1".into()]),
                    ..Default::default()
                },
                "redundant.ports",
            ),
            (
                FileRedundant {
                    ports: Some(vec!["0".into()]),
                    ..Default::default()
                },
                "redundant.ports",
            ),
            (
                FileRedundant {
                    max_payload: Some(0),
                    ..Default::default()
                },
                "redundant.max_payload",
            ),
        ] {
            let e = Redundancy::resolve(&f, false).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }
}
