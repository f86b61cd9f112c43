//! `mpbond server` (the RFC 8803 converter) in a lab's converter namespace, for the lab tests:
//! a client key written with `--gen-key`, a config file, the process killed on drop.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    reason = "lab test helpers: wall-clock deadlines, panics on setup failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netlab::converter::CONVERTER_V4;
use netlab::{Lab, Path as LabPath};

use super::daemon::BIN;

/// Writes a new client key into `dir` with `mpbond server --gen-key`: its file and the key id
/// the command printed.
pub fn gen_key(dir: &Path) -> (PathBuf, String) {
    let keyfile = dir.join("laptop.key");
    let o = Command::new(BIN)
        .args(["server", "--gen-key"])
        .arg(&keyfile)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (keyfile, String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// A `server.toml` listening on `listen`, trusting `keyfile`, its status socket in `dir`, and
/// `extra` lines.
pub fn server_config(listen: &[String], keyfile: &Path, dir: &Path, extra: &str) -> String {
    let listen: Vec<String> = listen.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "listen = [{}]\nkey_files = [\"{}\"]\nstatus_socket = \"{}\"\n{extra}",
        listen.join(", "),
        keyfile.display(),
        dir.join("status.sock").display()
    )
}

/// The converter process; killed on drop.
pub struct Server {
    child: Option<Child>,
    log: PathBuf,
    pub socket: PathBuf,
}

impl Server {
    pub fn start(lab: &Lab, conv: &str, dir: &Path, config: &str) -> Server {
        let cfg = dir.join("server.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("server.log");
        let child = lab
            .command(conv, BIN)
            .args(["-v", "server", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child: Some(child),
            log,
            socket: dir.join("status.sock"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("server exited early ({st}): {}", s.log());
            }
            if mpbond::server::fetch_status(&s.socket).is_ok() {
                return s;
            }
            assert!(Instant::now() < deadline, "server not ready: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> mpbond::server::ServerStatus {
        mpbond::server::fetch_status(&self.socket).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The converter's address in the lab (`IP:5124`).
pub fn converter_addr() -> String {
    format!("{CONVERTER_V4}:5124")
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a client key and starts the converter with it in namespace `conv`; returns it, the key
/// file and the directory holding both (removed on drop; `tag` names it).
pub fn start_converter(lab: &Lab, conv: &str, tag: &str) -> (Server, PathBuf, TempDir) {
    start_converter_on(lab, conv, tag, &[converter_addr()])
}

/// [`start_converter`] listening on `listen`.
pub fn start_converter_on(lab: &Lab, conv: &str, tag: &str, listen: &[String]) -> (Server, PathBuf, TempDir) {
    let dir =
        TempDir(std::env::temp_dir().join(format!("mpbond-lab-{tag}-{}-{}", std::process::id(), lab.name())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let (key, _) = gen_key(&dir.0);
    let cfg = server_config(listen, &key, &dir.0, "");
    (Server::start(lab, conv, &dir.0, &cfg), key, dir)
}

/// How the Wi-Fi path is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// wlan0 goes down.
    LinkDown,
    /// The Wi-Fi router drops everything.
    Blackhole,
}

/// Starts (`on`) or ends the outage `o` of the Wi-Fi path.
pub fn impair(lab: &Lab, o: Outage, on: bool) {
    match o {
        Outage::LinkDown => lab.set_link(LabPath::Wifi, !on),
        Outage::Blackhole => lab.set_blackhole(LabPath::Wifi, on),
    }
    .unwrap();
}
