//! The I/O side of `mpbond check`: for each interface, a thread drives one
//! [`Prober`](crate::check::Prober) with an AF_PACKET ring (TCP from the probe ports + ICMP errors)
//! and a raw sender bound to the interface. While probing, a temporary nft table keeps the kernel
//! from answering the server's segments with RSTs (the ports are ours, not a kernel socket's).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::check::report::{self, CheckResult, ConverterCheck, InterfaceResult};
use crate::check::{ProbeSetup, Prober};
use crate::mptcp::crypto::{Key, os_random_u64};
use crate::sys::clock::boottime;
use crate::sys::packet::PacketRx;
use crate::sys::rawtx::RawTx;

/// How to run a check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// `HOST:PORT`.
    pub target: String,
    /// Interfaces to probe from.
    pub interfaces: Vec<String>,
    /// fwmark for the probe packets (so an active mpbond does not route them into its TUN).
    pub fwmark: u32,
    /// SYN transmissions per probe.
    pub attempts: u32,
    /// First retransmission timeout.
    pub attempt_timeout: Duration,
    /// Highest TTL of the trace.
    pub max_hops: u8,
    /// RFC 8803 converters the laptop uses (`[converter]`, `--converter`): each is probed too,
    /// since flows to servers without MPTCP are protected only if option 30 reaches them.
    pub converters: Vec<SocketAddr>,
}

/// Runs the check on every interface at once (the target, then each converter) and gathers the
/// results.
pub fn run(opts: &CheckOptions) -> anyhow::Result<CheckResult> {
    if opts.interfaces.is_empty() {
        bail!("no interface to probe from: pass --interface IFACE");
    }
    let target = resolve(&opts.target)?;
    let interfaces = probe_all(opts, target)?;
    let mut converters = Vec::new();
    for &addr in &opts.converters {
        converters.push(ConverterCheck {
            addr,
            interfaces: probe_all(opts, addr)?,
        });
    }
    let local_firewall = local_firewall_findings();
    Ok(report::conclude(
        opts.target.clone(),
        interfaces,
        converters,
        local_firewall,
    ))
}

/// Probes `target` from every interface at once.
fn probe_all(opts: &CheckOptions, target: SocketAddr) -> anyhow::Result<Vec<InterfaceResult>> {
    let ports = reserve_ports(target)?;
    let guard = NftGuard::install(&ports.numbers)?;

    let handles: Vec<_> = opts
        .interfaces
        .iter()
        .map(|iface| {
            let (iface, opts, numbers) = (iface.clone(), opts.clone(), ports.numbers);
            std::thread::spawn(move || {
                let res = probe_interface(&iface, target, numbers, &opts);
                (iface, res)
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| anyhow::anyhow!("a probe thread panicked"))?);
    }
    let mut reports: Vec<_> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    crate::check::reconcile(&mut reports);
    let mut reconciled = reports.into_iter();
    let mut interfaces = Vec::new();
    for (iface, res) in results {
        let res = res.map(|_| {
            reconciled
                .next()
                .expect("one reconciled report per successful probe")
        });
        interfaces.push(match res {
            Ok(r) => InterfaceResult {
                interface: iface,
                pass: r.verdict.passes(),
                summary: report::describe(&r.verdict),
                report: Some(r),
                error: None,
            },
            Err(e) => InterfaceResult {
                interface: iface,
                pass: false,
                summary: format!("could not probe: {}", crate::cli::one_line(&e)),
                report: None,
                error: Some(crate::cli::one_line(&e)),
            },
        });
    }
    drop(guard);
    drop(ports);
    Ok(interfaces)
}

fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?} (expected HOST:PORT)"))?;
    addrs.next().with_context(|| format!("{target:?} has no address"))
}

/// Three consecutive local ports held by bound (not listening) kernel sockets, so that no other
/// program gets them while the probes use them.
struct Ports {
    numbers: [u16; 3],
    _held: Vec<Socket>,
}

fn reserve_ports(target: SocketAddr) -> anyhow::Result<Ports> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let unspecified: IpAddr = if target.is_ipv4() {
        [0u8; 4].into()
    } else {
        [0u16; 8].into()
    };
    let seed = os_random_u64().context("no randomness")?;
    for i in 0..64u64 {
        let base = 40000 + ((seed.wrapping_add(i * 7919)) % 20000) as u16;
        let mut held = Vec::new();
        for p in base..base + 3 {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            if s.bind(&SocketAddr::new(unspecified, p).into()).is_err() {
                break;
            }
            held.push(s);
        }
        if held.len() == 3 {
            return Ok(Ports {
                numbers: [base, base + 1, base + 2],
                _held: held,
            });
        }
    }
    bail!("no three free consecutive local ports for the probes")
}

/// A temporary nft table dropping the server's segments to the probe ports before the kernel
/// answers them with RSTs; deleted on drop.
struct NftGuard {
    table: String,
}

impl NftGuard {
    fn install(ports: &[u16; 3]) -> anyhow::Result<NftGuard> {
        let table = format!("mpbond-check-{}", std::process::id());
        let script = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -150; policy accept;\n    \
             tcp dport {}-{} drop\n  }}\n}}\n",
            ports[0], ports[2]
        );
        nft_script(&script).context("cannot install the temporary nft table (is nftables installed?)")?;
        Ok(NftGuard { table })
    }
}

impl Drop for NftGuard {
    fn drop(&mut self) {
        if let Err(e) = nft_script(&format!("delete table inet {}\n", self.table)) {
            tracing::warn!("cannot delete nft table {}: {e:#}", self.table);
        }
    }
}

fn nft_script(script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The address the kernel would use toward `target` on `iface`.
fn source_address(iface: &str, target: SocketAddr) -> anyhow::Result<IpAddr> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(iface.as_bytes()))
        .with_context(|| format!("interface {iface:?}"))?;
    s.connect(&target.into())
        .with_context(|| format!("no route to {} on {iface}", target.ip()))?;
    let local = s.local_addr()?.as_socket().context("no local address")?;
    Ok(local.ip())
}

fn probe_interface(
    iface: &str,
    target: SocketAddr,
    ports: [u16; 3],
    opts: &CheckOptions,
) -> anyhow::Result<crate::check::PathReport> {
    let src = source_address(iface, target)?;
    let mut rx = PacketRx::open(iface, &(ports[0]..=ports[2]), true, 2)
        .with_context(|| format!("cannot listen on {iface}"))?;
    let tx = RawTx::open(iface, opts.fwmark).with_context(|| format!("cannot send on {iface}"))?;
    let key = Key(os_random_u64().context("no randomness")?);
    let isn = os_random_u64().context("no randomness")? as u32;
    let setup = ProbeSetup {
        src,
        target,
        ports,
        key,
        isn,
        attempts: opts.attempts,
        attempt_timeout: opts.attempt_timeout,
        max_hops: opts.max_hops,
    };
    let mut prober = Prober::new(boottime(), setup);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&rx.as_raw_fd()), Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    // Hard bound on the whole probe, whatever the prober asks for.
    let give_up = boottime() + Duration::from_secs(120);
    loop {
        while let Some(pkt) = prober.poll_transmit() {
            if let Err(e) = tx.send(&pkt) {
                tracing::debug!(iface, "probe send failed: {e}");
            }
        }
        let now = boottime();
        let Some(deadline) = prober.poll_timeout() else {
            break;
        };
        if now >= give_up {
            bail!("the probe did not conclude within 120 s");
        }
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        poll.poll(&mut events, Some(wait))?;
        let now = boottime();
        rx.drain(256, |frame| {
            prober.handle_packet(now, frame.data, !frame.csum_not_ready)
        });
        prober.handle_timeout(boottime());
    }
    prober.report().context("the prober ended without a report")
}

/// Rules of this machine's firewall (nft, iptables) that would change or drop option 30.
fn local_firewall_findings() -> Vec<String> {
    let mut text = String::new();
    for (cmd, args) in [
        ("nft", &["list", "ruleset"][..]),
        ("iptables-save", &[][..]),
        ("ip6tables-save", &[][..]),
    ] {
        if let Ok(out) = Command::new(cmd).args(args).output()
            && out.status.success()
        {
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            text.push('\n');
        }
    }
    report::firewall_findings(&text)
}
