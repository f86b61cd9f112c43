//! Just enough of the DNS message format (RFC 1035 §4.1) to forward: the header, the first
//! question (to match an answer to its query), rewriting the ID, and a SERVFAIL answer. Every
//! parser returns an error on bad input and never panics (fuzzed in `tests/dns_msg.rs`).

/// Length of the fixed header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// Longest name in wire form, length octets included (RFC 1035 §2.3.4: 255 octets or less).
pub const MAX_NAME_LEN: usize = 255;
/// Compression pointers followed in one name at most (a loop guard).
const MAX_POINTERS: usize = 16;

/// QR: the message is a response.
const FLAG_QR: u16 = 0x8000;
/// TC: the message was truncated.
const FLAG_TC: u16 = 0x0200;
/// RD: recursion desired.
const FLAG_RD: u16 = 0x0100;
/// RA: recursion available.
const FLAG_RA: u16 = 0x0080;
/// RCODE 2: the server could not process the query.
pub const RCODE_SERVFAIL: u8 = 2;
/// OPCODE 0: a standard query.
pub const OPCODE_QUERY: u8 = 0;

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// Shorter than the fixed header.
    #[error("shorter than the 12-byte header")]
    Short,
    /// The header says there is no question.
    #[error("no question")]
    NoQuestion,
    /// The question runs past the end of the message.
    #[error("question cut short")]
    Truncated,
    /// A label type other than a plain label or a compression pointer (RFC 1035 §4.1.4).
    #[error("unknown label type")]
    LabelType,
    /// A compression pointer that does not point backwards, or too many of them.
    #[error("bad compression pointer")]
    Pointer,
    /// The name is longer than 255 octets.
    #[error("name longer than 255 octets")]
    NameTooLong,
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Query ID, copied into the answer.
    pub id: u16,
    /// QR, OPCODE, AA, TC, RD, RA, Z, RCODE.
    pub flags: u16,
    /// Questions.
    pub qdcount: u16,
    /// Answer records.
    pub ancount: u16,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Header {
    /// Reads the header of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Header, MsgError> {
        if msg.len() < HEADER_LEN {
            return Err(MsgError::Short);
        }
        Ok(Header {
            id: be16(msg, 0).ok_or(MsgError::Short)?,
            flags: be16(msg, 2).ok_or(MsgError::Short)?,
            qdcount: be16(msg, 4).ok_or(MsgError::Short)?,
            ancount: be16(msg, 6).ok_or(MsgError::Short)?,
        })
    }

    /// QR is set.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// The OPCODE (0 = standard query).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// The RCODE.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }

    /// TC is set.
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
}

/// The first question of a message: its name (wire form without compression, ASCII letters
/// lowercased, so names compare as RFC 1035 §2.3.3 says: case-insensitively), type and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name in wire form (length-prefixed labels, ending with the root's 0).
    pub name: Vec<u8>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// Reads the name at `at`; returns it (uncompressed, lowercased) and the offset just after it
/// in the message (after the pointer, if it ended with one).
fn parse_name(msg: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), MsgError> {
    let mut name = Vec::with_capacity(32);
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at).ok_or(MsgError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                if name.len() + 1 + len > MAX_NAME_LEN {
                    return Err(MsgError::NameTooLong);
                }
                name.push(len as u8);
                if len == 0 {
                    return Ok((name, end.unwrap_or(at + 1)));
                }
                let label = msg.get(at + 1..at + 1 + len).ok_or(MsgError::Truncated)?;
                name.extend(label.iter().map(u8::to_ascii_lowercase));
                at += 1 + len;
            }
            // RFC 1035 §4.1.4: a pointer is two octets whose first two bits are ones.
            0xc0 => {
                let target = usize::from(be16(msg, at).ok_or(MsgError::Truncated)? & 0x3fff);
                // Only backwards (a pointer to itself or later could loop).
                if target >= at || pointers >= MAX_POINTERS {
                    return Err(MsgError::Pointer);
                }
                pointers += 1;
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(MsgError::LabelType),
        }
    }
}

/// Reads the first question of `msg`; returns it and the offset just after it.
pub fn parse_question(msg: &[u8]) -> Result<(Question, usize), MsgError> {
    let h = Header::parse(msg)?;
    if h.qdcount == 0 {
        return Err(MsgError::NoQuestion);
    }
    let (name, at) = parse_name(msg, HEADER_LEN)?;
    let qtype = be16(msg, at).ok_or(MsgError::Truncated)?;
    let qclass = be16(msg, at + 2).ok_or(MsgError::Truncated)?;
    Ok((Question { name, qtype, qclass }, at + 4))
}

/// Writes `id` into the header of `msg` (no-op on a message shorter than the header).
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(b) = msg.get_mut(..2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
}

/// A SERVFAIL answer to `query` (RFC 1035 §4.1.1: RCODE 2, "the name server was unable to
/// process this query"): same ID, OPCODE and RD, with the query's question section when
/// `question_end` (from [`parse_question`]) says where it ends, else none. `None` when the query
/// has no complete header (there is no ID to answer with).
pub fn servfail(query: &[u8], question_end: Option<usize>) -> Option<Vec<u8>> {
    let h = Header::parse(query).ok()?;
    let question = question_end.and_then(|end| query.get(HEADER_LEN..end));
    let flags = FLAG_QR | (h.flags & (0xf << 11)) | (h.flags & FLAG_RD) | FLAG_RA | u16::from(RCODE_SERVFAIL);
    let mut m = Vec::with_capacity(HEADER_LEN + question.map_or(0, <[u8]>::len));
    m.extend_from_slice(&h.id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    m.extend_from_slice(&[0; 6]);
    if let Some(q) = question {
        m.extend_from_slice(q);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn reads_header_and_question() {
        let q = query("Lab.Test");
        let h = Header::parse(&q).unwrap();
        assert_eq!(
            (h.id, h.qdcount, h.is_response(), h.opcode()),
            (0x1234, 1, false, 0)
        );
        let (question, end) = parse_question(&q).unwrap();
        assert_eq!(question.name, b"\x03lab\x04test\x00");
        assert_eq!((question.qtype, question.qclass, end), (1, 1, q.len()));
    }

    #[test]
    fn follows_backward_pointers_only() {
        // A question whose name is a pointer into the header region (backwards) is followed;
        // a pointer to itself is refused.
        let mut m = query("a");
        let name_at = HEADER_LEN;
        m.truncate(name_at);
        m.extend_from_slice(&[0xc0, name_at as u8, 0, 1, 0, 1]);
        assert_eq!(parse_question(&m), Err(MsgError::Pointer));
        let mut m = query("a");
        // Second name "b" + pointer to the first name, parsed directly.
        let first_end = m.len() - 4;
        m.extend_from_slice(&[1, b'b', 0xc0, HEADER_LEN as u8]);
        let (name, end) = parse_name(&m, first_end + 4).unwrap();
        assert_eq!(name, b"\x01b\x01a\x00");
        assert_eq!(end, m.len());
    }

    #[test]
    fn refuses_bad_questions() {
        assert_eq!(Header::parse(&[0; 11]), Err(MsgError::Short));
        let mut q = query("lab.test");
        q[5] = 0;
        assert_eq!(parse_question(&q), Err(MsgError::NoQuestion));
        let q = query("lab.test");
        assert_eq!(parse_question(&q[..q.len() - 1]), Err(MsgError::Truncated));
        let mut q = query("lab.test");
        q[HEADER_LEN] = 0x43;
        assert_eq!(parse_question(&q), Err(MsgError::LabelType));
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        assert_eq!(parse_question(&query(&long)), Err(MsgError::NameTooLong));
    }

    #[test]
    fn servfail_keeps_id_opcode_rd_and_question() {
        let q = query("lab.test");
        let (_, end) = parse_question(&q).unwrap();
        let a = servfail(&q, Some(end)).unwrap();
        let h = Header::parse(&a).unwrap();
        assert!(h.is_response());
        assert_eq!(
            (h.id, h.rcode(), h.opcode(), h.qdcount),
            (0x1234, RCODE_SERVFAIL, 0, 1)
        );
        assert_eq!(h.flags & FLAG_RD, FLAG_RD);
        assert_eq!(&a[HEADER_LEN..], &q[HEADER_LEN..]);
        let bare = servfail(&q[..HEADER_LEN + 3], None).unwrap();
        assert_eq!(Header::parse(&bare).unwrap().qdcount, 0);
        assert_eq!(bare.len(), HEADER_LEN);
        assert_eq!(servfail(&q[..5], None), None);
    }

    #[test]
    fn set_id_rewrites_the_first_two_bytes() {
        let mut q = query("x");
        set_id(&mut q, 0xbeef);
        assert_eq!(Header::parse(&q).unwrap().id, 0xbeef);
        let mut short = [1u8];
        set_id(&mut short, 7);
        assert_eq!(short, [1]);
    }
}
