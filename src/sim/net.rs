//! The network: one-directional paths between IP addresses, each a chain of [`Stage`]s, and a
//! virtual-time event queue of packets in flight. Packets are routed by the (source, destination)
//! addresses of their IP header, so any number of endpoints, and several paths between the same
//! hosts (one per address pair), are possible.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::link::{Link, Stage};
use super::rng::Rng;
use crate::time::Instant;
use crate::wire::ip;

/// Index of a path in a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathId(pub usize);

/// Counters of one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Packets that entered the path.
    pub sent: u64,
    /// Bytes that entered the path.
    pub sent_bytes: u64,
    /// Packets that came out of the path.
    pub delivered: u64,
    /// Bytes that came out.
    pub delivered_bytes: u64,
    /// Packets dropped while the path was administratively down.
    pub dropped_down: u64,
    /// Packets a [`Network::add_nat`] NAT dropped (no mapping, or one it forgot).
    pub dropped_nat: u64,
}

/// A NAT that forgets idle mappings and drops what it does not know, as strict carrier NATs
/// do (Linux conntrack with `nf_conntrack_tcp_loose = 0` and a short established timeout,
/// invalid packets dropped). Only its memory is modelled, not the address rewriting: a TCP
/// 4-tuple is mapped by a SYN leaving through it, kept alive by any packet of the tuple either
/// way, and forgotten after `idle` without one; any other packet of an unknown tuple is
/// dropped (both ways). It sits next to the client: packets leaving are checked when sent,
/// packets coming back when delivered.
#[derive(Debug)]
struct Nat {
    out: Vec<usize>,
    back: Vec<usize>,
    idle: Duration,
    /// (client, server) → when a packet of it last passed.
    seen: HashMap<(SocketAddr, SocketAddr), Instant>,
}

impl Nat {
    /// Whether a packet from `src` to `dst` passes at `now` (`leaving`: client → server).
    fn pass(&mut self, now: Instant, pkt: &[u8], leaving: bool) -> bool {
        let Ok(p) = crate::wire::parse_tcp_packet(pkt) else {
            return true;
        };
        let key = if leaving { (p.src, p.dst) } else { (p.dst, p.src) };
        let known = self.seen.get(&key).is_some_and(|&t| now < t + self.idle);
        let opens = leaving && p.header.flags.syn() && !p.header.flags.ack();
        if known || opens {
            self.seen.insert(key, now);
            true
        } else {
            self.seen.remove(&key);
            false
        }
    }
}

#[derive(Debug)]
struct Path {
    src: IpAddr,
    dst: IpAddr,
    stages: Vec<Stage>,
    down: bool,
    stats: PathStats,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    path: usize,
    pkt: Vec<u8>,
}

/// A packet coming out of the network.
#[derive(Debug)]
pub struct Delivery {
    /// The path it travelled.
    pub path: PathId,
    /// Destination address (from the IP header).
    pub dst: IpAddr,
    /// The IP packet. Hand the buffer back with [`Network::recycle`] to avoid allocations.
    pub packet: Vec<u8>,
}

/// Deterministic virtual-time network.
#[derive(Debug)]
pub struct Network {
    rng: Rng,
    paths: Vec<Path>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    pool: Vec<Vec<u8>>,
    scratch_a: Vec<(Instant, Vec<u8>)>,
    scratch_b: Vec<(Instant, Vec<u8>)>,
    nats: Vec<Nat>,
    /// Packets that matched no path or were not IP.
    pub unroutable: u64,
    /// Super-segments cut into segments on entry ([`send_transmit`](Self::send_transmit)).
    pub super_segments: u64,
    /// Segments cut from them.
    pub super_segment_parts: u64,
    gso_out: Vec<u8>,
}

impl Network {
    /// An empty network whose randomness derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Network {
            rng: Rng::new(seed),
            paths: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            pool: Vec::new(),
            scratch_a: Vec::new(),
            scratch_b: Vec::new(),
            nats: Vec::new(),
            unroutable: 0,
            super_segments: 0,
            super_segment_parts: 0,
            gso_out: Vec::new(),
        }
    }

    /// Adds a one-way path for packets from `src` to `dst` through `links` (in order).
    pub fn add_path(&mut self, src: IpAddr, dst: IpAddr, links: Vec<Link>) -> PathId {
        self.paths.push(Path {
            src,
            dst,
            stages: links.into_iter().map(Stage::new).collect(),
            down: false,
            stats: PathStats::default(),
        });
        PathId(self.paths.len() - 1)
    }

    /// Adds a path in each direction between `a` and `b` with the same kind of links.
    pub fn add_duplex(&mut self, a: IpAddr, b: IpAddr, links: Vec<Link>) -> (PathId, PathId) {
        let ab = self.add_path(a, b, links.clone());
        let ba = self.add_path(b, a, links);
        (ab, ba)
    }

    /// Puts a NAT ([`Nat`] above) on the paths `out` (client → server) and `back` (server →
    /// client) that forgets a mapping after `idle` without a packet.
    pub fn add_nat(&mut self, out: &[PathId], back: &[PathId], idle: Duration) {
        self.nats.push(Nat {
            out: out.iter().map(|p| p.0).collect(),
            back: back.iter().map(|p| p.0).collect(),
            idle,
            seen: HashMap::new(),
        });
    }

    /// Whether the NATs on path `pi` let `pkt` through at `now`: when it is sent on a path
    /// leaving the client (`sent`), or delivered on one coming back.
    fn nat_pass(&mut self, now: Instant, pi: usize, pkt: &[u8], sent: bool) -> bool {
        self.nats.iter_mut().all(|n| {
            if sent && n.out.contains(&pi) {
                n.pass(now, pkt, true)
            } else if !sent && n.back.contains(&pi) {
                n.pass(now, pkt, false)
            } else {
                true
            }
        })
    }

    /// Takes a path down (everything entering is dropped) or back up.
    pub fn set_down(&mut self, path: PathId, down: bool) {
        if let Some(p) = self.paths.get_mut(path.0) {
            p.down = down;
        }
    }

    /// The stages of a path (to change impairments mid-run, or read their counters).
    pub fn stages_mut(&mut self, path: PathId) -> Option<&mut Vec<Stage>> {
        self.paths.get_mut(path.0).map(|p| &mut p.stages)
    }

    /// Counters of a path.
    pub fn stats(&self, path: PathId) -> Option<PathStats> {
        self.paths.get(path.0).map(|p| p.stats)
    }

    /// A buffer from the pool (empty, with capacity kept).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    /// Returns a delivered packet's buffer to the pool.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.pool.len() < 4096 {
            self.pool.push(buf);
        }
    }

    /// Injects what a sender's `poll_transmit` wrote: with `seg_payload` > 0 a TCP super-segment,
    /// cut into segments of that many payload bytes first, as the sending host's kernel (GSO) or
    /// NIC (TSO) does with it ([`crate::wire::gso`]); each segment then crosses the path on its
    /// own (and may be lost on its own). A super-segment that cannot be cut is counted
    /// unroutable.
    pub fn send_transmit(&mut self, now: Instant, packet: &[u8], seg_payload: usize) {
        if seg_payload == 0 {
            self.send(now, packet);
            return;
        }
        let mut out = std::mem::take(&mut self.gso_out);
        out.resize(crate::wire::gso::MAX_PACKET, 0);
        let mut parts = Vec::new();
        match crate::wire::gso::segment(packet, seg_payload, &mut out, |s| parts.push(s.to_vec())) {
            Ok(n) => {
                self.super_segments += 1;
                self.super_segment_parts += n as u64;
                for p in parts {
                    self.send(now, &p);
                }
            }
            Err(_) => self.unroutable += 1,
        }
        self.gso_out = out;
    }

    /// Injects an IP packet at `now`; it is routed by its source and destination addresses.
    /// Returns false if no path matches (the packet is counted and dropped).
    pub fn send(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Ok(sum) = ip::parse(packet) else {
            self.unroutable += 1;
            return false;
        };
        let Some(pi) = self
            .paths
            .iter()
            .position(|p| p.src == sum.src && p.dst == sum.dst)
        else {
            self.unroutable += 1;
            return false;
        };
        let mut buf = self.buffer();
        buf.extend_from_slice(packet);
        let path = &mut self.paths[pi];
        path.stats.sent += 1;
        path.stats.sent_bytes += packet.len() as u64;
        if path.down {
            path.stats.dropped_down += 1;
            self.recycle(buf);
            return true;
        }
        if !self.nat_pass(now, pi, packet, true) {
            self.paths[pi].stats.dropped_nat += 1;
            self.recycle(buf);
            return true;
        }
        let path = &mut self.paths[pi];
        let mut cur = std::mem::take(&mut self.scratch_a);
        let mut next = std::mem::take(&mut self.scratch_b);
        cur.push((now, buf));
        for stage in path.stages.iter_mut() {
            for (t, p) in cur.drain(..) {
                stage.process(&mut self.rng, t, p, &mut next);
            }
            std::mem::swap(&mut cur, &mut next);
        }
        for (at, pkt) in cur.drain(..) {
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at,
                order: self.order,
                path: pi,
                pkt,
            }));
        }
        self.scratch_a = cur;
        self.scratch_b = next;
        true
    }

    /// When the next packet comes out.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|r| r.0.at)
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// The next packet due at or before `now`.
    pub fn deliver(&mut self, now: Instant) -> Option<Delivery> {
        let f = loop {
            if self.queue.peek().is_none_or(|r| r.0.at > now) {
                return None;
            }
            let Reverse(f) = self.queue.pop()?;
            if self.nat_pass(f.at, f.path, &f.pkt, false) {
                break f;
            }
            self.paths[f.path].stats.dropped_nat += 1;
            self.recycle(f.pkt);
        };
        let p = &mut self.paths[f.path];
        p.stats.delivered += 1;
        p.stats.delivered_bytes += f.pkt.len() as u64;
        Some(Delivery {
            path: PathId(f.path),
            dst: p.dst,
            packet: f.pkt,
        })
    }
}
