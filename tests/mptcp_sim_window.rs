//! A receive window's worth of out-of-order segments, each with its own DSS mapping (as the
//! Linux kernel sends without TSO): one lost segment early in a large flight must not make the
//! receiver give up on the subflow. Found against the Linux kernel
//! (tests/mptcp_kernel_interop.rs): with pending mappings capped at 1,024, a hole followed by
//! ~1.5 MB of in-window data reset the subflow as "bad DSS mapping".

mod common;

use common::mpsim::{quiet, spec};
use mpbond::config::Mode;
use mpbond::mptcp::Event;
use mpbond::sim::Link;

#[test]
fn a_window_of_out_of_order_mappings_is_held() {
    // 100 MB/s, 20 ms one way: a 4 MB window is in flight; drop one packet at 200 ms.
    let mut s = spec(5, Mode::Handover, 0, 16 << 20);
    let fat = vec![
        Link::Delay(common::mpsim::ms(20)),
        Link::Rate {
            bytes_per_sec: 100_000_000,
            queue_bytes: 8 << 20,
        },
    ];
    s.wifi = fat.clone();
    s.cell = fat;
    s.wifi.push(Link::Loss(0.0005));
    let r = mpbond::sim::mptcp::run(&s);
    let resets: Vec<Event> = r
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::SubflowReset { .. } | Event::Fallback { .. }))
        .copied()
        .collect();
    assert!(resets.is_empty(), "{resets:?}; {:?}", quiet(&r.client_events));
    assert!(r.completed, "{:?}", r.error);
}
