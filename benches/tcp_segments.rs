//! Microbenchmark: TCP segments out of and into `tcp::Connection`. Two connections, established
//! in memory, exchange 1 MiB per iteration: the sender's `poll_transmit` writes whole IPv4
//! packets, the receiver parses them (`wire::parse_tcp_packet`) and takes them with
//! `handle_segment`, its ACKs go back the same way. Throughput is per byte of payload.
//! Run: `cargo bench --bench tcp_segments -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbond::tcp::{Config, Connection, IsnKey};
use mpbond::time::Instant;
use mpbond::wire::parse_tcp_packet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

const CHUNK: usize = 1 << 20;

/// Moves every packet `from` wants to send into `to`; returns the payload bytes moved.
fn pump(from: &mut Connection, to: &mut Connection, now: Instant, buf: &mut [u8]) -> usize {
    let mut moved = 0;
    while let Some(tx) = from.poll_transmit(now, buf) {
        let p = parse_tcp_packet(&buf[..tx.len]).unwrap();
        to.handle_segment(now, &p.header, &buf[p.payload.clone()]);
        moved += tx.payload_len;
    }
    moved
}

fn pair() -> (Connection, Connection, Instant) {
    let a: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let b: SocketAddr = "198.19.0.11:80".parse().unwrap();
    let key = IsnKey([7; 32]);
    let now = Instant::ZERO;
    let mut c = Connection::connect(now, a, b, Config::default(), &key);
    let mut buf = vec![0u8; 66_000];
    let tx = c.poll_transmit(now, &mut buf).unwrap();
    let syn = parse_tcp_packet(&buf[..tx.len]).unwrap();
    let mut s = Connection::accept(now, b, a, &syn.header, Config::default(), &key).unwrap();
    pump(&mut s, &mut c, now, &mut buf);
    pump(&mut c, &mut s, now, &mut buf);
    (c, s, now)
}

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("tcp");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let data = vec![0x5au8; 64 * 1024];
    let (mut c, mut s, mut now) = pair();
    let mut buf = vec![0u8; 66_000];
    let mut sink = vec![0u8; 256 * 1024];
    g.bench_function("segments_1MiB_in_memory", |b| {
        b.iter(|| {
            let mut delivered = 0;
            let mut rounds = 0;
            while delivered < CHUNK && rounds < 100_000 {
                rounds += 1;
                // Explicit time: each round is 100 µs later, so pacing and timers move on.
                now += Duration::from_micros(100);
                let mut off = 0;
                while off < data.len() && c.send_capacity() > 0 {
                    off += c.send(&data[off..]);
                }
                pump(&mut c, &mut s, now, &mut buf);
                loop {
                    let k = s.recv(&mut sink);
                    if k == 0 {
                        break;
                    }
                    delivered += k;
                }
                pump(&mut s, &mut c, now, &mut buf);
            }
            black_box(delivered)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
