//! RFC 8803 §6 codec: round trips of every TLV, golden bytes written by hand from the RFC's
//! figures, every kind of malformed message refused with the right error (never a panic), and
//! property tests (parse ∘ build = id; arbitrary bytes never panic).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;

use mpbond::convert::msg::{
    BuildError, Connect, ErrorCode, ErrorTlv, FixedHeader, MAX_MESSAGE_LEN, Message, MessageView, MsgError,
    Tlv, options_len, tcp_options,
};
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn round_trip(tlvs: Vec<Tlv>) -> Vec<u8> {
    let m = Message { tlvs };
    let bytes = m.to_bytes().unwrap();
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(usize::from(bytes[1]) * 4, bytes.len());
    let (back, n) = Message::parse(&bytes).unwrap();
    assert_eq!(n, bytes.len());
    assert_eq!(back, m);
    // Trailing user data is not part of the message.
    let mut with_data = bytes.clone();
    with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(Message::parse(&with_data).unwrap(), (m, bytes.len()));
    bytes
}

#[test]
fn every_tlv_round_trips() {
    round_trip(vec![Tlv::Info]);
    round_trip(vec![Tlv::SupportedTcpExtensions(vec![4, 8, 30, 34])]);
    round_trip(vec![Tlv::SupportedTcpExtensions(vec![])]);
    for dst in ["198.18.0.7:443", "[2001:db8::7]:8443", "198.19.255.254:1"] {
        for options in [
            vec![],
            vec![4, 2],
            vec![4, 2, 8, 2, 30, 2],
            vec![34, 6, 1, 2, 3, 4],
        ] {
            round_trip(vec![Tlv::Connect(Connect {
                dst: addr(dst),
                options,
            })]);
        }
    }
    round_trip(vec![Tlv::ExtendedTcpHeader(vec![])]);
    round_trip(vec![Tlv::ExtendedTcpHeader(vec![
        2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
    ])]);
    round_trip(vec![Tlv::Cookie(vec![0xab; 64])]);
    round_trip(vec![Tlv::Cookie(vec![])]);
    let errors = vec![
        ErrorTlv::UnsupportedVersion { versions: vec![1] },
        ErrorTlv::UnsupportedVersion {
            versions: vec![1, 2, 3, 4, 5],
        },
        ErrorTlv::MalformedMessage {
            echo: vec![1, 2, 0x22, 0x63, 0, 1, 0, 0],
        },
        ErrorTlv::UnsupportedMessage { echo: vec![] },
        ErrorTlv::MissingCookie { cookie: vec![9; 16] },
        ErrorTlv::NotAuthorized,
        ErrorTlv::UnsupportedTcpOption { kinds: vec![29] },
        ErrorTlv::UnsupportedTcpOption {
            kinds: vec![29, 34, 8, 200],
        },
        ErrorTlv::ResourceExceeded { retry_after: 0 },
        ErrorTlv::ResourceExceeded { retry_after: 7 },
        ErrorTlv::NetworkFailure { retry_after: 30 },
        ErrorTlv::ConnectionReset,
        ErrorTlv::DestinationUnreachable { icmp_code: 3 },
        ErrorTlv::DestinationUnreachable { icmp_code: 0 },
        ErrorTlv::Other {
            code: 192,
            value: vec![0],
        },
        ErrorTlv::Other {
            code: 130,
            value: vec![1, 2, 3, 4, 5],
        },
    ];
    for e in errors {
        round_trip(vec![Tlv::Error(e)]);
    }
    round_trip(vec![Tlv::Unknown {
        kind: 0x80,
        value: vec![1, 2],
    }]);
    round_trip(vec![Tlv::Unknown {
        kind: 0xff,
        value: vec![1, 2, 3, 4, 5, 6],
    }]);
    // Several TLVs in one message, order kept.
    round_trip(vec![
        Tlv::Info,
        Tlv::Connect(Connect {
            dst: addr("198.18.0.7:80"),
            options: vec![4, 2],
        }),
        Tlv::Cookie(vec![1; 64]),
    ]);
}

#[test]
fn every_error_code_is_distinct_and_maps_back() {
    for &c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        let t = ErrorTlv::from_raw(c.code(), &[0]);
        assert_eq!(t.error_code(), Some(c));
    }
    // Table 2 values.
    let table: Vec<u8> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(table, [0, 1, 2, 3, 32, 33, 64, 65, 96, 97, 192]);
    assert_eq!(ErrorCode::from_code(4), None);
}

#[test]
fn golden_connect_message_from_figures_13_and_17() {
    // Figure 13 fixed header: version 1, Total Length 7 words (4 + 24 bytes), Magic 0x2263.
    // Figure 17/18 Extended Connect TLV: type 0x0A, length 6 words, port 443, ::ffff:198.18.0.7
    // (IPv4-mapped, §6.2.5), TCP options SACK-Permitted (04 02) + MPTCP without content (1e 02).
    let golden: &[u8] = &[
        0x01, 0x07, 0x22, 0x63, //
        0x0a, 0x06, 0x01, 0xbb, //
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0xff, 0xff, //
        0xc6, 0x12, 0x00, 0x07, //
        0x04, 0x02, 0x1e, 0x02, //
    ];
    let m = Message {
        tlvs: vec![Tlv::Connect(Connect {
            dst: addr("198.18.0.7:443"),
            options: vec![4, 2, 30, 2],
        })],
    };
    assert_eq!(m.to_bytes().unwrap(), golden);
    assert_eq!(Message::parse(golden).unwrap(), (m, golden.len()));
}

#[test]
fn golden_error_and_extensions_messages() {
    // Figure 22: Destination Unreachable (97 = 0x61) echoing ICMP code 3.
    let golden: &[u8] = &[0x01, 0x02, 0x22, 0x63, 0x1e, 0x01, 0x61, 0x03];
    let m = Message {
        tlvs: vec![Tlv::Error(ErrorTlv::DestinationUnreachable { icmp_code: 3 })],
    };
    assert_eq!(m.to_bytes().unwrap(), golden);
    // Figure 16: Supported TCP Extensions listing MPTCP (30), padded with zeros.
    let golden: &[u8] = &[0x01, 0x03, 0x22, 0x63, 0x15, 0x02, 0x00, 0x00, 0x1e, 0, 0, 0];
    let m = Message {
        tlvs: vec![Tlv::SupportedTcpExtensions(vec![30])],
    };
    assert_eq!(m.to_bytes().unwrap(), golden);
    // Figure 15: Info TLV.
    assert_eq!(
        Message {
            tlvs: vec![Tlv::Info]
        }
        .to_bytes()
        .unwrap(),
        [0x01, 0x02, 0x22, 0x63, 0x01, 0x01, 0x00, 0x00]
    );
    // Figure 23: Malformed Message echo starts on the next word after a zero byte.
    let m = Message {
        tlvs: vec![Tlv::Error(ErrorTlv::MalformedMessage {
            echo: vec![0xaa, 0xbb, 0xcc, 0xdd],
        })],
    };
    assert_eq!(
        m.to_bytes().unwrap(),
        [1, 3, 0x22, 0x63, 0x1e, 2, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd]
    );
}

#[test]
fn ipv6_connect_and_ipv4_mapping() {
    let bytes = Message {
        tlvs: vec![Tlv::Connect(Connect {
            dst: addr("[2001:db8::1]:80"),
            options: vec![],
        })],
    }
    .to_bytes()
    .unwrap();
    assert_eq!(&bytes[8..10], &[0x20, 0x01]);
    assert_eq!(bytes[5], 5, "a Base Connect TLV is 5 words (§6.2.5)");
    // An IPv4-mapped address decodes to IPv4.
    let mut v4 = bytes.clone();
    v4[8..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 9]);
    let (m, _) = Message::parse(&v4).unwrap();
    assert_eq!(
        m.tlvs,
        [Tlv::Connect(Connect {
            dst: addr("198.18.0.9:80"),
            options: vec![]
        })]
    );
}

#[test]
fn every_prefix_of_a_valid_message_is_incomplete() {
    let bytes = round_trip(vec![
        Tlv::Connect(Connect {
            dst: addr("198.18.0.7:443"),
            options: vec![4, 2],
        }),
        Tlv::Cookie(vec![5; 64]),
    ]);
    for n in 0..bytes.len() {
        let e = Message::parse(&bytes[..n]).unwrap_err();
        assert!(e.is_incomplete(), "prefix {n}: {e}");
    }
}

fn err(bytes: &[u8]) -> MsgError {
    Message::parse(bytes).unwrap_err()
}

#[test]
fn malformed_messages_are_refused() {
    // Bad version (§6.1: version 0 "MUST NOT be used"; only 1 is specified).
    assert_eq!(
        err(&[0, 2, 0x22, 0x63, 1, 1, 0, 0]),
        MsgError::UnsupportedVersion(0)
    );
    assert_eq!(
        err(&[2, 2, 0x22, 0x63, 1, 1, 0, 0]),
        MsgError::UnsupportedVersion(2)
    );
    // Bad magic: as soon as the wrong byte is there.
    assert_eq!(err(&[1, 2, 0x22, 0x64]), MsgError::NotConvert);
    assert_eq!(err(&[1, 2, 0x21]), MsgError::NotConvert);
    assert_eq!(err(b"GET / HTTP/1.1"), MsgError::NotConvert);
    // Total Length 0 (§6.1), even before the rest of the header.
    assert_eq!(err(&[1, 0]), MsgError::ZeroTotalLength);
    // Header only (§6: "one or more Convert TLVs").
    assert_eq!(err(&[1, 1, 0x22, 0x63]), MsgError::NoTlv);
    // Zero-length TLV, even when the message is not complete yet.
    assert_eq!(
        err(&[1, 3, 0x22, 0x63, 1, 0, 0, 0]),
        MsgError::ZeroLengthTlv { offset: 4 }
    );
    // A TLV overrunning Total Length (§9), seen before the rest arrives.
    assert_eq!(
        err(&[1, 2, 0x22, 0x63, 0x16, 2, 0, 0]),
        MsgError::TlvOverrun { offset: 4 }
    );
    assert_eq!(
        err(&[1, 3, 0x22, 0x63, 1, 1, 0, 0, 0x16, 0xff]),
        MsgError::TlvOverrun { offset: 8 }
    );
    // Huge declared length: incomplete (the caller bounds how long it waits), never a read past.
    assert_eq!(
        err(&[1, 0xff, 0x22, 0x63, 0x16, 0x10]),
        MsgError::Incomplete { needed: 1020 }
    );
    // Duplicate TLV (§6.2.1).
    let c = Tlv::Connect(Connect {
        dst: addr("198.18.0.7:443"),
        options: vec![],
    });
    let mut one = Vec::new();
    c.write(&mut one).unwrap();
    let mut dup = vec![1, 11, 0x22, 0x63];
    dup.extend_from_slice(&one);
    dup.extend_from_slice(&one);
    assert_eq!(err(&dup), MsgError::Duplicate(0x0a));
    // Reserved type 0 (§6.2.2).
    assert_eq!(err(&[1, 2, 0x22, 0x63, 0, 1, 0, 0]), MsgError::ReservedType);
    // Connect shorter than 20 bytes, Info longer than a word.
    assert!(matches!(
        err(&[1, 3, 0x22, 0x63, 0x0a, 2, 0, 80, 0, 0, 0, 0]),
        MsgError::BadTlv { kind: 0x0a, .. }
    ));
    assert!(matches!(
        err(&[1, 3, 0x22, 0x63, 1, 2, 0, 0, 0, 0, 0, 0]),
        MsgError::BadTlv { kind: 1, .. }
    ));
    // Connect options that overrun their field or have a length below 2.
    let mut bad_opt = one.clone();
    bad_opt[1] = 6;
    bad_opt.extend_from_slice(&[34, 9, 0, 0]);
    let mut m = vec![1, 7, 0x22, 0x63];
    m.extend_from_slice(&bad_opt);
    assert!(matches!(err(&m), MsgError::BadTlv { kind: 0x0a, .. }));
    let last = m.len() - 3;
    m[last] = 1;
    assert!(matches!(err(&m), MsgError::BadTlv { kind: 0x0a, .. }));
}

#[test]
fn unknown_types_decode_and_cannot_be_confused_with_known_ones() {
    let (m, _) = Message::parse(&[1, 2, 0x22, 0x63, 0x99, 1, 7, 8]).unwrap();
    assert_eq!(
        m.tlvs,
        [Tlv::Unknown {
            kind: 0x99,
            value: vec![7, 8]
        }]
    );
    for kind in [0, 1, 10, 20, 21, 22, 30] {
        let m = Message {
            tlvs: vec![Tlv::Unknown {
                kind,
                value: vec![0, 0],
            }],
        };
        assert_eq!(m.to_bytes(), Err(BuildError::BadKind(kind)));
    }
}

#[test]
fn builder_refuses_what_the_rfc_forbids() {
    assert_eq!(Message { tlvs: vec![] }.to_bytes(), Err(BuildError::Empty));
    assert_eq!(
        Message {
            tlvs: vec![Tlv::Info, Tlv::Info]
        }
        .to_bytes(),
        Err(BuildError::Duplicate(1))
    );
    // §6.2.5: EOL and NOP "MUST NOT be placed inside the TCP options field of the Connect TLV".
    for options in [vec![1, 4, 2], vec![4, 2, 0, 0], vec![4], vec![34, 1]] {
        let m = Message {
            tlvs: vec![Tlv::Connect(Connect {
                dst: addr("198.18.0.1:1"),
                options,
            })],
        };
        assert!(matches!(m.to_bytes(), Err(BuildError::BadOptions(_))));
    }
    // More than 1020 bytes (§6.1).
    let m = Message {
        tlvs: vec![Tlv::Cookie(vec![0; 1013])],
    };
    assert!(matches!(m.to_bytes(), Err(BuildError::TooLong(_))));
    let m = Message {
        tlvs: vec![Tlv::Cookie(vec![0; 1012])],
    };
    assert_eq!(m.to_bytes().unwrap().len(), MAX_MESSAGE_LEN);
}

#[test]
fn view_exposes_raw_tlvs_and_bounds() {
    let bytes = round_trip(vec![Tlv::Info, Tlv::Cookie(vec![1; 8])]);
    let mut with_data = bytes.clone();
    with_data.extend_from_slice(&[9; 100]);
    let v = MessageView::new_checked(&with_data).unwrap();
    assert_eq!(v.len(), bytes.len());
    assert_eq!(v.as_bytes(), &bytes[..]);
    let kinds: Vec<(u8, usize)> = v.tlvs().map(|t| (t.kind, t.bytes.len())).collect();
    assert_eq!(kinds, [(1, 4), (0x16, 12)]);
    assert_eq!(
        FixedHeader::parse(&bytes).unwrap(),
        FixedHeader {
            version: 1,
            total_words: 5
        }
    );
}

#[test]
fn tcp_option_walker() {
    assert_eq!(options_len(&[4, 2, 0, 0]), Ok(2));
    assert_eq!(options_len(&[1, 1, 4, 2, 1]), Ok(5));
    assert_eq!(
        options_len(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Ok(10),
        "zeros inside an option are kept"
    );
    assert!(options_len(&[2]).is_err());
    assert!(options_len(&[2, 1, 0]).is_err());
    assert!(options_len(&[2, 4, 5]).is_err());
    let found: Vec<u8> = tcp_options(&[1, 2, 4, 5, 0xb4, 0, 4, 2, 30, 9])
        .map(|(k, _)| k)
        .collect();
    assert_eq!(found, [2, 4], "the walk stops at the first invalid option");
}

fn arb_options() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((2u8..=254, prop::collection::vec(any::<u8>(), 0..6)), 0..4).prop_map(|opts| {
        let mut out = Vec::new();
        for (k, v) in opts {
            out.push(k);
            out.push((v.len() + 2) as u8);
            out.extend(v);
        }
        out
    })
}

fn arb_dst() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_filter("not IPv4-mapped", |(a, _)| {
                std::net::Ipv6Addr::from(*a).to_ipv4_mapped().is_none()
            })
            .prop_map(|(a, p)| SocketAddr::from((a, p))),
    ]
}

fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(|mut v| {
        v.truncate(v.len() / 4 * 4);
        v
    })
}

fn nonzero(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..max)
}

fn arb_error() -> impl Strategy<Value = ErrorTlv> {
    prop_oneof![
        nonzero(9).prop_map(|versions| ErrorTlv::UnsupportedVersion { versions }),
        words(40).prop_map(|echo| ErrorTlv::MalformedMessage { echo }),
        words(40).prop_map(|echo| ErrorTlv::UnsupportedMessage { echo }),
        words(40).prop_map(|cookie| ErrorTlv::MissingCookie { cookie }),
        Just(ErrorTlv::NotAuthorized),
        nonzero(9).prop_map(|kinds| ErrorTlv::UnsupportedTcpOption { kinds }),
        any::<u8>().prop_map(|retry_after| ErrorTlv::ResourceExceeded { retry_after }),
        any::<u8>().prop_map(|retry_after| ErrorTlv::NetworkFailure { retry_after }),
        Just(ErrorTlv::ConnectionReset),
        any::<u8>().prop_map(|icmp_code| ErrorTlv::DestinationUnreachable { icmp_code }),
        (
            any::<u8>().prop_filter("undefined code", |c| ErrorCode::from_code(*c).is_none()
                || *c == 192),
            words(12)
        )
            .prop_map(|(code, mut value)| {
                // The Value after the code is 4k + 1 bytes in a whole number of words.
                value.push(0);
                ErrorTlv::Other { code, value }
            }),
    ]
}

fn arb_tlv() -> impl Strategy<Value = Tlv> {
    prop_oneof![
        Just(Tlv::Info),
        nonzero(12).prop_map(Tlv::SupportedTcpExtensions),
        (arb_dst(), arb_options()).prop_map(|(dst, options)| Tlv::Connect(Connect { dst, options })),
        arb_options().prop_map(Tlv::ExtendedTcpHeader),
        words(80).prop_map(Tlv::Cookie),
        arb_error().prop_map(Tlv::Error),
        (
            any::<u8>().prop_filter("unknown", |k| *k != 0 && ![1, 10, 20, 21, 22, 30].contains(k)),
            words(20)
        )
            .prop_map(|(kind, mut value)| {
                value.extend_from_slice(&[0, 0]);
                Tlv::Unknown { kind, value }
            }),
    ]
}

proptest! {
    #[test]
    fn parse_of_build_is_identity(tlvs in prop::collection::vec(arb_tlv(), 1..6)) {
        let mut seen = std::collections::HashSet::new();
        let tlvs: Vec<Tlv> = tlvs.into_iter().filter(|t| seen.insert(t.kind())).collect();
        let m = Message { tlvs };
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(Message::parse(&bytes), Ok((m, bytes.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_codec(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::parse(&data);
        // Framed as a Convert message, so the TLV decoders are reached.
        let mut framed = vec![1, ((data.len() + 4) / 4).min(255) as u8, 0x22, 0x63];
        framed.extend_from_slice(&data);
        if let Ok((m, n)) = Message::parse(&framed) {
            prop_assert!(n <= framed.len());
            if let Ok(b) = m.to_bytes() {
                prop_assert_eq!(Message::parse(&b).map(|(m, _)| m), Ok(m));
            }
        }
    }
}
