//! The dashboard on the admin listener, against a running hub with a real device proxy
//! and an open stream: first over plain HTTP (what every page and action answers), then
//! in a real browser, headless Chromium, which also takes the screenshots in docs/.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use e2e::{eventually_async, fault::echo_system, open_stream, round_trip};
use http_body_util::BodyExt;
use stream_hub::{registry::Right, Limits};
use tokio::io::AsyncReadExt;

/// A plain-HTTP reply: status, `Set-Cookie` if any, body.
struct Reply {
    status: u16,
    cookie: Option<String>,
    location: Option<String>,
    body: String,
}

/// One HTTP/1.1 request to the admin listener.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = bytes::Bytes::from(form.unwrap_or("").to_string());
    let req = req.body(http_body_util::Full::new(body)).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let header = |name: http::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let cookie = header(http::header::SET_COOKIE);
    let location = header(http::header::LOCATION);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        cookie,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
    request(addr, "GET", path, cookie, None).await
}

async fn post(addr: SocketAddr, path: &str, cookie: Option<&str>, form: &str) -> Reply {
    request(addr, "POST", path, cookie, Some(form)).await
}

/// The number in `attr="N"` after `after` in `html`.
fn attr_number(html: &str, after: &str, attr: &str) -> u64 {
    let from = html
        .find(after)
        .unwrap_or_else(|| panic!("{after} not in:\n{html}"));
    let rest = &html[from..];
    let at = rest.find(&format!("{attr}=\"")).expect("attribute") + attr.len() + 2;
    let digits: String = rest[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a number")
}

/// The value of the hidden `name` input in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in:\n{html}"))
        + marker.len();
    html[at..].chars().take_while(|c| *c != '"').collect()
}

fn form(fields: &[(&str, &str)]) -> String {
    let pairs = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", device_streams_protocol::sas::url_encode(v)));
    pairs.collect::<Vec<_>>().join("&")
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

/// Headless Chromium with its own throw-away profile, nothing fetched from Google.
fn chromium(profile: &std::path::Path, extra: &[String], url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,800",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` for at most a minute; returns its stdout.
async fn run_browser(mut cmd: std::process::Command) -> String {
    let run = tokio::task::spawn_blocking(move || cmd.output());
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finished within a minute")
        .expect("join")
        .expect(
            "chromium runs: scripts/test installs Debian's chromium (scripts/test.d/chromium.sh)",
        );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page at `url` as the browser built it (`--dump-dom`).
async fn dump_dom(profile: &std::path::Path, url: &str) -> String {
    run_browser(chromium(profile, &["--dump-dom".into()], url)).await
}

/// A screenshot of `url` into `file`.
async fn screenshot(profile: &std::path::Path, url: &str, file: &std::path::Path) {
    let arg = format!("--screenshot={}", file.display());
    run_browser(chromium(profile, &[arg], url)).await;
    let png = std::fs::read(file).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        file.display()
    );
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_device_and_its_live_stream_and_closes_it_for_a_signed_in_admin() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    sys.add_device("dev2-never-seen");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(stream_hub::admin::run(admin, sys.hub.clone()));

    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    round_trip(&mut stream, b"hello through the hub").await;

    // Reading needs no sign-in on a loopback admin listener.
    let devices = get(addr, "/", None).await;
    assert_eq!(devices.status, 200, "{}", devices.body);
    let row = &devices.body[devices
        .body
        .find(r#"data-device="dev1""#)
        .expect("dev1 listed")..];
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(row.contains(">online<"), "dev1 not online: {row}");
    assert!(
        row.contains(r#"<td class="num">1</td>"#),
        "one open stream: {row}"
    );
    assert!(devices.body.contains("dev2-never-seen") && devices.body.contains("never"));
    // Read-only without a session: no action buttons.
    assert!(!devices.body.contains("/devices/disable"));
    let filtered = get(addr, "/?q=DEV2&state=all", None).await.body;
    assert!(filtered.contains("dev2-never-seen") && !filtered.contains(r#"data-device="dev1""#));
    let online = get(addr, "/?state=online", None).await.body;
    assert!(online.contains(r#"data-device="dev1""#) && !online.contains("dev2-never-seen"));

    // The stream, with byte counts that grow as bytes move.
    let streams = get(addr, "/streams", None).await.body;
    let to_before = attr_number(&streams, "data-stream=", "data-bytes-to-device");
    assert!(to_before >= 21, "{streams}");
    assert!(streams.contains(">dev1<") && streams.contains(">echo<"));
    round_trip(&mut stream, &[7u8; 5000]).await;
    let streams = get(addr, "/streams", None).await.body;
    let to_after = attr_number(&streams, "data-stream=", "data-bytes-to-device");
    let from_after = attr_number(&streams, "data-stream=", "data-bytes-from-device");
    assert!(
        to_after >= to_before + 5000 && from_after >= 5021,
        "{to_before} → {to_after}, {from_after}"
    );
    let stream_id = hidden_stream_id(&streams);

    // An action without a session is refused, and changes nothing.
    let refused = post(addr, "/streams/close", None, &form(&[("id", &stream_id)])).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    round_trip(&mut stream, b"still open").await;

    // A wrong key cannot sign in; nor can a policy without registry rights.
    let policy = sys
        .hub
        .registry
        .add_policy("dashboard", &[Right::RegistryRead, Right::RegistryWrite])
        .unwrap();
    let key = policy.primary_key.expose().to_string();
    let wrong = post(
        addr,
        "/login",
        None,
        &form(&[("policy", "dashboard"), ("key", "d3Jvbmc=")]),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.cookie.is_none() && wrong.body.contains("Sign-in failed"),
        "{}",
        wrong.body
    );
    let connect_only = sys
        .hub
        .registry
        .add_policy("connect-only", &[Right::ServiceConnect]);
    let connect_only = connect_only.unwrap().primary_key;
    let svc = form(&[("policy", "connect-only"), ("key", connect_only.expose())]);
    assert_eq!(post(addr, "/login", None, &svc).await.status, 401);

    // The right key: a session cookie, HttpOnly and SameSite=Strict.
    let signed_in = post(
        addr,
        "/login",
        None,
        &form(&[("policy", "dashboard"), ("key", &key)]),
    )
    .await;
    assert_eq!(
        (signed_in.status, signed_in.location.as_deref()),
        (303, Some("/"))
    );
    let set_cookie = signed_in.cookie.expect("a session cookie");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie);

    // With the session but without its CSRF token: still refused.
    let no_csrf = post(
        addr,
        "/streams/close",
        Some(&cookie),
        &form(&[("id", &stream_id)]),
    )
    .await;
    assert_eq!(no_csrf.status, 403);
    let forged = form(&[("id", &stream_id), ("csrf", &"0".repeat(64))]);
    assert_eq!(
        post(addr, "/streams/close", Some(&cookie), &forged)
            .await
            .status,
        403
    );

    // The browser: the device online, the stream with its bytes; screenshots for docs/.
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{addr}");
    let dom = dump_dom(profile.path(), &format!("{base}/")).await;
    assert!(
        dom.contains(r#"data-device="dev1""#) && dom.contains("online"),
        "{dom}"
    );
    let dom = dump_dom(profile.path(), &format!("{base}/streams")).await;
    assert!(
        dom.contains(&stream_id) && dom.contains("data-bytes-to-device"),
        "{dom}"
    );
    std::fs::create_dir_all(docs()).unwrap();
    screenshot(
        profile.path(),
        &format!("{base}/"),
        &docs().join("dashboard-devices.png"),
    )
    .await;
    screenshot(
        profile.path(),
        &format!("{base}/streams"),
        &docs().join("dashboard-streams.png"),
    )
    .await;

    // Close it from the page, as its form does: the session ends at both ends.
    let page = get(addr, "/streams", Some(&cookie)).await.body;
    let csrf = hidden(&page, "csrf");
    assert!(
        page.contains("/streams/close"),
        "a signed-in writer sees Close"
    );
    let closed = post(
        addr,
        "/streams/close",
        Some(&cookie),
        &form(&[("id", &stream_id), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(
        (closed.status, closed.location.as_deref()),
        (303, Some("/streams"))
    );
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the stream was not ended by the close");
    let gone = eventually_async(Duration::from_secs(5), || async {
        !get(addr, "/streams", None).await.body.contains(&stream_id)
    });
    assert!(gone.await, "the stream is still listed");

    // Its record says so, in the activity page and its filters.
    let logged = eventually_async(Duration::from_secs(5), || async {
        get(addr, "/activity?device=dev1&result=accepted&since=1h", None)
            .await
            .body
            .contains("closed by an admin")
    });
    assert!(logged.await, "no activity record of the close");
    let none = get(addr, "/activity?device=dev1&result=timeout", None)
        .await
        .body;
    assert!(!none.contains("closed by an admin"));
    let bad = get(addr, "/activity?since=soon", None).await;
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("not a duration"));
    screenshot(
        profile.path(),
        &format!("{base}/activity"),
        &docs().join("dashboard-activity.png"),
    )
    .await;

    // Disable then enable dev1 from the page: disabling cuts it off at once.
    let disabled = post(
        addr,
        "/devices/disable",
        Some(&cookie),
        &form(&[("id", "dev1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(disabled.status, 303);
    let offline = eventually_async(Duration::from_secs(5), || async {
        !sys.hub.is_connected("dev1")
    });
    assert!(offline.await, "a disabled device stays connected");
    assert!(get(addr, "/?q=dev1", None)
        .await
        .body
        .contains(">disabled<"));
    let enabled = post(
        addr,
        "/devices/enable",
        Some(&cookie),
        &form(&[("id", "dev1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(enabled.status, 303);
    assert!(sys.hub.registry.device("dev1").unwrap().unwrap().enabled);

    // Rotating a key shows the new connection string once, with the new key.
    let rotated = post(
        addr,
        "/devices/rotate-key",
        Some(&cookie),
        &form(&[
            ("id", "dev2-never-seen"),
            ("key", "primary"),
            ("csrf", &csrf),
        ]),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_key = sys
        .hub
        .registry
        .device("dev2-never-seen")
        .unwrap()
        .unwrap()
        .primary_key;
    assert!(rotated
        .body
        .contains(&format!("SharedAccessKey={}", new_key.expose())));

    // Signing out ends the session: its cookie acts no more.
    post(addr, "/logout", Some(&cookie), "").await;
    let after = post(
        addr,
        "/devices/disable",
        Some(&cookie),
        &form(&[("id", "dev1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(after.status, 403);
}

/// The stream id in the `/streams` page's first row.
fn hidden_stream_id(html: &str) -> String {
    let marker = r#"data-stream=""#;
    let at = html.find(marker).expect("a stream row") + marker.len();
    html[at..].chars().take_while(|c| *c != '"').collect()
}

/// The devices page with 10,000 registered devices (a few online) answers within 300 ms:
/// the registry is read in three queries and one page of rows is rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_render_within_300_ms() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    for i in 0..10_000 {
        sys.hub
            .registry
            .add_device(&format!("fleet-{i:05}"))
            .unwrap();
    }
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(stream_hub::admin::run(admin, sys.hub.clone()));
    get(addr, "/", None).await; // the first one warms SQLite's cache
    let mut slowest = Duration::ZERO;
    for path in [
        "/",
        "/?q=fleet-09&state=offline",
        "/?page=19",
        "/?state=online",
    ] {
        let started = std::time::Instant::now();
        let page = get(addr, path, None).await;
        let took = started.elapsed();
        assert_eq!(page.status, 200);
        assert!(page.body.contains("device(s)"), "{}", page.body);
        eprintln!("GET {path}: {took:?}, {} bytes", page.body.len());
        slowest = slowest.max(took);
    }
    let all = get(addr, "/", None).await.body;
    assert!(all.contains("10001 device(s), 1–500 shown") && all.contains("Next page"));
    assert!(
        slowest < Duration::from_millis(300),
        "slowest page took {slowest:?}"
    );
}
