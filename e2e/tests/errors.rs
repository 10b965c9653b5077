//! What users see when something is wrong: each failure is one clear error naming the
//! device and the cause, and the hub keeps serving everyone else.

use std::time::Duration;

use device_streams::websocket::{self, WsError};
use device_streams::StreamError;
use device_streams_protocol::{
    connection_string::ServiceConnectionString,
    sas::{self, device_resource},
};
use e2e::{bin, expose, raw, System};
use e2e::{open_stream, request_stream};
use rumqttc::mqttbytes::v4::ConnectReturnCode;

async fn open_err(config: &e2e::ServiceConfig) -> StreamError {
    match open_stream(config).await {
        Ok(_) => panic!("stream to {} unexpectedly opened", config.device_id),
        Err(e) => e,
    }
}

fn refused_status(e: &StreamError) -> u16 {
    match e {
        StreamError::Refused { status, .. } => status.as_u16(),
        other => panic!("expected the hub to refuse, got: {other}"),
    }
}

#[tokio::test]
async fn wrong_service_key_is_401_naming_the_device() {
    let sys = System::start().await;
    sys.add_device("dev1");
    let mut config = sys.service_config("dev1", "ssh");
    let wrong: ServiceConnectionString = format!(
        "HostName={};SharedAccessKeyName=service;SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleQ==",
        sys.hostname()
    )
    .parse()
    .unwrap();
    config.connection = wrong;
    let e = open_err(&config).await;
    assert_eq!(refused_status(&e), 401);
    let msg = e.to_string();
    assert!(
        msg.contains("dev1") && msg.contains("signature does not match"),
        "{msg}"
    );
}

#[tokio::test]
async fn expired_service_token_is_401() {
    let sys = System::start().await;
    sys.add_device("dev1");
    let mut config = sys.service_config("dev1", "ssh");
    config.token_ttl = Duration::ZERO;
    let e = open_err(&config).await;
    assert_eq!(refused_status(&e), 401);
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn unknown_device_is_404() {
    let sys = System::start().await;
    let e = open_err(&sys.service_config("ghost", "ssh")).await;
    assert_eq!(refused_status(&e), 404);
    assert!(
        e.to_string().contains("device 'ghost' is not registered"),
        "{e}"
    );
}

#[tokio::test]
async fn registered_but_offline_device_is_404_not_connected() {
    let sys = System::start().await;
    sys.add_device("dev1");
    let e = open_err(&sys.service_config("dev1", "ssh")).await;
    assert_eq!(refused_status(&e), 404);
    assert!(
        e.to_string().contains("device 'dev1' is not connected"),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_stream_name_is_rejected_by_the_device() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &["ssh=127.0.0.1:22"]).await;
    let e = open_err(&sys.service_config("dev1", "x")).await;
    assert!(matches!(e, StreamError::Rejected { .. }), "{e}");
    assert!(
        e.to_string().starts_with("device dev1 rejected stream 'x'"),
        "{e}"
    );
}

#[tokio::test]
async fn target_that_refuses_connections_rejects_the_stream() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _device = sys
        .start_device(dev, &[&format!("ssh=127.0.0.1:{closed}")])
        .await;
    let e = open_err(&sys.service_config("dev1", "ssh")).await;
    assert!(
        e.to_string()
            .starts_with("device dev1 rejected stream 'ssh'"),
        "{e}"
    );
}

#[tokio::test]
async fn device_that_never_answers_times_out_with_504() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let (mut io, code) = raw::connect_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    let mut config = sys.service_config("dev1", "ssh");
    config.response_timeout = Duration::from_secs(1);
    let e = open_err(&config).await;
    assert_eq!(refused_status(&e), 504);
    assert!(
        e.to_string().contains("device 'dev1' did not answer"),
        "{e}"
    );
    assert_eq!(
        sys.hub.open_streams(),
        0,
        "the abandoned stream must not hold a slot"
    );
}

#[tokio::test]
async fn unreachable_hub_and_untrusted_certificate_are_named() {
    let sys = System::start().await;
    let mut config = sys.service_config("dev1", "ssh");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.connection.host = format!("localhost:{closed}").parse().unwrap();
    let e = open_err(&config).await;
    assert!(matches!(e, StreamError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("cannot reach the hub for device dev1"),
        "{e}"
    );
    // What users see is the whole chain (`{:#}`): each cause once.
    let shown = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(shown.matches("refused").count(), 1, "{shown}");

    let other = System::start().await; // a different CA
    let mut config = sys.service_config("dev1", "ssh");
    config.connector = other.connector();
    let e = open_err(&config).await;
    let msg = e.to_string();
    assert!(
        msg.contains("TLS handshake") && msg.contains("dev1"),
        "{msg}"
    );
}

#[tokio::test]
async fn device_credentials_are_checked_on_connect() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let host = sys.hostname();
    let resource = device_resource(&host, "dev1");
    let wrong_key = device_streams_protocol::Secret::new("d3Jvbmcta2V5LXdyb25nLWtleQ==");
    let cases = [
        (
            sas::sign_for(&resource, &wrong_key, Duration::from_secs(60), None).unwrap(),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            sas::sign(&resource, &dev.key, sas::unix_now() - 5, None).unwrap(),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (token, want) in cases {
        let mut io = raw::open(&sys.connector(), &host).await;
        assert_eq!(
            raw::connect(&mut io, &host, "dev1", token.expose()).await,
            want
        );
    }
    let good = sas::sign_for(&resource, &dev.key, Duration::from_secs(60), None).unwrap();
    let mut io = raw::open(&sys.connector(), &host).await;
    assert_eq!(
        raw::connect(&mut io, &host, "ghost", good.expose()).await,
        ConnectReturnCode::BadUserNamePassword
    );
    sys.hub.registry.set_enabled("dev1", false).unwrap();
    let mut io = raw::open(&sys.connector(), &host).await;
    assert_eq!(
        raw::connect(&mut io, &host, "dev1", good.expose()).await,
        ConnectReturnCode::NotAuthorized
    );
    assert!(!sys.hub.is_connected("dev1"));
}

#[tokio::test]
async fn stream_tokens_work_once() {
    let sys = System::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &[&format!("echo={target}")]).await;
    let config = sys.service_config("dev1", "echo");
    let granted = request_stream(&config).await.unwrap();
    let first = websocket::connect(&config.connector, &granted.url, Some(&granted.token), None)
        .await
        .unwrap();
    match websocket::connect(&config.connector, &granted.url, Some(&granted.token), None).await {
        // Spent while the stream is pending; gone with it once paired.
        Err(WsError::Refused {
            status: 401, body, ..
        }) => {
            assert!(
                body.contains("already been used") || body.contains("no such stream"),
                "{body}"
            )
        }
        other => panic!("replayed token: expected 401, got {:?}", other.map(|_| ())),
    }
    let bogus = device_streams_protocol::Secret::new("not-a-token");
    match websocket::connect(&config.connector, &granted.url, Some(&bogus), None).await {
        Err(WsError::Refused { status: 401, .. }) => {}
        other => panic!("bogus token: expected 401, got {:?}", other.map(|_| ())),
    }
    match websocket::connect(&config.connector, &granted.url, None, None).await {
        Err(WsError::Refused { status: 401, .. }) => {}
        other => panic!("no token: expected 401, got {:?}", other.map(|_| ())),
    }
    // The refused attempts did not disturb the stream the token opened.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = device_streams_protocol::ws::WsStream::new(first);
    stream.write_all(b"still here").await.unwrap();
    stream.flush().await.unwrap();
    let (mut at_target, _) = listener.accept().await.unwrap();
    let mut buf = [0u8; 10];
    at_target.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

#[tokio::test]
async fn binary_prints_one_line_naming_device_and_cause() {
    let sys = System::start().await;
    let cs = expose(&sys.service_connection().to_secret_string());
    let out = tokio::process::Command::new(bin("service-local-proxy"))
        .args(["--stdio", "--device-id", "ghost", "--ca-file"])
        .arg(sys.ca_file())
        .env("SERVICE_CONNECTION_STRING", &cs)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ghost") && stderr.contains("not registered"),
        "{stderr}"
    );

    // A malformed connection string is a usage error (2) that does not echo the key.
    let out = tokio::process::Command::new(bin("service-local-proxy"))
        .args([
            "--device-id",
            "dev1",
            "--connection-string",
            "HostName=h;SharedAccessKey=c2VjcmV0LXNlY3JldA==",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SharedAccessKeyName") && !stderr.contains("c2VjcmV0LXNlY3JldA"),
        "{stderr}"
    );
}

#[tokio::test]
async fn garbage_on_the_wire_does_not_disturb_the_hub() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sys = System::start().await;
    // Plain bytes where TLS is expected.
    let mut tcp = tokio::net::TcpStream::connect(sys.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    // Malformed HTTP inside TLS.
    let mut tls = sys
        .connector()
        .connect("localhost", sys.addr.port())
        .await
        .unwrap();
    tls.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Malformed MQTT: a first packet that is not CONNECT.
    let mut io = raw::open(&sys.connector(), &sys.hostname()).await;
    io.write(rumqttc::mqttbytes::v4::Packet::PingReq)
        .await
        .unwrap();
    assert!(matches!(io.read().await, Ok(None) | Err(_)));
    // The hub still serves a well-formed request.
    let e = open_err(&sys.service_config("ghost", "ssh")).await;
    assert_eq!(refused_status(&e), 404);
}
