//! The tbf rate limit caps a path's goodput in both directions.

mod common;

use netlab::client::{self, ClientOpts};
use netlab::{Path, Server};
use std::time::Duration;

#[test]
fn ten_mbit_caps_the_cell_path_both_ways() {
    let Some(lab) = common::lab() else { return };
    lab.set_rate(Path::Cell, Some(10_000_000)).unwrap();
    let opts = ClientOpts {
        timeout: Duration::from_secs(20),
        ..ClientOpts::via("wwan0")
    };
    let (down, up) = lab
        .run_in(&lab.ns().laptop, || {
            (
                client::http_get(Server::Tcp.addr(false), 2_000_000, &opts).unwrap(),
                client::http_post(Server::Tcp.addr(true), 2_000_000, &opts).unwrap(),
            )
        })
        .unwrap();
    println!(
        "10mbit cell: download {:.1} Mbit/s, upload {:.1} Mbit/s",
        down.mbit_per_s(),
        up.mbit_per_s()
    );
    // The token bucket starts full (burst 125 kB), so allow a little over the rate.
    assert!(
        down.mbit_per_s() < 11.5,
        "download {:.1} Mbit/s through 10mbit",
        down.mbit_per_s()
    );
    assert!(
        up.mbit_per_s() < 11.5,
        "upload {:.1} Mbit/s through 10mbit",
        up.mbit_per_s()
    );
    lab.set_rate(Path::Cell, None).unwrap();
    let qdisc = lab
        .exec(
            lab.ns().router(Path::Cell),
            &["tc", "qdisc", "show", "dev", netlab::ROUTER_LAN],
        )
        .unwrap();
    assert!(!qdisc.contains("tbf"), "{qdisc}");
}
