use super::*;
use crate::convert::dgram::{ClientSession, Down, DownError};

fn key(b: u8) -> ClientKey {
    ClientKey::from_parts(KeyId([b; 8]), [b.wrapping_add(1); 32])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const NOW: u64 = 1_700_000_000;
const DST: &str = "198.19.0.11:7";
const WIFI: &str = "198.18.1.2:40000";
const CELL: &str = "198.18.2.2:40001";

fn keys(id: &KeyId) -> Option<ClientKey> {
    (*id == key(1).id()).then(|| key(1))
}

fn up(c: &mut ClientSession, t: Instant, unix: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = c.seal_up(t, unix, &key(1), payload, &mut b).unwrap();
    b.truncate(n);
    b
}

/// Opens session `c` in `table` with its first datagram `d` from `from`.
fn open(table: &mut RelayTable, t: Instant, from: &str, d: &[u8]) {
    match table.handle_up(t, NOW, sa(from), d, keys) {
        Ok(Up::Open { opening, payload }) => table.insert(t, &opening, payload.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_datagram_proves_the_key_before_any_state() {
    let mut t = RelayTable::new(RelayConfig::default());
    let t0 = Instant::from_millis(0);
    let mut c = ClientSession::new(RelayId(1), sa(DST), t0);
    let d = up(&mut c, t0, NOW, b"a");
    // Unknown key, altered byte, garbage: no state, nothing to send.
    assert_eq!(
        t.handle_up(t0, NOW, sa(WIFI), &d, |_| None),
        Err(UpError::UnknownKey)
    );
    let mut bad = d.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        t.handle_up(t0, NOW, sa(WIFI), &bad, keys),
        Err(UpError::Dgram(DgramError::BadMac))
    );
    assert_eq!(
        t.handle_up(t0, NOW, sa(WIFI), b"GET / HTTP/1.1", keys)
            .unwrap_err()
            .name(),
        "not_relay"
    );
    // Stale or future timestamps.
    let mut c2 = ClientSession::new(RelayId(2), sa(DST), t0);
    let old = up(&mut c2, t0, NOW - 121, b"a");
    assert_eq!(t.handle_up(t0, NOW, sa(WIFI), &old, keys), Err(UpError::Stale));
    let future = up(&mut c2, t0, NOW + 121, b"a");
    assert_eq!(t.handle_up(t0, NOW, sa(WIFI), &future, keys), Err(UpError::Stale));
    assert!(t.is_empty());
    // The valid one opens: only after insert is it held.
    match t.handle_up(t0, NOW, sa(WIFI), &d, keys).unwrap() {
        Up::Open { opening, payload } => {
            assert_eq!(
                (opening.dst, opening.from, opening.ack),
                (sa(DST), sa(WIFI), true)
            );
            assert_eq!(payload, b"a");
            assert!(t.is_empty());
            t.insert(t0, &opening, payload.len());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.len(), 1);
    // Replayed first datagram: now a duplicate in the window.
    assert_eq!(
        t.handle_up(t0, NOW, sa(CELL), &d, keys),
        Err(UpError::Replay(Replay::Duplicate))
    );
    assert_eq!(t.get(&(key(1).id(), RelayId(1))).unwrap().peer, sa(WIFI));
}

#[test]
fn path_switch_moves_the_return_path_only_for_the_newest_authenticated_datagram() {
    let mut t = RelayTable::new(RelayConfig::default());
    let t0 = Instant::from_millis(0);
    let sk = (key(1).id(), RelayId(7));
    let mut c = ClientSession::new(RelayId(7), sa(DST), t0);
    let d1 = up(&mut c, t0, NOW, b"1");
    open(&mut t, t0, WIFI, &d1);
    let d2 = up(&mut c, t0, NOW, b"2");
    let d3 = up(&mut c, t0, NOW, b"3");
    // d3 arrives first from cellular (the laptop moved): the return path moves.
    match t.handle_up(t0, NOW, sa(CELL), &d3, keys).unwrap() {
        Up::Relay { moved, payload, .. } => assert_eq!((moved, payload), (true, &b"3"[..])),
        other => panic!("{other:?}"),
    }
    // d2, late from Wi-Fi: relayed (inside the window) but does not move the path back.
    match t.handle_up(t0, NOW, sa(WIFI), &d2, keys).unwrap() {
        Up::Relay { moved, .. } => assert!(!moved),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.get(&sk).unwrap().peer, sa(CELL));
    // A replay of d3 from a third address, and a forgery: nothing moves.
    let attacker = sa("203.0.113.9:9");
    assert!(t.handle_up(t0, NOW, attacker, &d3, keys).is_err());
    let mut forged = up(&mut c, t0, NOW, b"4");
    forged[FORGE_AT] ^= 0x40;
    assert_eq!(
        t.handle_up(t0, NOW, attacker, &forged, keys),
        Err(UpError::Dgram(DgramError::BadMac))
    );
    // The forgery did not consume its number: the genuine datagram 4 still passes.
    let s = t.get(&sk).unwrap();
    assert_eq!((s.peer, s.moves, s.up.0), (sa(CELL), 1, 3));
    // Datagrams back go to the current path, numbered, and the client opens them once.
    let mut out = [0u8; 256];
    let (n, to) = t.seal_down(t0, NOW, &key(1), &sk, b"back", &mut out).unwrap();
    assert_eq!(to, sa(CELL));
    assert_eq!(
        c.open_down(t0, &key(1), &out[..n]),
        Ok(Down::Data {
            from: sa(DST),
            payload: b"back"
        })
    );
    assert!(
        c.open_down(t0, &key(1), &out[..n]).is_err(),
        "replayed to the laptop"
    );
}

/// Offset of a payload byte of an IPv4 up datagram (after the fixed header and the address).
const FORGE_AT: usize = crate::convert::dgram::FIXED_LEN + 6;

#[test]
fn other_destination_wrong_kind_and_acks() {
    let mut t = RelayTable::new(RelayConfig::default());
    let t0 = Instant::from_millis(0);
    let sk = (key(1).id(), RelayId(3));
    let mut c = ClientSession::new(RelayId(3), sa(DST), t0);
    open(&mut t, t0, WIFI, &up(&mut c, t0, NOW, b"1"));
    // Same session id, another destination (a client bug or an attack): dropped.
    let mut other = ClientSession::new(RelayId(3), sa("198.19.0.12:7"), t0);
    other.seal_up(t0, NOW, &key(1), b"", &mut [0; 128]).unwrap();
    let d = up(&mut other, t0, NOW, b"x");
    assert_eq!(
        t.handle_up(t0, NOW, sa(WIFI), &d, keys),
        Err(UpError::OtherDestination)
    );
    // What the converter sends is never accepted as up.
    let mut out = [0u8; 128];
    let (n, _) = t.seal_ack(NOW, &key(1), &sk, &mut out).unwrap();
    assert_eq!(
        t.handle_up(t0, NOW, sa(WIFI), &out[..n], keys),
        Err(UpError::WrongKind)
    );
    assert_eq!(c.open_down(t0, &key(1), &out[..n]), Ok(Down::Ack));
}

#[test]
fn tombstones_stop_a_replay_reopening_an_ended_session() {
    let cfg = RelayConfig {
        idle: Duration::from_secs(30),
        ..RelayConfig::default()
    };
    let mut t = RelayTable::new(cfg);
    let t0 = Instant::from_millis(0);
    let mut c = ClientSession::new(RelayId(5), sa(DST), t0);
    let d1 = up(&mut c, t0, NOW, b"1");
    open(&mut t, t0, WIFI, &d1);
    let d2 = up(&mut c, t0, NOW, b"2");
    assert!(t.handle_up(t0, NOW, sa(WIFI), &d2, keys).is_ok());
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(t.expire(t1, NOW + 30).len(), 1);
    assert_eq!(t.tombstones(), 1);
    // Captured datagrams replayed while still fresh: refused.
    for d in [&d1, &d2] {
        assert_eq!(
            t.handle_up(t1, NOW + 30, sa(CELL), d, keys),
            Err(UpError::Replay(Replay::Duplicate))
        );
    }
    // The laptop's next datagram reopens the session (the numbers go on).
    let d3 = up(&mut c, t1, NOW + 30, b"3");
    open(&mut t, t1, CELL, &d3);
    assert_eq!(t.tombstones(), 0);
    // Once every datagram of it is stale, the tombstone goes (and the replays are stale).
    t.expire(t1 + Duration::from_secs(30), NOW + 60);
    assert_eq!(t.tombstones(), 1);
    t.expire(t1 + Duration::from_secs(30), NOW + 151);
    assert_eq!(t.tombstones(), 0);
    assert_eq!(
        t.handle_up(t1, NOW + 151, sa(CELL), &d1, keys),
        Err(UpError::Stale)
    );
}

#[test]
fn a_full_tombstone_list_raises_the_floor() {
    let cfg = RelayConfig {
        idle: Duration::from_secs(1),
        max_tombstones: 2,
        ..RelayConfig::default()
    };
    let mut t = RelayTable::new(cfg);
    let t0 = Instant::from_millis(0);
    let mut firsts = Vec::new();
    for i in 0..3 {
        let mut c = ClientSession::new(RelayId(100 + i), sa(DST), t0);
        let d = up(&mut c, t0, NOW - 10 + i, b"x");
        open(&mut t, t0, WIFI, &d);
        t.expire(t0 + Duration::from_secs(1), NOW);
        firsts.push(d);
    }
    assert_eq!(t.tombstones(), 2);
    // The first session's tombstone was evicted: its replay is below the window.
    assert_eq!(
        t.handle_up(t0, NOW, sa(CELL), &firsts[0], keys),
        Err(UpError::BelowWindow)
    );
    // A fresh session opens as before.
    let mut c = ClientSession::new(RelayId(200), sa(DST), t0);
    let d = up(&mut c, t0, NOW, b"x");
    assert!(matches!(
        t.handle_up(t0, NOW, sa(CELL), &d, keys),
        Ok(Up::Open { .. })
    ));
}

#[test]
fn refusal_is_smaller_than_the_request_and_revocation_ends_sessions() {
    let mut t = RelayTable::new(RelayConfig::default());
    let t0 = Instant::from_millis(0);
    let mut c = ClientSession::new(RelayId(6), sa(DST), t0);
    let d = up(&mut c, t0, NOW, b"");
    let Ok(Up::Open { opening, .. }) = t.handle_up(t0, NOW, sa(WIFI), &d, keys) else {
        panic!()
    };
    let mut out = [0u8; 128];
    let n = RelayTable::seal_refused(NOW, &key(1), &opening, RefuseReason::Policy, &mut out).unwrap();
    assert!(n < d.len(), "{n} >= {}", d.len());
    assert_eq!(
        c.open_down(t0, &key(1), &out[..n]),
        Ok(Down::Refused(RefuseReason::Policy))
    );
    t.insert(t0, &opening, 0);
    assert_eq!(t.retain_keys(&[key(1).id()]).len(), 0);
    assert_eq!(t.retain_keys(&[]).len(), 1);
    assert!(t.is_empty());
}

/// Copy `index` of the datagram `c` sealed last.
fn copy(c: &ClientSession, payload: &[u8], index: u8) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = c
        .seal_copy_of(c.last_seq(), NOW, &key(1), payload, index, &mut b)
        .unwrap();
    b.truncate(n);
    b
}

#[test]
fn redundant_copies_are_counted_apart_from_replays_and_teach_bounded_return_paths() {
    let mut t = RelayTable::new(RelayConfig::default());
    let t0 = Instant::from_millis(0);
    let sk = (key(1).id(), RelayId(9));
    let mut c = ClientSession::new(RelayId(9), sa(DST), t0);
    c.set_redundant(true);
    let d1 = up(&mut c, t0, NOW, b"1");
    let d1c = copy(&c, b"1", 1);
    open(&mut t, t0, WIFI, &d1);
    // The cellular copy: no relay, a copy, a new return path.
    assert_eq!(
        t.handle_up(t0, NOW, sa(CELL), &d1c, keys),
        Ok(Up::Copy {
            key: sk,
            new_path: true,
            ack: false
        })
    );
    // The same copy again (a path's duplicate or a replay, from anywhere): a replay.
    for from in [CELL, "203.0.113.9:9"] {
        assert_eq!(
            t.handle_up(t0, NOW, sa(from), &d1c, keys),
            Err(UpError::Replay(Replay::Duplicate))
        );
    }
    assert_eq!(t.get(&sk).unwrap().copies, 1);
    // Down datagrams: to Wi-Fi, and the same bytes to cellular.
    let mut out = [0u8; 256];
    let (_, to) = t.seal_down(t0, NOW, &key(1), &sk, b"back", &mut out).unwrap();
    assert_eq!(to, sa(WIFI));
    let extra: Vec<SocketAddr> = t.extra_paths(t0, &sk).iter().map(|e| e.0).collect();
    assert_eq!(extra, vec![sa(CELL)]);
    // The laptop takes the second copy of a down datagram as a copy, not as a replay.
    let (n, _) = t.seal_down(t0, NOW, &key(1), &sk, b"x", &mut out).unwrap();
    assert!(matches!(
        c.open_down(t0, &key(1), &out[..n]),
        Ok(Down::Data { .. })
    ));
    assert_eq!(c.open_down(t0, &key(1), &out[..n]), Err(DownError::Copy));
    // Copies from more addresses than paths: at most MAX_EXTRA_PATHS kept.
    for i in 0..10u16 {
        let d0 = up(&mut c, t0, NOW, b"n");
        assert!(matches!(
            t.handle_up(t0, NOW, sa(WIFI), &d0, keys),
            Ok(Up::Relay { .. })
        ));
        let from = SocketAddr::new(sa(CELL).ip(), 50_000 + i);
        let d = copy(&c, b"n", 1 + (i % 3) as u8);
        assert!(matches!(
            t.handle_up(t0, NOW, from, &d, keys),
            Ok(Up::Copy { .. })
        ));
    }
    assert_eq!(t.extra_paths(t0, &sk).len(), MAX_EXTRA_PATHS);
    // Not heard from for EXTRA_PATH_IDLE: forgotten.
    let later = t0 + EXTRA_PATH_IDLE;
    assert!(t.extra_paths(later, &sk).is_empty());
    // A session that is not redundant keeps one return path, and a duplicate is a replay.
    let mut plain = ClientSession::new(RelayId(10), sa(DST), t0);
    let p1 = up(&mut plain, t0, NOW, b"p");
    open(&mut t, t0, WIFI, &p1);
    let psk = (key(1).id(), RelayId(10));
    assert!(t.handle_up(t0, NOW, sa(CELL), &p1, keys).is_err());
    assert!(t.extra_paths(t0, &psk).is_empty());
}

/// An ICMP echo request (type, code 0, checksum left 0, identifier, sequence, data).
fn echo_msg(ty: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"ping data");
    m
}

#[test]
fn echo_sessions_carry_echo_requests_and_replies_only() {
    for (dst, req, rep) in [("198.19.0.12", 8u8, 0u8), ("2001:db8::12", 128, 129)] {
        let ip: std::net::IpAddr = dst.parse().unwrap();
        let t0 = Instant::from_millis(0);
        let mut table = RelayTable::new(RelayConfig::default());
        let mut c = ClientSession::new_echo(RelayId(9), ip, t0);
        assert!(c.is_echo());
        let d = up(&mut c, t0, NOW, &echo_msg(req, 0x1234, 1));
        assert_eq!(dgram::parse(&d).unwrap().header.kind, Kind::EchoUp);
        let opening = match table.handle_up(t0, NOW, sa(WIFI), &d, keys) {
            Ok(Up::Open { opening, payload }) => {
                assert_eq!(payload, &echo_msg(req, 0x1234, 1)[..]);
                opening
            }
            other => panic!("{other:?}"),
        };
        assert!(opening.echo);
        assert_eq!(opening.dst, SocketAddr::new(ip, 0));
        table.insert(t0, &opening, d.len());
        let sk = opening.key;
        assert!(table.get(&sk).unwrap().echo);
        // The next request relays; anything but an echo request of the family does not, nor
        // a UDP datagram numbered in the echo session.
        let d2 = up(&mut c, t0, NOW, &echo_msg(req, 0x1234, 2));
        assert!(matches!(
            table.handle_up(t0, NOW, sa(WIFI), &d2, keys),
            Ok(Up::Relay { .. })
        ));
        let wrong = up(&mut c, t0, NOW, &echo_msg(rep, 0x1234, 3));
        assert_eq!(
            table.handle_up(t0, NOW, sa(WIFI), &wrong, keys),
            Err(UpError::NotEcho)
        );
        let short = up(&mut c, t0, NOW, &[req, 0, 0, 0]);
        assert_eq!(
            table.handle_up(t0, NOW, sa(WIFI), &short, keys),
            Err(UpError::NotEcho)
        );
        let mut udp = ClientSession::new(RelayId(9), SocketAddr::new(ip, 0), t0);
        for _ in 0..10 {
            up(&mut udp, t0, NOW, b"x");
        }
        let as_udp = up(&mut udp, t0, NOW, &echo_msg(req, 1, 1));
        assert_eq!(
            table.handle_up(t0, NOW, sa(WIFI), &as_udp, keys),
            Err(UpError::OtherKind)
        );
        // A new echo session whose first datagram is no echo request opens nothing.
        let mut c2 = ClientSession::new_echo(RelayId(10), ip, t0);
        let bad = up(&mut c2, t0, NOW, b"not icmp at all");
        assert_eq!(
            table.handle_up(t0, NOW, sa(WIFI), &bad, keys),
            Err(UpError::NotEcho)
        );
        // The reply goes down as EchoDown from the destination's address, port 0; the client
        // takes it as data, and a UDP session does not.
        let reply = echo_msg(rep, 0x7777, 2);
        let mut out = vec![0u8; 256];
        let (n, to) = table.seal_down(t0, NOW, &key(1), &sk, &reply, &mut out).unwrap();
        assert_eq!(to, sa(WIFI));
        assert_eq!(dgram::parse(&out[..n]).unwrap().header.kind, Kind::EchoDown);
        let mut udp_view = ClientSession::new(RelayId(9), SocketAddr::new(ip, 0), t0);
        assert_eq!(
            udp_view.open_down(t0, &key(1), &out[..n]),
            Err(DownError::NotOurs)
        );
        match c.open_down(t0, &key(1), &out[..n]) {
            Ok(Down::Data { from, payload }) => {
                assert_eq!(from, SocketAddr::new(ip, 0));
                assert_eq!(payload, &reply[..]);
            }
            other => panic!("{other:?}"),
        }
        // Once only (the window).
        assert!(c.open_down(t0, &key(1), &out[..n]).is_err());
    }
}
