//! Client keys and key files: text round trip, clear errors, mode 0600 on creation, no overwrite,
//! group/world-accessible files refused with a `chmod 600` hint, the secret never in Debug.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use mpbond::convert::key::{ClientKey, KeyError, KeyId};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let mut n = [0u8; 8];
        getrandom::fill(&mut n).unwrap();
        let p = std::env::temp_dir().join(format!("mpbond-key-{tag}-{}", KeyId(n)));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn text_round_trip_and_format() {
    let k = ClientKey::from_parts(KeyId([0xab; 8]), [0x01; 32]);
    let text = k.to_file_text();
    assert_eq!(
        text,
        format!("mpbond-convert-key v1 abababababababab {}\n", "01".repeat(32))
    );
    let back = ClientKey::parse_file_text(&text).unwrap();
    assert_eq!(back.id(), k.id());
    assert_eq!(back.to_file_text(), text);
    // Without the newline, with CRLF, upper-case hex.
    assert!(ClientKey::parse_file_text(text.trim_end()).is_ok());
    assert!(ClientKey::parse_file_text(&text.replace('\n', "\r\n")).is_ok());
    assert!(
        ClientKey::parse_file_text(
            &text
                .to_uppercase()
                .replace("MPBOND-CONVERT-KEY V1", "mpbond-convert-key v1")
        )
        .is_ok()
    );
    assert_eq!(
        KeyId([0, 1, 2, 3, 0xfc, 0xfd, 0xfe, 0xff]).to_string(),
        "00010203fcfdfeff"
    );
}

#[test]
fn bad_texts_are_clear_errors() {
    let good = ClientKey::from_parts(KeyId([1; 8]), [2; 32]).to_file_text();
    let cases = [
        ("", "does not start"),
        ("ssh-ed25519 AAAA", "does not start"),
        ("mpbond-convert-key", "missing format version"),
        ("mpbond-convert-key v2 0101010101010101 00", "version"),
        ("mpbond-convert-key v1", "missing key id"),
        ("mpbond-convert-key v1 01010101", "16 hex"),
        ("mpbond-convert-key v1 010101010101010g 00", "16 hex"),
        ("mpbond-convert-key v1 0101010101010101", "missing secret"),
        ("mpbond-convert-key v1 0101010101010101 0202", "64 hex"),
    ];
    for (text, want) in cases {
        let e = ClientKey::parse_file_text(text).unwrap_err();
        assert!(matches!(e, KeyError::Format(_)));
        let msg = e.to_string();
        assert!(msg.contains(want), "{text:?}: {msg}");
        assert!(!msg.contains('\n'));
    }
    let extra = format!("{} extra\n", good.trim_end());
    assert!(
        ClientKey::parse_file_text(&extra)
            .unwrap_err()
            .to_string()
            .contains("after the secret")
    );
    let two = format!("{good}{good}");
    assert!(
        ClientKey::parse_file_text(&two)
            .unwrap_err()
            .to_string()
            .contains("more than one line")
    );
    // Multi-byte UTF-8 never panics the hex parser.
    let _ = ClientKey::parse_file_text("mpbond-convert-key v1 ééééééééé ü");
}

#[test]
fn debug_never_prints_the_secret() {
    let k = ClientKey::from_parts(KeyId([0x11; 8]), [0xcd; 32]);
    let d = format!("{k:?} {k:#?}");
    assert!(d.contains("1111111111111111"), "{d}");
    assert!(!d.to_lowercase().contains("cdcd"), "{d}");
    assert!(!d.contains("205"), "{d}");
}

#[test]
fn generated_keys_differ() {
    let a = ClientKey::generate().unwrap();
    let b = ClientKey::generate().unwrap();
    assert_ne!(a.id(), b.id());
    assert_ne!(a.to_file_text(), b.to_file_text());
}

#[test]
fn write_new_then_load() {
    let dir = TempDir::new("write");
    let path = dir.0.join("laptop.key");
    let k = ClientKey::write_new(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = ClientKey::load(&path).unwrap();
    assert_eq!(loaded.id(), k.id());
    assert_eq!(loaded.to_file_text(), k.to_file_text());
    // Never overwrite.
    let before = std::fs::read(&path).unwrap();
    let e = ClientKey::write_new(&path).unwrap_err();
    assert!(matches!(e, KeyError::Exists { .. }));
    assert!(e.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn load_refuses_group_or_world_access() {
    let dir = TempDir::new("perm");
    let path = dir.0.join("conv.key");
    ClientKey::write_new(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = ClientKey::load(&path).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, KeyError::Insecure { .. }), "{mode:o}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains('\n'));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(ClientKey::load(&path).is_ok());
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new("errs");
    let missing = dir.0.join("nope.key");
    let e = ClientKey::load(&missing).unwrap_err();
    assert!(matches!(e, KeyError::Read { .. }));
    assert!(e.to_string().contains("nope.key"));
    let bad = dir.0.join("bad.key");
    std::fs::write(&bad, "hello\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = ClientKey::load(&bad).unwrap_err();
    assert!(matches!(e, KeyError::FileFormat { .. }));
    assert!(e.to_string().contains("bad.key"), "{e}");
    let big = dir.0.join("big.key");
    std::fs::write(&big, vec![b'a'; 10_000]).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        ClientKey::load(&big)
            .unwrap_err()
            .to_string()
            .contains("too long")
    );
    // A directory is not a key file.
    let sub = dir.0.join("d");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(ClientKey::load(&sub).is_err());
}
