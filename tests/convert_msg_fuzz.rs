//! A bounded, deterministic stand-in for the cargo-fuzz target `fuzz/fuzz_targets/convert_msg.rs`,
//! so `cargo test` checks the same properties without cargo-fuzz: the converter's request check and
//! the client's reply parse never panic; a mutated authenticated request is never accepted for a
//! destination or options other than those signed; a refusal's reply is an Error message with the
//! cause's code.
//!
//! Inputs: mutations (bit flips, byte overwrites, truncations, extensions with a fixed-up Total
//! Length) of valid requests, connected replies and error replies. Seed and count can be changed
//! with `MPBOND_FUZZ_SEED` / `MPBOND_FUZZ_ITERS` to replay or extend a run.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::convert::client::{Reply, connect_request, parse_reply};
use mpbond::convert::converter::{Converter, ConverterConfig, Request, connected_reply, error_reply};
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::msg::ErrorCode;

#[path = "common/fuzz.rs"]
mod fuzz;

use fuzz::{Rng, env_u64};

const NOW: Duration = Duration::from_secs(1_700_000_000);

#[test]
fn mutated_messages_keep_the_invariants() {
    let seed = env_u64("MPBOND_FUZZ_SEED", 0xc0de);
    let iters = env_u64("MPBOND_FUZZ_ITERS", 20_000);
    let mut rng = Rng(seed);
    let key = ClientKey::from_parts(KeyId([4; 8]), [5; 32]);
    let dst: SocketAddr = "198.18.0.7:443".parse().unwrap();
    let mut accepted = 0u64;
    for i in 0..iters {
        let nonce = rng.next().to_be_bytes().repeat(2).try_into().unwrap();
        let mut m = match rng.below(4) {
            0 | 1 => connect_request(&key, NOW, nonce, dst, &[4, 2, 8, 2, 30, 2]),
            2 => connected_reply(&[2, 4, 5, 0xb4, 1, 3, 3, 7]),
            _ => error_reply(
                ErrorCode::ALL[rng.below(ErrorCode::ALL.len() as u64) as usize],
                &[rng.byte()],
            ),
        };
        let pristine = m.clone();
        for _ in 0..=rng.below(3) {
            let n = m.len() as u64;
            match rng.below(4) {
                0 => m[rng.below(n) as usize] ^= 1 << rng.below(8),
                1 => m[rng.below(n) as usize] = rng.byte(),
                2 => m.truncate(rng.below(n) as usize + 1),
                _ => {
                    m.extend((0..rng.below(12)).map(|_| rng.byte()));
                    if rng.below(2) == 0 && m.len() > 1 {
                        m[1] = (m.len() / 4) as u8;
                    }
                }
            }
            if m.is_empty() {
                break;
            }
        }
        let mut conv = Converter::new(vec![key.clone()], ConverterConfig::default());
        match conv.check_request(NOW, &m) {
            Request::Connect {
                dst: d,
                consumed,
                tcp_options,
                ..
            } => {
                // Only the signed destination and options get through, and only if the signed
                // part is intact.
                assert_eq!(d, dst, "input #{i} (seed {seed}): {m:02x?}");
                assert_eq!(tcp_options, [4, 2, 8, 2, 30, 2]);
                assert_eq!(m[..consumed], pristine[..consumed]);
                accepted += 1;
            }
            Request::Refused { cause, reply, .. } => {
                if !reply.is_empty() {
                    assert!(
                        matches!(parse_reply(&reply), Reply::Error { code, .. } if code == cause.error_code()),
                        "input #{i} (seed {seed}): {m:02x?}"
                    );
                }
            }
            Request::Incomplete => assert!(m.len() < 1020),
        }
        if let Reply::Connected { consumed, .. } | Reply::Error { consumed, .. } = parse_reply(&m) {
            assert!(consumed <= m.len());
        }
        mpbond::fuzz::convert_msg(&m);
    }
    // Mutations that only append early data (or touch nothing signed) are still accepted.
    assert!(accepted > 0);
}
