//! Microbenchmarks: the MPTCP option codec (`wire::mptcp`, parse and write of a DSS with
//! DATA_ACK and mapping, and of an MP_CAPABLE) and DSS reassembly
//! (`mptcp::recv::DataRecvBuffer`, 1,400-byte mappings arriving in order and with every pair
//! swapped). Run: `cargo bench --bench mptcp_codec -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbond::mptcp::recv::DataRecvBuffer;
use mpbond::mptcp::seq::DataSeq;
use mpbond::wire::mptcp::{DsnField, Dss, DssMapping, MptcpOption};
use std::hint::black_box;

fn dss() -> MptcpOption {
    MptcpOption::Dss(Dss {
        data_ack: Some(DsnField::Long(0x1122_3344_5566_7788)),
        mapping: Some(DssMapping {
            dsn: DsnField::Long(0x0102_0304_0506_0708),
            subflow_seq: 12_345,
            data_len: 1400,
            checksum: None,
        }),
        data_fin: false,
    })
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("mptcp_option");
    let opt = dss();
    let mut wire = [0u8; 40];
    let n = opt.write(&mut wire).unwrap();
    g.bench_function("dss_write", |b| {
        let mut out = [0u8; 40];
        b.iter(|| black_box(black_box(&opt).write(&mut out).unwrap()));
    });
    g.bench_function("dss_parse", |b| {
        b.iter(|| black_box(MptcpOption::parse(black_box(&wire[..n])).unwrap()));
    });
    // An MP_CAPABLE as seen on a SYN (kind 30, length 12: subtype/version, flags, key).
    let capable = [30u8, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8];
    g.bench_function("mp_capable_syn_parse", |b| {
        b.iter(|| black_box(MptcpOption::parse(black_box(&capable[..])).is_ok()));
    });
    g.finish();
}

const SEG: usize = 1400;
const SEGS: usize = 700; // ~1 MB per iteration

fn reassembly(c: &mut Criterion) {
    let mut g = c.benchmark_group("dss_reassembly");
    g.throughput(Throughput::Bytes((SEG * SEGS) as u64));
    let payload = vec![0xa5u8; SEG];
    let mut out = vec![0u8; 256 * 1024];
    for (name, swap) in [("in_order_1MB", false), ("pairs_swapped_1MB", true)] {
        let mut rb = DataRecvBuffer::new(DataSeq(1), 4 << 20);
        let mut next = DataSeq(1);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut i = 0;
                while i < SEGS {
                    let (x, y) = (next, next.wrapping_add(SEG as u64));
                    if swap {
                        black_box(rb.insert(y, &payload));
                        black_box(rb.insert(x, &payload));
                    } else {
                        black_box(rb.insert(x, &payload));
                        black_box(rb.insert(y, &payload));
                    }
                    next = next.wrapping_add(2 * SEG as u64);
                    i += 2;
                    while rb.read(&mut out) > 0 {}
                }
                black_box(rb.data_ack())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, codec, reassembly);
criterion_main!(benches);
