//! Microbenchmark: one channel hop per batch, as between the I/O threads and the engine: a
//! producer thread fills batches of 64 pooled `io::pool::PacketBuf`s (1,500 bytes copied in) and
//! sends them over a bounded crossbeam channel; the consumer drops them (back to the pool).
//! Throughput is per packet. Run: `cargo bench --bench channel_hop -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbond::io::pool::{PacketBuf, Pool};
use std::hint::black_box;

const BATCH: usize = 64;
const BATCHES: usize = 256;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_hop");
    g.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
    let pool = Pool::new(4096, 16);
    let packet = vec![0x45u8; 1500];
    g.bench_function("batches_of_64_packets", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Vec<PacketBuf>>(16);
            std::thread::scope(|s| {
                let pool = pool.clone();
                let packet = &packet;
                s.spawn(move || {
                    for _ in 0..BATCHES {
                        let batch: Vec<PacketBuf> = (0..BATCH).map(|_| pool.copy_from(packet)).collect();
                        tx.send(batch).unwrap();
                    }
                });
                let mut n = 0;
                for batch in rx.iter() {
                    n += batch.len();
                    black_box(&batch);
                }
                black_box(n)
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
