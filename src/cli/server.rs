//! `mpbond server`: the clap definition of the converter's command and its resolution into a
//! [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::server::config::{DEFAULT_SERVER_CONFIG, ServerConfig, ServerFile, ServerOverrides};

/// `mpbond server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on, ADDR:PORT (repeatable, IPv4 and IPv6; default 0.0.0.0:5124 and [::]:5124).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// A client key file, one per laptop (repeatable; default: every *.key in /etc/mpbond/keys).
    #[arg(long = "key-file", value_name = "FILE")]
    pub key_files: Vec<PathBuf>,
    /// Configuration file [default: /etc/mpbond/server.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The status socket [default: /run/mpbond-server/status.sock].
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<PathBuf>,
    /// Event-loop threads, each holding its own connections [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Write a new client key to FILE (mode 0600), print its id and exit.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["status", "prepare"])]
    pub gen_key: Option<PathBuf>,
    /// Show the running server's connections, bytes, refusals by cause and per key, and exit.
    #[arg(long, conflicts_with = "prepare")]
    pub status: bool,
    /// With --status: machine-readable output.
    #[arg(long, requires = "status")]
    pub json: bool,
    /// Set the kernel up for the converter (TCP Fast Open server bit, MPTCP subflow limit) and
    /// exit; needs root (the systemd unit's ExecStartPre).
    #[arg(long)]
    pub prepare: bool,
}

/// Loads the config file (default path unless `--config`) and applies the flags.
pub fn load(args: &ServerArgs) -> Result<ServerConfig, ConfigError> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_SERVER_CONFIG), false),
    };
    let file = ServerFile::load(&path, explicit)?;
    ServerConfig::resolve(
        file,
        &ServerOverrides {
            listen: args.listen.clone(),
            key_files: args.key_files.clone(),
            status_socket: args.status_socket.clone(),
            workers: args.workers,
        },
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn server(args: &[&str]) -> ServerArgs {
        let mut v = vec!["mpbond", "server"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Server(s) => s,
            c => panic!("not server: {c:?}"),
        }
    }

    #[test]
    fn parses_the_documented_flags() {
        let s = server(&[
            "--listen",
            "198.19.3.2:5124",
            "--listen",
            "[fd19:3::2]:5124",
            "--key-file",
            "/a.key",
            "--key-file",
            "/b.key",
        ]);
        assert_eq!(s.listen.len(), 2);
        assert!(s.listen[1].is_ipv6());
        assert_eq!(s.key_files.len(), 2);
        let g = server(&["--gen-key", "/tmp/k"]);
        assert_eq!(g.gen_key, Some(PathBuf::from("/tmp/k")));
        let st = server(&["--status", "--json"]);
        assert!(st.status && st.json);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["mpbond", "server", "--listen", "nope"][..],
            &["mpbond", "server", "--json"],
            &["mpbond", "server", "--gen-key", "/k", "--status"],
        ] {
            assert_eq!(Cli::try_parse_from(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn an_explicit_missing_config_is_an_error() {
        let s = server(&["--config", "/nonexistent/server.toml", "--key-file", "/k"]);
        let e = load(&s).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/server.toml"), "{e}");
    }
}
