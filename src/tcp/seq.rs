//! TCP sequence numbers: 32-bit, wrapping, compared modulo 2^32 (RFC 9293 §3.4: "all arithmetic
//! dealing with sequence numbers must be performed modulo 2**32").

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A TCP sequence number. Ordering is the RFC 9293 §3.4 / RFC 1982 serial comparison: `a < b`
/// iff `(b - a) mod 2^32` is in `1..2^31`. It is not a total order over all of u32, so `SeqNum`
/// implements `PartialOrd` only (two numbers exactly 2^31 apart are unordered).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The distance `self - earlier` as a signed value (positive if `self` is after `earlier`).
    pub fn diff(self, earlier: SeqNum) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }
    /// `self - earlier` as an unsigned count, zero if `earlier` is after `self`.
    pub fn saturating_sub(self, earlier: SeqNum) -> u32 {
        u32::try_from(self.diff(earlier)).unwrap_or(0)
    }
    /// `lo <= self < hi` in sequence space.
    pub fn in_range(self, lo: SeqNum, hi: SeqNum) -> bool {
        self.0.wrapping_sub(lo.0) < hi.0.wrapping_sub(lo.0)
    }
    /// The later of the two.
    pub fn max(self, o: SeqNum) -> SeqNum {
        if o > self { o } else { self }
    }
    /// The earlier of the two.
    pub fn min(self, o: SeqNum) -> SeqNum {
        if o < self { o } else { self }
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &SeqNum) -> Option<Ordering> {
        let d = self.0.wrapping_sub(other.0);
        if d == 0 {
            Some(Ordering::Equal)
        } else if d == 0x8000_0000 {
            None
        } else if d < 0x8000_0000 {
            Some(Ordering::Greater)
        } else {
            Some(Ordering::Less)
        }
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
}

impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    fn sub(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n))
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = i32;
    /// Signed distance, see [`SeqNum::diff`].
    fn sub(self, earlier: SeqNum) -> i32 {
        self.diff(earlier)
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
