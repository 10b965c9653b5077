//! Cluster mode (`--cluster nats://…`): many hub nodes behind one name, sharing state
//! through NATS JetStream rather than a protocol of our own (see docs/DESIGN.md).
//!
//! - [`registry_kv`]: devices, policies and settings in a KV bucket; each node keeps its
//!   own SQLite copy, fed by a watch, so reads stay local and a node goes on with the
//!   last registry it knew while NATS is away; writes go to the bucket first.
//! - [`presence`]: which node holds each device's control session; the newest session
//!   wins cluster-wide.
//! - [`activity`]: every node's activity records in one JetStream stream, and the
//!   presence bucket read as connection state, for the CLI.
//! - [`streams`]: the CLI's `streams list/close`, asked of every node at once.
//! - [`online`]: the presence bucket in memory, for the dashboard's devices page.
//! - [`forward`]: a stream request for a device another node holds is asked there over
//!   request/reply, and the answer names that node's streaming URL.
//! - [`link`]: whether NATS is reachable now; [`node`]: this hub as a node, which starts
//!   (from its registry copy) and goes on while NATS is away, and catches up when it is back.
//!
//! Every NATS call runs on one runtime of its own ([`runtime`]), so the synchronous
//! registry can wait for one from any thread, inside the hub's runtime or not.

pub mod activity;
pub mod forward;
pub mod link;
mod node;
pub mod online;
pub mod presence;
pub mod registry_kv;
pub mod streams;

pub use node::{join, node_id, start, Node};

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{anyhow, Context};
use async_nats::jetstream::{self, kv};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::registry::Registry;

/// Where `init --cluster` remembers the cluster, in the data directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// The CLI's copy of the cluster's registry, in the data directory.
const CLI_CACHE: &str = "cluster-cache.db";
const REGISTRY_BUCKET: &str = "stream_hub_registry";
const PRESENCE_BUCKET: &str = "stream_hub_presence";
/// The longest any one NATS call may take before it counts as failed.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Run as one node of a cluster: NATS servers with JetStream, comma-separated
    /// (nats://HOST:PORT[,…]). `init` remembers it for later commands.
    #[arg(long = "cluster", env = "STREAM_HUB_CLUSTER", value_name = "URLS")]
    pub urls: Option<String>,
    /// NATS credentials file (.creds) for the cluster.
    #[arg(long, env = "STREAM_HUB_CLUSTER_CREDS")]
    pub cluster_creds: Option<PathBuf>,
    /// Replicas of the cluster's KV buckets when `init` creates them (1, 3 or 5).
    #[arg(long, env = "STREAM_HUB_CLUSTER_REPLICAS", default_value_t = 1)]
    pub cluster_replicas: usize,
}

/// The cluster a data directory belongs to, as `init --cluster` wrote it down.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ClusterConfig {
    pub urls: String,
    #[serde(default)]
    pub creds: Option<PathBuf>,
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

impl ClusterArgs {
    /// The cluster given on the command line, else the one the data directory remembers.
    pub fn resolve(&self, dir: &Path) -> anyhow::Result<Option<ClusterConfig>> {
        match self.given() {
            Some(config) => Ok(Some(config)),
            None => remembered(dir),
        }
    }

    /// The cluster given on the command line.
    pub fn given(&self) -> Option<ClusterConfig> {
        Some(ClusterConfig {
            urls: self.urls.clone()?,
            creds: self.cluster_creds.clone(),
            replicas: self.cluster_replicas,
        })
    }
}

pub fn remembered(dir: &Path) -> anyhow::Result<Option<ClusterConfig>> {
    let path = dir.join(CLUSTER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    Ok(Some(config))
}

pub fn remember(dir: &Path, config: &ClusterConfig) -> anyhow::Result<()> {
    let path = dir.join(CLUSTER_FILE);
    let text = serde_json::to_string_pretty(config)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Like every file of the data directory: it may name a credentials file.
        options.mode(0o600);
    }
    let write = |mut f: std::fs::File| std::io::Write::write_all(&mut f, text.as_bytes());
    options
        .open(&path)
        .and_then(write)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The runtime every NATS client and call of this process lives on.
fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    rt.as_ref()
        .map_err(|e| anyhow!("cannot start the cluster runtime: {e}"))
}

/// Runs `fut` on the cluster runtime and waits for it from async code.
pub(crate) async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    runtime()?.spawn(fut).await.context("cluster task failed")?
}

/// Runs `fut` on the cluster runtime and waits for it from synchronous code, blocking
/// this thread (within the hub's runtime too: only registry writes do, bounded).
pub(crate) fn block<T: Send + 'static>(
    fut: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv_timeout(OP_TIMEOUT * 3)
        .map_err(|_| anyhow!("the cluster did not answer within {:?}", OP_TIMEOUT * 3))?
}

/// A connection to the cluster and its buckets.
#[derive(Clone)]
pub struct Connection {
    pub client: async_nats::Client,
    pub registry: kv::Store,
    pub presence: kv::Store,
}

impl Connection {
    /// Connects (on the cluster runtime) and opens the buckets, creating missing ones.
    pub async fn open(config: &ClusterConfig) -> anyhow::Result<Connection> {
        let config = config.clone();
        on_runtime(async move { connect(&config).await }).await
    }
}

fn servers(config: &ClusterConfig) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    config
        .urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            let urls = link::shown(&config.urls);
            format!("--cluster '{urls}' is not nats://HOST:PORT[,…]")
        })
}

async fn options(config: &ClusterConfig) -> anyhow::Result<async_nats::ConnectOptions> {
    let options = async_nats::ConnectOptions::new()
        .name("stream-hub")
        .connection_timeout(OP_TIMEOUT)
        .request_timeout(Some(OP_TIMEOUT))
        // Reconnects go on for ever, about once a second at most (with jitter): a node
        // must come back by itself soon after NATS does, without hammering it meanwhile.
        .reconnect_delay_callback(link::reconnect_delay);
    match &config.creds {
        Some(creds) => options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cluster credentials {}", creds.display())),
        None => Ok(options),
    }
}

/// Connects for a command: fails at once if no NATS server answers.
pub(crate) async fn connect(config: &ClusterConfig) -> anyhow::Result<Connection> {
    let urls = link::shown(&config.urls);
    let connecting = options(config).await?.connect(servers(config)?);
    let client = tokio::time::timeout(OP_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("no NATS server of '{urls}' answered"))?
        .with_context(|| format!("cannot connect to the cluster at {urls}"))?;
    open_buckets(client, config.replicas).await
}

async fn open_buckets(client: async_nats::Client, replicas: usize) -> anyhow::Result<Connection> {
    let js = jetstream::new(client.clone());
    let registry = bucket(&js, REGISTRY_BUCKET, replicas).await?;
    let presence = bucket(&js, PRESENCE_BUCKET, replicas).await?;
    Ok(Connection {
        client,
        registry,
        presence,
    })
}

async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.to_string(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another node may have created it meanwhile.
        Err(e) => js
            .get_key_value(name)
            .await
            .map_err(|_| anyhow!("cannot create the cluster's bucket {name}: {e}")),
    }
}

/// The registry for the CLI in a cluster's data directory: its own copy, brought up to
/// date from the cluster, whose changes go to the cluster.
pub fn cli_registry(dir: &Path, config: &ClusterConfig) -> anyhow::Result<Registry> {
    let config = config.clone();
    let conn = block(async move { connect(&config).await })?;
    open_cache(&dir.join(CLI_CACHE), &conn)
}

/// Opens a copy of the cluster's registry at `path`, brought up to date, writing through.
fn open_cache(path: &Path, conn: &Connection) -> anyhow::Result<Registry> {
    let registry =
        Registry::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let store = conn.registry.clone();
    let copy = registry.clone();
    block(async move { registry_kv::load(&store, &copy).await })?;
    let mirror = registry_kv::KvMirror::new(conn.clone());
    Ok(registry.with_mirror(Arc::new(mirror)))
}

/// `stream-hub cluster status`: the server this command reached, the buckets, and how
/// many devices each node holds.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let config = remembered(dir)?.with_context(|| {
        format!(
            "{} is not a cluster's data directory (made by 'stream-hub init --cluster …')",
            dir.display()
        )
    })?;
    let urls = config.urls.clone();
    let report = block(async move {
        use futures_util::TryStreamExt;
        let conn = connect(&config).await?;
        let server = conn.client.server_info();
        let mut nodes = std::collections::BTreeMap::<String, usize>::new();
        let keys: Vec<String> = conn.presence.keys().await?.try_collect().await?;
        for key in keys {
            if let Some(node) = conn.presence.get(key).await? {
                *nodes
                    .entry(String::from_utf8_lossy(&node).into_owned())
                    .or_default() += 1;
            }
        }
        let mut buckets = Vec::new();
        for store in [&conn.registry, &conn.presence] {
            let mut store = store.clone();
            let info = store.stream.info().await?;
            buckets.push(serde_json::json!({
                "bucket": store.name,
                "entries": info.state.messages,
                "replicas": info.config.num_replicas,
            }));
        }
        anyhow::Ok(serde_json::json!({
            "server": server.server_name,
            "version": server.version,
            "jetstream": server.jetstream,
            "buckets": buckets,
            "devices_by_node": nodes,
        }))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "cluster {urls}: server {} (nats-server {})",
        report["server"], report["version"]
    );
    for b in report["buckets"].as_array().into_iter().flatten() {
        println!(
            "bucket {}: {} entries, {} replicas",
            b["bucket"], b["entries"], b["replicas"]
        );
    }
    for (node, devices) in report["devices_by_node"].as_object().into_iter().flatten() {
        println!("node {node}: {devices} devices connected");
    }
    Ok(())
}
