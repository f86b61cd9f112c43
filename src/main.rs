//! The `mpbond` command.

use std::process::ExitCode;

use clap::Parser;
use mpbond::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "the CLI's one-line error is its interface")]
            {
                eprintln!("mpbond: {}", cli::one_line(&err));
            }
            if cli::is_usage_error(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            let config = cli::load_config(&args)?;
            mpbond::daemon::up(&cli.run_dir, &config, args.foreground)
        }
        Command::Down => mpbond::daemon::down(&cli.run_dir),
        Command::Status(args) if args.watch => mpbond::daemon::watch::watch(&cli.run_dir),
        Command::Status(args) if args.notify => mpbond::daemon::notify::run(&cli.run_dir, &args.config),
        Command::Status(args) => mpbond::daemon::status(&cli.run_dir, args.json, args.flows),
        Command::Check(args) => check(&args),
        Command::Server(args) => server(&args),
    }
}

fn server(args: &cli::server::ServerArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.gen_key {
        let id = mpbond::server::gen_key(path)?;
        #[expect(clippy::print_stdout, reason = "the key id is the command's output")]
        {
            println!("{id}");
        }
        return Ok(());
    }
    if args.prepare {
        return mpbond::server::prepare_kernel();
    }
    let config = cli::server::load(args)?;
    if args.status {
        let s = mpbond::server::fetch_status(&config.status_socket)?;
        let text = if args.json {
            serde_json::to_string_pretty(&s)?
        } else {
            s.render()
        };
        #[expect(clippy::print_stdout, reason = "`mpbond server --status` prints its answer")]
        {
            println!("{}", text.trim_end());
        }
        return Ok(());
    }
    mpbond::server::run(config)
}

fn check(args: &cli::CheckArgs) -> anyhow::Result<()> {
    let opts = mpbond::io::check::CheckOptions {
        target: args.target.clone(),
        interfaces: cli::check_interfaces(args),
        fwmark: mpbond::config::RoutingConfig::default().fwmark,
        attempts: args.attempts,
        attempt_timeout: std::time::Duration::from_secs(1),
        max_hops: args.max_hops,
        converters: cli::check_converters(args)?,
    };
    let result = mpbond::io::check::run(&opts)?;
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", mpbond::check::report::render(&result));
    }
    if !result.pass {
        anyhow::bail!("option 30 does not pass every path (see above)");
    }
    Ok(())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MPBOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
