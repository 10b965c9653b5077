//! What users see when something is wrong: each failure is one clear error naming the
//! device and the cause, and the hub keeps serving everyone else.

use std::time::Duration;

use device_streams::websocket::{self, WsError};
use device_streams::StreamError;
use device_streams_protocol::{
    connection_string::ServiceConnectionString,
    sas::{self, device_resource},
    wire,
};
use e2e::{bin, expose, raw, System};
use e2e::{open_stream, request_stream};
use rumqttc::mqttbytes::{
    v4::{ConnectReturnCode, Packet, Publish},
    QoS,
};

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

/// The activity log's detail for `device`'s one rejected request, once it is written.
async fn rejected_detail(sys: &System, device: &str) -> String {
    let path = sys.hub.registry.path().to_path_buf();
    let mut detail = String::new();
    let found = e2e::eventually(Duration::from_secs(5), || {
        let entries = stream_hub::activity::query(&path, Some(device), 0).unwrap();
        match entries.iter().find(|e| e.result == "rejected") {
            Some(e) => {
                detail = e.detail.clone();
                true
            }
            None => false,
        }
    })
    .await;
    assert!(found, "no rejected record for {device}");
    detail
}

#[tokio::test]
async fn unknown_stream_name_is_rejected_by_the_device() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &["ssh=127.0.0.1:22", "rdp=127.0.0.1:3389"])
        .await;
    let e = open_err(&sys.service_config("dev1", "x")).await;
    // The device's own reason reaches the admin, and what else it maps does not.
    match &e {
        StreamError::Rejected { reason, .. } => assert_eq!(
            reason.as_deref(),
            Some("no target is mapped for stream 'x'")
        ),
        other => panic!("expected a rejection, got: {other}"),
    }
    assert_eq!(
        e.to_string(),
        "device dev1 rejected stream 'x': no target is mapped for stream 'x'"
    );
    assert_eq!(
        rejected_detail(&sys, "dev1").await,
        "device 'dev1' rejected stream 'x' (status 400): no target is mapped for stream 'x'"
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
    let want =
        format!("device dev1 rejected stream 'ssh': cannot connect to target 127.0.0.1:{closed}: ");
    assert!(e.to_string().starts_with(&want), "{e}");
    assert!(rejected_detail(&sys, "dev1")
        .await
        .contains(&format!("cannot connect to target 127.0.0.1:{closed}")),);
}

#[tokio::test]
async fn a_device_at_its_stream_limit_says_so() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = target.local_addr().unwrap();
    let _target = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = target.accept().await {
            held.push(tcp);
        }
    });
    let mut config = e2e::device_config(dev, sys.connector(), &[&format!("ssh={addr}")]);
    config.max_streams = 1;
    let _device = e2e::spawn_device(config);
    sys.wait_connected("dev1").await;
    let _open = open_stream(&sys.service_config("dev1", "ssh"))
        .await
        .unwrap();
    let e = open_err(&sys.service_config("dev1", "ssh")).await;
    assert_eq!(
        e.to_string(),
        "device dev1 rejected stream 'ssh': the device is at its --max-streams limit (1 open)"
    );
}

/// Asks `dev1` for a stream, answers as a raw device rejecting it with `payload`, and
/// returns what the service was told.
async fn reject_next(sys: &System, io: &mut raw::Io, payload: Vec<u8>) -> StreamError {
    let config = sys.service_config("dev1", "ssh");
    let request = tokio::spawn(async move { request_stream(&config).await.map(|_| ()) });
    let topic = match io.read().await.unwrap() {
        Some(Packet::Publish(p)) => p.topic,
        _ => panic!("the device got no stream request"),
    };
    let req = wire::parse_stream_request(&topic).unwrap();
    assert!(req.wants_reason, "our hub asks for a reason");
    let answer = wire::stream_response_topic(wire::REJECT, &req.rid);
    let publish = Publish::new(answer, QoS::AtMostOnce, payload);
    io.write(Packet::Publish(publish)).await.unwrap();
    match request.await.unwrap() {
        Err(e @ StreamError::Rejected { .. }) => e,
        Err(other) => panic!("expected a rejection, got: {other}"),
        Ok(()) => panic!("the stream was granted"),
    }
}

/// An Azure-style device answers with an empty payload: the service gets today's generic
/// message. A device's payload is cleaned and capped before the hub stores or passes it on.
#[tokio::test]
async fn a_device_that_gives_no_reason_gets_the_generic_message_and_reasons_are_cleaned() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let (mut io, code) = raw::connect_with_key(&sys, "dev1", &dev.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;

    let e = reject_next(&sys, &mut io, Vec::new()).await;
    assert!(matches!(e, StreamError::Rejected { reason: None, .. }));
    assert_eq!(
        e.to_string(),
        "device dev1 rejected stream 'ssh' (the device maps no such name, its target is down, or it is at its stream limit)"
    );
    assert_eq!(
        rejected_detail(&sys, "dev1").await,
        "device 'dev1' rejected stream 'ssh' (status 400)"
    );

    let mut hostile = b"forged\r\nINFO all is well \x1b[2J\x00".to_vec();
    hostile.extend(vec![b'a'; 4000]);
    let e = reject_next(&sys, &mut io, hostile).await;
    let StreamError::Rejected {
        reason: Some(reason),
        ..
    } = &e
    else {
        panic!("expected a rejection with a reason, got: {e}");
    };
    assert!(
        reason.starts_with("forged  INFO all is well  [2J"),
        "{reason}"
    );
    assert!(reason.len() <= wire::MAX_REASON, "{}", reason.len());
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    let path = sys.hub.registry.path().to_path_buf();
    let entries = stream_hub::activity::query(&path, Some("dev1"), 0).unwrap();
    for entry in entries {
        assert!(!entry.detail.chars().any(char::is_control), "{entry:?}");
        assert!(entry.detail.len() < wire::MAX_REASON + 100, "{entry:?}");
    }
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

    // The usual cause with a self-hosted hub is a missing or wrong --ca-file: the error
    // says so. A CA of another name is an unknown issuer (as the system's roots are);
    // another hub's CA for the same host name has the right name but a bad signature.
    let tmp = tempfile::tempdir().unwrap();
    let unrelated = stream_hub::init::DataDir::new(tmp.path().join("hub"));
    stream_hub::init::init(&unrelated, "elsewhere.example:443").unwrap();
    let other = System::start().await;
    for (ca, cause) in [
        (unrelated.ca_file(), "UnknownIssuer"),
        (other.ca_file(), "BadSignature"),
    ] {
        let mut config = sys.service_config("dev1", "ssh");
        config.connector = e2e::connector(&ca);
        let msg = open_err(&config).await.to_string();
        assert!(
            msg.contains("TLS handshake") && msg.contains("dev1"),
            "{msg}"
        );
        let want =
            format!("invalid peer certificate: {cause} (is the hub's CA given with --ca-file?)");
        assert!(msg.contains(&want), "{msg}");
    }
    // Other failures get no such hint.
    let mut config = sys.service_config("dev1", "ssh");
    config.connection.host = format!("localhost:{closed}").parse().unwrap();
    assert!(!open_err(&config).await.to_string().contains("--ca-file"));
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

/// Runs `service-local-proxy --stdio ARGS` against `sys`, expects it to fail (exit 1) with
/// one line on stderr, and returns that line.
async fn stdio_proxy_fails(sys: &System, args: &[&str]) -> String {
    let cs = expose(&sys.service_connection().to_secret_string());
    let out = tokio::process::Command::new(bin("service-local-proxy"))
        .arg("--stdio")
        .args(args)
        .arg("--ca-file")
        .arg(sys.ca_file())
        .env("SERVICE_CONNECTION_STRING", &cs)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[tokio::test]
async fn binary_prints_one_line_naming_device_and_cause() {
    let sys = System::start().await;
    let stderr = stdio_proxy_fails(&sys, &["--device-id", "ghost"]).await;
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
async fn binary_names_the_device_s_reason_for_a_rejection() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let _device = sys.start_device(dev, &["ssh=127.0.0.1:22"]).await;
    let stderr = stdio_proxy_fails(&sys, &["--device-id", "dev1", "--stream-name", "x"]).await;
    assert!(
        stderr.contains("device dev1 rejected stream 'x': no target is mapped for stream 'x'"),
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

/// Where a proxy can find its connection string; all of them are cleared for the tests below.
const CONNECTION_STRING_PLACES: [&str; 8] = [
    "DEVICE_CONNECTION_STRING",
    "SERVICE_CONNECTION_STRING",
    "DEVICE_PROXY_CONNECTION_STRING_FILE",
    "SERVICE_PROXY_CONNECTION_STRING_FILE",
    "DEVICE_PROXY_CONFIG",
    "SERVICE_PROXY_CONFIG",
    "CREDENTIALS_DIRECTORY",
    "RUST_LOG",
];

/// Where a test puts a connection string: extra arguments and environment variables.
type Place<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Runs a proxy binary to its end; its exit code and stderr.
fn run_proxy(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(bin(binary));
    cmd.args(args).stdin(std::process::Stdio::null());
    for var in CONNECTION_STRING_PLACES {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

/// Each proxy, the arguments it needs besides a connection string, and the names of its
/// connection string's variable, its file's variable and its systemd credential.
const PROXIES: [(&str, &[&str], [&str; 3]); 2] = [
    (
        "device-local-proxy",
        &["--map", "ssh=127.0.0.1:22"],
        [
            "DEVICE_CONNECTION_STRING",
            "DEVICE_PROXY_CONNECTION_STRING_FILE",
            "device-connection-string",
        ],
    ),
    (
        "service-local-proxy",
        &["--stdio", "--device-id", "dev1"],
        [
            "SERVICE_CONNECTION_STRING",
            "SERVICE_PROXY_CONNECTION_STRING_FILE",
            "service-connection-string",
        ],
    ),
];

#[test]
fn no_connection_string_names_every_place_it_could_be() {
    for (binary, args, names) in PROXIES {
        let (code, stderr) = run_proxy(binary, args, &[]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{binary}: {stderr}");
        for name in names.iter().chain(&["--connection-string-file"]) {
            assert!(stderr.contains(name), "{binary}: {name} missing: {stderr}");
        }
    }
}

#[test]
fn a_bad_connection_string_names_its_source_but_never_its_value() {
    const KEY: &str = "c2VjcmV0LXNlY3JldA==";
    // Neither proxy's kind: a device's lacks DeviceId, a service's SharedAccessKeyName.
    let bad = format!("HostName=h;SharedAccessKey={KEY}");
    let dir = tempfile::tempdir().unwrap();
    for (binary, args, [var, _, credential]) in PROXIES {
        let file = dir.path().join(format!("{binary}.cs"));
        std::fs::write(&file, &bad).unwrap();
        let config = dir.path().join(format!("{binary}.toml"));
        std::fs::write(&config, format!("connection-string = \"{bad}\"\n")).unwrap();
        let credentials = dir.path().join(format!("{binary}-credentials"));
        std::fs::create_dir(&credentials).unwrap();
        std::fs::write(credentials.join(credential), &bad).unwrap();
        let (file, config, credentials) = (
            file.display().to_string(),
            config.display().to_string(),
            credentials.display().to_string(),
        );
        let cases: [(Place, String); 5] = [
            (
                (&["--connection-string", &bad], &[]),
                "--connection-string".into(),
            ),
            ((&[], &[(var, &bad)]), format!("environment variable {var}")),
            (
                (&["--config", &config], &[]),
                format!("key connection-string of config file {config}"),
            ),
            (
                (&["--connection-string-file", &file], &[]),
                format!("file {file}"),
            ),
            (
                (&[], &[("CREDENTIALS_DIRECTORY", &credentials)]),
                format!("systemd credential {credential} ({credentials}/{credential})"),
            ),
        ];
        for ((extra, env), source) in cases {
            let all: Vec<&str> = args.iter().chain(extra).copied().collect();
            let (code, stderr) = run_proxy(binary, &all, env);
            assert_eq!(code, Some(2), "{binary} {extra:?}: {stderr}");
            assert!(
                stderr.contains(&format!("the connection string from {source} is not valid")),
                "{binary} {extra:?} {env:?}: {stderr}"
            );
            assert!(!stderr.contains(KEY), "{binary} echoes the key: {stderr}");
        }
    }
}

/// A connection string to a hub that is not there, so a proxy that accepts it fails only
/// when it dials: exit 1, "cannot reach the hub".
fn unreachable_service_connection_string() -> String {
    let closed = e2e::fault::free_port();
    format!(
        "HostName=localhost:{closed};SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0LXNlY3JldA=="
    )
}

#[test]
fn quotes_and_whitespace_around_a_connection_string_are_tolerated() {
    let cs = unreachable_service_connection_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cs");
    std::fs::write(&file, format!("\"{cs}\"\n")).unwrap();
    let config = dir.path().join("service.toml");
    std::fs::write(&config, format!("connection-string = '\"{cs}\"'\n")).unwrap();
    std::fs::create_dir(dir.path().join("credentials")).unwrap();
    std::fs::write(
        dir.path().join("credentials/service-connection-string"),
        format!("  '{cs}'\n\n"),
    )
    .unwrap();
    let (file, config, credentials) = (
        file.display().to_string(),
        config.display().to_string(),
        dir.path().join("credentials").display().to_string(),
    );
    let (quoted, padded) = (format!("\"{cs}\""), format!("'{cs}'\n"));
    let cases: [Place; 5] = [
        (&["--connection-string", &padded], &[]),
        (&[], &[("SERVICE_CONNECTION_STRING", &quoted)]),
        (&["--config", &config], &[]),
        (&["--connection-string-file", &file], &[]),
        (&[], &[("CREDENTIALS_DIRECTORY", &credentials)]),
    ];
    for (extra, env) in cases {
        let mut args = vec!["--stdio", "--device-id", "dev1"];
        args.extend(extra);
        let (code, stderr) = run_proxy("service-local-proxy", &args, env);
        assert_eq!(code, Some(1), "{extra:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("cannot reach the hub for device dev1"),
            "{extra:?} {env:?}: {stderr}"
        );
    }
}

#[test]
fn a_connection_string_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cs");
    std::fs::write(&file, unreachable_service_connection_string()).unwrap();
    let path = file.display().to_string();
    let args = [
        "--stdio",
        "--device-id",
        "dev1",
        "--connection-string-file",
        &path,
    ];
    for (mode, warned) in [(0o640, true), (0o604, true), (0o600, false), (0o400, false)] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, stderr) = run_proxy("service-local-proxy", &args, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        let warning = format!("connection string file {path} has mode {mode:04o}");
        assert_eq!(stderr.contains(&warning), warned, "mode {mode:o}: {stderr}");
        assert_eq!(
            stderr.contains("has mode"),
            warned,
            "mode {mode:o}: {stderr}"
        );
        assert!(!stderr.contains("c2VjcmV0LXNlY3JldA"), "{stderr}");
    }
}
