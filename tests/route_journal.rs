//! The journal and the applier's rollback, against a fake system (no root needed): replay order,
//! idempotence, rollback of a failed `up`, stale and truncated journals.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failure")]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use mpbond::cli::ifdetect::Role;
use mpbond::config::{Config, FileConfig, Overrides};
use mpbond::route::journal::{self, Journal};
use mpbond::route::plan::{self, HostState, LinkState, Op};
use mpbond::route::{ApplyError, Execute, apply_all};

/// A fake system: additions fail when the thing exists, removals succeed when it is gone (as the
/// real applier does). Every executed op is recorded.
#[derive(Default)]
struct Fake {
    things: BTreeSet<String>,
    sysctls: BTreeMap<String, String>,
    log: Vec<Op>,
    fail_on: Option<Op>,
}

fn key(op: &Op) -> Option<(String, bool)> {
    Some(match op {
        Op::NftCreate { name, .. } => (format!("nft {name}"), true),
        Op::NftDelete { name } => (format!("nft {name}"), false),
        Op::CreateTun { name } => (format!("link {name}"), true),
        Op::DeleteLink { name } => (format!("link {name}"), false),
        Op::AddAddr { dev, addr } => (format!("addr {dev} {addr}"), true),
        Op::DelAddr { dev, addr } => (format!("addr {dev} {addr}"), false),
        Op::LinkUp { dev } => (format!("up {dev}"), true),
        Op::LinkDown { dev } => (format!("up {dev}"), false),
        Op::AddRoute(r) => (format!("route {r:?}"), true),
        Op::DelRoute(r) => (format!("route {r:?}"), false),
        Op::AddRule(r) => (format!("rule {r:?}"), true),
        Op::DelRule(r) => (format!("rule {r:?}"), false),
        Op::ReplaceFile { path, .. } => (format!("file {}", path.display()), true),
        Op::RestoreFile { path, .. } => (format!("file {}", path.display()), false),
        Op::ResolvedLink { dev, .. } => (format!("resolved {dev}"), true),
        Op::ResolvedRevert { dev } => (format!("resolved {dev}"), false),
        Op::Sysctl { .. } | Op::SetMtu { .. } | Op::ResolvedDefaultRoute { .. } => return None,
    })
}

impl Execute for Fake {
    fn execute(&mut self, op: &Op) -> Result<(), ApplyError> {
        self.log.push(op.clone());
        if self.fail_on.as_ref() == Some(op) {
            return Err(ApplyError::Netlink {
                op: op.to_string(),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        if let Op::Sysctl { key, value, .. } = op {
            self.sysctls.insert(key.clone(), value.clone());
            return Ok(());
        }
        let Some((k, add)) = key(op) else {
            return Ok(());
        };
        if add {
            if !self.things.insert(k) {
                return Err(ApplyError::Netlink {
                    op: op.to_string(),
                    source: io::Error::from_raw_os_error(libc::EEXIST),
                });
            }
        } else {
            // Removing something already gone is fine.
            self.things.remove(&k);
        }
        Ok(())
    }
}

fn test_plan() -> plan::Plan {
    let file = FileConfig::parse("", std::path::Path::new("t.toml")).unwrap();
    let flags = Overrides {
        wifi: Some("wlan0".into()),
        cellular: Some("wwan0".into()),
        mode: None,
        ..Overrides::default()
    };
    let config: Config = Config::resolve(file, &flags, &|_: Role| None).unwrap();
    let mut sysctls = BTreeMap::new();
    sysctls.insert(plan::SYSCTL_RESERVED_PORTS.to_string(), "8080".to_string());
    sysctls.insert(plan::SYSCTL_SRC_VALID_MARK.to_string(), "0".to_string());
    let link = |name: &str, index| LinkState {
        name: name.into(),
        index,
        ..LinkState::default()
    };
    let host = HostState {
        links: vec![link("wlan0", 2), link("wwan0", 3)],
        ipv6_available: true,
        sysctls,
        ..HostState::default()
    };
    plan::plan(&config, &host).unwrap()
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("mpbond-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn journal(&self) -> PathBuf {
        journal::path_in(&self.0)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn initial_fake() -> Fake {
    let mut f = Fake::default();
    f.sysctls
        .insert(plan::SYSCTL_RESERVED_PORTS.into(), "8080".into());
    f.sysctls.insert(plan::SYSCTL_SRC_VALID_MARK.into(), "0".into());
    f
}

#[test]
fn apply_journals_everything_and_replay_undoes_in_reverse() {
    let dir = TempDir::new("replay");
    let plan = test_plan();
    let mut fake = initial_fake();
    let before = (fake.things.clone(), fake.sysctls.clone());
    let mut j = Journal::create(&dir.journal()).unwrap();
    apply_all(&plan.ops, &mut j, &mut fake).unwrap();
    drop(j);
    assert_eq!(journal::read(&dir.journal()).unwrap(), plan.ops);
    assert_eq!(fake.sysctls[plan::SYSCTL_RESERVED_PORTS], "8080,61000-64999");

    fake.log.clear();
    let n = journal::replay(&dir.journal(), &mut fake).unwrap();
    assert_eq!(n, plan.ops.len());
    let expected: Vec<Op> = plan.ops.iter().rev().filter_map(Op::inverse).collect();
    assert_eq!(fake.log, expected);
    assert_eq!((fake.things.clone(), fake.sysctls.clone()), before);
    assert!(!dir.journal().exists());

    // Replaying again (down twice) does nothing and succeeds.
    fake.log.clear();
    assert_eq!(journal::replay(&dir.journal(), &mut fake).unwrap(), 0);
    assert!(fake.log.is_empty());
}

#[test]
fn undo_is_idempotent_when_things_are_already_gone() {
    let plan = test_plan();
    let mut fake = initial_fake();
    for op in &plan.ops {
        fake.execute(op).unwrap();
    }
    // The TUN vanished with the daemon: its addresses, routes and the link are gone already.
    fake.things.retain(|k| !k.contains("mpbond0"));
    assert!(journal::undo(&plan.ops, &mut fake).is_empty());
    assert!(journal::undo(&plan.ops, &mut fake).is_empty());
    assert!(fake.things.is_empty());
    assert_eq!(fake.sysctls[plan::SYSCTL_RESERVED_PORTS], "8080");
}

#[test]
fn a_failed_up_rolls_back_everything_it_did() {
    let dir = TempDir::new("rollback");
    let plan = test_plan();
    let mut fake = initial_fake();
    let before = (fake.things.clone(), fake.sysctls.clone());
    let k = plan
        .ops
        .iter()
        .position(|o| matches!(o, Op::AddRoute(_)))
        .unwrap();
    fake.fail_on = Some(plan.ops[k].clone());
    let mut j = Journal::create(&dir.journal()).unwrap();
    let err = apply_all(&plan.ops, &mut j, &mut fake).unwrap_err();
    assert!(err.to_string().contains("route add"), "{err}");
    // Ops 0..=k were attempted, then the inverses of 0..=k in reverse.
    let mut expected: Vec<Op> = plan.ops[..=k].to_vec();
    expected.extend(plan.ops[..=k].iter().rev().filter_map(Op::inverse));
    assert_eq!(fake.log, expected);
    assert_eq!((fake.things, fake.sysctls), before);
    assert!(!dir.journal().exists(), "journal removed after a full rollback");
}

#[test]
fn a_stale_journal_cut_short_by_a_crash_is_replayed() {
    let dir = TempDir::new("stale");
    let plan = test_plan();
    let mut fake = initial_fake();
    let before = (fake.things.clone(), fake.sysctls.clone());
    {
        let mut j = Journal::create(&dir.journal()).unwrap();
        for op in &plan.ops[..6] {
            j.append(op).unwrap();
            fake.execute(op).unwrap();
        }
        // Killed while writing the 7th entry.
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.journal())
            .unwrap();
        f.write_all(br#"{"op":"add_rou"#).unwrap();
    }
    // A new `up` must not start over a stale journal.
    assert!(Journal::create(&dir.journal()).is_err());
    assert_eq!(journal::read(&dir.journal()).unwrap(), plan.ops[..6].to_vec());
    assert_eq!(journal::replay(&dir.journal(), &mut fake).unwrap(), 6);
    assert_eq!((fake.things, fake.sysctls), before);
    assert!(Journal::create(&dir.journal()).is_ok());
}

#[test]
fn failed_undo_steps_stay_in_the_journal_for_the_next_down() {
    let dir = TempDir::new("keep");
    let plan = test_plan();
    let mut fake = initial_fake();
    let mut j = Journal::create(&dir.journal()).unwrap();
    apply_all(&plan.ops, &mut j, &mut fake).unwrap();
    let nft = plan
        .ops
        .iter()
        .find(|o| matches!(o, Op::NftCreate { .. }))
        .unwrap()
        .clone();
    fake.fail_on = nft.inverse();
    let err = journal::replay(&dir.journal(), &mut fake).unwrap_err();
    assert!(err.to_string().contains("1 undo step"), "{err}");
    assert_eq!(journal::read(&dir.journal()).unwrap(), vec![nft]);
    fake.fail_on = None;
    assert_eq!(journal::replay(&dir.journal(), &mut fake).unwrap(), 1);
    assert!(fake.things.is_empty());
    assert!(!dir.journal().exists());
}
