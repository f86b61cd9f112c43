//! Root-only: through `mpbond up` in a netlab laptop, UDP echo, a DNS-style request/response and
//! ping (IPv4 and IPv6) work; with the Wi-Fi link down new UDP and TCP flows use cellular and
//! come back to Wi-Fi when it returns; malformed packets written into the TUN are counted and
//! dropped while the daemon keeps serving; `down` leaves the routing as before.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the skip notice")]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::daemon::{
    Daemon, RunDir, lab_with, mpbond, skip_unless_root, snapshot, status, stderr, wait_for,
};
use mpbond::daemon::Status;
use mpbond::wire::{self, SegmentFields, TcpFlags, icmp, udp};
use netlab::client::{self, ClientOpts};
use netlab::{Lab, LabOptions};

const ECHO4: &str = "198.19.0.12:7";
const ECHO6: &str = "[fd19::12]:7";

fn counter(st: &Status, k: &str) -> u64 {
    st.counters.get(k).copied().unwrap_or(0)
}

/// A small UDP responder on the lab's internet host, port 53: answers each query with the
/// query's first two bytes (the DNS id), then "answer:" and the rest reversed.
fn dns_like_server(lab: &Lab) -> std::thread::JoinHandle<std::io::Result<()>> {
    let sock = lab
        .run_in(&lab.ns().inet, || UdpSocket::bind("198.19.0.12:53"))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        // Bounded: at most ~30 s of serving.
        for _ in 0..150 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 2 {
                continue;
            }
            let mut out = buf[..2].to_vec();
            out.extend_from_slice(b"answer:");
            out.extend(buf[2..n].iter().rev());
            sock.send_to(&out, from)?;
            if &buf[2..n] == b"quit" {
                return Ok(());
            }
        }
        Ok(())
    })
}

fn dns_query(lab: &Lab, q: &[u8]) -> Vec<u8> {
    let q = q.to_vec();
    lab.run_in(&lab.ns().laptop, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut msg = vec![0x12, 0x34];
        msg.extend_from_slice(&q);
        for _ in 0..6 {
            s.send_to(&msg, "198.19.0.12:53").unwrap();
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        Vec::new()
    })
    .unwrap()
}

fn ping(lab: &Lab, args: &[&str]) -> bool {
    lab.command(&lab.ns().laptop, "ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2"])
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

fn udp_echo(lab: &Lab, addr: &str) -> f64 {
    let a: SocketAddr = addr.parse().unwrap();
    lab.run_in(&lab.ns().laptop, || {
        client::udp_echo(a, 20, 10, Duration::from_millis(500), None)
    })
    .unwrap()
    .unwrap()
    .fraction()
}

fn get(lab: &Lab, n: u64) -> u64 {
    let a: SocketAddr = "198.19.0.11:80".parse().unwrap();
    let o = ClientOpts {
        timeout: Duration::from_secs(30),
        ..ClientOpts::default()
    };
    lab.run_in(&lab.ns().laptop, || client::http_get(a, n, &o))
        .unwrap()
        .unwrap()
        .bytes
}

/// Kernel counter of bytes received by the laptop's interface `ifname`.
fn rx_bytes(lab: &Lab, ifname: &str) -> u64 {
    let st = lab
        .exec(&lab.ns().laptop, &["ip", "-s", "-j", "link", "show", ifname])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
}

/// Malformed packets, written into the TUN through a raw socket bound to it (the kernel passes
/// them on unchanged, except that it fixes the IPv4 header's length and checksum).
fn write_malformed(lab: &Lab) {
    let host4: SocketAddr = "100.127.77.1:40000".parse().unwrap();
    let dst4: SocketAddr = "198.19.0.11:80".parse().unwrap();
    let host6: SocketAddr = "[fd6d:7062:6f6e:6400::1]:40000".parse().unwrap();
    let dst6: SocketAddr = "[fd19::11]:80".parse().unwrap();
    let syn = SegmentFields {
        seq: mpbond::tcp::SeqNum(7),
        flags: TcpFlags::SYN,
        window: 1000,
        ..Default::default()
    };
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    let mut b = vec![0u8; 2000];
    // Bad TCP checksum.
    let n = wire::write_tcp_packet(&mut b, host4, dst4, &syn, &[], &[], 1).unwrap();
    let mut p = b[..n].to_vec();
    p[36] ^= 0xff;
    pkts.push(p);
    // TCP data offset past the end.
    let mut p = b[..n].to_vec();
    p[32] = 0xf0;
    pkts.push(p);
    // A TCP option whose length runs past the options area (checksum made valid).
    let n = wire::write_tcp_packet(&mut b, host4, dst4, &syn, &[2, 44, 5, 0], &[], 1).unwrap();
    pkts.push(b[..n].to_vec());
    // UDP: bad length field, bad checksum.
    let n = udp::write_packet(
        &mut b,
        "100.127.77.1:5000".parse().unwrap(),
        ECHO4.parse().unwrap(),
        b"xyz",
    )
    .unwrap();
    let mut p = b[..n].to_vec();
    p[25] = 200;
    pkts.push(p);
    let mut p = b[..n].to_vec();
    p[n - 1] ^= 0x55;
    pkts.push(p);
    // ICMP echo with a bad checksum.
    let n = icmp::write_packet(
        &mut b,
        host4.ip(),
        "198.19.0.12".parse().unwrap(),
        &[8, 0, 0, 0, 1, 2, 0, 1, 9, 9],
    )
    .unwrap();
    let mut p = b[..n].to_vec();
    p[n - 1] ^= 1;
    pkts.push(p);
    // IPv6 whose payload length claims more than the packet holds.
    let n = wire::write_tcp_packet(&mut b, host6, dst6, &syn, &[], &[], 1).unwrap();
    let mut p = b[..n].to_vec();
    p[5] = 200;
    pkts.push(p);
    lab.run_in(&lab.ns().laptop, move || {
        let tx = mpbond::sys::rawtx::RawTx::open("mpbond0", 0).unwrap();
        for p in &pkts {
            if let Err(e) = tx.send(p) {
                println!("malformed packet not sent: {e}");
            }
        }
    })
    .unwrap();
}

#[test]
fn udp_dns_ping_handover_and_malformed_packets() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    let dns = dns_like_server(&lab);
    let rd = RunDir::new();
    let before = snapshot(&lab);
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    common::daemon::wait_usable(&lab, rd.path());

    // UDP echo, IPv4 and IPv6; a DNS-style exchange; ping both families.
    assert!(udp_echo(&lab, ECHO4) >= 0.9, "{}", d.log());
    assert!(udp_echo(&lab, ECHO6) >= 0.9);
    assert_eq!(dns_query(&lab, b"example"), b"\x12\x34answer:elpmaxe".to_vec());
    assert!(ping(&lab, &["198.19.0.12"]), "ping: {}", d.log());
    assert!(ping(&lab, &["-6", "fd19::12"]), "ping -6");
    let st = status(&lab, rd.path());
    assert!(
        counter(&st, "udp_sessions") >= 3 && counter(&st, "icmp_sessions") >= 2,
        "{:?}",
        st.counters
    );
    assert!(st.flows.iter().any(|f| f.protocol == "udp"), "{:?}", st.flows);

    // Wi-Fi link down: new UDP and TCP flows leave by cellular.
    lab.set_link(netlab::Path::Wifi, false).unwrap();
    wait_for("Wi-Fi unusable in status", Duration::from_secs(10), || {
        !status(&lab, rd.path()).interfaces[0].usable
    });
    let cell0 = rx_bytes(&lab, "wwan0");
    assert!(udp_echo(&lab, ECHO4) >= 0.9, "UDP over cellular: {}", d.log());
    assert_eq!(get(&lab, 2_000_000), 2_000_000);
    assert!(ping(&lab, &["198.19.0.12"]), "ping over cellular");
    assert!(
        rx_bytes(&lab, "wwan0") > cell0 + 1_500_000,
        "traffic did not move to wwan0"
    );
    assert_eq!(dns_query(&lab, b"cell"), b"\x12\x34answer:llec".to_vec());
    let st = status(&lab, rd.path());
    assert!(counter(&st, "failovers") >= 1, "{:?}", st.counters);

    // Wi-Fi back: new flows return to it.
    lab.set_link(netlab::Path::Wifi, true).unwrap();
    wait_for("Wi-Fi usable again", Duration::from_secs(10), || {
        status(&lab, rd.path()).interfaces[0].usable
    });
    let wifi0 = rx_bytes(&lab, "wlan0");
    let cell1 = rx_bytes(&lab, "wwan0");
    assert_eq!(get(&lab, 2_000_000), 2_000_000);
    assert!(
        rx_bytes(&lab, "wlan0") > wifi0 + 1_500_000,
        "traffic did not return to wlan0"
    );
    assert!(
        rx_bytes(&lab, "wwan0") < cell1 + 200_000,
        "traffic stayed on cellular"
    );

    // Malformed packets into the TUN: counted, dropped; the daemon keeps serving.
    write_malformed(&lab);
    wait_for("malformed packets counted", Duration::from_secs(10), || {
        let st = status(&lab, rd.path());
        [
            "dropped_tcp_checksum",
            "dropped_tcp_header",
            "dropped_tcp_options",
            "dropped_udp_length",
            "dropped_udp_checksum",
            "dropped_icmp_checksum",
            "dropped_ip_length",
        ]
        .iter()
        .all(|k| counter(&st, k) >= 1)
    });
    assert_eq!(get(&lab, 1_000_000), 1_000_000);
    assert!(udp_echo(&lab, ECHO4) >= 0.9);
    let _ = dns_query(&lab, b"quit");
    let _ = dns.join();

    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
    // The Wi-Fi link flap re-created wlan0's IPv6 routes after wwan0's: compare as sets.
    assert_eq!(
        sorted(&before),
        sorted(&snapshot(&lab)),
        "down did not restore the laptop"
    );
}

fn sorted(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}
