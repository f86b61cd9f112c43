//! Random loss, blackhole and link down on one path.

mod common;

use netlab::Path;

#[test]
fn five_percent_loss_on_cell() {
    let Some(lab) = common::lab() else { return };
    lab.set_loss(Path::Cell, 5.0).unwrap();
    // Each echo crosses the router twice: it comes back with probability 0.95^2 = 0.9025
    // (binomial standard deviation over 2000 echoes: 0.0066).
    let f = common::echo_fraction(&lab, Path::Cell, false, 2000, 100);
    assert!(
        (0.875..=0.93).contains(&f),
        "echoed fraction {f} with 5% loss each way"
    );
    let drops = lab.loss_drops(Path::Cell).unwrap();
    assert!(
        (100..=300).contains(&drops),
        "router counted {drops} drops of ~3800 packets"
    );
    // Wi-Fi is clean meanwhile.
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, false, 200, 100), 1.0);
    lab.set_loss(Path::Cell, 0.0).unwrap();
    assert_eq!(common::echo_fraction(&lab, Path::Cell, false, 200, 100), 1.0);
}

#[test]
fn blackhole_stops_replies_until_lifted() {
    let Some(lab) = common::lab() else { return };
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, true, 10, 10), 1.0);
    lab.set_blackhole(Path::Wifi, true).unwrap();
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, true, 10, 10), 0.0);
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, false, 10, 10), 0.0);
    // The link stays up and the other path works.
    let link = lab
        .exec(&lab.ns().laptop, &["ip", "-br", "link", "show", "wlan0"])
        .unwrap();
    assert!(link.contains(" UP "), "{link}");
    assert_eq!(common::echo_fraction(&lab, Path::Cell, false, 10, 10), 1.0);
    lab.set_blackhole(Path::Wifi, false).unwrap();
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, true, 10, 10), 1.0);
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, false, 10, 10), 1.0);
}

#[test]
fn link_down_and_up_again() {
    let Some(lab) = common::lab() else { return };
    lab.set_link(Path::Wifi, false).unwrap();
    let err = lab
        .run_in(&lab.ns().laptop, || {
            netlab::client::udp_echo(
                netlab::Server::UdpEcho.addr(false),
                3,
                3,
                std::time::Duration::from_millis(200),
                Some("wlan0"),
            )
        })
        .unwrap();
    // Either the socket reports the network unreachable or nothing comes back.
    if let Ok(r) = err {
        assert_eq!(r.received, 0);
    }
    // Traffic without a device binding now leaves through wwan0.
    let r = lab
        .run_in(&lab.ns().laptop, || {
            netlab::client::udp_echo(
                netlab::Server::UdpEcho.addr(false),
                5,
                5,
                std::time::Duration::from_secs(1),
                None,
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(r.received, 5);
    lab.set_link(Path::Wifi, true).unwrap();
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, false, 10, 10), 1.0);
    assert_eq!(common::echo_fraction(&lab, Path::Wifi, true, 10, 10), 1.0);
    let routes = lab
        .exec(&lab.ns().laptop, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(
        routes.contains("dev wlan0") && routes.contains("metric 100"),
        "{routes}"
    );
}
