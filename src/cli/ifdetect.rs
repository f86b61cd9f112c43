//! Interface auto-detection from sysfs: Wi-Fi has `wireless/` or `phy80211/`; cellular is a
//! `wwan*` name, `DEVTYPE=wwan`, or a USB tethering / modem driver; Ethernet is any other
//! device-backed interface of type 1 (ARPHRD_ETHER).

use std::path::Path;

/// Which uplink is being looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Primary path.
    Wifi,
    /// Backup path.
    Cellular,
    /// Primary path before the Wi-Fi.
    Ethernet,
}

/// USB drivers that carry a phone tether or a modem's data link.
const CELLULAR_DRIVERS: &[&str] = &[
    "rndis_host",
    "cdc_ether",
    "cdc_ncm",
    "ipheth",
    "qmi_wwan",
    "cdc_mbim",
];

/// Returns the role of interface `name` as seen under `sys_class_net` (normally `/sys/class/net`).
pub fn classify(sys_class_net: &Path, name: &str) -> Option<Role> {
    let dir = sys_class_net.join(name);
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return Some(Role::Wifi);
    }
    // `usb*`: the name the kernel gives an RNDIS / CDC tether.
    if name.starts_with("wwan") || name.starts_with("usb") {
        return Some(Role::Cellular);
    }
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    if uevent.lines().any(|l| l.trim() == "DEVTYPE=wwan") {
        return Some(Role::Cellular);
    }
    // Virtual interfaces (veth, bridges, tunnels) have no `device`.
    let driver = std::fs::read_link(dir.join("device/driver")).ok()?;
    let driver = driver.file_name()?.to_str()?;
    if CELLULAR_DRIVERS.contains(&driver) {
        return Some(Role::Cellular);
    }
    let kind = std::fs::read_to_string(dir.join("type")).unwrap_or_default();
    (kind.trim() == "1").then_some(Role::Ethernet)
}

/// The role and priority a detected interface gets: Ethernet a primary before the Wi-Fi,
/// cellular a backup.
pub fn policy(role: Role) -> (crate::config::IfaceRole, u8) {
    use crate::config::{IfaceRole, PRIORITY_ETHERNET, PRIORITY_WIFI};
    match role {
        Role::Ethernet => (IfaceRole::Primary, PRIORITY_ETHERNET),
        Role::Wifi => (IfaceRole::Primary, PRIORITY_WIFI),
        Role::Cellular => (IfaceRole::Backup, 0),
    }
}

/// The first interface (by name, for a stable choice) with the given role.
pub fn detect(sys_class_net: &Path, role: Role) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|n| classify(sys_class_net, n) == Some(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_fake_sysfs() {
        let root = std::env::temp_dir().join(format!("mpbond-ifdetect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |n: &str| {
            let d = root.join(n);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        std::fs::create_dir_all(mk("wlp2s0").join("phy80211")).unwrap();
        std::fs::create_dir_all(mk("wlan1").join("wireless")).unwrap();
        let eth = mk("eth0");
        std::fs::write(eth.join("type"), "1\n").unwrap();
        std::fs::create_dir_all(root.join("drivers/e1000e")).unwrap();
        std::fs::create_dir_all(eth.join("device")).unwrap();
        std::os::unix::fs::symlink(root.join("drivers/e1000e"), eth.join("device/driver")).unwrap();
        std::fs::write(mk("veth0").join("type"), "1\n").unwrap();
        std::fs::write(mk("mhi0").join("uevent"), "INTERFACE=mhi0\nDEVTYPE=wwan\n").unwrap();
        let usb = mk("enx0a1b2c");
        std::fs::create_dir_all(root.join("drivers/rndis_host")).unwrap();
        std::fs::create_dir_all(usb.join("device")).unwrap();
        std::os::unix::fs::symlink(root.join("drivers/rndis_host"), usb.join("device/driver")).unwrap();

        assert_eq!(classify(&root, "wlp2s0"), Some(Role::Wifi));
        assert_eq!(classify(&root, "eth0"), Some(Role::Ethernet));
        assert_eq!(classify(&root, "veth0"), None, "no device: virtual");
        assert_eq!(classify(&root, "mhi0"), Some(Role::Cellular));
        assert_eq!(classify(&root, "enx0a1b2c"), Some(Role::Cellular), "by driver");
        assert_eq!(classify(&root, "wwan7"), Some(Role::Cellular));
        assert_eq!(classify(&root, "usb1"), Some(Role::Cellular), "by name");
        assert_eq!(detect(&root, Role::Wifi).as_deref(), Some("wlan1"));
        assert_eq!(detect(&root, Role::Cellular).as_deref(), Some("enx0a1b2c"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
