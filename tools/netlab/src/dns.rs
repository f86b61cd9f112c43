//! A tiny DNS (RFC 1035) responder and client for the lab, enough for a request/response over UDP
//! port 53 as a resolver makes it: one question per message, class IN, type A or AAAA. Every name
//! resolves to the lab's plain TCP server ([`crate::Server::Tcp`]: 198.19.0.11 / fd19::11), so a
//! test can resolve a name, then connect to what it got. Other questions get an error response
//! (RFC 1035 §4.1.1: FORMERR for a message that cannot be read, NOTIMP for another type or class).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// UDP port of the lab's DNS responder (on the UDP echo host's addresses).
pub const DNS_PORT: u16 = 53;
/// Query type A (IPv4 address).
pub const TYPE_A: u16 = 1;
/// Query type AAAA (IPv6 address, RFC 3596).
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
const RCODE_FORMERR: u16 = 1;
const RCODE_NOTIMP: u16 = 4;
/// TTL of every answer, in seconds.
pub const TTL: u32 = 60;

/// A DNS response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name has an empty label or one over 63 bytes, or is over 253 bytes.
    #[error("bad name `{0}`")]
    BadName(String),
    /// The message ends inside its header, question or an answer.
    #[error("truncated message")]
    Truncated,
    /// The message answers another query (its ID differs) or is not a response.
    #[error("not the response to query {0:#06x}")]
    NotOurs(u16),
    /// The server answered with an error code.
    #[error("server error, rcode {0}")]
    Rcode(u16),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A standard query (recursion desired) for `name` of type `qtype` with ID `id`.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(DnsError::BadName(name.to_owned()));
    }
    let mut m = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT 1
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.to_owned()));
        }
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(m)
}

/// Offset just past the (uncompressed or pointer-ended) name starting at `at`.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    // At most 128 labels fit in a 255-byte name: a bound on the walk.
    for _ in 0..128 {
        let len = *m.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= m.len()).then_some(at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

/// The responder's answer to `query`; `None` when the message is no query at all (too short, or a
/// response), which a server ignores.
pub fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let id = be16(query, 0)?;
    let flags = be16(query, 2)?;
    if query.len() < HEADER_LEN || flags & 0x8000 != 0 {
        return None;
    }
    let reply = |rcode: u16, question: &[u8], answer: Option<(u16, IpAddr)>| {
        let mut r = Vec::with_capacity(HEADER_LEN + question.len() + 28);
        r.extend_from_slice(&id.to_be_bytes());
        // QR, the query's opcode and RD, RA, rcode.
        r.extend_from_slice(&(0x8000 | (flags & 0x7900) | 0x0080 | rcode).to_be_bytes());
        let qd = u16::from(!question.is_empty());
        let an = u16::from(answer.is_some());
        for v in [qd, an, 0, 0] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        r.extend_from_slice(question);
        if let Some((qtype, ip)) = answer {
            r.extend_from_slice(&[0xc0, HEADER_LEN as u8]); // pointer to the question's name
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&TTL.to_be_bytes());
            match ip {
                IpAddr::V4(a) => {
                    r.extend_from_slice(&4u16.to_be_bytes());
                    r.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    r.extend_from_slice(&16u16.to_be_bytes());
                    r.extend_from_slice(&a.octets());
                }
            }
        }
        r
    };
    let opcode = (flags >> 11) & 0xf;
    if be16(query, 4) != Some(1) || opcode != 0 {
        return Some(reply(RCODE_FORMERR, &[], None));
    }
    let Some(end) = skip_name(query, HEADER_LEN).filter(|&e| e + 4 <= query.len()) else {
        return Some(reply(RCODE_FORMERR, &[], None));
    };
    let question = &query[HEADER_LEN..end + 4];
    let (qtype, qclass) = (be16(query, end)?, be16(query, end + 2)?);
    let server = crate::Server::Tcp;
    match (qtype, qclass) {
        (TYPE_A, CLASS_IN) => Some(reply(0, question, Some((qtype, server.ip(false))))),
        (TYPE_AAAA, CLASS_IN) => Some(reply(0, question, Some((qtype, server.ip(true))))),
        _ => Some(reply(RCODE_NOTIMP, question, None)),
    }
}

/// The addresses in `msg`, the response to query `id`.
pub fn parse_response(msg: &[u8], id: u16) -> Result<Vec<IpAddr>, DnsError> {
    let flags = be16(msg, 2).ok_or(DnsError::Truncated)?;
    if msg.len() < HEADER_LEN {
        return Err(DnsError::Truncated);
    }
    if be16(msg, 0) != Some(id) || flags & 0x8000 == 0 {
        return Err(DnsError::NotOurs(id));
    }
    if flags & 0xf != 0 {
        return Err(DnsError::Rcode(flags & 0xf));
    }
    let (qd, an) = (
        be16(msg, 4).ok_or(DnsError::Truncated)?,
        be16(msg, 6).ok_or(DnsError::Truncated)?,
    );
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at).ok_or(DnsError::Truncated)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at).ok_or(DnsError::Truncated)?;
        let rtype = be16(msg, at).ok_or(DnsError::Truncated)?;
        let rdlen = usize::from(be16(msg, at + 8).ok_or(DnsError::Truncated)?);
        let rdata = msg.get(at + 10..at + 10 + rdlen).ok_or(DnsError::Truncated)?;
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
            (TYPE_AAAA, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                out.push(IpAddr::V6(Ipv6Addr::from(o)));
            }
            _ => {}
        }
        at += 10 + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_and_aaaa_resolve_to_the_tcp_server() {
        let q = build_query(0x1234, "server.lab.", TYPE_A).unwrap();
        let r = answer(&q).unwrap();
        assert_eq!(
            parse_response(&r, 0x1234).unwrap(),
            vec![crate::Server::Tcp.ip(false)]
        );
        let q = build_query(7, "x", TYPE_AAAA).unwrap();
        let r = answer(&q).unwrap();
        assert_eq!(parse_response(&r, 7).unwrap(), vec![crate::Server::Tcp.ip(true)]);
        assert_eq!(parse_response(&r, 8), Err(DnsError::NotOurs(8)));
    }

    #[test]
    fn bad_queries_get_errors_and_no_input_panics() {
        let mut q = build_query(1, "a.b", 15).unwrap(); // MX
        assert_eq!(parse_response(&answer(&q).unwrap(), 1), Err(DnsError::Rcode(4)));
        q.truncate(14);
        assert_eq!(parse_response(&answer(&q).unwrap(), 1), Err(DnsError::Rcode(1)));
        assert_eq!(answer(&[1, 2, 3]), None);
        assert!(build_query(1, "a..b", TYPE_A).is_err());
        // Every prefix of a response, and every byte flipped, parses or errs without panicking.
        let r = answer(&build_query(9, "host.example", TYPE_AAAA).unwrap()).unwrap();
        for n in 0..r.len() {
            let _ = parse_response(&r[..n], 9);
            let _ = answer(&r[..n]);
            let mut m = r.clone();
            m[n] ^= 0xff;
            let _ = parse_response(&m, 9);
            let _ = answer(&m);
        }
    }
}
