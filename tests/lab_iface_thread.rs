//! Root-only: two interface I/O threads on the two ends of a veth pair exchange batches of subflow
//! segments, and a thread survives its interface being deleted and created again.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a lab test: real time, panics are failures"
)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mpbond::io::iface::{self, IfaceConfig, IfaceEvent};
use mpbond::io::pool::{Batch, Pool};

fn config(id: u8, name: &str, ns: &str) -> IfaceConfig {
    IfaceConfig {
        id,
        name: name.into(),
        ports: 61000..=61999,
        fwmark: 0x6d70,
        ring_blocks: 4,
        netns: Some(ns.into()),
    }
}

fn syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 65535)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// Collects `n` received packets (bounded in time), returning them.
fn receive(events: &Receiver<IfaceEvent>, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Ok(IfaceEvent::Received { packets, .. }) = events.recv_timeout(Duration::from_millis(100)) {
            got.extend(packets.iter().map(|p| p.to_vec()));
        }
    }
    got
}

fn wait_for(events: &Receiver<IfaceEvent>, what: &str, f: impl Fn(&IfaceEvent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(e) = events.recv_timeout(Duration::from_millis(100))
            && f(&e)
        {
            return;
        }
    }
    panic!("no {what} event within 10 s");
}

#[test]
fn threads_exchange_batches_and_survive_interface_loss() {
    require_root!();
    let (a, b) = common::lab::veth_pair("ia", "ib");
    common::lab::drop_kernel_tcp(&a, "61000-61999");
    common::lab::drop_kernel_tcp(&b, "61000-61999");
    let pool = Pool::new(1024, 16);
    let (a_tx, a_rx) = crossbeam_channel::bounded(64);
    let (b_tx, b_rx) = crossbeam_channel::bounded(64);
    let ta = iface::spawn(config(0, "ia", &a.name), pool.clone(), a_tx).unwrap();
    let tb = iface::spawn(config(1, "ib", &b.name), pool.clone(), b_tx).unwrap();
    wait_for(&a_rx, "opened", |e| matches!(e, IfaceEvent::Opened { iface: 0 }));
    wait_for(&b_rx, "opened", |e| matches!(e, IfaceEvent::Opened { iface: 1 }));

    let (ip_a, ip_b) = (
        Ipv4Addr::new(198, 18, 100, 1).octets(),
        Ipv4Addr::new(198, 18, 100, 2).octets(),
    );
    let sent: Vec<Vec<u8>> = (0..300u16)
        .map(|i| syn(ip_a, ip_b, 61000 + i, 61000 + i, u32::from(i)))
        .collect();
    for chunk in sent.chunks(64) {
        let batch: Batch = chunk.iter().map(|p| pool.copy_from(p)).collect();
        ta.send(batch);
    }
    let got = receive(&b_rx, sent.len());
    assert_eq!(
        got.len(),
        sent.len(),
        "b received {} of {}",
        got.len(),
        sent.len()
    );
    assert_eq!(got, sent, "same bytes, same order");
    assert_eq!(
        ta.stats().tx_packets.load(std::sync::atomic::Ordering::Relaxed),
        300
    );

    // The other way.
    let back: Vec<Vec<u8>> = (0..10u16).map(|i| syn(ip_b, ip_a, 61500, 61500 + i, 7)).collect();
    tb.send(back.iter().map(|p| pool.copy_from(p)).collect());
    assert_eq!(receive(&a_rx, back.len()), back);

    // The interface disappears (a USB tether unplugged) and comes back.
    a.sh("ip link del ia");
    wait_for(&a_rx, "closed", |e| {
        matches!(e, IfaceEvent::Closed { iface: 0, .. })
    });
    common::lab::sh(&format!(
        "ip link add ia netns {} type veth peer name ib netns {}",
        a.name, b.name
    ));
    for (ns, ifn, n) in [(&a, "ia", 1), (&b, "ib", 2)] {
        ns.sh(&format!("ip addr add 198.18.100.{n}/24 dev {ifn}"));
        ns.sh(&format!("ethtool -K {ifn} tx off"));
        ns.sh(&format!("ip link set {ifn} up"));
    }
    ta.reopen();
    tb.reopen();
    wait_for(&a_rx, "reopened", |e| {
        matches!(e, IfaceEvent::Opened { iface: 0 })
    });
    wait_for(&b_rx, "reopened", |e| {
        matches!(e, IfaceEvent::Opened { iface: 1 })
    });
    let again: Vec<Vec<u8>> = (0..5u16).map(|i| syn(ip_a, ip_b, 61900, 61900 + i, 9)).collect();
    ta.send(again.iter().map(|p| pool.copy_from(p)).collect());
    assert_eq!(receive(&b_rx, again.len()), again);
    drop((ta, tb));
}
