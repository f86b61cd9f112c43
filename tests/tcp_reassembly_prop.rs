//! Property test: the receive reassembly against a plain byte-stream model, with random segment
//! order, overlaps, duplicates and interleaved reads.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use mpbond::tcp::reassembly::Reassembler;
use mpbond::tcp::sack::Scoreboard;
use proptest::prelude::*;

fn stream(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Insert { start: usize, len: usize },
    Read { max: usize },
}

fn ops(total: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..total, 1..3000usize).prop_map(|(start, len)| Op::Insert { start, len }),
        1 => (1..5000usize).prop_map(|max| Op::Read { max }),
    ];
    prop::collection::vec(op, 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn reassembly_matches_byte_stream_model(cap in 1000usize..20_000, ops in ops(30_000)) {
        let total = 30_000usize;
        let data = stream(total);
        let mut r = Reassembler::new(0, cap);
        // Model: which bytes are present, and how far the application has read.
        let mut have = vec![false; total];
        let mut read = 0usize;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 5000];
        for op in ops {
            match op {
                Op::Insert { start, len } => {
                    let end = (start + len).min(total);
                    let ins = r.insert(start as u64, &data[start..end]);
                    // The model accepts what lies inside [contiguous end, read + cap).
                    let contig_before = read + (read..total).take_while(|&i| have[i]).count();
                    let win_end = (read + cap).min(total);
                    let (lo, hi) = (start.max(contig_before), end.min(win_end));
                    if lo < hi {
                        have[lo..hi].iter_mut().for_each(|h| *h = true);
                    }
                    let contig_after = read + (read..total).take_while(|&i| have[i]).count();
                    prop_assert_eq!(ins.advanced, contig_after - contig_before);
                }
                Op::Read { max } => {
                    let n = r.read(&mut buf[..max]);
                    out.extend_from_slice(&buf[..n]);
                    read += n;
                }
            }
            let contig = read + (read..total).take_while(|&i| have[i]).count();
            prop_assert_eq!(r.readable(), contig - read);
            prop_assert_eq!(r.contiguous_end(), contig as u64);
            prop_assert_eq!(r.window(), cap - (contig - read));
            // The out-of-order ranges are exactly the present bytes past the contiguous end.
            let mut model_ranges = vec![];
            let mut i = contig;
            while i < total {
                if have[i] {
                    let s = i;
                    while i < total && have[i] { i += 1; }
                    model_ranges.push((s as u64, i as u64));
                } else {
                    i += 1;
                }
            }
            prop_assert_eq!(r.out_of_order(), &model_ranges[..]);
            // SACK blocks (RFC 2018) are out-of-order ranges, distinct, at most 4.
            let mut blocks = [(0u64, 0u64); 4];
            let nb = r.sack_blocks(&mut blocks);
            prop_assert_eq!(nb, model_ranges.len().min(4));
            for b in &blocks[..nb] {
                prop_assert!(model_ranges.contains(b));
            }
        }
        // Drain and compare with the stream.
        loop {
            let n = r.read(&mut buf);
            if n == 0 { break; }
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert_eq!(&out[..], &data[..out.len()]);
    }

    #[test]
    fn scoreboard_matches_model(blocks in prop::collection::vec((0u64..50_000, 1u64..4000), 0..60), una in 0u64..30_000) {
        let max = 60_000u64;
        let mut sb = Scoreboard::new();
        let mut model = vec![false; max as usize];
        for (l, len) in blocks {
            let r = (l + len).min(max);
            let new = sb.add(l, r, 0, max);
            let before = model[l as usize..r as usize].iter().filter(|b| **b).count() as u64;
            model[l as usize..r as usize].iter_mut().for_each(|b| *b = true);
            prop_assert_eq!(new, (r - l) - before);
        }
        sb.on_cumulative_ack(una);
        model[..una as usize].iter_mut().for_each(|b| *b = false);
        prop_assert_eq!(sb.sacked_bytes(), model.iter().filter(|b| **b).count() as u64);
        for probe in [una, una + 1, una + 777, 45_000] {
            if probe < max {
                prop_assert_eq!(sb.is_sacked(probe), model[probe as usize]);
            }
        }
    }
}
