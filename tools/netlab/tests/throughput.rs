//! Benchmark (prints numbers, asserts only byte-exactness): single-flow plain TCP goodput from
//! the laptop to `inet` through the Wi-Fi path, without delay (kernel bridge in the wire) and
//! with 20 ms (userspace relay). Size from `NETLAB_BENCH_BYTES` (default 50 MB).

mod common;

use netlab::client::{self, ClientOpts};
use netlab::{Path, Server};
use std::time::Duration;

#[test]
fn tcp_goodput_through_the_lab() {
    let Some(lab) = common::lab() else { return };
    let n: u64 = std::env::var("NETLAB_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000_000);
    let opts = ClientOpts {
        timeout: Duration::from_secs(120),
        ..ClientOpts::via("wlan0")
    };
    for delay in [Duration::ZERO, Duration::from_millis(20)] {
        lab.set_delay(Path::Wifi, delay).unwrap();
        let (up, down) = lab
            .run_in(&lab.ns().laptop, || {
                (
                    client::http_post(Server::Tcp.addr(false), n, &opts).unwrap(),
                    client::http_get(Server::Tcp.addr(false), n, &opts).unwrap(),
                )
            })
            .unwrap();
        println!(
            "bench: {n} bytes, wifi rtt +{delay:?}: upload {:.0} Mbit/s, download {:.0} Mbit/s",
            up.mbit_per_s(),
            down.mbit_per_s()
        );
    }
    println!("bench: relay {}", lab.delay_status(Path::Wifi).unwrap());
}
