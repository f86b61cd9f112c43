//! MPTCP option codec: byte-exact vectors built by hand from the RFC 8684 figures, every
//! subtype at every length, every invalid length, and a round-trip property.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mpbond::wire::mptcp::*;
use proptest::prelude::*;

const KEY_A: u64 = 0x0123_4567_89ab_cdef;
const KEY_B: u64 = 0xfedc_ba98_7654_3210;
const KEY_A_BYTES: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
const KEY_B_BYTES: [u8; 8] = [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Parses `bytes`, checks the result, writes it back and checks the bytes are identical.
fn vector(bytes: &[u8], expected: MptcpOption) {
    let parsed = MptcpOption::parse(bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
    assert_eq!(parsed, expected, "parse {bytes:02x?}");
    assert_eq!(expected.len(), bytes.len());
    let mut out = [0xaa_u8; 64];
    let n = expected.write(&mut out).expect("write");
    assert_eq!(&out[..n], bytes, "write {expected:?}");
}

// ---- MP_CAPABLE, RFC 8684 §3.1 Figure 4: subtype 0 | version 1, flags A..H, keys, DLL, csum.

#[test]
fn mp_capable_syn_len4_figure4() {
    // SYN: "only the first 4 octets (Length = 4)"; A=1 (checksum required), H=1 (HMAC-SHA256).
    vector(
        &[30, 4, 0x01, 0x81],
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(CapableFlags::CHECKSUM_REQUIRED | CapableFlags::HMAC_SHA256),
            payload: CapablePayload::NoKeys,
        }),
    );
}

#[test]
fn mp_capable_synack_len12_figure4() {
    // SYN/ACK: "B's key for this connection (Length = 12)"; flags C and H.
    let bytes = cat(&[&[30, 12, 0x01, 0x21], &KEY_B_BYTES]);
    let expected = MptcpOption::MpCapable(MpCapable {
        version: 1,
        flags: CapableFlags(0x21),
        payload: CapablePayload::SenderKey { sender_key: KEY_B },
    });
    vector(&bytes, expected);
    let MptcpOption::MpCapable(c) = expected else {
        unreachable!()
    };
    assert!(c.flags.no_subflows_to_source() && c.flags.hmac_sha256());
    assert!(!c.flags.checksum_required() && !c.flags.extensibility());
}

#[test]
fn mp_capable_ack_len20_figure4() {
    // ACK (no data): "A's key followed by B's key (Length = 20)"; flag B (extensibility) set to
    // check it is carried.
    let bytes = cat(&[&[30, 20, 0x01, 0x41], &KEY_A_BYTES, &KEY_B_BYTES]);
    vector(
        &bytes,
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(0x41),
            payload: CapablePayload::BothKeys {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        }),
    );
}

#[test]
fn mp_capable_ack_with_data_len22_and_len24_figure4() {
    // ACK with data: "... Data-Level Length, and optional Checksum (Length = 22 or 24)".
    let bytes = cat(&[&[30, 22, 0x01, 0x01], &KEY_A_BYTES, &KEY_B_BYTES, &[0x05, 0xdc]]);
    vector(
        &bytes,
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(0x01),
            payload: CapablePayload::BothKeysWithData {
                sender_key: KEY_A,
                receiver_key: KEY_B,
                data_len: 1500,
                checksum: None,
            },
        }),
    );
    let bytes = cat(&[
        &[30, 24, 0x01, 0x81],
        &KEY_A_BYTES,
        &KEY_B_BYTES,
        &[0x00, 0x64, 0xbe, 0xef],
    ]);
    vector(
        &bytes,
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: CapableFlags(0x81),
            payload: CapablePayload::BothKeysWithData {
                sender_key: KEY_A,
                receiver_key: KEY_B,
                data_len: 100,
                checksum: Some(0xbeef),
            },
        }),
    );
}

#[test]
fn mp_capable_version_is_reported_not_rejected() {
    // A v0 peer's SYN carries its key at length 12; the codec reports version 0 and leaves the
    // decision (fall back, §3.1) to the connection.
    let bytes = cat(&[&[30, 12, 0x00, 0x81], &KEY_A_BYTES]);
    let MptcpOption::MpCapable(c) = MptcpOption::parse(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(c.version, 0);
}

// ---- MP_JOIN, §3.2 Figures 5, 6, 7.

#[test]
fn mp_join_syn_len12_figure5() {
    vector(
        &[30, 12, 0x11, 0x02, 0xde, 0xad, 0xbe, 0xef, 0x11, 0x22, 0x33, 0x44],
        MptcpOption::MpJoin(MpJoin::Syn {
            backup: true,
            addr_id: 2,
            receiver_token: 0xdead_beef,
            sender_nonce: 0x1122_3344,
        }),
    );
}

#[test]
fn mp_join_synack_len16_figure6() {
    vector(
        &cat(&[&[30, 16, 0x10, 0x00], &KEY_A_BYTES, &[0x55, 0x66, 0x77, 0x88]]),
        MptcpOption::MpJoin(MpJoin::SynAck {
            backup: false,
            addr_id: 0,
            truncated_hmac: KEY_A,
            sender_nonce: 0x5566_7788,
        }),
    );
}

#[test]
fn mp_join_ack_len24_figure7() {
    let hmac: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
    vector(
        &cat(&[&[30, 24, 0x10, 0x00], &hmac]),
        MptcpOption::MpJoin(MpJoin::Ack { hmac }),
    );
}

#[test]
fn mp_join_reserved_bits_are_ignored() {
    // Figure 5: "(rsv)" bits set by a sloppy sender; the B flag is still read.
    let opt = MptcpOption::parse(&[30, 12, 0x1f, 0x02, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
    assert_eq!(
        opt,
        MptcpOption::MpJoin(MpJoin::Syn {
            backup: true,
            addr_id: 2,
            receiver_token: 1,
            sender_nonce: 2
        })
    );
}

// ---- DSS, §3.3 Figure 9: flags "(reserved)|F|m|M|a|A".

fn dss(data_ack: Option<DsnField>, mapping: Option<DssMapping>, data_fin: bool) -> MptcpOption {
    MptcpOption::Dss(Dss {
        data_ack,
        mapping,
        data_fin,
    })
}

#[test]
fn dss_data_ack_only_4_and_8_octets() {
    vector(
        &[30, 8, 0x20, 0x01, 0, 0, 0x01, 0x00],
        dss(Some(DsnField::Short(256)), None, false),
    );
    vector(
        &cat(&[&[30, 12, 0x20, 0x03], &KEY_A_BYTES]),
        dss(Some(DsnField::Long(KEY_A)), None, false),
    );
}

#[test]
fn dss_mapping_only_every_dsn_width_with_and_without_checksum() {
    let map = |dsn, checksum| DssMapping {
        dsn,
        subflow_seq: 1,
        data_len: 0x05a0,
        checksum,
    };
    // M, 4-octet DSN: 4 + 4 + 4 + 2 = 14; + checksum = 16.
    vector(
        &[30, 14, 0x20, 0x04, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 1, 0x05, 0xa0],
        dss(None, Some(map(DsnField::Short(0xaabb_ccdd), None)), false),
    );
    vector(
        &[
            30, 16, 0x20, 0x04, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 1, 0x05, 0xa0, 0x12, 0x34,
        ],
        dss(None, Some(map(DsnField::Short(0xaabb_ccdd), Some(0x1234))), false),
    );
    // M+m, 8-octet DSN: 18; + checksum = 20.
    vector(
        &cat(&[&[30, 18, 0x20, 0x0c], &KEY_B_BYTES, &[0, 0, 0, 1, 0x05, 0xa0]]),
        dss(None, Some(map(DsnField::Long(KEY_B), None)), false),
    );
    vector(
        &cat(&[
            &[30, 20, 0x20, 0x0c],
            &KEY_B_BYTES,
            &[0, 0, 0, 1, 0x05, 0xa0, 0xff, 0xff],
        ]),
        dss(None, Some(map(DsnField::Long(KEY_B), Some(0xffff))), false),
    );
}

#[test]
fn dss_all_flags_is_28_octets() {
    // §3.3: "The maximum length of this option, with all flags set, is 28 octets."
    let bytes = cat(&[
        &[30, 28, 0x20, 0x1f],
        &KEY_A_BYTES,
        &KEY_B_BYTES,
        &[0x00, 0x00, 0x10, 0x00, 0x00, 0x0b, 0xab, 0xcd],
    ]);
    vector(
        &bytes,
        dss(
            Some(DsnField::Long(KEY_A)),
            Some(DssMapping {
                dsn: DsnField::Long(KEY_B),
                subflow_seq: 0x1000,
                data_len: 11,
                checksum: Some(0xabcd),
            }),
            true,
        ),
    );
}

#[test]
fn dss_data_fin_example_of_section_3_3_3() {
    // §3.3.3: "a segment with a DSN value of 80 and a Data-Level Length of 11, with DATA_FIN set"
    // (4-octet DSN and DATA_ACK, no checksum): flags F|M|A = 0x15, 4 + 4 + 4 + 4 + 2 = 18.
    vector(
        &[30, 18, 0x20, 0x15, 0, 0, 0, 7, 0, 0, 0, 80, 0, 0, 0, 1, 0, 11],
        dss(
            Some(DsnField::Short(7)),
            Some(DssMapping {
                dsn: DsnField::Short(80),
                subflow_seq: 1,
                data_len: 11,
                checksum: None,
            }),
            true,
        ),
    );
}

#[test]
fn dss_without_any_field_and_lowercase_flags_alone() {
    vector(&[30, 4, 0x20, 0x00], dss(None, None, false));
    vector(&[30, 4, 0x20, 0x10], dss(None, None, true));
    // "a" and "m" without "A"/"M" have no meaning (§3.3): length 4 stays valid and they vanish.
    assert_eq!(
        MptcpOption::parse(&[30, 4, 0x20, 0x0a]).unwrap(),
        dss(None, None, false)
    );
    // Reserved bits (the low nibble of octet 2 and the top 3 bits of octet 3) are ignored.
    assert_eq!(
        MptcpOption::parse(&[30, 4, 0x2f, 0xe0]).unwrap(),
        dss(None, None, false)
    );
}

#[test]
fn dss_every_flag_combination_at_every_length() {
    for flags in 0u8..32 {
        let ack = match flags & 0x03 {
            0x01 => 4,
            0x03 => 8,
            _ => 0,
        };
        let map = match flags & 0x0c {
            0x04 => 10,
            0x0c => 14,
            _ => 0,
        };
        let base = 4 + ack + map;
        for len in 3u8..=40 {
            let mut bytes = vec![0u8; usize::from(len)];
            bytes[0] = 30;
            bytes[1] = len;
            bytes[2] = 0x20;
            if len > 3 {
                bytes[3] = flags;
            }
            let valid = usize::from(len) == base || (map != 0 && usize::from(len) == base + 2);
            match MptcpOption::parse(&bytes) {
                Ok(MptcpOption::Dss(d)) => {
                    assert!(valid, "flags {flags:#x} len {len} accepted");
                    assert_eq!(d.data_ack.is_some(), flags & 0x01 != 0);
                    assert_eq!(d.mapping.is_some(), flags & 0x04 != 0);
                    assert_eq!(d.data_fin, flags & 0x10 != 0);
                    let has_csum = d.mapping.is_some_and(|m| m.checksum.is_some());
                    assert_eq!(has_csum, usize::from(len) == base + 2);
                }
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => {
                    assert!(!valid, "flags {flags:#x} len {len} refused: {e}");
                    assert_eq!(
                        e,
                        OptionError::BadLength {
                            subtype: Subtype::Dss,
                            len
                        }
                    );
                }
            }
        }
    }
}

// ---- ADD_ADDR, §3.4.1 Figure 12.

fn add_addr(addr: IpAddr, port: Option<u16>, signal: AddrSignal) -> MptcpOption {
    MptcpOption::AddAddr(AddAddr {
        addr_id: 9,
        addr,
        port,
        signal,
    })
}

#[test]
fn add_addr_ipv4_all_four_lengths() {
    let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    let announce = AddrSignal::Announce {
        truncated_hmac: KEY_A,
    };
    // E=0, no port: 4 + 4 + 8 = 16.
    vector(
        &cat(&[&[30, 16, 0x30, 9, 198, 18, 0, 2], &KEY_A_BYTES]),
        add_addr(v4, None, announce),
    );
    // E=0, port: 18.
    vector(
        &cat(&[&[30, 18, 0x30, 9, 198, 18, 0, 2, 0x1f, 0x90], &KEY_A_BYTES]),
        add_addr(v4, Some(8080), announce),
    );
    // E=1 (echo, no HMAC): 8 and 10.
    vector(
        &[30, 8, 0x31, 9, 198, 18, 0, 2],
        add_addr(v4, None, AddrSignal::Echo),
    );
    vector(
        &[30, 10, 0x31, 9, 198, 18, 0, 2, 0, 80],
        add_addr(v4, Some(80), AddrSignal::Echo),
    );
}

#[test]
fn add_addr_ipv6_all_four_lengths() {
    let a = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let v6 = IpAddr::V6(a);
    let o = a.octets();
    let announce = AddrSignal::Announce {
        truncated_hmac: KEY_B,
    };
    vector(
        &cat(&[&[30, 28, 0x30, 9], &o, &KEY_B_BYTES]),
        add_addr(v6, None, announce),
    );
    vector(
        &cat(&[&[30, 30, 0x30, 9], &o, &[0x01, 0xbb], &KEY_B_BYTES]),
        add_addr(v6, Some(443), announce),
    );
    vector(
        &cat(&[&[30, 20, 0x31, 9], &o]),
        add_addr(v6, None, AddrSignal::Echo),
    );
    vector(
        &cat(&[&[30, 22, 0x31, 9], &o, &[0, 22]]),
        add_addr(v6, Some(22), AddrSignal::Echo),
    );
}

// ---- REMOVE_ADDR §3.4.2 Fig 13, MP_PRIO §3.3.8 Fig 11, MP_FAIL §3.7 Fig 16,
// ---- MP_FASTCLOSE §3.5 Fig 14, MP_TCPRST §3.6 Fig 15.

#[test]
fn remove_addr_one_and_many_ids() {
    vector(
        &[30, 4, 0x40, 7],
        MptcpOption::RemoveAddr {
            addr_ids: AddrIdList::new(&[7]).unwrap(),
        },
    );
    vector(
        &[30, 6, 0x40, 1, 2, 3],
        MptcpOption::RemoveAddr {
            addr_ids: AddrIdList::new(&[1, 2, 3]).unwrap(),
        },
    );
    let ids: Vec<u8> = (0..MAX_REMOVE_ADDR_IDS as u8).collect();
    vector(
        &cat(&[&[30, 40, 0x40], &ids]),
        MptcpOption::RemoveAddr {
            addr_ids: AddrIdList::new(&ids).unwrap(),
        },
    );
    assert!(AddrIdList::new(&[]).is_none());
    assert!(AddrIdList::new(&[0; MAX_REMOVE_ADDR_IDS + 1]).is_none());
}

#[test]
fn mp_prio_backup_and_regular() {
    vector(&[30, 3, 0x51], MptcpOption::MpPrio { backup: true });
    vector(&[30, 3, 0x50], MptcpOption::MpPrio { backup: false });
}

#[test]
fn mp_fail_len12() {
    vector(
        &cat(&[&[30, 12, 0x60, 0x00], &KEY_A_BYTES]),
        MptcpOption::MpFail { dsn: KEY_A },
    );
}

#[test]
fn mp_fastclose_len12() {
    vector(
        &cat(&[&[30, 12, 0x70, 0x00], &KEY_B_BYTES]),
        MptcpOption::MpFastclose { receiver_key: KEY_B },
    );
}

#[test]
fn mp_tcprst_flags_and_reasons() {
    vector(
        &[30, 4, 0x81, 0x06],
        MptcpOption::MpTcpRst(MpTcpRst {
            transient: true,
            reserved_flags: 0,
            reason: RstReason::MiddleboxInterference,
        }),
    );
    // U, V, W set: kept for logging (§3.6: a receiver MUST ignore them).
    let MptcpOption::MpTcpRst(r) = MptcpOption::parse(&[30, 4, 0x8e, 0x01]).unwrap() else {
        panic!()
    };
    assert!(!r.transient);
    assert_eq!(r.reserved_flags, 0x0e);
    assert_eq!(r.reason, RstReason::MptcpSpecific);
    for code in 0..=255u8 {
        assert_eq!(RstReason::from_code(code).code(), code);
    }
    assert_eq!(RstReason::from_code(0x07), RstReason::Other(7));
}

// ---- invalid lengths for every fixed-size subtype; unknown subtypes; framing errors.

#[test]
fn every_subtype_refuses_every_undefined_length() {
    let valid: &[(u8, &[u8])] = &[
        (0x0, &[4, 12, 20, 22, 24]),
        (0x1, &[12, 16, 24]),
        (0x5, &[3]),
        (0x6, &[12]),
        (0x7, &[12]),
        (0x8, &[4]),
    ];
    for &(code, lens) in valid {
        let subtype = Subtype::from_code(code).unwrap();
        for len in 3u8..=40 {
            let mut bytes = vec![0u8; usize::from(len)];
            bytes[0] = 30;
            bytes[1] = len;
            bytes[2] = code << 4 | 1;
            let r = MptcpOption::parse(&bytes);
            if lens.contains(&len) {
                assert_eq!(r.map(|o| o.subtype()), Ok(subtype), "{subtype:?} len {len}");
            } else {
                assert_eq!(
                    r,
                    Err(OptionError::BadLength { subtype, len }),
                    "{subtype:?} len {len}"
                );
            }
        }
    }
    // ADD_ADDR: E=0 → 16, 18, 28, 30; E=1 → 8, 10, 20, 22.
    for (e, lens) in [(0u8, [16u8, 18, 28, 30]), (1, [8, 10, 20, 22])] {
        for len in 3u8..=40 {
            let mut bytes = vec![0u8; usize::from(len)];
            bytes[0] = 30;
            bytes[1] = len;
            bytes[2] = 0x30 | e;
            let ok = MptcpOption::parse(&bytes).is_ok();
            assert_eq!(ok, lens.contains(&len), "ADD_ADDR E={e} len {len}");
        }
    }
    // REMOVE_ADDR: 3 + n with 1 <= n <= 37.
    assert_eq!(
        MptcpOption::parse(&[30, 3, 0x40]),
        Err(OptionError::BadLength {
            subtype: Subtype::RemoveAddr,
            len: 3
        })
    );
    let mut long = vec![0u8; 41];
    long[..3].copy_from_slice(&[30, 41, 0x40]);
    assert!(MptcpOption::parse(&long).is_err());
}

#[test]
fn unknown_subtypes_are_reported_as_such() {
    for code in 0x9..=0xf_u8 {
        let r = MptcpOption::parse(&[30, 4, code << 4, 0]);
        assert_eq!(r, Err(OptionError::UnknownSubtype { subtype: code }));
        assert!(r.unwrap_err().is_unknown_subtype());
    }
    assert!(!OptionError::Truncated { len: 0 }.is_unknown_subtype());
}

#[test]
fn framing_errors() {
    assert_eq!(MptcpOption::parse(&[]), Err(OptionError::Truncated { len: 0 }));
    assert_eq!(
        MptcpOption::parse(&[30, 3]),
        Err(OptionError::Truncated { len: 2 })
    );
    assert_eq!(
        MptcpOption::parse(&[2, 4, 5, 0xb4]),
        Err(OptionError::NotMptcp { kind: 2 })
    );
    assert_eq!(
        MptcpOption::parse(&[30, 4, 0x01, 0x81, 0x01]),
        Err(OptionError::LengthMismatch {
            declared: 4,
            actual: 5
        })
    );
    assert_eq!(
        MptcpOption::parse(&[30, 12, 0x01, 0x81]),
        Err(OptionError::LengthMismatch {
            declared: 12,
            actual: 4
        })
    );
}

#[test]
fn write_errors() {
    let o = MptcpOption::MpFail { dsn: 1 };
    let mut small = [0u8; 11];
    assert_eq!(
        o.write(&mut small),
        Err(WriteError::BufferTooSmall {
            needed: 12,
            available: 11
        })
    );
    let bad = MptcpOption::MpCapable(MpCapable {
        version: 16,
        flags: CapableFlags(1),
        payload: CapablePayload::NoKeys,
    });
    assert_eq!(
        bad.write(&mut [0u8; 40]),
        Err(WriteError::FieldOutOfRange { field: "version" })
    );
}

// ---- round trip: any valid option → write → parse == same.

fn dsn_field() -> impl Strategy<Value = DsnField> {
    prop_oneof![
        any::<u32>().prop_map(DsnField::Short),
        any::<u64>().prop_map(DsnField::Long)
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

pub fn any_option() -> impl Strategy<Value = MptcpOption> {
    let capable = (
        0u8..16,
        any::<u8>(),
        prop_oneof![
            Just(CapablePayload::NoKeys),
            any::<u64>().prop_map(|k| CapablePayload::SenderKey { sender_key: k }),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| CapablePayload::BothKeys {
                sender_key: a,
                receiver_key: b
            }),
            (any::<u64>(), any::<u64>(), any::<u16>(), any::<Option<u16>>()).prop_map(|(a, b, l, c)| {
                CapablePayload::BothKeysWithData {
                    sender_key: a,
                    receiver_key: b,
                    data_len: l,
                    checksum: c,
                }
            }),
        ],
    )
        .prop_map(|(version, flags, payload)| {
            MptcpOption::MpCapable(MpCapable {
                version,
                flags: CapableFlags(flags),
                payload,
            })
        });
    let join = prop_oneof![
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(b, id, t, n)| MpJoin::Syn {
            backup: b,
            addr_id: id,
            receiver_token: t,
            sender_nonce: n
        }),
        (any::<bool>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(|(b, id, h, n)| MpJoin::SynAck {
            backup: b,
            addr_id: id,
            truncated_hmac: h,
            sender_nonce: n
        }),
        any::<[u8; 20]>().prop_map(|hmac| MpJoin::Ack { hmac }),
    ]
    .prop_map(MptcpOption::MpJoin);
    let mapping =
        (dsn_field(), any::<u32>(), any::<u16>(), any::<Option<u16>>()).prop_map(|(dsn, s, l, c)| {
            DssMapping {
                dsn,
                subflow_seq: s,
                data_len: l,
                checksum: c,
            }
        });
    let dss = (
        proptest::option::of(dsn_field()),
        proptest::option::of(mapping),
        any::<bool>(),
    )
        .prop_map(|(data_ack, mapping, data_fin)| {
            MptcpOption::Dss(Dss {
                data_ack,
                mapping,
                data_fin,
            })
        });
    let add = (
        any::<u8>(),
        ip(),
        any::<Option<u16>>(),
        prop_oneof![
            Just(AddrSignal::Echo),
            any::<u64>().prop_map(|h| AddrSignal::Announce { truncated_hmac: h })
        ],
    )
        .prop_map(|(addr_id, addr, port, signal)| {
            MptcpOption::AddAddr(AddAddr {
                addr_id,
                addr,
                port,
                signal,
            })
        });
    let remove = proptest::collection::vec(any::<u8>(), 1..=MAX_REMOVE_ADDR_IDS).prop_map(|ids| {
        MptcpOption::RemoveAddr {
            addr_ids: AddrIdList::new(&ids).expect("1..=37 ids"),
        }
    });
    let rst = (any::<bool>(), 0u8..8, any::<u8>()).prop_map(|(t, uvw, code)| {
        MptcpOption::MpTcpRst(MpTcpRst {
            transient: t,
            reserved_flags: uvw << 1,
            reason: RstReason::from_code(code),
        })
    });
    prop_oneof![
        capable,
        join,
        dss,
        add,
        remove,
        any::<bool>().prop_map(|backup| MptcpOption::MpPrio { backup }),
        any::<u64>().prop_map(|dsn| MptcpOption::MpFail { dsn }),
        any::<u64>().prop_map(|k| MptcpOption::MpFastclose { receiver_key: k }),
        rst,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn round_trip(opt in any_option()) {
        let mut buf = [0u8; MAX_OPTION_LEN];
        let n = opt.write(&mut buf).unwrap();
        prop_assert_eq!(n, opt.len());
        prop_assert!(n <= MAX_OPTION_LEN);
        prop_assert_eq!(buf[0], KIND_MPTCP);
        prop_assert_eq!(usize::from(buf[1]), n);
        prop_assert_eq!(MptcpOption::parse(&buf[..n]), Ok(opt));
        // Any shorter slice with a consistent length byte is refused, never misread as `opt`.
        for cut in 0..n {
            let mut short = buf[..cut].to_vec();
            if cut >= 2 { short[1] = cut as u8; }
            prop_assert_ne!(MptcpOption::parse(&short), Ok(opt));
        }
    }
}
