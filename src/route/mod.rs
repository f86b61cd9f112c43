//! Routing and firewall changes: a pure [`plan`] (config + host snapshot → ops), an [`apply`]er
//! (rtnetlink, nft, sysctl) and a [`journal`] for rollback and crash cleanup.

pub mod apply;
pub mod files;
pub mod journal;
pub mod netlink;
pub mod plan;
pub mod resolved;

pub use apply::{Applier, ApplyError, Execute, apply_all};
pub use journal::Journal;
pub use plan::{HostState, LinkState, Op, Plan, PlanError, plan};
