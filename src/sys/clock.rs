//! The production clock: `CLOCK_BOOTTIME`, which keeps counting while the machine is suspended
//! (a laptop that sleeps must see its timers as expired when it wakes, as boringtun does).

use crate::time::Instant;

/// Reads `CLOCK_BOOTTIME` as an [`Instant`].
pub fn boottime() -> Instant {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux since 2.6.39.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // Cannot happen with a valid clock id and pointer; fall back to the origin rather than panic.
        return Instant::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Instant::from_micros(secs.saturating_mul(1_000_000).saturating_add(nanos / 1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn boottime_moves_forward() {
        let a = super::boottime();
        let b = super::boottime();
        assert!(b >= a);
        assert!(a.as_micros() > 0);
    }
}
