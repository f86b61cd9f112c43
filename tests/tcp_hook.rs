//! The option hook the MPTCP layer uses: reserved space, exact payload mapping (also on
//! retransmissions), SACK blocks shrinking to make room, incoming options seen; and the memory an
//! idle established connection costs.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;
use common::*;
use mpbond::tcp::{Config, Connection, InSegment, OptionHook, OutSegment, SegmentPlan, SeqNum};
use mpbond::wire::tcp::{MAX_OPTIONS_LEN, SegmentHeader};

/// Writes a fake 20-byte MPTCP option (kind 30) carrying the segment's seq and payload length.
#[derive(Default)]
struct FakeMptcp {
    written: Vec<(SeqNum, usize, bool)>,
    seen: Vec<Vec<u8>>,
}

impl OptionHook for FakeMptcp {
    fn reserve(&mut self, _plan: &SegmentPlan) -> usize {
        20
    }
    fn write_options(&mut self, seg: &OutSegment, space: &mut [u8]) -> usize {
        assert!(space.len() >= 20, "space {}", space.len());
        space[0] = 30;
        space[1] = 20;
        space[2] = 0x20; // subtype DSS
        space[3] = 0;
        space[4..8].copy_from_slice(&seg.seq.0.to_be_bytes());
        space[8..12].copy_from_slice(&(seg.payload_len as u32).to_be_bytes());
        space[12..20].fill(0xaa);
        self.written.push((seg.seq, seg.payload_len, seg.retransmission));
        20
    }
    fn on_segment(&mut self, header: &SegmentHeader, _seg: &InSegment) {
        for o in header.options.mptcp.iter() {
            self.seen.push(o.to_vec());
        }
    }
}

#[test]
fn hook_options_map_each_payload_and_fit_the_mss() {
    let (mut c, mut s) = handshake(Config::default(), Config::default());
    let mut hook = FakeMptcp::default();
    c.send(&vec![1u8; 20_000]);
    let segs = drain_with(&mut c, at(1), &mut hook);
    assert_eq!(segs.len(), hook.written.len());
    for (seg, w) in segs.iter().zip(&hook.written) {
        let raw = seg.hdr.options.mptcp.iter().next().expect("MPTCP option present");
        assert_eq!(raw.len(), 20);
        assert_eq!(u32::from_be_bytes(raw[4..8].try_into().unwrap()), seg.hdr.seq.0);
        assert_eq!(
            u32::from_be_bytes(raw[8..12].try_into().unwrap()) as usize,
            seg.len()
        );
        assert_eq!((w.0, w.1), (seg.hdr.seq, seg.len()));
        // Header options (12 TS + 20 hook) + payload stay within the MSS (RFC 9293 §3.7.1).
        assert!(seg.len() + 32 <= 1460, "{}", seg.len());
    }
    // Incoming: the server's hook sees the client's MPTCP options.
    let mut shook = FakeMptcp::default();
    for seg in &segs {
        s.handle_segment_with(at(2), &seg.hdr, &seg.payload, &mut shook);
    }
    assert_eq!(shook.seen.len(), segs.len());
    // A retransmission carries a fresh mapping for exactly its bytes.
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    let rtx = drain_with(&mut c, t, &mut hook);
    assert_eq!(rtx.len(), 1);
    let last = hook.written.last().unwrap();
    assert!(last.2);
    assert_eq!((last.0, last.1), (rtx[0].hdr.seq, rtx[0].len()));
}

/// Reserves and writes an option whose length is not a multiple of 4 (an MPTCP DSS without
/// checksum is 26 bytes).
struct OddOption;

impl OptionHook for OddOption {
    fn reserve(&mut self, _plan: &SegmentPlan) -> usize {
        26
    }
    fn write_options(&mut self, _seg: &OutSegment, space: &mut [u8]) -> usize {
        space[0] = 30;
        space[1] = 26;
        space[2..26].fill(0);
        26
    }
}

#[test]
fn padded_options_count_against_the_mss() {
    // Found against the Linux kernel: TS (12) + a 26-byte option go out padded to 40 bytes; a
    // payload sized from the unpadded 38 made 1502-byte packets on a 1500-byte path (EMSGSIZE).
    let (mut c, _s) = handshake(Config::default(), Config::default());
    c.send(&vec![1u8; 20_000]);
    let segs = drain_with(&mut c, at(1), &mut OddOption);
    assert!(segs.len() >= 10);
    for seg in &segs {
        // RFC 9293 §3.7.1: IP (20) + TCP header with padded options + payload within MSS + 40.
        assert!(seg.tx.len <= 1500, "{}-byte packet", seg.tx.len);
    }
    assert_eq!(segs[0].len(), 1460 - 40);
}

#[test]
fn sack_blocks_shrink_to_make_room() {
    let (mut c, mut s) = handshake(Config::default(), Config::default());
    c.send(&vec![1u8; 12 * 1448]);
    let segs = drain(&mut c, at(1));
    // Three holes: the server has 4 out-of-order ranges.
    let kept: Vec<_> = segs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 1)
        .map(|(_, s)| s.clone())
        .collect();
    deliver(&mut s, at(2), &kept);
    let plain = drain(&mut s, at(2));
    // Timestamps (12) + SACK: 3 blocks fit in 40 bytes.
    assert_eq!(plain.last().unwrap().hdr.options.sack_blocks().len(), 3);
    s.request_ack();
    let mut hook = FakeMptcp::default();
    let with_hook = drain_with(&mut s, at(3), &mut hook);
    // 12 + 20 leaves 8 bytes: no room for a SACK block (10 bytes), the hook's option wins.
    let h = &with_hook[0].hdr;
    assert!(h.options.sack_blocks().len() < 3);
    assert!(!h.options.mptcp.is_empty());
    let total = 12
        + 20
        + if h.options.sack_blocks().is_empty() {
            0
        } else {
            4 + 8 * h.options.sack_blocks().len()
        };
    assert!(total <= MAX_OPTIONS_LEN);
}

#[test]
fn idle_connection_memory() {
    let (mut c, mut s) = handshake(Config::default(), Config::default());
    let data = vec![9u8; 300_000];
    let mut sent = 0;
    for i in 0..100 {
        sent += c.send(&data[sent..]);
        pump(&mut c, &mut s, at(i));
        read_all(&mut s);
        s.handle_timeout(at(i + 50));
        c.handle_timeout(at(i + 50));
    }
    pump(&mut c, &mut s, at(1000));
    assert_eq!(sent, data.len());
    assert_eq!(c.send_queued(), 0);
    let size = std::mem::size_of::<Connection>();
    let heap_c = c.heap_bytes();
    let heap_s = s.heap_bytes();
    println!(
        "idle established connection: size_of = {size} B, heap = {heap_c} B (sender) / {heap_s} B (receiver)"
    );
    // Goal from the issue: <= 16 KiB without buffered data.
    assert!(size + heap_c <= 16 * 1024);
    assert!(size + heap_s <= 16 * 1024);
}

#[test]
fn hook_sees_syn_synack_and_rst() {
    let now = mpbond::time::Instant::ZERO;
    let mut hook = FakeMptcp::default();
    let mut c = Connection::connect(now, client_addr(), server_addr(), Config::default(), &key());
    let syn = drain_with(&mut c, now, &mut hook);
    // SYN: MSS 4 + WS 4 + SACK-perm/TS 12 + hook 20 = 40 bytes of options.
    assert!(!syn[0].hdr.options.mptcp.is_empty());
    assert_eq!(syn[0].hdr.options.mss, Some(1460));
    let mut shook = FakeMptcp::default();
    let mut s = Connection::accept(
        now,
        server_addr(),
        client_addr(),
        &syn[0].hdr,
        Config::default(),
        &key(),
    )
    .unwrap();
    let sa = drain_with(&mut s, now, &mut shook);
    assert!(sa[0].flags().syn() && !sa[0].hdr.options.mptcp.is_empty());
    for seg in &sa {
        c.handle_segment_with(now, &seg.hdr, &seg.payload, &mut hook);
    }
    assert_eq!(
        hook.seen.len(),
        1,
        "the SYN-ACK's option reached the client's hook"
    );
    c.abort();
    let rst = drain_with(&mut c, now, &mut hook);
    assert!(rst[0].flags().rst() && !rst[0].hdr.options.mptcp.is_empty());
}

/// Reserves room only for a segment without payload (as MPTCP does for its DATA_ACK and a
/// pending signal) and records what it was asked to write.
#[derive(Default)]
struct AckSignal {
    planned: Vec<bool>,
    written: Vec<usize>,
}

impl OptionHook for AckSignal {
    fn reserve(&mut self, plan: &SegmentPlan) -> usize {
        self.planned.push(plan.has_payload);
        if plan.has_payload { 0 } else { 12 }
    }
    fn write_options(&mut self, seg: &OutSegment, space: &mut [u8]) -> usize {
        self.written.push(seg.payload_len);
        if seg.payload_len > 0 || space.len() < 12 {
            return 0;
        }
        space[0] = 30;
        space[1] = 12;
        space[2..12].fill(0xbb);
        12
    }
    fn on_segment(&mut self, _header: &SegmentHeader, _seg: &InSegment) {}
}

#[test]
fn a_signal_due_with_a_keepalive_probe_goes_on_the_pure_ack_not_on_the_probe() {
    // The MPTCP layer asks for an ACK to carry a signal (REMOVE_ADDR, MP_PRIO) while a liveness
    // probe is due. The probe (SEG.SEQ = SND.UNA - 1) is out of the peer's window on purpose,
    // so the peer answers it and drops it unprocessed (RFC 9293 §3.10.7.4): a signal on it
    // would be lost. The pure ACK goes first with the signal, then the probe.
    let (mut c, mut s) = handshake(Config::default(), Config::default());
    let mut hook = AckSignal::default();
    c.request_ack();
    c.send_probe();
    let segs = drain_with(&mut c, at(1), &mut hook);
    assert_eq!(segs.len(), 2, "the pure ACK, then the probe");
    let (ack, probe) = (&segs[0], &segs[1]);
    assert_eq!(ack.len(), 0);
    let raw = ack
        .hdr
        .options
        .mptcp
        .iter()
        .next()
        .expect("the hook's option on the ACK");
    assert_eq!(raw.len(), 12);
    // RFC 9293 §3.8.4: SEG.SEQ = SND.NXT - 1 with one garbage octet.
    assert_eq!(probe.len(), 1);
    assert_eq!(probe.hdr.seq.0, ack.hdr.seq.0.wrapping_sub(1));
    // Both planned and written as segments without stream data.
    assert_eq!(
        (hook.planned.as_slice(), hook.written.as_slice()),
        (&[false, false][..], &[0, 0][..])
    );
    // The peer: the ACK's options reach its hook, the probe's would not.
    let mut peer = FakeMptcp::default();
    s.handle_segment_with(at(2), &ack.hdr, &ack.payload, &mut peer);
    assert_eq!(peer.seen.len(), 1);
    s.handle_segment_with(at(2), &probe.hdr, &probe.payload, &mut peer);
    assert_eq!(
        peer.seen.len(),
        1,
        "a probe is dropped before its options are looked at"
    );
    // ... and answered at once.
    assert!(!drain(&mut s, at(2)).is_empty());
}
