//! Hand-made packets put on a link as they are, for tests of how a receiver treats bad input
//! (wrong checksums and lengths, bad options, fragments): an `AF_PACKET` socket sends the bytes
//! without the kernel's IP layer fixing anything. On an Ethernet interface (the lab's veths) each
//! frame needs its Ethernet header ([`ethernet_frame`]); on a TUN device a frame is the bare IP
//! packet. Runs in the calling thread's network namespace (see [`crate::Lab::run_in`]).

use std::io;
use std::time::{Duration, Instant};

/// Sends every frame in `frames` on interface `ifname`, in order. Waits (at most 2 s in all)
/// while the device queue is full. Returns how many were sent.
pub fn send_frames(ifname: &str, frames: &[Vec<u8>]) -> io::Result<usize> {
    let sock = crate::sys::PacketSocket::open(ifname)?;
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent = 0;
    while sent < refs.len() && Instant::now() < deadline {
        let n = sock.send_batch(&refs[sent..])?;
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        sent += n;
    }
    Ok(sent)
}

/// `packet` (IPv4 or IPv6, by its version nibble) behind an Ethernet header from `src` to `dst`.
pub fn ethernet_frame(dst: [u8; 6], src: [u8; 6], packet: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if packet.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(14 + packet.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

/// Parses a MAC address as `ip link` prints it (`aa:bb:cc:dd:ee:ff`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_ethertype_of_their_packet() {
        let f = ethernet_frame([1; 6], [2; 6], &[0x45, 0]);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&ethernet_frame([1; 6], [2; 6], &[0x60])[12..14], &[0x86, 0xdd]);
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(parse_mac("0a:1b"), None);
    }
}
