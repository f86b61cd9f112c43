//! The receive buffer with reassembly: in-order bytes ready for the application plus
//! out-of-order bytes written at their place in one ring, with a [`RangeSet`] of which
//! out-of-order ranges are present (O(ranges), no allocation per segment).
//!
//! Offsets are absolute stream offsets (`u64`, byte 0 = the first data byte after the SYN).

use super::ranges::RangeSet;

/// Cap on the number of separate out-of-order ranges; segments that would create more are
/// dropped (the peer retransmits them).
pub const MAX_OOO_RANGES: usize = 64;

/// What [`Reassembler::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inserted {
    /// Bytes that became readable in order (the receive point advanced by this much).
    pub advanced: usize,
    /// True if the segment was (at least partly) beyond the in-order point: out of order.
    pub out_of_order: bool,
    /// True if nothing new was stored (duplicate, outside the window, or too fragmented).
    pub duplicate: bool,
}

/// Receive buffer with reassembly.
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    ring: Vec<u8>,
    head: usize,
    base: u64,
    contig: usize,
    cap: usize,
    ooo: RangeSet,
    /// Most recently changed out-of-order ranges (left edges), newest first, for RFC 2018 §4.
    recent: [Option<u64>; 4],
}

impl Reassembler {
    /// A buffer of at most `cap` bytes starting at stream offset `base`; allocates nothing yet.
    pub fn new(base: u64, cap: usize) -> Self {
        Reassembler {
            base,
            cap,
            ..Default::default()
        }
    }
    /// Stream offset of the next byte the application will read.
    pub fn read_offset(&self) -> u64 {
        self.base
    }
    /// Stream offset just past the in-order data (the receive point, RCV.NXT in stream terms).
    pub fn contiguous_end(&self) -> u64 {
        self.base + self.contig as u64
    }
    /// Bytes readable now.
    pub fn readable(&self) -> usize {
        self.contig
    }
    /// The buffer cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
    /// Space beyond the in-order data: the receive window.
    pub fn window(&self) -> usize {
        self.cap - self.contig
    }
    /// True if out-of-order data is held.
    pub fn has_out_of_order(&self) -> bool {
        !self.ooo.is_empty()
    }
    /// The out-of-order ranges.
    pub fn out_of_order(&self) -> &[(u64, u64)] {
        self.ooo.ranges()
    }
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.ring.capacity() + self.ooo.heap_bytes()
    }

    fn ensure_ring(&mut self, need: usize) {
        if need <= self.ring.len() {
            return;
        }
        let new_len = need.max(self.ring.len() * 2).max(4096).min(self.cap).max(need);
        let mut n = vec![0u8; new_len];
        let old = self.ring.len();
        if old > 0 {
            let (a, b) = self.ring.split_at(self.head);
            n[..b.len()].copy_from_slice(b);
            n[b.len()..old].copy_from_slice(a);
        }
        self.ring = n;
        self.head = 0;
    }

    fn write_ring(&mut self, rel: usize, data: &[u8]) {
        let len = self.ring.len();
        let start = (self.head + rel) % len;
        let first = data.len().min(len - start);
        self.ring[start..start + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Stores `data` found at stream offset `off`, trimmed to the window `[contiguous_end,
    /// read_offset + cap)`.
    pub fn insert(&mut self, off: u64, data: &[u8]) -> Inserted {
        let mut res = Inserted::default();
        let start = off.max(self.contiguous_end());
        let end = (off + data.len() as u64).min(self.base + self.cap as u64);
        if start >= end {
            res.duplicate = true;
            return res;
        }
        res.out_of_order = start > self.contiguous_end();
        let data = &data[(start - off) as usize..(end - off) as usize];
        let rel = (start - self.base) as usize;
        if res.out_of_order {
            match self.ooo.insert(start, end, MAX_OOO_RANGES) {
                None => {
                    res.duplicate = true;
                    return res;
                }
                Some(0) => res.duplicate = true,
                Some(_) => {}
            }
            self.ensure_ring(rel + data.len());
            self.write_ring(rel, data);
            self.touch(start);
            return res;
        }
        self.ensure_ring(rel + data.len());
        self.write_ring(rel, data);
        let mut new_end = end;
        // Absorb out-of-order ranges the new data reaches.
        self.ooo.remove_below(new_end);
        while let Some((_, e)) = self.ooo.pop_front_if_reaches(new_end) {
            new_end = new_end.max(e);
        }
        if let Some((s, _)) = self.ooo.first()
            && s == new_end
            && let Some((_, e)) = self.ooo.pop_front_if_reaches(new_end)
        {
            new_end = e;
        }
        let old = self.contiguous_end();
        self.contig = (new_end - self.base) as usize;
        res.advanced = (new_end - old) as usize;
        self.recent.iter_mut().for_each(|r| {
            if r.is_some_and(|x| x < new_end) {
                *r = None;
            }
        });
        res
    }

    fn touch(&mut self, left: u64) {
        let r = self.ooo.containing(left);
        let mut new = [None; 4];
        new[0] = Some(left);
        let mut n = 1;
        for x in self.recent.iter().flatten() {
            let rx = self.ooo.containing(*x);
            if n < 4 && rx.is_some() && rx != r {
                new[n] = Some(*x);
                n += 1;
            }
        }
        self.recent = new;
    }

    /// RFC 2018 §4: up to 4 SACK blocks (stream offsets), the first containing the most recently
    /// received out-of-order segment, then the most recently reported others, then the rest
    /// (highest first). Returns how many were written to `out`.
    pub fn sack_blocks(&self, out: &mut [(u64, u64); 4]) -> usize {
        let mut n = 0;
        let mut push = |r: (u64, u64), out: &mut [(u64, u64); 4]| {
            if n < 4 && !out[..n].contains(&r) {
                out[n] = r;
                n += 1;
            }
        };
        for l in self.recent.iter().flatten() {
            if let Some(r) = self.ooo.containing(*l) {
                push(r, out);
            }
        }
        for r in self.ooo.ranges().iter().rev() {
            push(*r, out);
        }
        n
    }

    /// Copies in-order bytes into `out`; returns the count.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        self.read_into(out.len(), super::slice_sink(out))
    }
    /// Hands up to `max` in-order bytes to `sink`, in one or two slices (no copy here); returns
    /// the count.
    pub fn read_into(&mut self, max: usize, mut sink: impl FnMut(&[u8])) -> usize {
        let n = max.min(self.contig);
        if n == 0 {
            return 0;
        }
        let len = self.ring.len();
        let first = n.min(len - self.head);
        sink(&self.ring[self.head..self.head + first]);
        if n > first {
            sink(&self.ring[..n - first]);
        }
        self.head = (self.head + n) % len;
        self.base += n as u64;
        self.contig -= n;
        if self.contig == 0 && self.ooo.is_empty() {
            // Idle: give the memory back (an idle connection costs nothing here).
            self.ring = Vec::new();
            self.head = 0;
        }
        n
    }
}
