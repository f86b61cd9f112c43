//! What upstream connections report besides data ([`Note`]s): counted, and acted on — a network
//! where MP_CAPABLE SYNs went unanswered is remembered as hostile, a subflow joined again or
//! toward another address of the server gets a local port, an interface whose paths stopped
//! answering is avoided by new traffic (and sessions move) until one answers again.

use super::table::FlowId;
use super::{Engine, FailoverCause, Note};
use crate::mptcp::FallbackCause;
use crate::time::Instant;

impl Engine {
    /// Records what the upstream connection of flow `id` reported.
    pub(super) fn handle_note(&mut self, now: Instant, id: FlowId, note: Note) {
        let Some(f) = self.table.get_mut(id) else { return };
        // The subflows' peer: the destination, or the converter carrying the flow.
        let (dst, peer) = (f.dst, f.upstream.remote());
        let closed = f.upstream.is_closed();
        let initial = f.upstream.mptcp().map(|c| c.initial_path().0);
        let converter = f.upstream.converter();
        match note {
            Note::Connected { mptcp } => {
                if mptcp {
                    self.counters.mptcp_connected += 1;
                    if converter.is_none() {
                        // It speaks MPTCP: new flows to it go direct, not through a converter.
                        self.converters.learn_mptcp(now, dst);
                    }
                }
            }
            Note::ConverterConnected {
                supports_mptcp,
                accepted,
            } => {
                if let Some((idx, _)) = converter {
                    self.converters.succeeded(now, idx);
                    self.converters.destination_answered(now, idx, dst, accepted);
                }
                if supports_mptcp {
                    self.converters.learn_mptcp(now, dst);
                }
            }
            Note::ConverterFailed(why) => {
                if let Some((idx, _)) = converter {
                    self.converter_failed(now, id, idx, why);
                }
            }
            Note::Fallback(cause) => {
                // Connections started without MPTCP were counted when they started.
                if cause != FallbackCause::Disabled {
                    self.counters.fallback(cause);
                }
                tracing::debug!(flow = id, %peer, %cause, "MPTCP fallback");
                if cause == FallbackCause::SynUnanswered
                    && let Some(i) = initial
                {
                    // RFC 8684 §3.7 / iOS: remember the network, start plain there for a while.
                    self.ifaces.mark_hostile(i, peer.ip(), now);
                }
            }
            Note::SubflowUp { iface, .. } => {
                self.counters.subflows_up += 1;
                if self.ifaces.mark_answering(iface) {
                    tracing::info!(iface, "interface answers again");
                    self.move_sessions(now);
                }
            }
            Note::SubflowDown { .. } => {
                self.counters.subflows_down += 1;
                // A path joined again gets a fresh local port: no stale state at the peer
                // (a subflow it still believes in) collides with the new subflow's 4-tuple.
                if !closed && let Some(p) = self.table.add_rejoin_port(id) {
                    if let Some(c) = self.table.get_mut(id).and_then(|f| f.upstream.mptcp()) {
                        c.add_port(p);
                    }
                }
            }
            Note::PortNeeded { remote } => {
                // A subflow toward another address of the server (its ADD_ADDR): a port whose
                // segments from there reach this flow. Bounded like the rejoin ports.
                if let Some(p) = self.table.add_remote_port(id, remote)
                    && let Some(c) = self.table.get_mut(id).and_then(|f| f.upstream.mptcp())
                {
                    c.add_remote_port(now, remote, p);
                }
            }
            Note::Unresponsive {
                iface,
                silent_for,
                probe_out_for,
            } => {
                self.counters.unresponsive += 1;
                let since =
                    Instant::from_micros(now.as_micros().saturating_sub(silent_for.as_micros() as u64));
                self.failovers
                    .record(since, iface, FailoverCause::Unresponsive, &[id]);
                if self.ifaces.heard_since(iface, now.saturating_sub(probe_out_for)) {
                    // Other flows' segments (or relay datagrams) arrived on the interface after
                    // this subflow's probe left: the silence is this path's (a queue that held
                    // the probe past its bound, a server gone), not the interface's. The flow
                    // moved; the others stay. A blackhole delivers nothing after the probe as a
                    // rule: the probe leaves after this subflow's own last segment, and the
                    // others' segments in flight when it struck end with that one. (A probe sent
                    // just before it can see their last ones: that flow moves alone, and the
                    // next subflow found silent marks the interface.)
                    self.counters.unresponsive_overruled += 1;
                    tracing::debug!(
                        iface,
                        flow = id,
                        silent_ms = silent_for.as_millis() as u64,
                        "subflow unresponsive, its interface still heard"
                    );
                } else if self.ifaces.mark_unresponsive(iface, now) {
                    tracing::info!(
                        iface,
                        silent_ms = silent_for.as_millis() as u64,
                        "interface unresponsive"
                    );
                    self.move_sessions(now);
                }
            }
        }
    }
}
