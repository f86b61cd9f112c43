//! The engine's counters, each declared once: the field, its `status` name and its doc come from
//! one list, and so do the drop reasons and the MPTCP fallback causes (with the pattern of
//! [`FallbackCause`] each one counts). Also the mapping of parse errors to drop reasons.

use crate::mptcp::FallbackCause;
use crate::mptcp::handshake::Fallback;
use crate::wire::ip::IpError;
use crate::wire::tcp::TcpError;

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident = $name:literal,)*) => {
        /// Why a packet was dropped (each counted separately).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DropReason { $($(#[$m])* $v,)* }
        impl DropReason {
            /// All reasons, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Short name (status JSON key).
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// Not IPv4 or IPv6.
    BadIpVersion = "ip_version",
    /// Malformed IP header.
    BadIpHeader = "ip_header",
    /// IP length fields inconsistent with the packet.
    BadIpLength = "ip_length",
    /// Bad IPv4 header checksum.
    BadIpChecksum = "ip_checksum",
    /// An IP fragment (not reassembled).
    IpFragment = "ip_fragment",
    /// TCP header too short or bad data offset.
    BadTcpHeader = "tcp_header",
    /// Malformed TCP options.
    BadTcpOptions = "tcp_options",
    /// Bad TCP checksum.
    BadTcpChecksum = "tcp_checksum",
    /// Bad UDP length.
    BadUdpLength = "udp_length",
    /// Bad UDP checksum.
    BadUdpChecksum = "udp_checksum",
    /// Truncated ICMP message.
    BadIcmp = "icmp_header",
    /// Bad ICMP checksum.
    BadIcmpChecksum = "icmp_checksum",
    /// ICMP other than echo.
    IcmpNotEcho = "icmp_not_echo",
    /// Transport protocol not relayed.
    UnsupportedProtocol = "protocol",
    /// A segment on an interface for no flow of ours.
    NoFlow = "no_flow",
    /// A reply for no session.
    NoSession = "no_session",
    /// The flow or session table is full.
    TableFull = "table_full",
    /// Over the interface's rate cap (`[budget.<role>] rate_kbit`).
    RateCap = "rate_cap",
    /// The engine's internal queue was full.
    QueueFull = "queue_full",
    /// No usable interface for the destination's family.
    NoInterface = "no_interface",
    /// A datagram from a converter's relay that is not valid for its session (MAC, replay,
    /// another session's, another source).
    BadRelayDatagram = "bad_relay_datagram",
}

/// Declares [`Counters`] from the lists of plain counters (field = status name) and of fallback
/// causes (pattern of [`FallbackCause`] => slot = status name).
macro_rules! counters {
    (
        plain { $($(#[$m:meta])* $field:ident = $name:literal,)* }
        fallbacks { $($cause:pat => $slot:ident = $fname:literal,)* }
    ) => {
        /// The engine's counters.
        #[derive(Debug, Clone, Default)]
        pub struct Counters {
            $($(#[$m])* pub $field: u64,)*
            /// Upstream connections that run as plain TCP, by cause (index: [`FALLBACK_CAUSES`]).
            pub fallbacks: [u64; FALLBACK_CAUSES.len()],
            /// Dropped packets by [`DropReason`] (index = position in [`DropReason::ALL`]).
            pub dropped: [u64; DropReason::ALL.len()],
        }

        /// Names of the MPTCP fallback causes, in counter order.
        pub const FALLBACK_CAUSES: [&str; [$($fname),*].len()] = [$($fname),*];

        /// The fallback counters, in [`FALLBACK_CAUSES`] order.
        #[derive(Debug, Clone, Copy)]
        enum FallbackSlot { $($slot,)* }

        /// The index of `c` in [`FALLBACK_CAUSES`] (the match is checked for exhaustiveness).
        fn fallback_index(c: FallbackCause) -> usize {
            let slot = match c { $($cause => FallbackSlot::$slot,)* };
            slot as usize
        }

        impl Counters {
            /// All counters as (name, value), for status.
            pub fn named(&self) -> Vec<(String, u64)> {
                let mut v: Vec<(String, u64)> = vec![$(($name.to_string(), self.$field),)*];
                for (name, n) in FALLBACK_CAUSES.iter().zip(self.fallbacks) {
                    v.push((format!("fallback_{name}"), n));
                }
                for r in DropReason::ALL {
                    v.push((format!("dropped_{}", r.name()), self.dropped(*r)));
                }
                v
            }
        }
    };
}

counters! {
    plain {
        /// TCP flows opened (host SYNs accepted for relaying).
        tcp_flows = "tcp_flows",
        /// Of those, sent through an RFC 8803 converter.
        tcp_via_converter = "tcp_via_converter",
        /// Flows a converter failed before the destination answered (they went direct).
        converter_failed = "converter_failed",
        /// Of those, established end to end.
        tcp_established = "tcp_established",
        /// Local ports taken over from flows whose upstream was gone (their host side still in
        /// TIME-WAIT).
        ports_reused = "ports_reused",
        /// Refused by the destination (RST to the host).
        tcp_refused = "tcp_refused",
        /// The destination never answered (RST to the host).
        tcp_timed_out = "tcp_timed_out",
        /// UDP sessions opened.
        udp_sessions = "udp_sessions",
        /// ICMP echo sessions opened.
        icmp_sessions = "icmp_sessions",
        /// Session moves between interfaces.
        session_moves = "session_moves",
        /// UDP sessions opened through a converter's datagram relay.
        udp_via_converter = "udp_via_converter",
        /// ICMP echo sessions opened through a converter's datagram relay.
        icmp_via_converter = "icmp_via_converter",
        /// UDP and echo sessions that left their converter for direct (silent, refused,
        /// unreachable).
        relay_fallbacks = "relay_fallbacks",
        /// Redundant UDP sessions opened through a converter (a copy of each datagram on
        /// every path).
        udp_redundant = "udp_redundant",
        /// Extra copies of redundant datagrams sent (one per extra path and datagram).
        redundant_copies = "redundant_copies",
        /// Datagrams sent again on the other paths when their session's path became suspect
        /// (those sent since a round trip before the converter was last heard; handover mode,
        /// `while_suspect`).
        suspect_resends = "suspect_resends",
        /// The converter's copies of a datagram already received (a redundant session's other
        /// path): dropped, not counted as bad relay datagrams.
        relay_duplicates = "relay_duplicates",
        /// Bytes on backup (cellular) interfaces that carry no payload, of flows whose data
        /// goes elsewhere (handover mode's own cost there): TCP segments without data both ways
        /// (joins, ACKs, probes, keep-alives) and the converter's relay acks received on it. IP
        /// headers included. Per interface and per day in the budget (`status`).
        cellular_overhead_bytes = "cellular_overhead_bytes",
        /// TCP payload bytes host → destinations.
        tcp_bytes_up = "tcp_bytes_up",
        /// TCP payload bytes destinations → host.
        tcp_bytes_down = "tcp_bytes_down",
        /// Datagram payload bytes host → destinations.
        dgram_bytes_up = "dgram_bytes_up",
        /// Datagram payload bytes destinations → host.
        dgram_bytes_down = "dgram_bytes_down",
        /// The destination was reported unreachable (ICMP) while connecting.
        tcp_unreachable = "tcp_unreachable",
        /// Unreachable errors sent to the host.
        unreachable_sent = "unreachable_sent",
        /// Times the Wi-Fi became unusable while it was the preferred interface.
        failovers = "failovers",
        /// Upstream connections that completed the MPTCP handshake.
        mptcp_connected = "mptcp_connected",
        /// Subflows that came up (initial and joined).
        subflows_up = "subflows_up",
        /// Subflows that went away.
        subflows_down = "subflows_down",
        /// Subflows failed over because their path stopped answering.
        unresponsive = "unresponsive_failovers",
        /// Of those, subflows whose interface kept carrying other flows' segments while they
        /// were silent: the flow moved, the interface was not held as unresponsive.
        unresponsive_overruled = "unresponsive_overruled",
    }
    fallbacks {
        FallbackCause::Handshake(Fallback::NoMpCapable) => NoMpCapableAnswer = "no_mp_capable_answer",
        FallbackCause::Handshake(_) => BadMpCapable = "bad_mp_capable",
        FallbackCause::SynUnanswered => SynUnanswered = "syn_unanswered",
        FallbackCause::OptionsStripped => OptionsStripped = "options_stripped",
        // Only hostile networks start connections without MPTCP.
        FallbackCause::Disabled => HostileNetwork = "hostile_network",
        FallbackCause::ChecksumFailed => ChecksumFailed = "checksum_failed",
    }
}

impl Counters {
    /// Dropped packets for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
    /// Counts one packet dropped for `r`.
    pub(super) fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }
    /// Counts one upstream connection running as plain TCP because of `c`.
    pub(super) fn fallback(&mut self, c: FallbackCause) {
        self.fallbacks[fallback_index(c)] += 1;
    }
}

/// The drop reason of a packet the IP parser rejected.
pub(super) fn ip_reason(e: IpError) -> DropReason {
    match e {
        IpError::BadVersion => DropReason::BadIpVersion,
        IpError::BadLength => DropReason::BadIpLength,
        IpError::BadChecksum => DropReason::BadIpChecksum,
        IpError::Fragment => DropReason::IpFragment,
        _ => DropReason::BadIpHeader,
    }
}

/// The drop reason of a segment the TCP parser rejected.
pub(super) fn tcp_reason(e: TcpError) -> DropReason {
    match e {
        TcpError::BadOption => DropReason::BadTcpOptions,
        TcpError::BadChecksum => DropReason::BadTcpChecksum,
        _ => DropReason::BadTcpHeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fallback_cause_has_its_own_counter() {
        let causes = [
            FallbackCause::Handshake(Fallback::NoMpCapable),
            FallbackCause::Handshake(Fallback::Version { version: 0 }),
            FallbackCause::SynUnanswered,
            FallbackCause::OptionsStripped,
            FallbackCause::Disabled,
            FallbackCause::ChecksumFailed,
        ];
        let idx: Vec<usize> = causes.into_iter().map(fallback_index).collect();
        assert_eq!(idx, (0..FALLBACK_CAUSES.len()).collect::<Vec<_>>());
        let mut c = Counters::default();
        c.fallback(FallbackCause::SynUnanswered);
        let named = c.named();
        assert!(named.contains(&("fallback_syn_unanswered".to_string(), 1)));
        assert!(named.contains(&("unresponsive_failovers".to_string(), 0)));
        assert_eq!(named.len(), 30 + FALLBACK_CAUSES.len() + DropReason::ALL.len());
    }
}
