//! Client keys and key files.
//!
//! A [`ClientKey`] is a public 8-byte [`KeyId`] (sent in every cookie, so the converter finds the
//! key) and a 32-byte secret (the HMAC key of the cookie's proof, `cookie.rs`). The same key is
//! configured on one laptop and on the converter; revoking it on the converter ends its use.
//!
//! Key file: one line, versioned, hex:
//! `mpbond-convert-key v1 <16 hex digits: id> <64 hex digits: secret>\n`.
//! [`ClientKey::write_new`] creates it with mode 0600 and never overwrites; [`ClientKey::load`]
//! refuses a file that group or others may access. `Debug` prints the id only.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The first word of a key file line.
pub const FILE_MAGIC: &str = "mpbond-convert-key";
/// The key file format version this build writes and reads.
pub const FILE_VERSION: &str = "v1";
/// Key files longer than this are not key files.
const MAX_FILE_LEN: u64 = 4096;

/// A key's public identifier (8 bytes, sent in every cookie). Display: 16 lowercase hex digits.
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
        // Never the secret.
        f.debug_struct("ClientKey")
            .field("id", &format_args!("{}", self.id))
            .finish_non_exhaustive()
    }
}

/// Why a key could not be made, read or written. Messages are one line and name the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("no randomness for a new convert key: {0}")]
    Random(getrandom::Error),
    /// The key text is not a valid key line.
    #[error("invalid convert key: {0}")]
    Format(&'static str),
    /// A key file's content is not a valid key line.
    #[error("key file {path}: invalid convert key: {reason}")]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A key file may be read or written by group or others.
    #[error("key file {path} is accessible by group or others (mode {mode:03o}); run `chmod 600 {path}`")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// [`ClientKey::write_new`] found a file already there.
    #[error("key file {path} already exists; not overwriting it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key file could not be created or written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl ClientKey {
    /// A fresh key from the system CSPRNG (getrandom).
    pub fn generate() -> Result<ClientKey, KeyError> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(KeyError::Random)?;
        getrandom::fill(&mut secret).map_err(KeyError::Random)?;
        Ok(ClientKey {
            id: KeyId(id),
            secret,
        })
    }

    /// A key from known parts (tests, tools).
    pub fn from_parts(id: KeyId, secret: [u8; 32]) -> ClientKey {
        ClientKey { id, secret }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The HMAC key of the cookie proof (crate-internal: only `cookie.rs` uses it).
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The key file line: `mpbond-convert-key v1 <id hex> <secret hex>\n`.
    pub fn to_file_text(&self) -> String {
        let mut s = format!("{FILE_MAGIC} {FILE_VERSION} {} ", self.id);
        push_hex(&mut s, &self.secret);
        s.push('\n');
        s
    }

    /// Parses a key file line (one trailing newline allowed). Never panics.
    pub fn parse_file_text(text: &str) -> Result<ClientKey, KeyError> {
        parse_line(text).map_err(KeyError::Format)
    }

    /// Reads a key file, refusing one that group or others may access (mode & 0o077 ≠ 0).
    pub fn load(path: &Path) -> Result<ClientKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::FileFormat {
                path: path.to_owned(),
                reason: "not a regular file",
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Insecure {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(KeyError::FileFormat {
                path: path.to_owned(),
                reason: "file too long for a key",
            });
        }
        parse_line(&text).map_err(|reason| KeyError::FileFormat {
            path: path.to_owned(),
            reason,
        })
    }

    /// Generates a key and writes it to a new file created with mode 0600 (`create_new`: an
    /// existing file is never overwritten).
    pub fn write_new(path: &Path) -> Result<ClientKey, KeyError> {
        let key = ClientKey::generate()?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    KeyError::Write {
                        path: path.to_owned(),
                        source,
                    }
                }
            })?;
        let written = file
            .write_all(key.to_file_text().as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            // Leave no half-written key behind (it would fail `load` later with a worse message).
            let _ = std::fs::remove_file(path);
            return Err(KeyError::Write {
                path: path.to_owned(),
                source,
            });
        }
        Ok(key)
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
}

fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], &'static str> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(what);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(what),
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn parse_line(text: &str) -> Result<ClientKey, &'static str> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\n') {
        return Err("more than one line");
    }
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some(FILE_MAGIC) {
        return Err("does not start with `mpbond-convert-key`");
    }
    match fields.next() {
        Some(FILE_VERSION) => {}
        Some(_) => return Err("unsupported key format version (this build reads v1)"),
        None => return Err("missing format version"),
    }
    let id = parse_hex::<8>(
        fields.next().ok_or("missing key id")?,
        "key id is not 16 hex digits",
    )?;
    let secret = parse_hex::<32>(
        fields.next().ok_or("missing secret")?,
        "secret is not 64 hex digits",
    )?;
    if fields.next().is_some() {
        return Err("unexpected text after the secret");
    }
    Ok(ClientKey {
        id: KeyId(id),
        secret,
    })
}
