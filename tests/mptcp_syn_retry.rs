//! A SYN with MP_CAPABLE that gets no answer is retried without it after a bounded number of
//! tries (RFC 8684 §3.7; iOS and Linux do this), the connection works as plain TCP, and the
//! cause tells the caller to remember the network in the [`HostileCache`].

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::mptcp::crypto::Key;
use mpbond::mptcp::hostile_cache::{HostileCache, NetworkKey};
use mpbond::mptcp::{Connection, Event, FallbackCause, LocalPath, MptcpConfig, PathId};
use mpbond::tcp::IsnKey;
use mpbond::time::Instant;
use mpbond::wire::parse_tcp_packet;

fn client(mpc_tries: u32) -> Connection {
    let cfg = MptcpConfig {
        mpc_syn_attempts: mpc_tries,
        ..Default::default()
    };
    let paths = [LocalPath {
        id: PathId(0),
        addr: "198.18.0.1".parse().unwrap(),
        backup: false,
        last_resort: false,
        rank: 0,
    }];
    Connection::connect(
        Instant::ZERO,
        cfg,
        &paths,
        PathId(0),
        "198.18.1.1:80".parse().unwrap(),
        vec![40000],
        Key(0x1234_5678_9abc_def0),
        &IsnKey([3; 32]),
        true,
    )
}

fn has_mpc(pkt: &[u8]) -> bool {
    let p = parse_tcp_packet(pkt).unwrap();
    !p.header.options.mptcp.is_empty()
}

#[test]
fn unanswered_mp_capable_syns_are_retried_without_it() {
    let mut c = client(2);
    let mut buf = vec![0u8; 2000];
    let mut now = Instant::ZERO;
    let mut syns = Vec::new();
    // Drop every SYN (a middlebox eating SYNs with option 30) until one comes without it.
    for _ in 0..10 {
        while let Some((_, t)) = c.poll_transmit(now, &mut buf) {
            syns.push(has_mpc(&buf[..t.len]));
        }
        if syns.last() == Some(&false) {
            break;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
    }
    assert_eq!(
        syns,
        vec![true, true, false],
        "MP_CAPABLE on the first two SYNs only"
    );
    // The plain SYN (its next retransmission) is answered by a plain SYN/ACK.
    let mut server_buf = vec![0u8; 2000];
    let (srv_local, cli): (SocketAddr, SocketAddr) = (
        "198.18.1.1:80".parse().unwrap(),
        "198.18.0.1:40000".parse().unwrap(),
    );
    let mut server = mpbond::tcp::Connection::accept(
        now,
        srv_local,
        cli,
        &plain_syn(&mut c, now),
        mpbond::tcp::Config::default(),
        &IsnKey([4; 32]),
    )
    .unwrap();
    let t = server.poll_transmit(now, &mut server_buf).unwrap();
    let synack = parse_tcp_packet(&server_buf[..t.len]).unwrap();
    c.handle_packet(now, PathId(0), cli, srv_local, &synack.header, &[]);
    let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&Event::Fallback {
            path: PathId(0),
            cause: FallbackCause::SynUnanswered
        }),
        "{events:?}"
    );
    assert!(events.contains(&Event::Connected { mptcp: false }), "{events:?}");
    assert!(!c.is_mptcp());
    // The caller remembers the network.
    let mut cache = HostileCache::new(Duration::from_secs(600), 64);
    let key = NetworkKey {
        iface: 2,
        gateway: Some("198.18.0.254".parse().unwrap()),
    };
    cache.mark_hostile(key, now);
    assert!(cache.is_hostile(key, now + Duration::from_secs(599)));
    assert!(!cache.is_hostile(key, now + Duration::from_secs(600)));
}

/// Makes the client retransmit its (plain) SYN and returns it.
fn plain_syn(c: &mut Connection, now: Instant) -> mpbond::wire::tcp::SegmentHeader {
    let mut buf = vec![0u8; 2000];
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    let (_, t) = c.poll_transmit(at.max(now), &mut buf).unwrap();
    let p = parse_tcp_packet(&buf[..t.len]).unwrap();
    assert!(p.header.flags.syn() && p.header.options.mptcp.is_empty());
    p.header
}

#[test]
fn mptcp_disabled_sends_no_option_30() {
    let paths = [LocalPath {
        id: PathId(0),
        addr: "198.18.0.1".parse().unwrap(),
        backup: false,
        last_resort: false,
        rank: 0,
    }];
    let mut c = Connection::connect(
        Instant::ZERO,
        MptcpConfig::default(),
        &paths,
        PathId(0),
        "198.18.1.1:80".parse().unwrap(),
        vec![40000],
        Key(1),
        &IsnKey([3; 32]),
        false,
    );
    let mut buf = vec![0u8; 2000];
    let (_, t) = c.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    assert!(!has_mpc(&buf[..t.len]));
}

#[test]
fn hostile_cache_is_bounded_and_forgets() {
    let mut cache = HostileCache::new(Duration::from_secs(10), 2);
    let k = |i| NetworkKey {
        iface: i,
        gateway: None,
    };
    cache.mark_hostile(k(1), Instant::from_millis(0));
    cache.mark_hostile(k(2), Instant::from_millis(1000));
    cache.mark_hostile(k(3), Instant::from_millis(2000));
    assert_eq!(cache.len(), 2);
    // The oldest went first.
    assert!(!cache.is_hostile(k(1), Instant::from_millis(2000)));
    assert!(cache.is_hostile(k(3), Instant::from_millis(2000)));
    cache.mark_good(k(3));
    assert!(!cache.is_hostile(k(3), Instant::from_millis(2000)));
    cache.expire(Instant::from_millis(20_000));
    assert!(cache.is_empty());
}
