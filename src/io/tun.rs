//! The TUN thread: reads the packets the host routes into mpbond and hands them to the engine in
//! batches of pooled buffers; writes the engine's packets for the host back into the TUN. It
//! counts both directions (packets, bytes, protocol, malformed), which `status` reports.
//!
//! A small batch for the host (an answer, a SYN/ACK, a pure ACK) is written by the engine thread
//! itself through [`TunSender::send`] when nothing is queued for the TUN thread: that saves a
//! thread wake-up (tens of microseconds on a busy machine) on the latency path. Larger batches
//! (bulk downloads) go to the TUN thread, so that the host's TCP receive work, which runs inside
//! the write, stays off the engine thread.
//!
//! The engine thread also reads the TUN itself while it spins for input after a wake-up
//! ([`TunSender::try_read`]): the host's next request then skips the TUN thread's wake-up and
//! the hand-off. Whoever reads holds the read token, and the TUN thread hands what it read to
//! the engine before it lets the token go, so packets reach the engine in the order read.
//!
//! On a TUN with the vnet header ([`Tun::vnet`]) each packet read says whether the host left its
//! checksum partial or checked it (then the engine does not verify it: `PacketMeta::csum_valid`)
//! and may be a TSO super-packet of up to 64 KiB; a packet written may be a super-segment
//! (`PacketMeta::seg_payload`) with a partial checksum (`PacketMeta::csum_partial`), which the
//! kernel cuts or takes whole. On a plain TUN such a packet is cut and checksummed here.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::Worker;
use super::pool::{Batch, PacketBuf, Pool};
use crate::sys::tun::Tun;
use crate::wire::vnet::{self, VnetHdr};

/// Packets per batch handed to the engine.
pub const MAX_BATCH: usize = 64;

const TUN: Token = Token(1);
/// Packets handled per wake-up before polling again (boringtun `MAX_ITR`).
const MAX_PER_WAKE: usize = 1024;
/// Batches of at most this many packets are written by the sending thread itself when the TUN
/// thread has nothing queued (see the module documentation).
pub const DIRECT_MAX: usize = 4;

/// Counters of the TUN thread.
#[derive(Debug, Default)]
pub struct TunCounters {
    /// Packets read.
    pub rx_packets: AtomicU64,
    /// Bytes read.
    pub rx_bytes: AtomicU64,
    /// Packets written.
    pub tx_packets: AtomicU64,
    /// Bytes written.
    pub tx_bytes: AtomicU64,
    /// Packets read that were not valid IPv4 or IPv6 (dropped).
    pub rx_invalid: AtomicU64,
    /// Valid packets read carrying TCP.
    pub rx_tcp: AtomicU64,
    /// Valid packets read carrying UDP.
    pub rx_udp: AtomicU64,
    /// Valid packets read carrying ICMP or ICMPv6.
    pub rx_icmp: AtomicU64,
    /// Packets read but dropped because the engine's channel was full.
    pub rx_dropped_busy: AtomicU64,
    /// Packets the engine gave that could not be written.
    pub tx_dropped: AtomicU64,
    /// Packets read that were TCP super-packets (the host's TSO, vnet header).
    pub rx_super: AtomicU64,
    /// Packets read whose checksum the kernel left partial or checked (not verified again).
    pub rx_csum_offloaded: AtomicU64,
    /// Super-segments written whole for the kernel to cut (vnet header).
    pub tx_super: AtomicU64,
    /// Packets written with a partial checksum for the kernel to complete (vnet header).
    pub tx_csum_offloaded: AtomicU64,
    /// Super-segments or partial checksums finished here (a TUN without the vnet header).
    pub tx_software: AtomicU64,
    /// The TUN has the vnet header and offloads (set once at start).
    pub offload: AtomicBool,
}

/// The engine's handle for sending packets to the host through the TUN thread.
#[derive(Debug, Clone)]
pub struct TunSender {
    tx: Sender<Batch>,
    waker: Arc<Waker>,
    counters: Arc<TunCounters>,
    tun: Arc<Tun>,
    /// Batches handed to the TUN thread and not yet written: while any is, a direct write would
    /// overtake it.
    queued: Arc<AtomicUsize>,
    /// The read token (see the module documentation).
    reading: Arc<AtomicBool>,
}

impl TunSender {
    /// Writes a small batch at once when nothing is queued for the TUN thread (in order, since
    /// only this sender queues); otherwise queues it for the TUN thread and wakes it. A full queue
    /// drops the batch (counted).
    pub fn send(&self, batch: Batch) {
        // Only senders increase `queued`: a zero read here stays zero until this thread queues
        // something, so the direct write cannot overtake a batch this thread queued before.
        if batch.len() <= DIRECT_MAX && self.queued.load(Ordering::Acquire) == 0 {
            write_batch(&self.tun, &self.counters, batch);
            return;
        }
        let n = batch.len() as u64;
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(batch).is_ok() {
            let _ = self.waker.wake();
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.counters.tx_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads up to `max` packets from the TUN on the calling thread, unless the TUN thread is
    /// reading. `pending` is asked once the token is held: when it says the TUN thread's
    /// earlier packets are still waiting for the caller, nothing is read (they come first).
    /// `None`: nothing was read.
    pub fn try_read(&self, pool: &Pool, max: usize, pending: impl FnOnce() -> bool) -> Option<Batch> {
        if self
            .reading
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let mut batch = Vec::new();
        if !pending() {
            while batch.len() < max {
                match read_one(&self.tun, &self.counters, pool) {
                    Ok(p) => batch.push(p),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock, or an error the TUN thread reports when it reads next.
                    Err(_) => break,
                }
            }
        }
        self.reading.store(false, Ordering::Release);
        (!batch.is_empty()).then_some(batch)
    }
}

/// Reads one packet straight into a large pool buffer (no copy; recycled when the engine is
/// done) and counts it.
fn read_one(tun: &Tun, counters: &TunCounters, pool: &Pool) -> io::Result<PacketBuf> {
    let mut p = pool.get(super::pool::LARGE);
    let hdr = tun.recv_into(&mut p)?;
    count(counters, &p);
    if hdr.is_tcp_super() {
        counters.rx_super.fetch_add(1, Ordering::Relaxed);
    }
    if hdr.checksum_trusted() {
        counters.rx_csum_offloaded.fetch_add(1, Ordering::Relaxed);
        p.meta.csum_not_ready = hdr.flags & vnet::F_NEEDS_CSUM != 0;
        p.meta.csum_valid = hdr.flags & vnet::F_DATA_VALID != 0;
    }
    Ok(p)
}

/// Starts the TUN thread; it shares `tun` with the returned [`TunSender`] (the device disappears
/// when both are gone: the thread has ended and the sender was dropped). Packets read go to
/// `to_engine` in batches; the returned [`TunSender`] carries packets back.
pub fn spawn(
    tun: Tun,
    counters: Arc<TunCounters>,
    pool: Pool,
    to_engine: Sender<Batch>,
) -> io::Result<(Worker, TunSender)> {
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)?;
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(1024);
    let tun = Arc::new(tun);
    let queued = Arc::new(AtomicUsize::new(0));
    let reading = Arc::new(AtomicBool::new(false));
    let c = counters.clone();
    let (t, q, r) = (tun.clone(), queued.clone(), reading.clone());
    let worker = Worker::spawn("mpbond-tun", poll, move |poll, stop| {
        let out = Outbox {
            rx: &rx,
            queued: &q,
            reading: &r,
        };
        run(poll, &stop, &t, &c, &pool, &to_engine, &out);
    })?;
    let sender = TunSender {
        tx,
        waker: worker.waker(),
        counters,
        tun,
        queued,
        reading,
    };
    Ok((worker, sender))
}

/// The TUN thread's side of the channel from the engine.
struct Outbox<'a> {
    rx: &'a Receiver<Batch>,
    queued: &'a AtomicUsize,
    /// The read token shared with [`TunSender::try_read`].
    reading: &'a AtomicBool,
}

fn write_batch(tun: &Tun, counters: &TunCounters, batch: Batch) {
    for p in batch {
        match write_one(tun, counters, &p) {
            Ok(()) => {
                counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                counters.tx_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("writing to the TUN failed: {e}");
                counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes one packet: as it is, or with the vnet header its meta asks for, or cut and
/// checksummed in software when the TUN has no vnet header.
fn write_one(tun: &Tun, counters: &TunCounters, p: &PacketBuf) -> io::Result<()> {
    let seg = usize::from(p.meta.seg_payload);
    if !p.meta.csum_partial && seg == 0 {
        return tun.send(p).map(drop);
    }
    if tun.vnet() {
        let hdr = VnetHdr::partial_tcp(p, seg).ok_or(io::ErrorKind::InvalidData)?;
        tun.send_with(Some(&hdr), p)?;
        counters.tx_csum_offloaded.fetch_add(1, Ordering::Relaxed);
        if hdr.is_tcp_super() {
            counters.tx_super.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    }
    // Rare: the engine was set up for the vnet header but the device has none.
    counters.tx_software.fetch_add(1, Ordering::Relaxed);
    let mut out = vec![0u8; 65536];
    let mut res = Ok(());
    crate::wire::gso::segment(p, if seg == 0 { usize::MAX } else { seg }, &mut out, |s| {
        if res.is_ok() {
            res = tun.send(s).map(drop);
        }
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    res
}

fn write_out(tun: &Tun, counters: &TunCounters, from_engine: &Outbox<'_>) {
    for _ in 0..MAX_PER_WAKE {
        let Ok(batch) = from_engine.rx.try_recv() else {
            return;
        };
        write_batch(tun, counters, batch);
        // After the write: a direct write by the sender may follow only once this one is done.
        from_engine.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run(
    mut poll: Poll,
    stop: &AtomicBool,
    tun: &Tun,
    counters: &TunCounters,
    pool: &Pool,
    to_engine: &Sender<Batch>,
    from_engine: &Outbox<'_>,
) {
    let mut events = Events::with_capacity(8);
    let mut more = false;
    let mut batch: Batch = Vec::with_capacity(MAX_BATCH);
    let flush = |batch: &mut Batch| {
        if batch.is_empty() {
            return;
        }
        let b = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let n = b.len() as u64;
        if to_engine.try_send(b).is_err() {
            counters.rx_dropped_busy.fetch_add(n, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        // After a capped batch, look again at once instead of waiting for a new edge.
        let timeout = more.then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("tun poll failed: {e}");
            return;
        }
        more = false;
        write_out(tun, counters, from_engine);
        let token = &from_engine.reading;
        if token
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // The engine is reading (a few packets at most): look again at once.
            more = true;
            std::thread::yield_now();
            continue;
        }
        for n in 0..MAX_PER_WAKE {
            match read_one(tun, counters, pool) {
                Ok(p) => {
                    batch.push(p);
                    if batch.len() >= MAX_BATCH {
                        flush(&mut batch);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return;
                }
            }
            more = n + 1 == MAX_PER_WAKE;
        }
        flush(&mut batch);
        // Only now: what this thread read is in the engine's channel, ahead of what the engine
        // reads itself.
        token.store(false, Ordering::Release);
        // The engine may have answered while we read.
        more |= !from_engine.rx.is_empty();
    }
}

/// Counts one packet read from the TUN; a packet that is not valid IP is counted as invalid.
pub fn count(counters: &TunCounters, packet: &[u8]) {
    let Ok(ip) = etherparse::IpSlice::from_slice(packet) else {
        counters.rx_invalid.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.rx_packets.fetch_add(1, Ordering::Relaxed);
    counters
        .rx_bytes
        .fetch_add(packet.len() as u64, Ordering::Relaxed);
    let proto = match ip.payload().ip_number {
        etherparse::IpNumber::TCP => &counters.rx_tcp,
        etherparse::IpNumber::UDP => &counters.rx_udp,
        etherparse::IpNumber::ICMP | etherparse::IpNumber::IPV6_ICMP => &counters.rx_icmp,
        _ => return,
    };
    proto.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol_and_drops_garbage() {
        let c = TunCounters::default();
        let udp = etherparse::PacketBuilder::ipv4([100, 127, 77, 1], [198, 19, 0, 11], 64).udp(5000, 9);
        let mut buf = Vec::new();
        udp.write(&mut buf, b"hi").unwrap();
        count(&c, &buf);
        let tcp = etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(1, 2, 3, 1000);
        let mut buf6 = Vec::new();
        tcp.write(&mut buf6, &[]).unwrap();
        count(&c, &buf6);
        count(&c, &[0x45, 0, 0]);
        count(&c, &[]);
        assert_eq!(c.rx_packets.load(Ordering::Relaxed), 2);
        assert_eq!(
            c.rx_bytes.load(Ordering::Relaxed),
            (buf.len() + buf6.len()) as u64
        );
        assert_eq!(c.rx_udp.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_tcp.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_icmp.load(Ordering::Relaxed), 0);
        assert_eq!(c.rx_invalid.load(Ordering::Relaxed), 2);
    }
}
