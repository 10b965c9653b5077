//! No key, SAS token, signature or stream token reaches a log line, at any level,
//! through a session that exercises success and failure paths alike.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use device_streams::websocket;
use device_streams_protocol::connection_string::ServiceConnectionString;
use e2e::request_stream;
use e2e::{eventually, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_is_logged_even_at_trace_level() {
    std::env::remove_var("RUST_LOG");
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        // The binaries' own filter, at its most verbose.
        .with_env_filter(device_streams_common::logging::filter("trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let sys = System::start_with_mqtt(stream_hub::Limits::default()).await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    let dev = sys.add_device("dev1");
    let device_key = dev.key.expose().to_string();
    let _device = sys.start_device(dev, &[&format!("echo={target}")]).await;
    // A second device on the MQTT-over-TLS port: its CONNECT carries a SAS token too.
    let dev2 = sys.add_device("dev2");
    let dev2_key = dev2.key.expose().to_string();
    let mut dev2 = e2e::device_config(dev2, sys.connector(), &[&format!("echo={target}")]);
    dev2.transport = device_streams::device::MqttTransport::Tls {
        port: sys.mqtt_port(),
    };
    let _dev2 = e2e::spawn_device(dev2);
    sys.wait_connected("dev2").await;
    let config = sys.service_config("dev1", "echo");
    let service_key = config.connection.key.expose().to_string();

    // A stream that carries bytes.
    let granted = request_stream(&config).await.unwrap();
    let stream_token = granted.token.expose().to_string();
    let client = websocket::connect(&config.connector, &granted.url, Some(&granted.token), None)
        .await
        .unwrap();
    let mut client = device_streams_protocol::ws::WsStream::new(client);
    let (mut at_target, _) = echo.accept().await.unwrap();
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    at_target.read_exact(&mut buf).await.unwrap();
    // A replayed token, and a service with a wrong key.
    let _ = websocket::connect(&config.connector, &granted.url, Some(&granted.token), None).await;
    let mut wrong = sys.service_config("dev1", "echo");
    wrong.connection = format!(
        "HostName={};SharedAccessKeyName=service;SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleQ==",
        sys.hostname()
    )
    .parse::<ServiceConnectionString>()
    .unwrap();
    assert!(request_stream(&wrong).await.is_err());
    drop(client);
    // The stream's end is logged last: its activity record.
    let ended = eventually(Duration::from_secs(5), || {
        String::from_utf8_lossy(&capture.0.lock().unwrap()).contains("stream accepted")
    });
    assert!(ended.await, "the stream's end was not logged");

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.len() > 1000,
        "expected a trace-level log, got {} bytes",
        logs.len()
    );
    for (what, secret) in [
        ("device key", device_key.as_str()),
        ("MQTT-port device key", dev2_key.as_str()),
        ("service key", service_key.as_str()),
        ("stream token", stream_token.as_str()),
        ("wrong key", "d3Jvbmcta2V5LXdyb25nLWtleQ=="),
        ("a SAS token", "SharedAccessSignature"),
        ("a SAS signature", "sig="),
        ("a bearer token", "Bearer "),
    ] {
        let line = logs
            .lines()
            .find(|l| l.contains(secret))
            .unwrap_or_default();
        assert!(!logs.contains(secret), "{what} appears in the logs: {line}");
    }
}
