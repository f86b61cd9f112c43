//! Command-line interface: clap definitions → validated [`Config`] → the command. No business
//! logic lives here. Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

pub mod ifdetect;
pub mod server;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError, FileConfig, Mode, Overrides};

/// Multipath TCP for the whole laptop: Wi-Fi primary, cellular backup, no application changes.
#[derive(Debug, Parser)]
#[command(name = "mpbond", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Directory for the pid file, control socket and state journal.
    #[arg(
        long,
        global = true,
        env = "MPBOND_RUN_DIR",
        default_value = "/run/mpbond",
        value_name = "DIR"
    )]
    pub run_dir: PathBuf,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the TUN device, route the laptop's traffic through it and start the daemon.
    Up(UpArgs),
    /// Stop the daemon and remove everything mpbond added (safe to repeat, works after a crash).
    Down,
    /// Show the daemon, interfaces, flows, subflows and failovers.
    Status(StatusArgs),
    /// Check whether TCP option 30 (MPTCP) passes each path to HOST:PORT.
    Check(CheckArgs),
    /// Run the RFC 8803 Transport Converter (on a server: kernel MPTCP toward laptops, plain TCP onward).
    Server(server::ServerArgs),
}

/// `mpbond up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Primary interface (auto-detected from sysfs when not given).
    #[arg(long, value_name = "IFACE")]
    pub wifi: Option<String>,
    /// Backup interface: phone tether, USB modem or WWAN card (auto-detected when not given).
    #[arg(long, value_name = "IFACE")]
    pub cellular: Option<String>,
    /// How traffic uses the two paths.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An RFC 8803 Transport Converter (`mpbond server`) that carries flows to servers without
    /// MPTCP, so they survive the loss of Wi-Fi too (repeatable: tried in order; port 5124 when
    /// omitted).
    #[arg(long = "converter", value_name = "ADDR:PORT")]
    pub converters: Vec<String>,
    /// The client key for the converters (written by `mpbond server --gen-key FILE`).
    #[arg(long, value_name = "FILE")]
    pub converter_key_file: Option<PathBuf>,
    /// The resolv.conf mpbond takes over while up (default /etc/resolv.conf, or systemd-resolved
    /// where it runs); giving it selects the resolv.conf backend.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// Do not answer DNS nor change the system's resolver.
    #[arg(long)]
    pub no_dns: bool,
    /// Where the data budget's counts are kept (default /var/lib/mpbond/budget.json).
    #[arg(long, value_name = "FILE")]
    pub budget_file: Option<PathBuf>,
    /// Stay attached (for systemd and tests); otherwise return once the TUN and routes are in place.
    #[arg(long)]
    pub foreground: bool,
}

/// `mpbond status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also list every flow with its subflows.
    #[arg(long)]
    pub flows: bool,
    /// A live view, redrawn every second, until Ctrl-C.
    #[arg(long, conflicts_with_all = ["json", "flows"])]
    pub watch: bool,
    /// Stay running and send a desktop notification on each failover and converter change
    /// (`notify-send`; the package starts it in desktop sessions; `[status] notify` turns it off).
    #[arg(long, conflicts_with_all = ["json", "flows", "watch"])]
    pub notify: bool,
    /// Configuration file (for `--notify`).
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// `mpbond check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Interface to probe from (repeatable; default: the configured or detected Wi-Fi and cellular).
    #[arg(long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Highest TTL of the trace that locates a middlebox.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub max_hops: u8,
    /// SYN transmissions per probe.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,
    /// Also probe this RFC 8803 converter (repeatable; default: `[converter]` of the config file).
    #[arg(long = "converter", value_name = "ADDR:PORT")]
    pub converters: Vec<String>,
    /// An MPTCP-capable server, HOST:PORT.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
}

/// Loads the config file (default path unless `--config`), applies flags, detects interfaces.
pub fn load_config(args: &UpArgs) -> Result<Config, ConfigError> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let file = FileConfig::load(&path, explicit)?;
    let flags = Overrides {
        wifi: args.wifi.clone(),
        cellular: args.cellular.clone(),
        mode: args.mode,
        converters: args.converters.clone(),
        converter_key_file: args.converter_key_file.clone(),
        resolv_conf: args.resolv_conf.clone(),
        no_dns: args.no_dns,
        budget_file: args.budget_file.clone(),
    };
    Config::resolve(file, &flags, &|role| {
        ifdetect::detect(Path::new("/sys/class/net"), role)
    })
}

/// The interfaces `check` probes from when none is given: the configured or detected Wi-Fi and
/// cellular interfaces (whichever exist) and the listed ones not `never`.
pub fn check_interfaces(args: &CheckArgs) -> Vec<String> {
    if !args.interfaces.is_empty() {
        return args.interfaces.clone();
    }
    let file = FileConfig::load(Path::new(config::DEFAULT_CONFIG_PATH), false).unwrap_or_default();
    let sys = Path::new("/sys/class/net");
    let listed = file.interfaces.list.unwrap_or_default();
    let mut names: Vec<String> = [
        file.interfaces
            .wifi
            .or_else(|| ifdetect::detect(sys, ifdetect::Role::Wifi)),
        file.interfaces
            .cellular
            .or_else(|| ifdetect::detect(sys, ifdetect::Role::Cellular)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for i in listed {
        if i.role != config::IfaceRole::Never && !names.contains(&i.name) {
            names.push(i.name);
        }
    }
    names
}

/// The converters `check` probes: the ones given, else the config file's `[converter]` list.
pub fn check_converters(args: &CheckArgs) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
    let names = if args.converters.is_empty() {
        FileConfig::load(Path::new(config::DEFAULT_CONFIG_PATH), false)?
            .converter
            .addresses
            .unwrap_or_default()
    } else {
        args.converters.clone()
    };
    let mut out = Vec::new();
    for n in &names {
        let addrs = config::parse_converter_addr(n).map_err(|reason| ConfigError::Invalid {
            key: "converter.addresses",
            reason,
        })?;
        out.extend(addrs);
    }
    Ok(out)
}

/// Whether an error chain is a usage/configuration error (exit 2) rather than a runtime failure.
pub fn is_usage_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<ConfigError>().is_some())
}

/// Formats the whole cause chain on one line: `a: b: c`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let s = cause.to_string().replace('\n', " ");
        if i > 0 {
            // Some errors already repeat their source in their message; skip exact repeats.
            if out.ends_with(&s) {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_up_flags() {
        let cli = Cli::try_parse_from([
            "mpbond",
            "--run-dir",
            "/tmp/x",
            "up",
            "--wifi",
            "wlan0",
            "--cellular",
            "wwan0",
            "--mode",
            "interactive",
            "--foreground",
        ])
        .unwrap();
        assert_eq!(cli.run_dir, PathBuf::from("/tmp/x"));
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.wifi.as_deref(), Some("wlan0"));
        assert_eq!(up.mode, Some(Mode::Interactive));
        assert!(up.foreground);
    }

    #[test]
    fn bad_mode_is_a_usage_error() {
        let e = Cli::try_parse_from(["mpbond", "up", "--mode", "turbo"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn one_line_joins_the_chain() {
        let e = anyhow::Error::new(std::io::Error::other("disk on fire")).context("cannot write journal");
        assert_eq!(one_line(&e), "cannot write journal: disk on fire");
        let c: anyhow::Error = ConfigError::NoInterface { role: "wifi" }.into();
        assert!(is_usage_error(&c.context("up failed")));
        assert!(!is_usage_error(&e));
    }
}
