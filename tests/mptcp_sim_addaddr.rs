//! ADD_ADDR acted on (RFC 8684 §3.4.1): the client joins toward an address the server
//! announced when the server's first address takes no more subflows (flag C) or does not
//! answer from a path, and never toward an address of a family the path cannot reach.

#![allow(clippy::print_stdout, reason = "tests print byte counts")]

mod common;

use std::net::{IpAddr, Ipv6Addr};

use common::mpsim::{at, run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::{Event, PathId};
use mpbond::sim::mptcp::{Action, MpReport, SERVER, SERVER2};

const MB: u64 = 1 << 20;

fn port_requests(r: &MpReport) -> Vec<std::net::SocketAddr> {
    r.client_events
        .iter()
        .filter_map(|e| match e {
            Event::PortNeeded { remote } => Some(*remote),
            _ => None,
        })
        .collect()
}

fn cell_up(r: &MpReport) -> bool {
    r.client_events.iter().any(|e| {
        matches!(
            e,
            Event::SubflowUp {
                path: PathId(1),
                backup: true,
                ..
            }
        )
    })
}

/// Wi-Fi dies 0.7 s in, with data still in flight both ways.
fn kill_wifi_midway(s: &mut mpbond::sim::mptcp::MpSpec) {
    s.actions.push((at(700), Action::Kill(0)));
}

#[test]
fn flag_c_server_announces_another_address_and_the_backup_joins_there() {
    let mut s = spec(31, Mode::Handover, 16 * MB, 16 * MB);
    // §3.1 flag C: no subflows toward the first address and port.
    s.server.capable.no_subflows_to_source = true;
    s.actions.push((at(300), Action::Announce(SERVER2)));
    kill_wifi_midway(&mut s);
    let r = run_ok(&s);
    assert!(r.client_mptcp, "{:?}", r.client_events);
    // Before the announcement nothing joined toward the first address.
    assert_eq!(
        r.final_stats[2].sent, 0,
        "cell → first address: {:?}",
        r.final_stats
    );
    assert_eq!(r.client_peer_addrs, vec![(0, SERVER), (1, SERVER2)]);
    assert_eq!(port_requests(&r), vec![std::net::SocketAddr::new(SERVER2, 80)]);
    assert!(cell_up(&r), "{:?}", r.client_events);
    // After Wi-Fi died the rest went over cellular to the announced address.
    let (up2, down2) = (r.final_stats2[2].sent_bytes, r.final_stats2[3].sent_bytes);
    println!("cell ↔ announced address: {up2} bytes up, {down2} bytes down");
    assert!(up2 > 2 * MB && down2 > 2 * MB, "{:?}", r.final_stats2);
    // The server answered the join with the announced address's ID.
    assert!(
        r.server_events
            .iter()
            .filter(|e| matches!(e, Event::SubflowUp { .. }))
            .count()
            >= 2,
        "{:?}",
        r.server_events
    );
}

#[test]
fn a_path_that_cannot_reach_the_first_address_joins_the_announced_one() {
    let mut s = spec(32, Mode::Handover, 64 * MB, 64 * MB);
    // Cellular reaches only the second address (the first sits behind a Wi-Fi-only route).
    s.actions.push((at(0), Action::ServerUnreachable(1, true)));
    s.actions.push((at(300), Action::Announce(SERVER2)));
    // The join toward the first address is given up after two unanswered SYNs (3 s).
    s.actions.push((at(5000), Action::Kill(0)));
    let r = run_ok(&s);
    assert!(r.client_mptcp, "{:?}", r.client_events);
    // A join toward the first address was tried from cellular, and got nothing back.
    assert!(r.final_stats[2].sent > 0, "{:?}", r.final_stats);
    assert_eq!(r.final_stats[3].delivered, 0, "{:?}", r.final_stats);
    assert_eq!(port_requests(&r), vec![std::net::SocketAddr::new(SERVER2, 80)]);
    assert!(cell_up(&r), "{:?}", r.client_events);
    let (up2, down2) = (r.final_stats2[2].sent_bytes, r.final_stats2[3].sent_bytes);
    println!("cell ↔ announced address: {up2} bytes up, {down2} bytes down");
    assert!(up2 > 8 * MB && down2 > 8 * MB, "{:?}", r.final_stats2);
}

#[test]
fn an_announced_address_of_another_family_gets_no_subflow() {
    let mut s = spec(33, Mode::Handover, 2 * MB, 2 * MB);
    s.server.capable.no_subflows_to_source = true;
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 2));
    s.actions.push((at(300), Action::Announce(v6)));
    let r = run_ok(&s);
    assert!(r.client_mptcp);
    // The announcement arrived and verified (an IPv6 ADD_ADDR with its HMAC is 28 octets: it
    // goes alone on a pure ACK, without the DATA_ACK).
    assert_eq!(r.client_peer_addrs, vec![(0, SERVER), (1, v6)]);
    assert!(port_requests(&r).is_empty(), "{:?}", r.client_events);
    assert_eq!(r.final_stats[2].sent + r.final_stats2[2].sent, 0);
    assert!(!cell_up(&r));
}
