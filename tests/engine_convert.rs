//! The engine's converter upstream (RFC 8803) driven with explicit times: a host TCP connection
//! on the TUN side; on the interface side a simulated Transport Converter — our own MPTCP server
//! role (an `mptcp::Endpoint`, which also accepts the MP_JOIN of the cellular backup subflow)
//! with a `convert::converter::Converter` that checks the request from the bytes the MPTCP
//! connection delivers, then plays the destination in memory — and plain TCP or MPTCP servers
//! for the destinations the engine dials directly (`tests/common/convsim.rs`). Wi-Fi is 10 ms
//! one way, cellular 30 ms.
#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "common/convsim.rs"]
mod convsim;

use std::time::Duration;

use convsim::*;
use mpbond::convert::converter::Request;
use mpbond::convert::key::{ClientKey, KeyId};
use mpbond::convert::msg::ErrorCode;
use mpbond::engine::converters::ConverterFailure;
use mpbond::engine::{ANSWER_WITHIN, CELLULAR, IfaceState, REPLY_WITHIN, WIFI};
use mpbond::mptcp::PathId;
use mpbond::time::Instant;

#[test]
fn a_flow_goes_through_the_converter_with_a_cellular_backup() {
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, laptop_key());
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    // The converter checked the request: our key, the host's destination.
    assert_eq!(w.conv.sessions.len(), 1);
    assert_eq!(requested_dst(&w, 0), Some(sa(DST)));
    let (first_syn, iface, to, mp) = w.syns[0];
    assert_eq!((ms(first_syn), iface, to, mp), (0, WIFI, sa(CONVERTER), true));
    // The host's SYN/ACK came only after the converter's reply (+ the Wi-Fi delay).
    let replied = w.conv.sessions[0].replied_at.unwrap();
    let synack = w.host_synack[h].unwrap();
    assert!(
        synack >= replied + delay(WIFI),
        "SYN/ACK at {synack}, reply at {replied}"
    );
    eprintln!(
        "converter reply at {} ms, host SYN/ACK at {} ms",
        ms(replied),
        ms(synack)
    );
    assert!(
        w.syns.iter().all(|s| s.2 == sa(CONVERTER)),
        "nothing dialed direct"
    );
    // The cellular backup subflow joins the converter.
    w.run(|w| {
        w.e.flows()
            .first()
            .is_some_and(|f| f.subflows.iter().any(|s| s.iface == CELLULAR && s.usable))
    });
    let f = &w.e.flows()[0];
    assert_eq!(
        (f.converter, f.upstream, f.destination),
        (Some(sa(CONVERTER)), "mptcp", sa(DST))
    );
    let cell = f.subflows.iter().find(|s| s.iface == CELLULAR).unwrap();
    assert!(cell.backup, "{:?}", f.subflows);
    assert_eq!(w.syns.iter().filter(|s| s.1 == CELLULAR).count(), 1);
    assert_eq!(w.e.counters().tcp_via_converter, 1);

    let up = pattern(1 << 20, 1);
    let down = pattern(1 << 20, 7);
    let done = w.transfer(h, Far::Conv(0), &up, &down, |_| {});
    eprintln!("1 MiB each way through the converter by {} ms", ms(done));
    assert_eq!(w.e.counters().tcp_bytes_up, up.len() as u64);
    assert_eq!(w.e.counters().tcp_bytes_down, down.len() as u64);
    let v = &w.e.converters(w.now)[0];
    assert!(v.up && v.flows == 1 && v.failures == 0, "{v:?}");

    // The converter announces MPTCP among the extensions *it* supports (§6.2.4); that says
    // nothing about the destination, so the next flow to it goes through the converter again.
    let h2 = w.connect(DST);
    w.run(|w| w.established(h2) && w.conv.sessions.len() == 2);
    assert_eq!(w.e.counters().tcp_via_converter, 2);
    assert_eq!(w.e.flows()[0].converter, Some(sa(CONVERTER)));
    assert_eq!(requested_dst(&w, 1), Some(sa(DST)));
}

#[test]
fn wifi_going_down_mid_transfer_moves_the_flow_to_the_cellular_subflow() {
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, laptop_key());
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    w.run(|w| {
        w.e.flows()[0]
            .subflows
            .iter()
            .any(|s| s.iface == CELLULAR && s.usable)
    });
    let up = pattern(1 << 20, 3);
    let down = pattern(1 << 20, 5);
    let mut down_at = None;
    let done = w.exchange(h, Far::Conv(0), &up, &down, |w| {
        down_at = Some(w.now);
        w.wifi_down = true;
        let st = IfaceState {
            usable: false,
            ..w.e.iface_state(WIFI).unwrap()
        };
        w.e.handle_iface_state(w.now, WIFI, st);
    });
    let down_at = down_at.expect("Wi-Fi went down mid-transfer");
    eprintln!(
        "Wi-Fi down at {} ms, transfer complete at {} ms",
        ms(down_at),
        ms(done)
    );
    assert_eq!(w.e.counters().failovers, 1);
    // The converter's cellular subflow carried the rest.
    let c = w.conv.ep.get_mut(w.conv.sessions[0].h).unwrap();
    let cell = c.subflows().into_iter().find(|s| s.path == PathId(CELLULAR));
    assert!(cell.is_some_and(|s| s.bytes_sent > 100_000), "{:?}", c.subflows());
    let f = &w.e.flows()[0];
    assert_eq!((f.converter, f.iface), (Some(sa(CONVERTER)), CELLULAR));
    assert!(f.subflows.iter().all(|s| s.iface == CELLULAR), "{:?}", f.subflows);
    assert!(w.e.converters(w.now)[0].up);
    w.close_flow(h, Far::Conv(0));
}

#[test]
fn a_destination_refusing_resets_the_host_and_the_converter_stays_up() {
    let mut w = World::new(Mode::DstRefuses(ErrorCode::ConnectionReset), laptop_key());
    let h = w.connect(DST);
    w.run(|w| host_reset(w, h));
    let replied = w.conv.sessions[0].replied_at.unwrap();
    let rst = w.host_synack[h].unwrap();
    eprintln!(
        "Connection Reset reply at {} ms, host RST at {} ms",
        ms(replied),
        ms(rst)
    );
    assert!(rst >= replied + delay(WIFI));
    assert!(!w.established(h) && w.hosts[h].is_closed());
    assert_eq!(w.e.counters().tcp_refused, 1);
    assert!(w.syns.iter().all(|s| s.2 == sa(CONVERTER)), "not dialed direct");
    let v = &w.e.converters(w.now)[0];
    assert!(v.up && v.failures == 0 && v.last_failure.is_none(), "{v:?}");
    w.run(|w| w.e.flow_counts().0 == 0);
    w.run_for(Duration::from_millis(100));
    assert_reset_at_once(&mut w);
}

#[test]
fn a_destination_that_accepted_lately_is_answered_before_the_reply() {
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, laptop_key());
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    assert!(w.host_synack[h].unwrap() >= w.conv.sessions[0].replied_at.unwrap() + delay(WIFI));
    let up = pattern(50_000, 1);
    let down = pattern(50_000, 7);
    w.transfer(h, Far::Conv(0), &up, &down, |_| {});
    // The same destination again: the host's SYN/ACK goes once the converter's handshake is
    // done, before the converter even replied; the bytes are exact both ways.
    let t0 = w.now;
    let h2 = w.connect(DST);
    w.run(|w| w.established(h2));
    let synack = w.host_synack[h2].unwrap();
    w.run(|w| w.conv.sessions.get(1).is_some_and(|s| s.replied_at.is_some()));
    let replied = w.conv.sessions[1].replied_at.unwrap();
    eprintln!(
        "early: host SYN/ACK after {} ms, the converter replied after {} ms",
        ms(synack) - ms(t0),
        ms(replied) - ms(t0)
    );
    assert!(synack < replied, "SYN/ACK at {synack}, reply at {replied}");
    let up = pattern(300_000, 3);
    let down = pattern(300_000, 5);
    w.transfer(h2, Far::Conv(1), &up, &down, |_| {});
    // Refused after all: the answered host is reset (it cannot be refused any more), and the
    // converter stays up.
    w.conv.mode = Mode::DstRefuses(ErrorCode::ConnectionReset);
    let h3 = w.connect(DST);
    w.run(|w| w.established(h3));
    w.run(|w| host_reset(w, h3));
    let v = &w.e.converters(w.now)[0];
    assert!(v.up && v.failures == 0, "{v:?}");
    // And the next flow waits for the reply again.
    w.conv.mode = Mode::Normal { ext: Vec::new() };
    let h4 = w.connect(DST);
    w.run(|w| w.established(h4));
    assert!(w.host_synack[h4].unwrap() >= w.conv.sessions[3].replied_at.unwrap() + delay(WIFI));
}

/// A flow whose converter failed goes direct: a SYN to `DST` leaves, a plain server answers,
/// the host's flow is byte-exact. Returns the time of the direct SYN.
fn goes_direct(w: &mut World, h: usize) -> Instant {
    w.run(|w| w.established(h));
    let direct: Vec<_> = w.syns.iter().filter(|s| s.2 == sa(DST)).collect();
    assert_eq!(direct.len(), 1, "{:?}", w.syns);
    let (t, iface, _, mp) = *direct[0];
    assert_eq!(iface, WIFI);
    assert!(
        mp,
        "the direct SYN still offers MPTCP: a failed converter is not a hostile network"
    );
    let f = &w.e.flows()[0];
    assert_eq!((f.converter, f.destination), (None, sa(DST)));
    let up = pattern(300_000, 2);
    let down = pattern(300_000, 4);
    w.transfer(h, Far::Plain(0), &up, &down, |_| {});
    assert_eq!(w.e.counters().converter_failed, 1);
    t
}

/// §6.2.8: after a refusal or a malformed reply the client resets its connection to the
/// converter (one Wi-Fi trip after the reply reached it), rather than leaving it open.
fn assert_reset_at_once(w: &mut World) {
    let s = &w.conv.sessions[0];
    let (h, replied, reset) = (s.h, s.replied_at.unwrap(), s.reset_at);
    assert_eq!(reset, Some(replied + delay(WIFI) * 2), "reset not seen at once");
    assert!(w.conv.ep.get_mut(h).unwrap().is_closed());
}

#[test]
fn a_silent_converter_is_marked_down_and_the_flow_goes_direct_within_a_second() {
    let mut w = World::new(Mode::Silent, laptop_key());
    let h = w.connect(DST);
    let t = goes_direct(&mut w, h);
    eprintln!(
        "converter silent from 0 ms; direct SYN at {} ms (converter got {} packets)",
        ms(t),
        w.conv.packets
    );
    assert_eq!(t, Instant::ZERO + ANSWER_WITHIN, "direct SYN at {t}");
    let v = &w.e.converters(w.now)[0];
    assert!(!v.up, "{v:?}");
    assert_eq!(v.last_failure, Some(ConverterFailure::Unreachable));
    assert_eq!(w.e.counters().tcp_via_converter, 1);
    // While down, a new flow goes direct at once.
    let h2 = w.connect(DST);
    w.run(|w| w.established(h2));
    let last = w.syns.last().unwrap();
    assert_eq!(last.2, sa(DST));
    assert_eq!(w.e.counters().tcp_via_converter, 1);
}

#[test]
fn a_converter_refusing_this_laptop_is_marked_down_and_the_flow_goes_direct() {
    let other = ClientKey::from_parts(KeyId([2; 8]), [0x22; 32]);
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, other);
    let h = w.connect(DST);
    let t = goes_direct(&mut w, h);
    let replied = w.conv.sessions[0].replied_at.unwrap();
    eprintln!("refusal at {} ms, direct SYN at {} ms", ms(replied), ms(t));
    assert!(matches!(
        w.conv.sessions[0].request,
        Some(Request::Refused { .. })
    ));
    let v = &w.e.converters(w.now)[0];
    assert!(!v.up, "{v:?}");
    assert_eq!(v.last_failure, Some(ConverterFailure::Refused(32)));
    assert_reset_at_once(&mut w);
}

#[test]
fn a_garbage_reply_is_malformed_and_the_flow_goes_direct() {
    let mut w = World::new(Mode::Garbage, laptop_key());
    let h = w.connect(DST);
    let t = goes_direct(&mut w, h);
    eprintln!(
        "garbage at {} ms, direct SYN at {} ms",
        ms(w.conv.sessions[0].replied_at.unwrap()),
        ms(t)
    );
    let v = &w.e.converters(w.now)[0];
    assert!(!v.up, "{v:?}");
    assert_eq!(v.last_failure, Some(ConverterFailure::Malformed));
    assert_reset_at_once(&mut w);
}

#[test]
fn lan_destinations_go_direct() {
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, laptop_key());
    let h = w.connect(LAN_DST);
    w.run(|w| w.established(h));
    assert_eq!(w.syns.len(), 1);
    assert_eq!(w.syns[0].2, sa(LAN_DST));
    assert_eq!(
        w.conv.packets, 0,
        "the converter never hears of a LAN destination"
    );
    assert_eq!(w.e.flows()[0].converter, None);
    w.transfer(h, Far::Plain(0), &pattern(50_000, 1), &pattern(50_000, 2), |_| {});
    assert_eq!(w.e.counters().tcp_via_converter, 0);
}

#[test]
fn destinations_known_to_speak_mptcp_go_direct() {
    // The converter's reply carries the destination's SYN+ACK options (§6.2.6) with an
    // MP_CAPABLE (kind 30): the destination speaks MPTCP.
    let mp_capable_synack = [30, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut w = World::new(
        Mode::Normal {
            ext: mp_capable_synack.to_vec(),
        },
        laptop_key(),
    );
    let h = w.connect(MP_DST);
    w.run(|w| w.established(h));
    assert_eq!(w.e.counters().tcp_via_converter, 1);
    assert_eq!(requested_dst(&w, 0), Some(sa(MP_DST)));
    // The next flow to it goes direct, with MPTCP, to the destination itself.
    let h2 = w.connect(MP_DST);
    w.run(|w| w.established(h2));
    assert_eq!(w.e.counters().tcp_via_converter, 1);
    let last = *w.syns.last().unwrap();
    assert_eq!((last.2, last.3), (sa(MP_DST), true));
    let f =
        w.e.flows()
            .into_iter()
            .find(|f| f.source.port() == 40001)
            .unwrap();
    assert_eq!((f.converter, f.upstream), (None, "mptcp"));
    assert_eq!(w.conv.sessions.len(), 1);

    // A direct flow that connected with MPTCP teaches the same: with the converter down
    // (silent), a flow to a fresh MPTCP destination goes direct after ANSWER_WITHIN and
    // connects with MPTCP; once the converter is up again (DOWN_MIN later) new flows to that
    // destination still go direct, while others use the converter.
    let mut w = World::new(Mode::Silent, laptop_key());
    let h = w.connect(MP_DST);
    w.run(|w| w.established(h));
    assert_eq!(w.e.counters().mptcp_connected, 1);
    assert_eq!(
        w.e.converters(w.now)[0].last_failure,
        Some(ConverterFailure::Unreachable)
    );
    w.conv.mode = Mode::Normal { ext: Vec::new() };
    w.run_for(Duration::from_secs(11));
    assert!(w.e.converters(w.now)[0].up);
    let h2 = w.connect(MP_DST);
    w.run(|w| w.established(h2));
    assert_eq!(w.syns.last().unwrap().2, sa(MP_DST));
    assert_eq!(w.e.counters().tcp_via_converter, 1);
    let h3 = w.connect(DST);
    w.run(|w| w.established(h3));
    assert_eq!(w.e.counters().tcp_via_converter, 2);
    assert_eq!(requested_dst(&w, 0), Some(sa(DST)));
}

#[test]
fn a_converter_that_never_replies_is_marked_down_and_the_flow_goes_direct() {
    let mut w = World::new(Mode::Mute, laptop_key());
    let h = w.connect(DST);
    let t = goes_direct(&mut w, h);
    eprintln!("request read at 30 ms, no reply; direct SYN at {} ms", ms(t));
    assert!(matches!(
        w.conv.sessions[0].request,
        Some(Request::Connect { .. })
    ));
    assert_eq!(t, Instant::ZERO + REPLY_WITHIN);
    let v = &w.e.converters(w.now)[0];
    assert!(!v.up, "{v:?}");
    assert_eq!(v.last_failure, Some(ConverterFailure::NoReply));
    // The converter's connection is reset, not left open.
    let h = w.conv.sessions[0].h;
    assert!(w.conv.sessions[0].reset_at.is_some());
    assert!(w.conv.ep.get_mut(h).unwrap().is_closed());
}

/// Request/response through the converter on flow `h` (far end: converter session `n`):
/// `rounds` 100-byte requests, each answered before the next; byte-exact both ways. The
/// converter's TCP payload bytes that came over cellular.
fn ping_pong(w: &mut World, h: usize, n: usize, rounds: u8) -> u64 {
    w.run(|w| w.established(h));
    // The cellular backup subflow is there before the first request.
    w.run(|w| {
        w.e.flows().iter().any(|f| {
            f.source.port() == 40000 + h as u16 && f.subflows.iter().any(|s| s.iface == CELLULAR && s.usable)
        })
    });
    let cell_before = w.conv.payload_by_iface[usize::from(CELLULAR)];
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut tmp = vec![0u8; 4096];
    for r in 0..rounds {
        let req = pattern(100, r);
        assert_eq!(w.hosts[h].send(&req), req.len());
        let want = up.len() + req.len();
        w.run(|w| {
            w.far_recv(Far::Conv(n), &mut up);
            up.len() >= want
        });
        let resp = pattern(60, r.wrapping_add(100));
        assert_eq!(w.far_send(Far::Conv(n), &resp), resp.len());
        let want = down.len() + resp.len();
        w.run(|w| {
            let k = w.hosts[h].recv(&mut tmp);
            down.extend_from_slice(&tmp[..k]);
            down.len() >= want
        });
    }
    // The last copy is still on its way (cellular is 30 ms one way, Wi-Fi 10).
    w.run_for(Duration::from_millis(100));
    let sent: Vec<u8> = (0..rounds).flat_map(|r| pattern(100, r)).collect();
    let answered: Vec<u8> = (0..rounds)
        .flat_map(|r| pattern(60, r.wrapping_add(100)))
        .collect();
    assert!(up == sent, "requests byte-exact ({} of {})", up.len(), sent.len());
    assert!(down == answered, "responses byte-exact");
    w.conv.payload_by_iface[usize::from(CELLULAR)] - cell_before
}

#[test]
fn a_tcp_flow_to_a_redundant_port_sends_its_small_writes_on_both_paths() {
    // [redundant] ports = ["22"], no classes, handover mode: the cellular subflow is a backup.
    let default = mpbond::engine::Config::default().ifaces;
    let e = engine_configured(
        &[(WIFI, WIFI_ADDR, default[0]), (CELLULAR, CELL_ADDR, default[1])],
        |c| {
            let f = mpbond::redundancy::FileRedundant {
                classes: Some(Vec::new()),
                ports: Some(vec!["22".into()]),
                ..Default::default()
            };
            c.redundancy = mpbond::redundancy::Redundancy::resolve(&f, false).unwrap();
        },
    );
    let mut w = World::with_engine(e, Mode::Normal { ext: Vec::new() }, laptop_key());
    let ssh = w.connect("198.19.0.11:22");
    let cell_ssh = ping_pong(&mut w, ssh, 0, 20);
    let web = w.connect(DST);
    let cell_web = ping_pong(&mut w, web, 1, 20);
    eprintln!("20 requests of 100 bytes: {cell_ssh} B over cellular to port 22, {cell_web} B to port 80");
    assert_eq!(requested_dst(&w, 0), Some(sa("198.19.0.11:22")));
    // Every request to port 22 went on the cellular subflow too; none to port 80.
    assert!(cell_ssh >= 20 * 100, "{cell_ssh}");
    assert_eq!(cell_web, 0);
}

/// What [`busy_wifi`] saw.
struct Busy {
    /// Subflows found silent, and of them overruled, while the queue filled.
    before: (u64, u64),
    /// The same after the queue was full (and Wi-Fi blackholed if it was).
    unresponsive: u64,
    overruled: u64,
    /// The engine's interface for a new flow afterwards.
    choice: Option<u8>,
    /// Flow 0's write arrived.
    arrived: bool,
}

impl Busy {
    #[allow(clippy::print_stderr, reason = "the measured line")]
    fn print(&self, case: &str) {
        eprintln!(
            "{case}: silent subflows (overruled) {} ({}) while the queue filled, {} ({}) after; new flows on {:?}",
            self.before.0, self.before.1, self.unresponsive, self.overruled, self.choice
        );
    }
}

/// Two flows through the converter on Wi-Fi (10 Mbit/s toward the laptop behind a 150 kB
/// queue), their cellular backups joined. Flow 0 has its round trip measured on the empty
/// queue; then flow 1 downloads for 1.5 s, filling the queue, and flow 0's probes (it was
/// receiving) wait behind ~120 ms of flow 1's data, past their bound. Then (Wi-Fi blackholed
/// first if `blackhole`) flow 0 writes.
fn busy_wifi(blackhole: bool) -> Busy {
    let mut w = World::new(Mode::Normal { ext: Vec::new() }, laptop_key());
    w.wifi_in_bottleneck = Some((1_250_000, 150_000));
    let (a, b) = (w.connect(DST), w.connect(DST));
    w.run(|w| w.established(a) && w.established(b));
    w.run(|w| {
        w.e.flows()
            .iter()
            .all(|f| f.subflows.iter().any(|s| s.iface == CELLULAR && s.usable))
    });
    let (far_a, far_b) = (Far::Conv(0), Far::Conv(1));
    w.exchange(a, far_a, b"ping", b"pong", |_| {});
    let chunk = pattern(16_000, 4);
    let mut tmp = vec![0u8; 65536];
    // Flow 1's download goes on all along (what the host reads, it drops).
    let mut download = |w: &mut World| {
        w.far_send(far_b, &chunk);
        while w.hosts[b].recv(&mut tmp) > 0 {}
    };
    let filled = w.now + Duration::from_millis(1_500);
    w.run(|w| {
        download(w);
        w.now >= filled
    });
    let before = (w.e.counters().unresponsive, w.e.counters().unresponsive_overruled);
    w.wifi_down = blackhole;
    let write = pattern(2_000, 9);
    let (mut sent, mut got) = (0, Vec::new());
    let until = w.now + Duration::from_secs(3);
    w.run(|w| {
        download(w);
        sent += w.hosts[a].send(&write[sent..]);
        w.far_recv(far_a, &mut got);
        (w.e.counters().unresponsive >= 1 && got.len() >= write.len()) || w.now >= until
    });
    Busy {
        before,
        unresponsive: w.e.counters().unresponsive - before.0,
        overruled: w.e.counters().unresponsive_overruled - before.1,
        choice: w.e.choose_iface(sa(DST).ip()),
        arrived: got == write,
    }
}

#[test]
fn a_subflow_silent_behind_a_queue_its_interface_still_delivers_moves_alone() {
    // Flow 0's Wi-Fi subflow is found silent (its probe's answer waits in the queue), yet the
    // interface delivers flow 1's segments all along: flow 0 moves, Wi-Fi stays chosen.
    let q = busy_wifi(false);
    q.print("queue");
    let (silent, overruled) = (q.before.0 + q.unresponsive, q.before.1 + q.overruled);
    assert!(silent >= 1, "the queue never delayed flow 0 past its bound");
    assert_eq!(overruled, silent);
    assert!(q.arrived, "flow 0's write did not arrive");
    assert_eq!(q.choice, Some(WIFI), "Wi-Fi held unresponsive for every flow");

    // Wi-Fi blackholed: the same silence is the interface's; new flows (and datagram sessions)
    // go to cellular.
    let q = busy_wifi(true);
    q.print("queue, then blackhole");
    assert!(q.unresponsive >= 1);
    assert_eq!(q.overruled, 0);
    assert!(q.arrived, "flow 0's write did not arrive over cellular");
    assert_eq!(q.choice, Some(CELLULAR));
}
