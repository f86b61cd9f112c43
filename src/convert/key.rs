//! Client keys and key files (skeleton).

use std::fmt;
use std::path::{Path, PathBuf};

/// A key's public identifier (8 bytes, sent in every cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A client key: an id and a 32-byte secret shared by one laptop and the converter.
#[derive(Clone)]
pub struct ClientKey {
    id: KeyId,
    secret: [u8; 32],
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(getrandom::Error),
    /// The key text is not a valid key line.
    #[error("not a mpbond convert key: {0}")]
    Format(&'static str),
    /// A key file could not be read or created.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl ClientKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<ClientKey, KeyError> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(KeyError::Random)?;
        getrandom::fill(&mut secret).map_err(KeyError::Random)?;
        Ok(ClientKey { id: KeyId(id), secret })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key file line.
    pub fn to_file_text(&self) -> String {
        let mut s = format!("mpbond-convert-key v1 {} ", self.id);
        for b in self.secret {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }

    /// Parses a key file line (skeleton: not implemented yet).
    pub fn parse_file_text(_text: &str) -> Result<ClientKey, KeyError> {
        Err(KeyError::Format("skeleton"))
    }

    /// Reads a key file (skeleton: not implemented yet).
    pub fn load(path: &Path) -> Result<ClientKey, KeyError> {
        Err(KeyError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("skeleton"),
        })
    }

    /// Generates and writes a new key file (skeleton: not implemented yet).
    pub fn write_new(path: &Path) -> Result<ClientKey, KeyError> {
        Err(KeyError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("skeleton"),
        })
    }
}
