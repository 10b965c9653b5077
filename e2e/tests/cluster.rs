//! Cluster mode: real `nats-server -js` and hub nodes as real processes on loopback
//! (the set-up is [`e2e::cluster`]'s). A device connected to node A is reached through
//! node B (the stream's bytes go to A, whose streaming URL B's answer names), and a device
//! disabled from the CLI against the cluster is cut on A within 2 s; meanwhile the CLI
//! shows it online with its open stream, lists the stream (A's) and closes it through
//! `streams close`, and shows its record from A in `stream-hub logs`. A second session on
//! another node replaces the first cluster-wide. Module identities and X.509 data reach
//! every node too: a module on A streams through B and its `module disable` cuts it on A;
//! a thumbprint device added from the CLI signs in on B and a new thumbprint cuts it
//! there. The NATS traffic of a stream set-up is measured from the server's `/varz`
//! counters (docs/SCALING.md). Failures (nodes, NATS servers, all of NATS) are
//! `cluster_faults.rs`'s.

use std::time::Duration;

use device_streams::protocol::{connection_string::DeviceConnectionString, sas};
use e2e::{
    cluster::{two_nodes, Cluster, Nats},
    connector, device_config, eventually,
    fault::Peer,
    nats, open_stream, raw, request_stream, round_trip, spawn_device, ServiceConfig,
};

/// `dev1`'s entry in `device list --json`.
fn listed(cluster: &Cluster) -> serde_json::Value {
    let list = cluster.cli(&["device", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    let dev1 = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["deviceId"] == "dev1");
    dev1.cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_on_one_node_streams_through_another_and_is_revoked_from_any() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = two_nodes(tmp.path());
    assert!(
        !cluster.data.join("registry.db").exists(),
        "the registry is the cluster's"
    );
    let echo = Peer::echo().await;
    let _device = cluster.device_on(0, echo.addr).await;

    let config = cluster.service_via(1);
    let granted = request_stream(&config)
        .await
        .expect("a stream through node B");
    let a_url = format!("wss://localhost:{}/", cluster.nodes[0].port());
    assert!(
        granted.url.starts_with(&a_url),
        "the stream is node A's: {}",
        granted.url
    );
    let mut stream = open_stream(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    round_trip(&mut stream, b"through node B to node A").await;

    // The CLI against the cluster sees what the nodes do: dev1 online (presence bucket)
    // with its one open stream (node A's, asked of every node), and, once the stream
    // ends, its record from node A (the cluster's activity stream).
    let shown = cluster.cli(&["device", "show", "dev1", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["connectionState"], "Connected", "{shown}");
    assert_eq!(shown["openStreams"], 1, "{shown}");
    let dev1 = listed(&cluster);
    assert_eq!(dev1["connectionState"], "Connected", "{dev1}");
    assert_eq!(dev1["openStreams"], 1, "{dev1}");

    // `streams list` asks every node: the stream is A's; `streams close` ends it there.
    let mut rows = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(3), || {
        let out = cluster.cli(&["streams", "list", "--json"]);
        rows = serde_json::from_str(&out).unwrap_or_default();
        rows.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(found, "streams list: {rows}");
    assert_eq!(rows[0]["deviceId"], "dev1", "{rows}");
    let id = rows[0]["streamId"].as_str().unwrap().to_string();
    cluster.cli(&["streams", "close", &id]);
    let mut buf = [0u8; 1];
    let ended = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await;
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the stream outlived streams close"
    );
    drop(stream);
    let accepted = |logs: &str| {
        let logs: serde_json::Value = serde_json::from_str(logs).unwrap_or_default();
        let records = logs.as_array().cloned().unwrap_or_default();
        records.iter().any(|r| {
            r["device"] == "dev1"
                && r["stream"] == "echo"
                && r["detail"].as_str().is_some_and(|d| d.contains("admin"))
        })
    };
    let logged = eventually(Duration::from_secs(5), || {
        accepted(&cluster.cli(&["logs", "--json", "--device", "dev1"]))
    })
    .await;
    assert!(
        logged,
        "no record of the stream in the cluster's log: {}",
        cluster.cli(&["logs"])
    );
    let closed = eventually(Duration::from_secs(3), || {
        listed(&cluster)["openStreams"] == 0
    })
    .await;
    assert!(
        closed,
        "the closed stream is still counted: {}",
        listed(&cluster)
    );

    // On the fast path node B does not hold dev1: it answers `elsewhere`, and the client
    // asks Azure's way, which B forwards to A.
    let mut fast = config.clone();
    fast.warm = 1;
    let client = fast.client();
    client.warm_up();
    let warm = eventually(Duration::from_secs(5), || client.fast_path()).await;
    assert!(warm, "no warm connection to node B");
    let mut stream = client
        .open(&config.route())
        .await
        .expect("elsewhere, then REST");
    round_trip(&mut stream, b"warm on B, device on A").await;
    drop(stream);

    let started = std::time::Instant::now();
    cluster.cli(&["device", "disable", "dev1"]);
    let cut = eventually(Duration::from_secs(2), || cluster.devices_on(0) == Some(0)).await;
    assert!(cut, "node A kept dev1: {}", cluster.nodes[0].log());
    assert_eq!(listed(&cluster)["connectionState"], "Disconnected");
    let refused = open_stream(&config).await;
    assert!(refused.is_err(), "a disabled device is refused through B");
    println!("revocation took {:?} to reach node A", started.elapsed());
}

/// Azure's rule for a duplicate client id, cluster-wide: dev1 signed in on node A, then
/// again on node B, is cut on A; streams asked on A reach the new session on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_session_on_another_node_replaces_the_first_cluster_wide() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = two_nodes(tmp.path());
    let a_host = cluster.nodes[0].host().to_string();
    let resource = sas::device_resource(&a_host, "dev1");
    let expiry = sas::unix_now() + 60;
    let token = sas::sign(&resource, &cluster.device.key, expiry, None).unwrap();
    let mut first = raw::open(&connector(&cluster.ca()), &a_host).await;
    let code = raw::connect(&mut first, &a_host, "dev1", token.expose()).await;
    assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    raw::subscribe(&mut first).await;
    let on_a = eventually(Duration::from_secs(5), || cluster.devices_on(0) == Some(1)).await;
    assert!(
        on_a,
        "dev1 never showed on node A: {}",
        cluster.nodes[0].log()
    );

    let echo = Peer::echo().await;
    let _second = cluster.device_on(1, echo.addr).await;
    assert!(
        raw::closed_within(&mut first, Duration::from_secs(2)).await,
        "node A kept the first session: {}",
        cluster.nodes[0].log()
    );
    assert_eq!(cluster.devices_on(0), Some(0), "node A still holds dev1");
    let mut stream = open_stream(&cluster.service_via(0))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    round_trip(&mut stream, b"asked on A, served by the session on B").await;
}

/// Module identities are the cluster's: one added from the CLI connects to node A, is
/// streamed to through node B, and `module disable` from the CLI cuts it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_on_one_node_streams_through_another_and_its_disable_reaches_it() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = two_nodes(tmp.path());
    let module: DeviceConnectionString = cluster
        .cli(&["module", "add", "dev1", "m"])
        .trim()
        .parse()
        .unwrap();
    let echo = Peer::echo().await;
    let to_a = DeviceConnectionString {
        host: cluster.nodes[0].host(),
        ..module
    };
    let map = format!("echo={}", echo.addr);
    let _module = spawn_device(device_config(to_a, connector(&cluster.ca()), &[&map]));
    let on_a = eventually(Duration::from_secs(10), || cluster.devices_on(0) == Some(1)).await;
    assert!(
        on_a,
        "dev1/m never showed on node A: {}",
        cluster.nodes[0].log()
    );

    let mut config = cluster.service_via(1);
    config.module_id = Some("m".into());
    let mut stream = open_stream(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    round_trip(&mut stream, b"through node B to a module on node A").await;

    let started = std::time::Instant::now();
    cluster.cli(&["module", "disable", "dev1", "m"]);
    let cut = eventually(Duration::from_secs(2), || cluster.devices_on(0) == Some(0)).await;
    assert!(cut, "node A kept dev1/m: {}", cluster.nodes[0].log());
    assert!(
        open_stream(&config).await.is_err(),
        "a disabled module is refused through B"
    );
    println!(
        "module disable took {:?} to reach node A",
        started.elapsed()
    );
}

/// X.509 data is the cluster's: a thumbprint device registered from the CLI signs in on
/// node B (which never saw the CLI's write but through the bucket), and a new thumbprint
/// set from the CLI cuts it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thumbprint_device_registered_from_the_cli_connects_to_any_node() {
    use e2e::x509::{make, Spec};
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = two_nodes(tmp.path());
    let pem = make(tmp.path(), "cam", Spec::leaf("anything"), None);
    let thumb = pem.sha256();
    let add = [
        "device",
        "add",
        "cam",
        "--auth",
        "x509-thumbprint",
        "--thumbprint",
        &thumb,
    ];
    cluster.cli(&add);

    let connector = pem.connector(&cluster.ca());
    let b_host = cluster.nodes[1].host().to_string();
    let (mut io, code) = raw::connect_x509_ws(&connector, &b_host, "cam").await;
    assert_eq!(
        code,
        rumqttc::mqttbytes::v4::ConnectReturnCode::Success,
        "B: {}",
        cluster.nodes[1].log()
    );
    raw::subscribe(&mut io).await;
    let on_b = eventually(Duration::from_secs(5), || cluster.devices_on(1) == Some(1)).await;
    assert!(on_b, "cam never showed on node B");

    let other = "ab".repeat(32);
    cluster.cli(&["device", "set-thumbprint", "cam", "--thumbprint", &other]);
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(2)).await,
        "node B kept a session whose thumbprint was replaced: {}",
        cluster.nodes[1].log()
    );
}

/// The NATS traffic counters of `/varz` that the capacity model uses.
const COUNTERS: [&str; 4] = ["in_msgs", "out_msgs", "in_bytes", "out_bytes"];

fn counters(monitor: u16) -> [f64; 4] {
    let v = nats::varz(monitor);
    COUNTERS.map(|c| v[c].as_f64().unwrap_or_default())
}

/// Streams opened (and closed) through `config`'s node, one after another; the NATS
/// traffic per stream, with the idle traffic of the same span taken away.
async fn traffic_per_stream(
    monitor: u16,
    config: &ServiceConfig,
    n: usize,
    idle_per_sec: [f64; 4],
) -> [f64; 4] {
    let before = counters(monitor);
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut stream = open_stream(config).await.expect("a stream");
        round_trip(&mut stream, b"x").await;
        drop(stream);
    }
    // Each stream's activity record is copied to the cluster after it ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = counters(monitor);
    let span = start.elapsed().as_secs_f64();
    std::array::from_fn(|i| (after[i] - before[i] - idle_per_sec[i] * span) / n as f64)
}

/// What a stream costs NATS: measured with the server's own counters (`/varz`) around
/// 50 streams to a device on node A, asked through A itself and through node B. The
/// figures go into docs/SCALING.md; the bounds only catch a change that multiplies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_traffic_per_stream_set_up_is_measured() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let monitor = nats::free_port();
    let cluster = Cluster::start(tmp.path(), Nats::monitored(tmp.path(), monitor), 2, None);
    let echo = Peer::echo().await;
    let _device = cluster.device_on(0, echo.addr).await;
    let (via_a, via_b) = (cluster.service_via(0), cluster.service_via(1));
    // Warm up both paths (first requests set up subscriptions and the activity stream).
    traffic_per_stream(monitor, &via_b, 2, [0.0; 4]).await;
    traffic_per_stream(monitor, &via_a, 2, [0.0; 4]).await;

    let idle_start = (counters(monitor), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_end = counters(monitor);
    let idle_secs = idle_start.1.elapsed().as_secs_f64();
    let idle: [f64; 4] = std::array::from_fn(|i| (idle_end[i] - idle_start.0[i]) / idle_secs);

    const N: usize = 50;
    let local = traffic_per_stream(monitor, &via_a, N, idle).await;
    let forwarded = traffic_per_stream(monitor, &via_b, N, idle).await;
    let show = |what: &str, v: [f64; 4]| {
        let fields: Vec<String> = COUNTERS
            .iter()
            .zip(v)
            .map(|(c, x)| format!("{c}={x:.1}"))
            .collect();
        println!("{what}: {}", fields.join(" "));
    };
    show("idle, per second (2 nodes, 1 device)", idle);
    show("per stream asked on the device's node", local);
    show("per stream asked on another node", forwarded);
    for v in [local, forwarded] {
        assert!(v[0] < 20.0 && v[2] < 20_000.0, "{v:?}");
    }
    assert!(
        forwarded[0] > local[0],
        "forwarding costs messages: {forwarded:?} {local:?}"
    );
}
