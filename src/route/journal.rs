//! The journal: every op is appended (JSON, one per line, fsynced) to `journal.jsonl` in the run
//! dir *before* it is executed. Undoing replays the inverses in reverse order; since inverses are
//! idempotent, an op that was journaled but never done (crash in between) is undone harmlessly.
//! A journal left by a crashed or killed daemon is replayed by `down` or by the next `up`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::apply::{ApplyError, Execute};
use super::plan::Op;

/// File name of the journal inside the run dir.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// The path of the journal in `run_dir`.
pub fn path_in(run_dir: &Path) -> PathBuf {
    run_dir.join(JOURNAL_FILE)
}

/// An open journal being appended to.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

/// Why replaying a journal failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The journal could not be read or removed.
    #[error("cannot read or remove the journal {path}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Some inverses failed; the journal is kept (with only those) so a later `down` retries.
    #[error("{count} undo step(s) failed, first")]
    Undo {
        /// How many failed.
        count: usize,
        /// The first failure.
        #[source]
        first: ApplyError,
    },
}

impl Journal {
    /// Creates a new, empty journal at `path`; fails if one exists (it must be replayed first).
    pub fn create(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().append(true).create_new(true).open(path)?;
        // Make the file's existence durable too.
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(Journal {
            file,
            path: path.to_owned(),
        })
    }

    /// Opens the existing journal at `path` to append more ops (those applied after the
    /// threads started: the system resolver).
    pub fn reopen(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            file,
            path: path.to_owned(),
        })
    }

    /// Appends `op` and flushes it to disk.
    pub fn append(&mut self, op: &Op) -> io::Result<()> {
        let mut line = serde_json::to_string(op).map_err(io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the ops of a journal. A last line cut short by a crash is ignored, as is any line that
/// does not parse (logged).
pub fn read(path: &Path) -> io::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Op>(line) {
            Ok(op) => ops.push(op),
            Err(e) => tracing::warn!("{}:{}: skipping unreadable entry: {e}", path.display(), i + 1),
        }
    }
    Ok(ops)
}

/// Undoes `ops` in reverse order. Every inverse is attempted; the ops whose inverse failed are
/// returned (in their original order) with the errors.
pub fn undo(ops: &[Op], exec: &mut dyn Execute) -> Vec<(Op, ApplyError)> {
    let mut failed = Vec::new();
    for op in ops.iter().rev() {
        if let Some(inv) = op.inverse()
            && let Err(e) = exec.execute(&inv)
        {
            tracing::error!("cannot undo `{op}`: {e}");
            failed.push((op.clone(), e));
        }
    }
    failed.reverse();
    failed
}

/// Replays the journal at `path` in reverse (if it exists) and removes it. Returns how many ops
/// it held. When some inverses fail, the journal is rewritten with just those ops.
pub fn replay(path: &Path, exec: &mut dyn Execute) -> Result<usize, ReplayError> {
    let io_err = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let ops = match read(path) {
        Ok(ops) => ops,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(e)),
    };
    let failed = undo(&ops, exec);
    let count = failed.len();
    let mut text = String::new();
    for (op, _) in &failed {
        text.push_str(&serde_json::to_string(op).map_err(|e| io_err(io::Error::other(e)))?);
        text.push('\n');
    }
    let Some((_, first)) = failed.into_iter().next() else {
        std::fs::remove_file(path).map_err(io_err)?;
        return Ok(ops.len());
    };
    std::fs::write(path, text).map_err(io_err)?;
    Err(ReplayError::Undo { count, first })
}
