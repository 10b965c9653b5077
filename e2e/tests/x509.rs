//! X.509 device authentication, both of Azure's kinds, with certificates made here by
//! rcgen: a thumbprint (selfSigned) device and a CA-signed device each serve a stream as a
//! raw MQTT device over TLS and through the real `device-local-proxy --cert --key`;
//! every bad certificate is refused at CONNECT with its reason in the hub's log; changing
//! the thumbprint, deleting the CA or disabling the device cuts a live session within 2 s.

use std::{path::Path, process::Stdio, time::Duration};

use device_streams_protocol::wire;
use e2e::{
    bin, eventually,
    fault::{free_port, HubProcess, Peer},
    hub_cli, open_stream, raw, round_trip,
    x509::{make, Pem, Spec},
    System,
};
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use stream_hub::{registry::DeviceAuth, Limits};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The real device proxy for `x509=true` with `--cert`/`--key`, mapping `echo`; returns
/// the child and its stderr lines once it says it is connected.
async fn device_proxy(
    sys: &System,
    device: &str,
    pem: &Pem,
    echo: &Peer,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let cs = format!("HostName={};DeviceId={device};x509=true", sys.hostname());
    let mut child = tokio::process::Command::new(bin("device-local-proxy"))
        .args(["--ca-file", &sys.ca_file().display().to_string()])
        .args(["--map", &format!("echo={}", echo.addr)])
        .args(["--cert", &pem.cert.display().to_string()])
        .env("DEVICE_PROXY_KEY", &pem.key)
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
                return;
            }
        }
        panic!("the device proxy exited before connecting");
    });
    connected
        .await
        .expect("the device proxy connects within 10 s");
    sys.wait_connected(device).await;
    (child, lines)
}

/// Reads `lines` until one contains `want`, within 10 s; returns it.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    want: &str,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(want) {
                return line;
            }
        }
        panic!("the process exited before logging {want:?}");
    });
    found
        .await
        .unwrap_or_else(|_| panic!("no line with {want:?} within 10 s"))
}

fn data(sys: &System) -> std::path::PathBuf {
    sys.data().path
}

/// A thumbprint device: raw over the MQTT port and the device proxy (MQTT over
/// WebSocket, the main port) both serve streams; replacing its thumbprint cuts the live
/// session within 2 s and the proxy's reconnects are refused with a reason it logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbprint_device_serves_streams_and_a_new_thumbprint_cuts_it() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = make(dir.path(), "cam", Spec::leaf("anything"), None);
    let thumb = pem.sha256().to_uppercase();
    let cs = hub_cli(
        &data(&sys),
        &[
            "device",
            "add",
            "cam",
            "--auth",
            "x509-thumbprint",
            "--thumbprint",
            &thumb,
        ],
    );
    assert_eq!(
        cs.trim(),
        format!("HostName={};DeviceId=cam;x509=true", sys.hostname())
    );

    let connector = pem.connector(&sys.ca_file());
    let (mut io, code) =
        raw::connect_x509_tls(&connector, &sys.hostname(), sys.mqtt_port(), "cam").await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    raw::serve_one_echo(&sys, &mut io, "cam", b"x509 device").await;
    drop(io);
    // The same over WebSocket on the main port (the certificate reaches the session
    // through hyper's request).
    let (mut io, code) = raw::connect_x509_ws(&connector, &sys.hostname(), "cam").await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    raw::serve_one_echo(&sys, &mut io, "cam", b"x509 device").await;
    drop(io);

    let echo = Peer::echo().await;
    let (_child, mut lines) = device_proxy(&sys, "cam", &pem, &echo).await;
    let mut s = open_stream(&sys.service_config("cam", "echo"))
        .await
        .unwrap();
    round_trip(&mut s, b"through the device proxy").await;
    // Its standby connections present the same certificate; a warm client's stream takes one.
    let standby = eventually(Duration::from_secs(5), || {
        sys.hub.standby_connections("cam") == 2
    });
    assert!(standby.await, "the X.509 device holds standby connections");
    let mut fast = sys.service_config("cam", "echo");
    fast.warm = 1;
    let client = fast.client();
    client.warm_up();
    assert!(eventually(Duration::from_secs(5), || client.fast_path()).await);
    let mut on_standby = client.open(&fast.route()).await.unwrap();
    round_trip(&mut on_standby, b"on a standby connection").await;
    drop(on_standby);
    // Its record written, the hub's writes settle before the CLI writes below.
    let line = "stream_hub_fast_path_streams_total{route=\"standby\"} 1";
    let recorded = e2e::eventually_async(Duration::from_secs(5), || async {
        sys.metrics().await.contains(line)
    });
    assert!(recorded.await, "{line}");

    let show = hub_cli(&data(&sys), &["device", "show", "cam", "--json"]);
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["authentication"]["type"], "selfSigned");
    assert_eq!(
        show["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        pem.sha256()
    );
    let list = hub_cli(&data(&sys), &["device", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cam") && l.ends_with("selfSigned")),
        "{list}"
    );

    let other = "ab".repeat(32);
    hub_cli(
        &data(&sys),
        &["device", "set-thumbprint", "cam", "--thumbprint", &other],
    );
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("cam"));
    assert!(cut.await, "the session outlived its thumbprint by 2 s");
    let cut = eventually(Duration::from_secs(2), || {
        sys.hub.standby_connections("cam") == 0
    });
    assert!(cut.await, "standby connections outlived the thumbprint");
    let refused = line_with(&mut lines, "hub refused device 'cam'").await;
    assert!(
        refused.contains("the hub refused the client certificate"),
        "{refused}"
    );
    assert!(!sys.hub.is_connected("cam"));
}

/// A CA-signed device: `ca add`, `device add --auth x509-ca`; raw over TLS and through the
/// device proxy; deleting the CA or disabling the device cuts its session within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_signed_device_serves_streams_and_is_cut_when_its_ca_goes() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = make(dir.path(), "root", Spec::ca("Fleet Root"), None);
    let cert = make(dir.path(), "cam", Spec::leaf("cam"), Some(&root));
    let said = hub_cli(
        &data(&sys),
        &[
            "ca",
            "add",
            "fleet",
            "--cert",
            &root.cert.display().to_string(),
        ],
    );
    assert!(said.contains(&root.sha256()), "{said}");
    assert!(hub_cli(&data(&sys), &["ca", "list"]).contains("fleet"));
    hub_cli(&data(&sys), &["device", "add", "cam", "--auth", "x509-ca"]);

    let connector = cert.connector(&sys.ca_file());
    let (mut io, code) =
        raw::connect_x509_tls(&connector, &sys.hostname(), sys.mqtt_port(), "cam").await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    raw::serve_one_echo(&sys, &mut io, "cam", b"x509 device").await;

    hub_cli(&data(&sys), &["ca", "delete", "fleet"]);
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(2)).await,
        "the session outlived its CA by 2 s"
    );
    let (_io, code) =
        raw::connect_x509_tls(&connector, &sys.hostname(), sys.mqtt_port(), "cam").await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    hub_cli(
        &data(&sys),
        &[
            "ca",
            "add",
            "fleet",
            "--cert",
            &root.cert.display().to_string(),
        ],
    );
    let echo = Peer::echo().await;
    let (_child, _lines) = device_proxy(&sys, "cam", &cert, &echo).await;
    let mut s = open_stream(&sys.service_config("cam", "echo"))
        .await
        .unwrap();
    round_trip(&mut s, b"through the device proxy").await;
    let (status, body) = e2e::https(
        &sys.connector(),
        &sys.hostname(),
        "GET",
        "/devices/cam",
        Some(&registry_token(&sys)),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["authentication"]["type"], "certificateAuthority");

    hub_cli(&data(&sys), &["device", "disable", "cam"]);
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("cam"));
    assert!(cut.await, "a disabled device's session outlived it by 2 s");
    // Enabled again, the proxy's reconnect (a resumed TLS session, which keeps the
    // certificate it began with) is taken.
    hub_cli(&data(&sys), &["device", "enable", "cam"]);
    let back = eventually(Duration::from_secs(10), || sys.hub.is_connected("cam"));
    assert!(back.await, "the re-enabled device did not reconnect");
    let mut s = open_stream(&sys.service_config("cam", "echo"))
        .await
        .unwrap();
    round_trip(&mut s, b"after reconnecting").await;
}

fn registry_token(sys: &System) -> String {
    let reg = &sys.hub.registry;
    let p = reg
        .add_policy("admin", &[stream_hub::registry::Right::RegistryRead])
        .unwrap();
    e2e::service_token(&sys.hostname(), "admin", &p.primary_key)
}

/// The real hub binary with an MQTT port: every bad certificate is refused at CONNECT,
/// with its reason in the hub's log; `openssl s_client` with a wrong certificate gets
/// through TLS and is refused at CONNECT; the hub serves a good device afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_at_connect_with_their_reason() {
    let hub = HubProcess::init();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = make(d, "root", Spec::ca("Fleet Root"), None);
    let stranger = make(d, "stranger", Spec::ca("Someone Else"), None);
    let cli = |args: &[&str]| hub_cli(&hub.dir, args);
    cli(&[
        "ca",
        "add",
        "fleet",
        "--cert",
        &root.cert.display().to_string(),
    ]);
    cli(&["device", "add", "ca-dev", "--auth", "x509-ca"]);
    let good_ca = make(d, "good-ca", Spec::leaf("ca-dev"), Some(&root));
    let wrong_ca = make(d, "wrong-ca", Spec::leaf("ca-dev"), Some(&stranger));
    let wrong_cn = make(d, "wrong-cn", Spec::leaf("someone-else"), Some(&root));
    let expired_ca = make(
        d,
        "expired-ca",
        Spec::leaf("ca-dev").years(2001, 2002),
        Some(&root),
    );
    let expired = make(d, "expired", Spec::leaf("t").years(2001, 2002), None);
    let future = make(d, "future", Spec::leaf("t").years(2090, 2100), None);
    let old = make(d, "old", Spec::leaf("t"), None);
    let new = make(d, "new", Spec::leaf("t"), None);
    let thumb = |id: &str, p: &Pem| {
        cli(&[
            "device",
            "add",
            id,
            "--auth",
            "x509-thumbprint",
            "--thumbprint",
            &p.sha256(),
        ]);
    };
    thumb("t-expired", &expired);
    thumb("t-future", &future);
    thumb("t-rotated", &old);
    cli(&[
        "device",
        "set-thumbprint",
        "t-rotated",
        "--thumbprint",
        &new.sha256(),
    ]);

    let mqtt = free_port();
    let mut child = tokio::process::Command::new(bin("stream-hub"))
        .args([
            "serve",
            "--data-dir",
            &hub.dir.display().to_string(),
            "--listen",
            &hub.listen(),
        ])
        .args([
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--shutdown-grace",
            "1s",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let host = format!("localhost:{}", hub.port);
    let ca_file = hub.dir.join("ca.pem");
    e2e::fault::retry("the hub's MQTT port", || async {
        hub.connector().connect("localhost", mqtt).await
    })
    .await;

    let cases: [(&str, Option<&Pem>, &str); 7] = [
        (
            "t-expired",
            Some(&expired),
            "the certificate expired at 2002-01-01",
        ),
        (
            "t-future",
            Some(&future),
            "the certificate is not valid until 2090-01-01",
        ),
        (
            "t-rotated",
            Some(&old),
            "is neither of the device's registered thumbprints",
        ),
        (
            "ca-dev",
            Some(&wrong_ca),
            "does not chain to a registered CA",
        ),
        (
            "ca-dev",
            Some(&wrong_cn),
            "subject CN \"someone-else\" is not the device id",
        ),
        (
            "ca-dev",
            Some(&expired_ca),
            "the certificate expired at 2002-01-01",
        ),
        ("ca-dev", None, "its TLS connection presented none"),
    ];
    for (device, pem, _) in &cases {
        let connector = match pem {
            Some(p) => p.connector(&ca_file),
            None => hub.connector(),
        };
        let (_io, code) = raw::connect_x509_tls(&connector, &host, mqtt, device).await;
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword, "{device}");
    }
    let connack = s_client_connect(mqtt, &wrong_cn, &host, "ca-dev");
    assert_eq!(
        connack,
        [0x20, 0x02, 0x00, 0x04],
        "s_client's CONNECT was not refused as bad credentials"
    );

    for (device, pem) in [("ca-dev", &good_ca), ("t-rotated", &new)] {
        let (_io, code) =
            raw::connect_x509_tls(&pem.connector(&ca_file), &host, mqtt, device).await;
        assert_eq!(code, ConnectReturnCode::Success, "{device}");
    }

    e2e::fault::signal(&child, "TERM");
    let mut log = String::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), pipe.read_to_string(&mut log))
        .await
        .expect("the hub stops")
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(0), "{log}");
    for (device, _, reason) in &cases {
        let refused = format!("device '{device}' refused: X.509");
        assert!(
            log.lines()
                .any(|l| l.contains(&refused) && l.contains(reason)),
            "no refusal of {device} saying {reason:?}:\n{log}"
        );
    }
    let s_client = log
        .lines()
        .filter(|l| l.contains("subject CN \"someone-else\""))
        .count();
    assert_eq!(s_client, 2, "s_client's refusal is not in the log:\n{log}");
    assert!(
        !log.contains("BEGIN"),
        "a certificate or key reached the log:\n{log}"
    );
}

/// `openssl s_client` with `pem` to the MQTT port, sending an X.509 device's CONNECT for
/// `device` (empty password); returns the bytes the hub answered before closing.
fn s_client_connect(port: u16, pem: &Pem, host: &str, device: &str) -> Vec<u8> {
    use rumqttc::mqttbytes::v4::Connect;
    let mut connect = Connect::new(device);
    connect.keep_alive = 30;
    connect.set_login(wire::mqtt_username(host, device), "");
    let mut bytes = bytes::BytesMut::new();
    connect.write(&mut bytes).unwrap();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), &bytes).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-cert", path(&pem.cert), "-key", path(&pem.key)])
        .stdin(std::fs::File::open(input.path()).unwrap())
        .output()
        .expect("openssl runs");
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A SAS token for an X.509 device is refused, and a registry change from the REST API's
/// side leaves SAS devices as they were.
#[tokio::test]
async fn an_x509_device_cannot_sign_in_with_its_sas_key() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let device = sys
        .hub
        .registry
        .add_device_with_auth("cam", &DeviceAuth::CertificateAuthority)
        .unwrap();
    let (_io, code) = raw::connect_with_key(&sys, "cam", &device.primary_key).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let plain = sys.add_device("plain");
    let (_io, code) = raw::connect_with_key(&sys, "plain", &plain.key).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

/// A session lasts no longer than the certificate that opened it, as a SAS session no
/// longer than its token; the reconnect is refused as expired.
#[tokio::test]
async fn an_x509_session_ends_when_its_certificate_expires() {
    let sys = System::start_with_mqtt(Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let soon = std::time::SystemTime::now() + Duration::from_secs(3);
    let pem = make(dir.path(), "brief", Spec::leaf("brief").until(soon), None);
    let auth = DeviceAuth::SelfSigned {
        primary: Some(pem.sha256()),
        secondary: None,
    };
    sys.hub
        .registry
        .add_device_with_auth("brief", &auth)
        .unwrap();
    let connector = pem.connector(&sys.ca_file());
    let (mut io, code) =
        raw::connect_x509_tls(&connector, &sys.hostname(), sys.mqtt_port(), "brief").await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw::subscribe(&mut io).await;
    assert!(
        raw::closed_within(&mut io, Duration::from_secs(8)).await,
        "the session outlived its certificate"
    );
    let (_io, code) =
        raw::connect_x509_tls(&connector, &sys.hostname(), sys.mqtt_port(), "brief").await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
}
