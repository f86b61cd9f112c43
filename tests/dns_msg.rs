//! Fuzz-style property tests of the DNS message codec: no input makes it panic, and what it
//! reads back from a query it built is what went in.

#![allow(clippy::unwrap_used, reason = "tests panic on a broken expectation")]

use mpbond::dns::msg::{self, Header};
use proptest::prelude::*;

fn build(id: u16, labels: &[Vec<u8>], qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in labels {
        m.push(l.len() as u8);
        m.extend_from_slice(l);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Header::parse(&bytes);
        let q = msg::parse_question(&bytes);
        if let Ok((q, end)) = &q {
            prop_assert!(*end <= bytes.len());
            prop_assert!(q.name.len() <= msg::MAX_NAME_LEN);
        }
        let end = q.ok().map(|(_, e)| e);
        if let Some(s) = msg::servfail(&bytes, end) {
            let h = Header::parse(&s).unwrap();
            prop_assert!(h.is_response());
            prop_assert_eq!(h.rcode(), msg::RCODE_SERVFAIL);
        }
        let mut copy = bytes.clone();
        msg::set_id(&mut copy, 0xabcd);
    }

    #[test]
    fn a_built_query_reads_back(
        id in any::<u16>(),
        labels in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..20), 1..6),
        qtype in any::<u16>(),
    ) {
        let m = build(id, &labels, qtype);
        let h = Header::parse(&m).unwrap();
        prop_assert_eq!(h.id, id);
        let (q, end) = msg::parse_question(&m).unwrap();
        prop_assert_eq!(end, m.len());
        prop_assert_eq!(q.qtype, qtype);
        prop_assert_eq!(&q.name[..], &m[12..end - 4]);
    }

    #[test]
    fn mutated_queries_never_panic(
        labels in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 1..5),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let mut m = build(1, &labels, 1);
        for (at, v) in flips {
            let n = m.len();
            m[at % n] = v;
        }
        m.truncate(cut % (m.len() + 1));
        let _ = msg::parse_question(&m);
        let _ = msg::servfail(&m, None);
    }
}
