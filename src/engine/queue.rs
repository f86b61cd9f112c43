//! A bounded queue of packets made inside the engine, with recycled buffers.

use std::collections::VecDeque;

/// A bounded queue of packets made inside the engine (resets, ICMP errors, UDP replies,
/// datagrams for the socket thread), with recycled buffers.
#[derive(Debug)]
pub(super) struct Queue<M> {
    items: VecDeque<(M, Vec<u8>)>,
    free: Vec<Vec<u8>>,
    cap: usize,
}

impl<M> Queue<M> {
    pub(super) fn new(cap: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            free: Vec::new(),
            cap,
        }
    }
    /// A buffer of `len` zero bytes to fill, or `None` when full.
    pub(super) fn push(&mut self, meta: M, len: usize) -> Option<&mut [u8]> {
        if self.items.len() >= self.cap {
            return None;
        }
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        self.items.push_back((meta, b));
        self.items.back_mut().map(|(_, b)| b.as_mut_slice())
    }
    pub(super) fn truncate_last(&mut self, len: usize) {
        if let Some((_, b)) = self.items.back_mut() {
            b.truncate(len);
        }
    }
    pub(super) fn discard_last(&mut self) {
        if let Some((_, b)) = self.items.pop_back() {
            self.free.push(b);
        }
    }
    /// Copies the next item into `buf`.
    pub(super) fn pop(&mut self, buf: &mut [u8]) -> Option<(M, usize)> {
        let (m, b) = self.items.pop_front()?;
        let n = b.len().min(buf.len());
        buf[..n].copy_from_slice(&b[..n]);
        if self.free.len() < 64 {
            self.free.push(b);
        }
        Some((m, n))
    }
}
