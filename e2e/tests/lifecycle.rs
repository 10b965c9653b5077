//! A stream's life around the processes: SIGTERM (stop taking work, let open streams
//! finish within the grace period, exit 0), SAS token renewal under open streams, and
//! end-of-stream when one side shuts down only its write half.

use std::{sync::atomic::Ordering, time::Duration};

use device_streams::StreamError;
use e2e::open_stream;
use e2e::{
    bin, device_config, expose,
    fault::{self, eventually, exit_code, free_port, retry, HubProcess, Peer},
    round_trip, spawn_device, System,
};
use stream_hub::Limits;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

const EXIT: Duration = Duration::from_secs(10);

/// SIGTERM, then: `listen` stops accepting, the open connection or stream `open` still
/// carries bytes, and once it is closed the process exits 0 (before its long grace period).
async fn stops_gracefully<S: AsyncRead + AsyncWrite + Unpin>(
    mut child: tokio::process::Child,
    listen: &str,
    mut open: S,
) {
    fault::signal(&child, "TERM");
    assert!(
        eventually(EXIT, || std::net::TcpStream::connect(listen).is_err()).await,
        "{listen} still accepts connections after SIGTERM"
    );
    round_trip(&mut open, b"during the grace period").await;
    assert_eq!(
        exit_code(&mut child, Duration::from_millis(300)).await,
        None
    );
    drop(open);
    assert_eq!(exit_code(&mut child, EXIT).await, Some(Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_device_proxy_refuses_new_streams_finishes_open_ones_exits_0() {
    let sys = System::start().await;
    let echo = Peer::echo().await;
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let map = format!("echo={}", echo.addr);
    let mut child = fault::spawn(
        &bin("device-local-proxy"),
        &["--ca-file", &ca, "--map", &map, "--shutdown-grace", "20s"],
        &[("DEVICE_CONNECTION_STRING", cs.clone())],
    );
    sys.wait_connected("dev1").await;
    let config = sys.service_config("dev1", "echo");
    let mut open = open_stream(&config).await.unwrap();
    round_trip(&mut open, b"before").await;

    fault::signal(&child, "TERM");
    // It leaves the hub at once: new requests find it offline.
    assert!(eventually(EXIT, || !sys.hub.is_connected("dev1")).await);
    match open_stream(&config).await {
        Err(StreamError::Refused { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("expected 404 after SIGTERM, got {:?}", other.map(|_| ())),
    }
    // The open stream still carries bytes during the grace period ...
    round_trip(&mut open, b"during the grace period").await;
    assert_eq!(
        exit_code(&mut child, Duration::from_millis(300)).await,
        None
    );
    // ... and once it ends, the process exits 0 without waiting out the grace period.
    drop(open);
    assert_eq!(exit_code(&mut child, EXIT).await, Some(Some(0)));

    // A stream that outlives the grace period is cut, and the exit is still clean.
    let mut child = fault::spawn(
        &bin("device-local-proxy"),
        &["--ca-file", &ca, "--map", &map, "--shutdown-grace", "1s"],
        &[("DEVICE_CONNECTION_STRING", cs)],
    );
    sys.wait_connected("dev1").await;
    let mut open = open_stream(&config).await.unwrap();
    round_trip(&mut open, b"held open").await;
    fault::signal(&child, "TERM");
    assert_eq!(exit_code(&mut child, EXIT).await, Some(Some(0)));
    assert!(eventually(EXIT, || echo.open.load(Ordering::SeqCst) == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_service_proxy_stops_listening_finishes_open_streams_exits_0() {
    let (sys, _echo, _device) = fault::echo_system(Limits::default()).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ca = sys.ca_file().display().to_string();
    let child = fault::spawn(
        &bin("service-local-proxy"),
        &[
            "--device-id",
            "dev1",
            "--stream-name",
            "echo",
            "--ca-file",
            &ca,
            "--listen",
            &listen,
            "--shutdown-grace",
            "20s",
        ],
        &[(
            "SERVICE_CONNECTION_STRING",
            expose(&sys.service_connection().to_secret_string()),
        )],
    );
    let mut open = retry("the service proxy's listener", || {
        TcpStream::connect(&listen)
    })
    .await;
    round_trip(&mut open, b"before").await;

    stops_gracefully(child, &listen, open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hub_stops_accepting_finishes_open_streams_exits_0() {
    let hub = HubProcess::init();
    let child = hub.serve("20s");
    let echo = Peer::echo().await;
    let _device = spawn_device(device_config(
        hub.device_cs.parse().unwrap(),
        hub.connector(),
        &[&format!("echo={}", echo.addr)],
    ));
    let config = hub.service_config("echo");
    let mut open = retry("a stream through the hub process", || open_stream(&config)).await;
    round_trip(&mut open, b"before").await;

    stops_gracefully(child, &hub.listen(), open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_renewal_reconnects_the_control_channel_without_dropping_streams() {
    let (sys, fwd) = System::start_behind_forwarder().await;
    let echo = Peer::echo().await;
    let mut dev = sys.add_device("dev1");
    // The control channel goes through a forwarder that counts its connections;
    // streams go straight to the hub's streaming endpoint.
    dev.host = format!("localhost:{}", fwd.addr.port()).parse().unwrap();
    let mut config = device_config(dev, sys.connector(), &[&format!("echo={}", echo.addr)]);
    config.token_ttl = Duration::from_secs(2); // renewed every 1.6 s
    let _device = spawn_device(config);
    sys.wait_connected("dev1").await;
    let service = sys.service_config("dev1", "echo");
    let mut open = open_stream(&service).await.unwrap();
    round_trip(&mut open, b"before renewal").await;
    assert!(
        fwd.wait_accepted(3, Duration::from_secs(8)).await,
        "the device proxy did not renew its token by reconnecting"
    );
    // Two renewals later the old stream is untouched and new streams are served.
    round_trip(&mut open, b"after renewal").await;
    // A request landing in the instant between two sessions finds the device offline.
    let mut fresh = retry("a new stream after renewal", || open_stream(&service)).await;
    round_trip(&mut fresh, b"new stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_request_still_gets_the_full_response() {
    let sys = System::start().await;
    let peer = Peer::answer_after_eof(4 << 20).await;
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &[&format!("rr={}", peer.addr)]).await;
    let (addr, _service) = sys.start_service("dev1", "rr").await;
    for request_len in [0usize, 1, 200 << 10] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let request = e2e::random_bytes(request_len);
        client.write_all(&request).await.unwrap();
        client.shutdown().await.unwrap(); // shutdown(SHUT_WR): the request is complete
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut reply))
            .await
            .expect("the reply ends")
            .unwrap();
        let want = fault::reply_for(&request, 4 << 20);
        assert_eq!(
            reply.len(),
            want.len(),
            "reply to a {request_len}-byte request"
        );
        assert!(reply == want, "reply bytes differ");
    }
    assert!(eventually(EXIT, || sys.hub.open_streams() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_without_half_close_still_ends_the_stream_with_close() {
    use device_streams::websocket;
    let (sys, echo, _device) = fault::echo_system(Limits::default()).await;
    // An Azure-style service client: no half-close offered, Close on its end of file.
    let config = sys.service_config("dev1", "echo");
    let granted = e2e::request_stream(&config).await.unwrap();
    let raw = websocket::connect(&config.connector, &granted.url, Some(&granted.token), None)
        .await
        .unwrap();
    let mut s = device_streams_protocol::ws::WsStream::new(raw);
    round_trip(&mut s, b"azure-style").await;
    s.shutdown().await.unwrap();
    assert!(
        eventually(EXIT, || echo.open.load(Ordering::SeqCst) == 0
            && sys.hub.open_streams() == 0)
        .await,
        "a Close from a side without half-close must end the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_device_proxy_rereads_its_map_and_keeps_open_streams() {
    let sys = System::start().await;
    let (first, second) = (Peer::echo().await, Peer::echo().await);
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("device.toml");
    let write_map = |map: &[String]| {
        let entries: Vec<String> = map.iter().map(|m| format!("\"{m}\"")).collect();
        std::fs::write(&file, format!("map = [{}]\n", entries.join(", "))).unwrap();
    };
    write_map(&[format!("echo={}", first.addr)]);
    let config_arg = file.display().to_string();
    let child = fault::spawn(
        &bin("device-local-proxy"),
        &["--ca-file", &ca, "--config", &config_arg],
        &[("DEVICE_CONNECTION_STRING", cs)],
    );
    sys.wait_connected("dev1").await;
    let echo = sys.service_config("dev1", "echo");
    let other = sys.service_config("dev1", "other");
    let mut open = open_stream(&echo).await.unwrap();
    round_trip(&mut open, b"before").await;
    assert!(
        open_stream(&other).await.is_err(),
        "'other' is not mapped yet"
    );

    // A broken file is refused and the old map stays.
    std::fs::write(&file, "map = [\"no-port-here\"]\n").unwrap();
    fault::signal(&child, "HUP");
    // The new map: 'other' is served, 'echo' no longer; the open stream is untouched.
    write_map(&[format!("other={}", second.addr)]);
    fault::signal(&child, "HUP");
    let mut served = retry("a stream to the newly mapped name", || open_stream(&other)).await;
    round_trip(&mut served, b"new target").await;
    assert!(open_stream(&echo).await.is_err(), "'echo' is still mapped");
    round_trip(&mut open, b"after the reload").await;
    assert!(
        sys.hub.is_connected("dev1"),
        "the reload dropped the control channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_hub_puts_new_limits_from_its_config_file_in_force() {
    let hub = HubProcess::init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.toml");
    std::fs::write(&file, "max-streams-per-device = 1\n").unwrap();
    let config_arg = file.display().to_string();
    let serving = hub.serve_with(&["--config", &config_arg]);
    let echo = Peer::echo().await;
    let ca = hub.dir.join("ca.pem").display().to_string();
    let map = format!("echo={}", echo.addr);
    let _device = fault::spawn(
        &bin("device-local-proxy"),
        &["--ca-file", &ca, "--map", &map],
        &[("DEVICE_CONNECTION_STRING", hub.device_cs.clone())],
    );
    let service = hub.service_config("echo");
    let mut first = retry("the first stream", || open_stream(&service)).await;
    round_trip(&mut first, b"one").await;
    match open_stream(&service).await {
        Err(StreamError::Refused { status, .. }) => assert_eq!(status.as_u16(), 429),
        other => panic!(
            "expected 429 at one stream per device, got {:?}",
            other.map(|_| ())
        ),
    }

    // A file that does not parse keeps the limits; a good one puts its values in force.
    std::fs::write(&file, "max-streams-per-device = \"many\"\n").unwrap();
    fault::signal(&serving, "HUP");
    std::fs::write(&file, "max-streams-per-device = 2\n").unwrap();
    fault::signal(&serving, "HUP");
    let mut second = retry("a second stream after the reload", || open_stream(&service)).await;
    round_trip(&mut second, b"two").await;
    round_trip(&mut first, b"the first is untouched").await;
}
