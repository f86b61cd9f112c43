//! P1 with iperf3 (Debian's package, nobody's code here): one TCP flow for a fixed time, from the
//! laptop namespace to `iperf3 -s` in `inet` (upload) and back (`-R`, download). iperf3 moves
//! bytes with `send`/`recv` on 128 KiB buffers and reports its own CPU use, so a baseline it
//! measures is limited by the path, not by the tool: the notes give iperf3's CPU share of each
//! kernel run to show it.

use netlab::Lab;
use std::process::{Child, Stdio};
use std::time::Duration;

/// The iperf3 server's address (the plain TCP server's, another port).
const SERVER: &str = "198.19.0.11";
const PORT: &str = "5201";

/// An `iperf3 -s` running in `inet` until dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts the server and waits until it accepts connections (at most 5 s).
    pub fn start(lab: &Lab) -> Result<Server, String> {
        let child = lab
            .command(&lab.ns().inet, "iperf3")
            .args(["-s", "-p", PORT])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start iperf3 -s (is iperf3 installed?): {e}"))?;
        let s = Server { child };
        for _ in 0..50 {
            let up = lab
                .exec(&lab.ns().inet, &["ss", "-Htln", "sport", "=", ":5201"])
                .is_ok_and(|o| !o.trim().is_empty());
            if up {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("iperf3 -s did not start listening".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One iperf3 run's result.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Goodput at the receiver, Mbit/s.
    pub mbit_per_s: f64,
    /// Bytes received.
    pub bytes: u64,
    /// iperf3's CPU use on the laptop (client) and on the server, percent of one core.
    pub cpu: (f64, f64),
}

/// One flow for `secs` seconds: the laptop sends (`download` false) or receives.
pub fn run(lab: &Lab, secs: u64, download: bool) -> Result<Run, String> {
    let t = secs.to_string();
    let mut args = vec!["-c", SERVER, "-p", PORT, "-t", &t, "-J"];
    if download {
        args.push("-R");
    }
    let out = lab
        .command(&lab.ns().laptop, "iperf3")
        .args(&args)
        .output()
        .map_err(|e| format!("run iperf3: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("iperf3 output: {e} ({})", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let recv = &end["sum_received"];
    let cpu = &end["cpu_utilization_percent"];
    Ok(Run {
        mbit_per_s: recv["bits_per_second"]
            .as_f64()
            .ok_or("iperf3: no receiver rate")?
            / 1e6,
        bytes: recv["bytes"].as_u64().ok_or("iperf3: no receiver bytes")?,
        cpu: (
            cpu["host_total"].as_f64().unwrap_or(f64::NAN),
            cpu["remote_total"].as_f64().unwrap_or(f64::NAN),
        ),
    })
}
