//! A set of disjoint, non-adjacent half-open `u64` ranges kept sorted in a small vector: the
//! out-of-order map of the receiver and the SACK scoreboard of the sender. Operations are
//! O(ranges); the number of ranges is capped by the caller.

/// Sorted disjoint ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    /// An empty set (no allocation).
    pub const fn new() -> Self {
        RangeSet { r: Vec::new() }
    }
    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.r.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }
    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.r
    }
    /// The first range.
    pub fn first(&self) -> Option<(u64, u64)> {
        self.r.first().copied()
    }
    /// The last range.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.r.last().copied()
    }
    /// Removes everything and frees the storage.
    pub fn clear(&mut self) {
        self.r = Vec::new();
    }
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.r.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// Inserts `[start, end)`, merging with overlapping or adjacent ranges. Returns the number of
    /// bytes that were not yet covered, or `None` if the insert would exceed `max_ranges` (the set
    /// is then unchanged).
    pub fn insert(&mut self, start: u64, end: u64, max_ranges: usize) -> Option<u64> {
        if start >= end {
            return Some(0);
        }
        // First range whose end >= start (could merge), and first range whose start > end.
        let lo = self.r.partition_point(|&(_, e)| e < start);
        let hi = self.r.partition_point(|&(s, _)| s <= end);
        if lo == hi {
            if self.r.len() >= max_ranges {
                return None;
            }
            self.r.insert(lo, (start, end));
            return Some(end - start);
        }
        let covered: u64 = self.r[lo..hi]
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum();
        let ns = start.min(self.r[lo].0);
        let ne = end.max(self.r[hi - 1].1);
        self.r[lo] = (ns, ne);
        self.r.drain(lo + 1..hi);
        Some((end - start) - covered)
    }

    /// Removes everything below `point` (trimming a range that straddles it); returns bytes removed.
    pub fn remove_below(&mut self, point: u64) -> u64 {
        let mut removed = 0;
        let full = self.r.partition_point(|&(_, e)| e <= point);
        for &(s, e) in &self.r[..full] {
            removed += e - s;
        }
        self.r.drain(..full);
        if let Some(first) = self.r.first_mut()
            && first.0 < point
        {
            removed += point - first.0;
            first.0 = point;
        }
        if self.r.is_empty() && self.r.capacity() > 0 {
            self.r = Vec::new();
        }
        removed
    }

    /// If a range starts at or before `point` and extends past it, removes and returns it.
    pub fn pop_front_if_reaches(&mut self, point: u64) -> Option<(u64, u64)> {
        match self.r.first() {
            Some(&(s, e)) if s <= point && e > point => {
                self.r.remove(0);
                Some((s, e))
            }
            _ => None,
        }
    }

    /// The range containing `x`.
    pub fn containing(&self, x: u64) -> Option<(u64, u64)> {
        let i = self.r.partition_point(|&(_, e)| e <= x);
        self.r.get(i).copied().filter(|&(s, _)| s <= x)
    }

    /// Bytes of `[a, b)` covered by the set.
    pub fn covered(&self, a: u64, b: u64) -> u64 {
        if a >= b {
            return 0;
        }
        let i = self.r.partition_point(|&(_, e)| e <= a);
        let mut n = 0;
        for &(s, e) in &self.r[i..] {
            if s >= b {
                break;
            }
            n += e.min(b) - s.max(a);
        }
        n
    }

    /// The first gap `[x, y)` in `[from, limit)` not covered by the set.
    pub fn first_gap(&self, from: u64, limit: u64) -> Option<(u64, u64)> {
        let mut x = from;
        let i = self.r.partition_point(|&(_, e)| e <= from);
        for &(s, e) in &self.r[i..] {
            if x >= limit {
                return None;
            }
            if s > x {
                return Some((x, s.min(limit)));
            }
            x = x.max(e);
        }
        (x < limit).then_some((x, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merge_and_queries() {
        let mut s = RangeSet::new();
        assert_eq!(s.insert(10, 20, 8), Some(10));
        assert_eq!(s.insert(30, 40, 8), Some(10));
        assert_eq!(s.insert(15, 32, 8), Some(10));
        assert_eq!(s.ranges(), &[(10, 40)]);
        assert_eq!(s.insert(40, 45, 8), Some(5));
        assert_eq!(s.insert(50, 60, 1), None);
        assert_eq!(s.insert(50, 60, 8), Some(10));
        assert_eq!(s.covered(0, 100), 45);
        assert_eq!(s.first_gap(0, 100), Some((0, 10)));
        assert_eq!(s.first_gap(12, 100), Some((45, 50)));
        assert_eq!(s.first_gap(50, 60), None);
        assert_eq!(s.containing(44), Some((10, 45)));
        assert_eq!(s.containing(45), None);
        assert_eq!(s.remove_below(20), 10);
        assert_eq!(s.ranges(), &[(20, 45), (50, 60)]);
    }
}
