//! Keys, tokens, IDSN, MP_JOIN and ADD_ADDR HMACs against independent vectors.
//!
//! Where the vectors come from:
//! - `LINUX_*`: the Linux kernel's KUnit test `net/mptcp/crypto_test.c` (`mptcp_crypto_test_basic`),
//!   which feeds `mptcp_crypto_hmac_sha(key1, key2, msg, 8)` with key1/key2/nonces taken from the
//!   *ASCII* bytes of its `key`/`msg` strings. Re-checked by hand with Python:
//!   `hmac.new(b"0b0b0b0b0b0b0b0b", b"48692054", hashlib.sha256).hexdigest()`.
//! - Everything else was computed once by hand with Python's `hashlib`/`hmac`/`struct`
//!   (`struct.pack(">Q", key)` for keys, `">I"` for nonces), independently of this code:
//!   token = `digest[:4]`, IDSN = `digest[24:]`, SYN/ACK HMAC = `hmac[:8]`, ACK HMAC = `hmac[:20]`,
//!   ADD_ADDR HMAC = `hmac[24:]` over `id ‖ addr ‖ port(2, 0 if absent)`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mpbond::mptcp::crypto::*;
use mpbond::mptcp::seq::DataSeq;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ascii_u64(s: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*s)
}

fn ascii_u32(s: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*s)
}

const LINUX_VECTORS: [(&[u8; 16], &[u8; 8], &str); 3] = [
    (
        b"0b0b0b0b0b0b0b0b",
        b"48692054",
        "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa",
    ),
    (
        b"aaaaaaaaaaaaaaaa",
        b"dddddddd",
        "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9",
    ),
    (
        b"0102030405060708",
        b"cdcdcdcd",
        "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d",
    ),
];

#[test]
fn join_hmac_matches_linux_kunit_vectors() {
    for (key, msg, expected) in LINUX_VECTORS {
        let k1 = Key(ascii_u64(key[..8].try_into().unwrap()));
        let k2 = Key(ascii_u64(key[8..].try_into().unwrap()));
        let n1 = Nonce(ascii_u32(msg[..4].try_into().unwrap()));
        let n2 = Nonce(ascii_u32(msg[4..].try_into().unwrap()));
        let full = join_hmac(k1, k2, n1, n2);
        assert_eq!(hex(&full), expected);
        // The truncations of RFC 8684 §3.2 are prefixes of the same HMAC.
        assert_eq!(join_ack_hmac(k1, k2, n1, n2), full[..20]);
        assert_eq!(join_synack_hmac(k1, k2, n1, n2).to_be_bytes(), full[..8]);
    }
}

#[test]
fn token_and_idsn_vectors() {
    // (key, token, idsn) from Python: sha256(struct.pack(">Q", key)).
    let vectors = [
        (
            0x0123_4567_89ab_cdef_u64,
            0x55c5_3f5d_u32,
            0x5707_62cd_38be_9818_u64,
        ),
        (0, 0xaf55_70f5, 0xe5b2_328d_e0e8_3dfc),
        (u64::MAX, 0x12a3_ae44, 0x57fb_595b_bbac_f0ca),
        (0x1122_3344_5566_7788, 0x1dce_6604, 0x6281_5714_b76a_e9a5),
    ];
    for (key, token, idsn) in vectors {
        assert_eq!(Key(key).token(), Token(token), "token of {key:#x}");
        assert_eq!(Key(key).idsn(), DataSeq(idsn), "idsn of {key:#x}");
        assert_eq!(Key(key).token_and_idsn(), (Token(token), DataSeq(idsn)));
    }
}

const KEY_A: Key = Key(0x0123_4567_89ab_cdef);
const KEY_B: Key = Key(0xfedc_ba98_7654_3210);
const R_A: Nonce = Nonce(0x1122_3344);
const R_B: Nonce = Nonce(0x5566_7788);

#[test]
fn mp_join_handshake_vectors_figure8() {
    // HMAC-B = HMAC(Key=(Key-B + Key-A), Msg=(R-B + R-A)), leftmost 64 bits on the SYN/ACK.
    assert_eq!(join_synack_hmac(KEY_B, KEY_A, R_B, R_A), 0x0d44_dc5f_5551_21b7);
    // HMAC-A = HMAC(Key=(Key-A + Key-B), Msg=(R-A + R-B)), leftmost 160 bits on the third ACK.
    assert_eq!(
        hex(&join_ack_hmac(KEY_A, KEY_B, R_A, R_B)),
        "d8b5e46b7a782e79d3ecfd78307751df993e222b"
    );
}

#[test]
fn mp_join_verification_accepts_the_right_hmac_and_refuses_any_other() {
    let thmac = join_synack_hmac(KEY_B, KEY_A, R_B, R_A);
    assert_eq!(verify_join_synack_hmac(thmac, KEY_B, KEY_A, R_B, R_A), Ok(()));
    for bit in 0..64 {
        assert_eq!(
            verify_join_synack_hmac(thmac ^ (1 << bit), KEY_B, KEY_A, R_B, R_A),
            Err(HmacMismatch)
        );
    }
    // Keys or nonces in the wrong order (the receiver's view) do not verify.
    assert!(verify_join_synack_hmac(thmac, KEY_A, KEY_B, R_A, R_B).is_err());
    assert!(verify_join_synack_hmac(thmac, KEY_B, KEY_A, R_A, R_B).is_err());

    let hmac = join_ack_hmac(KEY_A, KEY_B, R_A, R_B);
    assert_eq!(verify_join_ack_hmac(&hmac, KEY_A, KEY_B, R_A, R_B), Ok(()));
    for byte in 0..20 {
        let mut bad = hmac;
        bad[byte] ^= 0x80;
        assert!(verify_join_ack_hmac(&bad, KEY_A, KEY_B, R_A, R_B).is_err());
    }
    assert!(verify_join_ack_hmac(&hmac, KEY_B, KEY_A, R_B, R_A).is_err());
}

#[test]
fn add_addr_hmac_vectors_rightmost_64_bits() {
    let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    // A announces id 5, 198.18.0.2, no port (message carries port 0).
    let h = add_addr_hmac(KEY_A, KEY_B, 5, v4, None);
    assert_eq!(h, 0x8902_4e02_2111_402f);
    assert_eq!(add_addr_hmac(KEY_A, KEY_B, 5, v4, Some(0)), h);
    assert_eq!(verify_add_addr_hmac(h, KEY_A, KEY_B, 5, v4, None), Ok(()));
    assert!(verify_add_addr_hmac(h, KEY_A, KEY_B, 6, v4, None).is_err());
    assert!(verify_add_addr_hmac(h, KEY_A, KEY_B, 5, v4, Some(80)).is_err());
    assert!(verify_add_addr_hmac(h, KEY_B, KEY_A, 5, v4, None).is_err());
    assert!(verify_add_addr_hmac(h ^ 1, KEY_A, KEY_B, 5, v4, None).is_err());

    // B announces id 7, fd00::1 port 8080.
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let h6 = add_addr_hmac(KEY_B, KEY_A, 7, v6, Some(8080));
    assert_eq!(h6, 0xeff3_325b_11b2_8977);
    assert_eq!(verify_add_addr_hmac(h6, KEY_B, KEY_A, 7, v6, Some(8080)), Ok(()));
}

#[test]
fn token_table_regenerates_the_key_on_collision() {
    let mut table = TokenTable::new();
    // A source that returns the same key twice, then a different one.
    let mut seq = [7u64, 7, 8].into_iter();
    let mut src = || Ok(seq.next().unwrap());
    let (k1, t1) = table.generate_with(&mut src).unwrap();
    let (k2, t2) = table.generate_with(&mut src).unwrap();
    assert_eq!(k1, Key(7));
    assert_eq!(k2, Key(8), "the colliding key 7 must have been skipped");
    assert_ne!(t1, t2);
    assert!(table.contains(t1) && table.contains(t2));
    assert_eq!(table.len(), 2);
    assert!(table.release(t1));
    assert!(!table.release(t1));
    assert!(!table.contains(t1));
    // After release, key 7 is usable again.
    assert_eq!(table.generate_with(|| Ok(7)).unwrap().1, t1);
}

#[test]
fn token_table_gives_up_on_a_stuck_source() {
    let mut table = TokenTable::new();
    table.generate_with(|| Ok(42)).unwrap();
    let mut calls = 0;
    let r = table.generate_with(|| {
        calls += 1;
        Ok(42)
    });
    assert!(matches!(r, Err(KeyGenError::Exhausted { attempts }) if attempts == TokenTable::MAX_ATTEMPTS));
    assert_eq!(calls, TokenTable::MAX_ATTEMPTS);
    assert_eq!(table.len(), 1);
}

#[test]
fn os_random_keys_are_unique_per_table() {
    let mut table = TokenTable::new();
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..1000 {
        let (key, token) = table.generate().unwrap();
        assert_eq!(key.token(), token);
        assert!(tokens.insert(token));
    }
    assert_eq!(table.len(), 1000);
    // Nonces come from the OS too; 64 draws are not all equal.
    let nonces: std::collections::HashSet<_> = (0..64).map(|_| os_random_nonce().unwrap().0).collect();
    assert!(nonces.len() > 1);
}

#[test]
fn key_debug_does_not_leak_the_key() {
    assert_eq!(format!("{:?}", KEY_A), "Key(..)");
}
