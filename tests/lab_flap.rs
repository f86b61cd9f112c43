//! Root-only (issue 14, flapping): `mpbond up` in a netlab laptop while three downloads from
//! the kernel MPTCP server run at once and the Wi-Fi flaps: link down and up, then blackholed
//! and back, about every second for 8 s. Every download completes byte-exact (the client
//! checks every byte) and is never reset; each one's longest stall (time between two reads
//! that brought bytes) is printed beside mpbond's own failover records.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]
#![allow(
    clippy::disallowed_methods,
    reason = "lab test: wall-clock deadlines and timings"
)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, RunDir, counter, lab_client_opts as opts, lab_with, mpbond, skip_unless_root, status, stderr,
};
use netlab::client;
use netlab::{LabOptions, Path};

const MPTCP_SERVER: &str = "198.19.0.10:80";
const FLOWS: usize = 3;

#[test]
fn flapping_wifi_under_concurrent_downloads() {
    if skip_unless_root() {
        return;
    }
    // The lab (namespaces, nft, tc) is torn down when `lab` drops, also on a failed assert:
    // nothing the flapping changed outlives the test.
    let lab = lab_with(LabOptions::default());
    let laptop = lab.ns().laptop.clone();
    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    for p in Path::ALL {
        lab.set_rate(p, Some(40_000_000)).unwrap();
        lab.set_delay(p, Duration::from_millis(20)).unwrap();
    }
    // Long enough to outlast the flapping (40 Mbit/s shared by three flows).
    let n: u64 = 20_000_000;
    let rd = RunDir::new();
    let mut d = Daemon::start(&lab, rd.path(), &[]);
    common::daemon::wait_usable(&lab, rd.path());
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let results = std::thread::scope(|s| {
        let downloads: Vec<_> = (0..FLOWS)
            .map(|_| {
                s.spawn(|| {
                    lab.run_in(&laptop, || client::http_get(server, n, &opts()))
                        .unwrap()
                })
            })
            .collect();
        // The flapper: at most 8 rounds of 1 s each, stopping early once the downloads ended;
        // every impairment it sets it lifts again before it returns.
        let flapper = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1_000));
            for round in 0..8 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let link = round % 2 == 0;
                if link {
                    lab.set_link(Path::Wifi, false).unwrap();
                } else {
                    lab.set_blackhole(Path::Wifi, true).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1_000));
                if link {
                    lab.set_link(Path::Wifi, true).unwrap();
                } else {
                    lab.set_blackhole(Path::Wifi, false).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1_000));
            }
        });
        let r: Vec<_> = downloads.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        flapper.join().unwrap();
        r
    });
    let elapsed = t0.elapsed();
    let mut longest = Duration::ZERO;
    for (k, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("download {k}: {e}\n{}", d.log()));
        assert_eq!(r.bytes, n);
        println!(
            "download {k}: {} MB in {:.1} s, longest stall {:.0} ms",
            n / 1_000_000,
            r.elapsed.as_secs_f64(),
            r.longest_stall.as_secs_f64() * 1e3
        );
        longest = longest.max(r.longest_stall);
    }
    let st = status(&lab, rd.path());
    println!(
        "{FLOWS} downloads under flapping Wi-Fi, all done in {:.1} s: longest stall {:.0} ms; \
         failovers recorded: {:?}",
        elapsed.as_secs_f64(),
        longest.as_secs_f64() * 1e3,
        st.recent_failovers
            .iter()
            .map(|f| (f.cause.clone(), f.first_resume_us.map(|u| u / 1000)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        counter(&st, "tcp_refused") + counter(&st, "tcp_timed_out"),
        0,
        "{:?}",
        st.counters
    );
    let o = mpbond(&lab, rd.path(), &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
}
