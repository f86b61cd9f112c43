//! Generates the man pages and shell completions from the clap definition, for the Debian package:
//!   cargo run --example gen-assets -- OUTDIR
//! writes OUTDIR/man/mpbond.8 (+ one page per subcommand) and OUTDIR/completions/{mpbond.bash,_mpbond,mpbond.fish}.
#![allow(clippy::print_stderr, reason = "a build tool")]

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

/// Sections clap does not generate, in roff.
const EXTRA_SECTIONS: &str = r#".SH EXIT STATUS
0 on success, 1 on a runtime failure, 2 on a usage or configuration error.
Errors are printed on one line with their whole cause chain.
.SH FILES
.TP
/etc/mpbond/mpbond.toml
Configuration; every key optional, command\-line flags override it.
.TP
/run/mpbond
Pid file, control socket and the journal of routing changes that \fBmpbond down\fR replays.
.TP
/etc/mpbond/server.toml
The converter's configuration (\fBmpbond server\fR): listen addresses, key files, egress allow\-list, limits, timeouts.
.TP
/etc/mpbond/keys/*.key
Client keys of \fBmpbond server\fR, one per laptop (\fBmpbond server \-\-gen\-key\fR writes one, mode 0600).
.SH ENVIRONMENT
.TP
MPBOND_RUN_DIR
Same as \fB\-\-run\-dir\fR.
.TP
MPBOND_LOG
Log filter (tracing EnvFilter syntax), overrides \fB\-v\fR.
.SH SEE ALSO
\fBip\-rule\fR(8), \fBnft\fR(8), \fBip\-mptcp\fR(8)
"#;

/// The converter's page: what it does, the kernel settings, signals, files.
const SERVER_SECTIONS: &str = r#".SH DESCRIPTION
\fBmpbond server\fR is an RFC 8803 Transport Converter. Laptops running \fBmpbond\fR open
kernel Multipath TCP connections to it whose SYN carries a Convert request (TCP Fast Open,
without a TFO cookie; a Cookie TLV proves the laptop's key). The converter checks the request,
applies its egress policy and limits, connects to the destination with plain TCP, answers with
the destination's options, and relays both ways with \fBsplice\fR(2).
.PP
Refusals carry an Error TLV: Not Authorized (32) for a missing or bad cookie, an unknown key, a
replay, a stale timestamp or a destination the policy denies (loopback, link\-local, RFC 1918,
100.64.0.0/10, fc00::/7, multicast, broadcast, the converter's own addresses, port 25, unless
allowed in \fI[egress]\fR); Resource Exceeded (64) at a limit; Connection Reset (96) when the
destination answers with an RST; Destination Unreachable (97) with the ICMP code; Network
Failure (65) when the destination does not answer in time. No SYN leaves for a refused request.
.SH KERNEL
The server side of TCP Fast Open needs bit 0x2 of \fBnet.ipv4.tcp_fastopen\fR; the MPTCP
subflow limit (\fBip mptcp limits\fR) must be at least 2 to accept the laptop's second path.
\fBmpbond server \-\-prepare\fR (as root) sets both; the server checks them at start and logs
what is missing.
.SH SIGNALS
SIGHUP re\-reads the key files: a key whose file is gone is revoked at once and its connections
are closed. SIGTERM and SIGINT stop the server.
"#;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/assets".into()));
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;

    let cmd = mpbond::cli::Cli::command().version(env!("CARGO_PKG_VERSION"));
    let page = |c: clap::Command, name: &str| -> std::io::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.to_uppercase())
            .section("8")
            .render(&mut buf)?;
        if name == "mpbond" {
            buf.extend_from_slice(EXTRA_SECTIONS.as_bytes());
        }
        if name == "mpbond-server" {
            buf.extend_from_slice(SERVER_SECTIONS.as_bytes());
        }
        std::fs::write(man.join(format!("{name}.8")), buf)
    };
    page(cmd.clone(), "mpbond")?;
    for sub in cmd.get_subcommands() {
        let name = format!("mpbond-{}", sub.get_name());
        page(sub.clone().name(name.clone()), &name)?;
    }

    for (shell, file) in [
        (Shell::Bash, "mpbond.bash"),
        (Shell::Zsh, "_mpbond"),
        (Shell::Fish, "mpbond.fish"),
    ] {
        let mut c = cmd.clone();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut c, "mpbond", &mut buf);
        std::fs::write(comp.join(file), buf)?;
    }
    eprintln!("wrote {} and {}", man.display(), comp.display());
    Ok(())
}
