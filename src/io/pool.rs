//! Packet buffers recycled through a lock-free free list, so the hot path allocates nothing per
//! packet: a [`PacketBuf`] returns to its [`Pool`] when dropped, wherever that happens (an I/O
//! thread after sending, the engine after parsing).
//!
//! Two size classes: *small* for packets up to a physical MTU, *large* for the TUN's big segments
//! and GRO super-segments (up to 64 KiB). A third class, *whole*, holds the large buffers that the
//! engine thread builds its packets in ([`Pool::get_whole`]): they come back at their full length,
//! so that a super-segment is built in its own buffer, not in a scratch buffer copied after.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};

/// Capacity of a small buffer: an Ethernet jumbo frame's worth, and then some.
pub const SMALL: usize = 9216;
/// Capacity of a large buffer: the largest IP packet.
pub const LARGE: usize = 65536;
/// Capacity of a *whole* buffer ([`Pool::get_whole`]): one byte more than [`LARGE`], which is how
/// such a buffer is told from a large one when it comes back.
const WHOLE_CAPACITY: usize = LARGE + 1;

/// Per-packet facts the receiver learned from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// The checksum is not computed yet (veth, local offload): the parser must not verify it.
    pub csum_not_ready: bool,
    /// The device already verified the checksum.
    pub csum_valid: bool,
    /// To send: a TCP super-segment to be cut into segments of this many payload bytes (by the
    /// kernel through the interface's `PacketTx`, or in software); 0: sent as it is.
    pub seg_payload: u16,
    /// To send: the TCP checksum field holds only the pseudo-header sum, for the kernel to
    /// complete (a TUN with the vnet header; else it is completed in software).
    pub csum_partial: bool,
}

struct Class {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    capacity: usize,
}

struct Inner {
    small: Class,
    large: Class,
    whole: Class,
    allocations: AtomicU64,
}

/// A shared pool of packet buffers. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("small_free", &self.inner.small.free_rx.len())
            .field("large_free", &self.inner.large.free_rx.len())
            .field("allocations", &self.allocations())
            .finish()
    }
}

impl Pool {
    /// A pool keeping at most `small` small and `large` large idle buffers (and as many whole
    /// ones as large).
    pub fn new(small: usize, large: usize) -> Pool {
        let class = |n: usize, capacity| {
            let (free_tx, free_rx) = crossbeam_channel::bounded(n.max(1));
            Class {
                free_tx,
                free_rx,
                capacity,
            }
        };
        Pool {
            inner: Arc::new(Inner {
                small: class(small, SMALL),
                large: class(large, LARGE),
                whole: class(large, WHOLE_CAPACITY),
                allocations: AtomicU64::new(0),
            }),
        }
    }

    /// An empty buffer able to hold `len` bytes without growing. `len` above [`LARGE`] is capped
    /// (no IP packet is larger).
    pub fn get(&self, len: usize) -> PacketBuf {
        let class = if len <= SMALL {
            &self.inner.small
        } else {
            &self.inner.large
        };
        let data = match class.free_rx.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => {
                self.inner.allocations.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(class.capacity)
            }
        };
        PacketBuf {
            data,
            meta: PacketMeta::default(),
            pool: Some(self.clone()),
        }
    }

    /// A buffer [`LARGE`] bytes long to build a packet in, then [`truncate`](Vec::truncate) to
    /// the packet's length. Its bytes are what it held when it was last used (zeros where it was
    /// shorter): filling only what the packet needs leaves nothing to clear or copy.
    pub fn get_whole(&self) -> PacketBuf {
        let class = &self.inner.whole;
        let mut data = match class.free_rx.try_recv() {
            Ok(v) => v,
            Err(_) => {
                self.inner.allocations.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(class.capacity)
            }
        };
        data.resize(LARGE, 0);
        PacketBuf {
            data,
            meta: PacketMeta::default(),
            pool: Some(self.clone()),
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_from(&self, bytes: &[u8]) -> PacketBuf {
        let mut b = self.get(bytes.len());
        b.data.extend_from_slice(bytes);
        b
    }

    /// How many buffers were allocated because the free list was empty (a steady state allocates
    /// none).
    pub fn allocations(&self) -> u64 {
        self.inner.allocations.load(Ordering::Relaxed)
    }

    fn put(&self, v: Vec<u8>) {
        let class = if v.capacity() >= WHOLE_CAPACITY {
            &self.inner.whole
        } else if v.capacity() >= LARGE {
            &self.inner.large
        } else {
            &self.inner.small
        };
        // A full free list (or a buffer that grew into another class) just frees the memory.
        if v.capacity() >= class.capacity {
            let _ = class.free_tx.try_send(v);
        }
    }
}

/// One packet's bytes, returned to its pool on drop. Dereferences to `Vec<u8>`.
pub struct PacketBuf {
    data: Vec<u8>,
    /// What the receiving side learned about this packet.
    pub meta: PacketMeta,
    pool: Option<Pool>,
}

impl PacketBuf {
    /// A buffer outside any pool (tests, cold paths).
    pub fn unpooled(bytes: &[u8]) -> PacketBuf {
        PacketBuf {
            data: bytes.to_vec(),
            meta: PacketMeta::default(),
            pool: None,
        }
    }
}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.data.len())
            .field("meta", &self.meta)
            .finish()
    }
}

impl Deref for PacketBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.data
    }
}

impl DerefMut for PacketBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.put(std::mem::take(&mut self.data));
        }
    }
}

/// A batch of packets: what crosses a channel in one message.
pub type Batch = Vec<PacketBuf>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled() {
        let pool = Pool::new(4, 2);
        for _ in 0..100 {
            let a = pool.copy_from(&[1, 2, 3]);
            let b = pool.get(20_000);
            assert_eq!(&a[..], &[1, 2, 3]);
            assert!(b.capacity() >= 20_000);
            drop((a, b));
        }
        assert_eq!(pool.allocations(), 2, "one small and one large, then reused");
        let again = pool.get(10);
        assert!(again.is_empty(), "a recycled buffer comes back empty");
    }

    #[test]
    fn whole_buffers_come_back_whole() {
        let pool = Pool::new(4, 2);
        for round in 0..10u8 {
            let mut w = pool.get_whole();
            assert_eq!(w.len(), LARGE);
            w[..3].copy_from_slice(&[round, 1, 2]);
            w.truncate(3 + usize::from(round));
            // A large buffer in use meanwhile stays in its own class.
            let l = pool.get(LARGE);
            assert!(l.is_empty());
            drop((w, l));
        }
        assert_eq!(pool.allocations(), 2, "one whole and one large, then reused");
        let w = pool.get_whole();
        assert_eq!(&w[..3], &[9, 1, 2], "what it held is kept");
        assert!(w[12..].iter().all(|&b| b == 0), "zeros past what it held");
    }

    #[test]
    fn buffers_return_from_other_threads() {
        let pool = Pool::new(256, 1);
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(4);
        let t = std::thread::spawn(move || {
            for batch in rx {
                drop(batch);
            }
        });
        for round in 0..50u8 {
            let batch: Batch = (0..32).map(|i| pool.copy_from(&[round, i])).collect();
            tx.send(batch).unwrap();
        }
        drop(tx);
        t.join().unwrap();
        // At most the batches in flight (channel, producer, consumer) were ever allocated, not 1,600.
        assert!(
            pool.allocations() <= 6 * 32,
            "allocations: {}",
            pool.allocations()
        );
    }
}
