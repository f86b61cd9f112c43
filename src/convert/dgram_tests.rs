use proptest::prelude::*;

use super::*;

fn key(b: u8) -> ClientKey {
    ClientKey::from_parts(KeyId([b; 8]), [b.wrapping_add(1); 32])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hdr(kind: Kind, addr: Option<SocketAddr>) -> Header {
    Header {
        kind,
        flags: ACK_REQUESTED,
        key: key(1).id(),
        session: RelayId(0x0102_0304_0506_0708),
        seq: 42,
        timestamp: 1_700_000_000,
        addr,
    }
}

#[test]
fn round_trip_v4_v6_and_no_address() {
    let k = key(1);
    for (kind, addr) in [
        (Kind::Up, Some(sa("198.19.0.11:7"))),
        (Kind::Down, Some(sa("[2001:db8::11]:5004"))),
        (Kind::Ack, None),
        (Kind::Refused, None),
    ] {
        let h = hdr(kind, addr);
        let mut out = [0u8; 256];
        let n = seal(&k, &h, b"payload", &mut out).unwrap();
        assert_eq!(n, FIXED_LEN + addr_len(addr) + 7 + MAC_LEN);
        let u = parse(&out[..n]).unwrap();
        assert_eq!(u.header, h);
        assert_eq!(u.verify(&k).unwrap(), b"payload");
        assert_eq!(u.verify(&key(2)), Err(DgramError::BadMac), "another key");
    }
}

#[test]
fn every_flipped_bit_fails_the_mac_or_the_framing() {
    let k = key(1);
    let mut out = [0u8; 128];
    let n = seal(&k, &hdr(Kind::Up, Some(sa("198.19.0.11:7"))), b"abc", &mut out).unwrap();
    for byte in 0..n {
        for bit in 0..8 {
            let mut b = out[..n].to_vec();
            b[byte] ^= 1 << bit;
            let ok = parse(&b).and_then(|u| u.verify(&k).map(|_| ()));
            assert!(ok.is_err(), "byte {byte} bit {bit}");
        }
    }
}

#[test]
fn framing_errors() {
    assert_eq!(parse(&[]).unwrap_err(), DgramError::NotRelay);
    assert_eq!(parse(&[1; 80]).unwrap_err(), DgramError::NotRelay);
    assert_eq!(parse(&[MAGIC; 10]).unwrap_err(), DgramError::Short);
    let k = key(1);
    let mut out = [0u8; 128];
    let n = seal(&k, &hdr(Kind::Up, Some(sa("[2001:db8::1]:7"))), b"", &mut out).unwrap();
    assert_eq!(
        parse(&out[..n - 1]).unwrap_err(),
        DgramError::Short,
        "cut into the address"
    );
    let mut b = out[..n].to_vec();
    b[3] = 5;
    assert_eq!(parse(&b).unwrap_err(), DgramError::Malformed, "family 5");
    b[3] = 6;
    b[1] = 9;
    assert_eq!(parse(&b).unwrap_err(), DgramError::Malformed, "kind 9");
    // Data without an address, ack with one.
    let n = seal(&k, &hdr(Kind::Up, None), b"", &mut out).unwrap();
    assert_eq!(parse(&out[..n]).unwrap_err(), DgramError::Malformed);
    let n = seal(&k, &hdr(Kind::Ack, Some(sa("198.19.0.1:1"))), b"", &mut out).unwrap();
    assert_eq!(parse(&out[..n]).unwrap_err(), DgramError::Malformed);
    assert_eq!(
        seal(
            &k,
            &hdr(Kind::Up, Some(sa("198.19.0.1:1"))),
            &[0; 100],
            &mut [0; 60]
        ),
        Err(DgramError::NoRoom)
    );
}

#[test]
fn window_in_order_reordered_duplicates_and_left_edge() {
    let mut w = ReplayWindow::new();
    assert_eq!(w.check(0), Err(Replay::Zero));
    assert_eq!(w.accept(1), Ok(true));
    assert_eq!(w.accept(1), Err(Replay::Duplicate));
    assert_eq!(w.accept(5), Ok(true));
    assert_eq!(w.accept(3), Ok(false), "reordered, inside the window");
    assert_eq!(w.accept(3), Err(Replay::Duplicate));
    assert_eq!(w.accept(4), Ok(false));
    assert_eq!(w.accept(5 + WINDOW - 1), Ok(true));
    assert_eq!(w.check(5), Err(Replay::Duplicate), "still inside: seen");
    assert_eq!(w.check(6), Ok(()), "still inside, never seen");
    assert_eq!(w.check(2), Err(Replay::TooOld));
    assert_eq!(w.accept(5 + WINDOW), Ok(true));
    assert_eq!(w.check(5), Err(Replay::TooOld));
    // A jump beyond the window clears it.
    assert_eq!(w.accept(10 * WINDOW), Ok(true));
    assert_eq!(w.check(10 * WINDOW - 1), Ok(()));
    assert_eq!(w.check(9 * WINDOW), Err(Replay::TooOld));
    let s = ReplayWindow::starting_after(100);
    assert_eq!(s.check(100), Err(Replay::Duplicate));
    assert_eq!(s.check(99), Err(Replay::Duplicate));
    assert_eq!(s.check(101), Ok(()));
}

proptest! {
    /// Against a model (the set of numbers accepted, the highest one): a number is accepted iff
    /// it is non-zero, never accepted before, and within WINDOW of the highest.
    #[test]
    fn window_matches_a_set_model(seqs in proptest::collection::vec(0u64..3000, 1..400)) {
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::HashSet::new();
        let mut top = 0u64;
        for s in seqs {
            let model_ok = s != 0 && !seen.contains(&s) && (s > top || top - s < WINDOW);
            let got = w.accept(s);
            prop_assert_eq!(got.is_ok(), model_ok, "seq {} top {}", s, top);
            if model_ok {
                prop_assert_eq!(got.unwrap(), s > top);
                seen.insert(s);
                top = top.max(s);
            }
        }
    }

    /// Parsing arbitrary bytes never panics, and whatever parses and verifies under a key was
    /// sealed with it (no forgery from noise).
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(u) = parse(&bytes) {
            prop_assert!(u.verify(&key(1)).is_err());
        }
    }

    #[test]
    fn seal_parse_round_trip(seq in 1u64.., ts in any::<u64>(), port in any::<u16>(),
                             v6 in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let addr = if v6 { SocketAddr::new(IpAddr::V6(Ipv6Addr::from(seq as u128)), port) }
                   else { SocketAddr::new(IpAddr::V4(Ipv4Addr::from(seq as u32)), port) };
        let h = Header { seq, timestamp: ts, addr: Some(addr), ..hdr(Kind::Down, None) };
        let mut out = vec![0u8; 400];
        let n = seal(&key(3), &Header { key: key(3).id(), ..h }, &payload, &mut out).unwrap();
        let u = parse(&out[..n]).unwrap();
        prop_assert_eq!(u.header.addr, Some(addr));
        prop_assert_eq!(u.verify(&key(3)).unwrap(), &payload[..]);
    }
}

fn down(k: &ClientKey, id: RelayId, kind: Kind, seq: u64, payload: &[u8]) -> Vec<u8> {
    let addr = (kind == Kind::Down).then(|| sa("198.19.0.11:7"));
    let h = Header {
        kind,
        flags: 0,
        key: k.id(),
        session: id,
        seq,
        timestamp: 0,
        addr,
    };
    let mut out = vec![0u8; 256];
    let n = seal(k, &h, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn client_opens_on_the_first_answer_and_asks_for_acks_only_when_silent() {
    let k = key(1);
    let id = RelayId(9);
    let t0 = Instant::from_millis(1000);
    let mut c = ClientSession::new(id, sa("198.19.0.11:7"), t0);
    let mut buf = [0u8; 256];
    let n = c.seal_up(t0, 5, &k, b"hi", &mut buf).unwrap();
    let u = parse(&buf[..n]).unwrap();
    assert_eq!(
        (u.header.seq, u.header.flags),
        (1, ACK_REQUESTED),
        "opening: asks"
    );
    let n = c
        .seal_up(t0 + Duration::from_millis(10), 5, &k, b"hi", &mut buf)
        .unwrap();
    assert_eq!(parse(&buf[..n]).unwrap().header.flags, 0, "rate-limited");
    assert!(!c.is_open());
    let t1 = t0 + Duration::from_millis(30);
    assert_eq!(
        c.open_down(t1, &k, &down(&k, id, Kind::Ack, 1, b"")),
        Ok(Down::Ack)
    );
    assert!(c.is_open());
    assert_eq!(
        c.open_down(t1, &k, &down(&k, id, Kind::Ack, 1, b"")),
        Err(DownError::Replay(Replay::Duplicate))
    );
    assert_eq!(
        c.open_down(t1, &k, &down(&k, id, Kind::Down, 2, b"echo")),
        Ok(Down::Data {
            from: sa("198.19.0.11:7"),
            payload: b"echo"
        })
    );
    assert_eq!(
        c.open_down(t1, &k, &down(&k, RelayId(8), Kind::Down, 3, b"x")),
        Err(DownError::NotOurs)
    );
    assert_eq!(
        c.open_down(t1, &k, &down(&key(2), id, Kind::Down, 3, b"x")),
        Err(DownError::NotOurs),
        "another key's"
    );
    let mut forged = down(&k, id, Kind::Down, 3, b"x");
    forged[40] ^= 1;
    assert_eq!(
        c.open_down(t1, &k, &forged),
        Err(DownError::Dgram(DgramError::BadMac))
    );
    // The ack's round trip (30 ms) is measured: a silence of one round trip asks.
    assert_eq!(c.ask_after(), Duration::from_millis(30));
    let n = c
        .seal_up(t1 + Duration::from_millis(29), 5, &k, b"x", &mut buf)
        .unwrap();
    assert_eq!(parse(&buf[..n]).unwrap().header.flags, 0, "heard lately: no ask");
    let n = c.seal_up(t1 + c.ask_after(), 5, &k, b"x", &mut buf).unwrap();
    assert_eq!(
        parse(&buf[..n]).unwrap().header.flags,
        ACK_REQUESTED,
        "silent: asks"
    );
}

#[test]
fn client_health_path_silent_converter_silent_and_refused() {
    let k = key(1);
    let id = RelayId(9);
    let t0 = Instant::from_millis(1000);
    let ms = Duration::from_millis;
    let mut buf = [0u8; 256];
    // Never answered: after OPEN_TIMEOUT and two asks, the converter is silent.
    let mut c = ClientSession::new(id, sa("198.19.0.11:7"), t0);
    for i in 0..=100 {
        let t = t0 + ms(20 * i);
        c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
        let want = if ms(20 * i) >= OPEN_TIMEOUT {
            Health::ConverterSilent
        } else {
            Health::Fine
        };
        assert_eq!(c.health(t), want, "at {} ms", 20 * i);
    }
    // Answered, then silent on this path: PathSilent SILENT_MIN after the first ask.
    let mut c = ClientSession::new(id, sa("198.19.0.11:7"), t0);
    c.seal_up(t0, 5, &k, b"x", &mut buf).unwrap();
    c.open_down(t0 + ms(20), &k, &down(&k, id, Kind::Ack, 1, b""))
        .unwrap();
    let heard = t0 + ms(20);
    // One measured round trip (20 ms) of silence asks, at most one ask per ACK_EVERY (the last
    // was at t0): the first datagram of the 20 ms grid past both.
    assert_eq!(c.ask_after(), ms(20));
    let first_ask = (0..)
        .map(|i| heard + ms(20 * i))
        .find(|&t| t >= heard + c.ask_after() && t >= t0 + ACK_EVERY)
        .unwrap();
    let mut t = heard;
    while t < first_ask + SILENT_MIN + ms(100) {
        c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
        let want = if t >= first_ask + SILENT_MIN {
            Health::PathSilent
        } else {
            Health::Fine
        };
        assert_eq!(c.health(t), want, "at {:?}", t.saturating_duration_since(heard));
        t += ms(20);
    }
    // A slow path is given longer: 3 × the ack round trip measured.
    let mut slow = ClientSession::new(id, sa("198.19.0.11:7"), t0);
    slow.seal_up(t0, 5, &k, b"x", &mut buf).unwrap();
    slow.open_down(t0 + ms(150), &k, &down(&k, id, Kind::Ack, 1, b""))
        .unwrap();
    assert_eq!(slow.silent_after(), ms(450));
    // Moved: the new path gets its own time, and until an ack measured it the long bound.
    c.path_moved(t);
    assert_eq!(c.silent_after(), SILENT_UNMEASURED);
    let moved = t;
    while t < moved + ACK_AFTER + SILENT_UNMEASURED + ms(100) {
        c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
        // The first datagram on the new path asks at once (nothing heard lately).
        let want = if t >= moved + SILENT_UNMEASURED {
            Health::PathSilent
        } else {
            Health::Fine
        };
        assert_eq!(
            c.health(t),
            want,
            "after the move, at {:?}",
            t.saturating_duration_since(moved)
        );
        t += ms(20);
    }
    // A refusal names a number we sent.
    let sent = c.next_seq - 1;
    assert_eq!(
        c.open_down(t, &k, &down(&k, id, Kind::Refused, sent, &[1])),
        Ok(Down::Refused(RefuseReason::Policy))
    );
    assert_eq!(
        c.open_down(t, &k, &down(&k, id, Kind::Refused, sent + 1, &[1])),
        Err(DownError::NotOurs),
        "never sent"
    );
}

#[test]
fn a_suspect_path_resends_the_recent_datagrams_once_and_only_those_after_the_last_answer() {
    let k = key(1);
    let id = RelayId(9);
    let ms = Duration::from_millis;
    let t0 = Instant::from_millis(1000);
    let mut c = ClientSession::new(id, sa("198.19.0.11:7"), t0);
    c.set_copy_when_suspect(true);
    let mut buf = [0u8; 256];
    // Opened; the ack's round trip measured at 20 ms.
    c.seal_up(t0, 5, &k, b"0", &mut buf).unwrap();
    c.remember(t0, b"0");
    let t1 = t0 + ms(20);
    assert_eq!(
        c.open_down(t1, &k, &down(&k, id, Kind::Ack, 1, b"")),
        Ok(Down::Ack)
    );
    assert_eq!(c.arm(), None, "nothing asked: no suspicion to wait for");
    // A stream every 20 ms; the converter is not heard after t1.
    let mut t = t1;
    for i in 1..=9u8 {
        t = t1 + ms(20 * u64::from(i));
        c.seal_up(t, 5, &k, &[i], &mut buf).unwrap();
        c.remember(t, &[i]);
    }
    // Asked at t1 + 40 ms (silent from t1 + 20 ms, but one ask per ACK_EVERY after the
    // opening's at t0): suspect 1.25 × 20 ms later; armed once for that time.
    let at = t1 + ms(40 + 25);
    assert_eq!(c.arm(), Some(at));
    assert_eq!(c.arm(), None);
    assert!(
        c.take_resend(at.saturating_sub(ms(1))).is_empty(),
        "not suspect yet"
    );
    let again = c.take_resend(t);
    // At most RECENT_MAX, the newest, all sent after a round trip before the last answer.
    let seqs: Vec<u64> = again.iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![5, 6, 7, 8, 9, 10]);
    assert_eq!(&*again[0].1, &[4u8][..]);
    assert!(c.take_resend(t).is_empty(), "once per suspicion");
    // Copies of an earlier number seal; of a number never sent, not.
    assert!(c.seal_copy_of(5, 5, &k, &[4], 1, &mut buf).is_ok());
    assert_eq!(
        c.seal_copy_of(11, 5, &k, b"x", 1, &mut buf),
        Err(DgramError::Malformed)
    );
    assert_eq!(
        c.seal_copy_of(5, 5, &k, b"x", 0, &mut buf),
        Err(DgramError::Malformed)
    );
    // An answer ends the suspicion; a redundant session keeps nothing.
    let t2 = t + ms(5);
    assert!(c.open_down(t2, &k, &down(&k, id, Kind::Ack, 2, b"")).is_ok());
    assert!(!c.suspect(t2));
    let mut r = ClientSession::new(RelayId(10), sa("198.19.0.11:7"), t0);
    r.set_copy_when_suspect(true);
    r.set_redundant(true);
    r.seal_up(t0, 5, &k, b"0", &mut buf).unwrap();
    r.remember(t0, b"0");
    assert_eq!(r.arm(), None);
    assert!(r.take_resend(t0 + ms(500)).is_empty());
}

#[test]
fn a_bulk_flow_gets_no_copies_while_suspect_and_an_interactive_one_does() {
    let k = key(1);
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let t0 = Instant::from_millis(1000);
    let mut buf = [0u8; 256];
    // Opened and measured (20 ms), then silent: each session is suspect by `late`.
    let open = |id: u64| {
        let mut c = ClientSession::new(RelayId(id), sa("198.19.0.11:7"), t0);
        c.set_copy_when_suspect(true);
        let mut b = [0u8; 256];
        c.seal_up(t0, 5, &k, b"0", &mut b).unwrap();
        c.open_down(t0 + ms(20), &k, &down(&k, RelayId(id), Kind::Ack, 1, b""))
            .unwrap();
        c
    };
    let late = t0 + ms(400);
    for (id, every, copies) in [(1, ms(20), true), (2, us(2100), true), (3, us(500), false)] {
        let mut c = open(id);
        let mut t = t0 + ms(20);
        while t < late {
            c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
            c.remember(t, b"x");
            t += every;
        }
        assert!(c.suspect(t), "session {id} is suspect");
        assert_eq!(
            c.sends_copies(t),
            copies,
            "session {id}, one datagram per {every:?}"
        );
        assert_eq!(!c.take_resend(t).is_empty(), copies, "session {id}");
    }
    // A bulk flow that slowed down to an interactive rate copies again after two windows.
    let mut c = open(4);
    let mut t = t0 + ms(20);
    while t < t0 + ms(200) {
        c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
        t += us(500);
    }
    assert!(!c.sends_copies(late));
    let t = t + RATE_WINDOW * 2;
    c.seal_up(t, 5, &k, b"x", &mut buf).unwrap();
    assert!(c.sends_copies(t + ms(1)));
}
