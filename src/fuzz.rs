//! Fuzzing entry points, shared by the cargo-fuzz targets under `fuzz/` and by the stable
//! bounded-corpus test (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must never panic;
//! they assert invariants that a correct engine keeps on any input.

use std::net::SocketAddr;

use crate::tcp::{Config, Connection, IsnKey, SeqNum};
use crate::time::Instant;
use crate::wire::tcp::{SegmentHeader, TcpFlags, Timestamps, parse_options, parse_segment};
use crate::wire::{checksum, ip, parse_tcp_packet};

/// Parses `data` as an IP packet, a bare TCP segment and an options area.
pub fn tcp_segment_parse(data: &[u8]) {
    if let Ok(p) = parse_tcp_packet(data) {
        // A packet that parses has a payload range inside the buffer.
        assert!(p.payload.start <= p.payload.end && p.payload.end <= data.len());
    }
    if let Ok((h, off)) = parse_segment(data) {
        assert!(off <= data.len());
        assert!(h.options.sack_blocks().len() <= 4);
    }
    let _ = parse_options(data.get(..40.min(data.len())).unwrap_or(&[]));
    let _ = ip::parse(data);
    let _ = checksum::checksum(data);
}

struct Bytes<'a> {
    d: &'a [u8],
    i: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = self.d.get(self.i).copied();
        self.i += 1;
        b
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn slice(&mut self, n: usize) -> &[u8] {
        let s = self.d.get(self.i..).unwrap_or(&[]);
        let n = n.min(s.len());
        self.i += n;
        &s[..n]
    }
}

/// Drives a connection (client or server side, established through a real handshake) with
/// segments, timer expiries and application calls decoded from `data`.
pub fn tcp_connection(data: &[u8]) {
    let mut b = Bytes { d: data, i: 0 };
    let mode = b.u8().unwrap_or(0);
    let cfg = Config {
        sack: mode & 1 == 0,
        timestamps: mode & 2 == 0,
        window_scaling: mode & 4 == 0,
        recv_buffer: if mode & 8 == 0 { 4 << 20 } else { 3000 },
        send_buffer: 1 << 16,
        pacing: mode & 16 != 0,
        keepalive: (mode & 32 != 0).then(crate::tcp::Keepalive::default),
        ..Config::default()
    };
    let me: SocketAddr = SocketAddr::from(([198, 18, 0, 1], 40000));
    let peer: SocketAddr = SocketAddr::from(([198, 18, 0, 2], 80));
    let key = IsnKey([3; 32]);
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; 70_000];
    // Peer state we track to craft plausible segments.
    let peer_iss = SeqNum(b.u32().unwrap_or(1000));
    let mut c = if mode & 64 == 0 {
        let mut c = Connection::connect(now, me, peer, cfg, &key);
        let _ = c.poll_transmit(now, &mut buf);
        let mut synack = SegmentHeader {
            seq: peer_iss,
            ack: c.iss() + 1,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 65535,
            ..Default::default()
        };
        synack.options.mss = Some(1460);
        synack.options.wscale = Some(b.u8().unwrap_or(7) % 16);
        synack.options.sack_permitted = true;
        synack.options.timestamps = Some(Timestamps { val: 1, ecr: 0 });
        c.handle_segment(now, &synack, &[]);
        c
    } else {
        let mut syn = SegmentHeader {
            seq: peer_iss,
            flags: TcpFlags::SYN,
            window: 65535,
            ..Default::default()
        };
        syn.options.mss = Some(b.u16().unwrap_or(1460));
        syn.options.timestamps = Some(Timestamps { val: 1, ecr: 0 });
        syn.options.sack_permitted = true;
        match Connection::accept(now, me, peer, &syn, cfg, &key) {
            Ok(c) => c,
            Err(_) => return,
        }
    };
    let mut tsval = 2u32;
    let mut app = [0u8; 4096];
    for _ in 0..10_000 {
        let Some(op) = b.u8() else { break };
        match op % 8 {
            0..=2 => {
                // A segment near the connection's sequence spaces.
                let dseq = b.u16().unwrap_or(0) as i16;
                let dack = b.u16().unwrap_or(0) as i16;
                let flags = TcpFlags(b.u8().unwrap_or(0x10));
                let window = b.u16().unwrap_or(65535);
                let plen = usize::from(b.u8().unwrap_or(0)) * 8;
                let mut h = SegmentHeader {
                    src_port: 80,
                    dst_port: 40000,
                    seq: c.rcv_nxt_seq() + dseq as i32 as u32,
                    ack: c.snd_una() + dack as i32 as u32,
                    flags,
                    window,
                    ..Default::default()
                };
                let optlen = usize::from(b.u8().unwrap_or(0) % 41);
                if let Ok(o) = parse_options(b.slice(optlen)) {
                    h.options = o;
                }
                if op % 8 != 2 {
                    tsval = tsval.wrapping_add(u32::from(op));
                    h.options.timestamps = Some(Timestamps { val: tsval, ecr: 0 });
                }
                let payload = b.slice(plen).to_vec();
                c.handle_segment(now, &h, &payload);
            }
            3 => {
                now += std::time::Duration::from_millis(u64::from(b.u16().unwrap_or(1)));
                c.handle_timeout(now);
            }
            4 => {
                let n = usize::from(b.u16().unwrap_or(0)) % 20_000;
                let data = vec![0x5a; n];
                let _ = c.send(&data);
            }
            5 => {
                let _ = c.recv(&mut app);
            }
            6 => match b.u8().unwrap_or(0) % 8 {
                0 => c.close(),
                1 => c.abort(),
                2 => c.request_ack(),
                _ => {}
            },
            _ => {
                if let Some(t) = c.poll_timeout()
                    && t >= now
                {
                    now = t;
                    c.handle_timeout(now);
                }
            }
        }
        // Everything the engine writes must be a valid packet within the MSS.
        for _ in 0..1000 {
            let Some(t) = c.poll_transmit(now, &mut buf) else {
                break;
            };
            let p = parse_tcp_packet(&buf[..t.len]);
            assert!(p.is_ok(), "engine wrote an invalid packet: {p:?}");
            assert!(t.payload_len <= usize::from(c.eff_mss()));
        }
        while c.poll_event().is_some() {}
    }
}

/// The forwarding engine fed arbitrary packets: `data` is cut into records `[kind, len, bytes…]`;
/// `kind` picks the input (TUN packet, interface packet, ICMP message, UDP reply, interface
/// state, time step). Everything the engine writes must parse as an IP packet.
pub fn engine_input(data: &[u8]) {
    use crate::engine::{CELLULAR, Config, Engine, IfaceState, SessionId, WIFI};
    let mut e = Engine::new(Config::default());
    let mut now = Instant::ZERO;
    let up = |v4: [u8; 4], v6: u16| IfaceState {
        usable: true,
        v4: Some(v4.into()),
        v6: Some(std::net::Ipv6Addr::new(0xfd18, v6, 0, 0, 0, 0, 0, 2)),
        last_resort: false,
    };
    e.handle_iface_state(now, WIFI, up([198, 18, 1, 2], 1));
    e.handle_iface_state(now, CELLULAR, up([198, 18, 2, 2], 2));
    let mut buf = vec![0u8; 70_000];
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match kind % 7 {
            0 | 1 => e.handle_tun_packet(now, bytes),
            2 => e.handle_iface_packet(now, kind >> 7, bytes, kind & 0x40 != 0),
            3 => e.handle_icmp(now, WIFI, std::net::Ipv4Addr::new(198, 19, 1, 2).into(), bytes),
            4 => e.handle_datagram(now, SessionId(u64::from(*len % 4)), bytes),
            5 => {
                let mut s = e.iface_state(WIFI).unwrap_or_default();
                s.usable = !s.usable;
                e.handle_iface_state(now, WIFI, s);
            }
            _ => now += std::time::Duration::from_millis(u64::from(*len) * 100),
        }
        e.handle_timeout(now);
        for _ in 0..10_000 {
            let Some(t) = e.poll_transmit(now, &mut buf) else {
                break;
            };
            let p = crate::wire::ip::parse(&buf[..t.len]);
            assert!(p.is_ok(), "engine wrote an invalid packet: {p:?}");
        }
        while e.poll_datagram(&mut buf).is_some() {}
    }
}

/// The RFC 8803 Convert codec, the converter's request check and the client's reply parse on
/// arbitrary bytes (`fuzz/fuzz_targets/convert_msg.rs`). With the first byte odd, the input is
/// used as is; with it even, a valid authenticated request (destination and options taken from
/// the input) is built and a few bytes of it are XORed with input bytes, so mutations reach the
/// checks behind the MAC (and unmutated ones the accepting path). Invariants: nothing panics; a `Connect` consumed at most the input and names a
/// dialable port; a non-empty refusal reply is an Error message with the cause's code; a message
/// that parses and rebuilds parses to the same value.
pub fn convert_msg(data: &[u8]) {
    use std::time::Duration;

    use crate::convert::client::{Reply, connect_request, parse_reply};
    use crate::convert::converter::{Converter, ConverterConfig, Request};
    use crate::convert::key::{ClientKey, KeyId};
    use crate::convert::msg::Message;

    let key = ClientKey::from_parts(KeyId([7; 8]), [9; 32]);
    let now = Duration::from_secs(1_700_000_000);
    let mut input = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 0) {
        let mut b = Bytes { d: data, i: 1 };
        let port = b.u16().unwrap_or(443);
        let ip = b.u32().unwrap_or(0xc612_0007);
        let olen = usize::from(b.u8().unwrap_or(0) % 41);
        let opts = b.slice(olen).to_vec();
        let mut req = connect_request(
            &key,
            now,
            [3; 16],
            SocketAddr::from((ip.to_be_bytes(), port)),
            &opts,
        );
        // Up to 8 sparse mutations (position, XOR mask), then the rest as early data.
        for _ in 0..b.u8().unwrap_or(0) % 9 {
            let (Some(pos), Some(x)) = (b.u8(), b.u8()) else {
                break;
            };
            let n = req.len();
            req[usize::from(pos) % n] ^= x;
        }
        req.extend_from_slice(b.slice(64));
        input = req;
    }
    let mut conv = Converter::new(vec![key], ConverterConfig::default());
    // Incremental use: a few growing prefixes, then the whole input.
    for cut in [1, 4, 24, input.len()] {
        let part = &input[..cut.min(input.len())];
        match conv.check_request(now, part) {
            Request::Incomplete => {}
            Request::Connect { dst, consumed, .. } => {
                assert!(consumed <= part.len());
                assert_ne!(dst.port(), 0);
                break;
            }
            Request::Refused { cause, reply, .. } => {
                if !reply.is_empty() {
                    match parse_reply(&reply) {
                        Reply::Error { code, consumed, .. } => {
                            assert_eq!(code, cause.error_code());
                            assert_eq!(consumed, reply.len());
                        }
                        other => panic!("refusal reply {reply:02x?} parses as {other:?}"),
                    }
                }
                break;
            }
        }
    }
    let _ = parse_reply(&input);
    if let Ok((m, n)) = Message::parse(&input) {
        assert!(n <= input.len());
        if let Ok(bytes) = m.to_bytes() {
            assert_eq!(Message::parse(&bytes).map(|(m, _)| m), Ok(m));
        }
    }
}

/// The datagram relay (`convert::dgram`, `convert::relay`) on arbitrary bytes
/// (`fuzz/fuzz_targets/relay_dgram.rs`): with the first byte odd the input is a datagram as
/// is, with it even a valid sealed one (fields from the input) with a few bytes XORed. Fed to the
/// converter's table (after it holds one session) and to the laptop's session. Invariants:
/// nothing panics; a mutated datagram is never accepted (the MAC); an unmutated one is accepted
/// once, and never again.
pub fn relay_dgram(data: &[u8]) {
    use crate::convert::dgram::{ClientSession, RelayId};
    use crate::convert::key::{ClientKey, KeyId};
    use crate::convert::relay::{RelayConfig, RelayTable, Up};

    let key = ClientKey::from_parts(KeyId([7; 8]), [9; 32]);
    let keys = |id: &KeyId| (*id == key.id()).then(|| key.clone());
    let unix = 1_700_000_000;
    let now = Instant::from_millis(1000);
    let from: SocketAddr = SocketAddr::from(([198, 18, 1, 2], 4000));
    let mut b = Bytes { d: data, i: 1 };
    let dst = SocketAddr::from((b.u32().unwrap_or(0xc613_000b).to_be_bytes(), b.u16().unwrap_or(7)));
    let mut client = ClientSession::new(RelayId(u64::from(b.u32().unwrap_or(1))), dst, now);
    let mut table = RelayTable::new(RelayConfig::default());
    let mut out = vec![0u8; 600];
    // One session held first.
    let n = client.seal_up(now, unix, &key, b"first", &mut out).unwrap_or(0);
    if let Ok(Up::Open { opening, payload }) = table.handle_up(now, unix, from, &out[..n], keys) {
        table.insert(now, &opening, payload.len());
    }
    let (input, mutated) = if data.first().is_some_and(|b| b & 1 == 0) {
        let payload = b.slice(200).to_vec();
        let n = client.seal_up(now, unix, &key, &payload, &mut out).unwrap_or(0);
        let mut d = out[..n].to_vec();
        for _ in 0..b.u8().unwrap_or(0) % 5 {
            let (Some(pos), Some(x)) = (b.u8(), b.u8()) else {
                break;
            };
            if !d.is_empty() {
                let i = usize::from(pos) % d.len();
                d[i] ^= x;
            }
        }
        // Two XORs of one byte can cancel: mutated means the bytes differ.
        let mutated = d[..] != out[..n];
        (d, mutated)
    } else {
        (data.to_vec(), true)
    };
    let first = table.handle_up(now, unix, from, &input, keys);
    if mutated {
        // Any change to a sealed datagram (or noise) fails: the MAC covers every byte.
        assert!(first.is_err(), "mutated datagram accepted: {input:02x?}");
    } else {
        assert!(first.is_ok(), "valid datagram refused: {first:?}");
        assert!(
            table.handle_up(now, unix, from, &input, keys).is_err(),
            "replay accepted"
        );
    }
    let _ = client.open_down(now, &key, &input);
    let _ = crate::convert::dgram::parse(&input);
}
