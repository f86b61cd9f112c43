//! The cookie proof and the replay cache, through the converter (wrong key, unknown key id, bit
//! flips anywhere, destination swapped, stale, future, replay, bounded cache, revocation) and
//! directly (`ReplayCache` invariants, golden MAC recomputed independently).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use mpbond::convert::client::connect_request;
use mpbond::convert::converter::{Converter, ConverterConfig, RefusalCause, Request};
use mpbond::convert::cookie::{COOKIE_LEN, Cookie, Freshness, ReplayCache};
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::msg::ErrorCode;
use sha2::Sha256;

const NOW: u64 = 1_700_000_000;

fn key(n: u8) -> ClientKey {
    ClientKey::from_parts(KeyId([n; 8]), [n.wrapping_mul(31); 32])
}

fn dst() -> SocketAddr {
    "198.18.0.7:443".parse().unwrap()
}

fn now(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn nonce(i: u64) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&i.to_be_bytes());
    n
}

fn converter(keys: Vec<ClientKey>) -> Converter {
    Converter::new(keys, ConverterConfig::default())
}

fn cause(r: &Request) -> Option<RefusalCause> {
    match r {
        Request::Refused { cause, .. } => Some(*cause),
        _ => None,
    }
}

fn assert_refused(r: &Request, want: RefusalCause) {
    let Request::Refused { cause, reply, .. } = r else {
        panic!("expected a refusal ({want:?}), got {r:?}");
    };
    assert_eq!(*cause, want);
    // Every cookie refusal is "Not Authorized" with a zero Value (§6.2.7, §6.2.8) unless the
    // cache is full (Resource Exceeded).
    if want != RefusalCause::Limit {
        assert_eq!(reply, &[1, 2, 0x22, 0x63, 0x1e, 1, 32, 0]);
    }
}

#[test]
fn golden_mac_recomputed_independently() {
    let k = key(1);
    let req = connect_request(&k, now(NOW), nonce(5), dst(), &[]);
    // Layout: header (4), Base Connect TLV (20), Cookie TLV: 16 11 00 00 then 64 bytes.
    assert_eq!(req.len(), 4 + 20 + 68);
    assert_eq!(&req[24..28], &[0x16, 17, 0, 0]);
    let c = &req[28..];
    assert_eq!(&c[0..8], &[1; 8]);
    assert_eq!(&c[8..16], &NOW.to_be_bytes());
    assert_eq!(&c[16..32], &nonce(5));
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&[31; 32]).unwrap();
    m.update(b"mpbond-convert-cookie-v1");
    m.update(&[1; 8]);
    m.update(&NOW.to_be_bytes());
    m.update(&nonce(5));
    m.update(&20u16.to_be_bytes());
    m.update(&req[4..24]);
    assert_eq!(&c[32..64], m.finalize().into_bytes().as_slice());
    let parsed = Cookie::parse(c).unwrap();
    assert_eq!(parsed.to_bytes(), c);
    assert!(parsed.verify(&k, &req[4..24]).is_ok());
    assert!(Cookie::parse(&c[..COOKIE_LEN - 1]).is_none());
}

#[test]
fn valid_request_is_accepted_once() {
    let mut conv = converter(vec![key(1)]);
    let req = connect_request(&key(1), now(NOW), nonce(1), dst(), &[]);
    assert!(matches!(
        conv.check_request(now(NOW), &req),
        Request::Connect {
            key: KeyId([1, 1, 1, 1, 1, 1, 1, 1]),
            ..
        }
    ));
    // Same nonce again: replay, refused with the proven key named.
    let r = conv.check_request(now(NOW + 1), &req);
    assert_refused(&r, RefusalCause::Replay);
    assert!(matches!(r, Request::Refused { key: Some(k), .. } if k == KeyId([1; 8])));
    // A different nonce is a new request.
    let req2 = connect_request(&key(1), now(NOW), nonce(2), dst(), &[]);
    assert!(matches!(
        conv.check_request(now(NOW + 1), &req2),
        Request::Connect { .. }
    ));
}

#[test]
fn wrong_key_unknown_key_and_missing_cookie() {
    let mut conv = converter(vec![key(1)]);
    // Same id, different secret.
    let forged = ClientKey::from_parts(KeyId([1; 8]), [0x55; 32]);
    let r = conv.check_request(
        now(NOW),
        &connect_request(&forged, now(NOW), nonce(1), dst(), &[]),
    );
    assert_refused(&r, RefusalCause::BadMac);
    assert!(matches!(r, Request::Refused { key: None, .. }));
    // Unknown id.
    let r = conv.check_request(
        now(NOW),
        &connect_request(&key(2), now(NOW), nonce(1), dst(), &[]),
    );
    assert_refused(&r, RefusalCause::UnknownKey);
    // No Cookie TLV at all: Not Authorized, since we never compute cookies (§6.2.8 Missing
    // Cookie is only for a converter that does).
    let req = connect_request(&key(1), now(NOW), nonce(1), dst(), &[]);
    let mut no_cookie = req[..24].to_vec();
    no_cookie[1] = 6;
    let r = conv.check_request(now(NOW), &no_cookie);
    assert_refused(&r, RefusalCause::MissingCookie);
    assert_eq!(RefusalCause::MissingCookie.error_code(), ErrorCode::NotAuthorized);
    // A cookie of the wrong size.
    let mut short = req.clone();
    short.truncate(req.len() - 4);
    short[1] -= 1;
    short[25] -= 1;
    assert_refused(&conv.check_request(now(NOW), &short), RefusalCause::BadMac);
}

#[test]
fn every_bit_flip_is_refused() {
    let k = key(1);
    let req = connect_request(
        &k,
        now(NOW),
        nonce(9),
        dst(),
        &[4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0],
    );
    let mut conv = converter(vec![k]);
    let mut causes = std::collections::HashMap::new();
    for byte in 0..req.len() {
        for bit in 0..8 {
            let mut m = req.clone();
            m[byte] ^= 1 << bit;
            let r = conv.check_request(now(NOW), &m);
            assert!(
                !matches!(r, Request::Connect { .. }),
                "flip of bit {bit} in byte {byte} accepted: {r:?}"
            );
            *causes.entry(cause(&r)).or_insert(0) += 1;
        }
    }
    // Nothing was accepted, so the original is still fresh.
    assert!(matches!(
        conv.check_request(now(NOW), &req),
        Request::Connect { .. }
    ));
    assert!(causes.contains_key(&Some(RefusalCause::BadMac)), "{causes:?}");
}

#[test]
fn destination_swapped_is_refused() {
    let k = key(1);
    let mut conv = converter(vec![k.clone()]);
    let req = connect_request(&k, now(NOW), nonce(3), dst(), &[]);
    let other = connect_request(&k, now(NOW), nonce(4), "198.18.0.8:443".parse().unwrap(), &[]);
    // The Connect TLV of `other` with the cookie of `req`.
    let mut moved = other[..24].to_vec();
    moved.extend_from_slice(&req[24..]);
    assert_refused(&conv.check_request(now(NOW), &moved), RefusalCause::BadMac);
    // Port changed only.
    let mut port = req.clone();
    port[7] ^= 1;
    assert_refused(&conv.check_request(now(NOW), &port), RefusalCause::BadMac);
    // Options changed (SACK-Permitted added).
    let with_opts = connect_request(&k, now(NOW), nonce(3), dst(), &[4, 2]);
    let mut spliced = with_opts[..28].to_vec();
    spliced.extend_from_slice(&req[24..]);
    spliced[1] = (spliced.len() / 4) as u8;
    assert_refused(&conv.check_request(now(NOW), &spliced), RefusalCause::BadMac);
}

#[test]
fn stale_and_future_timestamps() {
    let k = key(1);
    let mut conv = converter(vec![k.clone()]);
    let skew = ConverterConfig::default().max_clock_skew.as_secs();
    let req = connect_request(&k, now(NOW), nonce(1), dst(), &[]);
    assert_refused(
        &conv.check_request(now(NOW + skew + 1), &req),
        RefusalCause::Stale,
    );
    assert_refused(
        &conv.check_request(now(NOW - skew - 1), &req),
        RefusalCause::Stale,
    );
    // The boundaries are accepted.
    assert!(matches!(
        conv.check_request(now(NOW + skew), &req),
        Request::Connect { .. }
    ));
    let req = connect_request(&k, now(NOW), nonce(2), dst(), &[]);
    assert!(matches!(
        conv.check_request(now(NOW - skew), &req),
        Request::Connect { .. }
    ));
}

#[test]
fn revoked_key_is_refused_at_once() {
    let mut conv = converter(vec![key(1), key(2)]);
    let a = connect_request(&key(1), now(NOW), nonce(1), dst(), &[]);
    let b = connect_request(&key(2), now(NOW), nonce(1), dst(), &[]);
    conv.replace_keys(vec![key(2)]);
    assert_refused(&conv.check_request(now(NOW), &a), RefusalCause::UnknownKey);
    assert!(matches!(
        conv.check_request(now(NOW), &b),
        Request::Connect { .. }
    ));
    // Re-adding the key does not let an accepted cookie replay (the cache survives reloads).
    conv.replace_keys(vec![key(1), key(2)]);
    assert_refused(&conv.check_request(now(NOW), &b), RefusalCause::Replay);
    assert!(matches!(
        conv.check_request(now(NOW), &a),
        Request::Connect { .. }
    ));
}

#[test]
fn replay_cache_bound_under_ten_times_capacity() {
    let cap = 64;
    let cfg = ConverterConfig {
        replay_capacity: cap,
        ..ConverterConfig::default()
    };
    let k = key(1);
    let mut conv = Converter::new(vec![k.clone()], cfg);
    let mut accepted = Vec::new();
    // 10 × capacity distinct requests, one every 50 ms of wall time (20 per second).
    for i in 0..(10 * cap as u64) {
        let t = NOW + i / 20;
        let req = connect_request(&k, now(t), nonce(i), dst(), &[]);
        match conv.check_request(now(t), &req) {
            Request::Connect { .. } => accepted.push((t, req)),
            other => panic!("request {i} refused: {other:?}"),
        }
        assert!(conv.replay_entries() <= cap);
    }
    // No accepted request can be replayed, whether still cached or already forgotten.
    let end = NOW + 10 * cap as u64 / 20;
    for (_, req) in &accepted {
        assert!(!matches!(
            conv.check_request(now(end), req),
            Request::Connect { .. }
        ));
    }
    assert!(conv.replay_entries() <= cap);
}

#[test]
fn replay_cache_full_within_one_second_refuses_not_forgets() {
    let cap = 16;
    let cfg = ConverterConfig {
        replay_capacity: cap,
        ..ConverterConfig::default()
    };
    let k = key(1);
    let mut conv = Converter::new(vec![k.clone()], cfg);
    let reqs: Vec<Vec<u8>> = (0..10 * cap as u64)
        .map(|i| connect_request(&k, now(NOW), nonce(i), dst(), &[]))
        .collect();
    let mut ok = 0;
    for r in &reqs {
        match conv.check_request(now(NOW), r) {
            Request::Connect { .. } => ok += 1,
            other => {
                assert_eq!(cause(&other), Some(RefusalCause::Limit));
                // Resource Exceeded with a 1 s suggested delay (§6.2.8).
                let Request::Refused { reply, .. } = other else {
                    unreachable!()
                };
                assert_eq!(reply, [1, 2, 0x22, 0x63, 0x1e, 1, 64, 1]);
            }
        }
    }
    assert_eq!(ok, cap);
    assert_eq!(conv.replay_entries(), cap);
    // A second later, new cookies are accepted (the oldest forgotten, the window tightened) and
    // none of the first second's cookies is ever accepted again.
    let fresh = connect_request(&k, now(NOW + 1), nonce(999), dst(), &[]);
    assert!(matches!(
        conv.check_request(now(NOW + 1), &fresh),
        Request::Connect { .. }
    ));
    for r in &reqs {
        assert!(!matches!(
            conv.check_request(now(NOW + 1), r),
            Request::Connect { .. }
        ));
    }
    assert_eq!(conv.replay_entries(), cap);
}

#[test]
fn replay_cache_invariants() {
    let skew = Duration::from_secs(10);
    let id = KeyId([1; 8]);
    let mut c = ReplayCache::new(3, skew);
    assert!(c.is_empty());
    assert_eq!(c.accept(100, id, nonce(1), 100), Ok(()));
    assert_eq!(c.accept(100, id, nonce(1), 100), Err(Freshness::Replay));
    assert_eq!(c.accept(100, KeyId([2; 8]), nonce(1), 100), Ok(()), "per key id");
    assert_eq!(c.accept(100, id, nonce(2), 89), Err(Freshness::Stale));
    assert_eq!(c.accept(100, id, nonce(2), 111), Err(Freshness::Future));
    assert_eq!(c.accept(100, id, nonce(2), 99), Ok(()));
    assert_eq!(c.len(), 3);
    // Full: a cookie not newer than the oldest entry (99) is refused, a newer one evicts it.
    assert_eq!(c.accept(100, id, nonce(3), 99), Err(Freshness::Full));
    assert_eq!(c.accept(101, id, nonce(3), 101), Ok(()));
    assert_eq!(c.floor(), Some(99));
    assert_eq!(c.len(), 3);
    // The evicted one cannot come back, nor anything at or below the floor.
    assert_eq!(c.accept(101, id, nonce(2), 99), Err(Freshness::BelowWindow));
    // Expiry: at 111 the entries of 100 are stale (100 + 10 < 111) and leave, raising the floor.
    assert_eq!(c.accept(111, id, nonce(4), 111), Ok(()));
    assert_eq!(c.floor(), Some(100));
    assert_eq!(c.len(), 2);
    // A clock stepping back does not revive expired entries.
    assert_eq!(c.accept(100, id, nonce(1), 100), Err(Freshness::BelowWindow));
}
