//! The converter's request check (every refusal with its RFC 8803 §6.2.8 reply, incremental and
//! bounded input, TCP options per §7) and the client against it in memory: request → converter →
//! Connect with the right destination, consumed length and early data; reply → client parse.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::net::SocketAddr;
use std::time::Duration;

use mpbond::convert::client::{Reply, connect_request, parse_reply, travelling_options};
use mpbond::convert::converter::{
    Converter, ConverterConfig, RefusalCause, Request, SUPPORTED_TCP_EXTENSIONS, connected_reply, error_reply,
};
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::msg::{Connect, ErrorCode, ErrorTlv, Message, Tlv};
use proptest::prelude::*;

const NOW: Duration = Duration::from_secs(1_700_000_000);

fn key() -> ClientKey {
    ClientKey::from_parts(KeyId([1; 8]), [2; 32])
}

fn conv() -> Converter {
    Converter::new(vec![key()], ConverterConfig::default())
}

fn dst() -> SocketAddr {
    "198.18.0.7:443".parse().unwrap()
}

fn request(dst: SocketAddr, opts: &[u8]) -> Vec<u8> {
    connect_request(&key(), NOW, [7; 16], dst, opts)
}

/// A message with `tlvs` and a valid cookie over its Connect TLV (first TLV, if any).
fn signed(tlvs: &[Vec<u8>]) -> Vec<u8> {
    use mpbond::convert::cookie::Cookie;
    let connect = tlvs.first().cloned().unwrap_or_default();
    let c = Cookie::mint(&key(), NOW.as_secs(), [8; 16], &connect).to_bytes();
    let mut out = vec![1, 0, 0x22, 0x63];
    for t in tlvs {
        out.extend_from_slice(t);
    }
    out.extend_from_slice(&[0x16, 17, 0, 0]);
    out.extend_from_slice(&c);
    out[1] = (out.len() / 4) as u8;
    out
}

fn connect_tlv(dst: SocketAddr, options: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    Tlv::Connect(Connect {
        dst,
        options: options.to_vec(),
    })
    .write(&mut b)
    .unwrap();
    b
}

fn refusal(r: Request) -> (RefusalCause, Vec<u8>) {
    match r {
        Request::Refused { cause, reply, .. } => (cause, reply),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn reply_error(reply: &[u8]) -> ErrorTlv {
    let (m, n) = Message::parse(reply).unwrap();
    assert_eq!(n, reply.len());
    match &m.tlvs[..] {
        [Tlv::Error(e)] => e.clone(),
        other => panic!("not one Error TLV: {other:?}"),
    }
}

#[test]
fn client_and_converter_in_memory() {
    let host_syn_opts = [
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7, 30, 12, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    for d in ["198.18.0.7:443", "[2001:db8::7]:80"] {
        let d: SocketAddr = d.parse().unwrap();
        let mut stream = connect_request(&key(), NOW, [1; 16], d, &host_syn_opts);
        let req_len = stream.len();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut c = conv();
        // Incremental: every prefix of the request is Incomplete.
        for n in 0..req_len {
            assert_eq!(
                c.check_request(NOW, &stream[..n]),
                Request::Incomplete,
                "prefix {n}"
            );
        }
        let Request::Connect {
            dst,
            key: k,
            consumed,
            tcp_options,
        } = c.check_request(NOW, &stream)
        else {
            panic!("not accepted");
        };
        assert_eq!(dst, d);
        assert_eq!(k, key().id());
        assert_eq!(consumed, req_len);
        assert_eq!(&stream[consumed..], b"GET / HTTP/1.1\r\n\r\n");
        // MSS and WS are not sent (§7.1, §7.2); SACK-Permitted, TS and MPTCP go without value.
        assert_eq!(tcp_options, [4, 2, 8, 2, 30, 2]);

        let synack = [2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7];
        let mut back = connected_reply(&synack);
        let reply_len = back.len();
        back.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for n in 0..reply_len {
            assert_eq!(parse_reply(&back[..n]), Reply::Incomplete);
        }
        assert_eq!(
            parse_reply(&back),
            Reply::Connected {
                consumed: reply_len,
                tcp_options: synack.to_vec(),
                supports_mptcp: true
            }
        );
    }
}

#[test]
fn connected_reply_golden_and_sanitised() {
    // Header (5 words); Extended TCP Header: 14 02 00 00 + MSS; Supported: 15 02 00 00 04 08 1e 00.
    assert_eq!(
        connected_reply(&[2, 4, 5, 0xb4]),
        [
            1, 5, 0x22, 0x63, 0x14, 2, 0, 0, 2, 4, 5, 0xb4, 0x15, 2, 0, 0, 4, 8, 30, 0
        ]
    );
    assert_eq!(SUPPORTED_TCP_EXTENSIONS, [4, 8, 30]);
    // Up to the first EOL; a broken option ends the copy; at most 40 bytes.
    let r = connected_reply(&[4, 2, 0, 9, 9, 9]);
    assert!(matches!(parse_reply(&r), Reply::Connected { tcp_options, .. } if tcp_options == [4, 2]));
    let r = connected_reply(&[4, 2, 34, 50, 1]);
    assert!(matches!(parse_reply(&r), Reply::Connected { tcp_options, .. } if tcp_options == [4, 2]));
    let r = connected_reply(&[1; 60]);
    assert!(matches!(parse_reply(&r), Reply::Connected { tcp_options, .. } if tcp_options.len() == 40));
    assert!(matches!(
        parse_reply(&connected_reply(&[])),
        Reply::Connected { consumed: 16, .. }
    ));
}

#[test]
fn error_replies_parse_for_every_code() {
    for &code in ErrorCode::ALL {
        let value: &[u8] = match code {
            ErrorCode::DestinationUnreachable => &[3],
            ErrorCode::ResourceExceeded => &[5],
            _ => &[],
        };
        let mut r = error_reply(code, value);
        let n = r.len();
        r.extend_from_slice(&[0xee; 9]);
        match parse_reply(&r) {
            Reply::Error {
                consumed,
                code: c,
                value: v,
            } => {
                assert_eq!((consumed, c), (n, code));
                if !value.is_empty() {
                    assert_eq!(v, value);
                }
            }
            other => panic!("{code:?}: {other:?}"),
        }
    }
    // An Error Code the RFC does not define: the client resets (Malformed).
    assert_eq!(
        parse_reply(&[1, 2, 0x22, 0x63, 0x1e, 1, 150, 0]),
        Reply::Malformed
    );
}

#[test]
fn client_reply_rules() {
    // Type 0 (§6.2.2) and duplicates (§6.2.1): reset.
    assert_eq!(parse_reply(&[1, 2, 0x22, 0x63, 0, 1, 0, 0]), Reply::Malformed);
    assert_eq!(
        parse_reply(&[1, 3, 0x22, 0x63, 0x14, 1, 0, 0, 0x14, 1, 0, 0]),
        Reply::Malformed
    );
    // Unknown TLV types are skipped; no Supported TCP Extensions: MPTCP unknown (false).
    assert_eq!(
        parse_reply(&[1, 3, 0x22, 0x63, 0x90, 1, 0, 0, 0x14, 1, 0, 0]),
        Reply::Connected {
            consumed: 12,
            tcp_options: vec![],
            supports_mptcp: false
        }
    );
    // Error wins over anything else in the message.
    assert!(matches!(
        parse_reply(&[1, 3, 0x22, 0x63, 0x14, 1, 0, 0, 0x1e, 1, 96, 0]),
        Reply::Error {
            code: ErrorCode::ConnectionReset,
            ..
        }
    ));
    assert_eq!(parse_reply(b"HTTP/1.1 200"), Reply::Malformed);
    assert_eq!(parse_reply(&[2, 2, 0x22, 0x63, 0x14, 1, 0, 0]), Reply::Malformed);
    assert_eq!(parse_reply(&[]), Reply::Incomplete);
}

#[test]
fn framing_refusals_and_their_replies() {
    let mut c = conv();
    // Not Convert at all (§6 "SHOULD silently ignore") and Total Length 0 (§6.1 reset): no reply.
    assert_eq!(
        refusal(c.check_request(NOW, b"GET / HTTP/1.1")),
        (RefusalCause::Malformed, vec![])
    );
    assert_eq!(
        refusal(c.check_request(NOW, &[1, 0])),
        (RefusalCause::Malformed, vec![])
    );
    // Bad version: Unsupported Version carrying our version (§6.2.8).
    for v in [0, 2, 255] {
        let (cause, reply) = refusal(c.check_request(NOW, &[v, 2, 0x22, 0x63, 1, 1, 0, 0]));
        assert_eq!(cause, RefusalCause::UnsupportedVersion);
        assert_eq!(reply, [1, 2, 0x22, 0x63, 0x1e, 1, 0, 1]);
    }
    // Malformed: echoes the message (Figure 23).
    let bad = [1, 3, 0x22, 0x63, 0x0a, 0, 0, 0];
    let (cause, reply) = refusal(c.check_request(NOW, &bad));
    assert_eq!(cause, RefusalCause::Malformed);
    assert_eq!(
        reply_error(&reply),
        ErrorTlv::MalformedMessage { echo: bad.to_vec() }
    );
    // Zero-length TLV, TLV overrunning, header only, Connect too short.
    for m in [
        &[1, 3, 0x22, 0x63, 0x16, 0][..],
        &[1, 2, 0x22, 0x63, 0x16, 2, 0, 0],
        &[1, 1, 0x22, 0x63],
        &[1, 3, 0x22, 0x63, 0x0a, 2, 0, 80, 0, 0, 0, 0],
    ] {
        let (cause, reply) = refusal(c.check_request(NOW, m));
        assert_eq!(cause, RefusalCause::Malformed, "{m:02x?}");
        assert!(matches!(reply_error(&reply), ErrorTlv::MalformedMessage { .. }));
    }
    // Duplicate Connect (§6.2.1): Malformed.
    let ct = connect_tlv(dst(), &[]);
    let (cause, _) = refusal(c.check_request(NOW, &signed(&[ct.clone(), ct.clone()])));
    assert_eq!(cause, RefusalCause::Malformed);
    // Type 0 (§6.2.2), unknown types, converter-only TLVs, Info only: Unsupported Message.
    for extra in [
        vec![0u8, 1, 0, 0],
        vec![0x90, 1, 0, 0],
        vec![0x14, 1, 0, 0],
        vec![0x15, 1, 0, 0],
        vec![0x1e, 1, 1, 0],
    ] {
        let (cause, reply) = refusal(c.check_request(NOW, &signed(&[ct.clone(), extra])));
        assert_eq!(cause, RefusalCause::Unsupported);
        assert!(matches!(reply_error(&reply), ErrorTlv::UnsupportedMessage { .. }));
    }
    let (cause, _) = refusal(c.check_request(NOW, &[1, 2, 0x22, 0x63, 1, 1, 0, 0]));
    assert_eq!(cause, RefusalCause::Unsupported);
    // Info with a Connect is fine.
    assert!(matches!(
        c.check_request(NOW, &signed(&[ct, vec![1, 1, 0, 0]])),
        Request::Connect { .. }
    ));
}

#[test]
fn bounded_request_length() {
    let cfg = ConverterConfig {
        max_request_len: 64,
        ..ConverterConfig::default()
    };
    let mut c = Converter::new(vec![key()], cfg);
    // A header announcing more than the bound: Malformed at once, not a wait.
    let (cause, _) = refusal(c.check_request(NOW, &[1, 0xff, 0x22, 0x63]));
    assert_eq!(cause, RefusalCause::Malformed);
    // Our real requests (92 bytes) exceed 64 too.
    let (cause, _) = refusal(c.check_request(NOW, &request(dst(), &[])));
    assert_eq!(cause, RefusalCause::Malformed);
    // With the default bound, a 1020-byte announcement is waited for, and a huge message with a
    // valid prefix stays Incomplete without reading past what arrived.
    let mut c = conv();
    let mut huge = vec![1, 0xff, 0x22, 0x63, 0x16, 0xfe, 0, 0];
    assert_eq!(c.check_request(NOW, &huge), Request::Incomplete);
    huge.resize(1020, 0);
    // Complete: one big Cookie TLV and no Connect TLV.
    let (cause, _) = refusal(c.check_request(NOW, &huge));
    assert_eq!(cause, RefusalCause::Unsupported);
}

#[test]
fn forbidden_destinations_are_malformed() {
    // §6.2.5: no multicast, broadcast or host loopback; we add unspecified, 0/8 and port 0.
    for d in [
        "127.0.0.1:80",
        "127.5.6.7:80",
        "[::1]:80",
        "224.0.0.1:80",
        "[ff02::1]:80",
        "255.255.255.255:80",
        "0.0.0.0:80",
        "0.1.2.3:80",
        "[::]:80",
        "198.18.0.7:0",
        "[::ffff:127.0.0.1]:80",
    ] {
        let d: SocketAddr = d.parse().unwrap();
        let (cause, reply) = refusal(conv().check_request(NOW, &request(d, &[])));
        assert_eq!(cause, RefusalCause::Malformed, "{d}");
        assert!(matches!(reply_error(&reply), ErrorTlv::MalformedMessage { .. }));
    }
}

#[test]
fn tcp_options_per_section_7() {
    let mut c = conv();
    // MSS, WS, SACK (§7.1-§7.3 "MUST ignore") and EOL/NOP padding are dropped.
    let ct = connect_tlv(dst(), &[2, 4, 5, 0xb4, 3, 3, 7, 5, 2, 4, 2]);
    match c.check_request(NOW, &signed(&[ct])) {
        Request::Connect { tcp_options, .. } => assert_eq!(tcp_options, [4, 2]),
        other => panic!("{other:?}"),
    }
    // TCP-AO (§7.7 MUST reject), a TFO cookie, a timestamp with a value: Unsupported TCP Option
    // listing each kind once (§6.2.8), after the MAC verified (key named).
    let ct = connect_tlv(
        dst(),
        &[
            29, 4, 0, 0, 34, 6, 1, 2, 3, 4, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 29, 2,
        ],
    );
    match c.check_request(NOW, &signed(&[ct])) {
        Request::Refused {
            cause: RefusalCause::UnsupportedOption,
            key: Some(k),
            reply,
        } => {
            assert_eq!(k, key().id());
            assert_eq!(
                reply_error(&reply),
                ErrorTlv::UnsupportedTcpOption {
                    kinds: vec![29, 34, 8]
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // The client never sends what would be refused.
    assert_eq!(
        travelling_options(&[29, 4, 0, 0, 34, 2, 4, 2, 4, 2, 30, 4, 0, 1]),
        [4, 2, 30, 2]
    );
}

#[test]
fn refusal_causes_are_named_and_coded() {
    let names: Vec<&str> = RefusalCause::ALL.iter().map(|c| c.name()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    for c in RefusalCause::ALL {
        assert!(c.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        let _ = c.error_code();
    }
    assert_eq!(
        RefusalCause::DestUnreachable.error_code(),
        ErrorCode::DestinationUnreachable
    );
    assert_eq!(RefusalCause::DestRefused.error_code(), ErrorCode::ConnectionReset);
    assert_eq!(RefusalCause::Limit.error_code(), ErrorCode::ResourceExceeded);
    assert_eq!(RefusalCause::BadMac.error_code(), ErrorCode::NotAuthorized);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1100), framed in any::<bool>()) {
        let mut data = data;
        if framed && data.len() >= 4 {
            data[0] = 1;
            data[2] = 0x22;
            data[3] = 0x63;
        }
        let mut c = conv();
        match c.check_request(NOW, &data) {
            Request::Connect { consumed, .. } => prop_assert!(consumed <= data.len()),
            Request::Refused { cause, reply, .. } => {
                if !reply.is_empty() {
                    let is_error = matches!(parse_reply(&reply), Reply::Error { code, .. } if code == cause.error_code());
                    prop_assert!(is_error);
                }
            }
            Request::Incomplete => prop_assert!(data.len() < 1020),
        }
        let _ = parse_reply(&data);
    }

    #[test]
    fn requests_round_trip(ip in any::<[u8; 4]>(), port in 1u16.., nonce in any::<[u8; 16]>(), early in prop::collection::vec(any::<u8>(), 0..64)) {
        let d = SocketAddr::from((ip, port));
        let mut stream = connect_request(&key(), NOW, nonce, d, &[4, 2]);
        let n = stream.len();
        stream.extend_from_slice(&early);
        let ip4 = std::net::Ipv4Addr::from(ip);
        let forbidden = ip4.is_loopback() || ip4.is_multicast() || ip4.is_broadcast() || ip[0] == 0;
        match conv().check_request(NOW, &stream) {
            Request::Connect { dst, consumed, .. } => {
                prop_assert!(!forbidden);
                prop_assert_eq!(dst, d);
                prop_assert_eq!(consumed, n);
            }
            Request::Refused { cause, .. } => {
                prop_assert!(forbidden);
                prop_assert_eq!(cause, RefusalCause::Malformed);
            }
            Request::Incomplete => prop_assert!(false, "complete request reported incomplete"),
        }
    }
}
