//! Devices' MQTT straight over TLS (`serve --mqtt-listen`, Azure's 8883): an Azure-protocol
//! device and the real device proxy (`--transport mqtt`) are served exactly as over
//! WebSocket, bad input on that port ends only its own connection, and the port shares the
//! hub's limits and shutdown.

use std::{process::Stdio, time::Duration};

use device_streams::{device::MqttTransport, StreamError};
use device_streams_protocol::connection_string::DeviceConnectionString;
use e2e::{
    bin, expose,
    fault::{free_port, HubProcess, Peer},
    open_stream, raw, round_trip,
    sshd::Sshd,
    System,
};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use stream_hub::Limits;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn quick_limits() -> Limits {
    Limits {
        first_message: Duration::from_secs(1),
        tls_handshake: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// The hub still answers a well-formed request (a 404 for an unknown device).
async fn hub_still_serves(sys: &System) {
    match open_stream(&sys.service_config("ghost", "ssh")).await {
        Err(StreamError::Refused { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("the hub stopped serving: {:?}", other.map(|_| ())),
    }
}

/// A raw Azure-protocol device over the MQTT port takes a stream request, accepts it,
/// opens its side of the stream and echoes what the service sends.
#[tokio::test]
async fn a_raw_azure_device_over_mqtt_tls_accepts_and_serves_a_stream() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let dev = sys.add_device("dev1");
    let (mut io, code) = raw::connect_tls_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    assert!(sys.hub.is_connected("dev1"));

    raw::serve_one_echo(&sys, &mut io, "dev1", b"over 8883").await;
}

/// The SDK's device client with [`MqttTransport::Tls`], in process: streams work the same,
/// and it comes back after the hub restarts.
#[tokio::test]
async fn the_sdk_device_client_over_mqtt_tls_serves_streams() {
    let mut sys = System::start_with_mqtt(Limits::default()).await;
    let echo = Peer::echo().await;
    let dev = sys.add_device("dev1");
    let mut config = e2e::device_config(dev, sys.connector(), &[&format!("echo={}", echo.addr)]);
    config.transport = MqttTransport::Tls {
        port: sys.mqtt_port(),
    };
    let _device = e2e::spawn_device(config);
    sys.wait_connected("dev1").await;
    for i in 0..3 {
        let mut s = open_stream(&sys.service_config("dev1", "echo"))
            .await
            .unwrap();
        round_trip(&mut s, format!("stream {i}").as_bytes()).await;
    }
    sys.restart().await;
    sys.wait_connected("dev1").await;
    let mut s = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    round_trip(&mut s, b"after a restart").await;
}

/// The real `device-local-proxy --transport mqtt` binary carries a real ssh session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_proxy_binary_over_mqtt_tls_carries_ssh() {
    let sshd = Sshd::start();
    let sys = System::start_with_mqtt(Limits::default()).await;
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let (ca, map) = (
        sys.ca_file().display().to_string(),
        format!("ssh=127.0.0.1:{}", sshd.port),
    );
    let mqtt_port = sys.mqtt_port().to_string();
    let mut child = tokio::process::Command::new(bin("device-local-proxy"))
        .args(["--ca-file", &ca, "--map", &map])
        .args(["--transport", "mqtt", "--mqtt-port", &mqtt_port])
        .env("DEVICE_CONNECTION_STRING", &cs)
        .env("RUST_LOG", "info")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("connected to hub") {
                return line;
            }
        }
        panic!("the device proxy exited before connecting");
    });
    let line = connected.await.expect("the device connects within 10 s");
    assert!(
        line.contains(&format!("MQTT over TLS, port {mqtt_port}")),
        "{line}"
    );
    sys.wait_connected("dev1").await;

    let (addr, _service) = sys.start_service("dev1", "ssh").await;
    let cmd = sshd.ssh(addr.port(), "echo hello over mqtt");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.stdin(Stdio::null()).output().expect("ssh runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello over mqtt"
    );
}

/// Garbage after the TLS handshake, a first packet that is not CONNECT, nothing at all
/// within the first-message timeout, and no TLS at all: each closes that connection, and
/// the hub goes on serving both ports.
#[tokio::test]
async fn bad_input_on_the_mqtt_port_ends_only_that_connection() {
    let sys = System::start_with_mqtt(quick_limits()).await;
    let port = sys.mqtt_port();
    let dev = sys.add_device("dev1");
    let (mut good, code) = raw::connect_tls_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);

    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("reserved packet type", &[0xF0, 0x00]),
        ("PINGREQ before CONNECT", &[0xC0, 0x00]),
        (
            "SUBSCRIBE before CONNECT",
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00],
        ),
    ];
    for (what, bytes) in cases {
        let mut tls = sys.connector().connect("localhost", port).await.unwrap();
        tls.write_all(bytes).await.unwrap();
        tls.flush().await.unwrap();
        let mut io = device_streams_protocol::mqtt::MqttIo::new(tls, 1 << 20);
        assert!(
            raw::closed_within(&mut io, Duration::from_secs(5)).await,
            "{what}: the hub kept the connection open"
        );
    }

    // Slowloris: TLS, then half a CONNECT and nothing more; the first-message timeout (1 s) ends it.
    let mut tls = sys.connector().connect("localhost", port).await.unwrap();
    tls.write_all(&[0x10, 0x20, 0x00]).await.unwrap();
    tls.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut io = device_streams_protocol::mqtt::MqttIo::new(tls, 1 << 20);
    assert!(raw::closed_within(&mut io, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed before the timeout"
    );

    // No TLS at all: plain bytes, and silence; both end within the handshake timeout.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain.write_all(&[0x10, 0x0c, 0x00, 0x04]).await.unwrap();
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for mut tcp in [plain, silent] {
        let mut buf = [0u8; 512];
        let closed = async {
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .is_ok());
    }

    // The good session lived through all of it, and new ones still come in on both ports.
    good.write(Packet::PingReq).await.unwrap();
    assert!(matches!(good.read().await.unwrap(), Some(Packet::PingResp)));
    let dev2 = sys.add_device("dev2");
    let (_io, code) = raw::connect_tls_with_key(&sys, "dev2", &dev2.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let dev3 = sys.add_device("dev3");
    let (_ws, code) = raw::connect_with_key(&sys, "dev3", &dev3.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    hub_still_serves(&sys).await;
}

/// Wrong credentials on the MQTT port get the same CONNACK codes as over WebSocket.
#[tokio::test]
async fn the_mqtt_port_checks_credentials_like_the_websocket() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    sys.add_device("dev1");
    let other = sys.add_device("dev2");
    let (mut io, code) = raw::connect_tls_with_key(&sys, "dev1", &other.key).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    assert!(raw::closed_within(&mut io, Duration::from_secs(5)).await);
    let (_io, code) = raw::connect_tls_with_key(&sys, "ghost", &other.key).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    assert!(!sys.hub.is_connected("dev1"));
}

/// `--max-devices` and `--max-connections` count both ports together.
#[tokio::test]
async fn both_ports_share_the_device_and_connection_limits() {
    let limits = Limits {
        max_devices: 1,
        ..Limits::default()
    };
    let sys = System::start_with_mqtt(limits).await;
    let (one, two) = (sys.add_device("dev1"), sys.add_device("dev2"));
    let (_ws, code) = raw::connect_with_key(&sys, "dev1", &one.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (_tls, code) = raw::connect_tls_with_key(&sys, "dev2", &two.key).await;
    assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
    drop(sys);

    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let sys = System::start_with_mqtt(limits).await;
    let one = sys.add_device("dev1");
    let (_held, code) = raw::connect_tls_with_key(&sys, "dev1", &one.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // The main port's only place is taken by the MQTT port's session: closed at accept.
    let refused = sys.connector().connect("localhost", sys.addr.port()).await;
    assert!(
        refused.is_err(),
        "a second connection got past --max-connections 1"
    );
}

/// Shutdown ends MQTT-port sessions like the others, and the hub stops in time.
#[tokio::test]
async fn shutdown_closes_mqtt_port_sessions() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let dev = sys.add_device("dev1");
    let (mut io, code) = raw::connect_tls_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // A connection that has not sent CONNECT yet must not hold the shutdown up either.
    let _idle = sys
        .connector()
        .connect("localhost", sys.mqtt_port())
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), sys.stop()).await;
    stopped.expect("the hub stops within 5 s").expect("cleanly");
    assert!(raw::closed_within(&mut io, Duration::from_secs(2)).await);
}

/// `stream-hub serve --mqtt-listen` (the real binary): devices connect on that port; and a
/// client that sends an IP address as its TLS server name (OpenSSL does when told to, as
/// Microsoft's C SDK does with a hub dialed by its IP) makes rustls warn only at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mqtt_listen_and_no_warning_for_an_ip_as_sni() {
    let quiet = serve_and_probe(None).await;
    assert!(quiet.contains("MQTT over TLS listening"), "{quiet}");
    assert!(quiet.contains("device connected"), "{quiet}");
    assert!(
        !quiet.contains("SNI"),
        "a peer's SNI warned at info:\n{quiet}"
    );
    // The probe does reach rustls' check: at debug the line is there.
    let loud = serve_and_probe(Some("info,rustls=debug")).await;
    assert!(loud.contains("Illegal SNI"), "{loud}");
}

/// Runs the hub binary with an MQTT port, connects `dev1` there, sends an IP as SNI to both
/// ports with `openssl s_client`, stops the hub and returns its stderr.
async fn serve_and_probe(rust_log: Option<&str>) -> String {
    let hub = HubProcess::init();
    let mqtt = free_port();
    let (dir, listen, mqtt_listen) = (
        hub.dir.display().to_string(),
        hub.listen(),
        format!("127.0.0.1:{mqtt}"),
    );
    let mut cmd = tokio::process::Command::new(bin("stream-hub"));
    cmd.args(["serve", "--data-dir", &dir, "--listen", &listen])
        .args(["--mqtt-listen", &mqtt_listen, "--shutdown-grace", "1s"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let mut child = cmd.spawn().unwrap();
    let cs: DeviceConnectionString = hub.device_cs.parse().unwrap();
    let host = format!("localhost:{}", hub.port);
    let token = device_streams_protocol::sas::sign_for(
        &device_streams_protocol::sas::device_resource(&host, "dev1"),
        &cs.key,
        Duration::from_secs(60),
        None,
    )
    .unwrap();
    let tls = e2e::fault::retry("the hub's MQTT port", || async {
        hub.connector().connect("localhost", mqtt).await
    })
    .await;
    let mut io = device_streams_protocol::mqtt::MqttIo::new(tls, 4096);
    let code = raw::connect(&mut io, &host, "dev1", token.expose()).await;
    assert_eq!(code, ConnectReturnCode::Success);
    for port in [hub.port, mqtt] {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "127.0.0.1"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl runs");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE"),
            "no TLS handshake with the hub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    io.shutdown().await;
    e2e::fault::signal(&child, "TERM");
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), pipe.read_to_string(&mut stderr))
        .await
        .expect("the hub stops")
        .unwrap();
    let _ = child.wait().await;
    stderr
}
