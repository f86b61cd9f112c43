//! Sequence-space newtypes (STYLE.md point 14): the 64-bit data sequence space and the
//! relative 32-bit subflow sequence space used in DSS mappings.

use crate::wire::mptcp::DsnField;
use std::fmt;

/// A data sequence number (connection level). RFC 8684 §3.3.1: "Data sequence numbers are
/// always 64-bit quantities and MUST be maintained as such in implementations." Arithmetic
/// wraps modulo 2^64 (the IDSN is a hash, so it can sit anywhere, including near 2^64).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataSeq(pub u64);

impl DataSeq {
    /// `self + n`, wrapping.
    pub fn wrapping_add(self, n: u64) -> DataSeq {
        DataSeq(self.0.wrapping_add(n))
    }

    /// `self - base` modulo 2^64: the forward distance from `base` to `self`.
    pub fn offset_from(self, base: DataSeq) -> u64 {
        self.0.wrapping_sub(base.0)
    }

    /// Signed distance `self - other`, valid when they are within 2^63 of each other.
    pub fn diff(self, other: DataSeq) -> i64 {
        self.0.wrapping_sub(other.0) as i64
    }

    /// `self` comes before `other` in wrapping order.
    pub fn is_before(self, other: DataSeq) -> bool {
        self.diff(other) < 0
    }

    /// The low 32 bits, as sent in a 4-byte DSN or DATA_ACK.
    pub fn low32(self) -> u32 {
        self.0 as u32
    }

    /// Expands the low 32 bits of a DSN/DATA_ACK to the 64-bit value nearest to `reference`
    /// (the value the receiver expects, e.g. the data-level `rcv_nxt` for a mapping or
    /// `snd_una` for a DATA_ACK).
    ///
    /// RFC 8684 §3.3.1: "Implementations MUST accept a 32-bit DSN and implicitly promote it to a
    /// 64-bit quantity by incrementing the upper 32 bits of the sequence number each time the
    /// lower 32 bits wrap. A sanity check MUST be implemented to ensure that a wrap occurs at an
    /// expected time ... and is not triggered by out-of-order packets." Choosing the candidate
    /// within ±2^31 of the reference is that check: a value just below the reference (a late,
    /// reordered packet) stays in the current 2^32 epoch, and only a value that is closer when
    /// read as the next epoch is promoted.
    pub fn from_low32(low: u32, reference: DataSeq) -> DataSeq {
        let delta = low.wrapping_sub(reference.low32()) as i32;
        DataSeq(reference.0.wrapping_add(delta as i64 as u64))
    }

    /// The 64-bit value of a DSN field from the wire; the 4-byte form is expanded relative to
    /// `reference` ([`from_low32`](Self::from_low32)).
    pub fn from_field(field: DsnField, reference: DataSeq) -> DataSeq {
        match field {
            DsnField::Long(v) => DataSeq(v),
            DsnField::Short(low) => DataSeq::from_low32(low, reference),
        }
    }
}

impl fmt::Debug for DataSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataSeq({:#x})", self.0)
    }
}

/// A subflow sequence number **relative to the subflow's initial sequence number**: the SYN is
/// 0 and the first data byte is 1. RFC 8684 §3.3.1: "the subflow sequence numbering is relative
/// (the SYN at the start of the subflow has a relative subflow sequence number of 0)"; this is
/// what the DSS mapping carries. Arithmetic wraps modulo 2^32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubflowSeq(pub u32);

impl SubflowSeq {
    /// The first data byte of a subflow (relative 1).
    pub const FIRST_DATA: SubflowSeq = SubflowSeq(1);

    /// Relative sequence number of absolute TCP sequence number `abs` on a subflow whose
    /// initial sequence number (that of its SYN) is `isn`.
    pub fn from_absolute(abs: u32, isn: u32) -> SubflowSeq {
        SubflowSeq(abs.wrapping_sub(isn))
    }

    /// The absolute TCP sequence number on a subflow whose ISN is `isn`.
    pub fn to_absolute(self, isn: u32) -> u32 {
        self.0.wrapping_add(isn)
    }

    /// `self + n`, wrapping.
    pub fn wrapping_add(self, n: u32) -> SubflowSeq {
        SubflowSeq(self.0.wrapping_add(n))
    }

    /// Signed distance `self - other` (RFC 9293 style modular comparison).
    pub fn diff(self, other: SubflowSeq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl fmt::Debug for SubflowSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubflowSeq({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_forward_across_a_32_bit_wrap() {
        let reference = DataSeq(0x0000_0001_ffff_fff0);
        assert_eq!(
            DataSeq::from_low32(0x10, reference),
            DataSeq(0x0000_0002_0000_0010)
        );
    }

    #[test]
    fn late_packet_before_a_wrap_stays_in_the_old_epoch() {
        // Reference just past a wrap; a reordered value from just before it must not be
        // promoted into the new epoch (RFC 8684 §3.3.1 sanity check).
        let reference = DataSeq(0x0000_0002_0000_0010);
        assert_eq!(
            DataSeq::from_low32(0xffff_fff0, reference),
            DataSeq(0x0000_0001_ffff_fff0)
        );
    }

    #[test]
    fn expansion_wraps_at_2_pow_64() {
        let reference = DataSeq(u64::MAX - 5);
        assert_eq!(DataSeq::from_low32(3, reference), DataSeq(3));
        assert_eq!(
            DataSeq::from_low32(0xffff_fff0, DataSeq(2)),
            DataSeq(u64::MAX - 0xf)
        );
    }

    #[test]
    fn long_field_is_taken_as_is() {
        assert_eq!(
            DataSeq::from_field(DsnField::Long(7), DataSeq(u64::MAX)),
            DataSeq(7)
        );
    }

    proptest::proptest! {
        #[test]
        fn expansion_recovers_any_value_within_half_the_32_bit_space(
            reference in proptest::prelude::any::<u64>(),
            delta in -(1i64 << 31) + 1..(1i64 << 31),
        ) {
            let value = DataSeq(reference.wrapping_add(delta as u64));
            proptest::prop_assert_eq!(DataSeq::from_low32(value.low32(), DataSeq(reference)), value);
            proptest::prop_assert_eq!(value.diff(DataSeq(reference)), delta);
        }
    }

    #[test]
    fn subflow_relative_round_trip() {
        let isn = 0xffff_fffe;
        let rel = SubflowSeq::from_absolute(3, isn);
        assert_eq!(rel, SubflowSeq(5));
        assert_eq!(rel.to_absolute(isn), 3);
        assert_eq!(SubflowSeq::from_absolute(isn, isn), SubflowSeq(0));
        assert_eq!(SubflowSeq(1).diff(SubflowSeq(u32::MAX)), 2);
    }
}
