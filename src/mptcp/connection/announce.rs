//! The server's own addresses announced to the peer with ADD_ADDR (RFC 8684 §3.4.1), repeated
//! until echoed, and the address IDs joins to them are answered with.

use std::net::IpAddr;
use std::time::Duration;

use super::Connection;
use crate::mptcp::addr;
use crate::time::Instant;

/// ADD_ADDR repetitions until echoed, and their spacing.
const ANNOUNCE_TRIES: u8 = 4;
const ANNOUNCE_RTX: Duration = Duration::from_secs(1);

/// One of our own addresses announced to the peer with ADD_ADDR, repeated until echoed.
#[derive(Debug, Clone, Copy)]
struct Announcement {
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
    next: Instant,
    sent: u8,
}

impl Announcement {
    fn pending(&self) -> bool {
        self.sent < ANNOUNCE_TRIES
    }
}

/// Our announced addresses, by address ID.
#[derive(Debug, Default)]
pub(super) struct Announcements(Vec<Announcement>);

impl Announcements {
    /// §3.2: our address ID for `local`, the address a join came to (0: the initial one).
    pub fn id_of(&self, local: IpAddr) -> u8 {
        self.0.iter().find(|a| a.addr == local).map_or(0, |a| a.addr_id)
    }

    /// The peer echoed announcement `addr_id`: §3.4.1, the echo ends its repetitions.
    pub fn echoed(&mut self, addr_id: u8) {
        if let Some(x) = self.0.iter_mut().find(|x| x.addr_id == addr_id) {
            x.sent = ANNOUNCE_TRIES;
        }
    }

    /// When the next repetition is due, if any is still pending.
    pub fn next(&self) -> Option<Instant> {
        self.0.iter().filter(|a| a.pending()).map(|a| a.next).min()
    }
}

impl Connection {
    /// Server: announces our address `addr` (and `port`, if joins should use another port) under
    /// `addr_id` (1–255) with ADD_ADDR, repeated until the peer echoes it (RFC 8684 §3.4.1);
    /// joins that arrive for it are answered with that address ID. False if the connection
    /// does not use MPTCP or the ID is 0 or taken.
    pub fn announce_addr(&mut self, now: Instant, addr_id: u8, addr: IpAddr, port: Option<u16>) -> bool {
        if addr_id == 0 || !self.is_mptcp() || self.announced.0.iter().any(|a| a.addr_id == addr_id) {
            return false;
        }
        self.announced.0.push(Announcement {
            addr_id,
            addr,
            port,
            next: now,
            sent: 0,
        });
        self.after_io(now);
        true
    }

    /// Phase 13, after liveness and priorities settled which subflows carry data: due ADD_ADDR
    /// announcements go out on one of them.
    pub(super) fn send_announcements(&mut self, now: Instant) {
        let due = |a: &Announcement| a.pending() && now >= a.next;
        if !self.announced.0.iter().any(due) {
            return;
        }
        let Some(neg) = self.neg else { return };
        let Some(i) = (0..self.subflows.len()).find(|&i| self.ready(i)) else {
            return;
        };
        for a in self.announced.0.iter_mut().filter(|a| due(a)) {
            // §3.4.1: "If the sender does not receive an echo ... within a configured time, it
            // SHOULD retransmit the ADD_ADDR".
            let s = &mut self.subflows[i];
            s.mp.oneoff
                .push_back(addr::announce(&neg, a.addr_id, a.addr, a.port));
            s.tcp.request_ack();
            a.sent += 1;
            a.next = now + ANNOUNCE_RTX;
        }
    }

    /// The deadline of the next announcement, if one is pending and a subflow can carry it.
    pub(super) fn next_announcement(&self) -> Option<Instant> {
        self.announced
            .next()
            .filter(|_| (0..self.subflows.len()).any(|i| self.ready(i)))
    }
}
