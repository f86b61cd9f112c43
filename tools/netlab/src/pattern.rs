//! The deterministic byte pattern the servers send and the checksum they report, so clients can
//! verify transfers byte for byte without storing them.

/// Byte `i` of the download pattern: `(i * 7 + i / 251) as u8` (251 is prime, so the stream does
/// not repeat with a short period; a shifted or duplicated segment shows up as a mismatch).
pub fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(i / 251)) as u8
}

/// The pattern as an iterator state: byte value and position within the current 251-byte run,
/// so filling and checking cost an add and a compare per byte instead of a division.
struct Cursor {
    value: u8,
    rem: u32,
}

impl Cursor {
    fn at(offset: u64) -> Self {
        Self {
            value: byte_at(offset),
            rem: (offset % 251) as u32,
        }
    }

    fn next(&mut self) -> u8 {
        let v = self.value;
        self.rem += 1;
        // i*7 + i/251: +7 per byte, +1 more when i crosses a multiple of 251.
        self.value = self.value.wrapping_add(7);
        if self.rem == 251 {
            self.rem = 0;
            self.value = self.value.wrapping_add(1);
        }
        v
    }
}

/// Fills `buf` with the pattern starting at stream offset `offset`.
pub fn fill(offset: u64, buf: &mut [u8]) {
    let mut c = Cursor::at(offset);
    for b in buf.iter_mut() {
        *b = c.next();
    }
}

/// Index of the first byte in `buf` that differs from the pattern at `offset`, if any.
pub fn first_mismatch(offset: u64, buf: &[u8]) -> Option<usize> {
    let mut c = Cursor::at(offset);
    buf.iter().position(|&b| b != c.next())
}

/// Streaming 64-bit FNV-1a, the checksum `POST /sink` reports.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vector() {
        let mut h = Fnv64::default();
        h.update(b"a");
        assert_eq!(h.value(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pattern_fill_matches_byte_at_and_detects_shift() {
        let mut buf = vec![0u8; 1000];
        fill(12_345, &mut buf);
        assert_eq!(first_mismatch(12_345, &buf), None);
        assert_eq!(buf[10], byte_at(12_355));
        assert!(first_mismatch(12_346, &buf).is_some());
        // Across several 251-byte runs, from an offset inside one.
        let mut long = vec![0u8; 2000];
        fill(250, &mut long);
        for (k, &b) in long.iter().enumerate() {
            assert_eq!(b, byte_at(250 + k as u64), "offset {}", 250 + k);
        }
    }
}
