//! A deterministic network simulator in virtual time (no clock, no threads): endpoints exchange
//! real IP packets (built and parsed with [`crate::wire`]) over one-way paths made of chainable
//! links (delay, jitter, loss, burst loss, reordering, duplication, rate limit with a queue,
//! blackhole, MTU, option-rewriting middlebox). The randomness is a seeded PRNG; tests take the
//! seed from `MPBOND_SIM_SEED` ([`rng::seed_from_env`]) and print it on failure.
//!
//! [`transfer`] drives two TCP engines over a [`Network`] (the MPTCP engine will drive its
//! endpoints over two paths the same way).
//!
//! Two paths between a client with a Wi-Fi and a cellular address and one server:
//!
//! ```text
//! let mut net = Network::new(seed_from_env(1));
//! let wifi = net.add_duplex(client_wifi_ip, server_ip, vec![Link::Delay(10ms), Link::Rate { .. }]);
//! let cell = net.add_duplex(client_cell_ip, server_ip, vec![Link::Delay(40ms), Link::Loss(0.01)]);
//! // each endpoint: poll_transmit -> net.send(now, packet); routing is by (src ip, dst ip)
//! // loop: now = min(timeouts, net.next_delivery()); while let Some(d) = net.deliver(now) {
//! //           dispatch d.packet to the endpoint owning d.dst; net.recycle(d.packet) }
//! net.set_down(wifi.0, true); // kill the Wi-Fi path mid-transfer
//! ```

pub mod link;
pub mod mptcp;
pub mod net;
pub mod rng;
pub mod transfer;

pub use link::{DssDamage, Link, Rewrite, Stage};
pub use net::{Delivery, Network, PathId, PathStats};
pub use rng::{Rng, seed_from_env};
