//! The applier: executes [`Op`]s on the running system (rtnetlink for links, addresses, routes and
//! rules; `nft -f -` for the nft table; `/proc/sys` writes for sysctls), and reads the
//! [`HostState`] the plan needs. Each change is logged at info level as it is made.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::sys::tun::Tun;

use super::journal::Journal;
use super::netlink::Rtnl;
use super::plan::{self, Family, HostState, NFT_TABLE, Op};

/// Why an op failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A netlink request was refused.
    #[error("`{op}` failed")]
    Netlink {
        /// The op, rendered.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// `nft` failed or could not be run.
    #[error("`nft` failed: {0}")]
    Nft(String),
    /// A sysctl could not be written.
    #[error("cannot write /proc/sys/{key}")]
    Sysctl {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TUN device could not be created.
    #[error("cannot create TUN device {name}")]
    Tun {
        /// Device name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file (resolv.conf) could not be replaced or restored.
    #[error("cannot write {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `resolvectl` failed or could not be run.
    #[error("{0}")]
    Resolved(String),
    /// The journal could not be written: the op was not attempted.
    #[error("cannot write the journal")]
    Journal(#[source] io::Error),
}

/// Something that executes ops: the [`Applier`], or a recorder in tests.
pub trait Execute {
    /// Executes one op. Removal ops succeed when the thing is already gone.
    fn execute(&mut self, op: &Op) -> Result<(), ApplyError>;
}

/// Executes ops on the running system.
#[derive(Debug)]
pub struct Applier {
    rtnl: Rtnl,
    proc_sys: PathBuf,
    tun: Option<Tun>,
}

/// Errors that mean "already gone" for a removal.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL | libc::ENXIO)
    )
}

/// Errors that mean "already there" for an addition.
fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

impl Applier {
    /// Opens the netlink socket.
    pub fn new() -> io::Result<Applier> {
        Ok(Applier {
            rtnl: Rtnl::open()?,
            proc_sys: PathBuf::from("/proc/sys"),
            tun: None,
        })
    }

    /// The TUN opened by a [`Op::CreateTun`], handed to the daemon's TUN thread.
    pub fn take_tun(&mut self) -> Option<Tun> {
        self.tun.take()
    }

    /// Executes `op` for a re-application: an addition that finds its object already there is
    /// fine (nothing is logged then).
    pub fn reapply(&mut self, op: &Op) -> Result<bool, ApplyError> {
        match self.run(op) {
            Ok(()) => Ok(true),
            Err(ApplyError::Netlink { source, .. }) if is_exists(&source) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads what the plan depends on.
    pub fn host_state(&mut self, config: &Config) -> io::Result<HostState> {
        // IPv6 is off when the kernel lacks it or it is disabled everywhere (writing
        // `all.disable_ipv6` also sets it on every device and the default).
        let ipv6_available = self.proc_sys.join("net/ipv6").exists()
            && read_sysctl(&self.proc_sys, "net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v == "0");
        let mut sysctls = BTreeMap::new();
        for key in plan::SYSCTLS {
            if let Ok(v) = read_sysctl(&self.proc_sys, key) {
                sysctls.insert((*key).to_string(), v);
            }
        }
        Ok(HostState {
            links: self.rtnl.links()?,
            rule_priorities_v4: self.rtnl.rule_priorities(Family::V4)?,
            rule_priorities_v6: if ipv6_available {
                self.rtnl.rule_priorities(Family::V6)?
            } else {
                Vec::new()
            },
            table_routes: self.rtnl.count_routes(config.routing.table)?,
            nft_table_exists: nft_table_exists()?,
            ipv6_available,
            sysctls,
        })
    }

    fn run(&mut self, op: &Op) -> Result<(), ApplyError> {
        let nl = |op: &Op, r: io::Result<()>| {
            r.map_err(|source| ApplyError::Netlink {
                op: op.to_string(),
                source,
            })
        };
        let removal = |op: &Op, r: io::Result<()>| match r {
            Err(e) if is_gone(&e) => Ok(()),
            r => nl(op, r),
        };
        match op {
            Op::Sysctl { key, value, .. } => {
                write_sysctl(&self.proc_sys, key, value).map_err(|source| ApplyError::Sysctl {
                    key: key.clone(),
                    source,
                })
            }
            Op::NftCreate { script, .. } => nft(script),
            Op::NftDelete { name } => {
                // Adding an empty table first makes the deletion succeed when it is gone already.
                nft(&format!("table inet {name} {{}}\ndelete table inet {name}\n"))
            }
            Op::CreateTun { name } => {
                let tun = Tun::open(name).map_err(|source| ApplyError::Tun {
                    name: name.clone(),
                    source,
                })?;
                self.tun = Some(tun);
                Ok(())
            }
            Op::DeleteLink { name } => {
                // Closing our fd removes a non-persistent TUN; the netlink delete covers a TUN
                // whose fd is held elsewhere (or a leftover after a crash).
                if self.tun.as_ref().is_some_and(|t| t.name() == name) {
                    self.tun = None;
                }
                removal(op, self.rtnl.delete_link(name))
            }
            Op::SetMtu { dev, mtu } => nl(op, self.rtnl.set_mtu(dev, *mtu)),
            Op::AddAddr { dev, addr } => nl(op, self.rtnl.add_address(dev, addr)),
            Op::DelAddr { dev, addr } => removal(op, self.rtnl.del_address(dev, addr)),
            Op::LinkUp { dev } => nl(op, self.rtnl.set_link_up(dev, true)),
            Op::LinkDown { dev } => removal(op, self.rtnl.set_link_up(dev, false)),
            Op::AddRoute(r) => nl(op, self.rtnl.add_route(r)),
            Op::DelRoute(r) => removal(op, self.rtnl.del_route(r)),
            Op::AddRule(r) => nl(op, self.rtnl.add_rule(r)),
            Op::DelRule(r) => removal(op, self.rtnl.del_rule(r)),
            Op::ReplaceFile { path, content, .. } => {
                super::files::replace(path, content).map_err(|source| ApplyError::File {
                    path: path.clone(),
                    source,
                })
            }
            Op::RestoreFile { path, ours, old } => match super::files::restore(path, ours, old) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    tracing::warn!(
                        "{} was rewritten by someone else while mpbond was up; left as it is",
                        path.display()
                    );
                    Ok(())
                }
                Err(source) => Err(ApplyError::File {
                    path: path.clone(),
                    source,
                }),
            },
            Op::ResolvedLink {
                dev,
                servers,
                domains,
            } => super::resolved::set_link(dev, servers, domains),
            Op::ResolvedRevert { dev } => super::resolved::revert(dev),
            Op::ResolvedDefaultRoute { dev, value, .. } => super::resolved::set_default_route(dev, *value),
        }
    }
}

impl Execute for Applier {
    fn execute(&mut self, op: &Op) -> Result<(), ApplyError> {
        self.run(op)?;
        tracing::info!(target: "mpbond::route", "{}", first_line(op));
        Ok(())
    }
}

/// The first line of an op's rendering (the nft script is long).
fn first_line(op: &Op) -> String {
    match op {
        Op::NftCreate { name, .. } => format!("nft add table inet {name} (subflow port guard, mark restore)"),
        op => op.to_string(),
    }
}

/// Reads `/proc/sys/<key>`, trimmed.
pub fn read_sysctl(proc_sys: &Path, key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(proc_sys.join(key))?.trim().to_string())
}

fn write_sysctl(proc_sys: &Path, key: &str, value: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(proc_sys.join(key))?;
    // An empty value clears a list sysctl such as ip_local_reserved_ports.
    f.write_all(format!("{value}\n").as_bytes())
}

/// Adds interface `name` (picked up while running) to the nft set of the interfaces whose
/// kernel TCP is kept off the subflow ports; the set goes with the table at `down`.
pub fn nft_add_uplink(name: &str) -> Result<(), ApplyError> {
    nft(&super::plan::nft_add_uplink(name).map_err(|e| ApplyError::Nft(e.to_string()))?)
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), ApplyError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApplyError::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| ApplyError::Nft(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ApplyError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(ApplyError::Nft(
            err.lines()
                .find(|l| l.contains("Error"))
                .unwrap_or(err.trim())
                .to_string(),
        ))
    }
}

/// Whether `nft` can be run at all.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft_table_exists() -> io::Result<bool> {
    let out = Command::new("nft")
        .args(["list", "tables", "inet"])
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .any(|l| l.trim() == format!("table inet {NFT_TABLE}")))
}

/// Applies `ops` in order, appending each to `journal` before doing it. On the first failure,
/// everything done so far is undone (reverse order) and the journal removed; the error is
/// returned.
pub fn apply_all(ops: &[Op], journal: &mut Journal, exec: &mut dyn Execute) -> Result<(), ApplyError> {
    for op in ops {
        if let Err(e) = journal.append(op) {
            rollback(journal, exec);
            return Err(ApplyError::Journal(e));
        }
        if let Err(e) = exec.execute(op) {
            tracing::warn!("{e}; rolling back");
            rollback(journal, exec);
            return Err(e);
        }
    }
    Ok(())
}

fn rollback(journal: &Journal, exec: &mut dyn Execute) {
    if let Err(e) = super::journal::replay(journal.path(), exec) {
        tracing::error!("rollback incomplete: {e}");
    }
}
