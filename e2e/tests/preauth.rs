//! What connections that have not authenticated may take: a place each among at most
//! `--max-unauthenticated-per-address` from their address (and a hub-wide cap), so a host
//! flooding the hub with idle or half-open connections does not keep devices and
//! services from other addresses out, and authenticated connections never count.

use std::time::Duration;

use e2e::{
    connect_from,
    fault::{self, eventually_async},
    round_trip,
};
use stream_hub::Limits;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// Whether the hub closed `tcp` (end of file or reset) within a second.
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// The value of a gauge or counter line `name` in a `/metrics` text.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_is_capped_and_others_still_get_in() {
    let limits = Limits {
        max_unauthenticated_per_address: 20,
        ..Limits::default()
    };
    let (sys, _echo, _device) = fault::echo_system(limits).await;
    let config = sys.service_config("dev1", "echo");
    // The device's control session authenticated: the one unauthenticated connection is
    // this scrape's own (`/metrics` asks for no credential).
    let metrics = sys.metrics().await;
    let gauge = "stream_hub_unauthenticated_connections";
    assert_eq!(value(&metrics, gauge), Some(1.0), "{metrics}");

    // 127.0.0.2 opens connections that never say anything: 20 are held, the next closed.
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(connect_from("127.0.0.2", sys.addr).await);
    }
    let full = eventually_async(Duration::from_secs(5), || async {
        value(&sys.metrics().await, gauge) >= Some(21.0)
    });
    assert!(full.await, "the flood's connections were not counted");
    let mut over = connect_from("127.0.0.2", sys.addr).await;
    assert!(
        closed(&mut over).await,
        "a 21st unauthenticated connection was kept"
    );
    assert!(sys.metrics().await.contains(
        "stream_hub_connections_refused_total{reason=\"unauthenticated_per_address\"} 1"
    ));

    // Meanwhile another address opens streams as usual, and the device stays connected.
    for _ in 0..5 {
        let mut stream = e2e::open_stream(&config)
            .await
            .expect("a stream during the flood");
        round_trip(&mut stream, b"still served").await;
    }
    assert!(sys.hub.is_connected("dev1"));

    // The flood's places come back when it goes.
    drop(flood);
    let back = eventually_async(Duration::from_secs(5), || async {
        value(&sys.metrics().await, gauge) <= Some(1.0)
    });
    assert!(back.await, "the flood's places were not given back");
    let mut again = connect_from("127.0.0.2", sys.addr).await;
    assert!(!closed(&mut again).await, "the address stayed locked out");
}
