//! The DNS forwarder's decisions, driven with explicit times: which path a query takes, the
//! failover after a path's timeout or a failed send, probes of a suspect path, answer matching,
//! SERVFAIL.

#![allow(clippy::unwrap_used, reason = "tests panic on a broken expectation")]

use std::net::IpAddr;
use std::time::Duration;

use mpbond::dns::msg::{self, Header};
use mpbond::dns::{ClientId, Forwarder, ForwarderConfig, Output, PathSignal, Transport};
use mpbond::time::Instant;

const WIFI_DNS: &str = "198.18.1.1";
const CELL_DNS: &str = "198.18.2.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The answer a resolver would give to `q` (as sent upstream): QR set, one A record.
fn reply_to(q: &[u8]) -> Vec<u8> {
    let mut r = q.to_vec();
    r[2] |= 0x80;
    r[3] |= 0x80;
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 77, 1]);
    r
}

fn up(wifi: bool, cell: bool) -> [PathSignal; 2] {
    [
        PathSignal {
            usable: wifi,
            unresponsive: false,
            primary: wifi,
        },
        PathSignal {
            usable: cell,
            unresponsive: false,
            primary: !wifi && cell,
        },
    ]
}

fn forwarder() -> Forwarder {
    let mut f = Forwarder::new(
        ForwarderConfig::default(),
        vec![vec![ip(WIFI_DNS)], vec![ip(CELL_DNS)]],
    );
    f.handle_paths(Instant::ZERO, &up(true, true));
    f
}

fn t(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// Drains the output: (sends as (path, resolver, payload), answers as (client, payload)).
#[allow(clippy::type_complexity)]
fn drain(
    f: &mut Forwarder,
) -> (
    Vec<(u8, IpAddr, Vec<u8>, mpbond::dns::AttemptId)>,
    Vec<(ClientId, Vec<u8>)>,
) {
    let (mut sends, mut answers) = (Vec::new(), Vec::new());
    while let Some(o) = f.poll_output() {
        match o {
            Output::Send {
                path,
                resolver,
                payload,
                attempt,
                ..
            } => sends.push((path, resolver, payload, attempt)),
            Output::Answer { client, payload } => answers.push((client, payload)),
        }
    }
    (sends, answers)
}

#[test]
fn a_query_goes_to_the_primary_path_and_its_answer_back_with_the_client_id() {
    let mut f = forwarder();
    assert!(f.handle_query(t(0), ClientId(7), Transport::Udp, &query(0x1111, "lab.test")));
    let (sends, answers) = drain(&mut f);
    assert!(answers.is_empty());
    assert_eq!(sends.len(), 1);
    let (path, resolver, up_q, _) = &sends[0];
    assert_eq!((*path, *resolver), (0, ip(WIFI_DNS)));
    // A fresh upstream ID; otherwise the query unchanged.
    assert_eq!(&up_q[2..], &query(0x1111, "lab.test")[2..]);
    // An answer from another resolver or path is not taken.
    assert!(!f.handle_reply(t(5), 1, ip(WIFI_DNS), &reply_to(up_q)));
    assert!(!f.handle_reply(t(5), 0, ip(CELL_DNS), &reply_to(up_q)));
    // Nor one with another question.
    let mut other = reply_to(&query(Header::parse(up_q).unwrap().id, "lab.tesu"));
    msg::set_id(&mut other, Header::parse(up_q).unwrap().id);
    assert!(!f.handle_reply(t(5), 0, ip(WIFI_DNS), &other));
    assert!(f.handle_reply(t(20), 0, ip(WIFI_DNS), &reply_to(up_q)));
    let (_, answers) = drain(&mut f);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, ClientId(7));
    assert_eq!(Header::parse(&answers[0].1).unwrap().id, 0x1111);
    assert_eq!(f.counters().answered, vec![1, 0]);
    assert_eq!(f.counters().unmatched_replies, 3);
    assert_eq!(f.pending(), 0);
}

#[test]
fn an_unanswered_query_moves_to_the_other_path_within_the_timeout() {
    let mut f = forwarder();
    f.handle_query(t(0), ClientId(1), Transport::Udp, &query(1, "lab.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends[0].0, 0);
    // No RTT known yet: the initial 300 ms.
    let due = f.poll_timeout().unwrap();
    assert_eq!(due, t(300));
    f.handle_timeout(t(299));
    assert!(drain(&mut f).0.is_empty());
    f.handle_timeout(due);
    let (sends, _) = drain(&mut f);
    assert_eq!(sends.len(), 1);
    assert_eq!((sends[0].0, sends[0].1), (1, ip(CELL_DNS)));
    assert!(f.is_suspect(0));
    assert_eq!(f.counters().failovers, 1);
    assert!(f.handle_reply(t(350), 1, ip(CELL_DNS), &reply_to(&sends[0].2)));
    assert_eq!(drain(&mut f).1.len(), 1);
    // The late answer from Wi-Fi is not relayed twice.
    assert!(!f.handle_reply(t(400), 0, ip(WIFI_DNS), &reply_to(&sends[0].2)));

    // The next query goes to cellular first and probes Wi-Fi in parallel; Wi-Fi answering
    // makes it preferred again.
    f.handle_query(t(500), ClientId(2), Transport::Udp, &query(2, "lab.test"));
    let (sends, _) = drain(&mut f);
    let paths: Vec<u8> = sends.iter().map(|s| s.0).collect();
    assert_eq!(paths, vec![1, 0]);
    assert!(f.handle_reply(t(510), 0, ip(WIFI_DNS), &reply_to(&sends[1].2)));
    assert!(!f.is_suspect(0));
    f.handle_query(t(600), ClientId(3), Transport::Udp, &query(3, "lab.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].0, 0);
}

#[test]
fn the_timeout_follows_the_paths_dns_rtt() {
    let mut f = forwarder();
    for (i, start) in [0u64, 1000, 2000, 3000].iter().enumerate() {
        f.handle_query(t(*start), ClientId(i as u64), Transport::Udp, &query(9, "a.test"));
        let (sends, _) = drain(&mut f);
        assert!(f.handle_reply(t(start + 20), 0, ip(WIFI_DNS), &reply_to(&sends[0].2)));
        drain(&mut f);
    }
    f.handle_query(t(5000), ClientId(9), Transport::Udp, &query(9, "a.test"));
    drain(&mut f);
    // 3 × 20 ms is below the floor: 150 ms.
    assert_eq!(f.poll_timeout(), Some(t(5150)));
}

#[test]
fn a_failed_send_fails_over_at_once() {
    let mut f = forwarder();
    f.handle_query(t(0), ClientId(1), Transport::Tcp, &query(1, "lab.test"));
    let (sends, _) = drain(&mut f);
    f.handle_send_failed(t(1), sends[0].3);
    let (sends, _) = drain(&mut f);
    assert_eq!((sends[0].0, sends[0].1), (1, ip(CELL_DNS)));
    assert_eq!(f.counters().send_failures, 1);
    assert_eq!(f.counters().failovers, 1);
}

#[test]
fn the_engine_signals_choose_the_path() {
    let mut f = forwarder();
    // Wi-Fi link down: cellular only, no probe.
    f.handle_paths(t(0), &up(false, true));
    f.handle_query(t(0), ClientId(1), Transport::Udp, &query(1, "x.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1]);
    // Wi-Fi up but its subflows unresponsive: cellular first, Wi-Fi probed.
    let mut s = up(true, true);
    s[0].unresponsive = true;
    f.handle_paths(t(10), &s);
    f.handle_query(t(10), ClientId(2), Transport::Udp, &query(2, "x.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 0]);
    // No usable path: SERVFAIL at once, with the question.
    f.handle_paths(t(20), &up(false, false));
    let q = query(0x4242, "x.test");
    f.handle_query(t(20), ClientId(3), Transport::Udp, &q);
    let (sends, answers) = drain(&mut f);
    assert!(sends.is_empty());
    let h = Header::parse(&answers[0].1).unwrap();
    assert_eq!((h.id, h.rcode(), h.qdcount), (0x4242, msg::RCODE_SERVFAIL, 1));
    assert_eq!(&answers[0].1[12..], &q[12..]);
}

#[test]
fn a_query_nobody_answers_gets_servfail_at_the_end_of_its_lifetime() {
    let mut f = forwarder();
    f.handle_query(t(0), ClientId(1), Transport::Udp, &query(0x77, "lost.test"));
    let mut answers = Vec::new();
    let mut sends = 0;
    // Bounded: every wake-up moves time on.
    for _ in 0..100 {
        let Some(due) = f.poll_timeout() else { break };
        f.handle_timeout(due);
        let (s, a) = drain(&mut f);
        sends += s.len();
        answers.extend(a);
    }
    assert_eq!(
        sends, 2,
        "the first send, one retry on the other path, then waiting"
    );
    assert_eq!(answers.len(), 1);
    let h = Header::parse(&answers[0].1).unwrap();
    assert_eq!((h.id, h.rcode()), (0x77, msg::RCODE_SERVFAIL));
    assert_eq!(f.counters().servfail, 1);
    assert_eq!(f.pending(), 0);
    assert!(f.is_suspect(0) && f.is_suspect(1));
}

#[test]
fn bad_messages_are_counted_and_odd_ones_forwarded_untouched() {
    let mut f = forwarder();
    assert!(!f.handle_query(t(0), ClientId(1), Transport::Udp, &[1, 2, 3]));
    let mut resp = query(5, "a.test");
    resp[2] |= 0x80;
    assert!(!f.handle_query(t(0), ClientId(2), Transport::Udp, &resp));
    assert_eq!(f.counters().bad_queries, 2);
    assert!(drain(&mut f).0.is_empty());
    // A header with a garbage question is forwarded as it is (but for the ID), matched on ID.
    let mut odd = query(6, "a.test");
    odd[12] = 0xff;
    assert!(f.handle_query(t(0), ClientId(3), Transport::Udp, &odd));
    let (sends, _) = drain(&mut f);
    assert_eq!(&sends[0].2[2..], &odd[2..]);
    let mut r = sends[0].2.clone();
    r[2] |= 0x80;
    assert!(f.handle_reply(t(5), 0, ip(WIFI_DNS), &r));
    let (_, answers) = drain(&mut f);
    assert_eq!(Header::parse(&answers[0].1).unwrap().id, 6);
    assert_eq!(f.counters().unparsed_forwarded, 1);
}

#[test]
fn upstream_ids_are_unique_while_in_flight() {
    let mut f = forwarder();
    let mut ids = std::collections::HashSet::new();
    for i in 0..1000u64 {
        f.handle_query(t(0), ClientId(i), Transport::Udp, &query(1, "same.test"));
        let (sends, _) = drain(&mut f);
        assert!(ids.insert(Header::parse(&sends[0].2).unwrap().id));
    }
    assert_eq!(f.pending(), 1000);
}

#[test]
fn a_path_picked_up_while_running_carries_queries_once_the_others_fail_and_is_forgotten_when_it_goes() {
    const TETHER_DNS: &str = "198.18.4.1";
    let mut f = forwarder();
    // A tether (path 2) appears: its health comes with the others, its resolver from the
    // learner; until then it carries nothing.
    let tether = |usable| PathSignal {
        usable,
        unresponsive: false,
        primary: false,
    };
    let [w, c] = up(false, false);
    f.handle_paths(t(0), &[w, c, tether(true)]);
    f.handle_query(t(1), ClientId(1), Transport::Udp, &query(1, "lab.test"));
    let (_, answers) = drain(&mut f);
    assert_eq!(answers.len(), 1, "no resolver on any usable path: SERVFAIL");
    assert_eq!(f.counters().servfail, 1);
    f.set_resolvers(t(2), 2, vec![ip(TETHER_DNS)]);
    assert_eq!(f.counters().answered.len(), 3);
    f.handle_query(t(3), ClientId(2), Transport::Udp, &query(2, "lab.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends.len(), 1);
    assert_eq!((sends[0].0, sends[0].1), (2, ip(TETHER_DNS)));
    assert!(f.handle_reply(t(10), 2, ip(TETHER_DNS), &reply_to(&sends[0].2)));
    assert_eq!(drain(&mut f).1.len(), 1);
    assert_eq!(f.counters().answered, vec![0, 0, 1]);

    // Wi-Fi back, a query on it and waiting; also one waiting on the tether, which then
    // vanishes: that one moves on at once (no timeout), the other is untouched.
    let [w, c] = up(true, false);
    f.handle_paths(t(20), &[w, c, tether(true)]);
    f.handle_query(t(21), ClientId(3), Transport::Udp, &query(3, "lab.test"));
    let (sends, _) = drain(&mut f);
    assert_eq!(sends[0].0, 0);
    f.handle_send_failed(t(22), sends[0].3);
    let (sends, _) = drain(&mut f);
    assert_eq!((sends[0].0, sends[0].1), (2, ip(TETHER_DNS)));
    f.forget_path(t(23), 2);
    let (sends, answers) = drain(&mut f);
    // Nothing left to try (Wi-Fi's only resolver was tried): it waits for a late answer.
    assert!(sends.is_empty() && answers.is_empty(), "{sends:?} {answers:?}");
    f.handle_query(t(24), ClientId(4), Transport::Udp, &query(4, "lab.test"));
    let (sends, _) = drain(&mut f);
    assert!(
        sends.iter().all(|s| s.0 != 2),
        "a forgotten path carries nothing: {sends:?}"
    );
    // It comes back (the same place, maybe another interface): new resolvers, nothing suspected.
    f.set_resolvers(t(30), 2, vec![ip("198.18.5.1")]);
    assert!(!f.is_suspect(2));
    // Beyond MAX_INTERFACES nothing is created.
    f.set_resolvers(t(31), mpbond::config::MAX_INTERFACES as u8, vec![ip(TETHER_DNS)]);
    assert_eq!(f.counters().answered.len(), 3);
}
