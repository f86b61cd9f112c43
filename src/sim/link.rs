//! Chainable link impairments. Each stage maps one packet entering at time `t` to zero or more
//! (time, packet) pairs leaving it.

use std::net::SocketAddr;
use std::time::Duration;

use super::rng::Rng;
use crate::time::Instant;
use crate::wire::mptcp::{DsnField, Dss, DssMapping, MptcpOption};
use crate::wire::tcp::{OptionIter, TcpHeaderView, TcpOption, kind};
use crate::wire::{SegmentFields, ip, write_tcp_packet};

/// What a middlebox does to a matching TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Remove the option (the header shrinks).
    Strip,
    /// Overwrite it with NOPs (the header keeps its size).
    Nop,
}

/// What [`Link::DamageDss`] does to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DssDamage {
    /// Flip the checksum field (what the receiver sees when a middlebox altered the payload).
    Checksum,
    /// Move the mapping's 64-bit DSN 2^30 ahead: the receiver places the octets far outside its
    /// window and drops them at the data level, while the subflow acknowledges them.
    MoveDsn,
}

/// One impairment.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Fixed one-way delay.
    Delay(Duration),
    /// Extra uniform delay in `[0, max)`, order preserved (a packet never overtakes the previous).
    Jitter(Duration),
    /// Independent random loss with probability `p`.
    Loss(f64),
    /// Gilbert-Elliott burst loss: a two-state Markov chain.
    Gilbert {
        /// Per-packet probability of moving from good to bad.
        p_good_to_bad: f64,
        /// Per-packet probability of moving from bad to good.
        p_bad_to_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
    /// With probability `p`, hold a packet back by `extra` (it is overtaken: reordering).
    Reorder {
        /// Probability.
        p: f64,
        /// Extra delay of the held-back packet.
        extra: Duration,
    },
    /// With probability `p`, deliver a packet twice.
    Duplicate(f64),
    /// Serialisation at `bytes_per_sec` behind a tail-drop FIFO of `queue_bytes`.
    Rate {
        /// Link rate.
        bytes_per_sec: u64,
        /// Queue capacity in bytes.
        queue_bytes: usize,
    },
    /// Drop everything entering in `[from, until)`.
    Blackhole {
        /// Start.
        from: Instant,
        /// End.
        until: Instant,
    },
    /// Drop packets longer than this many bytes (IP packet length).
    Mtu(usize),
    /// Drop the packets entering this stage whose number (from 1) is in the list, once each.
    DropNth(Vec<u64>),
    /// A middlebox that damages the DSS mapping of the `nth` segment (from 1) carrying one,
    /// once. The payload is left intact so transfers can still be checked byte for byte.
    DamageDss {
        /// Which mapping to damage.
        nth: u32,
        /// How.
        damage: DssDamage,
    },
    /// A middlebox rewriting TCP option `kind`.
    RewriteOption {
        /// Option kind to remove or overwrite.
        kind: u8,
        /// Strip or NOP it.
        mode: Rewrite,
        /// Only on segments with SYN set.
        syn_only: bool,
    },
}

/// Per-stage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Packets dropped by this stage.
    pub dropped: u64,
    /// Extra copies made (duplication).
    pub duplicated: u64,
    /// Packets modified (middlebox).
    pub rewritten: u64,
}

/// A link with its running state.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The impairment.
    pub link: Link,
    busy_until: Instant,
    last_out: Instant,
    bad: bool,
    seen: u32,
    damaged: Option<(u64, u32)>,
    last_key: Option<(u64, u32)>,
    count: u64,
    /// Counters.
    pub stats: StageStats,
}

impl Stage {
    /// A fresh stage.
    pub fn new(link: Link) -> Self {
        Stage {
            link,
            busy_until: Instant::ZERO,
            last_out: Instant::ZERO,
            bad: false,
            seen: 0,
            damaged: None,
            last_key: None,
            count: 0,
            stats: StageStats::default(),
        }
    }

    /// Passes `pkt` entering at `t` through; outputs go to `out`.
    pub fn process(
        &mut self,
        rng: &mut Rng,
        t: Instant,
        mut pkt: Vec<u8>,
        out: &mut Vec<(Instant, Vec<u8>)>,
    ) {
        match self.link {
            Link::Delay(d) => out.push((t + d, pkt)),
            Link::Jitter(max) => {
                let extra = Duration::from_nanos(rng.below(max.as_nanos() as u64));
                let at = (t + extra).max(self.last_out);
                self.last_out = at;
                out.push((at, pkt));
            }
            Link::Loss(p) => {
                if rng.chance(p) {
                    self.stats.dropped += 1;
                } else {
                    out.push((t, pkt));
                }
            }
            Link::Gilbert {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                self.bad = if self.bad {
                    !rng.chance(p_bad_to_good)
                } else {
                    rng.chance(p_good_to_bad)
                };
                if rng.chance(if self.bad { loss_bad } else { loss_good }) {
                    self.stats.dropped += 1;
                } else {
                    out.push((t, pkt));
                }
            }
            Link::Reorder { p, extra } => {
                let at = if rng.chance(p) { t + extra } else { t };
                out.push((at, pkt));
            }
            Link::Duplicate(p) => {
                if rng.chance(p) {
                    self.stats.duplicated += 1;
                    out.push((t, pkt.clone()));
                }
                out.push((t, pkt));
            }
            Link::Rate {
                bytes_per_sec,
                queue_bytes,
            } => {
                let rate = bytes_per_sec.max(1);
                let start = self.busy_until.max(t);
                // Bytes waiting ahead of this packet.
                let backlog = (start - t).as_nanos() * u128::from(rate) / 1_000_000_000;
                if backlog > queue_bytes as u128 {
                    self.stats.dropped += 1;
                    return;
                }
                let tx = Duration::from_nanos((pkt.len() as u128 * 1_000_000_000 / u128::from(rate)) as u64);
                self.busy_until = start + tx;
                out.push((self.busy_until, pkt));
            }
            Link::Blackhole { from, until } => {
                if t >= from && t < until {
                    self.stats.dropped += 1;
                } else {
                    out.push((t, pkt));
                }
            }
            Link::DropNth(ref which) => {
                self.count += 1;
                if which.contains(&self.count) {
                    self.stats.dropped += 1;
                } else {
                    out.push((t, pkt));
                }
            }
            Link::Mtu(m) => {
                if pkt.len() > m {
                    self.stats.dropped += 1;
                } else {
                    out.push((t, pkt));
                }
            }
            Link::DamageDss { nth, damage } => {
                // Every copy of the chosen mapping (a mapping may span several segments, and
                // subflow retransmissions repeat it) is damaged alike.
                if let Some((key, at, opt)) = dss_mapping_at(&pkt) {
                    // Count mappings, not segments: copies of one follow each other.
                    if self.seen < nth && self.last_key != Some(key) {
                        self.seen += 1;
                        self.last_key = Some(key);
                        if self.seen == nth {
                            self.damaged = Some(key);
                        }
                    }
                    if self.damaged == Some(key) && damage_dss(&mut pkt, at, opt, damage) {
                        self.stats.rewritten += 1;
                    }
                }
                out.push((t, pkt));
            }
            Link::RewriteOption {
                kind: k,
                mode,
                syn_only,
            } => {
                if rewrite_option(&mut pkt, k, mode, syn_only) {
                    self.stats.rewritten += 1;
                }
                out.push((t, pkt));
            }
        }
    }
}

/// Rewrites option `k` of the TCP segment in `pkt` in place (NOP) or by rebuilding the packet
/// (strip). Returns true if the packet changed; non-TCP or malformed packets pass unchanged.
pub fn rewrite_option(pkt: &mut Vec<u8>, k: u8, mode: Rewrite, syn_only: bool) -> bool {
    let Ok(ipsum) = ip::parse(pkt) else { return false };
    if ipsum.proto != ip::PROTO_TCP {
        return false;
    }
    let Some(seg) = pkt.get(ipsum.payload.clone()) else {
        return false;
    };
    let Ok(view) = TcpHeaderView::new(seg) else {
        return false;
    };
    if syn_only && !view.flags().syn() {
        return false;
    }
    let opts = view.options();
    let mut kept = [0u8; 40];
    let mut kept_len = 0;
    let mut nopped = [0u8; 40];
    nopped[..opts.len()].copy_from_slice(opts);
    let mut pos = 0;
    let mut changed = false;
    for o in OptionIter::new(opts) {
        let Ok(o) = o else { return false };
        let len = match o {
            TcpOption::End => opts.len() - pos,
            TcpOption::Nop => 1,
            _ => usize::from(opts[pos + 1]),
        };
        if opts[pos] == k && !matches!(o, TcpOption::End | TcpOption::Nop) {
            changed = true;
            nopped[pos..pos + len].fill(kind::NOP);
        } else {
            kept[kept_len..kept_len + len].copy_from_slice(&opts[pos..pos + len]);
            kept_len += len;
        }
        pos += len;
    }
    if !changed {
        return false;
    }
    let new_opts: &[u8] = match mode {
        Rewrite::Strip => &kept[..kept_len],
        Rewrite::Nop => &nopped[..opts.len()],
    };
    rebuild(pkt, new_opts)
}

/// The DSS mapping with an 8-octet DSN in `pkt` (RFC 8684 §3.3, Figure 9), if any: its
/// identity (DSN and subflow sequence number: a reinjection of the same octets is another
/// mapping), the option's offset in the TCP options, and the parsed option.
fn dss_mapping_at(pkt: &[u8]) -> Option<((u64, u32), usize, MptcpOption)> {
    let ipsum = ip::parse(pkt).ok()?;
    if ipsum.proto != ip::PROTO_TCP {
        return None;
    }
    let view = TcpHeaderView::new(pkt.get(ipsum.payload.clone())?).ok()?;
    let opts = view.options();
    let mut pos = 0;
    for o in OptionIter::new(opts) {
        let len = match o.ok()? {
            TcpOption::End => return None,
            TcpOption::Nop => 1,
            TcpOption::Mptcp(raw) => {
                if let Ok(
                    opt @ MptcpOption::Dss(Dss {
                        mapping:
                            Some(DssMapping {
                                dsn: DsnField::Long(dsn),
                                subflow_seq,
                                ..
                            }),
                        ..
                    }),
                ) = MptcpOption::parse(raw)
                {
                    return Some(((dsn, subflow_seq), pos, opt));
                }
                raw.len()
            }
            _ => usize::from(opts[pos + 1]),
        };
        pos += len;
    }
    None
}

/// Applies `damage` to `opt`, the DSS option at offset `at` of the TCP options of `pkt` (the TCP
/// checksum is recomputed); false if `damage` does not apply to it.
fn damage_dss(pkt: &mut Vec<u8>, at: usize, opt: MptcpOption, damage: DssDamage) -> bool {
    let MptcpOption::Dss(mut dss) = opt else {
        return false;
    };
    let Some(m) = dss.mapping.as_mut() else {
        return false;
    };
    match (damage, m.checksum.as_mut(), &mut m.dsn) {
        (DssDamage::Checksum, Some(c), _) => *c ^= 0xffff,
        (DssDamage::MoveDsn, _, DsnField::Long(d)) => *d = d.wrapping_add(1 << 30),
        _ => return false,
    }
    let Ok(ipsum) = ip::parse(pkt) else { return false };
    let Some(Ok(view)) = pkt.get(ipsum.payload.clone()).map(TcpHeaderView::new) else {
        return false;
    };
    let mut opts = view.options().to_vec();
    // Same option, same length: written back in place.
    if MptcpOption::Dss(dss).write(&mut opts[at..]).is_err() {
        return false;
    }
    rebuild(pkt, &opts)
}

/// Rewrites the TCP segment in `pkt` with `new_opts` as its options (checksums recomputed).
fn rebuild(pkt: &mut Vec<u8>, new_opts: &[u8]) -> bool {
    let Ok(ipsum) = ip::parse(pkt) else { return false };
    let Some(Ok(view)) = pkt.get(ipsum.payload.clone()).map(TcpHeaderView::new) else {
        return false;
    };
    let src = SocketAddr::new(ipsum.src, view.src_port());
    let dst = SocketAddr::new(ipsum.dst, view.dst_port());
    let fields = SegmentFields {
        src_port: view.src_port(),
        dst_port: view.dst_port(),
        seq: view.seq(),
        ack: view.ack(),
        flags: view.flags(),
        window: view.window(),
    };
    let payload = view.payload().to_vec();
    let mut out = vec![0u8; pkt.len() + 64];
    match write_tcp_packet(&mut out, src, dst, &fields, new_opts, &[&payload], 0) {
        Ok(n) => {
            out.truncate(n);
            *pkt = out;
            true
        }
        Err(_) => false,
    }
}
