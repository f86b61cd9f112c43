//! MP_CAPABLE and MP_JOIN negotiation (RFC 8684 §3.1, §3.2): both ends driven against each
//! other through the option codec (write → parse, as on the wire), and every fallback /
//! refusal case.

use mpbond::mptcp::crypto::{Key, Nonce, Token, join_synack_hmac};
use mpbond::mptcp::handshake::*;
use mpbond::mptcp::seq::{DataSeq, SubflowSeq};
use mpbond::wire::mptcp::*;

const KEY_A: Key = Key(0x0123_4567_89ab_cdef);
const KEY_B: Key = Key(0xfedc_ba98_7654_3210);

/// What the peer sees: the option written and parsed back.
fn wire(opt: &MptcpOption) -> MptcpOption {
    let mut buf = [0u8; MAX_OPTION_LEN];
    let n = opt.write(&mut buf).expect("write");
    MptcpOption::parse(&buf[..n]).expect("parse")
}

fn no_checksums() -> CapableConfig {
    CapableConfig {
        checksum_required: false,
        ..CapableConfig::default()
    }
}

fn handshake(client: CapableConfig, server: CapableConfig) -> (Negotiated, Negotiated) {
    let init = CapableInitiator::new(client, KEY_A);
    let syn = wire(&init.syn_option());
    assert_eq!(syn.len(), 4);
    let listener = CapableListener { config: server };
    let offer = listener.on_syn(Some(&syn)).expect("SYN accepted");
    let srv = listener.accept(offer, KEY_B);
    let syn_ack = wire(&srv.syn_ack_option());
    assert_eq!(syn_ack.len(), 12);
    let client_side = init.on_syn_ack(Some(&syn_ack)).expect("SYN/ACK accepted");
    let ack = wire(&client_side.third_ack_option(None));
    assert_eq!(ack.len(), 20);
    let (server_side, data) = srv.on_third_ack(Some(&ack)).expect("third ACK accepted");
    assert_eq!(data, None);
    (client_side, server_side)
}

#[test]
fn capable_handshake_agrees_on_keys_tokens_and_idsns() {
    let (c, s) = handshake(CapableConfig::default(), no_checksums());
    assert_eq!((c.local_key, c.remote_key), (KEY_A, KEY_B));
    assert_eq!((s.local_key, s.remote_key), (KEY_B, KEY_A));
    assert_eq!(c.remote_token(), s.local_token());
    assert_eq!(c.local_token(), s.remote_token());
    assert_eq!(c.local_first_dsn(), s.remote_first_dsn());
    assert_eq!(c.local_first_dsn(), KEY_A.idsn().wrapping_add(1));
    assert!(c.checksums && s.checksums);
}

#[test]
fn checksums_are_used_if_either_side_requires_them() {
    // §3.1: "the only way for checksums not to be used is if both hosts in their SYNs set A=0".
    for (client, server, expected) in [
        (false, false, false),
        (true, false, true),
        (false, true, true),
        (true, true, true),
    ] {
        let cfg = |req| CapableConfig {
            checksum_required: req,
            ..CapableConfig::default()
        };
        let (c, s) = handshake(cfg(client), cfg(server));
        assert_eq!(
            (c.checksums, s.checksums),
            (expected, expected),
            "{client} {server}"
        );
    }
}

#[test]
fn flag_c_is_carried_to_the_peer() {
    let cfg = CapableConfig {
        no_subflows_to_source: true,
        ..CapableConfig::default()
    };
    let (c, s) = handshake(CapableConfig::default(), cfg);
    assert!(c.peer_no_subflows_to_source && !s.peer_no_subflows_to_source);
    let (c, s) = handshake(cfg, CapableConfig::default());
    assert!(!c.peer_no_subflows_to_source && s.peer_no_subflows_to_source);
}

#[test]
fn third_ack_with_data_yields_the_first_mapping() {
    let init = CapableInitiator::new(no_checksums(), KEY_A);
    let listener = CapableListener {
        config: no_checksums(),
    };
    let srv = listener.accept(listener.on_syn(Some(&wire(&init.syn_option()))).unwrap(), KEY_B);
    let c = init.on_syn_ack(Some(&wire(&srv.syn_ack_option()))).unwrap();
    let ack = wire(&c.third_ack_option(Some((1200, None))));
    assert_eq!(ack.len(), 22);
    let (s, mapping) = srv.on_third_ack(Some(&ack)).unwrap();
    let m = mapping.expect("mapping");
    assert_eq!(m.dsn, s.remote_first_dsn());
    assert_eq!(m.subflow_seq, SubflowSeq(1));
    assert_eq!(m.data_len, 1200);
    let with_csum = wire(&c.third_ack_option(Some((10, Some(0xabcd)))));
    assert_eq!(with_csum.len(), 24);
}

#[test]
fn syn_ack_without_mp_capable_falls_back() {
    let init = CapableInitiator::new(CapableConfig::default(), KEY_A);
    assert_eq!(init.on_syn_ack(None), Err(Fallback::NoMpCapable));
    let other = MptcpOption::MpPrio { backup: true };
    assert_eq!(init.on_syn_ack(Some(&other)), Err(Fallback::NoMpCapable));
}

fn syn_ack(version: u8, flags: u8, payload: CapablePayload) -> MptcpOption {
    MptcpOption::MpCapable(MpCapable {
        version,
        flags: CapableFlags(flags),
        payload,
    })
}

#[test]
fn unusable_syn_ack_falls_back() {
    let init = CapableInitiator::new(CapableConfig::default(), KEY_A);
    let key = CapablePayload::SenderKey { sender_key: KEY_B.0 };
    assert_eq!(
        init.on_syn_ack(Some(&syn_ack(0, 0x01, key))),
        Err(Fallback::Version { version: 0 })
    );
    assert_eq!(
        init.on_syn_ack(Some(&syn_ack(1, 0x41, key))),
        Err(Fallback::Extensibility)
    );
    assert_eq!(
        init.on_syn_ack(Some(&syn_ack(1, 0x80, key))),
        Err(Fallback::NoCrypto)
    );
    // The responder must choose exactly one algorithm, H.
    assert_eq!(
        init.on_syn_ack(Some(&syn_ack(1, 0x03, key))),
        Err(Fallback::UnsupportedCrypto { bits: 0x03 })
    );
    assert_eq!(
        init.on_syn_ack(Some(&syn_ack(1, 0x02, key))),
        Err(Fallback::UnsupportedCrypto { bits: 0x02 })
    );
    assert!(matches!(
        init.on_syn_ack(Some(&syn_ack(1, 0x01, CapablePayload::NoKeys))),
        Err(Fallback::WrongForm { .. })
    ));
    let refuse = CapableInitiator::new(
        CapableConfig {
            checksum_required: false,
            accept_checksums: false,
            no_subflows_to_source: false,
        },
        KEY_A,
    );
    assert_eq!(
        refuse.on_syn_ack(Some(&syn_ack(1, 0x81, key))),
        Err(Fallback::ChecksumRefused)
    );
}

#[test]
fn unusable_syn_is_answered_without_mp_capable() {
    let listener = CapableListener {
        config: CapableConfig::default(),
    };
    assert_eq!(listener.on_syn(None), Err(Fallback::NoMpCapable));
    // A v0 initiator's SYN carries its key (length 12) and version 0.
    let v0 = syn_ack(0, 0x81, CapablePayload::SenderKey { sender_key: 1 });
    assert_eq!(listener.on_syn(Some(&v0)), Err(Fallback::Version { version: 0 }));
    assert_eq!(
        listener.on_syn(Some(&syn_ack(1, 0x40 | 0x01, CapablePayload::NoKeys))),
        Err(Fallback::Extensibility)
    );
    assert_eq!(
        listener.on_syn(Some(&syn_ack(1, 0x80, CapablePayload::NoKeys))),
        Err(Fallback::NoCrypto)
    );
    assert_eq!(
        listener.on_syn(Some(&syn_ack(1, 0x02, CapablePayload::NoKeys))),
        Err(Fallback::UnsupportedCrypto { bits: 0x02 })
    );
    // An initiator may propose several algorithms as long as H is among them.
    assert!(
        listener
            .on_syn(Some(&syn_ack(1, 0x03, CapablePayload::NoKeys)))
            .is_ok()
    );
    assert!(matches!(
        listener.on_syn(Some(&syn_ack(
            1,
            0x01,
            CapablePayload::SenderKey { sender_key: 1 }
        ))),
        Err(Fallback::WrongForm { .. })
    ));
}

#[test]
fn third_ack_problems_fall_back() {
    let listener = CapableListener {
        config: CapableConfig::default(),
    };
    let syn = listener
        .on_syn(Some(&syn_ack(1, 0x81, CapablePayload::NoKeys)))
        .unwrap();
    let srv = listener.accept(syn, KEY_B);
    // §3.1: no MP_CAPABLE on the third ACK → MUST fall back.
    assert_eq!(srv.on_third_ack(None).map(|x| x.0), Err(Fallback::NoMpCapable));
    // Echoing a key that is not ours: negotiation compromised.
    let forged = syn_ack(
        1,
        0x81,
        CapablePayload::BothKeys {
            sender_key: KEY_A.0,
            receiver_key: KEY_B.0 ^ 1,
        },
    );
    assert_eq!(
        srv.on_third_ack(Some(&forged)).map(|x| x.0),
        Err(Fallback::KeyMismatch)
    );
    let wrong = syn_ack(1, 0x81, CapablePayload::SenderKey { sender_key: KEY_A.0 });
    assert!(matches!(
        srv.on_third_ack(Some(&wrong)),
        Err(Fallback::WrongForm { .. })
    ));
}

// ---- MP_JOIN.

fn connection() -> (Negotiated, Negotiated) {
    handshake(CapableConfig::default(), CapableConfig::default())
}

#[test]
fn join_handshake_authenticates_both_ways_with_backup_flag() {
    let (client, server) = connection();
    let init = JoinInitiator::new(&client, Nonce(0x1111_2222), true, 3);
    let syn = wire(&init.syn_option());
    assert_eq!(syn.len(), 12);
    let MptcpOption::MpJoin(MpJoin::Syn { receiver_token, .. }) = syn else {
        panic!()
    };
    assert_eq!(Token(receiver_token), server.local_token());
    let lookup = |t: Token| (t == server.local_token()).then_some(&server);
    let (resp, syn_ack) = JoinResponder::on_syn(Some(&syn), lookup, Nonce(0x3333_4444), false, 0).unwrap();
    let syn_ack = wire(&syn_ack);
    assert_eq!(syn_ack.len(), 16);
    let (joined_c, ack) = init.on_syn_ack(Some(&syn_ack)).unwrap();
    assert_eq!(
        joined_c,
        Joined {
            peer_backup: false,
            peer_addr_id: 0
        }
    );
    let ack = wire(&ack);
    assert_eq!(ack.len(), 24);
    let joined_s = resp.on_ack(Some(&ack)).unwrap();
    assert_eq!(
        joined_s,
        Joined {
            peer_backup: true,
            peer_addr_id: 3
        }
    );
}

#[test]
fn join_with_unknown_token_is_refused() {
    let (client, _server) = connection();
    let init = JoinInitiator::new(&client, Nonce(1), false, 1);
    let syn = wire(&init.syn_option());
    let err = JoinResponder::on_syn(Some(&syn), |_| None, Nonce(2), false, 0).unwrap_err();
    assert_eq!(err, JoinError::UnknownToken(client.remote_token()));
    assert_eq!(err.rst_reason(), RstReason::MptcpSpecific);
}

#[test]
fn forged_syn_ack_hmac_is_refused() {
    let (client, server) = connection();
    let init = JoinInitiator::new(&client, Nonce(1), false, 1);
    // An attacker who knows the token but not the keys.
    let forged = MptcpOption::MpJoin(MpJoin::SynAck {
        backup: false,
        addr_id: 0,
        truncated_hmac: join_synack_hmac(Key(0xbad), client.local_key, Nonce(9), Nonce(1)),
        sender_nonce: 9,
    });
    assert_eq!(
        init.on_syn_ack(Some(&forged)).unwrap_err(),
        JoinError::HmacMismatch
    );
    // The right HMAC for another nonce is refused too (no replay).
    let replay = MptcpOption::MpJoin(MpJoin::SynAck {
        backup: false,
        addr_id: 0,
        truncated_hmac: join_synack_hmac(server.local_key, server.remote_key, Nonce(9), Nonce(2)),
        sender_nonce: 9,
    });
    assert_eq!(
        init.on_syn_ack(Some(&replay)).unwrap_err(),
        JoinError::HmacMismatch
    );
    assert_eq!(init.on_syn_ack(None).unwrap_err(), JoinError::Missing);
    assert_eq!(
        init.on_syn_ack(Some(&init.syn_option())).unwrap_err(),
        JoinError::WrongForm
    );
}

#[test]
fn forged_third_ack_hmac_is_refused() {
    let (client, server) = connection();
    let init = JoinInitiator::new(&client, Nonce(5), false, 1);
    let syn = wire(&init.syn_option());
    let (resp, _) = JoinResponder::on_syn(Some(&syn), |_| Some(&server), Nonce(6), false, 0).unwrap();
    let forged = MptcpOption::MpJoin(MpJoin::Ack { hmac: [0x5a; 20] });
    assert_eq!(resp.on_ack(Some(&forged)).unwrap_err(), JoinError::HmacMismatch);
    assert_eq!(resp.on_ack(None).unwrap_err(), JoinError::Missing);
    assert_eq!(resp.on_ack(Some(&syn)).unwrap_err(), JoinError::WrongForm);
    assert_eq!(
        resp.on_ack(Some(&MptcpOption::MpFail { dsn: 0 })).unwrap_err(),
        JoinError::Missing
    );
}

#[test]
fn data_level_buffers_start_at_the_negotiated_dsns() {
    use mpbond::mptcp::recv::DataRecvBuffer;
    use mpbond::mptcp::send::{DataSendBuffer, SubflowId};
    let (c, s) = connection();
    let mut snd = DataSendBuffer::new(c.local_first_dsn(), 100);
    let mut rcv = DataRecvBuffer::new(s.remote_first_dsn(), 100);
    snd.write(b"hi").unwrap();
    let chunk = snd.next_chunk(SubflowId(0), 100).unwrap();
    let mut buf = [0u8; 2];
    snd.copy_out(chunk.dsn, &mut buf);
    rcv.insert(chunk.dsn, &buf);
    assert_eq!(rcv.data_ack(), DataSeq(c.local_key.idsn().0.wrapping_add(3)));
}

#[test]
fn fastclose_carries_the_peer_key_and_only_that_key_is_accepted() {
    let (c, s) = connection();
    let fc = wire(&c.fastclose_option());
    assert_eq!(
        fc,
        MptcpOption::MpFastclose {
            receiver_key: KEY_B.0
        }
    );
    assert!(s.is_valid_fastclose(&fc));
    assert!(!c.is_valid_fastclose(&fc), "our own key was not sent");
    assert!(!s.is_valid_fastclose(&MptcpOption::MpFastclose {
        receiver_key: KEY_B.0 ^ 1
    }));
    assert!(!s.is_valid_fastclose(&MptcpOption::MpFail { dsn: KEY_B.0 }));
}
