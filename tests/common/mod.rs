//! Helpers for driving TCP connections by hand with explicit times (smoltcp `send!/recv!` style).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]
#![allow(dead_code)]

pub mod converter;
pub mod daemon;
pub mod lab;
pub mod mpsim;

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::tcp::{Config, Connection, Event, IsnKey, OptionHook, State, Transmit};
use mpbond::time::Instant;
use mpbond::wire::tcp::{SegmentFields, SegmentHeader, TcpFlags, Timestamps};
use mpbond::wire::{parse_tcp_packet, write_tcp_packet};

/// A segment that left a connection, parsed back.
#[derive(Debug, Clone)]
pub struct Seg {
    pub hdr: SegmentHeader,
    pub payload: Vec<u8>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tx: Transmit,
}

impl Seg {
    pub fn flags(&self) -> TcpFlags {
        self.hdr.flags
    }
    pub fn len(&self) -> usize {
        self.payload.len()
    }
}

pub fn client_addr() -> SocketAddr {
    "198.18.0.1:40000".parse().unwrap()
}
pub fn server_addr() -> SocketAddr {
    "198.18.1.1:80".parse().unwrap()
}
pub fn key() -> IsnKey {
    IsnKey([7; 32])
}
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Everything `c` wants to send now, parsed (panics on a malformed packet: that is a bug).
pub fn drain(c: &mut Connection, now: Instant) -> Vec<Seg> {
    drain_with(c, now, &mut mpbond::tcp::NoHook)
}

pub fn drain_with<H: OptionHook>(c: &mut Connection, now: Instant, hook: &mut H) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 66_000];
    for _ in 0..100_000 {
        let Some(tx) = c.poll_transmit_with(now, &mut buf, hook) else {
            break;
        };
        let p = parse_tcp_packet(&buf[..tx.len]).expect("engine wrote a valid packet");
        out.push(Seg {
            hdr: p.header,
            payload: buf[p.payload.clone()].to_vec(),
            src: p.src,
            dst: p.dst,
            tx,
        });
    }
    out
}

pub fn deliver(c: &mut Connection, now: Instant, segs: &[Seg]) {
    for s in segs {
        c.handle_segment(now, &s.hdr, &s.payload);
    }
}

pub fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

pub fn read_all(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.recv(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A completed handshake at t = 0 (client active, server passive via `accept`).
pub fn handshake(cfg_c: Config, cfg_s: Config) -> (Connection, Connection) {
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, client_addr(), server_addr(), cfg_c, &key());
    let syn = drain(&mut c, now);
    assert_eq!(syn.len(), 1);
    let mut s = Connection::accept(now, server_addr(), client_addr(), &syn[0].hdr, cfg_s, &key()).unwrap();
    let synack = drain(&mut s, now);
    deliver(&mut c, now, &synack);
    let ack = drain(&mut c, now);
    deliver(&mut s, now, &ack);
    assert_eq!(c.state(), State::Established);
    assert_eq!(s.state(), State::Established);
    assert_eq!(events(&mut c), vec![Event::Connected]);
    assert_eq!(events(&mut s), vec![Event::Connected]);
    (c, s)
}

/// Exchanges segments between the two until both are quiet at `now` (no timers run).
pub fn pump(a: &mut Connection, b: &mut Connection, now: Instant) -> usize {
    let mut total = 0;
    for _ in 0..10_000 {
        let x = drain(a, now);
        deliver(b, now, &x);
        let y = drain(b, now);
        deliver(a, now, &y);
        total += x.len() + y.len();
        if x.is_empty() && y.is_empty() {
            break;
        }
    }
    total
}

/// A hand-made segment from `peer` with the given fields (for injecting into a connection).
pub fn craft(seq: u32, ack: u32, flags: TcpFlags, window: u16, ts: Option<Timestamps>) -> SegmentHeader {
    let mut h = SegmentHeader {
        src_port: server_addr().port(),
        dst_port: client_addr().port(),
        seq: mpbond::tcp::SeqNum(seq),
        ack: mpbond::tcp::SeqNum(ack),
        flags,
        window,
        ..Default::default()
    };
    h.options.timestamps = ts;
    h
}

/// Writes a segment through the real builder and parses it back (exercises wire on both ends).
pub fn roundtrip(
    src: SocketAddr,
    dst: SocketAddr,
    f: &SegmentFields,
    opts: &[u8],
    payload: &[u8],
) -> SegmentHeader {
    let mut buf = vec![0u8; 70_000];
    let n = write_tcp_packet(&mut buf, src, dst, f, opts, &[payload], 1).unwrap();
    parse_tcp_packet(&buf[..n]).unwrap().header
}
