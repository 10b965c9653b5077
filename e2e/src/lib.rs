//! Test harness: the whole system on loopback, in-process where it can be (hub, proxies
//! as real tasks on real sockets with real TLS) and as real processes where the point is
//! the process (OpenSSH's `ssh` and `sshd`, the proxies' binaries).
//!
//! Nothing here fakes a part: [`System`] runs the real hub on a port-0 listener with a
//! data directory made by the real `init`, and the proxies' real `run` functions.
//!
//! Layout:
//! - [`System`] (here): a hub with its data directory, and the proxies run against it.
//! - [`clients`]: the proxies' settings as plain test values, made into real clients.
//! - [`fault`]: peers that echo or answer once, a link that goes silent, the binaries as
//!   child processes, and what a process holds.
//! - [`raw`]: a bare MQTT device speaking Azure's protocol, for devices that misbehave.
//! - [`x509`]: CAs and device certificates made with rcgen, as PEM files.
//! - [`daemon`]: starting real third-party daemons on a free loopback port; [`sshd`],
//!   [`tinyproxy`] and [`xrdp`] are those daemons with their clients.
//! - [`nats`]: real NATS servers with JetStream, and hub nodes as processes, for cluster
//!   tests.
//! - [`web`]: a plain HTTP(S) client for the dashboard's pages, forms and cookies;
//!   [`browser`]: headless Chromium driven over the DevTools protocol, for screenshots and clicks.
#![forbid(unsafe_code)]

pub mod browser;
pub mod clients;
pub mod cluster;
pub mod daemon;
pub mod fault;
pub mod nats;
pub mod raw;
pub mod sshd;
pub mod tinyproxy;
pub mod web;
pub mod x509;
pub mod xrdp;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use clients::{
    connector, device_config, open_stream, request_stream, spawn_device, DeviceConfig,
    ServiceConfig,
};
use device_streams::{
    protocol::{
        connection_string::{DeviceConnectionString, ServiceConnectionString},
        Secret,
    },
    Connector,
};
use stream_hub::{
    init::{self, DataDir},
    Config, Hub, Limits,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// Log output for a failing test: `RUST_LOG=debug cargo test`.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running hub with its data directory.
pub struct System {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The MQTT-over-TLS port (`serve --mqtt-listen`), when started with one.
    pub mqtt_addr: Option<SocketAddr>,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A task running one of the proxies, stopped on drop.
pub struct Running {
    pub cancel: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        (&mut self.task).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl System {
    pub async fn start() -> System {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> System {
        Self::start_streaming(limits, false).await
    }

    /// A hub that advertises its streaming endpoint under another host name than its main
    /// one (`127.0.0.1` instead of `localhost`, same port), as Azure's are different hosts.
    pub async fn start_streaming_elsewhere() -> System {
        Self::start_streaming(Limits::default(), true).await
    }

    /// A hub that also serves MQTT straight over TLS on a port of its own
    /// (`serve --mqtt-listen`), at [`System::mqtt_addr`].
    pub async fn start_with_mqtt(limits: Limits) -> System {
        let mqtt = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_full(limits, false, Some(mqtt)).await
    }

    async fn start_streaming(limits: Limits, elsewhere: bool) -> System {
        Self::start_full(limits, elsewhere, None).await
    }

    async fn start_full(limits: Limits, elsewhere: bool, mqtt: Option<TcpListener>) -> System {
        trace();
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mqtt_addr = mqtt.as_ref().map(|l| l.local_addr().expect("addr"));
        let data = DataDir::new(dir.path().join("hub"));
        init::init(&data, &format!("localhost:{}", addr.port())).expect("init");
        let streaming = elsewhere.then(|| format!("wss://127.0.0.1:{}", addr.port()));
        let listeners = (listener, mqtt);
        let (hub, shutdown, task) = launch(&data, listeners, limits, streaming, &[]);
        System {
            dir,
            addr,
            mqtt_addr,
            hub,
            shutdown,
            task: Some(task),
        }
    }

    /// A hub and a [`fault::Forwarder`] in front of it that the hub knows as one of its
    /// names (`serve --alias`), so credentials naming the forwarder's port are its own.
    pub async fn start_behind_forwarder() -> (System, fault::Forwarder) {
        trace();
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fwd = fault::Forwarder::start(addr).await;
        let data = DataDir::new(dir.path().join("hub"));
        init::init(&data, &format!("localhost:{}", addr.port())).expect("init");
        let alias = format!("localhost:{}", fwd.addr.port());
        let listeners = (listener, None);
        let (hub, shutdown, task) = launch(&data, listeners, Limits::default(), None, &[alias]);
        let sys = System {
            dir,
            addr,
            mqtt_addr: None,
            hub,
            shutdown,
            task: Some(task),
        };
        (sys, fwd)
    }

    /// Stops the hub (as its shutdown signal would) and starts a new one on the same port
    /// with the same data directory and limits.
    pub async fn restart(&mut self) {
        self.restart_after(Duration::ZERO).await;
    }

    /// [`System::restart`], with the hub down for `down` in between (an outage).
    pub async fn restart_after(&mut self, down: Duration) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("hub task").expect("hub stopped cleanly");
        }
        tokio::time::sleep(down).await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the hub's port");
        let mqtt = match self.mqtt_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.expect("rebind the MQTT port")),
            None => None,
        };
        let limits = (*self.hub.limits()).clone();
        let streaming = Some(self.hub.config.streaming_base.clone());
        let aliases = self.hub.config.names[1..].to_vec();
        let listeners = (listener, mqtt);
        let (hub, shutdown, task) = launch(&self.data(), listeners, limits, streaming, &aliases);
        (self.hub, self.shutdown, self.task) = (hub, shutdown, Some(task));
    }

    pub fn data(&self) -> DataDir {
        DataDir::new(self.dir.path().join("hub"))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data().ca_file()
    }

    pub fn hostname(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn host(&self) -> device_streams::protocol::connection_string::HostName {
        self.hostname().parse().expect("host name")
    }

    /// The hub's `/metrics` text (on its main port).
    pub async fn metrics(&self) -> String {
        let (_, body) = https(
            &self.connector(),
            &self.hostname(),
            "GET",
            "/metrics",
            None,
            "",
        )
        .await;
        body
    }

    pub fn connector(&self) -> Connector {
        connector(&self.ca_file())
    }

    /// The MQTT-over-TLS port; panics if the hub was started without one.
    pub fn mqtt_port(&self) -> u16 {
        self.mqtt_addr
            .expect("a hub started with an MQTT port (System::start_with_mqtt)")
            .port()
    }

    /// Registers a device and returns its connection string.
    pub fn add_device(&self, id: &str) -> DeviceConnectionString {
        let device = self.hub.registry.add_device(id).expect("add device");
        DeviceConnectionString::new(self.host(), id, device.primary_key)
    }

    pub fn service_connection(&self) -> ServiceConnectionString {
        let policy = self
            .hub
            .registry
            .policy(init::DEFAULT_POLICY)
            .expect("registry")
            .expect("policy");
        ServiceConnectionString::new(self.host(), policy.name, policy.primary_key)
    }

    /// Starts a device proxy for `device` with `map` and waits until the hub sees it.
    pub async fn start_device(&self, connection: DeviceConnectionString, map: &[&str]) -> Running {
        // A module's session is the hub's `<device>/<module>`.
        let device = match &connection.module_id {
            Some(m) => format!("{}/{m}", connection.device_id),
            None => connection.device_id.clone(),
        };
        let config = device_config(connection, self.connector(), map);
        let running = spawn_device(config);
        self.wait_connected(&device).await;
        running
    }

    pub async fn wait_connected(&self, device: &str) {
        let connected = eventually(Duration::from_secs(5), || self.hub.is_connected(device));
        assert!(
            connected.await,
            "device {device} did not connect to the hub"
        );
    }

    pub fn service_config(&self, device: &str, stream: &str) -> ServiceConfig {
        ServiceConfig::new(self.service_connection(), self.connector(), device, stream)
    }

    /// Starts a listening service proxy for `device`/`stream`; returns its address.
    pub async fn start_service(&self, device: &str, stream: &str) -> (SocketAddr, Running) {
        start_service_proxy(self.service_config(device, stream)).await
    }
}

/// Starts a listening service proxy with `config`; returns its address.
pub async fn start_service_proxy(config: ServiceConfig) -> (SocketAddr, Running) {
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let (proxy, route) = (Arc::new(config.proxy()), config.route());
        let task = tokio::spawn(service_local_proxy::run(
            listener,
            proxy,
            route,
            cancel.clone(),
        ));
        (addr, Running { cancel, task })
    }
}

impl System {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

type HubTask = JoinHandle<anyhow::Result<()>>;

/// Starts a hub on its main listener and, if given, its MQTT-over-TLS listener.
fn launch(
    data: &DataDir,
    (listener, mqtt): (TcpListener, Option<TcpListener>),
    limits: Limits,
    streaming_url: Option<String>,
    aliases: &[String],
) -> (Arc<Hub>, CancellationToken, HubTask) {
    let port = listener.local_addr().expect("addr").port();
    let registry = data.registry().expect("registry");
    let certs = stream_hub::tls::CertStore::open(&data.cert_file(), &data.key_file()).expect("tls");
    let tls = stream_hub::tls::server_config(Arc::new(certs)).expect("tls");
    let hostname = data.hostname(&registry).expect("hostname");
    let mut config = Config::new(hostname, port, streaming_url);
    for alias in aliases {
        config = config.with_alias(alias.clone());
    }
    let shutdown = CancellationToken::new();
    let hub = Hub::new(config, limits, registry, shutdown.clone()).expect("hub");
    let task = tokio::spawn(stream_hub::run_with(listener, mqtt, tls, hub.clone()));
    (hub, shutdown, task)
}

/// A binary of this workspace, built by `cargo test --workspace` next to the test executables.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}

/// A secret's text, for handing to a child process.
pub fn expose(secret: &Secret) -> String {
    secret.expose().to_string()
}

/// `n` bytes of randomness.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The whole path for ssh: a real sshd, the hub, a device proxy mapping `ssh` to the
/// sshd, and a listening service proxy for `dev1`.
pub struct SshTunnel {
    pub sshd: sshd::Sshd,
    pub sys: System,
    pub device: Running,
    pub service: Running,
    /// The service proxy's port: `ssh -p <port>` goes through the tunnel.
    pub port: u16,
}

impl SshTunnel {
    pub async fn start() -> SshTunnel {
        let sshd = sshd::Sshd::start();
        let sys = System::start().await;
        let dev = sys.add_device("dev1");
        let device = sys
            .start_device(dev, &[&format!("ssh=127.0.0.1:{}", sshd.port)])
            .await;
        let (addr, service) = sys.start_service("dev1", "ssh").await;
        SshTunnel {
            sshd,
            sys,
            device,
            service,
            port: addr.port(),
        }
    }

    /// `ssh` through the tunnel, running `remote` on the device.
    pub fn ssh(&self, remote: &str) -> std::process::Command {
        self.sshd.ssh(self.port, remote)
    }
}

/// One HTTPS request to the hub; returns the status and the body as text.
pub async fn https(
    connector: &Connector,
    hostname: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let (host, port) = hostname.rsplit_once(':').expect("host:port");
    let tls = connector
        .connect(host, port.parse().expect("port"))
        .await
        .expect("TLS to the hub");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", hostname);
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A service SAS token for `policy` with `key`, valid for a minute.
pub fn service_token(hostname: &str, policy: &str, key: &Secret) -> String {
    let token = device_streams::protocol::sas::sign_for(
        hostname,
        key,
        Duration::from_secs(60),
        Some(policy),
    );
    token.expect("sign").expose().to_string()
}

/// Runs `stream-hub --data-dir <dir> <args>` and returns stdout; panics with stderr on failure.
pub fn hub_cli(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin("stream-hub"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("stream-hub runs");
    assert!(
        out.status.success(),
        "stream-hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP connection to `to` from the loopback address `from` (`127.0.0.2`, …), as from
/// another host: the hub's per-address limits see a different address.
pub async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("a loopback address");
    socket.bind(local).expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Runs `cmd` (ssh, scp, …) on a blocking thread, feeding it `input` on stdin while its
/// output is read, so neither side can fill a pipe and wait on the other.
pub async fn run_with_input(
    mut cmd: std::process::Command,
    input: Vec<u8>,
) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("command starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("command runs");
        let _ = writer.join();
        out
    })
    .await
    .expect("blocking task")
}

/// Sends `msg` and reads the same bytes back (through an echo peer) within 5 s.
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).await.expect("write");
    s.flush().await.expect("flush");
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(got, msg);
}

/// Polls `cond` every 20 ms for up to `limit`; true once it holds.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    eventually_async(limit, || std::future::ready(cond())).await
}

/// [`eventually`] for a condition that has to wait itself (a request, a scrape).
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond().await
}
