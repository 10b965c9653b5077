//! Cluster mode when parts fail, with real processes on loopback (the set-up is
//! [`e2e::cluster`]'s): a node killed behind HAProxy loses its devices to another node
//! through the balancer; one NATS server of three lost changes nothing; with all of NATS
//! down a node goes on serving the devices it holds, a node starts from its last known
//! registry, each says so in `/healthz`, and each follows the cluster again by itself
//! within a stated bound once NATS is back.

use std::time::{Duration, Instant};

use e2e::{
    cluster::{retried, Cluster, Nats},
    eventually, eventually_async,
    fault::Peer,
    nats, open_stream, request_stream, round_trip, ServiceConfig,
};

/// How long a device may take to come back on another node after its node is killed:
/// the balancer's health check (200 ms), the device proxy's reconnect back-off (at most
/// 2 s in these tests) and the CONNECT, with room for a loaded test machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

/// How long a node may take to follow the cluster again once NATS is back: the client's
/// reconnect delay (at most 1.25 s), a reload of the registry bucket and a resync of
/// presence (milliseconds here); measured 0.0-1.4 s (docs/SCALING.md), bounded with room
/// for a loaded test machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_devices_come_back_through_the_balancer_on_another() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let lb = nats::free_port();
    let mut cluster = Cluster::start(tmp.path(), Nats::one(tmp.path()), 2, Some(lb));
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port()).collect();
    let _haproxy = nats::start_haproxy(tmp.path(), lb, &ports);
    let echo = Peer::echo().await;
    let ca = cluster.ca();
    let map = format!("echo={}", echo.addr);
    let config = e2e::device_config(cluster.device.clone(), e2e::connector(&ca), &[&map]);
    let _device = e2e::spawn_device(config);
    let on_a = eventually(Duration::from_secs(10), || cluster.devices_on(0) == Some(1)).await;
    assert!(
        on_a,
        "dev1 never showed on node A: {}",
        cluster.nodes[0].log()
    );
    let service = cluster.service.clone();
    let via_lb = || ServiceConfig::new(service.clone(), e2e::connector(&ca), "dev1", "echo");
    let mut stream = open_stream(&via_lb())
        .await
        .expect("a stream through the balancer");
    round_trip(&mut stream, b"to node A").await;

    let killed = Instant::now();
    cluster.kill(0);
    let back = eventually(FAILOVER_BOUND, || cluster.devices_on(1) == Some(1)).await;
    assert!(
        back,
        "dev1 did not come back on node B: {}",
        cluster.nodes[1].log()
    );
    println!(
        "dev1 was back on node B {:?} after node A was killed",
        killed.elapsed()
    );
    let granted = request_stream(&via_lb())
        .await
        .expect("a stream after the failover");
    let b_url = format!("wss://localhost:{}/", ports[1]);
    assert!(granted.url.starts_with(&b_url), "{}", granted.url);
    let mut stream = open_stream(&via_lb())
        .await
        .expect("a stream after the failover");
    round_trip(&mut stream, b"to node B").await;
}

/// Waits until node `i`'s `/healthz` says `want` first; how long that took.
async fn health_becomes(cluster: &Cluster, i: usize, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let health = cluster.health(i).await;
        if health.starts_with(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "node {i}'s /healthz never said {want}: {health}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With NATS gone, a node goes on serving the devices it holds with the registry it last
/// knew and says so in `/healthz`; when NATS is back it follows the cluster again by
/// itself within [`RECOVERY_BOUND`].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_serves_its_devices_while_nats_is_down_and_recovers_by_itself() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats_port = nats::free_port();
    let mut cluster = Cluster::start(tmp.path(), Nats::on(tmp.path(), nats_port), 1, None);
    let echo = Peer::echo().await;
    let _device = cluster.device_on(0, echo.addr).await;
    let config = cluster.service_via(0);
    assert_eq!(cluster.health(0).await, "ok\n");

    cluster.nats.servers.clear(); // SIGKILL: no NATS at all
    health_becomes(&cluster, 0, "degraded").await;
    for round in 0..3 {
        let mut stream = open_stream(&config)
            .await
            .unwrap_or_else(|e| panic!("round {round} without NATS: {e}\n{}", cluster.logs()));
        round_trip(&mut stream, b"no NATS needed").await;
    }

    cluster.nats = Nats::on(tmp.path(), nats_port);
    let back = Instant::now();
    let healthy = health_becomes(&cluster, 0, "ok").await;
    cluster.cli(&["device", "disable", "dev1"]);
    let cut = eventually(RECOVERY_BOUND, || cluster.devices_on(0) == Some(0)).await;
    assert!(
        cut,
        "node A never followed the cluster again: {}",
        cluster.logs()
    );
    println!(
        "NATS back: node A healthy after {healthy:?}, had followed a change {:?} after",
        back.elapsed()
    );
    assert!(open_stream(&config).await.is_err(), "dev1 is disabled now");
}

/// A node restarted while all of NATS is down starts from its copy of the registry:
/// it serves a device it can check, refuses a stream it cannot place and says so in
/// `/healthz`; a node that never joined refuses to start; and when NATS is back the
/// restarted node joins by itself: its device shows in the cluster, and a revocation
/// from the CLI reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_starts_while_nats_is_down_and_joins_when_it_is_back() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats_port = nats::free_port();
    let mut cluster = Cluster::start(tmp.path(), Nats::on(tmp.path(), nats_port), 1, None);
    cluster.cli(&["device", "add", "dev2"]);
    assert_eq!(cluster.health(0).await, "ok\n", "{}", cluster.logs());

    cluster.kill(0);
    cluster.nats.servers.clear();
    cluster.restart(0);
    let health = cluster.health(0).await;
    assert!(
        health.starts_with("degraded: cluster never reached"),
        "{health}"
    );
    assert!(
        cluster.nodes[0]
            .log()
            .contains("starting from this node's copy of the registry"),
        "{}",
        cluster.logs()
    );
    let echo = Peer::echo().await;
    let map = format!("echo={}", echo.addr);
    let ca = cluster.ca();
    let config = e2e::device_config(cluster.device_to(0), e2e::connector(&ca), &[&map]);
    let _device = e2e::spawn_device(config);
    let served = eventually_async(Duration::from_secs(10), || async {
        match open_stream(&cluster.service_via(0)).await {
            Ok(mut stream) => {
                round_trip(&mut stream, b"from the last known registry").await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(served, "no stream to dev1 without NATS: {}", cluster.logs());
    let mut elsewhere = cluster.service_via(0);
    elsewhere.device_id = "dev2".into();
    let Err(refused) = request_stream(&elsewhere).await else {
        panic!("a stream to dev2, which no node can place without NATS");
    };
    assert!(refused.to_string().contains("unreachable"), "{refused}");
    never_joined_refuses_to_start(&cluster);

    cluster.nats = Nats::on(tmp.path(), nats_port);
    let back = Instant::now();
    let healthy = health_becomes(&cluster, 0, "ok").await;
    let shown = eventually(RECOVERY_BOUND, || cluster.devices_on(0) == Some(1)).await;
    assert!(
        shown,
        "dev1 never showed in the cluster: {}",
        cluster.logs()
    );
    let present = back.elapsed();
    cluster.cli(&["device", "disable", "dev1"]);
    let cut = eventually(Duration::from_secs(2), || cluster.devices_on(0) == Some(0)).await;
    assert!(cut, "the rejoined node kept dev1: {}", cluster.logs());
    println!(
        "NATS back: node healthy after {healthy:?}, its device in the cluster after {present:?}"
    );
}

/// A node with no copy of the registry (a new node id) while NATS is down: it exits,
/// naming itself and the cause.
fn never_joined_refuses_to_start(cluster: &Cluster) {
    let out = std::process::Command::new(e2e::bin("stream-hub"))
        .arg("--data-dir")
        .arg(&cluster.data)
        .args(["serve", "--listen", "127.0.0.1:0", "--node-id", "newcomer"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a node with nothing to serve started"
    );
    assert!(
        err.contains("newcomer") && err.contains("never joined"),
        "{err}"
    );
}

/// On a 3-server NATS cluster with the buckets replicated 3 times, losing one server
/// changes nothing users see: streams through another node and revocation go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_nats_server_of_three_changes_nothing() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(tmp.path(), Nats::three(tmp.path()), 2, None);
    let echo = Peer::echo().await;
    let _device = cluster.device_on(0, echo.addr).await;

    drop(cluster.nats.servers.remove(0)); // SIGKILL one server of three
    let config = cluster.service_via(1);
    // A client of the dead server moves to another within its reconnect delay.
    let started = Instant::now();
    let mut stream = loop {
        match open_stream(&config).await {
            Ok(stream) => break stream,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "no stream through B after losing a NATS server: {e}\n{}",
                cluster.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    round_trip(&mut stream, b"two NATS servers are enough").await;
    // The buckets' streams may be electing a new leader still: the write waits for one.
    retried(&cluster.data, &["device", "disable", "dev1"], || {});
    let started = Instant::now();
    let cut = eventually(Duration::from_millis(1500), || {
        cluster.devices_on(0) == Some(0)
    })
    .await;
    assert!(cut, "node A kept dev1: {}", cluster.nodes[0].log());
    println!(
        "with one NATS server down, revocation reached node A in {:?}",
        started.elapsed()
    );
}
