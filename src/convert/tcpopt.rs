//! TCP options fields inside Convert TLVs (the Connect TLV's TCP Options, §6.2.5, and the Extended
//! TCP Header, §6.2.6): the RFC 9293 §3.1 option layout, walked without reading past the field.

/// Validates a TCP options field (RFC 9293 §3.1 layout: kinds 0 and 1 are one byte, every other
/// option is Kind, Length ≥ 2, value) and returns the length of its meaningful part: up to the
/// end of the last option that is not EOL, so trailing zero padding is dropped.
pub fn options_len(field: &[u8]) -> Result<usize, &'static str> {
    let mut i = 0;
    let mut end = 0;
    while let Some(&k) = field.get(i) {
        match k {
            0 => i += 1,
            1 => {
                i += 1;
                end = i;
            }
            _ => {
                let len = usize::from(*field.get(i + 1).ok_or("TCP option without length")?);
                if len < 2 {
                    return Err("TCP option length below 2");
                }
                if i + len > field.len() {
                    return Err("TCP option overruns the field");
                }
                i += len;
                end = i;
            }
        }
    }
    Ok(end)
}

/// Whether a (validated) options field holds an EOL or NOP byte.
pub(crate) fn has_eol_or_nop(field: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&k) = field.get(i) {
        if k < 2 {
            return true;
        }
        i += usize::from(field.get(i + 1).copied().unwrap_or(2).max(2));
    }
    false
}

/// The options with a length field (kind ≥ 2) of a TCP options field, each as (kind, whole
/// option bytes); EOL and NOP bytes are skipped; the walk stops at the first invalid option.
pub fn tcp_options(field: &[u8]) -> TcpOptions<'_> {
    TcpOptions { rest: field }
}

/// Iterator of [`tcp_options`].
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let &k = self.rest.first()?;
            if k < 2 {
                self.rest = &self.rest[1..];
                continue;
            }
            let len = usize::from(*self.rest.get(1)?);
            let opt = self.rest.get(..len).filter(|_| len >= 2);
            let Some(opt) = opt else {
                self.rest = &[];
                return None;
            };
            self.rest = &self.rest[len..];
            return Some((k, opt));
        }
    }
}
