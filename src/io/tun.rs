//! The TUN thread: reads the packets the host routes into mpbond. Until the forwarding engine
//! arrives it counts them (packets, bytes, malformed), which `status` reports.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::Worker;
use crate::sys::tun::Tun;

const TUN: Token = Token(1);
/// Packets handled per wake-up before polling again (boringtun `MAX_ITR`).
const MAX_PER_WAKE: usize = 1024;

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
    /// Packets read that were neither IPv4 nor IPv6 (dropped).
    pub rx_invalid: AtomicU64,
}

/// Starts the TUN thread; it owns `tun` (the device disappears when the thread ends).
pub fn spawn(tun: Tun, counters: Arc<TunCounters>) -> io::Result<Worker> {
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)?;
    Worker::spawn("mpbond-tun", poll, move |poll, stop| {
        run(poll, &stop, &tun, &counters);
    })
}

fn run(mut poll: Poll, stop: &AtomicBool, tun: &Tun, counters: &TunCounters) {
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 65536];
    let mut more = false;
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
        for n in 0..MAX_PER_WAKE {
            match tun.recv(&mut buf) {
                Ok(len) => count(counters, &buf[..len]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return;
                }
            }
            more = n + 1 == MAX_PER_WAKE;
        }
    }
}

fn count(counters: &TunCounters, packet: &[u8]) {
    match packet.first().map(|b| b >> 4) {
        Some(4 | 6) => {
            counters.rx_packets.fetch_add(1, Ordering::Relaxed);
            counters
                .rx_bytes
                .fetch_add(packet.len() as u64, Ordering::Relaxed);
        }
        _ => {
            counters.rx_invalid.fetch_add(1, Ordering::Relaxed);
        }
    }
}
