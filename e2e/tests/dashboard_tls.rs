//! The dashboard on the hub's TLS port (`serve --dashboard`, here through its environment
//! variable), for remote admins: the real `stream-hub` process with a device proxy and a
//! stream through it. Every page needs a sign-in there; the cookie is `Secure`,
//! `HttpOnly`, `SameSite=Strict` and scoped to `/dashboard`; registry-list and
//! registry-read look but cannot act, registry-write acts; a rotated key is shown once and
//! never logged; the REST API beside it is unchanged. Then a real Chromium that trusts
//! the hub's CA (and one that does not) signs in through the form.

use std::{path::Path, process::Stdio, time::Duration};

use e2e::{
    browser::Browser,
    device_config, eventually_async,
    fault::{retry, HubProcess, Peer},
    hub_cli, open_stream, round_trip, spawn_device,
    web::{cookie_pair, form, hidden, key_of, sign_in, Site},
};

const BASE: &str = "/dashboard";

/// `stream-hub serve --dashboard` (as `STREAM_HUB_DASHBOARD=true`), logging at debug
/// level into `log`.
fn serve(hub: &HubProcess, log: &Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("log file");
    tokio::process::Command::new(e2e::bin("stream-hub"))
        .arg("--data-dir")
        .arg(&hub.dir)
        .args(["serve", "--listen", &hub.listen()])
        .env("STREAM_HUB_DASHBOARD", "true")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("stream-hub serve")
}

/// A policy with `rights`, made by the CLI; returns its key.
fn policy(hub: &HubProcess, name: &str, rights: &str) -> String {
    key_of(&hub_cli(
        &hub.dir,
        &["policy", "add", name, "--rights", rights],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_on_the_tls_port_needs_a_sign_in_and_acts_only_for_registry_write() {
    e2e::trace();
    let hub = HubProcess::init();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("hub.log");
    let lister = policy(&hub, "lister", "registry-list");
    let reader = policy(&hub, "reader", "registry-read");
    let writer = policy(&hub, "writer", "registry-write");
    let connect_only = policy(&hub, "connect-only", "service-connect");
    let _hub = serve(&hub, &log);
    let site = Site::Tls {
        connector: hub.connector(),
        hostname: format!("localhost:{}", hub.port),
    };
    retry("the hub's TLS port", || {
        tokio::net::TcpStream::connect(hub.listen())
    })
    .await;
    let login = site.get(&format!("{BASE}/login"), None).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(
        login.body.contains(r#"action="/dashboard/login""#),
        "{}",
        login.body
    );

    let echo = Peer::echo().await;
    let device = hub.device_cs.parse().unwrap();
    let map = format!("echo={}", echo.addr);
    let _device = spawn_device(device_config(device, hub.connector(), &[&map]));
    let service = hub.service_config("echo");
    let mut stream = retry("dev1 online", || open_stream(&service)).await;
    round_trip(&mut stream, b"through the hub").await;

    nothing_without_a_session(&site, &connect_only).await;

    // The cookie: Secure on TLS, script cannot read it, other sites' requests do not
    // carry it, and only the dashboard's paths get it.
    let set_cookie = sign_in(&site, BASE, "lister", &lister)
        .await
        .expect("lister signs in");
    for attribute in [
        "; Secure",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Path=/dashboard;",
    ] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} not in {set_cookie}"
        );
    }
    let listing = cookie_pair(&set_cookie);
    looks_but_cannot_act(&site, &listing).await;
    let reading = cookie_pair(
        &sign_in(&site, BASE, "reader", &reader)
            .await
            .expect("reader"),
    );
    looks_but_cannot_act(&site, &reading).await;

    // registry-write acts: closes the stream from the page, which ends it at both ends.
    let writing = cookie_pair(
        &sign_in(&site, BASE, "writer", &writer)
            .await
            .expect("writer"),
    );
    let page = site.get("/dashboard/streams", Some(&writing)).await.body;
    let csrf = hidden(&page, "csrf");
    let id = hidden(
        &page[page
            .find("/dashboard/streams/close")
            .expect("a Close button")..],
        "id",
    );
    let closed = site
        .post(
            "/dashboard/streams/close",
            Some(&writing),
            &form(&[("id", &id), ("csrf", &csrf)]),
        )
        .await;
    assert_eq!(
        (closed.status, closed.location.as_deref()),
        (303, Some("/dashboard/streams"))
    );
    let mut rest = Vec::new();
    let ended = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .is_ok(),
        "the stream goes on"
    );

    rotate_shows_the_key_once_and_never_logs_it(&site, &writing, &csrf, &log).await;

    // The REST API beside it is Azure's as before: a session cookie is no credential there.
    let rest_call = site.get("/devices/dev1", Some(&writing)).await;
    assert_eq!(rest_call.status, 401, "{}", rest_call.body);

    in_a_browser_trusting_the_hubs_ca(&hub, &lister).await;
}

/// Without a session views lead to the sign-in page and actions are refused; a wrong
/// key, or a policy without a registry right, cannot sign in.
async fn nothing_without_a_session(site: &Site, connect_only_key: &str) {
    for path in ["/", "/streams", "/activity", "/charts"] {
        let page = site.get(&format!("{BASE}{path}"), None).await;
        assert_eq!(
            (page.status, page.location.as_deref()),
            (303, Some("/dashboard/login")),
            "{path}"
        );
    }
    let refused = site
        .post("/dashboard/devices/disable", None, &form(&[("id", "dev1")]))
        .await;
    assert_eq!(refused.status, 403);
    // Nor can another site's page post the sign-in form (login CSRF).
    let key = form(&[("policy", "connect-only"), ("key", connect_only_key)]);
    let forged = site
        .request_from("https://evil.example", "/dashboard/login", &key)
        .await;
    assert!(
        forged.status == 403 && forged.cookie.is_none(),
        "{forged:?}"
    );
    for (name, key) in [("writer", "d3Jvbmc="), ("connect-only", connect_only_key)] {
        let refusal = sign_in(site, BASE, name, key).await.expect_err(name);
        assert_eq!(refusal.status, 401, "{name}");
        assert!(refusal.cookie.is_none() && refusal.body.contains("Sign-in failed"));
    }
}

/// A session of a policy without registry-write sees every page, no action button and no
/// key, and its forged action is refused.
async fn looks_but_cannot_act(site: &Site, cookie: &str) {
    let devices = eventually_async(Duration::from_secs(5), || async {
        let page = site.get("/dashboard/", Some(cookie)).await.body;
        page.contains(r#"data-device="dev1""#) && page.contains(">online<")
    });
    assert!(devices.await, "dev1 is not shown online");
    for path in ["/", "/streams", "/activity", "/charts"] {
        let page = site.get(&format!("{BASE}{path}"), Some(cookie)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(!page.body.contains("SharedAccessKey") && !page.body.contains(r#"name="csrf""#));
        assert!(
            !page.body.contains("/dashboard/devices/disable"),
            "{path} offers an action"
        );
    }
    let forged = form(&[("id", "dev1"), ("csrf", &"0".repeat(64))]);
    let refused = site
        .post("/dashboard/devices/disable", Some(cookie), &forged)
        .await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("lacks registry-write"),
        "{}",
        refused.body
    );
}

/// Post/Redirect/Get: the redirect carries no key, the page it leads to shows the new
/// connection string once, a reload does not, and the hub's debug log never has it.
async fn rotate_shows_the_key_once_and_never_logs_it(
    site: &Site,
    cookie: &str,
    csrf: &str,
    log: &Path,
) {
    let ask = form(&[("id", "dev1"), ("key", "secondary"), ("csrf", csrf)]);
    let rotated = site
        .post("/dashboard/devices/rotate-key", Some(cookie), &ask)
        .await;
    assert_eq!(
        (rotated.status, rotated.location.as_deref()),
        (303, Some("/dashboard/rotated"))
    );
    let shown = site.get("/dashboard/rotated", Some(cookie)).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let at = shown
        .body
        .find("SharedAccessKey=")
        .expect("the new connection string");
    let key: String = shown.body[at + "SharedAccessKey=".len()..]
        .chars()
        .take_while(|c| *c != '<' && *c != ';')
        .collect();
    assert!(
        shown.body.contains("DeviceId=dev1") && key.len() >= 40,
        "{}",
        shown.body
    );
    let reload = site.get("/dashboard/rotated", Some(cookie)).await;
    assert_eq!(reload.status, 410);
    assert!(!reload.body.contains(&key));
    let logged = std::fs::read_to_string(log).expect("the hub's log");
    assert!(logged.contains("dashboard: key rotated"), "{logged}");
    assert!(!logged.contains(&key), "the new key is in the hub's log");
}

/// Chromium with the hub's CA in its NSS database signs in through the form over TLS
/// and sees the pages; without the CA it refuses the hub's certificate.
async fn in_a_browser_trusting_the_hubs_ca(hub: &HubProcess, lister_key: &str) {
    let origin = format!("https://localhost:{}", hub.port);
    let mut untrusting = Browser::launch(None).await;
    let error = untrusting
        .goto_error(&format!("{origin}{BASE}/login"))
        .await;
    assert_eq!(error.as_deref(), Some("net::ERR_CERT_AUTHORITY_INVALID"));
    drop(untrusting);

    let mut browser = Browser::launch(Some(&hub.dir.join("ca.pem"))).await;
    browser.goto(&format!("{origin}{BASE}/")).await;
    assert_eq!(browser.url().await, format!("{origin}{BASE}/login"));
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    browser
        .screenshot(&docs.join("dashboard-sign-in.png"))
        .await;
    let fields = [("policy", "lister"), ("key", lister_key)];
    browser.submit("form.login", &fields).await;
    assert_eq!(browser.url().await, format!("{origin}{BASE}/"));
    let dom = browser.dom().await;
    assert!(
        dom.contains("Signed in as") && dom.contains(r#"data-device="dev1""#),
        "{dom}"
    );
    browser.goto(&format!("{origin}{BASE}/charts")).await;
    let dom = browser.dom().await;
    assert!(
        dom.contains("<svg") && dom.contains("Connected devices"),
        "{dom}"
    );
}
