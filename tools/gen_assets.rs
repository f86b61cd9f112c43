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
