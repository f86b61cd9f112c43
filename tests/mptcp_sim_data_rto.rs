//! The data-level retransmission timer (RFC 8684 §3.3.6): octets a subflow delivered (and
//! acknowledged) but the peer never DATA_ACKed are sent again, so the connection does not stall.

#![allow(clippy::print_stdout, reason = "tests print timings")]

mod common;

use common::mpsim::{run_ok, spec};
use mpbond::config::{JoinPolicy, Mode};
use mpbond::sim::{DssDamage, Link};

const MB: u64 = 1 << 20;

#[test]
fn octets_lost_above_the_subflow_are_sent_again_at_the_data_level() {
    for (seed, join) in [(51, JoinPolicy::OnDemand), (52, JoinPolicy::Immediate)] {
        let mut s = spec(seed, Mode::Handover, 8 * MB, 2 * MB);
        s.client.capable.checksum_required = false;
        s.server.capable.checksum_required = false;
        s.client.join = join;
        // A middlebox moves one mapping far ahead: the server's subflow acknowledges the octets
        // but its data level drops them (outside the window) and its DATA_ACK stops there.
        s.wifi_up_extra = vec![Link::DamageDss {
            nth: 5,
            damage: DssDamage::MoveDsn,
        }];
        let r = run_ok(&s);
        assert!(r.client_mptcp, "seed {seed}: {:?}", r.error);
        assert_eq!((r.client_received, r.server_received), (2 * MB, 8 * MB));
        println!(
            "seed {seed}, join {join:?}: 8 MB up byte-exact, done at {:?}",
            r.data_done_at
        );
    }
}
