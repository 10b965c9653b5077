//! Behind a corporate proxy: every connection (MQTT over WebSocket or over TLS, the REST
//! stream request, both streaming WebSockets) goes through a real tinyproxy with HTTP CONNECT and
//! basic auth, and a wrong password is a clear error that does not show it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use device_streams::connector::proxy::{HttpProxy, ProxySettings};
use e2e::open_stream;
use e2e::{bin, device_config, expose, spawn_device, tinyproxy::Tinyproxy, System};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const CREDENTIALS: Option<(&str, &str)> = Some(("alice", "pr0xy-s3cret"));

fn via(proxy: &Tinyproxy, credentials: Option<(&str, &str)>) -> ProxySettings {
    ProxySettings::via(HttpProxy::parse(&proxy.url(credentials), "HTTPS_PROXY").unwrap())
}

async fn echo_target() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                tokio::io::copy(&mut r, &mut w).await
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_goes_through_an_authenticating_proxy() {
    let proxy = tokio::task::spawn_blocking(|| Tinyproxy::start(CREDENTIALS))
        .await
        .unwrap();
    let sys = System::start().await;
    let connector = sys.connector().with_proxy(via(&proxy, CREDENTIALS));
    let target = echo_target().await;
    let dev = sys.add_device("dev1");
    let _device = spawn_device(device_config(
        dev,
        connector.clone(),
        &[&format!("echo={target}")],
    ));
    sys.wait_connected("dev1").await;

    let mut config = sys.service_config("dev1", "echo");
    config.connector = connector;
    let mut stream = open_stream(&config).await.unwrap();
    stream.write_all(b"through the proxy").await.unwrap();
    stream.flush().await.unwrap();
    let mut got = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"through the proxy");

    // The control channel, the stream request (whose connection then carries the service
    // side's WebSocket) and the device side's WebSocket.
    let connects = proxy.connects_to(&sys.hostname());
    assert!(connects >= 3, "{connects} CONNECTs through the proxy");
}

/// A device on MQTT straight over TLS tunnels its control channel to the MQTT port through
/// the proxy too (a proxy that allows CONNECT to that port, as this one does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_goes_through_the_proxy_too() {
    let proxy = tokio::task::spawn_blocking(|| Tinyproxy::start(CREDENTIALS))
        .await
        .unwrap();
    let sys = System::start_with_mqtt(stream_hub::Limits::default()).await;
    let connector = sys.connector().with_proxy(via(&proxy, CREDENTIALS));
    let target = echo_target().await;
    let mut config = device_config(
        sys.add_device("dev1"),
        connector,
        &[&format!("echo={target}")],
    );
    config.transport = device_streams::device::MqttTransport::Tls {
        port: sys.mqtt_port(),
    };
    let _device = spawn_device(config);
    sys.wait_connected("dev1").await;
    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    e2e::round_trip(&mut stream, b"mqtt through the proxy").await;
    let connects = proxy.connects_to(&format!("localhost:{}", sys.mqtt_port()));
    assert!(
        connects >= 1,
        "no CONNECT to the MQTT port through the proxy"
    );
}

#[tokio::test]
async fn a_wrong_proxy_password_is_a_clear_error_without_the_password() {
    let proxy = tokio::task::spawn_blocking(|| Tinyproxy::start(CREDENTIALS))
        .await
        .unwrap();
    let sys = System::start().await;
    sys.add_device("dev1");
    let mut config = sys.service_config("dev1", "ssh");
    config.connector = sys
        .connector()
        .with_proxy(via(&proxy, Some(("alice", "wrong-password"))));
    let e = open_stream(&config).await.err().expect("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("dev1")
            && msg.contains(&format!("proxy 127.0.0.1:{}", proxy.port))
            && msg.contains("credentials"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-password") && !msg.contains("alice"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_binaries_take_the_proxy_from_https_proxy() {
    let proxy = tokio::task::spawn_blocking(|| Tinyproxy::start(CREDENTIALS))
        .await
        .unwrap();
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let cs = format!(
        "HostName={};DeviceId=dev1;SharedAccessKey={}",
        sys.hostname(),
        expose(&dev.key)
    );
    let mut child = Command::new(bin("device-local-proxy"))
        .args(["--map", "ssh=127.0.0.1:22", "--ca-file"])
        .arg(sys.ca_file())
        .env("DEVICE_CONNECTION_STRING", cs)
        .env("HTTPS_PROXY", proxy.url(CREDENTIALS))
        .env("NO_PROXY", "example.com,.internal")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sys.wait_connected("dev1").await;
    let connects = proxy.connects_to(&sys.hostname());
    let _ = child.kill();
    let _ = child.wait();
    assert!(connects >= 1, "the control channel bypassed the proxy");
}
