//! Cluster mode: real `nats-server -js` and hub nodes as real processes on loopback.
//! A device connected to node A is reached through node B (the stream's bytes go to A,
//! whose streaming URL B's answer names), and a device disabled from the CLI against the
//! cluster is cut on A within 2 s; meanwhile the CLI shows it online, lists the stream
//! (A's) and closes it through `streams close`, and shows its record from A in
//! `stream-hub logs`. Behind HAProxy, a node killed with SIGKILL loses its
//! devices to another node, through the balancer, within a stated bound. Module
//! identities and X.509 data reach every node too: a module on A streams through B and its
//! `module disable` cuts it on A; a thumbprint device added from the CLI signs in on B and
//! a new thumbprint cuts it there. The NATS traffic of a stream set-up is measured from
//! the server's `/varz` counters (docs/SCALING.md).

use std::{path::Path, time::Duration};

use device_streams::protocol::connection_string::{
    DeviceConnectionString, HostName, ServiceConnectionString,
};
use e2e::{
    connector, device_config, fault::Peer, hub_cli, nats, open_stream, request_stream, round_trip,
    spawn_device, ServiceConfig,
};

fn host(port: u16) -> HostName {
    format!("localhost:{port}").parse().unwrap()
}

/// Which node holds how many devices, as `stream-hub cluster status` says.
fn devices_on(data: &Path, node_port: u16) -> u64 {
    let status = hub_cli(data, &["cluster", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["devices_by_node"][format!("localhost_{node_port}")]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_on_one_node_streams_through_another_and_is_revoked_from_any() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats = nats::start_nats(tmp.path());
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let data = tmp.path().join("data");
    let init = ["init", "--hostname", "localhost:1", "--cluster", &url];
    hub_cli(&data, &init);
    let device: DeviceConnectionString = hub_cli(&data, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(&data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        !data.join("registry.db").exists(),
        "the registry is the cluster's"
    );

    let (a_log, b_log) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = nats::start_node(&data, &url, &a_log, &[]);
    let b = nats::start_node(&data, &url, &b_log, &[]);
    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let to_a = DeviceConnectionString {
        host: host(a.port),
        ..device
    };
    let map = format!("echo={}", echo.addr);
    let _device = spawn_device(device_config(to_a, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || devices_on(&data, a.port) == 1).await;
    assert!(
        on_a.is_some(),
        "dev1 never showed on node A: {}",
        nats::log(&a_log)
    );

    let via_b = ServiceConnectionString {
        host: host(b.port),
        ..service
    };
    let config = ServiceConfig::new(via_b, connector(&ca), "dev1", "echo");
    let granted = request_stream(&config)
        .await
        .expect("a stream through node B");
    assert!(
        granted
            .url
            .starts_with(&format!("wss://localhost:{}/", a.port)),
        "the stream is node A's: {}",
        granted.url
    );
    let mut stream = open_stream(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", nats::log(&a_log), nats::log(&b_log)));
    round_trip(&mut stream, b"through node B to node A").await;

    // The CLI against the cluster sees what the nodes do: dev1 online (presence bucket),
    // and, once the stream ends, its record from node A (the cluster's activity stream).
    let shown = hub_cli(&data, &["device", "show", "dev1", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["connectionState"], "Connected", "{shown}");
    let list = hub_cli(&data, &["device", "list", "--json"]);
    assert!(list.contains(r#""connectionState":"Connected""#), "{list}");

    // `streams list` asks every node: the stream is A's; `streams close` ends it there.
    let mut listed = serde_json::Value::Null;
    let found = wait_for(Duration::from_secs(3), || {
        let out = hub_cli(&data, &["streams", "list", "--json"]);
        listed = serde_json::from_str(&out).unwrap_or_default();
        listed.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(found.is_some(), "streams list: {listed}");
    assert_eq!(listed[0]["deviceId"], "dev1", "{listed}");
    let id = listed[0]["streamId"].as_str().unwrap().to_string();
    hub_cli(&data, &["streams", "close", &id]);
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
    let logged = wait_for(Duration::from_secs(5), || {
        accepted(&hub_cli(&data, &["logs", "--json", "--device", "dev1"]))
    })
    .await;
    assert!(
        logged.is_some(),
        "no record of the stream in the cluster's log: {}",
        hub_cli(&data, &["logs"])
    );

    // On the fast path node B does not hold dev1: it answers `elsewhere`, and the client
    // asks Azure's way, which B forwards to A.
    let mut fast = config.clone();
    fast.warm = 1;
    let client = fast.client();
    client.warm_up();
    let warm = wait_for(Duration::from_secs(5), || client.fast_path()).await;
    assert!(warm.is_some(), "no warm connection to node B");
    let mut stream = client
        .open(&config.route())
        .await
        .expect("elsewhere, then REST");
    round_trip(&mut stream, b"warm on B, device on A").await;
    drop(stream);

    hub_cli(&data, &["device", "disable", "dev1"]);
    let cut = wait_for(Duration::from_secs(2), || devices_on(&data, a.port) == 0).await;
    assert!(cut.is_some(), "node A kept dev1: {}", nats::log(&a_log));
    let list = hub_cli(&data, &["device", "list", "--json"]);
    assert!(
        list.contains(r#""connectionState":"Disconnected""#),
        "{list}"
    );
    let refused = open_stream(&config).await;
    assert!(refused.is_err(), "a disabled device is refused through B");
    println!("revocation took {:?} to reach node A", cut.unwrap());
}

/// How long a device may take to come back on another node after its node is killed:
/// the balancer's health check (200 ms), the device proxy's reconnect back-off (at most
/// 2 s in these tests) and the CONNECT, with room for a loaded test machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_devices_come_back_through_the_balancer_on_another() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats = nats::start_nats(tmp.path());
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let data = tmp.path().join("data");
    let lb = nats::free_port();
    let name = format!("localhost:{lb}");
    hub_cli(&data, &["init", "--hostname", &name, "--cluster", &url]);
    let device: DeviceConnectionString = hub_cli(&data, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(&data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    let (a_log, b_log) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = nats::start_node(&data, &url, &a_log, std::slice::from_ref(&name));
    let b = nats::start_node(&data, &url, &b_log, std::slice::from_ref(&name));
    let (a_port, b_port) = (a.port, b.port);
    // `balance first`: every connection goes to A while it lives.
    let _haproxy = nats::start_haproxy(tmp.path(), lb, &[a_port, b_port]);

    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let map = format!("echo={}", echo.addr);
    let _device = spawn_device(device_config(device, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || devices_on(&data, a_port) == 1).await;
    assert!(
        on_a.is_some(),
        "dev1 never showed on node A: {}",
        nats::log(&a_log)
    );
    let config = ServiceConfig::new(service.clone(), connector(&ca), "dev1", "echo");
    let mut stream = open_stream(&config)
        .await
        .expect("a stream through the balancer");
    round_trip(&mut stream, b"to node A").await;

    drop(a); // SIGKILL
    let back = wait_for(FAILOVER_BOUND, || devices_on(&data, b_port) == 1).await;
    assert!(
        back.is_some(),
        "dev1 did not come back on node B: {}",
        nats::log(&b_log)
    );
    println!(
        "dev1 was back on node B {:?} after node A was killed",
        back.unwrap()
    );
    let config = ServiceConfig::new(service, connector(&ca), "dev1", "echo");
    let granted = request_stream(&config)
        .await
        .expect("a stream after the failover");
    assert!(granted
        .url
        .starts_with(&format!("wss://localhost:{b_port}/")));
    let mut stream = open_stream(&config)
        .await
        .expect("a stream after the failover");
    round_trip(&mut stream, b"to node B").await;
}

/// With NATS gone, a node goes on serving the devices it holds with the registry it last
/// knew; when NATS is back it follows the cluster again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_serves_its_devices_while_nats_is_down_and_recovers_by_itself() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats_port = nats::free_port();
    let nats = nats::start_nats_on(tmp.path(), nats_port);
    let url = format!("nats://127.0.0.1:{nats_port}");
    let data = tmp.path().join("data");
    hub_cli(
        &data,
        &["init", "--hostname", "localhost:1", "--cluster", &url],
    );
    let device: DeviceConnectionString = hub_cli(&data, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(&data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    let a_log = tmp.path().join("a.log");
    let a = nats::start_node(&data, &url, &a_log, &[]);
    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let map = format!("echo={}", echo.addr);
    let to_a = DeviceConnectionString {
        host: host(a.port),
        ..device
    };
    let _device = spawn_device(device_config(to_a, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || devices_on(&data, a.port) == 1).await;
    assert!(
        on_a.is_some(),
        "dev1 never showed on node A: {}",
        nats::log(&a_log)
    );
    let via_a = ServiceConnectionString {
        host: host(a.port),
        ..service
    };
    let config = ServiceConfig::new(via_a, connector(&ca), "dev1", "echo");

    drop(nats); // SIGKILL: no NATS at all
    for round in 0..3 {
        let mut stream = open_stream(&config)
            .await
            .unwrap_or_else(|e| panic!("round {round} without NATS: {e}\n{}", nats::log(&a_log)));
        round_trip(&mut stream, b"no NATS needed").await;
    }

    let _nats = nats::start_nats_on(tmp.path(), nats_port);
    hub_cli(&data, &["device", "disable", "dev1"]);
    let cut = wait_for(Duration::from_secs(40), || devices_on(&data, a.port) == 0).await;
    assert!(
        cut.is_some(),
        "node A never followed the cluster again: {}",
        nats::log(&a_log)
    );
    println!(
        "node A followed a change {:?} after NATS was back",
        cut.unwrap()
    );
    assert!(open_stream(&config).await.is_err(), "dev1 is disabled now");
}

/// On a 3-server NATS cluster with the buckets replicated 3 times, losing one server
/// changes nothing users see: streams through another node and revocation go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_nats_server_of_three_changes_nothing() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let (mut servers, urls) = nats::start_nats_cluster(tmp.path());
    let data = tmp.path().join("data");
    let init = [
        "init",
        "--hostname",
        "localhost:1",
        "--cluster",
        &urls,
        "--cluster-replicas",
        "3",
    ];
    // JetStream elects its meta leader a moment after the servers start.
    let mut initialised = false;
    for _ in 0..40 {
        let out = std::process::Command::new(e2e::bin("stream-hub"))
            .arg("--data-dir")
            .arg(&data)
            .args(init)
            .output()
            .unwrap();
        if out.status.success() {
            initialised = true;
            break;
        }
        let _ = std::fs::remove_dir_all(&data);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(initialised, "init --cluster never worked on the 3 servers");
    let device: DeviceConnectionString = retried(&data, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(&data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    let (a_log, b_log) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = nats::start_node(&data, &urls, &a_log, &[]);
    let b = nats::start_node(&data, &urls, &b_log, &[]);
    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let map = format!("echo={}", echo.addr);
    let to_a = DeviceConnectionString {
        host: host(a.port),
        ..device
    };
    let _device = spawn_device(device_config(to_a, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || devices_on(&data, a.port) == 1).await;
    assert!(
        on_a.is_some(),
        "dev1 never showed on node A: {}",
        nats::log(&a_log)
    );

    drop(servers.remove(0)); // SIGKILL one server of three
    let via_b = ServiceConnectionString {
        host: host(b.port),
        ..service
    };
    let config = ServiceConfig::new(via_b, connector(&ca), "dev1", "echo");
    let mut stream = None;
    for _ in 0..20 {
        // A client of the dead server moves to another within its reconnect delay.
        match open_stream(&config).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let mut stream = stream.unwrap_or_else(|| {
        panic!(
            "no stream through B after losing a NATS server: {}",
            nats::log(&b_log)
        )
    });
    round_trip(&mut stream, b"two NATS servers are enough").await;
    // The buckets' streams may be electing a new leader still: the write waits for one.
    retried(&data, &["device", "disable", "dev1"]);
    let cut = wait_for(Duration::from_secs(5), || devices_on(&data, a.port) == 0).await;
    assert!(cut.is_some(), "node A kept dev1: {}", nats::log(&a_log));
    println!(
        "with one NATS server down, revocation reached node A in {:?}",
        cut.unwrap()
    );
}

/// `stream-hub` `args`, retried for up to 10 s while a fresh NATS cluster settles (its
/// replicated streams answer a moment after they are created).
fn retried(data: &Path, args: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..40 {
        let out = std::process::Command::new(e2e::bin("stream-hub"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("stream-hub {args:?}: {last}")
}

/// A cluster of two nodes on one NATS server, with its data directory and the service's
/// connection string.
struct Two {
    data: std::path::PathBuf,
    a: e2e::daemon::Daemon,
    b: e2e::daemon::Daemon,
    a_log: std::path::PathBuf,
    b_log: std::path::PathBuf,
    _nats: e2e::daemon::Daemon,
}

fn two_nodes(tmp: &Path) -> Two {
    let nats = nats::start_nats(tmp);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let data = tmp.join("data");
    hub_cli(
        &data,
        &["init", "--hostname", "localhost:1", "--cluster", &url],
    );
    let (a_log, b_log) = (tmp.join("a.log"), tmp.join("b.log"));
    let a = nats::start_node(&data, &url, &a_log, &[]);
    let b = nats::start_node(&data, &url, &b_log, &[]);
    Two {
        data,
        a,
        b,
        a_log,
        b_log,
        _nats: nats,
    }
}

/// Module identities are the cluster's: one added from the CLI connects to node A, is
/// streamed to through node B, and `module disable` from the CLI cuts it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_on_one_node_streams_through_another_and_its_disable_reaches_it() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let two = two_nodes(tmp.path());
    let data = &two.data;
    hub_cli(data, &["device", "add", "dev1"]);
    let module: DeviceConnectionString = hub_cli(data, &["module", "add", "dev1", "m"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let to_a = DeviceConnectionString {
        host: host(two.a.port),
        ..module
    };
    let map = format!("echo={}", echo.addr);
    let _module = spawn_device(device_config(to_a, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || {
        devices_on(data, two.a.port) == 1
    })
    .await;
    assert!(
        on_a.is_some(),
        "dev1/m never showed on node A: {}",
        nats::log(&two.a_log)
    );

    let via_b = ServiceConnectionString {
        host: host(two.b.port),
        ..service
    };
    let mut config = ServiceConfig::new(via_b, connector(&ca), "dev1", "echo");
    config.module_id = Some("m".into());
    let mut stream = open_stream(&config).await.unwrap_or_else(|e| {
        let (a, b) = (nats::log(&two.a_log), nats::log(&two.b_log));
        panic!("{e}\nA: {a}\nB: {b}")
    });
    round_trip(&mut stream, b"through node B to a module on node A").await;

    hub_cli(data, &["module", "disable", "dev1", "m"]);
    let cut = wait_for(Duration::from_secs(2), || devices_on(data, two.a.port) == 0).await;
    assert!(
        cut.is_some(),
        "node A kept dev1/m: {}",
        nats::log(&two.a_log)
    );
    assert!(
        open_stream(&config).await.is_err(),
        "a disabled module is refused through B"
    );
    println!("module disable took {:?} to reach node A", cut.unwrap());
}

/// X.509 data is the cluster's: a thumbprint device registered from the CLI signs in on
/// node B (which never saw the CLI's write but through the bucket), and a new thumbprint
/// set from the CLI cuts it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thumbprint_device_registered_from_the_cli_connects_to_any_node() {
    use e2e::{
        raw,
        x509::{make, Spec},
    };
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let two = two_nodes(tmp.path());
    let data = &two.data;
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
    hub_cli(data, &add);

    let connector = pem.connector(&data.join("ca.pem"));
    let b_host = format!("localhost:{}", two.b.port);
    let (mut io, code) = raw::connect_x509_ws(&connector, &b_host, "cam").await;
    assert_eq!(
        code,
        rumqttc::mqttbytes::v4::ConnectReturnCode::Success,
        "B: {}",
        nats::log(&two.b_log)
    );
    raw::subscribe(&mut io).await;
    let on_b = wait_for(Duration::from_secs(5), || devices_on(data, two.b.port) == 1).await;
    assert!(on_b.is_some(), "cam never showed on node B");

    let other = "ab".repeat(32);
    hub_cli(
        data,
        &["device", "set-thumbprint", "cam", "--thumbprint", &other],
    );
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(2)).await,
        "node B kept a session whose thumbprint was replaced: {}",
        nats::log(&two.b_log)
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
    let nats = nats::start_nats_monitored(tmp.path(), monitor);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let data = tmp.path().join("data");
    let init = ["init", "--hostname", "localhost:1", "--cluster", &url];
    hub_cli(&data, &init);
    let device: DeviceConnectionString = hub_cli(&data, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let service: ServiceConnectionString = hub_cli(&data, &["connection-string"])
        .trim()
        .parse()
        .unwrap();
    let (a_log, b_log) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = nats::start_node(&data, &url, &a_log, &[]);
    let b = nats::start_node(&data, &url, &b_log, &[]);
    let echo = Peer::echo().await;
    let ca = data.join("ca.pem");
    let to_a = DeviceConnectionString {
        host: host(a.port),
        ..device
    };
    let map = format!("echo={}", echo.addr);
    let _device = spawn_device(device_config(to_a, connector(&ca), &[&map]));
    let on_a = wait_for(Duration::from_secs(10), || devices_on(&data, a.port) == 1).await;
    assert!(on_a.is_some(), "dev1 never showed on node A");
    let through = |port: u16| {
        let via = ServiceConnectionString {
            host: host(port),
            ..service.clone()
        };
        ServiceConfig::new(via, connector(&ca), "dev1", "echo")
    };
    let (via_a, via_b) = (through(a.port), through(b.port));
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
