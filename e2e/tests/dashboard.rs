//! The dashboard on the admin listener, against a running hub with a real device proxy
//! and an open stream: over plain HTTP (what every page and action answers, the charts,
//! the once-only rotated key), and in a real browser — headless Chromium driven over the
//! DevTools protocol — which signs in through the form, closes the stream with its Close
//! button, and takes the screenshots in docs/.

use std::{path::PathBuf, time::Duration};

use e2e::{
    browser::Browser,
    eventually_async,
    fault::echo_system,
    open_stream, round_trip,
    web::{cookie_pair, form, hidden, Site},
};
use stream_hub::{registry::Right, Limits};
use tokio::io::AsyncReadExt;

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

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The highest value a chart's description gives for `line` (`accepted: now 0/s,
/// highest 2.5/s`), without its unit.
fn chart_highest(html: &str, line: &str) -> f64 {
    let from = html
        .find(&format!("{line}: now "))
        .unwrap_or_else(|| panic!("no {line} in:\n{html}"));
    let rest = &html[from..];
    let at = rest.find("highest ").expect("highest") + "highest ".len();
    let number: String = rest[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_device_and_its_live_stream_and_closes_it_for_a_signed_in_admin() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    sys.add_device("dev2-never-seen");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(stream_hub::admin::run(admin, sys.hub.clone()));
    let site = Site::Plain(addr);

    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    round_trip(&mut stream, b"hello through the hub").await;

    // Reading needs no sign-in on a loopback admin listener.
    let devices = site.get("/", None).await;
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
    let filtered = site.get("/?q=DEV2&state=all", None).await.body;
    assert!(filtered.contains("dev2-never-seen") && !filtered.contains(r#"data-device="dev1""#));
    let online = site.get("/?state=online", None).await.body;
    assert!(online.contains(r#"data-device="dev1""#) && !online.contains("dev2-never-seen"));

    // The stream, with byte counts that grow as bytes move.
    let streams = site.get("/streams", None).await.body;
    let to_before = attr_number(&streams, "data-stream=", "data-bytes-to-device");
    assert!(to_before >= 21, "{streams}");
    assert!(streams.contains(">dev1<") && streams.contains(">echo<"));
    round_trip(&mut stream, &[7u8; 5000]).await;
    let streams = site.get("/streams", None).await.body;
    let to_after = attr_number(&streams, "data-stream=", "data-bytes-to-device");
    let from_after = attr_number(&streams, "data-stream=", "data-bytes-from-device");
    assert!(
        to_after >= to_before + 5000 && from_after >= 5021,
        "{to_before} → {to_after}, {from_after}"
    );
    let stream_id = hidden_stream_id(&streams);

    // An action without a session is refused, and changes nothing.
    let refused = site
        .post("/streams/close", None, &form(&[("id", &stream_id)]))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    round_trip(&mut stream, b"still open").await;

    // A wrong key cannot sign in; nor can a policy without registry rights.
    let policy = sys
        .hub
        .registry
        .add_policy("dashboard", &[Right::RegistryRead, Right::RegistryWrite])
        .unwrap();
    let key = policy.primary_key.expose().to_string();
    let wrong = site
        .post(
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
    assert_eq!(site.post("/login", None, &svc).await.status, 401);

    // The right key: a session cookie, HttpOnly and SameSite=Strict.
    let signed_in = site
        .post(
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
    let no_csrf = site
        .post(
            "/streams/close",
            Some(&cookie),
            &form(&[("id", &stream_id)]),
        )
        .await;
    assert_eq!(no_csrf.status, 403);
    let forged = form(&[("id", &stream_id), ("csrf", &"0".repeat(64))]);
    assert_eq!(
        site.post("/streams/close", Some(&cookie), &forged)
            .await
            .status,
        403
    );

    // The browser signs in through the form and sees the device online and the stream
    // with its bytes and their buttons (screenshots for docs/), then closes the stream
    // with its Close button: the stream ends at both ends.
    let page = site.get("/streams", Some(&cookie)).await.body;
    let csrf = hidden(&page, "csrf");
    let mut browser = Browser::launch(None).await;
    let base = format!("http://{addr}");
    browser.goto(&format!("{base}/login")).await;
    let fields = [("policy", "dashboard"), ("key", key.as_str())];
    browser.submit("form.login", &fields).await;
    let dom = browser.dom().await;
    assert!(
        dom.contains(r#"data-device="dev1""#) && dom.contains("online"),
        "{dom}"
    );
    assert!(
        dom.contains("Signed in as") && dom.contains("Rotate key"),
        "{dom}"
    );
    std::fs::create_dir_all(docs()).unwrap();
    browser
        .screenshot(&docs().join("dashboard-devices.png"))
        .await;
    browser.goto(&format!("{base}/streams")).await;
    let dom = browser.dom().await;
    assert!(
        dom.contains(&stream_id) && dom.contains("data-bytes-to-device"),
        "{dom}"
    );
    browser
        .screenshot(&docs().join("dashboard-streams.png"))
        .await;
    let row = format!(r#"tr[data-stream="{stream_id}"] form"#);
    browser.submit(&row, &[]).await;
    assert_eq!(browser.url().await, format!("{base}/streams"));
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the stream was not ended by the close");
    let gone = eventually_async(Duration::from_secs(5), || async {
        !site.get("/streams", None).await.body.contains(&stream_id)
    });
    assert!(gone.await, "the stream is still listed");

    // Its record says so, in the activity page and its filters.
    let logged = eventually_async(Duration::from_secs(5), || async {
        site.get("/activity?device=dev1&result=accepted&since=1h", None)
            .await
            .body
            .contains("closed by an admin")
    });
    assert!(logged.await, "no activity record of the close");
    let none = site
        .get("/activity?device=dev1&result=timeout", None)
        .await
        .body;
    assert!(!none.contains("closed by an admin"));
    let bad = site.get("/activity?since=soon", None).await;
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("not a duration"));
    browser.goto(&format!("{base}/activity")).await;
    browser
        .screenshot(&docs().join("dashboard-activity.png"))
        .await;

    // The charts: the stream's request and its set-up time, the connected device.
    let charted = eventually_async(Duration::from_secs(5), || async {
        let page = site.get("/charts", None).await.body;
        chart_highest(&page, "accepted") > 0.0
    });
    assert!(charted.await, "the closed stream is not in the charts");
    let charts = site.get("/charts", None).await.body;
    assert_eq!(charts.matches(r#"role="img""#).count(), 4, "{charts}");
    assert!(chart_highest(&charts, "p50") > 0.0 && chart_highest(&charts, "devices") >= 1.0);
    assert!(chart_highest(&charts, "bytes") > 0.0);
    assert!(charts.contains(r#"<table id="chart-data">"#));
    browser.goto(&format!("{base}/charts")).await;
    let dom = browser.dom().await;
    assert!(
        dom.contains("<svg") && dom.contains("Stream set-up time"),
        "{dom}"
    );
    browser
        .screenshot(&docs().join("dashboard-charts.png"))
        .await;

    // Disable then enable dev1 from the page: disabling cuts it off at once.
    let disabled = site
        .post(
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
    assert!(site.get("/?q=dev1", None).await.body.contains(">disabled<"));
    let enabled = site
        .post(
            "/devices/enable",
            Some(&cookie),
            &form(&[("id", "dev1"), ("csrf", &csrf)]),
        )
        .await;
    assert_eq!(enabled.status, 303);
    assert!(sys.hub.registry.device("dev1").unwrap().unwrap().enabled);

    // Rotating a key: Post/Redirect/Get. The redirect carries no key; the page it leads
    // to shows the new connection string once, and a reload shows it no more.
    let rotated = site
        .post(
            "/devices/rotate-key",
            Some(&cookie),
            &form(&[
                ("id", "dev2-never-seen"),
                ("key", "primary"),
                ("csrf", &csrf),
            ]),
        )
        .await;
    assert_eq!(
        (rotated.status, rotated.location.as_deref()),
        (303, Some("/rotated")),
        "{}",
        rotated.body
    );
    let new_key = sys
        .hub
        .registry
        .device("dev2-never-seen")
        .unwrap()
        .unwrap()
        .primary_key;
    let new_key = new_key.expose().to_string();
    assert!(!rotated.body.contains(&new_key));
    let shown = site.get("/rotated", Some(&cookie)).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains(&format!("SharedAccessKey={new_key}")));
    let reload = site.get("/rotated", Some(&cookie)).await;
    assert_eq!(reload.status, 410);
    assert!(!reload.body.contains(&new_key) && reload.body.contains("shown only once"));

    // Signing out ends the session: its cookie acts no more.
    site.post("/logout", Some(&cookie), "").await;
    let after = site
        .post(
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

/// The devices page with 10,000 registered devices (a few online), and the charts page
/// with an hour of samples: how long each takes on loopback (printed, for the README —
/// a timed assertion would fail on a loaded CI machine, not on a slow page). The registry
/// is read in three queries and one page of rows is rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_and_the_charts_render_on_loopback() {
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
    let site = Site::Plain(addr);
    site.get("/", None).await; // the first one warms SQLite's cache
    let mut slowest = Duration::ZERO;
    for path in [
        "/",
        "/?q=fleet-09&state=offline",
        "/?page=19",
        "/?state=online",
        "/?page=18446744073709551615",
        "/charts",
        "/streams",
        "/activity",
    ] {
        let started = std::time::Instant::now();
        let page = site.get(path, None).await;
        let took = started.elapsed();
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("</html>"), "{}", page.body);
        eprintln!("GET {path}: {took:?}, {} bytes", page.body.len());
        slowest = slowest.max(took);
    }
    eprintln!("slowest page with 10,001 devices: {slowest:?}");
    let all = site.get("/", None).await.body;
    assert!(all.contains("10001 device(s), 1–500 shown") && all.contains("Next page"));
    // The charts' sampler is one of the hub's tasks and ends with it: the hub's drain
    // would otherwise wait out its grace period (10 s) and more.
    let stopped = tokio::time::timeout(Duration::from_secs(5), sys.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the hub did not stop: {stopped:?}"
    );
}
