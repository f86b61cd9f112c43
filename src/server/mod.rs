//! `mpbond server`: the RFC 8803 Transport Converter, thin I/O around the Linux kernel's MPTCP
//! (STYLE.md point 16). The laptop opens a kernel-terminated MPTCP connection to the converter
//! with the Convert request in its SYN (TCP Fast Open without cookie); the converter checks it
//! with `convert::converter`, applies its egress policy and limits, dials the destination with
//! plain kernel TCP, answers, and splices the two sockets together.
//!
//! Threads: the main thread (signals: SIGHUP reloads the client keys, SIGTERM/SIGINT stop), the
//! event loops ([`event_loop`]; `workers` of them, one per CPU by default, each with its own
//! descriptor table and listeners, sharing the keyring, the replay cache and the limits), the
//! datagram relay ([`udp`]: one thread, UDP on the listen addresses, sharing the keyring and the
//! limits), and the status socket's thread (`io::control`, `{"cmd":"status"}`: the loops' statuses summed).

pub mod config;
pub mod dial;
pub mod event_loop;
pub mod kernel;
pub mod limits;
pub mod policy;
pub mod relay;
pub mod status;
pub mod udp;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use mio::Poll;

use crate::convert::key::ClientKey;
use crate::io::Worker;
use crate::io::control::{self, Request};
use crate::sys;

pub use config::{KeySource, ServerConfig};
pub use status::ServerStatus;

/// A periodic chore of a server thread (publishing its status, reading its own addresses again):
/// due at most once per period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Every {
    period: Duration,
    next: crate::time::Instant,
}

impl Every {
    /// First due at `first`, then every `period`.
    pub(crate) fn new(period: Duration, first: crate::time::Instant) -> Every {
        Every { period, next: first }
    }

    /// Whether it is due at `now` (the next time is then a period later).
    pub(crate) fn due(&mut self, now: crate::time::Instant) -> bool {
        let due = now >= self.next;
        if due {
            self.next = now + self.period;
        }
        due
    }
}

/// Listen backlog.
const BACKLOG: i32 = 4096;
/// File descriptors one relayed connection may hold: two sockets and two pipes.
const FDS_PER_CONN: u64 = 6;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No key file found.
    #[error(
        "no client key: {0} holds no *.key file (create one with `mpbond server --gen-key {0}/NAME.key`)"
    )]
    NoKeys(String),
    /// A key file could not be read.
    #[error(transparent)]
    Key(#[from] crate::convert::key::KeyError),
}

/// Reads every key of `src`. At start any failure is fatal; on reload ([`reload_keys`]) a
/// failing file is left out (a deleted file is a revoked key).
pub fn load_keys(src: &KeySource) -> anyhow::Result<Vec<ClientKey>> {
    let paths = src
        .paths()
        .with_context(|| format!("cannot list the key files of {src:?}"))?;
    if paths.is_empty() {
        let where_ = match src {
            KeySource::Dir(d) => d.display().to_string(),
            KeySource::Files(_) => "the key file list".into(),
        };
        return Err(ServerError::NoKeys(where_).into());
    }
    let mut keys = Vec::new();
    for p in paths {
        keys.push(ClientKey::load(&p).map_err(ServerError::Key)?);
    }
    Ok(keys)
}

/// Reads the keys again for SIGHUP: files that fail are logged and left out.
pub fn reload_keys(src: &KeySource) -> Vec<ClientKey> {
    let paths = match src.paths() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot list the key files ({e}); no key is accepted until the next reload");
            return Vec::new();
        }
    };
    paths
        .iter()
        .filter_map(|p| match ClientKey::load(p) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("{e}; that key is no longer accepted");
                None
            }
        })
        .collect()
}

/// The converter's own addresses: every address of every interface of its network namespace,
/// and the specific listen addresses (clients must not reach the converter's host through it).
pub fn own_addresses(listen: &[SocketAddr]) -> HashSet<IpAddr> {
    let mut own: HashSet<IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .collect();
    match crate::route::netlink::Rtnl::open().and_then(|mut r| r.links()) {
        Ok(links) => own.extend(
            links
                .iter()
                .flat_map(|l| l.addresses.iter().map(ipnet::IpNet::addr)),
        ),
        Err(e) => tracing::warn!("cannot list the converter's own addresses: {e}"),
    }
    own
}

/// `mpbond server --prepare`: the kernel settings the converter needs (root; the systemd unit's
/// `ExecStartPre=+`): the TCP Fast Open server bit and the MPTCP subflow limit.
pub fn prepare_kernel() -> anyhow::Result<()> {
    let tfo = kernel::ensure_tfo_bits(kernel::TFO_SERVER);
    let mptcp = kernel::ensure_mptcp_subflows();
    if !(tfo && mptcp) {
        anyhow::bail!("the kernel is not fully set up for the converter (see the warnings above)");
    }
    Ok(())
}

/// One event loop as the main thread sees it.
struct Loop {
    worker: Worker,
    tx: crossbeam_channel::Sender<event_loop::Control>,
    status: Arc<Mutex<ServerStatus>>,
}

/// What an event loop reports once its listeners are bound.
struct Bound {
    addrs: Vec<SocketAddr>,
    no_cookie: bool,
}

/// Fails if another socket holds one of `addrs` (with `SO_REUSEPORT` the loops' own binds would
/// succeed beside another converter of the same user and silently share its connections).
fn check_free(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    use socket2::{Domain, Socket, Type};
    for a in addrs.iter().filter(|a| a.port() != 0) {
        let s = Socket::new(Domain::for_address(*a), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        if a.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&(*a).into())
            .with_context(|| format!("cannot listen on {a}"))?;
    }
    Ok(())
}

/// In a loop's own thread: its own descriptor table, its listeners, no capability, its loop.
fn start_loop(
    poll: &Poll,
    addrs: &[SocketAddr],
    reuse_port: bool,
    cfg: ServerConfig,
    state: &event_loop::Shared,
    rx: crossbeam_channel::Receiver<event_loop::Control>,
    status: Arc<Mutex<ServerStatus>>,
) -> anyhow::Result<(event_loop::EventLoop, Bound)> {
    // RLIMIT_NOFILE bounds each descriptor table: a loop with a table of its own holds that many
    // descriptors whatever the other loops hold (the way past a hard limit of 20,000 that an
    // unprivileged container cannot raise: 10,000 relays need 20,000 sockets).
    sys::proc::unshare_fd_table().context("cannot give the event loop its own descriptor table")?;
    let mut listeners = Vec::new();
    let mut bound = Bound {
        addrs: Vec::new(),
        no_cookie: true,
    };
    for addr in addrs {
        let l =
            kernel::listen(*addr, BACKLOG, reuse_port).with_context(|| format!("cannot listen on {addr}"))?;
        bound.addrs.push(l.addr);
        bound.no_cookie &= l.no_cookie;
        listeners.push((std::net::TcpListener::from(l.socket), l.no_cookie));
    }
    // Capabilities are per thread: this one needs none once bound.
    if sys::caps::effective().unwrap_or(0) != 0 {
        sys::caps::keep_only(&[]).context("cannot drop privileges")?;
    }
    let el = event_loop::EventLoop::new(poll, listeners, cfg, state, rx, status)
        .context("cannot set up the event loop")?;
    Ok((el, bound))
}

/// Starts `cfg.workers` event loops, each with its own listeners (one `SO_REUSEPORT` group per
/// address when there are several) and descriptor table, sharing `state`.
fn start_loops(cfg: &ServerConfig, state: &event_loop::Shared) -> anyhow::Result<(Vec<Loop>, Bound)> {
    let reuse_port = cfg.workers > 1;
    if reuse_port {
        check_free(&cfg.listen)?;
    }
    let mut loops: Vec<Loop> = Vec::new();
    let mut addrs = cfg.listen.clone();
    let mut all = Bound {
        addrs: Vec::new(),
        no_cookie: true,
    };
    for i in 0..cfg.workers {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let status = Arc::new(Mutex::new(ServerStatus::default()));
        let poll = Poll::new().context("cannot create the event loop")?;
        let (c, st, at, snap) = (cfg.clone(), state.clone(), addrs.clone(), status.clone());
        let worker = Worker::spawn(
            &format!("mpbond-srv{i}"),
            poll,
            move |poll, stop| match start_loop(&poll, &at, reuse_port, c, &st, rx, snap) {
                Ok((el, bound)) => {
                    let _ = ready_tx.send(Ok(bound));
                    el.run(poll, &stop);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            },
        )
        .context("cannot start the event loop")?;
        let bound = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the event loop stopped while starting"))??;
        // Port 0 binds once: the other loops join the port the first one got.
        addrs.clone_from(&bound.addrs);
        all.no_cookie &= bound.no_cookie;
        all.addrs = bound.addrs;
        loops.push(Loop { worker, tx, status });
    }
    Ok((loops, all))
}

/// Binds the datagram relay's UDP listeners on the TCP listeners' addresses and starts its
/// thread ([`udp`]).
fn start_udp_relay(
    cfg: &ServerConfig,
    state: &event_loop::Shared,
    addrs: &[SocketAddr],
) -> anyhow::Result<Loop> {
    let socks = udp::bind(addrs).context("cannot bind the UDP relay beside the TCP listeners")?;
    for a in addrs {
        tracing::info!("UDP relay on {a}");
    }
    let (tx, rx) = crossbeam_channel::bounded(4);
    let status = Arc::new(Mutex::new(ServerStatus::default()));
    let poll = Poll::new().context("cannot create the UDP relay's poll")?;
    let relay = udp::UdpRelay::new(&poll, socks, cfg, state, rx, status.clone())
        .context("cannot set up the UDP relay")?;
    let worker = Worker::spawn("mpbond-srv-udp", poll, move |poll, stop| relay.run(poll, &stop))
        .context("cannot start the UDP relay")?;
    Ok(Loop { worker, tx, status })
}

/// Runs the converter until SIGTERM/SIGINT.
pub fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    // Before any thread exists, so every thread inherits the mask.
    sys::proc::block_termination_signals().context("cannot block signals")?;
    let keys = load_keys(&cfg.keys)?;
    tracing::info!("{} client key(s) loaded", keys.len());

    let want = (cfg.limits.max_total as u64 + cfg.limits.max_requesting as u64) * FDS_PER_CONN + 256;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    // Each event loop's descriptor table needs its share (the kernel spreads connections evenly).
    let per_loop = want / cfg.workers as u64 + 256;
    match sys::sock::raise_nofile(want.min(nr_open)) {
        Ok(n) if n >= per_loop.min(nr_open) => tracing::info!("RLIMIT_NOFILE {n}"),
        Ok(n) => tracing::warn!(
            "RLIMIT_NOFILE is {n}, below the {per_loop} per event loop that limits.max_total needs: \
             set LimitNOFILE= in the unit, or more workers"
        ),
        Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE: {e}"),
    }

    let state = event_loop::Shared::new(&cfg, keys);
    let (mut loops, bound) = start_loops(&cfg, &state)?;
    for a in &bound.addrs {
        tracing::info!("listening on {a} (kernel MPTCP, TCP Fast Open)");
    }
    tracing::info!("{} event loop(s)", loops.len());
    let mut relay = start_udp_relay(&cfg, &state, &bound.addrs)?;
    let bits = if bound.no_cookie {
        kernel::TFO_SERVER
    } else {
        tracing::warn!(
            "this kernel refuses TCP_FASTOPEN_NO_COOKIE on MPTCP listeners: needs net.ipv4.tcp_fastopen bit 0x200"
        );
        kernel::TFO_SERVER | kernel::TFO_SERVER_NO_COOKIE
    };
    kernel::ensure_tfo_bits(bits);
    kernel::ensure_mptcp_subflows();

    // Nothing below needs a privilege: drop every capability (per thread: the event loops
    // dropped theirs, the status thread starts after).
    if sys::caps::effective().unwrap_or(0) != 0 {
        sys::caps::keep_only(&[]).context("cannot drop privileges")?;
        tracing::info!("dropped every capability");
    }

    if let Some(dir) = cfg.status_socket.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut snaps: Vec<Arc<Mutex<ServerStatus>>> = loops.iter().map(|l| l.status.clone()).collect();
    snaps.push(relay.status.clone());
    let handler: control::Handler = Box::new(move |req| match req {
        Request::Status => {
            let parts: Vec<ServerStatus> = snaps.iter().map(|s| event_loop::lock(s).clone()).collect();
            serde_json::to_value(ServerStatus::merged(&parts)).unwrap_or_default()
        }
        Request::Shutdown => {
            sys::proc::terminate_self();
            serde_json::json!({ "ok": true })
        }
    });
    let mut status_thread = control::spawn(&cfg.status_socket, control::Access::Owner, handler)
        .with_context(|| format!("cannot listen on {}", cfg.status_socket.display()))?;
    tracing::info!("mpbond server is up");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        match sys::proc::wait_for_termination(Duration::from_secs(3600)) {
            Some(libc::SIGHUP) => {
                let keys = reload_keys(&cfg.keys);
                let ids = {
                    let mut c = event_loop::lock(&state.converter);
                    c.replace_keys(keys);
                    c.key_ids()
                };
                tracing::info!("client keys reloaded: {} key(s)", ids.len());
                for l in loops.iter().chain(std::iter::once(&relay)) {
                    if l.tx.send(event_loop::Control::Keys(ids.clone())).is_ok() {
                        let _ = l.worker.waker().wake();
                    }
                }
            }
            Some(sig) => {
                tracing::info!("signal {sig}: shutting down");
                break;
            }
            None => {}
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for l in &mut loops {
        l.worker.stop();
    }
    relay.worker.stop();
    status_thread.stop();
    let _ = std::fs::remove_file(&cfg.status_socket);
    Ok(())
}

/// `mpbond server --gen-key FILE`: writes a new key (mode 0600) and returns its id. Run as root
/// in a directory owned by another user (the package's `_mpbond-server`, which owns
/// `/etc/mpbond/keys`), the file is given to that user, so that the server can read it.
pub fn gen_key(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let key = ClientKey::write_new(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if sys::proc::is_root()
        && let Ok(m) = std::fs::metadata(dir)
        && m.uid() != 0
    {
        std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))
            .with_context(|| format!("cannot give {} to the owner of {}", path.display(), dir.display()))?;
    }
    Ok(key.id().to_string())
}

/// Asks a running server for its status.
pub fn fetch_status(socket: &Path) -> anyhow::Result<ServerStatus> {
    let answer = control::request(socket, Request::Status)
        .with_context(|| format!("no mpbond server answers on {}", socket.display()))?;
    serde_json::from_value(answer).context("the server sent an unreadable status")
}
