//! Impairments per path, changeable while traffic runs. Each works on an owning or an attached
//! [`Lab`] (state is in the kernel and in the relay, not in the `Lab` value).

use crate::addr::Path;
use crate::cmd;
use crate::lab::{Lab, LabError, ROUTER_LAN, ROUTER_WAN, add_laptop_routes, io_ctx};
use std::time::Duration;

/// What the router's middlebox does to MPTCP (TCP option 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MptcpOption {
    /// Leave option 30 alone.
    Pass,
    /// Replace option 30 with NOPs in every segment, both directions (`reset tcp option mptcp`).
    Nop,
    /// Drop SYNs (without ACK) that carry option 30.
    DropSyn,
    /// Replace option 30 with NOPs only in segments without SYN: the handshake passes, the DSS
    /// options of the data phase do not.
    StripAfterSyn,
}

impl std::str::FromStr for MptcpOption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pass" | "off" => Ok(Self::Pass),
            "nop" => Ok(Self::Nop),
            "drop-syn" => Ok(Self::DropSyn),
            "strip-after-syn" => Ok(Self::StripAfterSyn),
            _ => Err(format!(
                "unknown mptcp-option mode `{s}` (nop, drop-syn, strip-after-syn, pass)"
            )),
        }
    }
}

/// Parses `20ms`, `1.5ms`, `500us`, `1s`, `0`, `off`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" || s == "off" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (e.g. 20ms, 500us, 1s)"))?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        _ => return Err(format!("bad duration unit in `{s}` (s, ms, us)")),
    };
    if !(0.0..=10.0).contains(&secs) {
        return Err(format!("duration `{s}` out of range (0 to 10 s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `10mbit`, `1gbit`, `500kbit`, `100bit`; `off` is `None`. Returns bits per second.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim().to_ascii_lowercase();
    if s == "off" || s == "0" {
        return Ok(None);
    }
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad rate `{s}` (e.g. 10mbit, 1gbit)"))?;
    let mult = match unit {
        "bit" | "" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("bad rate unit in `{s}` (bit, kbit, mbit, gbit)")),
    };
    let bps = v * mult;
    if !(8_000.0..=100e9).contains(&bps) {
        return Err(format!("rate `{s}` out of range (8kbit to 100gbit)"));
    }
    Ok(Some(bps as u64))
}

impl Lab {
    fn nft(&self, path: Path, script: &str) -> Result<(), LabError> {
        cmd::run_in_with_stdin(self.ns().router(path), &["nft", "-f", "-"], script)?;
        Ok(())
    }

    fn set_chain(&self, path: Path, chain: &str, rule: Option<&str>) -> Result<(), LabError> {
        let mut script = format!("flush chain inet netlab {chain}\n");
        if let Some(r) = rule {
            script.push_str(&format!("add rule inet netlab {chain} {r}\n"));
        }
        self.nft(path, &script)
    }

    /// Adds `rtt` of round-trip delay to `path` (half each way, in the path's wire relay);
    /// `Duration::ZERO` removes it and returns the path to a kernel bridge. Takes effect for
    /// frames arriving after the call returns.
    pub fn set_delay(&self, path: Path, rtt: Duration) -> Result<(), LabError> {
        let ctl = crate::relay::ctl_path(self.state_dir(), path);
        crate::relay::command(&ctl, &format!("delay {}", rtt.as_micros()))
            .map_err(io_ctx(format!("set delay on {path}")))?;
        Ok(())
    }

    /// The relay's status line for `path`:
    /// `delay <us> relayed <frames> dropped <frames> rx_errors <n>`.
    pub fn delay_status(&self, path: Path) -> Result<String, LabError> {
        let ctl = crate::relay::ctl_path(self.state_dir(), path);
        crate::relay::command(&ctl, "get").map_err(io_ctx(format!("query relay of {path}")))
    }

    /// Drops each packet crossing the path's router (either direction) with probability
    /// `percent`/100 (nft `numgen random`, 0.01 % steps); 0 removes the loss.
    pub fn set_loss(&self, path: Path, percent: f64) -> Result<(), LabError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(LabError::BadValue(format!("loss {percent}% (0 to 100)")));
        }
        let n = (percent * 100.0).round() as u32;
        let rule = format!("numgen random mod 10000 < {n} counter drop");
        self.set_chain(path, "loss", (n > 0).then_some(rule.as_str()))
    }

    /// Blackholes the path: the router drops everything it would forward or answer (IPv4 and
    /// IPv6), while the link stays up and ARP/ND still work.
    pub fn set_blackhole(&self, path: Path, on: bool) -> Result<(), LabError> {
        self.set_chain(path, "blackhole", on.then_some("counter drop"))
    }

    /// Makes the path's router a strict carrier NAT: it forgets an idle established TCP
    /// mapping after `idle` (the netns's `nf_conntrack_tcp_timeout_established`), picks no
    /// connection up mid-stream (`nf_conntrack_tcp_loose = 0`) and drops what it cannot match
    /// (`ct state invalid drop`, both forwarded and addressed to the router, so the router
    /// answers nothing with a RST). Its masquerade stays as it is. Lasts as long as the lab.
    pub fn set_strict_nat(&self, path: Path, idle: Duration) -> Result<(), LabError> {
        let router = self.ns().router(path);
        let timeout = format!(
            "net.netfilter.nf_conntrack_tcp_timeout_established={}",
            idle.as_secs().max(1)
        );
        cmd::run_in(
            router,
            &[
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_tcp_loose=0",
                timeout.as_str(),
            ],
        )?;
        self.nft(
            path,
            "table inet netlab_nat {
    chain forward {
        type filter hook forward priority filter - 1; policy accept;
        ct state invalid counter drop
    }
    chain input {
        type filter hook input priority filter - 1; policy accept;
        ct state invalid counter drop
    }
}
",
        )
    }

    /// Packets the strict NAT of [`set_strict_nat`](Self::set_strict_nat) dropped so far.
    pub fn strict_nat_drops(&self, path: Path) -> Result<u64, LabError> {
        Ok(self.table_chain_packets(path, "netlab_nat", "forward")?
            + self.table_chain_packets(path, "netlab_nat", "input")?)
    }

    /// Sets the path's middlebox behaviour toward MPTCP option 30.
    pub fn set_mptcp_option(&self, path: Path, mode: MptcpOption) -> Result<(), LabError> {
        let rule = match mode {
            MptcpOption::Pass => None,
            MptcpOption::Nop => Some("tcp option mptcp exists counter reset tcp option mptcp"),
            MptcpOption::DropSyn => {
                Some("tcp flags & (syn | ack) == syn tcp option mptcp exists counter drop")
            }
            MptcpOption::StripAfterSyn => {
                Some("tcp flags & syn == 0 tcp option mptcp exists counter reset tcp option mptcp")
            }
        };
        self.set_chain(path, "mbox", rule)
    }

    /// Packets the middlebox rule of `path` has matched (NOPed or dropped) since it was set.
    pub fn mptcp_option_hits(&self, path: Path) -> Result<u64, LabError> {
        self.chain_packets(path, "mbox")
    }

    /// Packets the loss rule of `path` has dropped since it was set.
    pub fn loss_drops(&self, path: Path) -> Result<u64, LabError> {
        self.chain_packets(path, "loss")
    }

    fn chain_packets(&self, path: Path, chain: &str) -> Result<u64, LabError> {
        self.table_chain_packets(path, "netlab", chain)
    }

    fn table_chain_packets(&self, path: Path, table: &str, chain: &str) -> Result<u64, LabError> {
        let out = cmd::run_in(
            self.ns().router(path),
            &["nft", "-j", "list", "chain", "inet", table, chain],
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| LabError::Io {
            context: format!("parse nft json of chain {chain}"),
            cause: e.into(),
        })?;
        let mut total = 0;
        for item in v["nftables"].as_array().into_iter().flatten() {
            for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
                total += expr["counter"]["packets"].as_u64().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Limits the path to `rate` bits/s in each direction (tbf on the router's LAN and WAN
    /// ports, queue up to 50 ms); `None` removes the limit.
    pub fn set_rate(&self, path: Path, rate: Option<u64>) -> Result<(), LabError> {
        let router = self.ns().router(path);
        for dev in [ROUTER_LAN, ROUTER_WAN] {
            match rate {
                Some(bps) => tbf(router, dev, bps)?,
                None => {
                    // Deleting a qdisc that is not there fails; only delete a tbf we put.
                    let show = cmd::run_in(router, &["tc", "qdisc", "show", "dev", dev, "root"])?;
                    if show.contains("tbf") {
                        cmd::run_in(router, &["tc", "qdisc", "del", "dev", dev, "root"])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the laptop's interface of `path` down or up. Going up re-adds the default routes the
    /// kernel removed on down, as NetworkManager would.
    pub fn set_link(&self, path: Path, up: bool) -> Result<(), LabError> {
        let laptop = &self.ns().laptop;
        let state = if up { "up" } else { "down" };
        cmd::run(&[
            "ip",
            "-n",
            laptop,
            "link",
            "set",
            "dev",
            path.laptop_iface(),
            state,
        ])?;
        if up {
            add_laptop_routes(laptop, path)?;
        }
        Ok(())
    }

    /// Gives the laptop's kernel MPTCP client an endpoint on `path`'s interface (IPv4): its
    /// connections open a subflow there (`backup`: with the backup flag, RFC 8684 §3.3.8).
    pub fn add_kernel_endpoint(&self, path: Path, backup: bool) -> Result<(), LabError> {
        let addr = path.laptop_v4().to_string();
        let mut args = vec![
            "ip",
            "mptcp",
            "endpoint",
            "add",
            addr.as_str(),
            "dev",
            path.laptop_iface(),
            "subflow",
        ];
        if backup {
            args.push("backup");
        }
        cmd::run_in(&self.ns().laptop, &args)?;
        Ok(())
    }

    /// The kernel's view of MPTCP connections in `ns`: `ss -MtinH` output.
    pub fn ss_mptcp(&self, ns: &str) -> Result<String, LabError> {
        Ok(cmd::run_in(ns, &["ss", "-MtinH"])?)
    }

    /// TCP subflows (sockets with the `mptcp` ULP) in `ns` whose local or peer port is `port`,
    /// as `ss -tinH` shows them: the kernel's count of subflows, e.g. 2 on the server after a
    /// client joined a second one.
    pub fn kernel_subflows(&self, ns: &str, port: u16) -> Result<usize, LabError> {
        Ok(self.kernel_subflow_list(ns, port)?.len())
    }

    /// The established MPTCP subflows in `ns` with local or peer port `port`, from `ss -tinH`.
    pub fn kernel_subflow_list(&self, ns: &str, port: u16) -> Result<Vec<KernelSubflow>, LabError> {
        let out = cmd::run_in(ns, &["ss", "-tinH", "state", "established"])?;
        Ok(parse_ss_subflows(&out, port))
    }
}

/// One MPTCP subflow as `ss` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSubflow {
    /// Local address:port as ss prints it.
    pub local: String,
    /// Peer address:port as ss prints it.
    pub peer: String,
    /// Created by MP_JOIN (`J` in the subflow flags), not the initial MP_CAPABLE one.
    pub join: bool,
    /// Marked backup (`B` in the subflow flags).
    pub backup: bool,
}

/// Parses `ss -tinH state established` output: a socket line (`Recv-Q Send-Q local peer`)
/// followed by an indented info line that holds `tcp-ulp-mptcp flags:<letters>` for subflows.
fn parse_ss_subflows(out: &str, port: u16) -> Vec<KernelSubflow> {
    let port_s = format!(":{port}");
    let mut found = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in out.lines() {
        if !line.starts_with(char::is_whitespace) {
            let mut w = line.split_whitespace().skip(2);
            current = match (w.next(), w.next()) {
                (Some(l), Some(p)) if l.ends_with(&port_s) || p.ends_with(&port_s) => {
                    Some((l.to_owned(), p.to_owned()))
                }
                _ => None,
            };
        } else if let Some((local, peer)) = &current
            && let Some(pos) = line.find("tcp-ulp-mptcp")
        {
            let flags = line[pos..]
                .split_whitespace()
                .find_map(|t| t.strip_prefix("flags:"))
                .unwrap_or("");
            found.push(KernelSubflow {
                local: local.clone(),
                peer: peer.clone(),
                join: flags.contains('J'),
                backup: flags.contains('B'),
            });
            current = None;
        }
    }
    found
}

/// Limits `dev` in namespace `ns` to `bps` bits/s on egress (tbf, queue up to 50 ms).
pub(crate) fn tbf(ns: &str, dev: &str, bps: u64) -> Result<(), LabError> {
    // Burst: 10 ms worth at the rate, at least a few full frames.
    let burst = (bps / 8 / 100).max(16 * 1024);
    let rate = format!("{bps}bit");
    let burst = burst.to_string();
    cmd::run_in(
        ns,
        &[
            "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "latency",
            "50ms",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("off"), Ok(Duration::ZERO));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("11s").is_err());
        assert_eq!(parse_rate("10mbit"), Ok(Some(10_000_000)));
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("10mb").is_err());
        assert!("drop-syn".parse::<MptcpOption>().is_ok());
        assert!("bogus".parse::<MptcpOption>().is_err());
    }

    #[test]
    fn ss_subflow_lines_parse() {
        let out = "0      0      198.19.0.10:80 198.19.2.2:56875\n\t bbr wscale:10,10 rto:204 tcp-ulp-mptcp flags:JBec token:0000(id:1)/10d3aa04(id:0) seq:d3\n0      0      198.19.0.10:80 198.19.1.2:52468\n\t bbr rto:216 tcp-ulp-mptcp flags:Mec token:0000(id:0)/10d3aa04(id:0)\n0 0 198.19.0.11:80 198.19.1.2:5000\n\t cubic rto:204\n";
        let v = parse_ss_subflows(out, 80);
        assert_eq!(v.len(), 2);
        assert!(v[0].join && v[0].backup && v[0].peer == "198.19.2.2:56875");
        assert!(!v[1].join && !v[1].backup);
        assert!(parse_ss_subflows(out, 443).is_empty());
    }
}
