//! The hub as an operator runs it: revocation, key rotation, policies, the registry API,
//! the activity log, limits and metrics — each against a real running hub.

use std::{process::Stdio, time::Duration};

use device_streams::websocket;
use device_streams::StreamError;
use device_streams_protocol::connection_string::{DeviceConnectionString, ServiceConnectionString};
use e2e::{
    eventually, eventually_async, fault::echo_system, https, hub_cli, raw, round_trip,
    service_token, SshTunnel, System,
};
use e2e::{open_stream, request_stream};
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use stream_hub::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_of(e: &StreamError) -> u16 {
    match e {
        StreamError::Refused { status, .. } => status.as_u16(),
        other => panic!("expected the hub to refuse, got: {other}"),
    }
}

/// An echo server on loopback: what it reads, it writes back.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_device_cuts_its_live_ssh_session_and_refuses_it() {
    let t = SshTunnel::start().await;
    let mut ssh = t.ssh("echo connected; sleep 60");
    let mut child = ssh
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || t.sys.hub.open_streams() == 1).await);

    // The CLI, another process, writes the shared database; the running hub notices.
    let dir = t.sys.data().path;
    hub_cli(&dir, &["device", "disable", "dev1"]);
    let cut = eventually(Duration::from_secs(5), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    if !cut {
        let _ = child.kill();
    }
    assert!(cut, "the ssh session outlived the device's revocation");
    assert!(!t.sys.hub.is_connected("dev1"));

    // Its reconnects are refused, and so are stream requests for it.
    let refused = "stream_hub_auth_failures_total{kind=\"device\"}";
    let reconnect_refused = eventually_async(Duration::from_secs(10), || async {
        get_metrics(&t.sys).await.contains(refused)
    });
    assert!(
        reconnect_refused.await,
        "the device's reconnect was not refused"
    );
    assert!(!t.sys.hub.is_connected("dev1"));
    let e = open_stream(&t.sys.service_config("dev1", "ssh"))
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(&e), 403);
    assert!(e.to_string().contains("device 'dev1' is disabled"), "{e}");

    // Enabled again, the device proxy finds its way back on its own.
    hub_cli(&dir, &["device", "enable", "dev1"]);
    t.sys.wait_connected("dev1").await;
    let out = t.ssh("echo back").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_its_secondary_key_survives_rotation_of_the_primary() {
    let sys = System::start().await;
    let echo = echo_server().await;
    let dir = sys.data().path;
    hub_cli(&dir, &["device", "add", "dev1"]);
    let secondary: DeviceConnectionString = hub_cli(
        &dir,
        &["device", "connection-string", "dev1", "--secondary"],
    )
    .trim()
    .parse()
    .unwrap();
    let old_primary: DeviceConnectionString =
        hub_cli(&dir, &["device", "connection-string", "dev1"])
            .trim()
            .parse()
            .unwrap();
    let _device = sys
        .start_device(secondary.clone(), &[&format!("echo={echo}")])
        .await;

    let changes = registry_changes(&sys).await;
    let new_primary: DeviceConnectionString = hub_cli(&dir, &["device", "rotate-key", "dev1"])
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_primary.key, old_primary.key);
    let applied = eventually_async(Duration::from_secs(5), || async {
        registry_changes(&sys).await > changes
    });
    assert!(applied.await, "the hub did not see the rotation");
    assert!(sys.hub.is_connected("dev1"));
    echo_once(&sys.service_config("dev1", "echo")).await;

    // The old primary key no longer opens a control channel; the new one does.
    for (key, want) in [
        (&old_primary.key, ConnectReturnCode::BadUserNamePassword),
        (&new_primary.key, ConnectReturnCode::Success),
    ] {
        assert_eq!(raw::connect_with_key(&sys, "dev1", key).await.1, want);
    }
}

/// Rotating the key a device signed in with cuts its control session at once: a stolen
/// key stops working for sessions already open, not only for new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_a_device_signed_in_with_cuts_its_session() {
    let sys = System::start().await;
    let dir = sys.data().path;
    let primary: DeviceConnectionString = hub_cli(&dir, &["device", "add", "dev1"])
        .trim()
        .parse()
        .unwrap();
    let (mut io, code) = raw::connect_with_key(&sys, "dev1", &primary.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    assert!(sys.hub.is_connected("dev1"));

    hub_cli(&dir, &["device", "rotate-key", "dev1"]);
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(2)).await,
        "the session on the rotated key is still open"
    );
    assert!(eventually(Duration::from_secs(1), || !sys.hub.is_connected("dev1")).await);
}

/// A device's control session ends when its SAS token expires, so a token cannot keep a
/// session going past its `se`; a token living longer than the hub allows is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_session_ends_when_its_token_expires() {
    let sys = System::start_with(Limits {
        max_token_lifetime: Duration::from_secs(3600),
        ..Limits::default()
    })
    .await;
    let dev = sys.add_device("dev1");
    let now = device_streams_protocol::sas::unix_now();
    let (_io, code) = raw::connect_until(&sys, "dev1", &dev.key, now + 7200).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (_io, code) = raw::connect_until(&sys, "dev1", &dev.key, u64::MAX).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    // `se` is in whole seconds: this token has between 1 and 2 s left.
    let now = device_streams_protocol::sas::unix_now();
    let (mut io, code) = raw::connect_until(&sys, "dev1", &dev.key, now + 2).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    assert!(sys.hub.is_connected("dev1"));
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(3)).await,
        "the session outlived its token"
    );
    assert!(eventually(Duration::from_secs(1), || !sys.hub.is_connected("dev1")).await);
}

#[tokio::test]
async fn policies_grant_exactly_their_rights() {
    let sys = System::start().await;
    let dir = sys.data().path;
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &["ssh=127.0.0.1:9"]).await;
    let reader: ServiceConnectionString = hub_cli(
        &dir,
        &["policy", "add", "reader", "--rights", "registry-read"],
    )
    .trim()
    .parse()
    .unwrap();
    let policies = hub_cli(&dir, &["policy", "list"]);
    assert!(policies.contains("reader\tregistry-read"), "{policies}");

    // Streams need service-connect.
    let mut config = sys.service_config("dev1", "ssh");
    config.connection = reader.clone();
    let e = open_stream(&config).await.err().unwrap();
    assert_eq!(status_of(&e), 401);
    assert!(
        e.to_string().contains("lacks the service-connect right"),
        "{e}"
    );

    // The registry API: reading with registry-read, writing needs registry-write.
    let host = sys.hostname();
    let read = service_token(&host, "reader", &reader.key);
    let (status, body) = https(
        &sys.connector(),
        &host,
        "GET",
        "/devices/dev1",
        Some(&read),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["deviceId"].as_str(), json["connectionState"].as_str()),
        (Some("dev1"), Some("Connected"))
    );
    let disable = r#"{"deviceId":"dev1","status":"disabled"}"#;
    let (status, body) = https(
        &sys.connector(),
        &host,
        "PUT",
        "/devices/dev1",
        Some(&read),
        disable,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("registry-write"), "{body}");
    let (status, _) = https(&sys.connector(), &host, "GET", "/devices/dev1", None, "").await;
    assert_eq!(status, 401);

    // With registry-write: create, disable (cuts the live device at once), delete.
    let admin = sys.service_connection();
    let write = service_token(&host, &admin.policy, &admin.key);
    let (status, body) = https(
        &sys.connector(),
        &host,
        "PUT",
        "/devices/dev2",
        Some(&write),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(sys.hub.registry.device("dev2").unwrap().is_some());
    let (status, body) = https(
        &sys.connector(),
        &host,
        "PUT",
        "/devices/dev1",
        Some(&write),
        disable,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!sys.hub.is_connected("dev1"));
    let (status, _) = https(
        &sys.connector(),
        &host,
        "DELETE",
        "/devices/dev2",
        Some(&write),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = https(
        &sys.connector(),
        &host,
        "GET",
        "/devices/dev2",
        Some(&read),
        "",
    )
    .await;
    assert_eq!(status, 404);

    hub_cli(&dir, &["policy", "delete", "reader"]);
    let e = open_stream(&config).await.err().unwrap();
    assert!(
        e.to_string().contains("policy 'reader' does not exist"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_log_records_accepted_rejected_and_timed_out_requests() {
    let sys = System::start().await;
    let echo = echo_server().await;
    let dev = sys.add_device("dev1");
    let device = sys
        .start_device(dev.clone(), &[&format!("echo={echo}")])
        .await;

    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    stream.write_all(&[7u8; 1000]).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; 1000];
    stream.read_exact(&mut buf).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    assert!(open_stream(&sys.service_config("dev1", "nope"))
        .await
        .is_err());
    device.stop().await.unwrap();

    // A device that never answers: the request times out.
    let (mut io, code) = raw::connect_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    let mut config = sys.service_config("dev1", "echo");
    config.response_timeout = Duration::from_secs(1);
    assert_eq!(status_of(&open_stream(&config).await.err().unwrap()), 504);

    let dir = sys.data().path;
    let mut entries = Vec::new();
    let found = eventually(Duration::from_secs(10), || {
        let out = hub_cli(
            &dir,
            &["logs", "--device", "dev1", "--since", "5m", "--json"],
        );
        entries = serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap();
        entries.len() >= 3
    })
    .await;
    assert!(found, "activity log: {entries:?}");
    let results: Vec<&str> = entries
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["accepted", "rejected", "timeout"], "{entries:?}");
    let accepted = &entries[0];
    assert_eq!(accepted["category"], "DeviceStreams");
    assert_eq!(
        (accepted["stream"].as_str(), accepted["policy"].as_str()),
        (Some("echo"), Some("service"))
    );
    assert_eq!(accepted["bytesToDevice"], 1000);
    assert_eq!(accepted["bytesFromDevice"], 1000);
    assert!(
        accepted["setupMs"].as_f64().unwrap() > 0.0 && accepted["durationMs"].as_f64().is_some()
    );
    let text = hub_cli(&dir, &["logs", "--device", "dev1"]);
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[tokio::test]
async fn limits_answer_with_their_documented_errors() {
    let limits = Limits {
        max_streams_per_device: 1,
        max_new_streams_per_second: 2,
        max_devices: 1,
        ..Limits::default()
    };
    let (sys, _echo, _device) = echo_system(limits).await;

    let config = sys.service_config("dev1", "echo");
    let _held = open_stream(&config).await.unwrap();
    let e = open_stream(&config).await.err().unwrap();
    assert_eq!(status_of(&e), 429);
    assert!(
        e.to_string()
            .contains("device 'dev1' already has its maximum of 1 streams"),
        "{e}"
    );
    let e = open_stream(&config).await.err().unwrap(); // the third request this second
    assert_eq!(status_of(&e), 429);
    assert!(e.to_string().contains("new streams per second"), "{e}");

    // One connected device is the limit: a second is refused at CONNECT.
    let dev2 = sys.add_device("dev2");
    let (_io, code) = raw::connect_with_key(&sys, "dev2", &dev2.key).await;
    assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
}

#[tokio::test]
async fn idle_streams_are_closed_when_an_idle_timeout_is_set() {
    let limits = Limits {
        stream_idle_timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    };
    let (sys, _echo, _device) = echo_system(limits).await;
    let config = sys.service_config("dev1", "echo");
    let granted = request_stream(&config).await.unwrap();
    let ws = websocket::connect(&config.connector, &granted.url, Some(&granted.token), None)
        .await
        .unwrap();
    let mut stream = device_streams_protocol::ws::WsStream::new(ws);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle stream stayed open");
    assert!(eventually(Duration::from_secs(5), || sys.hub.open_streams() == 0).await);
}

#[tokio::test]
async fn metrics_and_health_on_the_main_port_and_an_admin_listener() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    stream.write_all(b"x").await.unwrap();
    stream.flush().await.unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.unwrap();
    drop(stream);
    assert!(open_stream(&sys.service_config("ghost", "echo"))
        .await
        .is_err());

    let (status, health) = https(
        &sys.connector(),
        &sys.hostname(),
        "GET",
        "/healthz",
        None,
        "",
    )
    .await;
    assert_eq!((status, health.trim()), (200, "ok"));
    let want = [
        "stream_hub_connected_devices 1",
        "stream_hub_streams_total{result=\"device-offline\"} 1",
        "stream_hub_stream_setup_seconds_bucket",
        "stream_hub_relayed_bytes_total{direction=\"to_device\"}",
    ];
    // The accepted stream is counted once its relay has ended.
    let accepted = "stream_hub_streams_total{result=\"accepted\"} 1";
    let counted = eventually_async(Duration::from_secs(3), || async {
        get_metrics(&sys).await.contains(accepted)
    });
    assert!(counted.await, "{accepted}");
    let metrics = get_metrics(&sys).await;
    for line in want {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }

    // The same on a plain-HTTP admin listener.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(stream_hub::admin::run(admin, sys.hub.clone()));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("stream_hub_connected_devices 1"),
        "{resp}"
    );
}

#[tokio::test]
async fn an_upgraded_connection_counts_against_the_connection_limit() {
    let sys = System::start_with(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    let dev = sys.add_device("dev1");
    let (_io, code) = raw::connect_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // The device's WebSocket holds the only place: the next connection is turned away.
    let e = open_stream(&sys.service_config("dev1", "ssh"))
        .await
        .err()
        .unwrap();
    assert!(!matches!(e, StreamError::Refused { .. }), "{e}");
    drop(_io);
    assert!(eventually(Duration::from_secs(5), || !sys.hub.is_connected("dev1")).await);
    let e = open_stream(&sys.service_config("dev1", "ssh"))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not connected"), "{e}");
}

/// `GET /metrics` on the hub's main port.
/// How many registry changes the hub has applied (`stream_hub_registry_changes_total`).
async fn registry_changes(sys: &System) -> u64 {
    let metrics = get_metrics(sys).await;
    let line = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stream_hub_registry_changes_total "));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

async fn get_metrics(sys: &System) -> String {
    sys.metrics().await
}

/// The value of an unlabelled counter in a `/metrics` text exposition.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

#[tokio::test]
async fn a_stream_request_s_connection_carries_the_stream_too() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    let accepted = || async { counter(&get_metrics(&sys).await, "stream_hub_connections_total") };
    let before = accepted().await;
    echo_once(&sys.service_config("dev1", "echo")).await;
    // The service side's request and WebSocket on one connection, the device's WebSocket
    // on another, and the metrics request that reads the count.
    assert_eq!(accepted().await - before, 3);
}

/// Opens a stream through `config` and proves it works with one echo.
async fn echo_once(config: &e2e::ServiceConfig) {
    let mut stream = open_stream(config).await.unwrap();
    round_trip(&mut stream, b"ping").await;
}

#[tokio::test]
async fn a_spare_connection_starts_the_next_stream_and_a_closed_one_is_never_used() {
    let limits = Limits {
        first_message: Duration::from_millis(300),
        ..Limits::default()
    };
    let (sys, _echo, _device) = echo_system(limits).await;
    let mut config = sys.service_config("dev1", "echo");
    config.connector = config.connector.with_spares();
    let spares = config.connector.spares().unwrap().clone();

    echo_once(&config).await;
    assert!(eventually(Duration::from_secs(5), || spares.is_ready()).await);
    echo_once(&config).await;
    assert_eq!(spares.used(), 1, "the second stream started on the spare");

    // The hub closes a connection that sends no request within its first-message timeout:
    // such a spare is dropped and the stream dials its own.
    assert!(eventually(Duration::from_secs(5), || spares.is_ready()).await);
    assert!(eventually(Duration::from_secs(5), || !spares.is_usable()).await);
    echo_once(&config).await;
    assert_eq!(spares.used(), 1, "a closed spare was taken");
}

#[tokio::test]
async fn with_streaming_on_another_host_the_request_s_connection_is_the_next_spare() {
    let sys = System::start_streaming_elsewhere().await;
    let echo = echo_server().await;
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &[&format!("echo={echo}")]).await;
    let mut config = sys.service_config("dev1", "echo");
    config.connector = config.connector.with_spares();
    let spares = config.connector.spares().unwrap().clone();

    let mut stream = open_stream(&config).await.unwrap();
    // Ready at once (a spare dialed afterwards could not be: this test's runtime has one
    // thread, and nothing has yielded to the dialing task yet).
    assert!(spares.is_ready(), "the request's connection was kept");
    round_trip(&mut stream, b"ping").await;
    echo_once(&config).await;
    assert_eq!(spares.used(), 1, "the second request went out on it");
}

/// Whether `stream`'s next read ends (end of file or error) within `limit`.
async fn ends_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_policy_is_deleted_or_its_key_rotated() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    let dir = sys.data().path;
    let service = sys.service_config("dev1", "echo");
    let mut ops = sys.service_config("dev1", "echo");
    ops.connection = hub_cli(
        &dir,
        &["policy", "add", "ops", "--rights", "service-connect"],
    )
    .trim()
    .parse::<ServiceConnectionString>()
    .unwrap();
    let mut on_service = open_stream(&service).await.unwrap();
    let mut on_ops = open_stream(&ops).await.unwrap();
    round_trip(&mut on_service, b"service").await;
    round_trip(&mut on_ops, b"ops").await;

    // Rotating the secondary key leaves streams signed with the primary alone...
    let changes = registry_changes(&sys).await;
    hub_cli(&dir, &["policy", "rotate-key", "service", "--secondary"]);
    let seen = eventually_async(Duration::from_secs(5), || async {
        registry_changes(&sys).await > changes
    });
    assert!(seen.await, "the hub did not see the rotation");
    round_trip(&mut on_service, b"still open").await;
    // ...rotating the primary ends them, and only them.
    hub_cli(&dir, &["policy", "rotate-key", "service"]);
    assert!(
        ends_within(&mut on_service, Duration::from_secs(2)).await,
        "a stream outlived the rotation of the key that granted it"
    );
    round_trip(&mut on_ops, b"ops still open").await;

    hub_cli(&dir, &["policy", "delete", "ops"]);
    assert!(
        ends_within(&mut on_ops, Duration::from_secs(2)).await,
        "a stream outlived its policy"
    );
    let logs = hub_cli(&dir, &["logs"]);
    assert!(
        logs.contains("its policy was deleted or its key replaced"),
        "{logs}"
    );
}

#[tokio::test]
async fn registry_list_reads_devices_without_their_keys() {
    let sys = System::start().await;
    let dir = sys.data().path;
    let dev = sys.add_device("dev1");
    let key = dev.key.expose().to_string();
    let host = sys.hostname();
    let get = |policy: &str, key: &device_streams_protocol::Secret, path: &'static str| {
        let token = service_token(&host, policy, key);
        let (connector, host) = (sys.connector(), host.clone());
        async move { https(&connector, &host, "GET", path, Some(&token), "").await }
    };
    let lister: ServiceConnectionString = hub_cli(
        &dir,
        &["policy", "add", "lister", "--rights", "registry-list"],
    )
    .trim()
    .parse()
    .unwrap();
    let reader: ServiceConnectionString = hub_cli(
        &dir,
        &["policy", "add", "reader", "--rights", "registry-read"],
    )
    .trim()
    .parse()
    .unwrap();
    for path in ["/devices", "/devices/dev1"] {
        let (status, body) = get("lister", &lister.key, path).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("dev1") && !body.contains(&key),
            "{path}: {body}"
        );
        assert!(!body.contains("primaryKey"), "{path}: {body}");
        let (status, body) = get("reader", &reader.key, path).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&key),
            "registry-read shows keys, as Azure's does: {body}"
        );
    }
    // registry-list changes nothing.
    let token = service_token(&host, "lister", &lister.key);
    let disable = r#"{"deviceId":"dev1","status":"disabled"}"#;
    let (status, body) = https(
        &sys.connector(),
        &host,
        "PUT",
        "/devices/dev1",
        Some(&token),
        disable,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}
