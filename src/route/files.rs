//! Replacing a file and putting it back byte for byte (the resolv.conf mpbond takes over while
//! it is up). A replacement is written to a temporary file beside it and renamed over it, so
//! readers see the old file or the new one, never half of one; a file that is a mount point
//! (a bind-mounted resolv.conf: containers, `ip netns exec`) cannot be renamed over and is
//! rewritten in place instead.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use super::plan::FileBefore;

/// What `path` is now (a missing file is [`FileBefore::Missing`]).
pub fn read_before(path: &Path) -> io::Result<FileBefore> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileBefore::Missing),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(FileBefore::Symlink {
            target: fs::read_link(path)?,
        });
    }
    Ok(FileBefore::Content {
        bytes: fs::read(path)?,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn tmp_path(path: &Path) -> io::Result<std::path::PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp = name.to_os_string();
    tmp.push(format!(".mpbond-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Whether renaming over `path` failed because it is a mount point.
fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EXDEV))
}

/// Writes `bytes` at `path` as a regular file with `mode` (and owner, when given).
fn write_file(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let tmp = tmp_path(path)?;
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_busy(&e) => {
            let _ = fs::remove_file(&tmp);
            // A mount point: rewrite it in place (the mount keeps its mode and owner).
            let mut f = fs::OpenOptions::new().write(true).truncate(true).open(path)?;
            f.write_all(bytes)?;
            f.sync_all()
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces `path` with a regular file holding `content` (mode 0644).
pub fn replace(path: &Path, content: &str) -> io::Result<()> {
    write_file(path, content.as_bytes(), 0o644, None)
}

/// Puts `old` back at `path` if `path` still holds `ours` (or is missing, or is `old` already).
/// Returns false when someone else rewrote it since (it is then left alone).
pub fn restore(path: &Path, ours: &str, old: &FileBefore) -> io::Result<bool> {
    let now = read_before(path)?;
    if now == *old {
        return Ok(true);
    }
    let is_ours = match &now {
        FileBefore::Missing => true,
        FileBefore::Content { bytes, .. } => bytes == ours.as_bytes(),
        FileBefore::Symlink { .. } => false,
    };
    if !is_ours {
        return Ok(false);
    }
    match old {
        FileBefore::Missing => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(true),
        },
        FileBefore::Content {
            bytes,
            mode,
            uid,
            gid,
        } => write_file(path, bytes, *mode, Some((*uid, *gid))).map(|()| true),
        FileBefore::Symlink { target } => {
            let tmp = tmp_path(path)?;
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)?;
            fs::rename(&tmp, path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpbond-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_regular_file_comes_back_byte_for_byte() {
        let d = dir("regular");
        let p = d.join("resolv.conf");
        let original = b"# by NM\nnameserver 192.168.1.1\nsearch lan\n\x00\xff".to_vec();
        fs::write(&p, &original).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let old = read_before(&p).unwrap();
        replace(&p, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "nameserver 10.0.0.1\n");
        assert!(restore(&p, "nameserver 10.0.0.1\n", &old).unwrap());
        assert_eq!(fs::read(&p).unwrap(), original);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        // Repeating is harmless.
        assert!(restore(&p, "nameserver 10.0.0.1\n", &old).unwrap());
        assert_eq!(fs::read(&p).unwrap(), original);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_and_a_missing_file_come_back() {
        let d = dir("symlink");
        let p = d.join("resolv.conf");
        std::os::unix::fs::symlink("../run/stub.conf", &p).unwrap();
        let old = read_before(&p).unwrap();
        replace(&p, "x\n").unwrap();
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert!(restore(&p, "x\n", &old).unwrap());
        assert_eq!(fs::read_link(&p).unwrap(), Path::new("../run/stub.conf"));

        let q = d.join("none.conf");
        let old = read_before(&q).unwrap();
        assert_eq!(old, FileBefore::Missing);
        replace(&q, "y\n").unwrap();
        assert!(restore(&q, "y\n", &old).unwrap());
        assert!(!q.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_rewritten_by_someone_else_is_left_alone() {
        let d = dir("other");
        let p = d.join("resolv.conf");
        fs::write(&p, "old\n").unwrap();
        let old = read_before(&p).unwrap();
        replace(&p, "ours\n").unwrap();
        fs::write(&p, "networkmanager's new one\n").unwrap();
        assert!(!restore(&p, "ours\n", &old).unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "networkmanager's new one\n");
        fs::remove_dir_all(&d).unwrap();
    }
}
