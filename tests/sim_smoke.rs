use std::net::SocketAddr;
use std::time::Duration;

use mpbond::sim::transfer::{TransferSpec, run};
use mpbond::sim::{Link, Network};

#[test]
fn smoke() {
    let a: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let b: SocketAddr = "198.18.0.2:80".parse().unwrap();
    let mut net = Network::new(1);
    net.add_duplex(
        a.ip(),
        b.ip(),
        vec![
            Link::Delay(Duration::from_millis(10)),
            Link::Rate {
                bytes_per_sec: 10_000_000,
                queue_bytes: 200_000,
            },
        ],
    );
    let mut spec = TransferSpec::new(a, b);
    spec.a_to_b = 2_000_000;
    spec.b_to_a = 2_000_000;

    let r = run(&mut net, &spec);
    println!("{r:#?}");
    assert!(r.completed, "{:?}", r.error);
}
