//! A deterministic network simulator in virtual time (no clock, no threads): endpoints exchange
//! real IP packets (built and parsed with [`crate::wire`]) over one-way paths made of chainable
//! links (delay, jitter, loss, burst loss, reordering, duplication, rate limit with a queue,
//! blackhole, MTU, option-rewriting middlebox). The randomness is a seeded PRNG; tests take the
//! seed from `MPBOND_SIM_SEED` ([`rng::seed_from_env`]) and print it on failure.
//!
//! [`transfer`] drives two TCP engines over a [`Network`] (the MPTCP engine will drive its
//! endpoints over two paths the same way).

pub mod link;
pub mod mptcp;
pub mod net;
pub mod rng;
pub mod transfer;

pub use link::{Link, Rewrite, Stage};
pub use net::{Delivery, Network, PathId, PathStats};
pub use rng::{Rng, seed_from_env};
