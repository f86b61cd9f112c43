//! TCP Fast Open on the MPTCP initial subflow (RFC 8684 Appendix B, RFC 7413 without a cookie),
//! the way an RFC 8803 client sends its Convert request: [`Connection::send_in_syn`].
//!
//! - The SYN carries the data beside MP_CAPABLE.
//! - Figure 19 (the listener takes the SYN data): the data is outside the data sequence space;
//!   the next octet is TCP sequence number ISN + 1 + len but relative subflow sequence number 1
//!   and DSN IDSN + 1.
//! - Figure 20 (the listener acknowledges only the SYN): the data is sent again after the
//!   handshake as the first octets of the data stream, mapped at DSN IDSN + 1 — end to end over
//!   the simulator against our own server (which takes no SYN data), byte-exact, also with more
//!   SYN data than one SYN holds, with DSS checksums, and after fallback to plain TCP.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::net::SocketAddr;

use common::mpsim::{run_ok, spec};
use mpbond::config::Mode;
use mpbond::mptcp::crypto::Key;
use mpbond::mptcp::handshake::CapableConfig;
use mpbond::mptcp::{Connection, Event, LocalPath, MptcpConfig, PathId};
use mpbond::sim::{Link, Rewrite};
use mpbond::tcp::{IsnKey, SeqNum};
use mpbond::time::Instant;
use mpbond::wire::mptcp::{CapablePayload, MptcpOption};
use mpbond::wire::parse_tcp_packet;
use mpbond::wire::tcp::SegmentHeader;

const MB: u64 = 1 << 20;
const CLIENT: &str = "198.18.0.1:40000";
const SERVER: &str = "198.18.1.1:5124";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client() -> Connection {
    let paths = [LocalPath {
        id: PathId(0),
        addr: sa(CLIENT).ip(),
        backup: false,
        last_resort: false,
        rank: 0,
    }];
    Connection::connect(
        Instant::ZERO,
        MptcpConfig::default(),
        &paths,
        PathId(0),
        sa(SERVER),
        vec![sa(CLIENT).port()],
        Key(0x1111_2222_3333_4444),
        &IsnKey([3; 32]),
        true,
    )
}

/// The next packet the client sends: its header, payload and MPTCP options.
fn next(c: &mut Connection, now: Instant) -> (SegmentHeader, Vec<u8>, Vec<MptcpOption>) {
    let mut buf = vec![0u8; 2000];
    let (_, t) = c.poll_transmit(now, &mut buf).expect("a packet is due");
    let p = parse_tcp_packet(&buf[..t.len]).unwrap();
    let opts = p
        .header
        .options
        .mptcp
        .iter()
        .map(|raw| MptcpOption::parse(raw).unwrap())
        .collect();
    (p.header, buf[p.payload].to_vec(), opts)
}

/// Our own server's answer to `syn` (an MP_CAPABLE SYN-ACK acknowledging the SYN alone), with
/// its acknowledgment moved on by `extra` (a listener that took `extra` octets of SYN data).
fn syn_ack(syn: &SegmentHeader, extra: u32) -> SegmentHeader {
    let mut server = Connection::accept(
        Instant::ZERO,
        MptcpConfig::default(),
        PathId(0),
        sa(SERVER),
        sa(CLIENT),
        syn,
        Key(0x5555_6666_7777_8888),
        &IsnKey([4; 32]),
    )
    .unwrap();
    let mut buf = vec![0u8; 2000];
    let (_, t) = server.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    let mut h = parse_tcp_packet(&buf[..t.len]).unwrap().header;
    assert!(h.flags.syn() && h.flags.ack());
    h.ack = SeqNum(h.ack.0.wrapping_add(extra));
    h
}

fn capable(opts: &[MptcpOption]) -> Option<CapablePayload> {
    opts.iter().find_map(|o| match o {
        MptcpOption::MpCapable(c) => Some(c.payload),
        _ => None,
    })
}

const REQUEST: &[u8] = b"convert request: destination and cookie, 0-RTT";

#[test]
fn the_syn_carries_the_data_beside_mp_capable() {
    let mut c = client();
    assert_eq!(c.send_in_syn(REQUEST), REQUEST.len());
    // Once only.
    assert_eq!(c.send_in_syn(b"more"), 0);
    let (h, payload, opts) = next(&mut c, Instant::ZERO);
    assert!(h.flags.syn() && !h.flags.ack());
    assert_eq!(payload, REQUEST);
    assert_eq!(capable(&opts), Some(CapablePayload::NoKeys));
    // Too late after the SYN left.
    assert_eq!(c.send_in_syn(b"late"), 0);
}

#[test]
fn data_the_listener_took_is_outside_the_data_sequence_space() {
    let mut c = client();
    c.send_in_syn(REQUEST);
    let (syn, _, _) = next(&mut c, Instant::ZERO);
    let iss = syn.seq.0;
    let len = REQUEST.len() as u32;
    let sa_hdr = syn_ack(&syn, len);
    let now = Instant::ZERO + std::time::Duration::from_millis(20);
    c.handle_packet(now, PathId(0), sa(CLIENT), sa(SERVER), &sa_hdr, &[]);
    let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(events.contains(&Event::Connected { mptcp: true }), "{events:?}");
    // Nothing to resend: the third ACK follows the SYN data.
    let (h, payload, opts) = next(&mut c, now);
    assert_eq!(h.seq.0, iss.wrapping_add(1 + len));
    assert!(payload.is_empty());
    assert!(matches!(capable(&opts), Some(CapablePayload::BothKeys { .. })));
    // Figure 19: the first data octet after it is TCP sequence number ISN + 1 + len, carried
    // with MP_CAPABLE's implicit mapping (DSN IDSN + 1, relative subflow sequence number 1).
    assert_eq!(c.send(b"GET / HTTP/1.1\r\n"), 16);
    let (h, payload, opts) = next(&mut c, now);
    assert_eq!(h.seq.0, iss.wrapping_add(1 + len));
    assert_eq!(payload, b"GET / HTTP/1.1\r\n");
    match capable(&opts) {
        Some(CapablePayload::BothKeysWithData { data_len, .. }) => assert_eq!(data_len, 16),
        other => panic!("first data without MP_CAPABLE and its length: {other:?}"),
    }
}

#[test]
fn data_the_listener_did_not_take_is_mapped_at_the_first_dsn() {
    let mut c = client();
    c.send_in_syn(REQUEST);
    let (syn, _, _) = next(&mut c, Instant::ZERO);
    let iss = syn.seq.0;
    let now = Instant::ZERO + std::time::Duration::from_millis(20);
    c.handle_packet(now, PathId(0), sa(CLIENT), sa(SERVER), &syn_ack(&syn, 0), &[]);
    assert_eq!(c.send(b"after"), 5);
    // Figure 20: the SYN data goes again from ISN + 1 as the stream's first octets, then the
    // rest; the first segment's MP_CAPABLE maps exactly the SYN data.
    let mut stream = Vec::new();
    let mut first_map = None;
    for _ in 0..4 {
        let (h, payload, opts) = next(&mut c, now);
        if payload.is_empty() {
            continue;
        }
        if stream.is_empty() {
            assert_eq!(h.seq.0, iss.wrapping_add(1));
            first_map = capable(&opts);
        }
        stream.extend_from_slice(&payload);
        if stream.len() >= REQUEST.len() + 5 {
            break;
        }
    }
    assert_eq!(stream, [REQUEST, b"after"].concat());
    match first_map {
        Some(CapablePayload::BothKeysWithData { data_len, .. }) => {
            assert_eq!(usize::from(data_len), REQUEST.len())
        }
        other => panic!("SYN data re-sent without MP_CAPABLE and its length: {other:?}"),
    }
}

#[test]
fn syn_data_the_server_did_not_take_arrives_byte_exact() {
    // 300 octets fit one SYN; 3,000 do not (the rest follows the handshake); both ways 1 MB.
    for syn_data in [300, 3000] {
        let mut s = spec(71, Mode::Handover, MB, MB);
        s.syn_data = syn_data;
        let r = run_ok(&s);
        assert!(r.client_mptcp, "syn_data {syn_data}");
        assert_eq!(r.server_received, MB, "syn_data {syn_data}");
    }
}

#[test]
fn syn_data_with_dss_checksums() {
    let mut s = spec(72, Mode::Handover, MB, MB);
    s.syn_data = 300;
    let cap = CapableConfig {
        checksum_required: true,
        accept_checksums: true,
        ..Default::default()
    };
    s.client.capable = cap;
    s.server.capable = cap;
    let r = run_ok(&s);
    assert!(r.client_mptcp);
    assert_eq!(r.server_received, MB);
}

#[test]
fn syn_data_after_fallback_to_plain_tcp() {
    let mut s = spec(73, Mode::Handover, MB, MB);
    s.syn_data = 300;
    s.wifi_up_extra = vec![Link::RewriteOption {
        kind: 30,
        mode: Rewrite::Strip,
        syn_only: true,
    }];
    let r = run_ok(&s);
    assert!(!r.client_mptcp);
    assert_eq!(r.server_received, MB);
}
