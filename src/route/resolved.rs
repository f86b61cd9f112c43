//! systemd-resolved through `resolvectl`: per-link DNS servers, domains and the default-route
//! flag, as VPNs set them (`~.` on the tunnel takes every lookup).

use std::net::IpAddr;
use std::process::{Command, Stdio};

use super::apply::ApplyError;

/// Runs `resolvectl ARGS…`; returns its standard output.
pub fn resolvectl(args: &[&str]) -> Result<String, ApplyError> {
    let out = Command::new("resolvectl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ApplyError::Resolved(format!("cannot run resolvectl: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ApplyError::Resolved(format!(
            "resolvectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether a `resolvectl` error says the link does not exist (gone is fine for an undo).
fn link_gone(e: &ApplyError) -> bool {
    matches!(e, ApplyError::Resolved(m) if m.contains("No such device") || m.contains("Failed to resolve interface") || m.contains("Unknown interface"))
}

/// Sets `dev`'s DNS servers and domains and makes it a DNS default route.
pub fn set_link(dev: &str, servers: &[IpAddr], domains: &[String]) -> Result<(), ApplyError> {
    let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let mut args = vec!["dns", dev];
    args.extend(servers.iter().map(String::as_str));
    resolvectl(&args)?;
    let mut args = vec!["domain", dev];
    args.extend(domains.iter().map(String::as_str));
    resolvectl(&args)?;
    resolvectl(&["default-route", dev, "yes"]).map(drop)
}

/// Reverts `dev` to its own settings (succeeds when the link is gone).
pub fn revert(dev: &str) -> Result<(), ApplyError> {
    match resolvectl(&["revert", dev]) {
        Err(e) if link_gone(&e) => Ok(()),
        r => r.map(drop),
    }
}

/// Sets whether `dev` is a DNS default route (succeeds when the link is gone).
pub fn set_default_route(dev: &str, value: bool) -> Result<(), ApplyError> {
    match resolvectl(&["default-route", dev, if value { "yes" } else { "no" }]) {
        Err(e) if link_gone(&e) => Ok(()),
        r => r.map(drop),
    }
}
