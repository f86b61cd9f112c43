//! Microbenchmark: the Internet checksum (`wire::checksum`) over a 1,460-byte TCP payload with
//! its pseudo-header, and over 64 KiB. Run: `cargo bench --bench checksum -- --warm-up-time 1 --measurement-time 2`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbond::wire::checksum::Checksum;
use std::hint::black_box;
use std::net::Ipv4Addr;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [1460usize, 65_536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("tcp_{len}_bytes"), |b| {
            b.iter(|| {
                let mut c = Checksum::default();
                c.add_pseudo_v4(
                    Ipv4Addr::new(198, 18, 1, 2),
                    Ipv4Addr::new(198, 19, 0, 11),
                    6,
                    len as u32,
                )
                .add_bytes(black_box(&data));
                black_box(c.finish())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
