//! The endpoint demux: several client connections (ports from a range, O(1) by port) against a
//! listening server endpoint (4-tuple, MP_JOIN by token) over two simulated paths; segments
//! matching nothing and MP_JOINs with an unknown token get a RST.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::mptcp::endpoint::{ConnHandle, Endpoint, EndpointConfig};
use mpbond::mptcp::{Event, MptcpConfig, PathId};
use mpbond::sim::mptcp::{CLIENT_CELL, CLIENT_WIFI, SERVER, client_paths};
use mpbond::sim::transfer::fill_pattern;
use mpbond::sim::{Link, Network};
use mpbond::tcp::IsnKey;
use mpbond::time::Instant;
use mpbond::wire::mptcp::{MpJoin, MptcpOption};
use mpbond::wire::tcp::{SegmentFields, TcpFlags};
use mpbond::wire::{parse_tcp_packet, write_tcp_packet};

const N: usize = 3;
const BYTES: u64 = 64 << 10;

fn endpoint(listen: Vec<SocketAddr>) -> Endpoint {
    Endpoint::new(
        EndpointConfig {
            // Joins at once: the 64 KB exchanges end before a delayed join would be due, and
            // the test is about demultiplexing the joins.
            mptcp: MptcpConfig {
                join_delay: std::time::Duration::ZERO,
                ..MptcpConfig::default()
            },
            ports: 61000..=61063,
            ports_per_conn: 4,
            listen,
        },
        IsnKey([5; 32]),
    )
}

fn pump(ep: &mut Endpoint, net: &mut Network, now: Instant, buf: &mut [u8]) {
    while let Some((_, t)) = ep.poll_transmit(now, buf) {
        net.send(now, &buf[..t.len]);
    }
}

#[test]
fn many_connections_demuxed_with_joins_and_resets() {
    let mut net = Network::new(7);
    let links = vec![Link::Delay(Duration::from_millis(5))];
    net.add_duplex(CLIENT_WIFI, SERVER, links.clone());
    net.add_duplex(CLIENT_CELL, SERVER, links);
    let server_addr = SocketAddr::new(SERVER, 80);
    let mut client = endpoint(Vec::new());
    let mut server = endpoint(vec![server_addr]);
    let paths = client_paths();
    let mut now = Instant::ZERO;
    let handles: Vec<ConnHandle> = (0..N)
        .map(|_| client.connect(now, &paths, PathId(0), server_addr, true).unwrap())
        .collect();
    let mut buf = vec![0u8; 66_000];
    let mut data = vec![0u8; 16_384];
    let mut received = std::collections::HashMap::<(bool, ConnHandle), u64>::new();
    let mut written = std::collections::HashMap::<(bool, ConnHandle), u64>::new();
    let mut ups = 0;
    // A forged MP_JOIN SYN with a token nobody has, straight to the server.
    let forged_join = {
        let opt = MptcpOption::MpJoin(MpJoin::Syn {
            backup: false,
            addr_id: 3,
            receiver_token: 0xdead_beef,
            sender_nonce: 1,
        });
        let mut o = [0u8; 12];
        let n = opt.write(&mut o).unwrap();
        let f = SegmentFields {
            seq: mpbond::tcp::SeqNum(1000),
            flags: TcpFlags::SYN,
            window: 1000,
            ..Default::default()
        };
        let mut b = vec![0u8; 200];
        let len = write_tcp_packet(
            &mut b,
            SocketAddr::new(CLIENT_CELL, 999),
            server_addr,
            &f,
            &o[..n],
            &[],
            0,
        )
        .unwrap();
        b.truncate(len);
        b
    };
    net.send(now, &forged_join);
    for _ in 0..200_000 {
        for (is_server, ep) in [(false, &mut client), (true, &mut server)] {
            for i in 0..ep.len() + N {
                let h = ConnHandle(i);
                let Some(c) = ep.get_mut(h) else { continue };
                let w = written.entry((is_server, h)).or_default();
                while *w < BYTES {
                    let n = ((BYTES - *w) as usize).min(data.len());
                    fill_pattern(u8::from(is_server), *w, &mut data[..n]);
                    let k = c.send(&data[..n]);
                    *w += k as u64;
                    if k == 0 {
                        break;
                    }
                    if *w == BYTES {
                        c.close();
                    }
                }
                let r = received.entry((is_server, h)).or_default();
                loop {
                    let n = c.recv(&mut data);
                    if n == 0 {
                        break;
                    }
                    let mut expect = vec![0u8; n];
                    fill_pattern(u8::from(!is_server), *r, &mut expect);
                    assert_eq!(&data[..n], &expect[..], "corrupt stream");
                    *r += n as u64;
                }
            }
        }
        pump(&mut client, &mut net, now, &mut buf);
        pump(&mut server, &mut net, now, &mut buf);
        while let Some((_, ev)) = client.poll_event() {
            if matches!(ev, Event::SubflowUp { .. }) {
                ups += 1;
            }
        }
        while server.poll_event().is_some() {}
        if received.values().filter(|&&v| v == BYTES).count() == 2 * N {
            break;
        }
        let next = [client.poll_timeout(), server.poll_timeout(), net.next_delivery()]
            .into_iter()
            .flatten()
            .min()
            .expect("something scheduled");
        now = now.max(next);
        while let Some(d) = net.deliver(now) {
            let p = parse_tcp_packet(&d.packet).unwrap();
            let payload = &d.packet[p.payload.clone()];
            let path = PathId(u8::from(p.src.ip() == CLIENT_CELL || p.dst.ip() == CLIENT_CELL));
            if p.dst.ip() == SERVER {
                server.handle_packet(now, path, p.dst, p.src, &p.header, payload);
            } else if p.dst.port() == 999 {
                // The forger got its answer.
                assert!(
                    p.header.flags.rst(),
                    "forged MP_JOIN answered with {:?}",
                    p.header.flags
                );
            } else {
                client.handle_packet(now, path, p.dst, p.src, &p.header, payload);
            }
            net.recycle(d.packet);
        }
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    assert_eq!(
        received.values().filter(|&&v| v == BYTES).count(),
        2 * N,
        "{received:?}"
    );
    assert_eq!(server.len(), N);
    // Each connection joined its backup subflow.
    assert_eq!(ups, 2 * N);
    assert_eq!(server.stats.joins_refused, 1);
    for h in handles {
        client.remove(h);
    }
    assert!(client.is_empty());
}
