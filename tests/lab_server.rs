//! Root-only: `mpbond server` (the RFC 8803 Transport Converter) in its own namespace of a netlab
//! lab, attached to `inet`; the laptop reaches destinations through it with a kernel MPTCP socket
//! whose SYN carries the Convert request (TCP Fast Open, no cookie):
//!
//! - 10 MB download and upload with the plain TCP server, byte-exact; a destination sees the
//!   converter's address; `ss -M` on the converter shows the MPTCP socket; the SYN data was
//!   accepted (`TcpExtTCPFastOpenPassive`); the laptop's second path joins (MP_JOIN);
//! - half-close and reset carried both ways;
//! - every refusal gives its Error TLV and no SYN leaves the converter for it (nft counter):
//!   no cookie, bad MAC, unknown key, replay, stale timestamp, loopback, RFC 1918, port 25;
//!   closed port → Connection Reset, silent destination → Network Failure after the dial timeout;
//!   garbage and truncated requests are refused and the server keeps serving; `--status` counts;
//! - a flood of 2,000 silent or garbage connections keeps the RSS bounded while a valid request
//!   still succeeds;
//! - the reply waits for the client's handshake when the laptop's path is the slower one (20 ms);
//! - 10,000 concurrent idle relays (fewer where the hard descriptor limit forbids it, said so).
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]
#![allow(
    clippy::disallowed_methods,
    reason = "lab test: wall-clock deadlines, cookie timestamps"
)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::converter::{Server, gen_key, server_config};
use common::daemon::{BIN, lab_with, skip_unless_root, wait_for};
use mpbond::convert::client::{self, Reply};
use mpbond::convert::key::ClientKey;
use mpbond::convert::msg::{self, ErrorCode, FixedHeader};
use netlab::converter::{CONVERTER_V4, CONVERTER_V6};
use netlab::{Lab, LabOptions};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const TCP_SERVER: &str = "198.19.0.11:80";
const SIZE: usize = 10_000_000;
/// Replays of one request, each on a new connection.
const REPLAYS: u64 = 8;

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).unwrap();
    n
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A kernel MPTCP socket from the laptop to the converter whose SYN carries `data` (the Convert
/// request and any early data), then reads until the Convert reply is complete. Returns the
/// socket, the reply and the bytes after it.
fn convert_connect(conv: SocketAddr, data: &[u8]) -> (Socket, Reply, Vec<u8>) {
    let s = Socket::new(Domain::for_address(conv), Type::STREAM, Some(Protocol::from(262))).unwrap();
    mpbond::sys::sock::set_tcp_fastopen_no_cookie(s.as_fd(), true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // connect + send in one call: the data rides in the SYN (RFC 7413 client, MSG_FASTOPEN).
    let n = s
        .send_to_with_flags(data, &SockAddr::from(conv), libc::MSG_FASTOPEN)
        .unwrap();
    if n < data.len() {
        (&s).write_all(&data[n..]).unwrap();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match client::parse_reply(&buf) {
            Reply::Incomplete => {}
            r => {
                let consumed = match &r {
                    Reply::Connected { consumed, .. } | Reply::Error { consumed, .. } => *consumed,
                    _ => 0,
                };
                let rest = buf[consumed.min(buf.len())..].to_vec();
                return (s, r, rest);
            }
        }
        match (&s).read(&mut chunk) {
            Ok(0) => {
                return (
                    s,
                    if buf.is_empty() {
                        Reply::Incomplete
                    } else {
                        Reply::Malformed
                    },
                    buf,
                );
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (s, Reply::Incomplete, buf),
            Err(e) => {
                let ti = mpbond::sys::sock::tcp_info(s.as_fd());
                let mi = netlab::mptcp_info(&s);
                panic!(
                    "reading the reply: {e}; DEBUG sent {n}/{} local {:?} peer {:?} so_error {:?} tcp_info {ti:?} mptcp_info {mi:?} buf {}",
                    data.len(),
                    s.local_addr().ok().and_then(|a| a.as_socket()),
                    s.peer_addr().ok().and_then(|a| a.as_socket()),
                    s.take_error(),
                    buf.len()
                )
            }
        }
    }
}

fn error_code(r: &Reply) -> Option<ErrorCode> {
    match r {
        Reply::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// SYNs (without ACK) the converter sent: every dial.
fn syns(lab: &Lab, conv: &str) -> u64 {
    let out = lab
        .exec(conv, &["nft", "list", "chain", "inet", "srvtest", "out"])
        .unwrap();
    out.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn nstat(lab: &Lab, ns: &str, name: &str) -> u64 {
    let out = lab.exec(ns, &["nstat", "-saz", name]).unwrap();
    out.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pattern(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    netlab::pattern::fill(0, &mut v);
    v
}

/// Reads an HTTP response to its end: (head, body).
fn read_http(s: &Socket, mut buf: Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match (&*s).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP head");
    (
        String::from_utf8_lossy(&buf[..at]).into_owned(),
        buf[at + 4..].to_vec(),
    )
}

struct Setup {
    lab: Lab,
    conv: String,
    dir: PathBuf,
    key: ClientKey,
}

fn setup(extra_config: &str) -> (Setup, Server) {
    let mut lab = lab_with(LabOptions::default());
    let conv = lab.add_converter().unwrap();
    let dir = std::env::temp_dir().join(format!("mpbond-lab-server-{}-{}", std::process::id(), lab.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (keyfile, id) = gen_key(&dir);
    let key = ClientKey::load(&keyfile).unwrap();
    assert_eq!(id, key.id().to_string(), "--gen-key prints the key id");
    // Count every SYN the converter sends (its dials) at its own output hook.
    lab.exec(
        &conv,
        &[
            "sh",
            "-c",
            "nft add table inet srvtest && nft add chain inet srvtest out '{ type filter hook output priority 0 ; }' \
             && nft add rule inet srvtest out 'tcp flags & (syn | ack) == syn counter'",
        ],
    )
    .unwrap();
    let listen = [format!("{CONVERTER_V4}:5124"), format!("[{CONVERTER_V6}]:5124")];
    let server = Server::start(
        &lab,
        &conv,
        &dir,
        &server_config(&listen, &keyfile, &dir, extra_config),
    );
    (Setup { lab, conv, dir, key }, server)
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn conv4() -> SocketAddr {
    SocketAddr::from((CONVERTER_V4, 5124))
}

#[test]
fn converter_relays_and_refuses() {
    if skip_unless_root() {
        return;
    }
    let (st, server) = setup("[timeouts]\ndial_ms = 1500\nrequest_ms = 2000\n");
    let (lab, conv, key) = (&st.lab, st.conv.as_str(), &st.key);
    assert!(
        server.log().contains("tcp_fastopen"),
        "the server logs the TCP Fast Open sysctl: {}",
        server.log()
    );
    // The laptop's second path joins the converter's MPTCP connections.
    lab.exec(
        &lab.ns().laptop,
        &[
            "ip",
            "mptcp",
            "endpoint",
            "add",
            "198.18.2.2",
            "dev",
            "wwan0",
            "subflow",
        ],
    )
    .unwrap();
    let tfo0 = nstat(lab, conv, "TcpExtTCPFastOpenPassive");
    let join0 = nstat(lab, conv, "MPTcpExtMPJoinSynRx");
    let syn0 = syns(lab, conv);
    // Baseline: the same download straight from the kernel MPTCP server, same laptop endpoints.
    let direct = lab
        .run_in(&lab.ns().laptop, || {
            let opts = netlab::client::ClientOpts {
                mptcp: true,
                ..Default::default()
            };
            netlab::client::http_get(sa("198.19.0.10:80"), SIZE as u64, &opts)
        })
        .unwrap()
        .unwrap();

    // Download 10 MB from the plain server, the GET riding in the SYN after the request.
    let t = Instant::now();
    let body = lab
        .run_in(&lab.ns().laptop, || {
            let mut data = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
            data.extend_from_slice(
                format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let (s, reply, rest) = convert_connect(conv4(), &data);
            assert!(
                matches!(
                    reply,
                    Reply::Connected {
                        supports_mptcp: true,
                        ..
                    }
                ),
                "{reply:?}"
            );
            read_http(&s, rest)
        })
        .unwrap();
    assert!(body.0.starts_with("HTTP/1.1 200"), "{}", body.0);
    assert!(
        body.1 == pattern(SIZE),
        "download byte-exact ({} bytes)",
        body.1.len()
    );
    let down_s = t.elapsed().as_secs_f64();

    // Upload 10 MB.
    let t = Instant::now();
    let sink = lab
        .run_in(&lab.ns().laptop, || {
            let mut data = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
            data.extend_from_slice(
                format!(
                    "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let (s, reply, rest) = convert_connect(conv4(), &data);
            assert!(matches!(reply, Reply::Connected { .. }), "{reply:?}");
            (&s).write_all(&pattern(SIZE)).unwrap();
            read_http(&s, rest)
        })
        .unwrap();
    let mut h = netlab::pattern::Fnv64::default();
    h.update(&pattern(SIZE));
    assert_eq!(
        String::from_utf8_lossy(&sink.1).trim(),
        format!("{{\"bytes\":{SIZE},\"fnv1a64\":\"{:016x}\"}}", h.value()),
        "upload byte-exact"
    );
    let up_s = t.elapsed().as_secs_f64();
    let tfo = nstat(lab, conv, "TcpExtTCPFastOpenPassive") - tfo0;
    let joins = nstat(lab, conv, "MPTcpExtMPJoinSynRx") - join0;
    assert!(
        tfo >= 2,
        "both requests rode in the SYN (TcpExtTCPFastOpenPassive +{tfo})"
    );
    assert_eq!(syns(lab, conv) - syn0, 2, "one SYN per relayed connection");
    println!(
        "10 MB through the converter: download {:.0} Mbit/s, upload {:.0} Mbit/s (direct MPTCP download {:.0} Mbit/s); TFO passive +{tfo}, MP_JOIN SYNs +{joins}",
        SIZE as f64 * 8.0 / down_s / 1e6,
        SIZE as f64 * 8.0 / up_s / 1e6,
        direct.mbit_per_s()
    );

    // A destination of our own in inet: it sees the converter's address; half-close and reset
    // are carried; meanwhile `ss -M` on the converter lists the MPTCP socket.
    let inet = lab.ns().inet.clone();
    let listener = lab
        .run_in(&inet, || TcpListener::bind("198.19.0.11:9000").unwrap())
        .unwrap();
    let dest = std::thread::spawn(move || {
        let (mut a, peer) = listener.accept().unwrap();
        let mut got = Vec::new();
        a.read_to_end(&mut got).unwrap(); // ends with the client's FIN, carried
        a.write_all(b"bye").unwrap();
        drop(a);
        let (mut b, _) = listener.accept().unwrap();
        let mut x = [0u8; 1];
        b.read_exact(&mut x).unwrap(); // the client got its Connected reply and wrote
        socket2::SockRef::from(&b)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(b); // an RST, to be carried to the client
        (peer, got)
    });
    let (half, ss) = lab
        .run_in(&lab.ns().laptop, || {
            let data = client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:9000"), &[]);
            let (s, reply, _) = convert_connect(conv4(), &data);
            assert!(matches!(reply, Reply::Connected { .. }), "{reply:?}");
            let ss = lab.exec(conv, &["ss", "-Mn", "state", "established"]).unwrap();
            (&s).write_all(b"hello").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            (&s).read_to_end(&mut back).unwrap();
            let data = client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:9000"), &[]);
            let (s2, reply, _) = convert_connect(conv4(), &data);
            assert!(matches!(reply, Reply::Connected { .. }), "{reply:?}");
            (&s2).write_all(b"x").unwrap();
            let mut b = [0u8; 16];
            let r = (&s2).read(&mut b);
            ((back, r.map_err(|e| e.kind())), ss)
        })
        .unwrap();
    let (peer, got) = dest.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::from(CONVERTER_V4),
        "the destination sees the converter"
    );
    assert_eq!(got, b"hello");
    assert_eq!(
        half.0, b"bye",
        "half-close carried: the client still got the answer"
    );
    assert!(
        matches!(half.1, Err(std::io::ErrorKind::ConnectionReset) | Ok(0)),
        "reset carried to the client: {:?}",
        half.1
    );
    assert!(
        ss.contains(&format!("{CONVERTER_V4}:5124")),
        "ss -M lists the MPTCP socket: {ss}"
    );
    println!(
        "destination saw {peer}; half-close and reset carried; reset seen as {:?}",
        half.1
    );

    // Refusals before any dial: each its Error TLV, and no SYN leaves the converter.
    let other = ClientKey::generate().unwrap();
    let valid = client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:80"), &[]);
    let mut bad_mac = valid.clone();
    let last = bad_mac.len() - 1;
    bad_mac[last] ^= 0x55;
    let connect = msg::connect_tlv_bytes(sa(TCP_SERVER), &[]);
    let mut no_cookie = FixedHeader {
        version: msg::VERSION,
        total_words: ((4 + connect.len()) / 4) as u8,
    }
    .to_bytes()
    .to_vec();
    no_cookie.extend_from_slice(&connect);
    let cases: Vec<(&str, Vec<u8>, ErrorCode, &str)> = vec![
        ("no cookie", no_cookie, ErrorCode::NotAuthorized, "missing_cookie"),
        ("bad HMAC", bad_mac, ErrorCode::NotAuthorized, "bad_mac"),
        (
            "unknown key",
            client::connect_request(&other, unix_now(), nonce(), sa(TCP_SERVER), &[]),
            ErrorCode::NotAuthorized,
            "unknown_key",
        ),
        (
            "stale",
            client::connect_request(
                key,
                unix_now() - Duration::from_secs(3600),
                nonce(),
                sa(TCP_SERVER),
                &[],
            ),
            ErrorCode::NotAuthorized,
            "stale",
        ),
        (
            "loopback",
            client::connect_request(key, unix_now(), nonce(), sa("127.0.0.1:80"), &[]),
            ErrorCode::MalformedMessage,
            "malformed",
        ),
        (
            "RFC 1918",
            client::connect_request(key, unix_now(), nonce(), sa("10.1.2.3:80"), &[]),
            ErrorCode::NotAuthorized,
            "policy",
        ),
        (
            "port 25",
            client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:25"), &[]),
            ErrorCode::NotAuthorized,
            "policy",
        ),
        (
            "garbage TLV",
            {
                let mut g = vec![1, 4, 0x22, 0x63];
                g.extend_from_slice(&[0x7f, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
                g
            },
            ErrorCode::UnsupportedMessage,
            "unsupported",
        ),
    ];
    // The replay: the same request twice; the first goes through (a SYN), the second may not.
    let replay_first = lab
        .run_in(&lab.ns().laptop, || convert_connect(conv4(), &valid).1)
        .unwrap();
    assert!(
        matches!(replay_first, Reply::Connected { .. }),
        "{replay_first:?}"
    );
    let before = syns(lab, conv);
    // Again from new connections, which the kernel spreads over the event loops' listeners:
    // they share one replay cache, so each is refused wherever it lands.
    for i in 0..REPLAYS {
        let replay = lab
            .run_in(&lab.ns().laptop, || convert_connect(conv4(), &valid).1)
            .unwrap();
        assert_eq!(
            error_code(&replay),
            Some(ErrorCode::NotAuthorized),
            "replay {i}: {replay:?}"
        );
    }
    for (what, data, want, _) in &cases {
        let r = lab
            .run_in(&lab.ns().laptop, || convert_connect(conv4(), data).1)
            .unwrap();
        assert_eq!(error_code(&r), Some(*want), "{what}: {r:?}");
    }
    // Not a Convert message at all: no reply, the connection is reset (RFC 8803 §6).
    let r = lab
        .run_in(&lab.ns().laptop, || {
            convert_connect(conv4(), b"GET / HTTP/1.1\r\n\r\n").1
        })
        .unwrap();
    assert_eq!(r, Reply::Incomplete, "garbage gets no reply");
    // Truncated: half a request, then nothing: Malformed after the request timeout (2 s).
    let t = Instant::now();
    let r = lab
        .run_in(&lab.ns().laptop, || convert_connect(conv4(), &valid[..20]).1)
        .unwrap();
    assert_eq!(
        error_code(&r),
        Some(ErrorCode::MalformedMessage),
        "truncated: {r:?}"
    );
    let truncated_s = t.elapsed().as_secs_f64();
    assert!(
        (1.5..6.0).contains(&truncated_s),
        "truncated refused after {truncated_s:.1} s"
    );
    assert_eq!(syns(lab, conv), before, "no SYN for any refused request");

    // Dial failures: closed port → Connection Reset; silent → Network Failure after dial_ms.
    let r = lab
        .run_in(&lab.ns().laptop, || {
            convert_connect(
                conv4(),
                &client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:81"), &[]),
            )
            .1
        })
        .unwrap();
    assert_eq!(
        error_code(&r),
        Some(ErrorCode::ConnectionReset),
        "closed port: {r:?}"
    );
    lab.exec(&inet, &["sh", "-c", "nft add table inet srvdrop && nft add chain inet srvdrop in '{ type filter hook input priority 0 ; }' && nft add rule inet srvdrop in tcp dport 82 drop"]).unwrap();
    let t = Instant::now();
    let r = lab
        .run_in(&lab.ns().laptop, || {
            convert_connect(
                conv4(),
                &client::connect_request(key, unix_now(), nonce(), sa("198.19.0.11:82"), &[]),
            )
            .1
        })
        .unwrap();
    let silent_s = t.elapsed().as_secs_f64();
    assert_eq!(
        error_code(&r),
        Some(ErrorCode::NetworkFailure),
        "silent destination: {r:?}"
    );
    assert!(
        (1.4..4.0).contains(&silent_s),
        "dial timeout 1.5 s, took {silent_s:.2} s"
    );

    // Still serving after all that.
    let ok = lab
        .run_in(&lab.ns().laptop, || {
            convert_connect(
                conv4(),
                &client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]),
            )
            .1
        })
        .unwrap();
    assert!(matches!(ok, Reply::Connected { .. }), "{ok:?}");

    // The status counts it all, by cause and per key.
    let mut s = server.status();
    wait_for("status published", Duration::from_secs(5), || {
        s = server.status();
        s.refusals_of("dest_timeout") == 1
            && s.keys
                .get(&key.id().to_string())
                .is_some_and(|k| k.connected_total == 6)
    });
    println!(
        "relay repumps (pending bytes without a writable edge for 100 ms): {}",
        s.counter("repumps")
    );
    for (_, _, _, cause) in &cases {
        assert!(s.refusals_of(cause) >= 1, "{cause} counted: {:?}", s.refusals);
    }
    assert_eq!(s.refusals_of("replay"), REPLAYS);
    assert_eq!(s.refusals_of("policy"), 2);
    assert_eq!(s.refusals_of("dest_refused"), 1);
    assert_eq!(s.policy_denied.get("private"), Some(&1));
    assert_eq!(s.policy_denied.get("port"), Some(&1));
    let k = &s.keys[&key.id().to_string()];
    assert!(k.bytes_down >= SIZE as u64 && k.bytes_up >= SIZE as u64, "{k:?}");
    assert_eq!(k.connected_total, 6, "{k:?}");
    let o = Command::new(BIN)
        .args(["server", "--status-socket"])
        .arg(&server.socket)
        .arg("--status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("bad_mac 1") && text.contains(&key.id().to_string()),
        "{text}"
    );
    println!("--status:\n{text}");
    println!("truncated refused after {truncated_s:.1} s, silent destination after {silent_s:.2} s");
    drop(server);
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Linux strands the bytes written to a Fast Open MPTCP socket before its MP_CAPABLE third ACK
/// arrives (they leave only with a later write), so the converter holds its reply until then.
/// Here the client's third ACK is dropped (its retransmission, answering the SYN/ACK the
/// converter repeats after 1 s, passes): the reply must still come, right after it.
#[test]
fn the_reply_waits_for_a_late_third_ack() {
    if skip_unless_root() {
        return;
    }
    let (st, server) = setup("");
    let (lab, conv, key) = (&st.lab, st.conv.as_str(), &st.key);
    lab.exec(
        conv,
        &[
            "sh",
            "-c",
            "nft add table inet late && nft add chain inet late in '{ type filter hook input priority 0 ; }' \
             && nft add rule inet late in 'tcp dport 5124 tcp flags & (syn | ack | fin | rst | psh) == ack \
             meta length < 100 counter drop'",
        ],
    )
    .unwrap();
    let t = Instant::now();
    let (reply, waited) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let dropped = lab.exec(conv, &["nft", "list", "table", "inet", "late"]).unwrap();
            lab.exec(conv, &["nft", "delete", "table", "inet", "late"])
                .unwrap();
            assert!(
                !dropped.contains("packets 0 "),
                "no third ACK was dropped: {dropped}"
            );
        });
        lab.run_in(&lab.ns().laptop, || {
            let data = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
            let (_s, reply, _) = convert_connect(conv4(), &data);
            (reply, t.elapsed())
        })
        .unwrap()
    });
    assert!(
        matches!(reply, Reply::Connected { .. }),
        "{reply:?}\n{}",
        server.log()
    );
    println!(
        "reply after a late third ACK: {:.0} ms",
        waited.as_secs_f64() * 1e3
    );
    assert!(
        waited >= Duration::from_millis(500),
        "the third ACK was not late ({waited:?})"
    );
}

#[test]
fn flood_of_silent_and_garbage_connections_stays_bounded() {
    if skip_unless_root() {
        return;
    }
    let _ = rlimit::increase_nofile_limit(16_384);
    let (st, server) = setup("[limits]\nmax_requesting = 4096\n[timeouts]\nrequest_ms = 3000\n");
    let (lab, key) = (&st.lab, &st.key);
    let rss0 = rss_kb(server.pid());
    let valid = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
    let t = Instant::now();
    let held = lab
        .run_in(&lab.ns().laptop, || {
            let mut held = Vec::new();
            for i in 0..2000u32 {
                let s = std::net::TcpStream::connect_timeout(&conv4(), Duration::from_secs(5)).unwrap();
                match i % 4 {
                    0 | 1 => {}                                 // silent
                    2 => (&s).write_all(&[0xa5; 300]).unwrap(), // garbage (not Convert)
                    _ => (&s).write_all(&valid[..8]).unwrap(),  // a truncated request
                }
                held.push(s);
            }
            // A valid request in the middle of the flood, with a verified 100 kB download.
            let mut data = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
            data.extend_from_slice(b"GET /bytes/100000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (s, reply, rest) = convert_connect(conv4(), &data);
            assert!(
                matches!(reply, Reply::Connected { .. }),
                "valid request during the flood: {reply:?}"
            );
            let (_, body) = read_http(&s, rest);
            assert!(body == pattern(100_000), "download during the flood");
            held
        })
        .unwrap();
    let flood_s = t.elapsed().as_secs_f64();
    let mut peak = rss_kb(server.pid());
    let mut s = server.status();
    wait_for("the flood in the status", Duration::from_secs(5), || {
        s = server.status();
        peak = peak.max(rss_kb(server.pid()));
        s.counter("accepted") >= 2001
    });
    let requesting = s.now.requesting;
    // The request timeout (3 s) clears the silent and truncated ones.
    wait_for("request slots freed", Duration::from_secs(20), || {
        s = server.status();
        peak = peak.max(rss_kb(server.pid()));
        s.now.requesting == 0
    });
    drop(held);
    let rss1 = rss_kb(server.pid());
    println!(
        "flood of 2000 connections in {flood_s:.1} s: {requesting} requesting at once, RSS {rss0} kB → peak {peak} kB → {rss1} kB; \
         request timeouts {}, malformed {}",
        s.counter("request_timeouts"),
        s.refusals_of("malformed")
    );
    assert!(peak < rss0 + 64 * 1024, "RSS bounded: {rss0} kB → {peak} kB");
    assert!(s.counter("request_timeouts") >= 1000, "{:?}", s.counters);
    assert!(
        s.refusals_of("malformed") >= 1000,
        "garbage and truncated refused: {:?}",
        s.refusals
    );
}

/// Relayed connections one converter process can hold under a hard `RLIMIT_NOFILE` of `hard`:
/// two sockets each (idle relays hold no pipe), less what the process has open anyway
/// (standard streams, listeners, epoll, the waker, the status socket, a pooled pipe: 15 measured).
fn relays_within(hard: u64) -> usize {
    usize::try_from(hard.saturating_sub(32) / 2).unwrap_or(usize::MAX)
}

/// 10,000 idle relayed connections at once through one converter, every reply Connected, all
/// counted as relaying, bytes relayed on the first and the last. Each relay holds two sockets,
/// so one descriptor table needs ~20,032 descriptors: more than a hard `RLIMIT_NOFILE` of
/// 20,000 that cannot be raised (no `CAP_SYS_RESOURCE`, e.g. this lab's container). The
/// converter's two event loops each have a table of their own, and hold 10,000 between them.
/// The destination keeps its side in the kernel (the accept
/// queue of a listener with a 16,384 backlog), except the first and last, which it accepts to
/// echo a byte, so that this process needs one descriptor per connection, not two.
#[test]
fn ten_thousand_concurrent_relays() {
    if skip_unless_root() {
        return;
    }
    const GOAL: usize = 10_000;
    const LOOPS: usize = 2;
    let _ = rlimit::increase_nofile_limit(65_536);
    let hard = rlimit::Resource::NOFILE.get().map_or(0, |(_, h)| h);
    // The test process holds one descriptor per connection; each event loop of the converter
    // two per relay, in a descriptor table of its own, and the kernel spreads the connections
    // evenly: two loops hold 10,000 under a hard limit of 20,000.
    assert!(
        relays_within(hard) >= GOAL * 3 / 4 && hard as usize > GOAL + 64,
        "RLIMIT_NOFILE hard limit {hard} is far too low for this test"
    );
    let n = GOAL;
    let (st, server) = setup(&format!("workers = {LOOPS}\n"));
    let (lab, key) = (&st.lab, &st.key);
    let inet = lab.ns().inet.clone();
    lab.exec(&inet, &["sysctl", "-q", "-w", "net.core.somaxconn=16384"])
        .unwrap();
    let listen = |addr: &str| {
        lab.run_in(&inet, || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&SockAddr::from(sa(addr))).unwrap();
            s.listen(16_384).unwrap();
            TcpListener::from(s)
        })
        .unwrap()
    };
    // The first and the last connection go to `echo`, the others stay in `held`'s accept queue.
    let (echo, held) = (listen("198.19.0.11:9001"), listen("198.19.0.11:9002"));
    let dest = std::thread::spawn(move || {
        let mut two = Vec::new();
        for _ in 0..2 {
            let (a, _) = echo.accept().unwrap();
            a.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            two.push(a);
        }
        for a in &mut two {
            let mut b = [0u8; 1];
            a.read_exact(&mut b).unwrap();
            a.write_all(&b).unwrap();
        }
        two
    });
    let rss0 = rss_kb(server.pid());
    let t = Instant::now();
    let clients = lab
        .run_in(&lab.ns().laptop, || {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let port = if i == 0 || i == n - 1 { 9001 } else { 9002 };
                let dst = SocketAddr::from(([198, 19, 0, 11], port));
                let data = client::connect_request(key, unix_now(), nonce(), dst, &[]);
                let (s, reply, _) = convert_connect(conv4(), &data);
                assert!(
                    matches!(reply, Reply::Connected { .. }),
                    "connection {i}: {reply:?}"
                );
                v.push(s);
            }
            v
        })
        .unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let mut s = server.status();
    wait_for("every connection relaying", Duration::from_secs(30), || {
        s = server.status();
        s.now.relaying == n as u64
    });
    let rss = rss_kb(server.pid());
    // The destination's kernel holds the other n - 2 connections, established, in its queue.
    let queued: u64 = lab
        .exec(&inet, &["ss", "-Hltn", "sport = :9002"])
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap();
    assert_eq!(
        queued,
        n as u64 - 2,
        "the destination holds every other connection"
    );
    for i in [0, n - 1] {
        (&clients[i]).write_all(b"z").unwrap();
        let mut b = [0u8; 1];
        (&clients[i]).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"z", "connection {i} relays with {n} open");
    }
    let two = dest.join().unwrap();
    wait_for("the two bytes counted both ways", Duration::from_secs(5), || {
        let s = server.status();
        s.counter("bytes_up") == 2 && s.counter("bytes_down") == 2
    });
    assert_eq!(s.workers, LOOPS as u64, "{:?}", s.loops);
    assert!(
        s.loops.iter().all(|l| l.relaying > 0),
        "the kernel spreads the connections over every loop: {:?}",
        s.loops
    );
    println!(
        "{n} concurrent relayed connections opened in {open_s:.1} s; converter RSS {rss0} kB → {rss} kB \
         ({:.1} kB per connection); pipes created {}; replies held for the handshake {}; relaying per \
         event loop {:?}",
        (rss.saturating_sub(rss0)) as f64 / n as f64,
        s.counter("pipes_created"),
        s.counter("replies_held"),
        s.loops.iter().map(|l| l.relaying).collect::<Vec<_>>()
    );
    drop(clients);
    drop((two, held));
}

/// The laptop's path is slower than the destination's: the dial completes, and the Convert reply
/// is ready, while the laptop's MPTCP socket is still a TCP Fast Open child in SYN-RECV (its
/// final ACK still on the way). The kernel queues data written to it then but does not send it
/// when the handshake completes; the converter must hold the reply until the subflow is
/// established. Before that fix every connection here hung without a reply.
#[test]
fn reply_waits_for_the_clients_handshake() {
    if skip_unless_root() {
        return;
    }
    let (st, server) = setup("");
    let (lab, key) = (&st.lab, &st.key);
    lab.set_delay(netlab::Path::Wifi, Duration::from_millis(20))
        .unwrap();
    let t = Instant::now();
    lab.run_in(&lab.ns().laptop, || {
        for i in 0..20 {
            let data = client::connect_request(key, unix_now(), nonce(), sa(TCP_SERVER), &[]);
            let (_s, reply, _) = convert_connect(conv4(), &data);
            assert!(
                matches!(reply, Reply::Connected { .. }),
                "connection {i}: {reply:?}"
            );
        }
    })
    .unwrap();
    let per = t.elapsed().as_secs_f64() * 1e3 / 20.0;
    let s = server.status();
    println!(
        "20 replies at 20 ms RTT: {per:.1} ms per connection; replies held for the handshake: {}",
        s.counter("replies_held")
    );
    assert!(
        s.counter("replies_held") > 0,
        "the delay makes the reply wait for the handshake"
    );
    // Kernel MPTCP sends nothing before the final ACK: the reply leaves after one RTT and
    // arrives after two (the same two a direct connection takes to its first response byte);
    // the hold's polling adds at most 2 ms.
    assert!(per < 50.0, "{per:.1} ms per connection at 20 ms RTT");
}
