//! Data level: DSS mappings and their checksum, the receive reassembly buffer and DATA_ACK, the
//! send buffer with reinjection and DATA_FIN — targeted cases from RFC 8684 §3.3 plus property
//! tests against a plain byte-stream model.

use mpbond::mptcp::mapping::*;
use mpbond::mptcp::recv::*;
use mpbond::mptcp::send::*;
use mpbond::mptcp::seq::{DataSeq, SubflowSeq};
use mpbond::wire::mptcp::{DsnField, DssMapping};
use proptest::prelude::*;

fn mapping(dsn: u64, ssn: u32, data_len: u16, data_fin: bool) -> Mapping {
    Mapping {
        dsn: DataSeq(dsn),
        subflow_seq: SubflowSeq(ssn),
        data_len,
        data_fin,
        checksum: None,
    }
}

fn with_checksum(mut m: Mapping, payload: &[u8]) -> Mapping {
    m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, payload));
    m
}

fn read_all(recv: &mut DataRecvBuffer) -> Vec<u8> {
    let mut out = vec![0u8; recv.readable()];
    let n = recv.read(&mut out);
    out.truncate(n);
    out
}

// ---- DSS checksum (§3.3.1 Figure 10), vectors computed by hand with Python:
// ---- ~ones_sum(struct.pack(">QIHH", dsn, ssn, len, 0) + payload) & 0xffff

#[test]
fn dss_checksum_vectors() {
    assert_eq!(
        dss_checksum(DataSeq(0x0102_0304_0506_0708), SubflowSeq(1), 5, b"hello"),
        0xac13
    );
    // A bare DATA_FIN: "The checksum in this case will only cover the pseudo-header" (§3.3.3).
    assert_eq!(
        dss_checksum(DataSeq(0xffff_ffff_ffff_fff0), SubflowSeq(0), 1, b""),
        0x000e
    );
}

#[test]
fn ones_complement_sum_is_independent_of_how_data_is_split() {
    let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
    let mut whole = OnesComplementSum::default();
    whole.add(&data);
    for split in [1usize, 2, 3, 7, 500, 1000] {
        let mut parts = OnesComplementSum::default();
        for chunk in data.chunks(split) {
            parts.add(chunk);
        }
        assert_eq!(parts.fold(), whole.fold(), "split {split}");
    }
}

#[test]
fn verify_accepts_both_ones_complement_zeros() {
    // If the sum is such that the checksum is 0x0000, 0xffff is the same value in ones'
    // complement; both must verify.
    let payload = b"mptcp!";
    let m = with_checksum(mapping(7, 1, 6, false), payload);
    assert!(verify_dss_checksum(&m, payload));
    let mut bad = m;
    bad.checksum = Some(m.checksum.unwrap() ^ 0x0100);
    assert!(!verify_dss_checksum(&bad, payload));
    assert!(!verify_dss_checksum(&m, b"mptcp?"));
}

// ---- Mapping conversions (§3.3.1, §3.1).

#[test]
fn mapping_from_32_bit_dss_is_expanded_against_rcv_nxt() {
    let dss = DssMapping {
        dsn: DsnField::Short(0x10),
        subflow_seq: 1000,
        data_len: 100,
        checksum: None,
    };
    let m = Mapping::from_dss(&dss, false, DataSeq(0x7_ffff_fff0));
    assert_eq!(m.dsn, DataSeq(0x8_0000_0010));
    assert_eq!(m.to_dss(false), dss);
    assert_eq!(m.to_dss(true).dsn, DsnField::Long(0x8_0000_0010));
}

#[test]
fn mapping_from_capable_data_starts_after_the_idsn() {
    let m = Mapping::from_capable_data(DataSeq(u64::MAX), 10, None);
    assert_eq!(m.dsn, DataSeq(0));
    assert_eq!(m.subflow_seq, SubflowSeq(1));
    assert_eq!(m.subflow_len(), 10);
}

// ---- Receive side: mappings on one subflow.

#[test]
fn data_fin_example_of_section_3_3_3() {
    // "a segment with a DSN value of 80 and a Data-Level Length of 11, with DATA_FIN set, would
    // map 10 octets from the subflow into data sequence space 80-89, and the DATA_FIN would be
    // DSN 90; therefore, this segment, including DATA_FIN, would be acknowledged with a DATA_ACK
    // of 91."
    let mut recv = DataRecvBuffer::new(DataSeq(80), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    let m = mapping(80, 1, 11, true);
    assert_eq!(m.subflow_len(), 10);
    assert_eq!(m.data_fin_dsn(), Some(DataSeq(90)));
    assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::Added));
    assert_eq!(sf.on_data(SubflowSeq(1), b"0123456789", &mut recv), Ok(10));
    assert_eq!(recv.data_ack(), DataSeq(91));
    assert!(recv.fin_received());
    assert_eq!(read_all(&mut recv), b"0123456789");
    assert!(recv.is_finished());
}

#[test]
fn bare_data_fin_has_subflow_seq_zero_and_length_one() {
    let mut recv = DataRecvBuffer::new(DataSeq(500), 100);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), true, 100);
    let m = with_checksum(mapping(500, 0, 1, true), b"");
    assert!(m.is_bare_data_fin());
    assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::DataFin));
    assert_eq!(recv.data_ack(), DataSeq(501));
    assert!(recv.is_finished());
}

#[test]
fn mapping_may_arrive_before_or_after_its_data() {
    let mut recv = DataRecvBuffer::new(DataSeq(1000), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    // Data first: held unmapped (§3.3.1 "MAY hold onto such unmapped data for a short while").
    assert_eq!(sf.on_data(SubflowSeq(1), b"abc", &mut recv), Ok(0));
    assert_eq!(sf.pending_bytes(), 3);
    assert_eq!(recv.data_ack(), DataSeq(1000), "unmapped data is not DATA_ACKed");
    sf.on_mapping(mapping(1000, 1, 6, false), &mut recv).unwrap();
    assert_eq!(recv.data_ack(), DataSeq(1003));
    assert_eq!(sf.on_data(SubflowSeq(4), b"def", &mut recv), Ok(3));
    assert_eq!(read_all(&mut recv), b"abcdef");
}

#[test]
fn duplicate_and_stale_mappings_are_harmless() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    let m = mapping(0, 1, 4, false);
    assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::Added));
    assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::Duplicate));
    sf.on_data(SubflowSeq(1), b"wxyz", &mut recv).unwrap();
    assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::Stale));
    // A subflow-level retransmission overlapping what was received is trimmed.
    assert_eq!(sf.on_data(SubflowSeq(3), b"yz", &mut recv), Ok(0));
    assert_eq!(read_all(&mut recv), b"wxyz");
}

#[test]
fn a_mapping_extended_by_the_data_fin_is_the_same_mapping() {
    // Linux adds the DATA_FIN to the mapping of its last data once the application closes
    // (Data-Level Length + 1, §3.3.3), so segments of that mapping sent before and after the
    // close carry both forms, in either order and on either subflow. Found against the kernel:
    // both subflows were reset as "changed mapping" after a completed transfer.
    let payload = b"0123456789";
    for checksums in [false, true] {
        for fin_first in [false, true] {
            let mut recv = DataRecvBuffer::new(DataSeq(80), 1000);
            let mut sf = SubflowReceiver::new(SubflowSeq(1), checksums, 1000);
            let mut plain = mapping(80, 1, 10, false);
            let mut fin = mapping(80, 1, 11, true);
            if checksums {
                plain = with_checksum(plain, payload);
                fin = with_checksum(fin, payload);
            }
            let (a, b) = if fin_first { (fin, plain) } else { (plain, fin) };
            let case = format!("checksums {checksums}, DATA_FIN form first {fin_first}");
            assert_eq!(sf.on_mapping(a, &mut recv), Ok(MappingOutcome::Added), "{case}");
            assert_eq!(
                sf.on_data(SubflowSeq(1), &payload[..4], &mut recv).map(|_| ()),
                Ok(()),
                "{case}"
            );
            assert_eq!(
                sf.on_mapping(b, &mut recv),
                Ok(MappingOutcome::Duplicate),
                "{case}"
            );
            assert_eq!(
                sf.on_data(SubflowSeq(5), &payload[4..], &mut recv),
                Ok(if checksums { 10 } else { 6 }),
                "{case}"
            );
            assert_eq!(
                recv.data_ack(),
                DataSeq(91),
                "{case}: data and DATA_FIN acknowledged"
            );
            assert!(recv.fin_received(), "{case}");
            // Either form again, after everything was consumed, is stale and harmless.
            assert_eq!(
                sf.on_mapping(plain, &mut recv),
                Ok(MappingOutcome::Stale),
                "{case}"
            );
            assert_eq!(sf.on_mapping(fin, &mut recv), Ok(MappingOutcome::Stale), "{case}");
            assert_eq!(read_all(&mut recv), payload, "{case}");
            assert!(recv.is_finished(), "{case}");
        }
    }
}

#[test]
fn a_data_fin_on_an_overlapping_mapping_is_not_lost() {
    // Without checksums, mappings that overlap with the same offsets are consistent; the octets
    // may all go up under the first one, and the DATA_FIN carried by the second still counts.
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    sf.on_mapping(mapping(0, 1, 10, false), &mut recv).unwrap();
    sf.on_mapping(mapping(5, 6, 6, true), &mut recv).unwrap();
    assert_eq!(sf.on_data(SubflowSeq(1), b"0123456789", &mut recv), Ok(10));
    assert_eq!(recv.data_ack(), DataSeq(11));
    assert!(recv.fin_received());
}

#[test]
fn a_changed_mapping_is_a_protocol_violation() {
    // §3.3.1: "A sender MUST NOT change this mapping after it has been declared".
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    let first = mapping(0, 1, 100, false);
    sf.on_mapping(first, &mut recv).unwrap();
    let moved = mapping(5000, 50, 100, false);
    let err = sf.on_mapping(moved, &mut recv).unwrap_err();
    assert_eq!(
        err,
        MappingError::Changed {
            old: first,
            new: moved
        }
    );
    assert_eq!(err.fault(), Fault::PeerMisbehaved);
    // An overlapping mapping with the same DSN/subflow offset is consistent (no checksums).
    assert_eq!(
        sf.on_mapping(mapping(49, 50, 100, false), &mut recv),
        Ok(MappingOutcome::Added)
    );
}

#[test]
fn with_checksums_any_overlap_that_is_not_identical_is_refused() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), true, 1000);
    let a = with_checksum(mapping(0, 1, 10, false), b"0123456789");
    sf.on_mapping(a, &mut recv).unwrap();
    let b = with_checksum(mapping(4, 5, 10, false), b"456789abcd");
    assert!(matches!(
        sf.on_mapping(b, &mut recv),
        Err(MappingError::Changed { .. })
    ));
}

#[test]
fn checksum_presence_must_match_the_negotiation() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut with = SubflowReceiver::new(SubflowSeq(1), true, 1000);
    let e = with.on_mapping(mapping(0, 1, 4, false), &mut recv).unwrap_err();
    assert_eq!(e, MappingError::MissingChecksum);
    assert_eq!(e.fault(), Fault::PeerMisbehaved);
    let mut without = SubflowReceiver::new(SubflowSeq(1), false, 1000);
    let e = without
        .on_mapping(with_checksum(mapping(0, 1, 4, false), b"abcd"), &mut recv)
        .unwrap_err();
    assert_eq!(e, MappingError::UnexpectedChecksum);
}

#[test]
fn checksum_waits_for_the_whole_mapping_then_verifies() {
    let payload = b"the quick brown fox";
    let mut recv = DataRecvBuffer::new(DataSeq(10), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), true, 1000);
    let m = with_checksum(mapping(10, 1, payload.len() as u16, false), payload);
    sf.on_mapping(m, &mut recv).unwrap();
    assert_eq!(sf.on_data(SubflowSeq(1), &payload[..7], &mut recv), Ok(0));
    assert_eq!(
        recv.data_ack(),
        DataSeq(10),
        "nothing passes before the checksum is checked"
    );
    assert_eq!(
        sf.on_data(SubflowSeq(8), &payload[7..], &mut recv),
        Ok(payload.len())
    );
    assert_eq!(read_all(&mut recv), payload);
}

#[test]
fn checksum_failure_reports_the_dsn_for_mp_fail_and_delivers_nothing() {
    let payload = b"0123456789";
    let mut recv = DataRecvBuffer::new(DataSeq(77), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), true, 1000);
    sf.on_mapping(with_checksum(mapping(77, 1, 10, false), payload), &mut recv)
        .unwrap();
    let err = sf.on_data(SubflowSeq(1), b"0123456780", &mut recv).unwrap_err();
    assert_eq!(err, MappingError::ChecksumFailed { dsn: DataSeq(77) });
    assert_eq!(err.fault(), Fault::PathIncompatible);
    assert_eq!(recv.readable(), 0);
    assert_eq!(
        recv.data_ack(),
        DataSeq(77),
        "failed data MUST NOT be DATA_ACKed (§3.7)"
    );
}

#[test]
fn unmapped_data_beyond_the_limit_breaks_the_subflow() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 8);
    assert_eq!(sf.on_data(SubflowSeq(1), &[0; 8], &mut recv), Ok(0));
    let e = sf.on_data(SubflowSeq(9), &[0; 1], &mut recv).unwrap_err();
    assert_eq!(e, MappingError::Unmapped { bytes: 9 });
    assert_eq!(e.fault(), Fault::PathIncompatible);
}

#[test]
fn data_past_a_gap_is_a_caller_error() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 100);
    let e = sf.on_data(SubflowSeq(5), b"x", &mut recv).unwrap_err();
    assert_eq!(
        e,
        MappingError::NotInOrder {
            expected: SubflowSeq(1),
            got: SubflowSeq(5)
        }
    );
    assert_eq!(e.fault(), Fault::Local);
}

#[test]
fn infinite_mapping_maps_the_rest_of_the_subflow() {
    // §3.7: fallback with Data-Level Length 0, retroactive to the last intact segment.
    let mut recv = DataRecvBuffer::new(DataSeq(1000), 100_000);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 100);
    sf.on_mapping(mapping(1000, 1, 5, false), &mut recv).unwrap();
    sf.on_data(SubflowSeq(1), b"hello world", &mut recv).unwrap();
    assert_eq!(sf.pending_bytes(), 6);
    assert_eq!(
        sf.on_mapping(mapping(1005, 6, 0, false), &mut recv),
        Ok(MappingOutcome::Infinite)
    );
    assert!(sf.is_infinite());
    sf.on_data(SubflowSeq(12), &[b'!'; 500], &mut recv).unwrap();
    let got = read_all(&mut recv);
    assert_eq!(&got[..11], b"hello world");
    assert_eq!(got.len(), 511);
    // §3.7: no reverting to MPTCP afterwards.
    assert_eq!(
        sf.on_mapping(mapping(1, 2000, 5, false), &mut recv),
        Ok(MappingOutcome::Stale)
    );
}

#[test]
fn too_many_pending_mappings_are_refused() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 1 << 20);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 100);
    for i in 0..SubflowReceiver::MAX_MAPPINGS as u32 {
        sf.on_mapping(mapping(u64::from(i) * 10, 1 + i * 10, 10, false), &mut recv)
            .unwrap();
    }
    let e = sf.on_mapping(mapping(1 << 30, 1 << 20, 10, false), &mut recv);
    assert_eq!(e, Err(MappingError::TooManyMappings));
}

#[test]
fn a_window_of_per_segment_mappings_is_held() {
    // 4 MB window, one mapping per 1,400-byte segment, the first segment lost: ~3,000 mappings
    // wait for it (Linux without TSO; RFC 9293 §3.10.7.4 keeps in-window segments).
    let mut recv = DataRecvBuffer::new(DataSeq(0), 8 << 20);
    let mut sf = SubflowReceiver::new(SubflowSeq(1), false, 4 << 20);
    let n = (4 << 20) / 1400;
    for i in 1..n as u32 {
        sf.on_mapping(mapping(u64::from(i) * 1400, 1 + i * 1400, 1400, false), &mut recv)
            .unwrap();
    }
    assert!(n > SubflowReceiver::MAX_MAPPINGS);
}

// ---- Receive buffer.

#[test]
fn reassembly_out_of_order_with_overlaps() {
    let base = DataSeq(u64::MAX - 3); // the stream wraps the 64-bit space
    let mut recv = DataRecvBuffer::new(base, 100);
    let r = recv.insert(base.wrapping_add(6), b"ghij");
    assert_eq!((r.new_bytes, r.duplicate_bytes), (4, 0));
    assert_eq!(recv.data_ack(), base);
    let r = recv.insert(base.wrapping_add(4), b"efghi");
    assert_eq!((r.new_bytes, r.duplicate_bytes), (2, 3));
    assert_eq!(recv.out_of_order_bytes(), 6);
    let r = recv.insert(base, b"abcdefg");
    assert_eq!((r.new_bytes, r.duplicate_bytes), (4, 3));
    assert_eq!(recv.data_ack(), base.wrapping_add(10));
    assert_eq!(recv.out_of_order_bytes(), 0);
    let r = recv.insert(base.wrapping_add(2), b"cd");
    assert_eq!((r.new_bytes, r.duplicate_bytes), (0, 2));
    assert_eq!(read_all(&mut recv), b"abcdefghij");
}

#[test]
fn window_bounds_what_is_stored() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 10);
    assert_eq!(recv.window(), 10);
    let r = recv.insert(DataSeq(0), b"0123456789abc");
    assert_eq!((r.new_bytes, r.dropped_bytes), (10, 3));
    assert_eq!(recv.window(), 0);
    let r = recv.insert(DataSeq(10), b"abc");
    assert_eq!(r.dropped_bytes, 3);
    let mut buf = [0u8; 4];
    assert_eq!(recv.read(&mut buf), 4);
    assert_eq!(recv.window(), 4);
    // Out of order inside the window is kept, past it dropped.
    let r = recv.insert(DataSeq(12), b"cdefgh");
    assert_eq!((r.new_bytes, r.dropped_bytes), (2, 4));
}

#[test]
fn data_fin_conflicts_are_refused() {
    let mut recv = DataRecvBuffer::new(DataSeq(0), 100);
    recv.insert(DataSeq(0), b"abc");
    assert_eq!(
        recv.insert_data_fin(DataSeq(1)),
        Err(DataFinError::BeforeReceivedData {
            fin: DataSeq(1),
            received: DataSeq(3)
        })
    );
    recv.insert(DataSeq(10), b"x");
    assert!(matches!(
        recv.insert_data_fin(DataSeq(5)),
        Err(DataFinError::Conflict { .. })
    ));
    assert_eq!(recv.insert_data_fin(DataSeq(11)), Ok(()));
    assert_eq!(recv.insert_data_fin(DataSeq(11)), Ok(()));
    assert!(matches!(
        recv.insert_data_fin(DataSeq(12)),
        Err(DataFinError::Conflict { .. })
    ));
    // Nothing past the DATA_FIN is stored.
    assert_eq!(recv.insert(DataSeq(11), b"zz").dropped_bytes, 2);
    assert!(!recv.fin_received());
    recv.insert(DataSeq(3), b"defghij");
    assert!(recv.fin_received());
    assert_eq!(recv.data_ack(), DataSeq(12));
}

// ---- Send buffer.

#[test]
fn send_chunks_ack_and_data_fin() {
    let base = DataSeq(1 << 40);
    let mut snd = DataSendBuffer::new(base, 100);
    assert_eq!(snd.write(&[7u8; 150]), Ok(100));
    assert_eq!(snd.free_space(), 0);
    let a = snd.next_chunk(SubflowId(0), 60).unwrap();
    assert_eq!(
        (a.dsn, a.len, a.data_fin, a.reinjection),
        (base, 60, false, false)
    );
    let b = snd.next_chunk(SubflowId(1), 60).unwrap();
    assert_eq!((b.dsn, b.len), (base.wrapping_add(60), 40));
    assert_eq!(snd.next_chunk(SubflowId(0), 60), None);
    let r = snd.on_data_ack(base.wrapping_add(60), 1000).unwrap();
    assert_eq!(r.freed, 60);
    assert_eq!(snd.free_space(), 60);
    snd.close();
    assert_eq!(snd.write(b"x"), Err(WriteError::Closed));
    // All data sent: the DATA_FIN goes alone, subflow seq 0 and Data-Level Length 1 (§3.3.3).
    let fin = snd.next_chunk(SubflowId(0), 60).unwrap();
    assert_eq!(
        (fin.dsn, fin.len, fin.data_fin),
        (base.wrapping_add(100), 0, true)
    );
    let m = fin.mapping(SubflowSeq(999));
    assert_eq!((m.subflow_seq, m.data_len), (SubflowSeq(0), 1));
    assert!(m.is_bare_data_fin());
    assert_eq!(
        snd.on_data_ack(base.wrapping_add(102), 1000),
        Err(DataAckError::BeyondSent {
            ack: base.wrapping_add(102),
            snd_nxt: base.wrapping_add(101)
        })
    );
    let r = snd.on_data_ack(base.wrapping_add(101), 1000).unwrap();
    assert_eq!((r.freed, r.fin_acked), (40, true));
    assert!(snd.fin_acked());
    assert_eq!(snd.in_flight(), 0);
}

#[test]
fn data_fin_rides_on_the_last_data_chunk() {
    let mut snd = DataSendBuffer::new(DataSeq(0), 100);
    snd.write(b"bye").unwrap();
    snd.close();
    let c = snd.next_chunk(SubflowId(0), 1000).unwrap();
    assert_eq!((c.len, c.data_fin, c.data_level_len()), (3, true, 4));
    let m = c.mapping(SubflowSeq(1));
    assert_eq!(
        (m.data_len, m.subflow_len(), m.data_fin_dsn()),
        (4, 3, Some(DataSeq(3)))
    );
    assert_eq!(snd.next_chunk(SubflowId(0), 1000), None);
}

#[test]
fn failed_subflow_data_is_reinjected_elsewhere() {
    let mut snd = DataSendBuffer::new(DataSeq(0), 1000);
    snd.write(&(0..=255u8).cycle().take(300).collect::<Vec<_>>())
        .unwrap();
    let a = snd.next_chunk(SubflowId(1), 100).unwrap(); // [0,100) on 1
    let _b = snd.next_chunk(SubflowId(2), 100).unwrap(); // [100,200) on 2
    let _c = snd.next_chunk(SubflowId(1), 100).unwrap(); // [200,300) on 1
    snd.on_data_ack(DataSeq(50), 1000).unwrap();
    // Subflow 1 dies: [50,100) and [200,300) become eligible again; [0,50) is DATA_ACKed.
    assert_eq!(snd.mark_subflow_failed(SubflowId(1)), 150);
    assert_eq!(snd.reinject_pending(), 150);
    let r1 = snd.next_chunk(SubflowId(2), 1000).unwrap();
    assert_eq!((r1.dsn, r1.len, r1.reinjection), (DataSeq(50), 50, true));
    let r2 = snd.next_chunk(SubflowId(2), 30).unwrap();
    assert_eq!((r2.dsn, r2.len), (DataSeq(200), 30));
    let mut buf = [0u8; 30];
    assert_eq!(snd.copy_out(r2.dsn, &mut buf), 30);
    assert_eq!(buf[0], 200);
    assert_eq!(snd.reinject_pending(), 70);
    // A DATA_ACK covering part of the reinjection queue trims it.
    snd.on_data_ack(DataSeq(250), 1000).unwrap();
    assert_eq!(snd.reinject_pending(), 50);
    assert_eq!(snd.mark_subflow_failed(SubflowId(7)), 0);
    let _ = a;
}

#[test]
fn peer_window_limits_new_data() {
    let mut snd = DataSendBuffer::new(DataSeq(0), 1000);
    snd.write(&[1; 500]).unwrap();
    snd.next_chunk(SubflowId(0), 10).unwrap();
    snd.on_data_ack(DataSeq(10), 20).unwrap();
    let c = snd.next_chunk(SubflowId(0), 1000).unwrap();
    assert_eq!((c.dsn, c.len), (DataSeq(10), 20));
    assert_eq!(snd.next_chunk(SubflowId(0), 1000), None);
    assert!(!snd.has_pending());
    // An old (reordered) DATA_ACK changes nothing.
    assert_eq!(snd.on_data_ack(DataSeq(5), 5000).unwrap().freed, 0);
    assert_eq!(snd.next_chunk(SubflowId(0), 1000), None);
}

#[test]
fn copy_out_across_the_ring_boundary() {
    let mut snd = DataSendBuffer::new(DataSeq(0), 8);
    snd.write(b"abcdefgh").unwrap();
    snd.next_chunk(SubflowId(0), 8).unwrap();
    snd.on_data_ack(DataSeq(6), 100).unwrap();
    snd.write(b"ijklmn").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(snd.copy_out(DataSeq(6), &mut buf), 8);
    assert_eq!(&buf, b"ghijklmn");
    assert_eq!(snd.copy_out(DataSeq(2), &mut buf), 0, "freed data");
    assert_eq!(snd.copy_out(DataSeq(14), &mut buf), 0, "never written");
}

// ---- Property: receive side against a byte-stream model.

#[derive(Debug, Clone)]
struct RecvCase {
    stream: Vec<u8>,
    base: u64,
    capacity: usize,
    checksums: bool,
    subflows: usize,
    /// Mapping sizes (the stream is cut into consecutive pieces of these sizes).
    cuts: Vec<usize>,
    /// Random choices driving assignment, retransmission, segmentation and interleaving.
    choices: Vec<u32>,
}

fn recv_case() -> impl Strategy<Value = RecvCase> {
    (
        proptest::collection::vec(any::<u8>(), 1..3000),
        prop_oneof![any::<u64>(), Just(u64::MAX - 100), Just(0xffff_ff00)],
        64usize..4096,
        any::<bool>(),
        1usize..4,
        proptest::collection::vec(1usize..400, 1..64),
        proptest::collection::vec(any::<u32>(), 64..512),
    )
        .prop_map(
            |(stream, base, capacity, checksums, subflows, cuts, choices)| RecvCase {
                stream,
                base,
                capacity,
                checksums,
                subflows,
                cuts,
                choices,
            },
        )
}

struct Choices<'a> {
    v: &'a [u32],
    i: usize,
}

impl Choices<'_> {
    fn next(&mut self, n: u32) -> u32 {
        let x = self.v[self.i % self.v.len()].rotate_left((self.i / self.v.len()) as u32 * 7);
        self.i += 1;
        x % n.max(1)
    }
}

/// One subflow of the model: mapped pieces queued in subflow order.
struct ModelSubflow {
    rx: SubflowReceiver,
    next_ssn: u32,
    /// (mapping, payload) in subflow order, not yet fully delivered.
    queue: std::collections::VecDeque<(Mapping, Vec<u8>, usize)>,
    /// Segments already delivered (seq, bytes) for subflow-level duplicates.
    history: Vec<(SubflowSeq, Vec<u8>)>,
}

fn make_mapping(dsn: DataSeq, ssn: u32, payload: &[u8], fin: bool, checksums: bool) -> Mapping {
    let mut m = Mapping {
        dsn,
        subflow_seq: SubflowSeq(if payload.is_empty() { 0 } else { ssn }),
        data_len: (payload.len() + usize::from(fin)) as u16,
        data_fin: fin,
        checksum: None,
    };
    if checksums {
        m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, payload));
    }
    m
}

fn run_recv_case(case: &RecvCase) -> Result<(), TestCaseError> {
    let base = DataSeq(case.base);
    let total = case.stream.len();
    let mut ch = Choices {
        v: &case.choices,
        i: 0,
    };
    let mut recv = DataRecvBuffer::new(base, case.capacity);
    let mut subflows: Vec<ModelSubflow> = (0..case.subflows)
        .map(|_| ModelSubflow {
            rx: SubflowReceiver::new(SubflowSeq(1), case.checksums, 1 << 20),
            next_ssn: 1,
            queue: Default::default(),
            history: Vec::new(),
        })
        .collect();
    let queue_piece = |sfs: &mut Vec<ModelSubflow>, sf: usize, start: usize, end: usize, fin: bool| {
        let s = &mut sfs[sf];
        let payload = case.stream[start..end].to_vec();
        let m = make_mapping(
            base.wrapping_add(start as u64),
            s.next_ssn,
            &payload,
            fin,
            case.checksums,
        );
        s.next_ssn += payload.len() as u32;
        s.queue.push_back((m, payload, 0));
    };

    // Cut the stream into mappings, assign each to a subflow, and sometimes send (part of) it
    // again on another subflow (a data-level retransmission / reinjection).
    let mut pos = 0;
    let mut cut_i = 0;
    while pos < total {
        let len = case.cuts[cut_i % case.cuts.len()].min(total - pos);
        cut_i += 1;
        let fin = pos + len == total && ch.next(2) == 0;
        let sf = ch.next(case.subflows as u32) as usize;
        queue_piece(&mut subflows, sf, pos, pos + len, fin);
        if ch.next(4) == 0 {
            let a = pos + ch.next(len as u32) as usize;
            let b = a + 1 + ch.next((pos + len - a) as u32) as usize;
            let other = ch.next(case.subflows as u32) as usize;
            queue_piece(&mut subflows, other, a, b.min(pos + len), false);
        }
        pos += len;
    }
    // If the DATA_FIN did not ride on the last mapping, send it bare on some subflow.
    let fin_on_data = subflows
        .iter()
        .any(|s| s.queue.iter().any(|(m, _, _)| m.data_fin));
    let mut bare_fin = (!fin_on_data).then(|| ch.next(case.subflows as u32) as usize);

    // Which stream offsets have reached a receiver (for the DATA_ACK upper bound).
    let mut arrived = vec![false; total];
    let mut fin_arrived = false;
    let mut delivered: Vec<u8> = Vec::new();
    let mut last_ack = recv.data_ack();

    let mut check = |recv: &mut DataRecvBuffer,
                     delivered: &mut Vec<u8>,
                     arrived: &[bool],
                     fin_arrived: bool,
                     ch: &mut Choices|
     -> Result<(), TestCaseError> {
        // Sometimes the application reads.
        if ch.next(3) == 0 {
            let mut buf = vec![0u8; 1 + ch.next(700) as usize];
            let n = recv.read(&mut buf);
            delivered.extend_from_slice(&buf[..n]);
        }
        prop_assert!(
            delivered[..] == case.stream[..delivered.len()],
            "delivered bytes differ"
        );
        let ack = recv.data_ack();
        let acked = ack.offset_from(base) as usize;
        let prefix = arrived.iter().position(|a| !a).unwrap_or(total);
        let bound = prefix + usize::from(prefix == total && fin_arrived);
        prop_assert!(
            acked <= bound,
            "DATA_ACK {} beyond contiguous arrivals {}",
            acked,
            bound
        );
        prop_assert!(!ack.is_before(last_ack), "DATA_ACK went backwards");
        prop_assert_eq!(
            acked,
            delivered.len() + recv.readable() + usize::from(recv.fin_received())
        );
        prop_assert_eq!(recv.readable() + recv.window() as usize, case.capacity);
        last_ack = ack;
        Ok(())
    };

    // Interleave segment deliveries across subflows.
    loop {
        let live: Vec<usize> = (0..subflows.len())
            .filter(|&i| !subflows[i].queue.is_empty())
            .collect();
        if live.is_empty() && bare_fin.is_none() {
            break;
        }
        if let Some(sf) = bare_fin
            && (live.is_empty() || ch.next(8) == 0)
        {
            let m = make_mapping(base.wrapping_add(total as u64), 0, &[], true, case.checksums);
            let out = subflows[sf].rx.on_mapping(m, &mut recv);
            prop_assert_eq!(out, Ok(MappingOutcome::DataFin));
            fin_arrived = true;
            bare_fin = None;
            check(&mut recv, &mut delivered, &arrived, fin_arrived, &mut ch)?;
            continue;
        }
        let sf = live[ch.next(live.len() as u32) as usize];
        let s = &mut subflows[sf];
        // Sometimes a subflow-level duplicate of an earlier segment.
        if !s.history.is_empty() && ch.next(6) == 0 {
            let (seq, bytes) = s.history[ch.next(s.history.len() as u32) as usize].clone();
            let r = s.rx.on_data(seq, &bytes, &mut recv);
            prop_assert_eq!(r, Ok(0));
        }
        let Some((m, payload, sent)) = s.queue.front_mut() else {
            unreachable!()
        };
        let m = *m;
        let seg = (1 + ch.next(200) as usize).min(payload.len() - *sent);
        let first = *sent == 0;
        let seq = SubflowSeq(m.subflow_seq.0 + *sent as u32);
        let bytes = payload[*sent..*sent + seg].to_vec();
        *sent += seg;
        let done = *sent == payload.len();
        // The mapping rides on its first segment, and on later ones now and then.
        if first || ch.next(3) == 0 {
            let out = s.rx.on_mapping(m, &mut recv);
            prop_assert!(out.is_ok(), "{:?}", out);
        }
        let r = s.rx.on_data(seq, &bytes, &mut recv);
        prop_assert!(r.is_ok(), "{:?}", r);
        let start = m.dsn.offset_from(base) as usize + (seq.0 - m.subflow_seq.0) as usize;
        for a in &mut arrived[start..start + seg] {
            *a = true;
        }
        if m.data_fin && done {
            fin_arrived = true;
        }
        s.history.push((seq, bytes));
        if done {
            s.queue.pop_front();
        }
        check(&mut recv, &mut delivered, &arrived, fin_arrived, &mut ch)?;
    }

    // Whatever the bounded window dropped is retransmitted at the data level, as a sender would
    // after its data-level timeout, on subflow 0, until everything is through.
    for _round in 0..10_000 {
        let mut buf = vec![0u8; case.capacity];
        let n = recv.read(&mut buf);
        delivered.extend_from_slice(&buf[..n]);
        if recv.is_finished() {
            break;
        }
        let from = recv.data_ack().offset_from(base) as usize;
        let len = (total - from).min(recv.window() as usize).min(1000);
        let s = &mut subflows[0];
        let payload = case.stream[from..from + len].to_vec();
        let fin = from + len == total;
        let m = make_mapping(
            base.wrapping_add(from as u64),
            s.next_ssn,
            &payload,
            fin,
            case.checksums,
        );
        let seq = SubflowSeq(s.next_ssn);
        s.next_ssn += len as u32;
        let out = s.rx.on_mapping(m, &mut recv);
        prop_assert!(out.is_ok(), "{:?}", out);
        if !payload.is_empty() {
            let r = s.rx.on_data(seq, &payload, &mut recv);
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }
    prop_assert!(
        delivered == case.stream,
        "delivered {} of {} bytes, first difference at {:?}",
        delivered.len(),
        case.stream.len(),
        delivered.iter().zip(&case.stream).position(|(a, b)| a != b)
    );
    prop_assert!(recv.is_finished());
    prop_assert_eq!(recv.data_ack(), base.wrapping_add(total as u64 + 1));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("MPBOND_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
    ))]

    #[test]
    fn reassembly_and_data_ack_match_a_byte_stream_model(case in recv_case()) {
        run_recv_case(&case)?;
    }

    #[test]
    fn end_to_end_with_subflow_failures_and_reinjection(case in e2e_case()) {
        run_e2e_case(&case)?;
    }
}

// ---- Property: sender → subflows (some fail) → receiver, 32-bit DSNs on the wire.

#[derive(Debug, Clone)]
struct E2eCase {
    stream: Vec<u8>,
    base: u64,
    snd_capacity: usize,
    rcv_capacity: usize,
    checksums: bool,
    choices: Vec<u32>,
}

fn e2e_case() -> impl Strategy<Value = E2eCase> {
    (
        proptest::collection::vec(any::<u8>(), 0..6000),
        prop_oneof![any::<u64>(), Just(0xffff_fff0), Just(u64::MAX - 10)],
        16usize..3000,
        16usize..3000,
        any::<bool>(),
        proptest::collection::vec(any::<u32>(), 64..512),
    )
        .prop_map(
            |(stream, base, snd_capacity, rcv_capacity, checksums, choices)| E2eCase {
                stream,
                base,
                snd_capacity,
                rcv_capacity,
                checksums,
                choices,
            },
        )
}

struct Path {
    id: SubflowId,
    alive: bool,
    next_ssn: u32,
    /// Segments in flight in subflow order: (mapping on the wire, payload).
    in_flight: std::collections::VecDeque<(DssMapping, bool, SubflowSeq, Vec<u8>)>,
    rx: SubflowReceiver,
}

fn run_e2e_case(case: &E2eCase) -> Result<(), TestCaseError> {
    let base = DataSeq(case.base);
    let mut ch = Choices {
        v: &case.choices,
        i: 0,
    };
    let mut snd = DataSendBuffer::new(base, case.snd_capacity);
    let mut recv = DataRecvBuffer::new(base, case.rcv_capacity);
    let mut paths: Vec<Path> = Vec::new();
    let new_path = |paths: &mut Vec<Path>| {
        let id = SubflowId(paths.len() as u32);
        paths.push(Path {
            id,
            alive: true,
            next_ssn: 1,
            in_flight: Default::default(),
            rx: SubflowReceiver::new(SubflowSeq(1), case.checksums, 1 << 20),
        });
    };
    new_path(&mut paths);
    new_path(&mut paths);
    let mut written = 0usize;
    let mut delivered = Vec::new();
    let mut failures = 0;
    let mut steps = 0;
    for _ in 0..200_000 {
        if recv.is_finished() && snd.fin_acked() {
            break;
        }
        steps += 1;
        match ch.next(10) {
            // The application writes; closes at the end.
            0 | 1 => {
                if written < case.stream.len() {
                    let want = (1 + ch.next(800) as usize).min(case.stream.len() - written);
                    written += snd
                        .write(&case.stream[written..written + want])
                        .expect("not closed");
                } else {
                    snd.close();
                }
            }
            // The scheduler sends a chunk on a random live path.
            2..=4 => {
                let live: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].alive).collect();
                let p = &mut paths[live[ch.next(live.len() as u32) as usize]];
                if let Some(c) = snd.next_chunk(p.id, 1 + ch.next(600) as usize) {
                    let mut payload = vec![0u8; c.len];
                    prop_assert_eq!(snd.copy_out(c.dsn, &mut payload), c.len);
                    let seq = SubflowSeq(p.next_ssn);
                    let mut m = c.mapping(seq);
                    if case.checksums {
                        m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, &payload));
                    }
                    p.next_ssn += c.len as u32;
                    // 32-bit DSN on the wire.
                    p.in_flight.push_back((m.to_dss(false), m.data_fin, seq, payload));
                }
            }
            // A path delivers its oldest segment, and the receiver's DATA_ACK comes back.
            5..=7 => {
                let n_paths = paths.len() as u32;
                let p = &mut paths[ch.next(n_paths) as usize];
                if !p.alive {
                    continue;
                }
                if let Some((dss, fin, seq, payload)) = p.in_flight.pop_front() {
                    let m = Mapping::from_dss(&dss, fin, recv.rcv_nxt());
                    let out = p.rx.on_mapping(m, &mut recv);
                    prop_assert!(out.is_ok(), "{:?}", out);
                    if !payload.is_empty() {
                        let r = p.rx.on_data(seq, &payload, &mut recv);
                        prop_assert!(r.is_ok(), "{:?}", r);
                    }
                    // DATA_ACK in its 4-byte form, expanded against snd_una.
                    let ack = DataSeq::from_low32(recv.data_ack().low32(), snd.snd_una());
                    let r = snd.on_data_ack(ack, recv.window());
                    prop_assert!(r.is_ok(), "{:?}", r);
                }
            }
            // The application reads.
            8 => {
                let mut buf = vec![0u8; 1 + ch.next(1500) as usize];
                let n = recv.read(&mut buf);
                delivered.extend_from_slice(&buf[..n]);
                prop_assert!(
                    delivered[..] == case.stream[..delivered.len()],
                    "delivered bytes differ"
                );
                // The receiver's window opened: a window update (a pure ACK with DATA_ACK).
                let ack = DataSeq::from_low32(recv.data_ack().low32(), snd.snd_una());
                let r = snd.on_data_ack(ack, recv.window());
                prop_assert!(r.is_ok(), "{:?}", r);
            }
            // A path fails (its in-flight segments are lost) and a new one replaces it; or, when
            // nothing moves, a data-level timeout reinjects what a path holds.
            _ => {
                if ch.next(4) == 0 && failures < 6 {
                    let live: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].alive).collect();
                    let i = live[ch.next(live.len() as u32) as usize];
                    paths[i].alive = false;
                    paths[i].in_flight.clear();
                    snd.mark_subflow_failed(paths[i].id);
                    failures += 1;
                    new_path(&mut paths);
                } else if ch.next(8) == 0 {
                    // The window filled with data the receiver dropped: a data-level
                    // retransmission timeout reinjects a live path's unacked data.
                    let live: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].alive).collect();
                    let i = live[ch.next(live.len() as u32) as usize];
                    if paths[i].in_flight.is_empty() {
                        snd.mark_subflow_failed(paths[i].id);
                    }
                }
            }
        }
    }
    let mut buf = vec![0u8; case.rcv_capacity];
    loop {
        let n = recv.read(&mut buf);
        if n == 0 {
            break;
        }
        delivered.extend_from_slice(&buf[..n]);
    }
    prop_assert!(
        delivered == case.stream,
        "delivered {} of {} bytes, first difference at {:?}; data_ack {:?} snd_una {:?} snd_nxt {:?} \
         reinject {} fin_acked {} recv finished {} written {} steps {}",
        delivered.len(),
        case.stream.len(),
        delivered.iter().zip(&case.stream).position(|(a, b)| a != b),
        recv.data_ack(),
        snd.snd_una(),
        snd.snd_nxt(),
        snd.reinject_pending(),
        snd.fin_acked(),
        recv.is_finished(),
        written,
        steps
    );
    prop_assert!(recv.is_finished());
    prop_assert!(snd.fin_acked());
    prop_assert_eq!(snd.buffered(), 0);
    Ok(())
}

// ---- Building and expanding DSS options.

#[test]
fn outgoing_dss_uses_64_bit_fields_and_round_trips() {
    use mpbond::wire::mptcp::{Dss, MptcpOption};
    let payload = b"abcdef";
    let m = with_checksum(mapping(u64::MAX - 2, 1, 7, true), payload);
    let opt = dss_option(Some(DataSeq(0x1_0000_0005)), Some(&m));
    assert_eq!(opt.len(), 28);
    let mut buf = [0u8; 40];
    let n = opt.write(&mut buf).unwrap();
    let MptcpOption::Dss(parsed) = MptcpOption::parse(&buf[..n]).unwrap() else {
        panic!()
    };
    let got = ReceivedDss::expand(&parsed, DataSeq(0), DataSeq(0));
    assert_eq!(got.data_ack, Some(DataSeq(0x1_0000_0005)));
    assert_eq!(got.mapping, Some(m));
    assert!(verify_dss_checksum(&got.mapping.unwrap(), payload));
    // A pure DATA_ACK: 4 + 8 = 12 octets.
    assert_eq!(dss_option(Some(DataSeq(1)), None).len(), 12);
    // 32-bit fields are expanded against the references; F alone carries nothing.
    let short = Dss {
        data_ack: Some(DsnField::Short(0x10)),
        mapping: None,
        data_fin: true,
    };
    let got = ReceivedDss::expand(&short, DataSeq(0x2_ffff_fff0), DataSeq(0));
    assert_eq!(got.data_ack, Some(DataSeq(0x3_0000_0010)));
    assert_eq!(got.mapping, None);
}

proptest! {
    /// Any single altered octet in a checksummed mapping is caught (a one-octet change moves the
    /// ones'-complement sum by a non-zero amount below 2^16 - 1), reported with the mapping's DSN
    /// for MP_FAIL, and none of the mapping reaches the application.
    #[test]
    fn altered_payload_is_caught_by_the_dss_checksum(
        payload in proptest::collection::vec(any::<u8>(), 1..2000),
        dsn in any::<u64>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        seg in 1usize..700,
    ) {
        let m = with_checksum(mapping(dsn, 1, payload.len() as u16, false), &payload);
        let mut altered = payload.clone();
        altered[at.index(payload.len())] ^= xor;
        let mut recv = DataRecvBuffer::new(DataSeq(dsn), 4096);
        let mut sf = SubflowReceiver::new(SubflowSeq(1), true, 4096);
        prop_assert_eq!(sf.on_mapping(m, &mut recv), Ok(MappingOutcome::Added));
        let mut result = Ok(0);
        for (i, chunk) in altered.chunks(seg).enumerate() {
            result = sf.on_data(SubflowSeq(1 + (i * seg) as u32), chunk, &mut recv);
            if result.is_err() {
                break;
            }
        }
        prop_assert_eq!(result, Err(MappingError::ChecksumFailed { dsn: DataSeq(dsn) }));
        prop_assert_eq!(recv.readable(), 0);
        prop_assert_eq!(recv.data_ack(), DataSeq(dsn));
    }
}

/// RFC 8684 §3.7: after fallback the infinite mapping maps the rest of the subflow linearly,
/// for good. Subflow sequence numbers are 32-bit: a subflow that carried more than 2 GiB since
/// the mapping must still place every octet (a 32-bit difference from the mapping's start once
/// made them look older than the mapping, and they were dropped after the subflow had
/// acknowledged them: a download through mpbond stalled at 2,147,483,648 bytes).
#[test]
fn an_infinite_mapping_places_octets_past_2_gib_of_subflow() {
    const CHUNK: usize = 1 << 20;
    let total: u64 = (1 << 31) + 3 * CHUNK as u64;
    let mut recv = DataRecvBuffer::new(DataSeq(1 << 40), 4 * CHUNK);
    // The subflow's relative sequence numbers start near the top of the space and wrap too.
    let first = SubflowSeq(u32::MAX - 1000);
    let mut sf = SubflowReceiver::new(first, false, 4 * CHUNK);
    let inf = Mapping {
        dsn: DataSeq(1 << 40),
        subflow_seq: first,
        data_len: 0,
        data_fin: false,
        checksum: None,
    };
    assert_eq!(sf.on_mapping(inf, &mut recv), Ok(MappingOutcome::Infinite));
    let mut chunk = vec![0u8; CHUNK];
    let mut out = vec![0u8; CHUNK];
    let (mut sent, mut got) = (0u64, 0u64);
    while sent < total {
        // Each chunk starts with its own index, so a misplaced one is seen.
        chunk[..8].copy_from_slice(&(sent / CHUNK as u64).to_le_bytes());
        let seq = first.wrapping_add(sent as u32);
        assert_eq!(sf.on_data(seq, &chunk, &mut recv), Ok(CHUNK), "at {sent}");
        sent += CHUNK as u64;
        let n = recv.read(&mut out);
        assert_eq!(n, CHUNK, "at {sent}: octets not placed");
        assert_eq!(out[..8], ((got / CHUNK as u64).to_le_bytes()), "at {got}");
        got += n as u64;
    }
    assert_eq!(got, total);
    assert_eq!(recv.data_ack(), DataSeq((1 << 40) + total));
}
