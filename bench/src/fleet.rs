//! The fleet: as many idle devices on one hub as the machine allows, for the connect rate
//! (TLS, WebSocket upgrade, MQTT CONNECT and SUBSCRIBE, per second) and the hub's memory
//! per idle device at scale.
//!
//! The devices live in child processes (this binary again, as `bench fleet-child`), so
//! the open-file limit binds the hub alone, not the hub and its clients together; each
//! child dials from a loopback source address of its own (127.0.0.2, 127.0.0.3, …), so
//! the ephemeral port range is per child, not shared by the whole fleet. Every
//! handshake is a full one (no TLS resumption): the cost of a fleet meeting a hub for
//! the first time, or after the hub lost its ticket keys in a restart.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use device_streams::connector::tls;
use device_streams_protocol::{
    mqtt::{MqttIo, MAX_PACKET},
    read_ahead::ReadAhead,
    wire::{MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
    ws::{control_config, WsStream},
    Secret,
};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    net::TcpSocket,
    process::{Child, Command},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::{devices, ours::Ours, procs::Proc};

/// The first argument that makes this binary a fleet child instead of the benchmark.
pub const CHILD: &str = "fleet-child";

/// What a fleet run measured.
pub struct Fleet {
    pub devices: usize,
    /// From the children's start to the last device's SUBACK.
    pub connect_time: Duration,
    pub hub_rss_before_kib: u64,
    pub hub_rss_after_kib: u64,
}

impl Fleet {
    pub fn per_second(&self) -> f64 {
        self.devices as f64 / self.connect_time.as_secs_f64()
    }

    pub fn kib_per_device(&self) -> f64 {
        self.hub_rss_after_kib
            .saturating_sub(self.hub_rss_before_kib) as f64
            / self.devices as f64
    }
}

/// Connects all of `ours`' registered idle devices from `children` processes, each with
/// `parallel` handshakes in flight, and measures the rate and the hub's RSS growth.
pub async fn run(
    ours: &Ours,
    work: &Path,
    children: usize,
    parallel: usize,
) -> anyhow::Result<Fleet> {
    let reg = &ours.registered;
    let n = reg.idle.len();
    let keys = work.join("fleet-keys");
    write_keys(&keys, &reg.idle)?;
    let before = settled_rss(&ours.hub).await?;
    let started = Instant::now();
    let mut running = Vec::new();
    for i in 0..children {
        let (from, to) = (n * i / children, n * (i + 1) / children);
        let source = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
        let spec = ChildSpec {
            hub: ours.hub_addr(),
            hostname: reg.hostname.clone(),
            ca_file: reg.ca_file.clone(),
            keys: keys.clone(),
            from,
            to,
            source,
            parallel,
        };
        running.push(spec.spawn()?);
    }
    for child in &mut running {
        child.connected().await?;
    }
    let connect_time = started.elapsed();
    let after = settled_rss(&ours.hub).await?;
    // Closing their stdin ends the children: the devices disconnect.
    drop(running);
    Ok(Fleet {
        devices: n,
        connect_time,
        hub_rss_before_kib: before,
        hub_rss_after_kib: after,
    })
}

/// RSS once it has stopped moving (allocations of the last connections settle).
async fn settled_rss(p: &Proc) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.rss_kib()
}

/// The devices' ids and keys, one `id key` line each, readable by this user alone.
fn write_keys(path: &Path, idle: &[(String, Secret)]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut text = String::new();
    for (id, key) in idle {
        text.push_str(&format!("{id} {}\n", key.expose()));
    }
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// One child's share of the fleet, as its command line.
#[derive(Parser, Clone)]
#[command(name = "bench fleet-child")]
struct ChildSpec {
    #[arg(long)]
    hub: SocketAddr,
    #[arg(long)]
    hostname: String,
    #[arg(long)]
    ca_file: PathBuf,
    #[arg(long)]
    keys: PathBuf,
    #[arg(long)]
    from: usize,
    #[arg(long)]
    to: usize,
    #[arg(long)]
    source: Ipv4Addr,
    #[arg(long)]
    parallel: usize,
}

/// A running child; dropping it closes its stdin, which ends it.
struct Running {
    child: Child,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    source: Ipv4Addr,
}

impl ChildSpec {
    fn spawn(&self) -> anyhow::Result<Running> {
        let exe = std::env::current_exe().context("cannot find the bench binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg(CHILD)
            .arg("--hub")
            .arg(self.hub.to_string())
            .args(["--hostname", &self.hostname])
            .arg("--ca-file")
            .arg(&self.ca_file)
            .arg("--keys")
            .arg(&self.keys)
            .args([
                "--from",
                &self.from.to_string(),
                "--to",
                &self.to.to_string(),
            ])
            .args(["--source", &self.source.to_string()])
            .args(["--parallel", &self.parallel.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start a fleet child")?;
        let stdout = child.stdout.take().context("fleet child without stdout")?;
        Ok(Running {
            child,
            out: BufReader::new(stdout).lines(),
            source: self.source,
        })
    }
}

impl Running {
    /// Waits for the child's report that all its devices are connected.
    async fn connected(&mut self) -> anyhow::Result<()> {
        let line = tokio::time::timeout(Duration::from_secs(600), self.out.next_line())
            .await
            .with_context(|| format!("fleet child {} took over 600 s", self.source))??;
        match line {
            Some(l) if l.starts_with("connected") => Ok(()),
            Some(l) => anyhow::bail!("fleet child {}: {l}", self.source),
            None => {
                let status = self.child.wait().await?;
                anyhow::bail!("fleet child {} exited ({status})", self.source)
            }
        }
    }
}

/// `bench fleet-child …`: connects its devices, prints `connected N`, holds them until
/// its stdin closes. A failure is printed as one line naming the device and the cause.
pub async fn child_main() -> anyhow::Result<()> {
    let spec = ChildSpec::parse_from(std::env::args().skip(1));
    match connect_all(&spec).await {
        Ok(sessions) => {
            println!("connected {}", sessions.len());
            let mut stdin = tokio::io::stdin();
            let mut sink = [0u8; 64];
            while stdin.read(&mut sink).await? > 0 {}
            drop(sessions);
            Ok(())
        }
        Err(e) => {
            println!("failed: {e:#}");
            Err(e)
        }
    }
}

type FleetSession =
    MqttIo<WsStream<tokio_rustls::client::TlsStream<ReadAhead<tokio::net::TcpStream>>>>;

async fn connect_all(spec: &ChildSpec) -> anyhow::Result<Vec<FleetSession>> {
    let text = std::fs::read_to_string(&spec.keys)
        .with_context(|| format!("cannot read {}", spec.keys.display()))?;
    let mut config = (*tls::client_config(Some(&spec.ca_file))?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let gate = Arc::new(Semaphore::new(spec.parallel));
    let mut tasks = JoinSet::new();
    for line in text.lines().skip(spec.from).take(spec.to - spec.from) {
        let (id, key) = line.split_once(' ').context("malformed keys file")?;
        let (id, key) = (id.to_string(), Secret::new(key));
        let (spec, tls, gate) = (spec.clone(), tls.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let session =
                tokio::time::timeout(Duration::from_secs(30), dial(&spec, &tls, &id, &key));
            session
                .await
                .with_context(|| format!("device {id}: no session within 30 s"))?
                .with_context(|| format!("device {id}"))
        });
    }
    let mut sessions = Vec::with_capacity(spec.to - spec.from);
    while let Some(done) = tasks.join_next().await {
        sessions.push(done??);
    }
    Ok(sessions)
}

/// One device's control session, from `spec.source`.
async fn dial(
    spec: &ChildSpec,
    tls: &tokio_rustls::TlsConnector,
    id: &str,
    key: &Secret,
) -> anyhow::Result<FleetSession> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(spec.source), 0))?;
    let tcp = socket.connect(spec.hub).await.context("TCP connect")?;
    let host = spec
        .hostname
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let name = ServerName::try_from(host).context("hub host name")?;
    let tls = tls
        .connect(name, ReadAhead::new(tcp))
        .await
        .context("TLS")?;
    let url = format!("wss://{}{MQTT_WS_PATH}", spec.hostname);
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(MQTT_WS_SUBPROTOCOL),
    );
    let config = control_config(MAX_PACKET);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, Some(config))
        .await
        .context("WebSocket upgrade")?;
    let mut io = MqttIo::new(WsStream::new(ws), MAX_PACKET);
    devices::sign_in(&mut io, &spec.hostname, id, key).await?;
    Ok(io)
}

/// `--fleet N`: registers N devices on a fresh hub, connects them and prints the figures.
pub async fn table(
    bin: &Path,
    work: &Path,
    target: SocketAddr,
    (n, children, parallel): (usize, usize, usize),
) -> anyhow::Result<()> {
    let work = work.join("fleet");
    std::fs::create_dir_all(&work)?;
    eprintln!("registering {n} devices");
    let ours = Ours::start(bin, &work, target, n).await?;
    eprintln!("connecting them from {children} processes, {parallel} handshakes in flight each");
    let fleet = run(&ours, &work, children, parallel).await?;
    println!(
        "| {} idle devices, {children} client processes × {parallel} in flight | |",
        fleet.devices
    );
    println!("|---|---|");
    println!(
        "| connect time (TLS, upgrade, CONNECT, SUBSCRIBE) | {:.2} s |",
        fleet.connect_time.as_secs_f64()
    );
    println!("| connect rate | {:.0} devices/s |", fleet.per_second());
    println!(
        "| hub RSS before / after | {} / {} MiB |",
        fleet.hub_rss_before_kib / 1024,
        fleet.hub_rss_after_kib / 1024
    );
    println!(
        "| hub RSS per idle device | {:.1} KiB |",
        fleet.kib_per_device()
    );
    Ok(())
}
