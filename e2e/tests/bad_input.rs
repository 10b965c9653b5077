//! Hostile or broken input: each is refused with a clear error, and the hub keeps
//! serving everyone else. (errors.rs covers credentials, tokens and the first packet.)

use std::{sync::atomic::Ordering, time::Duration};

use device_streams::websocket::{self, WsError};
use device_streams::StreamError;
use device_streams_protocol::ws::WsStream;
use device_streams_protocol::{
    mqtt::MqttIo,
    sas,
    wire::{self, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
};
use e2e::{
    bin, expose,
    fault::{self, eventually, Peer},
    raw, System,
};
use e2e::{open_stream, request_stream};
use futures_util::SinkExt;
use rumqttc::mqttbytes::{
    v4::{ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode},
    QoS,
};
use stream_hub::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The hub still answers a well-formed request (a 404 for an unknown device).
async fn hub_still_serves(sys: &System) {
    match open_stream(&sys.service_config("ghost", "ssh")).await {
        Err(StreamError::Refused { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("the hub stopped serving: {:?}", other.map(|_| ())),
    }
}

/// A connected, subscribed raw device session for `device`.
async fn raw_device(sys: &System, device: &str) -> raw::Io {
    let host = sys.hostname();
    let dev = sys.add_device(device);
    let token = sas::sign_for(
        &sas::device_resource(&host, device),
        &dev.key,
        Duration::from_secs(60),
        None,
    )
    .unwrap();
    let mut io = raw::open(&sys.connector(), &host).await;
    let code = raw::connect(&mut io, &host, device, token.expose()).await;
    assert_eq!(code, ConnectReturnCode::Success);
    io
}

/// The control WebSocket with raw bytes written straight onto it.
async fn raw_bytes(sys: &System, bytes: &[u8]) -> MqttIo<websocket::ClientStream> {
    let url = format!("wss://{}{MQTT_WS_PATH}", sys.hostname());
    let ws = websocket::connect(&sys.connector(), &url, None, Some(MQTT_WS_SUBPROTOCOL))
        .await
        .unwrap();
    let mut stream = WsStream::new(ws);
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    MqttIo::new(stream, 1 << 20)
}

/// `.` and `..` are path segments, not device ids; a token whose resource reaches a device
/// by a path (`x/../devices/dev2`) is not a token for that device.
#[tokio::test]
async fn dot_device_ids_are_refused_at_connect() {
    let sys = System::start().await;
    let host = sys.hostname();
    let dev = sys.add_device("dev2");
    let sign = |resource: &str| {
        sas::sign_for(resource, &dev.key, Duration::from_secs(60), None)
            .unwrap()
            .expose()
            .to_string()
    };
    for id in [".", ".."] {
        let token = sign(&sas::device_resource(&host, id));
        let mut io = raw::open(&sys.connector(), &host).await;
        assert_eq!(
            raw::connect(&mut io, &host, id, &token).await,
            ConnectReturnCode::BadClientId,
            "{id}"
        );
    }
    for resource in [
        format!("{host}/x/../devices/dev2"),
        format!("{host}/devices/dev2/more"),
        format!("{}/devices/dev2", host.replace(':', ":1")),
    ] {
        let mut io = raw::open(&sys.connector(), &host).await;
        assert_eq!(
            raw::connect(&mut io, &host, "dev2", &sign(&resource)).await,
            ConnectReturnCode::BadUserNamePassword,
            "{resource}"
        );
    }
    let mut io = raw::open(&sys.connector(), &host).await;
    let good = sign(&sas::device_resource(&host, "dev2"));
    assert_eq!(
        raw::connect(&mut io, &host, "dev2", &good).await,
        ConnectReturnCode::Success
    );
    hub_still_serves(&sys).await;
}

#[tokio::test]
async fn malformed_mqtt_ends_only_that_session() {
    let sys = System::start().await;
    let cases: [(&str, &[u8]); 4] = [
        (
            "remaining length longer than four bytes",
            &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        ("CONNECT claiming 1 MiB", &[0x10, 0x80, 0x80, 0x40]),
        ("reserved packet type", &[0xF0, 0x00]),
        (
            "CONNECT with a bad protocol name",
            &[0x10, 0x08, 0x00, 0x04, b'X', b'Q', b'T', b'T', 0x04, 0x02],
        ),
    ];
    for (what, bytes) in cases {
        let mut io = raw_bytes(&sys, bytes).await;
        let r = tokio::time::timeout(Duration::from_secs(5), io.read()).await;
        assert!(
            matches!(r, Ok(Ok(None)) | Ok(Err(_))),
            "{what}: the hub did not close the session"
        );
    }
    assert_eq!(sys.hub.connected_devices(), 0);
    hub_still_serves(&sys).await;
}

#[tokio::test]
async fn a_device_may_only_subscribe_and_publish_to_stream_topics() {
    let sys = System::start().await;
    let mut dev1 = raw_device(&sys, "dev1").await;
    let mut sub = Subscribe::new("devices/dev2/messages/devicebound/#", QoS::AtMostOnce);
    sub.add("$iothub/twin/#".into(), QoS::AtMostOnce);
    sub.add(wire::STREAM_REQUEST_FILTER.into(), QoS::AtMostOnce);
    dev1.write(Packet::Subscribe(sub)).await.unwrap();
    match dev1.read().await.unwrap() {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce)
            ]
        ),
        _ => panic!("expected SUBACK"),
    }
    // Publishing elsewhere is ignored; the session stays up.
    for topic in [
        "devices/dev2/messages/events/",
        "$iothub/streams/res/abc/?$rid=1",
        "#",
    ] {
        let publish = Publish::new(topic, QoS::AtMostOnce, b"x".to_vec());
        dev1.write(Packet::Publish(publish)).await.unwrap();
    }
    dev1.write(Packet::PingReq).await.unwrap();
    assert!(matches!(dev1.read().await.unwrap(), Some(Packet::PingResp)));
    assert!(sys.hub.is_connected("dev1"));

    // dev1 cannot answer a stream request meant for dev2, even knowing its request id.
    let mut dev2 = raw_device(&sys, "dev2").await;
    raw::subscribe(&mut dev2).await;
    let mut config = sys.service_config("dev2", "ssh");
    config.response_timeout = Duration::from_secs(2);
    let request = tokio::spawn(async move { request_stream(&config).await.map(|_| ()) });
    let rid = match dev2.read().await.unwrap() {
        Some(Packet::Publish(p)) => wire::parse_stream_request(&p.topic).unwrap().rid,
        _ => panic!("dev2 got no stream request"),
    };
    let forged = Publish::new(
        wire::stream_response_topic(wire::ACCEPT, &rid),
        QoS::AtMostOnce,
        Vec::new(),
    );
    dev1.write(Packet::Publish(forged)).await.unwrap();
    match request.await.unwrap() {
        Err(StreamError::Refused { status, .. }) => assert_eq!(status.as_u16(), 504),
        other => panic!("a forged answer must not open the stream: {other:?}"),
    }
}

#[tokio::test]
async fn qos2_publish_ends_the_session_and_the_device_can_return() {
    let sys = System::start().await;
    let mut dev1 = raw_device(&sys, "dev1").await;
    let mut publish = Publish::new("$iothub/streams/res/200/?$rid=1", QoS::ExactlyOnce, vec![]);
    publish.pkid = 1;
    dev1.write(Packet::Publish(publish)).await.unwrap();
    assert!(matches!(dev1.read().await, Ok(None) | Err(_)));
    assert!(eventually(Duration::from_secs(5), || !sys.hub.is_connected("dev1")).await);
    let _again = raw_device(&sys, "dev1b").await;
    hub_still_serves(&sys).await;
}

#[tokio::test]
async fn stream_tokens_are_bound_to_their_stream() {
    let (sys, _echo, _device) = fault::echo_system(Limits::default()).await;
    let config = sys.service_config("dev1", "echo");
    let one = request_stream(&config).await.unwrap();
    let two = request_stream(&config).await.unwrap();
    // Stream one's token on stream two's URL.
    match websocket::connect(&config.connector, &two.url, Some(&one.token), None).await {
        Err(WsError::Refused {
            status: 401, body, ..
        }) => {
            assert!(body.contains("not valid for this stream"), "{body}")
        }
        other => panic!(
            "cross-stream token: expected 401, got {:?}",
            other.map(|_| ())
        ),
    }
    // A stream id that does not exist.
    let fake = two.url.rsplit_once('/').unwrap().0.to_string() + "/nonexistent";
    match websocket::connect(&config.connector, &fake, Some(&two.token), None).await {
        Err(WsError::Refused { status: 401, .. }) => {}
        other => panic!("unknown stream: expected 401, got {:?}", other.map(|_| ())),
    }
    // Both streams still open with their own tokens.
    for g in [one, two] {
        websocket::connect_stream(&config.connector, &g.url, &g.token)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_websocket_message_ends_that_stream_only() {
    let (sys, echo, _device) = fault::echo_system(Limits::default()).await;
    let config = sys.service_config("dev1", "echo");
    let g = request_stream(&config).await.unwrap();
    let mut ws = websocket::connect(&config.connector, &g.url, Some(&g.token), None)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || echo.open.load(Ordering::SeqCst)
            == 1)
        .await
    );
    let big = vec![7u8; wire::MAX_DATA_MESSAGE + 1];
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::binary(big))
        .await;
    assert!(
        eventually(Duration::from_secs(5), || echo.open.load(Ordering::SeqCst)
            == 0
            && sys.hub.open_streams() == 0)
        .await,
        "a message over 64 KiB must end its stream"
    );
    // The side that sent it is told why, with 1009 (message too big)...
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        use futures_util::StreamExt;
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    assert_eq!(close.await.ok().flatten(), Some(1009));
    // ...and the stream's record says which side sent how much over which limit.
    let logs = e2e::hub_cli(&sys.data().path, &["logs"]);
    assert!(
        logs.contains("the service sent a") && logs.contains("over the limit of 65536"),
        "{logs}"
    );
    let mut s = open_stream(&config).await.unwrap();
    e2e::round_trip(&mut s, b"next").await;
}

#[tokio::test]
async fn malformed_http_gets_clear_errors() {
    let sys = System::start().await;
    let send = |req: Vec<u8>| {
        let connector = sys.connector();
        let port = sys.addr.port();
        async move {
            let mut tls = connector.connect("localhost", port).await.unwrap();
            tls.write_all(&req).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let resp = send(huge.into_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431") || resp.is_empty(),
        "{resp}"
    );
    let resp = send(
        b"POST /twins/a/b/c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 404") && resp.contains("expected /twins/"),
        "{resp}"
    );
    let resp = send(b"GET /bridges/x HTTP/1.1\r\nHost: x\r\nAuthorization: Basic abc\r\nConnection: close\r\n\r\n".to_vec()).await;
    assert!(
        resp.starts_with("HTTP/1.1 401") && resp.contains("Bearer"),
        "{resp}"
    );
    let resp =
        send(b"GET /$iothub/websocket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
            .await;
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("WebSocket"),
        "{resp}"
    );
    hub_still_serves(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_by_the_header_timeout() {
    let sys = System::start_with(Limits {
        first_message: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let mut tls = sys
        .connector()
        .connect("localhost", sys.addr.port())
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(5) {
        if tls.write_all(b"X-Slow: y\r\n").await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        // An answer (408), the end, or an error: any of them means the hub cut it.
        if tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "trickled headers kept the connection open for 5 s");
    hub_still_serves(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_tls_handshakes_are_cut_and_do_not_block_others() {
    let sys = System::start_with(Limits {
        tls_handshake: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    // From another address than the hub_still_serves check below: an address's own
    // new connections wait behind its unauthenticated ones (--max-unauthenticated-per-address).
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut tcp = e2e::connect_from("127.0.0.3", sys.addr).await;
        tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // the start of a ClientHello, then nothing
        idle.push(tcp);
    }
    hub_still_serves(&sys).await;
    for mut tcp in idle {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a half-open handshake outlived its timeout"
        );
    }
}

/// Runs a proxy binary that should refuse its arguments; returns its stderr.
async fn usage_error(name: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let mut cmd = tokio::process::Command::new(bin(name));
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
    stderr
}

#[tokio::test]
async fn proxies_refuse_bad_configuration_with_exit_2_naming_the_bad_part() {
    let sys = System::start().await;
    let dev_cs = expose(&sys.add_device("dev1").to_secret_string());
    let svc_cs = expose(&sys.service_connection().to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let garbage = sys.dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = garbage.display().to_string();
    let dev_env = [("DEVICE_CONNECTION_STRING", dev_cs.clone())];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--ca-file", &ca, "--map", "ssh"], "ssh"),
        (
            vec!["--ca-file", &ca, "--map", "ssh=localhost"],
            "localhost",
        ),
        (vec!["--ca-file", &ca, "--map", "a/b=h:1"], "a/b"),
        (
            vec!["--ca-file", &ca, "--map", "s=h:1", "--map", "s=h:2"],
            "mapped twice",
        ),
        (
            vec!["--ca-file", "/nonexistent/ca.pem", "--map", "s=h:1"],
            "/nonexistent/ca.pem",
        ),
        (vec!["--ca-file", &garbage, "--map", "s=h:1"], "--ca-file"),
        (
            vec!["--ca-file", &ca, "--map", "s=h:1", "--keep-alive", "soon"],
            "--keep-alive",
        ),
    ];
    for (args, needle) in cases {
        let stderr = usage_error("device-local-proxy", &args, &dev_env).await;
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let key = dev_cs.split("SharedAccessKey=").nth(1).unwrap().to_string();
    for (cs, needle) in [
        (
            format!("HostName={};SharedAccessKey={key}", sys.hostname()),
            "DeviceId",
        ),
        (
            format!(
                "HostName={};DeviceId=dev1;SharedAccessKey=%%%",
                sys.hostname()
            ),
            "SharedAccessKey",
        ),
        (format!("DeviceId=dev1;SharedAccessKey={key}"), "HostName"),
        (
            format!("HostName=h:99999;DeviceId=dev1;SharedAccessKey={key}"),
            "h:99999",
        ),
    ] {
        let env = [("DEVICE_CONNECTION_STRING", cs.clone())];
        let stderr = usage_error(
            "device-local-proxy",
            &["--ca-file", &ca, "--map", "s=h:1"],
            &env,
        )
        .await;
        assert!(stderr.contains(needle), "{cs}: {stderr}");
        assert!(!stderr.contains(&key), "the key leaked into: {stderr}");
    }
    let svc_env = [("SERVICE_CONNECTION_STRING", svc_cs)];
    let stderr = usage_error(
        "service-local-proxy",
        &["--device-id", "dev1", "--ca-file", &garbage],
        &svc_env,
    )
    .await;
    assert!(stderr.contains("--ca-file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_never_reaches_beyond_the_map() {
    let sys = System::start().await;
    let mapped = Peer::echo().await;
    let unmapped = Peer::echo().await; // listening, but in no --map
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("echo={}", mapped.addr)])
        .await;
    let names = [
        "ssh".to_string(),
        "Echo".to_string(),
        "echo ".to_string(),
        unmapped.addr.to_string(),
        format!("echo={}", unmapped.addr),
        "..".to_string(),
        "echo%2F..".to_string(),
        "%00echo".to_string(),
    ];
    for name in &names {
        let r = open_stream(&sys.service_config("dev1", name)).await;
        match r {
            Err(StreamError::Rejected { .. }) | Err(StreamError::Refused { .. }) => {}
            other => panic!(
                "stream name {name:?} was not refused: {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(unmapped.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(
        mapped.accepted.load(Ordering::SeqCst),
        0,
        "a refused name reached the mapped target"
    );
    open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
}
