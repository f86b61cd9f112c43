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

/// Today's date in the machine's local time zone (`localtime_r`; `/etc/localtime`, or `TZ`).
pub fn local_date() -> crate::budget::Date {
    // SAFETY: time(NULL) only returns the time.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    if !ok {
        return crate::budget::Date { y: 1970, m: 1, d: 1 };
    }
    crate::budget::Date {
        y: tm.tm_year + 1900,
        m: u32::try_from(tm.tm_mon + 1).unwrap_or(1),
        d: u32::try_from(tm.tm_mday).unwrap_or(1),
    }
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

    #[test]
    fn local_date_is_a_date() {
        let d = super::local_date();
        assert!(
            d.y >= 2024 && (1..=12).contains(&d.m) && (1..=31).contains(&d.d),
            "{d}"
        );
    }
}
