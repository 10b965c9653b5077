//! The fast path (docs/FASTPATH.md): services' warm connections and devices' standby
//! connections, and Azure's way whenever the hub or the device does not take part.

use std::{path::PathBuf, time::Duration};

use device_streams::{
    protocol::{
        fast::{standby_path, Message as Fast},
        sas, wire,
    },
    websocket::connect_fast,
    Route, ServiceClient, StreamError, StreamErrorKind,
};
use e2e::{
    eventually, eventually_async, fault::Peer, hub_cli, random_bytes, raw, round_trip, sha256,
    sshd::Sshd, start_service_proxy, Running, System,
};
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use stream_hub::Limits;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn data_dir(sys: &System) -> PathBuf {
    sys.dir.path().join("hub")
}

/// A service client keeping `warm` warm connections, started.
fn client(sys: &System, device: &str, warm: usize) -> ServiceClient {
    let mut config = sys.service_config(device, "echo");
    config.warm = warm;
    let client = config.client();
    client.warm_up();
    client
}

/// A hub, `dev1`'s device proxy (two standby connections) mapping `echo`, and a service
/// client with two warm connections, all connected.
async fn fast_echo() -> (System, Peer, Running, ServiceClient) {
    let sys = System::start().await;
    let echo = Peer::echo().await;
    let dev = sys.add_device("dev1");
    let device = sys
        .start_device(dev, &[&format!("echo={}", echo.addr)])
        .await;
    let client = client(&sys, "dev1", 2);
    let ready = eventually(WAIT, || {
        client.fast_path() && sys.hub.standby_connections("dev1") == 2
    });
    assert!(ready.await, "warm and standby connections are up");
    (sys, echo, device, client)
}

async fn metric(sys: &System, line: &str) -> bool {
    sys.metrics().await.lines().any(|l| l == line)
}

async fn logged(sys: &System, text: &str) -> bool {
    let dir = data_dir(sys);
    eventually(WAIT, || hub_cli(&dir, &["logs"]).contains(text)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ssh_through_the_fast_path_arrives_hash_exact_both_ways() {
    let sshd = Sshd::start();
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let map = format!("ssh=127.0.0.1:{}", sshd.port);
    let _device = sys.start_device(dev, &[&map]).await;
    let mut config = sys.service_config("dev1", "ssh");
    config.warm = 2;
    let (addr, _service) = start_service_proxy(config).await;
    // Two warm connections and the device's two standby ones.
    let ready = eventually(WAIT, || sys.hub.idle_fast_connections() == 4);
    assert!(ready.await, "the proxies hold their fast-path connections");

    let data = random_bytes(4 * 1024 * 1024);
    let want = sha256(&data);
    let out = e2e::run_with_input(sshd.ssh(addr.port(), "sha256sum"), data).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some(want.as_str())
    );

    let size = 4 * 1024 * 1024;
    let file = sshd.dir.path().join("down.bin");
    let remote = format!(
        "head -c {size} /dev/urandom > {f} && sha256sum {f} >&2 && cat {f}",
        f = file.display()
    );
    let out = e2e::run_with_input(sshd.ssh(addr.port(), &remote), vec![]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote_hash = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .next()
        .map(str::to_string);
    assert_eq!(remote_hash, Some(sha256(&out.stdout)));

    let line = "stream_hub_fast_path_streams_total{route=\"standby\"} 2";
    assert!(
        eventually_async(WAIT, || metric(&sys, line)).await,
        "{line}"
    );
    assert!(logged(&sys, "(fast path, standby)").await);
    // Both proxies refilled their pools with new connections.
    let refilled = eventually(WAIT, || sys.hub.idle_fast_connections() == 4);
    assert!(refilled.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fast_path_off_both_proxies_go_azure_s_way() {
    let limits = Limits {
        no_fast_path: true,
        ..Limits::default()
    };
    let sys = System::start_with(limits).await;
    let echo = Peer::echo().await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("echo={}", echo.addr)])
        .await;
    let client = client(&sys, "dev1", 2);
    let route = Route::new("dev1", "echo");
    for _ in 0..3 {
        let mut stream = client.open(&route).await.expect("Azure's way works");
        round_trip(&mut stream, b"the old way").await;
    }
    assert!(
        !client.fast_path(),
        "the hub's failed answer to the probe turned it off"
    );
    assert_eq!(sys.hub.standby_connections("dev1"), 0);
    assert_eq!(sys.hub.idle_fast_connections(), 0);
    let metrics = sys.metrics().await;
    assert!(!metrics.contains("fast_path_streams_total{"), "{metrics}");
    assert!(metrics.contains("stream_hub_streams_total{result=\"accepted\"} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_standby_is_asked_over_mqtt_for_a_warm_connection() {
    let sys = System::start().await;
    let key = sys.add_device("dev1").key;
    let (mut io, code) = raw::connect_with_key(&sys, "dev1", &key).await;
    assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    let client = client(&sys, "dev1", 1);
    assert!(eventually(WAIT, || client.fast_path()).await);

    let route = Route::new("dev1", "echo");
    let open = tokio::spawn(async move { client.open(&route).await });
    let req = answer_over_mqtt(&mut io, wire::ACCEPT, b"").await;
    let mut device_side =
        device_streams::websocket::connect_stream(&sys.connector(), &req.url, &req.auth)
            .await
            .expect("the device's side");
    let mut stream = open.await.unwrap().expect("the stream opens");
    stream.write_all(b"over mqtt").await.unwrap();
    stream.flush().await.unwrap();
    round_trip_echo(&mut device_side, 9).await;
    let mut back = [0u8; 9];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut back)
        .await
        .unwrap();
    assert_eq!(&back, b"over mqtt");
    drop(stream);
    let line = "stream_hub_fast_path_streams_total{route=\"mqtt\"} 1";
    assert!(
        eventually_async(WAIT, || metric(&sys, line)).await,
        "{line}"
    );
    assert!(logged(&sys, "(fast path, mqtt)").await);
}

/// Takes the next stream request on a raw device's session and answers it with `status`
/// (and `reason` as the payload).
async fn answer_over_mqtt(io: &mut raw::Io, status: u16, reason: &[u8]) -> wire::StreamRequest {
    let topic = match io.read().await.expect("read") {
        Some(Packet::Publish(p)) => p.topic,
        _ => panic!("the stream request did not come over MQTT"),
    };
    let req = wire::parse_stream_request(&topic).unwrap();
    let answer = wire::stream_response_topic(status, &req.rid);
    let publish = Publish::new(answer, QoS::AtMostOnce, reason.to_vec());
    io.write(Packet::Publish(publish)).await.unwrap();
    req
}

/// Reads `n` bytes from `s` and writes them back.
async fn round_trip_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    n: usize,
) {
    let mut buf = vec![0u8; n];
    tokio::io::AsyncReadExt::read_exact(s, &mut buf)
        .await
        .unwrap();
    s.write_all(&buf).await.unwrap();
    s.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_fast_path_name_the_device_and_the_cause() {
    let (sys, echo, _device, client) = fast_echo().await;
    let Err(e) = client.open(&Route::new("dev1", "nope")).await else {
        panic!("a name the device does not map was accepted")
    };
    assert_eq!(e.kind(), StreamErrorKind::Rejected);
    match &e {
        StreamError::Rejected { reason, device, .. } => {
            assert_eq!(device, "dev1");
            assert_eq!(
                reason.as_deref(),
                Some("no target is mapped for stream 'nope'")
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(logged(&sys, "rejected stream 'nope': no target is mapped").await);

    sys.add_device("dev2");
    let Err(e) = client.open(&Route::new("dev2", "echo")).await else {
        panic!("an offline device was reached")
    };
    assert_eq!(e.kind(), StreamErrorKind::Offline, "{e}");
    assert!(e.to_string().contains("'dev2' is not connected"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cuts_standby_and_warm_connections() {
    let (sys, _echo, _device, client) = fast_echo().await;
    assert!(eventually(WAIT, || sys.hub.idle_fast_connections() == 4).await);
    let dir = data_dir(&sys);
    hub_cli(&dir, &["device", "disable", "dev1"]);
    let cut = eventually(WAIT, || {
        sys.hub.standby_connections("dev1") == 0 && sys.hub.idle_fast_connections() == 2
    });
    assert!(
        cut.await,
        "the disabled device's standby connection is cut, the warm ones stay"
    );

    hub_cli(&dir, &["policy", "rotate-key", "service"]);
    let cut = eventually(WAIT, || sys.hub.idle_fast_connections() == 0);
    assert!(
        cut.await,
        "warm connections signed with the replaced key are cut"
    );
    // Its new dials are refused with the old key: the client stops trying.
    assert!(eventually(WAIT, || !client.fast_path()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_connection_carries_one_stream_with_the_first_bytes_behind_the_offer() {
    let sys = System::start().await;
    let key = sys.add_device("dev1").key;
    let (mut io, _) = raw::connect_with_key(&sys, "dev1", &key).await;
    raw::subscribe(&mut io).await;
    let host = sys.hostname();
    let token = sas::sign_for(
        &sas::device_resource(&host, "dev1"),
        &key,
        Duration::from_secs(60),
        None,
    )
    .unwrap();
    let url = format!("wss://{host}{}", standby_path("dev1", None));
    let mut standby = connect_fast(&sys.connector(), &url, Some(&token))
        .await
        .expect("standby")
        .ws;
    assert!(eventually(WAIT, || sys.hub.standby_connections("dev1") == 1).await);

    let client = client(&sys, "dev1", 1);
    assert!(eventually(WAIT, || client.fast_path()).await);
    let opening = client.clone();
    let open = tokio::spawn(async move {
        let mut early: &[u8] = b"first bytes";
        opening
            .open_piped(&Route::new("dev1", "echo"), &mut early)
            .await
    });
    let next = |m: Option<Result<Message, _>>| m.expect("a message").expect("no error");
    let offer = next(standby.next().await);
    assert_eq!(
        Fast::parse(offer.to_text().unwrap()),
        Ok(Fast::Offer {
            stream: "echo".into()
        })
    );
    // The service's first bytes came right behind the offer, before any answer.
    assert_eq!(
        next(standby.next().await),
        Message::binary(&b"first bytes"[..])
    );
    assert_eq!(
        sys.hub.standby_connections("dev1"),
        0,
        "taken out of the pool"
    );
    standby
        .send(Message::text(Fast::Accept.encode()))
        .await
        .unwrap();
    standby.send(Message::binary(&b"echoed"[..])).await.unwrap();
    let mut stream = open.await.unwrap().expect("accepted");
    let mut back = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut back)
        .await
        .unwrap();
    assert_eq!(&back, b"echoed");
    drop(stream);
    // The stream's end closes the standby connection: it never carries another.
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = standby.next().await {
            if m.is_close() {
                break;
            }
        }
    });
    assert!(
        closed.await.is_ok(),
        "the hub closed the used standby connection"
    );

    // The next stream finds no standby connection and comes over MQTT.
    let again = tokio::spawn(async move { client.open(&Route::new("dev1", "echo")).await });
    answer_over_mqtt(&mut io, wire::REJECT, b"busy").await;
    let err = again.await.unwrap().err().expect("rejected");
    assert_eq!(err.kind(), StreamErrorKind::Rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_list_and_close_see_a_fast_path_stream() {
    let (sys, _echo, _device, client) = fast_echo().await;
    let mut stream = client
        .open(&Route::new("dev1", "echo"))
        .await
        .expect("open");
    round_trip(&mut stream, b"listed").await;
    let dir = data_dir(&sys);
    let mut id = None;
    let listed = eventually(WAIT, || {
        let list = hub_cli(&dir, &["streams", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        id = list[0]["streamId"].as_str().map(str::to_string);
        list[0]["deviceId"] == "dev1"
    });
    assert!(listed.await, "the fast-path stream is listed");
    let id = id.expect("its id");
    hub_cli(&dir, &["streams", "close", &id]);
    let mut buf = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buf);
    let ended = tokio::time::timeout(WAIT, read).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    assert!(logged(&sys, "closed by an admin (fast path, standby)").await);
}
