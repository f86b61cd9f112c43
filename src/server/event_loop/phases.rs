//! The phase transitions of one connection (see the parent module's picture): reading the
//! request, policy and limits, the dial, the relay pump, refusals and closing.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr};

use mio::{Interest, Token};

use super::{
    CONN_BASE, Conn, EARLY_MAX, End, EventLoop, Phase, REFUSE_LINGER, RELAY_BUDGET, is_block, linger0, lock,
    unix_now,
};
use crate::convert::converter::{self, RefusalCause, Request};
use crate::convert::key::KeyId;
use crate::convert::msg::ErrorCode;
use crate::server::dial;
use crate::server::relay::{Fault, Half, Pumped};
use crate::time::Instant;

impl EventLoop {
    pub(super) fn read_request(&mut self, slot: usize, now: Instant) {
        let max = self.cfg.converter.max_request_len;
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Phase::Request { buf, .. } = &mut c.phase else {
            return;
        };
        let cap = max + EARLY_MAX;
        let mut eof = false;
        let mut chunk = [0u8; 4096];
        while buf.len() < cap {
            let room = (cap - buf.len()).min(chunk.len());
            match (&c.up).read(&mut chunk[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_block(&e) => break,
                Err(_) => {
                    self.stats.add("request_errors", 1);
                    self.close(slot, End::Reset, now);
                    return;
                }
            }
        }
        if buf.is_empty() {
            if eof {
                self.stats.add("request_eof", 1);
                self.close(slot, End::Close, now);
            }
            return;
        }
        let verdict = lock(&self.converter).check_request(unix_now(), buf);
        match verdict {
            Request::Incomplete if buf.len() > max || eof => {
                // Longer than any valid message, or the client stopped sending: truncated.
                self.refuse(
                    slot,
                    RefusalCause::Malformed,
                    None,
                    converter::error_reply(ErrorCode::MalformedMessage, &[]),
                    now,
                );
            }
            Request::Incomplete => {}
            Request::Refused { cause, key, reply } => self.refuse(slot, cause, key, reply, now),
            Request::Connect {
                dst, key, consumed, ..
            } => {
                let early = buf.get(consumed..).unwrap_or_default().to_vec();
                self.admit(slot, dst, key, early, now);
            }
        }
    }

    pub(super) fn admit(&mut self, slot: usize, dst: SocketAddr, key: KeyId, early: Vec<u8>, now: Instant) {
        if let Err(class) = self.policy.check(dst) {
            *self.stats.policy_denied.entry(class.name()).or_default() += 1;
            let reply = converter::error_reply(RefusalCause::Policy.error_code(), &[]);
            self.refuse(slot, RefusalCause::Policy, Some(key), reply, now);
            return;
        }
        // The request phase ends here; the dial counts against the key from now on.
        lock(&self.limits).end_request();
        let admitted = lock(&self.limits).try_dial(key);
        if let Err(hit) = admitted {
            *self.stats.limit_hits.entry(hit.name()).or_default() += 1;
            let reply = converter::error_reply(ErrorCode::ResourceExceeded, &[]);
            self.set_refusing(slot, RefusalCause::Limit, Some(key), reply, now);
            return;
        }
        match dial::start(dst) {
            Ok(mut down) => {
                let tok = Token(CONN_BASE + 2 * slot + 1);
                if let Err(e) =
                    self.registry
                        .register(&mut down, tok, Interest::READABLE | Interest::WRITABLE)
                {
                    tracing::warn!("register: {e}");
                    lock(&self.limits).dial_done(key);
                    lock(&self.limits).release(key);
                    self.close(slot, End::Reset, now);
                    return;
                }
                if let Some(c) = self.conns[slot].as_mut() {
                    tracing::debug!(conn = c.id, peer = %c.peer, %dst, %key, "dialing");
                    c.phase = Phase::Dialing {
                        key,
                        dst,
                        down,
                        early,
                        deadline: now + self.cfg.dial_timeout,
                    };
                }
            }
            Err(e) => {
                lock(&self.limits).dial_done(key);
                lock(&self.limits).release(key);
                let f = dial::classify(&e, None);
                self.dial_failed_log(slot, dst, &e, now);
                let reply = converter::error_reply(f.cause.error_code(), &f.value());
                self.set_refusing(slot, f.cause, Some(key), reply, now);
            }
        }
    }

    pub(super) fn dial_failed_log(&mut self, slot: usize, dst: SocketAddr, e: &io::Error, now: Instant) {
        if self.log_limit.allow(now)
            && let Some(c) = self.conns[slot].as_ref()
        {
            tracing::info!(conn = c.id, peer = %c.peer, %dst, "dial failed: {e}");
        }
    }

    pub(super) fn check_dial(&mut self, slot: usize, now: Instant) {
        let Some(Conn {
            phase: Phase::Dialing { down, .. },
            ..
        }) = self.conns[slot].as_ref()
        else {
            return;
        };
        let err = match down.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match down.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        match err {
            Some(e) => {
                let f = dial::failure(down, &e);
                self.dial_failure(slot, f, Some(e), now);
            }
            None => self.connected(slot, now),
        }
    }

    pub(super) fn dial_failure(
        &mut self,
        slot: usize,
        f: dial::DialFailure,
        e: Option<io::Error>,
        now: Instant,
    ) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let Phase::Dialing { key, dst, down, .. } = &mut c.phase else {
            return;
        };
        let (key, dst) = (*key, *dst);
        let _ = self.registry.deregister(down);
        lock(&self.limits).dial_done(key);
        lock(&self.limits).release(key);
        let e = e.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut));
        self.dial_failed_log(slot, dst, &e, now);
        let reply = converter::error_reply(f.cause.error_code(), &f.value());
        self.set_refusing(slot, f.cause, Some(key), reply, now);
    }

    pub(super) fn connected(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let old = std::mem::replace(
            &mut c.phase,
            Phase::Refusing {
                reply: Vec::new(),
                off: 0,
                shut: false,
                deadline: now,
            },
        );
        let Phase::Dialing {
            key,
            dst,
            down,
            early,
            ..
        } = old
        else {
            c.phase = old;
            return;
        };
        lock(&self.limits).dial_done(key);
        // RFC 8803 §4.2: the converter confirms the connection once the server accepted it; the
        // first bytes of the bytestream carry the options negotiated with the server (§6.2.6).
        // The kernel has already sent the SYN/ACK to the client (it answers TFO SYNs at once), so
        // the Convert reply is the first data instead.
        let reply = converter::connected_reply(&dial::synack_options(&down));
        tracing::debug!(conn = c.id, peer = %c.peer, %dst, %key, "connected");
        c.phase = Phase::Relay {
            key,
            down,
            reply_len: reply.len() as u64,
            up_half: Half::with_prefix(early),
            down_half: Half::with_prefix(reply),
            counted_up: 0,
            counted_down: 0,
            active: now,
            held: false,
        };
        self.stats.add("connected", 1);
        self.stats.key(key).connected_total += 1;
        self.pump(slot, now);
    }

    pub(super) fn pump(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        // The destination may have answered before the client's final ACK arrived (its path is
        // the longer one): nothing goes to the client before (see `Conn::up_ready`); the ACK's
        // arrival wakes the socket and drives this again.
        let ready = c.up_ready();
        let Phase::Relay {
            key,
            down,
            up_half,
            down_half,
            reply_len,
            counted_up,
            counted_down,
            active,
            held,
        } = &mut c.phase
        else {
            return;
        };
        if !ready && !*held {
            *held = true;
            self.stats.add("replies_held", 1);
        }
        let r_up = up_half.pump(&c.up, down, &mut self.pool, RELAY_BUDGET);
        let r_down = if ready {
            down_half.pump(down, &c.up, &mut self.pool, RELAY_BUDGET)
        } else {
            Ok(Pumped::Blocked)
        };
        let up_bytes = up_half.bytes;
        let down_bytes = down_half.bytes.saturating_sub(*reply_len);
        let (du, dd) = (up_bytes - *counted_up, down_bytes.saturating_sub(*counted_down));
        *counted_up = up_bytes;
        *counted_down = down_bytes.max(*counted_down);
        if du + dd > 0 {
            *active = now;
            let k = self.stats.key(*key);
            k.bytes_up += du;
            k.bytes_down += dd;
            self.stats.add("bytes_up", du);
            self.stats.add("bytes_down", dd);
        }
        let finished = up_half.finished() && down_half.finished();
        let end = match (r_up, r_down) {
            // The client reset (or its side failed): reset the destination, and the other way round.
            (Err(Fault::Src(_)), _) | (_, Err(Fault::Dst(_))) => Some(End::ResetDown),
            (Err(Fault::Dst(_)), _) | (_, Err(Fault::Src(_))) => Some(End::ResetUp),
            (Err(Fault::Resource(e)), _) | (_, Err(Fault::Resource(e))) => {
                if self.log_limit.allow(now) {
                    tracing::warn!("no pipe for a relay: {e}");
                }
                self.stats.add("pipe_exhausted", 1);
                Some(End::Reset)
            }
            (Ok(a), Ok(b)) => {
                if a == Pumped::Budget || b == Pumped::Budget {
                    self.again.push(slot);
                }
                finished.then_some(End::Close)
            }
        };
        if let Some(end) = end {
            self.stats.add(
                match end {
                    End::Close => "closed",
                    End::ResetDown => "reset_by_client",
                    _ => "reset_by_destination",
                },
                1,
            );
            self.close(slot, end, now);
        }
    }

    /// Refuses a connection still in its request phase.
    pub(super) fn refuse(
        &mut self,
        slot: usize,
        cause: RefusalCause,
        key: Option<KeyId>,
        reply: Vec<u8>,
        now: Instant,
    ) {
        lock(&self.limits).end_request();
        self.set_refusing(slot, cause, key, reply, now);
    }

    /// Writes `reply`, sends FIN, drains what the client still sends, closes (limits already
    /// released by the caller). The destination never saw a SYN for a refused request: every
    /// refusal before the dial happens here, before `dial::start`.
    pub(super) fn set_refusing(
        &mut self,
        slot: usize,
        cause: RefusalCause,
        key: Option<KeyId>,
        reply: Vec<u8>,
        now: Instant,
    ) {
        self.stats.refused(cause, key);
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if self.log_limit.allow(now) {
            match key {
                Some(k) => tracing::info!(conn = c.id, peer = %c.peer, key = %k, "refused: {}", cause.name()),
                None => tracing::info!(conn = c.id, peer = %c.peer, "refused: {}", cause.name()),
            }
        }
        if reply.is_empty() {
            // Not a Convert message at all (§6: "SHOULD silently ignore"), or Total Length 0
            // (§6.1: "the connection MUST be reset"): no reply, an RST.
            self.close(slot, End::Reset, now);
            return;
        }
        c.phase = Phase::Refusing {
            reply,
            off: 0,
            shut: false,
            deadline: now + REFUSE_LINGER,
        };
        self.refusing(slot, now);
    }

    pub(super) fn refusing(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if !c.up_ready() {
            return;
        }
        let Phase::Refusing { reply, off, shut, .. } = &mut c.phase else {
            return;
        };
        while *off < reply.len() {
            match (&c.up).write(&reply[*off..]) {
                Ok(n) => *off += n,
                Err(e) if is_block(&e) => return,
                Err(_) => return self.close(slot, End::Reset, now),
            }
        }
        if !*shut {
            *shut = true;
            let _ = c.up.shutdown(Shutdown::Write);
        }
        let mut scratch = [0u8; 4096];
        for _ in 0..16 {
            match (&c.up).read(&mut scratch) {
                Ok(0) => return self.close(slot, End::Close, now),
                Ok(_) => {}
                Err(e) if is_block(&e) => return,
                Err(_) => return self.close(slot, End::Reset, now),
            }
        }
        // Still sending after its refusal: a flooder.
        self.close(slot, End::Reset, now);
    }

    pub(super) fn close(&mut self, slot: usize, end: End, _now: Instant) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let reg = &self.registry;
        let _ = reg.deregister(&mut c.up);
        match &mut c.phase {
            Phase::Request { .. } => lock(&self.limits).end_request(),
            Phase::Dialing { key, down, .. } => {
                let _ = reg.deregister(down);
                lock(&self.limits).dial_done(*key);
                lock(&self.limits).release(*key);
            }
            Phase::Relay {
                key,
                down,
                up_half,
                down_half,
                ..
            } => {
                let _ = reg.deregister(down);
                up_half.release(&mut self.pool);
                down_half.release(&mut self.pool);
                lock(&self.limits).release(*key);
                if matches!(end, End::Reset | End::ResetDown) {
                    linger0(down);
                }
            }
            Phase::Refusing { .. } => {}
        }
        if matches!(end, End::Reset | End::ResetUp) {
            linger0(&c.up);
        }
        self.free.push(slot);
    }
}
