//! A bounded, deterministic stand-in for the cargo-fuzz target `fuzz/fuzz_targets/mptcp_options.rs`,
//! so `cargo test` checks the same property without cargo-fuzz: the MPTCP option parser never
//! panics, and whatever it accepts survives write → parse unchanged.
//!
//! Inputs: random byte strings (framed as option 30 most of the time, so they reach the subtype
//! parsers), and mutations (bit flips, byte overwrites, resizes with a fixed-up length byte) of
//! valid encodings of every subtype at every length. Seed and count can be changed with
//! `MPBOND_FUZZ_SEED` / `MPBOND_FUZZ_ITERS` to replay or extend a run.

use mpbond::wire::mptcp::{MAX_OPTION_LEN, MptcpOption, OptionError, Subtype};

#[path = "common/fuzz.rs"]
mod fuzz;

use fuzz::{Rng, env_u64};

/// Valid encodings of every subtype at every defined length (flags randomised).
fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let frame = |sub_byte: u8, len: u8, rng: &mut Rng| {
        let mut v: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        v[0] = 30;
        v[1] = len;
        v[2] = sub_byte;
        v
    };
    for len in [4, 12, 20, 22, 24] {
        out.push(frame(0x01, len, rng));
    }
    for len in [12, 16, 24] {
        out.push(frame(0x10, len, rng));
    }
    for flags in 0u8..32 {
        let ack = [0, 4, 0, 8][usize::from(flags & 3)];
        let map = [0, 0, 0, 0, 10, 10, 10, 10, 0, 0, 0, 0, 14, 14, 14, 14][usize::from(flags & 0x0f)];
        let mut v = frame(0x20, 4 + ack + map, rng);
        v[3] = flags;
        out.push(v.clone());
        if map != 0 {
            let mut v = frame(0x20, 6 + ack + map, rng);
            v[3] = flags;
            out.push(v);
        }
    }
    for len in [16, 18, 28, 30] {
        out.push(frame(0x30, len, rng));
    }
    for len in [8, 10, 20, 22] {
        out.push(frame(0x31, len, rng));
    }
    for len in 4..=40 {
        out.push(frame(0x40, len, rng));
    }
    out.push(frame(0x51, 3, rng));
    out.push(frame(0x60, 12, rng));
    out.push(frame(0x70, 12, rng));
    out.push(frame(0x81, 4, rng));
    out
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 | 1 => {
                if !v.is_empty() {
                    let i = rng.below(v.len() as u64) as usize;
                    v[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                if !v.is_empty() {
                    let i = rng.below(v.len() as u64) as usize;
                    v[i] = rng.byte();
                }
            }
            3 => {
                let n = rng.below(MAX_OPTION_LEN as u64 + 8) as usize;
                v.resize(n, rng.byte());
                if v.len() > 1 {
                    v[1] = v.len() as u8; // keep the framing consistent to reach the parsers
                }
            }
            4 => {
                // Flip the subtype nibble.
                if v.len() > 2 {
                    v[2] = (rng.byte() & 0xf0) | (v[2] & 0x0f);
                }
            }
            _ => {
                if v.len() > 1 {
                    v[1] = rng.byte(); // inconsistent length byte
                }
            }
        }
    }
    v
}

fn random_input(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(MAX_OPTION_LEN as u64 + 12) as usize;
    let mut v: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    if len >= 2 && rng.below(8) != 0 {
        v[0] = 30;
        v[1] = len as u8;
    }
    v
}

#[test]
fn parser_never_panics_and_round_trips_what_it_accepts() {
    let seed = env_u64("MPBOND_FUZZ_SEED", 0x6d70_626f_6e64);
    let iters = env_u64("MPBOND_FUZZ_ITERS", 200_000);
    let mut rng = Rng(seed);
    let corpus = seeds(&mut rng);
    let mut accepted = [0u64; 9];
    let mut unknown = 0u64;
    let mut rejected = 0u64;
    let mut buf = [0u8; 64];
    for i in 0..iters {
        let input = if i % 2 == 0 {
            random_input(&mut rng)
        } else {
            let s = &corpus[rng.below(corpus.len() as u64) as usize];
            if rng.below(4) == 0 {
                s.clone()
            } else {
                mutate(s, &mut rng)
            }
        };
        match MptcpOption::parse(&input) {
            Ok(opt) => {
                accepted[opt.subtype() as usize] += 1;
                let n = opt.write(&mut buf).unwrap_or_else(|e| {
                    panic!("seed {seed:#x} iter {i}: {input:02x?} parsed but write failed: {e}")
                });
                assert_eq!(n, opt.len());
                assert_eq!(n, input.len(), "seed {seed:#x} iter {i}: length changed");
                assert_eq!(
                    MptcpOption::parse(&buf[..n]),
                    Ok(opt),
                    "seed {seed:#x} iter {i}: {input:02x?}"
                );
            }
            Err(OptionError::UnknownSubtype { .. }) => unknown += 1,
            Err(_) => rejected += 1,
        }
    }
    println!(
        "mptcp option fuzz: seed {seed:#x}, {iters} inputs, accepted per subtype {accepted:?}, unknown {unknown}, rejected {rejected}"
    );
    assert_eq!(accepted.iter().sum::<u64>() + unknown + rejected, iters);
    if iters >= 100_000 {
        // The run reached every subtype's parser with inputs it accepts, and also refused some.
        for (code, n) in accepted.iter().enumerate() {
            assert!(
                *n > 100,
                "subtype {:?} accepted only {n} times",
                Subtype::from_code(code as u8)
            );
        }
        assert!(unknown > 0 && rejected > iters / 10);
    }
}
