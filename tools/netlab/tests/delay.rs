//! The userspace delay relay: 20 ms and 50 ms of round-trip delay on one path, measured.

mod common;

use netlab::Path;
use std::time::Duration;

fn assert_band(what: &str, measured: Duration, configured: Duration) {
    let upper = configured + Duration::from_millis(15);
    assert!(
        measured >= configured && measured < upper,
        "{what}: measured {measured:?}, configured {configured:?} (band [{configured:?}, {upper:?}))"
    );
}

#[test]
fn wifi_delay_of_20_and_50_ms_shows_in_the_rtt_and_goes_away() {
    let Some(lab) = common::lab() else { return };
    let base = common::udp_rtt(&lab, Path::Wifi, false);
    assert!(base < Duration::from_millis(10), "undelayed rtt {base:?}");
    for ms in [20, 50] {
        let d = Duration::from_millis(ms);
        lab.set_delay(Path::Wifi, d).unwrap();
        assert_band("udp v4 wifi", common::udp_rtt(&lab, Path::Wifi, false), d);
        assert_band("udp v6 wifi", common::udp_rtt(&lab, Path::Wifi, true), d);
        assert_band("tcp handshake wifi", common::tcp_rtt(&lab, Path::Wifi, false), d);
        // The other path is untouched.
        let cell = common::udp_rtt(&lab, Path::Cell, false);
        assert!(
            cell < Duration::from_millis(10),
            "cell rtt {cell:?} with {ms} ms on wifi"
        );
    }
    assert!(lab.delay_status(Path::Wifi).unwrap().starts_with("delay 50000 "));
    lab.set_delay(Path::Wifi, Duration::ZERO).unwrap();
    let after = common::udp_rtt(&lab, Path::Wifi, false);
    assert!(
        after < Duration::from_millis(10),
        "rtt after removing the delay {after:?}"
    );
}

#[test]
fn cell_delay_applies_to_the_cell_path() {
    let Some(lab) = common::lab() else { return };
    let d = Duration::from_millis(20);
    lab.set_delay(Path::Cell, d).unwrap();
    assert_band("udp v6 cell", common::udp_rtt(&lab, Path::Cell, true), d);
    assert_band("tcp handshake cell", common::tcp_rtt(&lab, Path::Cell, true), d);
}

#[test]
fn changing_the_delay_during_a_transfer_keeps_it_byte_exact() {
    let Some(lab) = common::lab() else { return };
    let opts = netlab::client::ClientOpts {
        timeout: Duration::from_secs(60),
        ..netlab::client::ClientOpts::via("wlan0")
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut changes = 0;
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let r = lab.run_in(&lab.ns().laptop, || {
                netlab::client::http_get(netlab::Server::Tcp.addr(false), 30_000_000, &opts)
            });
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        });
        // Bridge → relay → other delay → bridge, while the download runs (at most 40 changes).
        let steps = [20, 5, 0, 50, 1, 0];
        while !done.load(std::sync::atomic::Ordering::Relaxed) && changes < 40 {
            lab.set_delay(Path::Wifi, Duration::from_millis(steps[changes % steps.len()]))
                .unwrap();
            changes += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = t.join().unwrap().unwrap();
        r.unwrap_or_else(|e| panic!("download across {changes} delay changes: {e}"));
    });
    assert!(changes >= 2, "the transfer ended before the delay could change");
}
