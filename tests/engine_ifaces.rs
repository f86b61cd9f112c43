//! More than two interfaces, driven with explicit times through the simulated converter world
//! of `tests/common/convsim.rs` (our own MPTCP server role at the converter): an Ethernet
//! (primary, priority 20), a Wi-Fi (primary, 10), a cellular (backup) and an interface of role
//! `never`. New flows start on the Ethernet; losing it moves the data to the Wi-Fi, not to the
//! cellular backup; losing the Wi-Fi too moves it to the cellular; `never` is never used.
#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "common/convsim.rs"]
mod convsim;

use convsim::*;
use mpbond::config::IfaceRole;
use mpbond::engine::{CELLULAR, IfacePolicy, WIFI};
use mpbond::mptcp::PathId;

const ETH: u8 = 2;
const NEVER: u8 = 3;
const ETH_ADDR: &str = "198.18.3.2";
const NEVER_ADDR: &str = "198.18.4.2";

fn world() -> World {
    let e = engine_with(&[
        (WIFI, WIFI_ADDR, IfacePolicy::primary(10)),
        (CELLULAR, CELL_ADDR, IfacePolicy::backup(0)),
        (ETH, ETH_ADDR, IfacePolicy::primary(20)),
        (
            NEVER,
            NEVER_ADDR,
            IfacePolicy {
                role: IfaceRole::Never,
                priority: 200,
            },
        ),
    ]);
    World::with_engine(e, Mode::Normal { ext: Vec::new() }, laptop_key())
}

/// Bytes the converter sent on each path of session 0, by interface id.
fn sent_by_converter(w: &mut World) -> Vec<(u8, u64)> {
    let c = w.conv.ep.get_mut(w.conv.sessions[0].h).unwrap();
    c.subflows()
        .into_iter()
        .map(|s| (s.path.0, s.bytes_sent))
        .collect()
}

fn sent_on(v: &[(u8, u64)], iface: u8) -> u64 {
    v.iter().filter(|s| s.0 == iface).map(|s| s.1).sum()
}

#[test]
fn a_flow_starts_on_the_best_primary_and_fails_over_to_the_next_primary_before_the_backup() {
    let mut w = world();
    assert_eq!(w.e.choose_iface(sa(DST).ip()), Some(ETH));
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    assert_eq!(
        w.e.flows()[0].iface,
        ETH,
        "the initial subflow is on the Ethernet"
    );
    // Joins on the Wi-Fi (a regular path made a backup while the Ethernet works) and the
    // cellular backup.
    w.run(|w| {
        let f = &w.e.flows()[0];
        [WIFI, CELLULAR]
            .iter()
            .all(|&i| f.subflows.iter().any(|s| s.iface == i && s.usable))
    });
    w.run_for(std::time::Duration::from_millis(200));
    let f = &w.e.flows()[0];
    for s in &f.subflows {
        assert_eq!(s.backup, s.iface != ETH, "{:?}", f.subflows);
    }

    // The Ethernet goes: the rest goes on the Wi-Fi.
    let (up, down) = (pattern(600_000, 3), pattern(600_000, 5));
    w.exchange(h, Far::Conv(0), &up, &down, |w| w.link_down(ETH));
    let sent = sent_by_converter(&mut w);
    eprintln!("after the Ethernet loss, converter bytes by interface: {sent:?}");
    assert!(sent_on(&sent, WIFI) > 150_000, "{sent:?}");
    assert!(
        sent_on(&sent, CELLULAR) < 20_000,
        "the backup stayed idle: {sent:?}"
    );
    assert_eq!(w.e.counters().failovers, 1);
    let f = &w.e.flows()[0];
    assert!(
        f.subflows.iter().any(|s| s.iface == WIFI && !s.backup),
        "the Wi-Fi is regular now: {:?}",
        f.subflows
    );

    // The Wi-Fi goes too: the cellular carries the rest.
    let cell_before = sent_on(&sent, CELLULAR);
    let (up, down) = (pattern(600_000, 7), pattern(600_000, 9));
    w.exchange(h, Far::Conv(0), &up, &down, |w| w.link_down(WIFI));
    let sent = sent_by_converter(&mut w);
    eprintln!("after the Wi-Fi loss, converter bytes by interface: {sent:?}");
    assert!(sent_on(&sent, CELLULAR) > cell_before + 150_000, "{sent:?}");
    assert_eq!(w.e.counters().failovers, 2);
    assert_eq!(w.e.flows()[0].iface, CELLULAR);
    assert!(
        w.syns.iter().all(|s| s.1 != NEVER),
        "no SYN on `never`: {:?}",
        w.syns
    );
    w.close_flow(h, Far::Conv(0));
}

#[test]
fn a_never_interface_is_not_used_even_when_it_is_the_only_one_left() {
    let mut w = world();
    for i in [ETH, WIFI, CELLULAR] {
        w.link_down(i);
    }
    assert_eq!(w.e.choose_iface(sa(DST).ip()), None, "not the `never` one");
    assert!(w.e.path_health(4).iter().all(|p| !p.usable && !p.primary));
    w.e.set_iface_policy(w.now, NEVER, IfacePolicy::backup(0));
    assert_eq!(w.e.choose_iface(sa(DST).ip()), Some(NEVER), "once it may be used");
}

#[test]
fn priority_decides_among_primaries_and_a_changed_policy_applies_to_new_flows() {
    let mut w = world();
    // The Wi-Fi outranks the Ethernet now.
    w.e.set_iface_policy(w.now, WIFI, IfacePolicy::primary(30));
    assert_eq!(w.e.choose_iface(sa(DST).ip()), Some(WIFI));
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    assert_eq!(w.e.flows()[0].iface, WIFI);
    w.run(|w| {
        let f = &w.e.flows()[0];
        f.subflows.iter().any(|s| s.iface == ETH && s.usable)
    });
    w.run_for(std::time::Duration::from_millis(200));
    let (up, down) = (pattern(300_000, 1), pattern(300_000, 2));
    w.exchange(h, Far::Conv(0), &up, &down, |_| {});
    let sent = sent_by_converter(&mut w);
    assert!(sent_on(&sent, WIFI) > 250_000, "{sent:?}");
    assert!(sent_on(&sent, ETH) < 20_000, "{sent:?}");
    let c = w.conv.ep.get_mut(w.conv.sessions[0].h).unwrap();
    assert!(c.subflows().iter().all(|s| s.path != PathId(NEVER)));
    w.close_flow(h, Far::Conv(0));
}

#[test]
fn handover_overhead_is_counted_on_the_backup_interface_whatever_its_id() {
    // Id 1 is a primary here and the backup is id 2.
    let e = engine_with(&[
        (WIFI, WIFI_ADDR, IfacePolicy::primary(10)),
        (1, CELL_ADDR, IfacePolicy::primary(20)),
        (2, ETH_ADDR, IfacePolicy::backup(0)),
    ]);
    let mut w = World::with_engine(e, Mode::Normal { ext: Vec::new() }, laptop_key());
    let h = w.connect(DST);
    w.run(|w| w.established(h));
    w.run(|w| w.e.flows()[0].subflows.iter().any(|s| s.iface == 2 && s.usable));
    let (up, down) = (pattern(200_000, 1), pattern(200_000, 2));
    w.exchange(h, Far::Conv(0), &up, &down, |_| {});
    let o = w.e.overhead().to_vec();
    eprintln!("overhead by interface: {o:?}");
    assert!(
        o.get(2).is_some_and(|&b| b > 0),
        "the backup's join and ACKs: {o:?}"
    );
    assert!(o.iter().take(2).all(|&b| b == 0), "none on the primaries: {o:?}");
    assert_eq!(w.e.counters().cellular_overhead_bytes, o.iter().sum::<u64>());
    w.close_flow(h, Far::Conv(0));
}

#[test]
fn an_interface_added_while_running_gets_its_rate_cap() {
    let mut e = mpbond::engine::Engine::new(mpbond::engine::Config {
        rate_caps: vec![None, Some(1_000_000)],
        ..mpbond::engine::Config::default()
    });
    assert_eq!((e.rate_cap(WIFI), e.rate_cap(CELLULAR)), (None, Some(1_000_000)));
    // A tether appears as id 3 (id 2 not there yet): capped as its role says; a place taken
    // over by another interface gets that one's cap (here none).
    e.set_rate_cap(3, Some(500_000));
    assert_eq!((e.rate_cap(2), e.rate_cap(3)), (None, Some(500_000)));
    e.set_rate_cap(3, None);
    assert_eq!(e.rate_cap(3), None);
    e.set_rate_cap(mpbond::config::MAX_INTERFACES as u8, Some(1));
    assert_eq!(e.rate_cap(mpbond::config::MAX_INTERFACES as u8), None);
}
