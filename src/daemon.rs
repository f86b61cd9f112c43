//! Lifecycle of the daemon: `up`, `down`, `status`.

use std::path::Path;

use crate::config::Config;

/// Brings mpbond up with `config`.
pub fn up(_run_dir: &Path, _config: &Config, _foreground: bool) -> anyhow::Result<()> {
    anyhow::bail!("`up` is not implemented yet")
}

/// Takes mpbond down.
pub fn down(_run_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("`down` is not implemented yet")
}

/// Prints the daemon's status.
pub fn status(_run_dir: &Path, _json: bool, _flows: bool) -> anyhow::Result<()> {
    anyhow::bail!("`status` is not implemented yet")
}
