//! ADD_ADDR / REMOVE_ADDR handling (RFC 8684 §3.4): announcements authenticated with the
//! connection keys, echoes, the peer address table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mpbond::mptcp::addr::*;
use mpbond::mptcp::crypto::Key;
use mpbond::mptcp::handshake::Negotiated;
use mpbond::wire::mptcp::*;

fn pair() -> (Negotiated, Negotiated) {
    let a = Key(0x0123_4567_89ab_cdef);
    let b = Key(0xfedc_ba98_7654_3210);
    let conn = |local, remote| Negotiated {
        local_key: local,
        remote_key: remote,
        checksums: false,
        peer_no_subflows_to_source: false,
        local_no_subflows_to_source: false,
    };
    (conn(a, b), conn(b, a))
}

fn wire(opt: &MptcpOption) -> AddAddr {
    let mut buf = [0u8; MAX_OPTION_LEN];
    let n = opt.write(&mut buf).expect("write");
    match MptcpOption::parse(&buf[..n]).expect("parse") {
        MptcpOption::AddAddr(a) => a,
        other => panic!("{other:?}"),
    }
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const V4B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));

#[test]
fn announcement_is_authenticated_and_echoed() {
    let (a, b) = pair();
    let opt = announce(&a, 5, V4, None);
    // Same HMAC as the independent vector in tests/mptcp_crypto.rs (A announces id 5, no port).
    let MptcpOption::AddAddr(AddAddr {
        signal: AddrSignal::Announce { truncated_hmac },
        ..
    }) = opt
    else {
        panic!()
    };
    assert_eq!(truncated_hmac, 0x8902_4e02_2111_402f);
    let mut table = RemoteAddrs::new(V4B);
    let received = wire(&opt);
    assert_eq!(
        table.on_add_addr(&b, &received),
        Ok(AddAddrOutcome::New(RemoteAddr { addr: V4, port: None }))
    );
    assert_eq!(table.get(5), Some(RemoteAddr { addr: V4, port: None }));
    // The echo goes back without HMAC, E=1, and A recognises it.
    let e = wire(&echo(&received));
    assert_eq!(e.signal, AddrSignal::Echo);
    assert_eq!(MptcpOption::AddAddr(e).len(), 8);
    let mut a_table = RemoteAddrs::new(V4);
    assert_eq!(
        a_table.on_add_addr(&a, &e),
        Ok(AddAddrOutcome::EchoOfOurs { addr_id: 5 })
    );
    assert_eq!(a_table.len(), 1);
}

#[test]
fn forged_or_misdirected_announcement_is_refused() {
    let (a, b) = pair();
    let mut table = RemoteAddrs::new(V4B);
    // An announcement "from A" computed with B's key first is not A's.
    let wrong_direction = wire(&announce(&b, 5, V4, None));
    assert_eq!(
        table.on_add_addr(&b, &wrong_direction),
        Err(AddrError::HmacMismatch { addr_id: 5 })
    );
    // Altered in flight.
    let mut altered = wire(&announce(&a, 5, V4, None));
    altered.addr = V4B;
    assert_eq!(
        table.on_add_addr(&b, &altered),
        Err(AddrError::HmacMismatch { addr_id: 5 })
    );
    altered = wire(&announce(&a, 5, V4, None));
    altered.port = Some(443);
    assert!(table.on_add_addr(&b, &altered).is_err());
    assert_eq!(table.len(), 1, "nothing was learned");
}

#[test]
fn reannouncing_an_id_with_another_address_is_refused_but_a_port_change_is_a_refresh() {
    let (a, b) = pair();
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let mut table = RemoteAddrs::new(V4B);
    table
        .on_add_addr(&b, &wire(&announce(&a, 7, v6, Some(80))))
        .unwrap();
    assert_eq!(
        table.on_add_addr(&b, &wire(&announce(&a, 7, v6, Some(8080)))),
        Ok(AddAddrOutcome::Refreshed {
            addr: RemoteAddr {
                addr: v6,
                port: Some(8080)
            },
            port_changed: true
        })
    );
    assert_eq!(
        table.on_add_addr(&b, &wire(&announce(&a, 7, V4, None))),
        Err(AddrError::IdReused { addr_id: 7 })
    );
}

#[test]
fn remove_addr_drops_known_ids_and_ignores_unknown_ones() {
    let (a, b) = pair();
    let mut table = RemoteAddrs::new(V4B);
    table.on_add_addr(&b, &wire(&announce(&a, 1, V4, None))).unwrap();
    table.on_join(2, IpAddr::V4(Ipv4Addr::new(198, 18, 2, 2)));
    assert_eq!(table.len(), 3);
    let Some(MptcpOption::RemoveAddr { addr_ids }) = remove(&[1, 9, 2]) else {
        panic!()
    };
    let removed = table.on_remove_addr(&addr_ids);
    assert_eq!(removed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(table.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![0]);
    assert!(remove(&[]).is_none());
}
