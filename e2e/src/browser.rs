//! A real browser for the dashboard tests: Debian's headless Chromium, driven over the
//! DevTools protocol (a WebSocket on a loopback port it picks) — navigate, click a form's
//! button, read the DOM, take a screenshot. No browser is downloaded; nothing but
//! loopback is loaded.
//!
//! For the TLS port the browser trusts the hub's own CA the way a workstation would: the
//! CA goes into an NSS database (`certutil`, Debian's libnss3-tools) under a throw-away
//! `$HOME`, which Chromium on Linux reads for locally added roots. Certificate errors are
//! not ignored: an untrusted certificate fails the navigation.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

/// How long one page may take to load, and the browser to start.
const LIMIT: Duration = Duration::from_secs(30);

/// A headless Chromium with its own profile, killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
    _home: tempfile::TempDir,
}

/// A throw-away `$HOME` whose NSS database trusts `ca_pem` to identify servers.
fn home_trusting(ca_pem: Option<&Path>) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("temp dir");
    let Some(ca) = ca_pem else {
        return home;
    };
    let db = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("nssdb dir");
    let sql = format!("sql:{}", db.display());
    let certutil = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().expect(
            "certutil runs: scripts/test installs libnss3-tools (scripts/test.d/chromium.sh)",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "certutil {args:?}: {err}");
    };
    certutil(&["-N", "-d", &sql, "--empty-password"]);
    let ca = ca.display().to_string();
    certutil(&[
        "-A",
        "-d",
        &sql,
        "-n",
        "stream-hub CA",
        "-t",
        "C,,",
        "-i",
        &ca,
    ]);
    home
}

impl Browser {
    /// Starts Chromium; with `ca_pem`, trusting that CA for TLS servers.
    pub async fn launch(ca_pem: Option<&Path>) -> Browser {
        let home = home_trusting(ca_pem);
        let profile = tempfile::tempdir().expect("temp dir");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium runs: scripts/test installs Debian's chromium");
        let port = devtools_port(profile.path()).await;
        let ws = connect_to_page(port).await;
        let mut browser = Browser {
            child,
            ws,
            next_id: 0,
            _profile: profile,
            _home: home,
        };
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Sends one command and returns its result, skipping events meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let ask = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(ask.to_string()))
            .await
            .expect("DevTools send");
        loop {
            let got = self.next_message().await;
            if got["id"].as_u64() == Some(id) {
                assert!(got["error"].is_null(), "{method}: {got}");
                return got["result"].clone();
            }
        }
    }

    async fn next_message(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("DevTools answered in time")
                .expect("DevTools connection open")
                .expect("DevTools message");
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).expect("DevTools JSON");
            }
        }
    }

    async fn wait_for_load(&mut self) {
        while self.next_message().await["method"] != "Page.loadEventFired" {}
    }

    /// Opens `url` and waits until it has loaded; panics if it could not (a certificate
    /// the browser does not trust, a refused connection).
    pub async fn goto(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(nav["errorText"].is_null(), "{url}: {}", nav["errorText"]);
        self.wait_for_load().await;
    }

    /// Whether opening `url` fails, and with what error (`net::ERR_…`).
    pub async fn goto_error(&mut self, url: &str) -> Option<String> {
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        nav["errorText"].as_str().map(str::to_string)
    }

    /// Runs `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true });
        let got = self.call("Runtime.evaluate", params).await;
        assert!(got["exceptionDetails"].is_null(), "{expression}: {got}");
        got["result"]["value"].clone()
    }

    /// Fills the inputs `fields` (by name) of the form matching `form`, clicks its submit
    /// button as a user would, and waits for the page the server answers with.
    pub async fn submit(&mut self, form: &str, fields: &[(&str, &str)]) {
        let mut js = format!("(() => {{ const f = document.querySelector({form:?});");
        for (name, value) in fields {
            js.push_str(&format!(
                "f.querySelector('[name={name}]').value = {value:?};"
            ));
        }
        js.push_str("f.querySelector('button[type=submit]').click(); })()");
        self.eval(&js).await;
        self.wait_for_load().await;
    }

    /// The page as the browser built it.
    pub async fn dom(&mut self) -> String {
        let html = self.eval("document.documentElement.outerHTML").await;
        html.as_str().unwrap_or_default().to_string()
    }

    /// The page's address now (after redirects).
    pub async fn url(&mut self) -> String {
        let url = self.eval("location.href").await;
        url.as_str().unwrap_or_default().to_string()
    }

    /// A PNG screenshot of the viewport into `file`.
    pub async fn screenshot(&mut self, file: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(file, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools port Chromium picked, from the file it writes into its profile.
async fn devtools_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(Ok(port)) = text.lines().next().map(str::parse) {
            return port;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromium did not start within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A DevTools connection to the browser's first page.
async fn connect_to_page(port: u16) -> WebSocketStream<TcpStream> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let list = crate::web::Site::Plain(addr).get("/json/list", None).await;
    let targets: Value = serde_json::from_str(&list.body).expect("DevTools target list");
    let url = targets
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let tcp = TcpStream::connect(addr).await.expect("DevTools port");
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("DevTools WebSocket");
    ws
}
