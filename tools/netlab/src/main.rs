//! `netlab`: build and drive the mpbond network lab by hand. See `netlab --help`.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use netlab::client::{self, ClientOpts};
use netlab::{Lab, LabOptions, MptcpOption, Path, Server, serve};
use std::net::SocketAddr;
use std::time::Duration;

/// The mpbond network lab: a two-uplink laptop, NATing Wi-Fi and cellular routers, and an
/// "internet" with MPTCP/TCP/UDP servers, in network namespaces. Needs root.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct LabName {
    /// Which lab (default: `lab`, the name `netlab up` uses, else the only one running).
    #[arg(long, short)]
    name: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a lab, print its namespaces and addresses, stay until Ctrl-C or `netlab down`.
    Up {
        /// Lab name, part of every namespace name (default `lab`).
        #[arg(long, short, default_value = "lab")]
        name: String,
        /// Do not start the servers in the inet namespace.
        #[arg(long)]
        no_servers: bool,
    },
    /// Stop a lab started with `netlab up` and remove its namespaces.
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Show a lab's namespaces, addresses and impairments.
    Status {
        #[command(flatten)]
        lab: LabName,
    },
    /// Add round-trip delay to a path (half each way), e.g. `netlab delay wifi 20ms`; `0` removes it.
    Delay {
        path: Path,
        #[arg(value_parser = netlab::parse_duration)]
        rtt: Duration,
        #[command(flatten)]
        lab: LabName,
    },
    /// Drop PERCENT of the packets crossing a path (each direction), e.g. `netlab loss cell 5`.
    Loss {
        path: Path,
        percent: f64,
        #[command(flatten)]
        lab: LabName,
    },
    /// Limit a path's rate in each direction, e.g. `netlab rate wifi 10mbit`; `off` removes it.
    Rate {
        path: Path,
        /// e.g. 10mbit, 1gbit, off.
        #[arg(value_parser = parse_rate_arg)]
        rate: RateArg,
        #[command(flatten)]
        lab: LabName,
    },
    /// Drop everything at a path's router while its link stays up.
    Blackhole {
        path: Path,
        #[arg(value_parser = on_off, action = clap::ArgAction::Set)]
        state: bool,
        #[command(flatten)]
        lab: LabName,
    },
    /// Set the laptop's interface of a path down or up.
    Link {
        path: Path,
        #[arg(value_parser = up_down, action = clap::ArgAction::Set)]
        state: bool,
        #[command(flatten)]
        lab: LabName,
    },
    /// Middlebox at a path's router for MPTCP option 30: nop | drop-syn | strip-after-syn | pass.
    MptcpOption {
        path: Path,
        mode: MptcpOption,
        #[command(flatten)]
        lab: LabName,
    },
    /// Run a command in one of the lab's namespaces: `netlab exec laptop -- curl http://198.19.0.11/`.
    Exec {
        /// laptop, wifi, cell, inet, wwire, cwire.
        role: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        lab: LabName,
    },
    /// Run the lab servers in the current namespace (or --ns) until Ctrl-C.
    Serve {
        /// Namespace to serve in (a name under /run/netns).
        #[arg(long)]
        ns: Option<String>,
        /// HTTP over kernel MPTCP on ADDR (repeatable).
        #[arg(long)]
        mptcp: Vec<SocketAddr>,
        /// HTTP over plain TCP on ADDR (repeatable).
        #[arg(long)]
        tcp: Vec<SocketAddr>,
        /// UDP echo on ADDR (repeatable).
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// DNS responder (every name is the TCP server) on UDP ADDR (repeatable).
        #[arg(long)]
        dns: Vec<SocketAddr>,
    },
    /// Clients for the lab servers; exit status 1 when a transfer is not byte-exact.
    Client {
        #[command(subcommand)]
        op: ClientCmd,
    },
    /// Remove leftover lab namespaces and state (after a crash).
    Cleanup {
        /// Namespace name prefix to remove.
        #[arg(long, default_value = netlab::NS_PREFIX)]
        prefix: String,
        /// Also remove labs whose owning process still runs.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ClientCommon {
    /// Server address (default: the lab's TCP server, or the MPTCP server with --mptcp).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Use IPv6 for the default address.
    #[arg(short = '6')]
    v6: bool,
    /// Open a kernel MPTCP socket.
    #[arg(long)]
    mptcp: bool,
    /// Bind to this interface (wlan0, wwan0).
    #[arg(long)]
    dev: Option<String>,
    /// Run in this namespace (a name under /run/netns) or lab role's namespace (laptop, inet, …);
    /// default: the current one.
    #[arg(long)]
    ns: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(flatten)]
    lab: LabName,
}

#[derive(Subcommand, Debug)]
enum ClientCmd {
    /// Download N bytes (`GET /bytes/N`) and verify them.
    Get {
        bytes: u64,
        #[command(flatten)]
        c: ClientCommon,
    },
    /// Upload N bytes (`POST /sink`) and verify the server's count and checksum.
    Post {
        bytes: u64,
        #[command(flatten)]
        c: ClientCommon,
    },
    /// Send COUNT numbered datagrams to the UDP echo server; print loss and RTT.
    Udp {
        #[arg(default_value_t = 100)]
        count: u32,
        #[command(flatten)]
        c: ClientCommon,
    },
}

/// A parsed `RATE` argument (`None`: unlimited); a newtype so clap does not read the `Option`
/// as "argument may be absent".
#[derive(Debug, Clone, Copy)]
struct RateArg(Option<u64>);

fn parse_rate_arg(s: &str) -> Result<RateArg, String> {
    netlab::parse_rate(s).map(RateArg)
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got `{s}`")),
    }
}

fn up_down(s: &str) -> Result<bool, String> {
    match s {
        "up" => Ok(true),
        "down" => Ok(false),
        _ => Err(format!("expected up or down, got `{s}`")),
    }
}

fn find_lab(name: &LabName) -> Result<Lab> {
    let lab = find_lab_state(name)?;
    let pid = lab.state().pid;
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!(
            "lab `{}` was left behind by process {pid}, which is gone; remove it with `netlab cleanup`",
            lab.name()
        );
    }
    Ok(lab)
}

fn find_lab_state(name: &LabName) -> Result<Lab> {
    if let Some(n) = &name.name {
        return Ok(Lab::attach(n)?);
    }
    let labs = Lab::list();
    if labs.iter().any(|l| l == "lab") {
        return Ok(Lab::attach("lab")?);
    }
    match labs.as_slice() {
        [one] => Ok(Lab::attach(one)?),
        [] => bail!("no lab is running (start one with `sudo netlab up`)"),
        many => bail!(
            "several labs are running ({}); pick one with --name",
            many.join(", ")
        ),
    }
}

fn print_lab(lab: &Lab) {
    let ns = lab.ns();
    println!("lab `{}` (owner pid {})", lab.name(), lab.state().pid);
    println!(
        "  namespaces: laptop={} wifi-router={} cell-router={} inet={}",
        ns.laptop, ns.wifi, ns.cell, ns.inet
    );
    println!(
        "              wifi-wire={} cell-wire={}",
        ns.wifi_wire, ns.cell_wire
    );
    for p in Path::ALL {
        println!(
            "  {:<5} laptop {} {}/24 {}/64 gw {} {} (metric {}), router WAN {} {}",
            p.name(),
            p.laptop_iface(),
            p.laptop_v4(),
            p.laptop_v6(),
            p.gateway_v4(),
            p.gateway_v6(),
            p.metric(),
            p.router_wan_v4(),
            p.router_wan_v6()
        );
    }
    println!(
        "  servers: MPTCP http {} {}, TCP http {} {}, UDP echo {} {}",
        Server::Mptcp.addr(false),
        Server::Mptcp.addr(true),
        Server::Tcp.addr(false),
        Server::Tcp.addr(true),
        Server::UdpEcho.addr(false),
        Server::UdpEcho.addr(true)
    );
    println!(
        "  try: sudo ip netns exec {} curl -o /dev/null http://198.19.0.11/bytes/1000000",
        ns.laptop
    );
}

fn wait_for_signal() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("install signal handler")?;
    rx.recv().context("wait for signal")?;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("netlab: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Up { name, no_servers } => {
            let lab = Lab::build(LabOptions {
                name: Some(name),
                no_servers,
            })
            .context("build lab")?;
            print_lab(&lab);
            println!("up; Ctrl-C or `netlab down` tears it down");
            wait_for_signal()?;
            drop(lab);
            println!("lab removed");
        }
        Cmd::Down { lab } => {
            let lab = find_lab_state(&lab)?;
            let pid = lab.state().pid;
            let dir = lab.state_dir().to_owned();
            let owner_alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if owner_alive {
                netlab::terminate(pid).with_context(|| format!("signal lab owner {pid}"))?;
                // The owner removes the state dir when it has torn the lab down.
                for _ in 0..100 {
                    if !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if dir.exists() {
                for n in lab.ns().all() {
                    let _ = netlab::cmd::run(&["ip", "netns", "del", n]);
                }
                std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            }
            println!("lab `{}` is down", lab.name());
        }
        Cmd::Status { lab } => {
            let lab = find_lab(&lab)?;
            print_lab(&lab);
            for p in Path::ALL {
                let relay = lab
                    .delay_status(p)
                    .unwrap_or_else(|e| format!("relay unreachable: {e}"));
                let nft = lab.exec(lab.ns().router(p), &["nft", "list", "table", "inet", "netlab"])?;
                let rules: Vec<&str> = nft
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.contains("drop") || l.contains("reset"))
                    .collect();
                let tc = lab.exec(
                    lab.ns().router(p),
                    &["tc", "qdisc", "show", "dev", netlab::ROUTER_LAN, "root"],
                )?;
                let link = lab.exec(&lab.ns().laptop, &["ip", "-br", "link", "show", p.laptop_iface()])?;
                println!(
                    "  {}: relay [{relay}]; link {}; qdisc {}",
                    p.name(),
                    link.split_whitespace().nth(1).unwrap_or("?"),
                    tc.trim()
                );
                for r in rules {
                    println!("      nft: {r}");
                }
            }
        }
        Cmd::Delay { path, rtt, lab } => {
            find_lab(&lab)?.set_delay(path, rtt)?;
            println!("{path}: round-trip delay {rtt:?}");
        }
        Cmd::Loss { path, percent, lab } => {
            find_lab(&lab)?.set_loss(path, percent)?;
            println!("{path}: loss {percent}% per direction");
        }
        Cmd::Rate {
            path,
            rate: RateArg(rate),
            lab,
        } => {
            find_lab(&lab)?.set_rate(path, rate)?;
            match rate {
                Some(r) => println!("{path}: rate {} kbit/s each way", r / 1000),
                None => println!("{path}: rate unlimited"),
            }
        }
        Cmd::Blackhole { path, state, lab } => {
            find_lab(&lab)?.set_blackhole(path, state)?;
            println!("{path}: blackhole {}", if state { "on" } else { "off" });
        }
        Cmd::Link { path, state, lab } => {
            find_lab(&lab)?.set_link(path, state)?;
            println!(
                "{path}: {} {}",
                path.laptop_iface(),
                if state { "up" } else { "down" }
            );
        }
        Cmd::MptcpOption { path, mode, lab } => {
            find_lab(&lab)?.set_mptcp_option(path, mode)?;
            println!("{path}: mptcp option middlebox {mode:?}");
        }
        Cmd::Exec { role, command, lab } => {
            let lab = find_lab(&lab)?;
            let ns = lab
                .ns()
                .by_role(&role)
                .with_context(|| format!("unknown role `{role}`"))?
                .to_owned();
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&command)
                .status()
                .context("run ip netns exec")?;
            return Ok(status.code().unwrap_or(1));
        }
        Cmd::Serve {
            ns,
            mptcp,
            tcp,
            udp,
            dns,
        } => {
            let mut spec = serve::ServeSpec { mptcp, tcp, udp, dns };
            if spec.mptcp.is_empty() && spec.tcp.is_empty() && spec.udp.is_empty() && spec.dns.is_empty() {
                spec = serve::ServeSpec::lab();
            }
            let servers = serve::start(ns.as_deref(), &spec).context("start servers")?;
            println!(
                "serving: mptcp {:?} tcp {:?} udp {:?} dns {:?}; Ctrl-C stops",
                spec.mptcp, spec.tcp, spec.udp, spec.dns
            );
            wait_for_signal()?;
            drop(servers);
        }
        Cmd::Client { op } => return run_client(op),
        Cmd::Cleanup { prefix, force } => {
            let removed = netlab::cleanup(&prefix, force)?;
            println!(
                "removed {} namespaces{}",
                removed.len(),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", removed.join(" "))
                }
            );
        }
    }
    Ok(0)
}

fn run_client(op: ClientCmd) -> Result<i32> {
    let c = match &op {
        ClientCmd::Get { c, .. } | ClientCmd::Post { c, .. } | ClientCmd::Udp { c, .. } => c,
    };
    let ns = match &c.ns {
        None => None,
        Some(n) if std::path::Path::new("/run/netns").join(n).exists() => Some(n.clone()),
        Some(role) => {
            let lab = find_lab(&c.lab)?;
            Some(
                lab.ns()
                    .by_role(role)
                    .with_context(|| format!("unknown role `{role}`"))?
                    .to_owned(),
            )
        }
    };
    let opts = ClientOpts {
        mptcp: c.mptcp,
        device: c.dev.clone(),
        timeout: Duration::from_secs(c.timeout),
    };
    let http_addr = c.addr.unwrap_or(if c.mptcp {
        Server::Mptcp.addr(c.v6)
    } else {
        Server::Tcp.addr(c.v6)
    });
    let work = move || -> Result<()> {
        match op {
            ClientCmd::Get { bytes, .. } | ClientCmd::Post { bytes, .. } => {
                let get = matches!(op, ClientCmd::Get { .. });
                let r = if get {
                    client::http_get(http_addr, bytes, &opts)
                } else {
                    client::http_post(http_addr, bytes, &opts)
                }
                .with_context(|| {
                    format!(
                        "{} {bytes} bytes {} {http_addr}",
                        if get { "download" } else { "upload" },
                        if get { "from" } else { "to" }
                    )
                })?;
                let mp = match r.mptcp {
                    Some(i) => format!("MPTCP, {} subflows", i.extra_subflows + 1),
                    None => "plain TCP".to_owned(),
                };
                println!(
                    "{} bytes verified in {:.3} s: {:.1} Mbit/s ({mp})",
                    r.bytes,
                    r.elapsed.as_secs_f64(),
                    r.mbit_per_s()
                );
            }
            ClientCmd::Udp { count, c } => {
                let addr = c.addr.unwrap_or(Server::UdpEcho.addr(c.v6));
                let r = client::udp_echo(addr, count, 50, Duration::from_millis(500), c.dev.as_deref())?;
                println!(
                    "{addr}: {}/{} echoed ({:.1}% loss), rtt min {:?} median {:?}",
                    r.received,
                    r.sent,
                    100.0 * (1.0 - r.fraction()),
                    r.rtt_min,
                    r.rtt_median
                );
            }
        }
        Ok(())
    };
    match ns {
        Some(ns) => netlab::netns::run_in(&ns, work).with_context(|| format!("enter namespace {ns}"))??,
        None => work()?,
    }
    Ok(0)
}
