//! Golden tests for the routing plan: the plan for a fixed input, rendered as `ip …`-style lines,
//! must match `tests/golden/*.txt`. Regenerate with `MPBOND_BLESS=1 cargo test --test route_plan`.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failure")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mpbond::cli::ifdetect::Role;
use mpbond::config::{Config, FileConfig, Overrides};
use mpbond::route::plan::{self, HostState, LinkState, Op, PlanError};

fn config(toml: &str) -> Config {
    let file = FileConfig::parse(toml, std::path::Path::new("golden.toml")).unwrap();
    let flags = Overrides {
        wifi: Some("wlan0".into()),
        cellular: Some("wwan0".into()),
        mode: None,
        ..Overrides::default()
    };
    Config::resolve(file, &flags, &|_: Role| None).unwrap()
}

fn link(name: &str, index: u32) -> LinkState {
    LinkState {
        name: name.into(),
        index,
        up: true,
        carrier: true,
        addresses: Vec::new(),
    }
}

fn host(reserved: &str, src_valid_mark: &str) -> HostState {
    let mut sysctls = BTreeMap::new();
    sysctls.insert(plan::SYSCTL_RESERVED_PORTS.to_string(), reserved.to_string());
    sysctls.insert(
        plan::SYSCTL_SRC_VALID_MARK.to_string(),
        src_valid_mark.to_string(),
    );
    HostState {
        links: vec![link("lo", 1), link("wlan0", 2), link("wwan0", 3)],
        rule_priorities_v4: vec![0, 32766, 32767],
        rule_priorities_v6: vec![0, 32766],
        table_routes: 0,
        nft_table_exists: false,
        ipv6_available: true,
        sysctls,
    }
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("MPBOND_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with MPBOND_BLESS=1 to create)", path.display()));
    assert_eq!(
        expected,
        actual,
        "plan differs from {} (MPBOND_BLESS=1 regenerates)",
        path.display()
    );
}

#[test]
fn default_plan_matches_golden() {
    let p = plan::plan(&config(""), &host("", "0")).unwrap();
    golden("plan_default.txt", &p.render());
}

#[test]
fn custom_plan_without_ipv6_matches_golden() {
    let c = config(
        "[tun]\nname = \"mp7\"\nmtu = 9000\nipv4 = \"100.64.9.1\"\nenable_ipv6 = false\n\
         [routing]\nfwmark = 4660\ntable = 100\nrule_priority = 5000\nsubflow_ports = \"40000-40999\"\n",
    );
    // src_valid_mark already on, other ports already reserved: merged, not replaced.
    let p = plan::plan(&c, &host("8080,9000-9010", "1")).unwrap();
    golden("plan_custom_v4only.txt", &p.render());
}

#[test]
fn inverses_round_trip_and_undo_everything_but_the_mtu() {
    let p = plan::plan(&config(""), &host("", "0")).unwrap();
    for op in &p.ops {
        match op.inverse() {
            // A sysctl's inverse is a sysctl write back; every other inverse is a removal.
            Some(inv) if matches!(op, Op::Sysctl { .. }) => assert_eq!(inv.inverse().as_ref(), Some(op)),
            Some(inv) => assert!(inv.inverse().is_none(), "inverse of an inverse: {op}"),
            None => assert!(matches!(op, Op::SetMtu { .. }), "no inverse for {op}"),
        }
    }
    // The sysctl inverse restores the exact old value.
    let s = p
        .ops
        .iter()
        .find(|o| matches!(o, Op::Sysctl { key, .. } if key == plan::SYSCTL_RESERVED_PORTS));
    let Some(Op::Sysctl { value, old, .. }) = s.and_then(Op::inverse) else {
        panic!("no reserved-ports op")
    };
    assert_eq!((value.as_str(), old.as_str()), ("", "61000-64999"));
}

#[test]
fn ops_serialize_to_json_and_back() {
    let p = plan::plan(&config(""), &host("", "0")).unwrap();
    for op in &p.ops {
        let s = serde_json::to_string(op).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(&serde_json::from_str::<Op>(&s).unwrap(), op);
    }
}

#[test]
fn tun_comeback_reapplies_addresses_and_routes() {
    let p = plan::plan(&config(""), &host("", "0")).unwrap();
    let lines: Vec<String> = p.on_tun_up().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "ip -4 addr add 100.127.77.1/32 dev mpbond0",
            "ip -6 addr add fd6d:7062:6f6e:6400::1/128 dev mpbond0 nodad",
            "ip -4 route add default dev mpbond0 table 28016",
            "ip -6 route add default dev mpbond0 table 28016",
        ]
    );
}

#[test]
fn refuses_hosts_it_would_clobber() {
    let c = config("");
    let mut h = host("", "0");
    h.links.retain(|l| l.name != "wwan0");
    assert_eq!(
        plan::plan(&c, &h).unwrap_err().to_string(),
        "backup interface wwan0 not found"
    );
    let mut h = host("", "0");
    h.links.push(link("mpbond0", 9));
    assert!(matches!(plan::plan(&c, &h), Err(PlanError::TunExists(_))));
    let mut h = host("", "0");
    h.rule_priorities_v6.push(7120);
    assert_eq!(
        plan::plan(&c, &h).unwrap_err(),
        PlanError::PriorityTaken {
            family: 6,
            priority: 7120
        }
    );
    let mut h = host("", "0");
    h.table_routes = 1;
    assert!(matches!(plan::plan(&c, &h), Err(PlanError::TableInUse(28016))));
    let mut h = host("", "0");
    h.nft_table_exists = true;
    assert_eq!(plan::plan(&c, &h), Err(PlanError::NftTableExists));
    let mut h = host("", "0");
    h.sysctls.clear();
    assert!(matches!(plan::plan(&c, &h), Err(PlanError::SysctlMissing(_))));
}

#[test]
fn no_ipv6_on_the_host_means_no_ipv6_ops() {
    let mut h = host("", "0");
    h.ipv6_available = false;
    let p = plan::plan(&config(""), &h).unwrap();
    assert!(!p.render().contains("ip -6"), "{}", p.render());
}

#[test]
fn reserved_ports_merge() {
    assert_eq!(plan::merge_reserved_ports("", &(61000..=64999)), "61000-64999");
    assert_eq!(
        plan::merge_reserved_ports(" 80\n", &(61000..=64999)),
        "80,61000-64999"
    );
    assert_eq!(
        plan::merge_reserved_ports("80,61000-64999", &(61000..=64999)),
        "80,61000-64999"
    );
}

#[test]
fn a_listed_interface_may_be_absent_at_up_and_every_used_one_is_in_the_nft_filter() {
    let c = config(
        "[[interfaces.list]]\nname = \"usb0\"\nrole = \"backup\"\n\
         [[interfaces.list]]\nname = \"docker0\"\nrole = \"never\"\n",
    );
    let h = host("", "0");
    assert!(h.link("usb0").is_none());
    let p = plan::plan(&c, &h).expect("usb0 may appear later");
    assert!(!p.ops.is_empty());
    let nft = plan::nft_script(&c).unwrap();
    assert!(
        nft.contains("elements = { \"wlan0\", \"wwan0\", \"usb0\" }"),
        "{nft}"
    );
    assert_eq!(
        plan::nft_add_uplink("usb1").unwrap(),
        "add element inet mpbond uplinks { \"usb1\" }\n"
    );
    // The named ones must be there.
    let mut h = host("", "0");
    h.links.retain(|l| l.name != "wlan0");
    assert_eq!(
        plan::plan(&c, &h).unwrap_err().to_string(),
        "primary interface wlan0 not found"
    );
}
