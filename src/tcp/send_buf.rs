//! The send buffer: bytes the application wrote that are not yet acknowledged. Bounded (the
//! application sees backpressure), grows with need, and frees its storage when it drains.

use std::collections::VecDeque;

/// Unacknowledged and unsent bytes, indexed from the oldest unacknowledged byte.
#[derive(Debug, Clone, Default)]
pub struct SendBuffer {
    data: VecDeque<u8>,
    cap: usize,
}

impl SendBuffer {
    /// A buffer holding at most `cap` bytes; allocates nothing yet.
    pub fn new(cap: usize) -> Self {
        SendBuffer {
            data: VecDeque::new(),
            cap,
        }
    }
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Space left before the cap.
    pub fn free(&self) -> usize {
        self.cap.saturating_sub(self.data.len())
    }
    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity()
    }
    /// Appends as much of `buf` as fits; returns the count.
    pub fn push(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(self.free());
        self.data.extend(&buf[..n]);
        n
    }
    /// Drops `n` acknowledged bytes from the front; frees the storage when empty.
    pub fn ack(&mut self, n: usize) {
        let n = n.min(self.data.len());
        self.data.drain(..n);
        if self.data.is_empty() && self.data.capacity() > 0 {
            self.data = VecDeque::new();
        }
    }
    /// Up to `len` bytes starting `offset` bytes after the front, as one or two slices.
    pub fn slices(&self, offset: usize, len: usize) -> (&[u8], &[u8]) {
        let (a, b) = self.data.as_slices();
        let end = (offset + len).min(self.data.len());
        let offset = offset.min(end);
        if end <= a.len() {
            (&a[offset..end], &[])
        } else if offset >= a.len() {
            (&b[offset - a.len()..end - a.len()], &[])
        } else {
            (&a[offset..], &b[..end - a.len()])
        }
    }
}
