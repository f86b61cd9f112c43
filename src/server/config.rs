//! The converter's configuration: `/etc/mpbond/server.toml` (every key optional; unknown keys
//! rejected with their line and column), overridden by `--listen` and `--key-file`, validated
//! into [`ServerConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::limits::LimitsConfig;
use super::policy::EgressPolicy;
use crate::config::{ConfigError, parse_toml};
use crate::convert::converter::ConverterConfig;

/// Default location of the converter's configuration file.
pub const DEFAULT_SERVER_CONFIG: &str = "/etc/mpbond/server.toml";
/// Default key directory: every `*.key` in it is a client key (when no key file is listed).
pub const DEFAULT_KEY_DIR: &str = "/etc/mpbond/keys";
/// Default status socket.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/mpbond-server/status.sock";

/// At most this many event-loop threads.
pub const MAX_WORKERS: usize = 64;

/// The file as written.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Addresses to listen on (`"0.0.0.0:5124"`, `"[::]:5124"`).
    pub listen: Option<Vec<SocketAddr>>,
    /// One key file per laptop (`mpbond server --gen-key FILE` writes one). When not set, every
    /// `*.key` file in `key_dir`.
    pub key_files: Option<Vec<PathBuf>>,
    /// Directory of key files used when `key_files` is not set (default `/etc/mpbond/keys`).
    pub key_dir: Option<PathBuf>,
    /// The status socket `mpbond server --status` asks.
    pub status_socket: Option<PathBuf>,
    /// Event-loop threads, each with its own descriptor table and `SO_REUSEPORT` listeners
    /// (default: one per CPU, at most [`MAX_WORKERS`]).
    pub workers: Option<usize>,
    /// `[egress]`.
    #[serde(default)]
    pub egress: FileEgress,
    /// `[limits]`.
    #[serde(default)]
    pub limits: FileLimits,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// `[convert]`.
    #[serde(default)]
    pub convert: FileConvert,
}

/// `[egress]`: which destinations clients may reach.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEgress {
    /// Prefixes allowed whatever their class (loopback, RFC 1918, ...).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Ports allowed although denied by default (25).
    #[serde(default)]
    pub allow_ports: Vec<u16>,
    /// Prefixes denied in addition to the default classes.
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Connections still sending their request, converter-wide.
    pub max_requesting: Option<usize>,
    /// Relayed (or dialing) connections, converter-wide.
    pub max_total: Option<usize>,
    /// Relayed (or dialing) connections of one client key.
    pub max_per_key: Option<usize>,
    /// Dials in progress of one client key.
    pub max_pending_per_key: Option<usize>,
}

/// `[timeouts]`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// The whole Convert request must arrive within this (ms, default 5000).
    pub request_ms: Option<u64>,
    /// The destination must accept within this (ms, default 10000).
    pub dial_ms: Option<u64>,
    /// A relayed connection with no byte either way for this long is closed (s, default 3600).
    pub idle_secs: Option<u64>,
    /// A relayed UDP session with no datagram either way for this long ends (s, default 120).
    pub udp_idle_secs: Option<u64>,
}

/// `[convert]`: the protocol checks.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConvert {
    /// Cookie timestamps further than this from the converter's clock are stale (s, default 120).
    pub max_clock_skew_secs: Option<u64>,
    /// Entries of the replay cache (default 65536).
    pub replay_capacity: Option<usize>,
    /// Longest Convert message accepted (bytes, default 1024).
    pub max_request_len: Option<usize>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listening addresses.
    pub listen: Vec<SocketAddr>,
    /// Where the client keys are (read at start and on SIGHUP).
    pub keys: KeySource,
    /// Status socket.
    pub status_socket: PathBuf,
    /// Event-loop threads.
    pub workers: usize,
    /// Egress policy (the converter's own addresses are added at run time).
    pub policy: EgressPolicy,
    /// Limits.
    pub limits: LimitsConfig,
    /// Time for the whole request.
    pub request_timeout: Duration,
    /// Time for the destination to accept.
    pub dial_timeout: Duration,
    /// Idle time before a relayed connection is closed.
    pub idle_timeout: Duration,
    /// Idle time before a relayed UDP session ends.
    pub udp_idle_timeout: Duration,
    /// The protocol checks.
    pub converter: ConverterConfig,
}

/// Where the client keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// These files.
    Files(Vec<PathBuf>),
    /// Every `*.key` file in this directory.
    Dir(PathBuf),
}

impl KeySource {
    /// The key files now (a directory is listed anew each time, sorted).
    pub fn paths(&self) -> std::io::Result<Vec<PathBuf>> {
        match self {
            KeySource::Files(f) => Ok(f.clone()),
            KeySource::Dir(d) => {
                let mut v: Vec<PathBuf> = std::fs::read_dir(d)?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "key") && p.is_file())
                    .collect();
                v.sort();
                Ok(v)
            }
        }
    }
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct ServerOverrides {
    /// `--listen` (replaces `listen`).
    pub listen: Vec<SocketAddr>,
    /// `--key-file` (replaces `key_files`).
    pub key_files: Vec<PathBuf>,
    /// `--status-socket`.
    pub status_socket: Option<PathBuf>,
    /// `--workers`.
    pub workers: Option<usize>,
}

impl ServerFile {
    /// Parses TOML text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ServerFile, ConfigError> {
        parse_toml(text, path)
    }

    /// Reads the file. A missing file at the default path is an empty config; a missing file that
    /// was asked for explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<ServerFile, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ServerFile::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(ServerFile::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

fn positive(key: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be greater than 0".into(),
        });
    }
    Ok(v)
}

fn at_least_one(key: &'static str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be at least 1".into(),
        });
    }
    Ok(v)
}

impl ServerConfig {
    /// File + flags → the configuration, or the first invalid value.
    pub fn resolve(file: ServerFile, flags: &ServerOverrides) -> Result<ServerConfig, ConfigError> {
        let listen = if flags.listen.is_empty() {
            file.listen.unwrap_or_else(|| {
                let port = crate::convert::DEFAULT_PORT;
                vec![
                    SocketAddr::from(([0, 0, 0, 0], port)),
                    SocketAddr::from(([0u16; 8], port)),
                ]
            })
        } else {
            flags.listen.clone()
        };
        if listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listen",
                reason: "no address to listen on".into(),
            });
        }
        let keys = if !flags.key_files.is_empty() {
            KeySource::Files(flags.key_files.clone())
        } else {
            match file.key_files {
                Some(f) if f.is_empty() => {
                    return Err(ConfigError::Invalid {
                        key: "key_files",
                        reason: "empty list: list key files, or remove the key to use key_dir".into(),
                    });
                }
                Some(f) => KeySource::Files(f),
                None => KeySource::Dir(file.key_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_DIR))),
            }
        };
        let d = LimitsConfig::default();
        let l = &file.limits;
        let limits = LimitsConfig {
            max_requesting: at_least_one(
                "limits.max_requesting",
                l.max_requesting.unwrap_or(d.max_requesting),
            )?,
            max_total: at_least_one("limits.max_total", l.max_total.unwrap_or(d.max_total))?,
            max_per_key: at_least_one("limits.max_per_key", l.max_per_key.unwrap_or(d.max_per_key))?,
            max_pending_per_key: at_least_one(
                "limits.max_pending_per_key",
                l.max_pending_per_key.unwrap_or(d.max_pending_per_key),
            )?,
        };
        let workers = match flags.workers.or(file.workers) {
            Some(n) if !(1..=MAX_WORKERS).contains(&n) => {
                return Err(ConfigError::Invalid {
                    key: "workers",
                    reason: format!("{n} is outside 1-{MAX_WORKERS}"),
                });
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
        };
        let t = &file.timeouts;
        let dc = ConverterConfig::default();
        let c = &file.convert;
        let max_request_len = c.max_request_len.unwrap_or(dc.max_request_len);
        if !(16..=65_535).contains(&max_request_len) {
            return Err(ConfigError::Invalid {
                key: "convert.max_request_len",
                reason: format!("{max_request_len} is outside 16-65535"),
            });
        }
        Ok(ServerConfig {
            listen,
            keys,
            status_socket: flags
                .status_socket
                .clone()
                .or(file.status_socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATUS_SOCKET)),
            workers,
            policy: EgressPolicy {
                allow: file.egress.allow,
                allow_ports: file.egress.allow_ports,
                deny: file.egress.deny,
                own: Default::default(),
            },
            limits,
            request_timeout: Duration::from_millis(positive(
                "timeouts.request_ms",
                t.request_ms.unwrap_or(5000),
            )?),
            dial_timeout: Duration::from_millis(positive("timeouts.dial_ms", t.dial_ms.unwrap_or(10_000))?),
            idle_timeout: Duration::from_secs(positive("timeouts.idle_secs", t.idle_secs.unwrap_or(3600))?),
            udp_idle_timeout: Duration::from_secs(positive(
                "timeouts.udp_idle_secs",
                t.udp_idle_secs.unwrap_or(120),
            )?),
            converter: ConverterConfig {
                max_clock_skew: Duration::from_secs(positive(
                    "convert.max_clock_skew_secs",
                    c.max_clock_skew_secs.unwrap_or(dc.max_clock_skew.as_secs()),
                )?),
                replay_capacity: at_least_one(
                    "convert.replay_capacity",
                    c.replay_capacity.unwrap_or(dc.replay_capacity),
                )?,
                max_request_len,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerFile, ConfigError> {
        ServerFile::parse(text, Path::new("server.toml"))
    }

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../packaging/server.toml");
        let f = parse(text).unwrap();
        let c = ServerConfig::resolve(
            f,
            &ServerOverrides {
                key_files: vec!["/k".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen[0].port(), 5124);
    }

    #[test]
    fn full_file_resolves() {
        let f = parse(
            r#"
listen = ["198.19.3.2:5124", "[fd19:3::2]:5124"]
key_files = ["/etc/mpbond/keys/a.key"]
[egress]
allow = ["10.1.0.0/16"]
allow_ports = [25]
[limits]
max_total = 9
max_pending_per_key = 3
[timeouts]
dial_ms = 1500
[convert]
max_request_len = 512
"#,
        )
        .unwrap();
        let c = ServerConfig::resolve(f, &ServerOverrides::default()).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.limits.max_total, 9);
        assert_eq!(c.limits.max_pending_per_key, 3);
        assert_eq!(c.limits.max_per_key, LimitsConfig::default().max_per_key);
        assert_eq!(c.dial_timeout, Duration::from_millis(1500));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.converter.max_request_len, 512);
        assert_eq!(c.policy.allow_ports, vec![25]);
        assert_eq!(c.status_socket, PathBuf::from(DEFAULT_STATUS_SOCKET));
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse("listen = [\"0.0.0.0:1\"]\nkey_files = [\"/a\"]\n").unwrap();
        let c = ServerConfig::resolve(
            f,
            &ServerOverrides {
                listen: vec!["127.0.0.1:5124".parse().unwrap()],
                key_files: vec!["/b".into(), "/c".into()],
                status_socket: Some("/tmp/s.sock".into()),
                workers: None,
            },
        )
        .unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:5124".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.keys, KeySource::Files(vec!["/b".into(), "/c".into()]));
        assert_eq!(c.status_socket, PathBuf::from("/tmp/s.sock"));
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = parse("listen = []\n[limits]\nmax_totl = 3\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("server.toml:3:1:"), "{s}");
        assert!(s.contains("max_totl"), "{s}");
    }

    #[test]
    fn invalid_values_are_named() {
        let dflt = ServerConfig::resolve(ServerFile::default(), &ServerOverrides::default()).unwrap();
        assert_eq!(dflt.keys, KeySource::Dir(DEFAULT_KEY_DIR.into()));
        assert_eq!(dflt.listen.len(), 2, "IPv4 and IPv6");
        let e =
            ServerConfig::resolve(parse("key_files = []").unwrap(), &ServerOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("key_files"), "{e}");
        let f = parse("key_files = [\"/a\"]\n[timeouts]\ndial_ms = 0\n").unwrap();
        let e = ServerConfig::resolve(f, &ServerOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("timeouts.dial_ms"), "{e}");
        let f = parse("key_files = [\"/a\"]\n[limits]\nmax_total = 0\n").unwrap();
        let e = ServerConfig::resolve(f, &ServerOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("limits.max_total"), "{e}");
        let e = parse("[egress]\nallow = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.to_string().contains("server.toml:2:"), "{e}");
        assert!((1..=MAX_WORKERS).contains(&dflt.workers), "one loop per CPU");
        let e =
            ServerConfig::resolve(parse("workers = 0").unwrap(), &ServerOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
        let flags = ServerOverrides {
            workers: Some(3),
            ..ServerOverrides::default()
        };
        let c = ServerConfig::resolve(parse("workers = 65").unwrap(), &flags).unwrap();
        assert_eq!(c.workers, 3, "--workers overrides the file");
    }
}
