//! Root-only (issue 14, more than two interfaces): `mpbond up` in a netlab laptop with a third
//! uplink, an Ethernet `eth0` straight to `inet` (netlab's `add_uplink`), listed in the config as
//! a primary of priority 20 beside `--wifi wlan0` (primary, 10) and `--cellular wwan0`
//! (backup). A download from the kernel MPTCP server starts on the Ethernet, survives the
//! Ethernet's loss on the Wi-Fi (not on the cellular backup), then the Wi-Fi's loss on the
//! cellular, byte-exact (the client checks every byte); `status` lists the three with roles.
#![allow(clippy::unwrap_used, reason = "lab test: panics are failures")]
#![allow(clippy::print_stdout, reason = "the measured numbers and the skip notice")]
#![allow(
    clippy::disallowed_methods,
    reason = "lab test: wall-clock deadlines and timings"
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, RunDir, iface_rx, lab_client_opts as opts, lab_with, mpbond, skip_unless_root, status, stderr,
    wait_for, wait_usable,
};
use mpbond::config::IfaceRole;
use netlab::client;
use netlab::{LabOptions, Path};

const MPTCP_SERVER: &str = "198.19.0.10:80";
const RATE: u64 = 40_000_000;

#[test]
fn a_download_fails_over_from_ethernet_to_wifi_then_to_cellular() {
    if skip_unless_root() {
        return;
    }
    // The lab (namespaces, the extra veth with them) is torn down when `lab` drops.
    let lab = lab_with(LabOptions::default());
    let laptop = lab.ns().laptop.clone();
    for p in Path::ALL {
        lab.set_rate(p, Some(RATE)).unwrap();
        lab.set_delay(p, Duration::from_millis(10)).unwrap();
    }
    let eth = lab.add_uplink("eth0", 3, 50, Some(RATE)).unwrap();
    let rd = RunDir::new();
    let conf = rd.path().join("mpbond.toml");
    std::fs::write(
        &conf,
        "[[interfaces.list]]\nname = \"eth0\"\nrole = \"primary\"\npriority = 20\n",
    )
    .unwrap();
    let d = Daemon::start(&lab, rd.path(), &["--config", conf.to_str().unwrap()]);
    wait_usable(&lab, rd.path());
    let st = status(&lab, rd.path());
    let roles: Vec<(&str, IfaceRole, u8)> = st
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.role, i.priority))
        .collect();
    assert_eq!(
        roles,
        [
            ("wlan0", IfaceRole::Primary, 10),
            ("wwan0", IfaceRole::Backup, 0),
            (eth.name.as_str(), IfaceRole::Primary, 20)
        ]
    );
    let table = mpbond(&lab, rd.path(), &["status"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    for l in ["wlan0      primary", "wwan0      backup", "eth0       primary"] {
        assert!(table.contains(l), "{table}");
    }

    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    // About 2 s at the rate on each of the three interfaces.
    let n: u64 = 30_000_000;
    let rx = |name: &str| iface_rx(&status(&lab, rd.path()), name);
    let (result, marks) = std::thread::scope(|s| {
        let dl = s.spawn(|| {
            lab.run_in(&laptop, || client::http_get(server, n, &opts()))
                .unwrap()
        });
        // Phase 1: on the Ethernet. Once 4 MB came on it, the Ethernet goes.
        let t0 = Instant::now();
        let base = [rx("eth0"), rx("wlan0"), rx("wwan0")];
        wait_for("4 MB on eth0", Duration::from_secs(15), || {
            rx("eth0") > base[0] + 4_000_000
        });
        let p1 = [rx("eth0") - base[0], rx("wlan0") - base[1], rx("wwan0") - base[2]];
        lab.exec(&laptop, &["ip", "link", "set", "dev", "eth0", "down"])
            .unwrap();
        let t1 = t0.elapsed();
        // Phase 2: on the Wi-Fi. Once 4 MB came on it, the Wi-Fi goes.
        let b2 = [rx("wlan0"), rx("wwan0")];
        wait_for("4 MB on wlan0", Duration::from_secs(15), || {
            rx("wlan0") > b2[0] + 4_000_000
        });
        let p2 = [rx("wlan0") - b2[0], rx("wwan0") - b2[1]];
        lab.set_link(Path::Wifi, false).unwrap();
        let t2 = t0.elapsed();
        let r = dl.join().unwrap();
        (r, (p1, p2, t1, t2, t0.elapsed()))
    });
    let r = result.unwrap_or_else(|e| panic!("download: {e}\n{}", d.log()));
    assert_eq!(r.bytes, n);
    let (p1, p2, t1, t2, end) = marks;
    println!(
        "three interfaces, {} MB at {} Mbit/s each: Ethernet phase rx eth0/wlan0/wwan0 = {:?} B, \
         Ethernet down at {:.2} s; Wi-Fi phase rx wlan0/wwan0 = {:?} B, Wi-Fi down at {:.2} s; \
         done at {:.2} s, longest stall {:.0} ms",
        n / 1_000_000,
        RATE / 1_000_000,
        p1,
        t1.as_secs_f64(),
        p2,
        t2.as_secs_f64(),
        end.as_secs_f64(),
        r.longest_stall.as_secs_f64() * 1e3
    );
    // While the Ethernet worked the Wi-Fi and the cellular carried (almost) nothing; while the
    // Wi-Fi did, the cellular stayed a backup.
    assert!(p1[1] < 1_000_000 && p1[2] < 1_000_000, "{p1:?}");
    assert!(p2[1] < 1_000_000, "{p2:?}");
    let st = status(&lab, rd.path());
    assert!(st.failovers >= 2, "{st:?}");
    let usable: Vec<(&str, bool)> = st
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.usable))
        .collect();
    assert_eq!(usable, [("wlan0", false), ("wwan0", true), ("eth0", false)]);
    down(&lab, rd.path(), d);
}

/// `mpbond down`; the daemon exits cleanly.
fn down(lab: &netlab::Lab, rd: &std::path::Path, mut d: Daemon) {
    let o = mpbond(lab, rd, &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_exit().success(), "{}", d.log());
}

/// The interface `name` in `status`: (present, usable).
fn iface_state(lab: &netlab::Lab, rd: &std::path::Path, name: &str) -> (bool, bool) {
    let st = status(lab, rd);
    st.interfaces
        .iter()
        .find(|i| i.name == name)
        .map_or((false, false), |i| (i.index != 0, i.usable))
}

/// While a download runs on the Wi-Fi, uplink `name` (subnet `n`) is plugged in; once the
/// running flow has a usable subflow on it, the `lost` paths go down and the download must
/// finish on it, byte-exact; then it is unplugged and must be let go. Prints what it measured.
fn plug_in_mid_download(
    lab: &netlab::Lab,
    d: &Daemon,
    rd: &std::path::Path,
    name: &str,
    n: u8,
    lost: &[Path],
) {
    let laptop = lab.ns().laptop.clone();
    wait_for("wlan0 usable", Duration::from_secs(10), || {
        iface_state(lab, rd, "wlan0").1
    });
    assert_eq!(iface_state(lab, rd, name), (false, false));
    let server: SocketAddr = MPTCP_SERVER.parse().unwrap();
    // About 8 s on the Wi-Fi alone.
    let size: u64 = 40_000_000;
    let rx = |i: &str| iface_rx(&status(lab, rd), i);
    let (result, marks) = std::thread::scope(|s| {
        let dl = s.spawn(|| {
            lab.run_in(&laptop, || client::http_get(server, size, &opts()))
                .unwrap()
        });
        wait_for("2 MB on wlan0", Duration::from_secs(15), || {
            rx("wlan0") > 2_000_000
        });
        let plugged = Instant::now();
        lab.add_uplink(name, n, 300, Some(RATE)).unwrap();
        wait_for("the new uplink usable", Duration::from_secs(10), || {
            iface_state(lab, rd, name).1
        });
        let usable_after = plugged.elapsed();
        // The running flow joins it.
        wait_for("a subflow on the new uplink", Duration::from_secs(10), || {
            status(lab, rd)
                .subflows
                .iter()
                .any(|sf| sf.interface == name && sf.usable)
        });
        let joined_after = plugged.elapsed();
        let before = rx(name);
        for &p in lost {
            lab.set_link(p, false).unwrap();
        }
        let r = dl.join().unwrap();
        (r, (usable_after, joined_after, before, rx(name)))
    });
    let r = result.unwrap_or_else(|e| panic!("download: {e}\n{}", d.log()));
    assert_eq!(r.bytes, size);
    let (usable_after, joined_after, before, after) = marks;
    println!(
        "hot-plugged {name}: usable {:.0} ms after it appeared, the running flow's subflow on it \
         {:.0} ms after; after the loss of {lost:?} it received {} B; download done, longest \
         stall {:.0} ms",
        usable_after.as_secs_f64() * 1e3,
        joined_after.as_secs_f64() * 1e3,
        after - before,
        r.longest_stall.as_secs_f64() * 1e3
    );
    assert!(after - before > 5_000_000, "{before} -> {after}");
    // Unplugged: let go.
    let t = Instant::now();
    lab.remove_uplink(name).unwrap();
    wait_for("the uplink gone", Duration::from_secs(10), || {
        iface_state(lab, rd, name) == (false, false)
    });
    println!(
        "{name} let go {:.0} ms after it vanished",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn a_listed_cellular_plugged_in_after_up_is_picked_up_and_carries_the_flow_when_wifi_goes() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    lab.set_rate(Path::Wifi, Some(RATE)).unwrap();
    lab.set_delay(Path::Wifi, Duration::from_millis(10)).unwrap();
    let rd = RunDir::new();
    let conf = rd.path().join("mpbond.toml");
    // A USB tether that is not there yet.
    std::fs::write(&conf, "[[interfaces.list]]\nname = \"usb0\"\nrole = \"backup\"\n").unwrap();
    let d = Daemon::start_with(
        &lab,
        rd.path(),
        &["--wifi", "wlan0", "--config", conf.to_str().unwrap()],
        &[],
    );
    plug_in_mid_download(&lab, &d, rd.path(), "usb0", 4, &[Path::Wifi]);
    down(&lab, rd.path(), d);
}

#[test]
fn a_detected_tether_plugged_in_after_up_is_used_when_wifi_and_cellular_go() {
    if skip_unless_root() {
        return;
    }
    let lab = lab_with(LabOptions::default());
    for p in Path::ALL {
        lab.set_rate(p, Some(RATE)).unwrap();
        lab.set_delay(p, Duration::from_millis(10)).unwrap();
    }
    let rd = RunDir::new();
    // Both named, as the README's `up` line does, and no list: an interface that appears and
    // is detected (`usb1` by its name: cellular) is used too.
    let conf = rd.path().join("mpbond.toml");
    std::fs::write(&conf, "").unwrap();
    let d = Daemon::start_with(
        &lab,
        rd.path(),
        &[
            "--wifi",
            "wlan0",
            "--cellular",
            "wwan0",
            "--config",
            conf.to_str().unwrap(),
        ],
        &[],
    );
    let st = status(&lab, rd.path());
    let names: Vec<&str> = st.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["wlan0", "wwan0"]);
    plug_in_mid_download(&lab, &d, rd.path(), "usb1", 5, &[Path::Wifi, Path::Cell]);
    let st = status(&lab, rd.path());
    let i = st.interfaces.iter().find(|i| i.name == "usb1").unwrap();
    assert_eq!((i.role, i.priority), (IfaceRole::Backup, 0));
    down(&lab, rd.path(), d);
}
