//! This hub as a node of a cluster: its copy of the registry under `nodes/<id>/` in the
//! data directory, its NATS client, and the tasks that keep it in step with the others.
//!
//! A node starts whether or not NATS answers. With NATS, its copy is brought up to the
//! cluster's before it serves anything. Without, it starts from the copy it last had
//! (a node that never joined has none and refuses to start), serves what that copy lets
//! it check, says so in `/healthz` and its log, and joins by itself when NATS is back.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, Context};
use async_nats::connection::State;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    activity, forward,
    link::{self, Link, Retry},
    on_runtime, online, open_buckets, options, presence, registry_kv, servers, streams,
    ClusterConfig, Connection,
};
use crate::{registry::Registry, Hub};

/// How long a starting node waits for NATS before it starts from its own registry copy:
/// enough for the client to try three servers (see [`link::reconnect_delay`]).
const JOIN_WAIT: Duration = Duration::from_secs(3);

/// This node in the cluster.
pub struct Node {
    pub id: String,
    pub client: async_nats::Client,
    pub(crate) link: Arc<Link>,
    /// The buckets, once NATS has answered (at start, or later when it was away then).
    conn: watch::Sender<Option<Connection>>,
    /// Replicas of what the node makes in JetStream (the activity stream).
    pub replicas: usize,
    pub(crate) presence: presence::Presence,
    /// Every device's presence entry, for the dashboard.
    pub online: online::Online,
}

impl Node {
    /// The buckets, if NATS has answered since the node started.
    pub(crate) fn conn(&self) -> Option<Connection> {
        self.conn.borrow().clone()
    }

    /// Waits for the buckets; `None` on shutdown.
    pub(crate) async fn opened(&self, shutdown: &CancellationToken) -> Option<Connection> {
        let mut rx = self.conn.subscribe();
        tokio::select! {
            () = shutdown.cancelled() => None,
            conn = rx.wait_for(Option::is_some) => conn.ok().and_then(|c| c.clone()),
        }
    }

    /// Whether NATS is reachable now.
    pub(crate) fn is_up(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// What `/healthz` says of the cluster: `None` while the node is in it.
    pub fn trouble(&self) -> Option<String> {
        match (self.link.trouble(&self.client), self.conn()) {
            (Some(trouble), _) => Some(trouble),
            (None, None) => Some("degraded: joining the cluster".to_string()),
            (None, Some(_)) => None,
        }
    }

    async fn open(&self) -> anyhow::Result<Connection> {
        let (client, replicas) = (self.client.clone(), self.replicas);
        let conn = on_runtime(async move { open_buckets(client, replicas).await }).await?;
        self.conn.send_replace(Some(conn.clone()));
        Ok(conn)
    }
}

/// A node id: `--node-id`, else the streaming URL's host and port, as NATS subject
/// tokens allow.
pub fn node_id(given: Option<&str>, streaming_url: Option<&str>, port: u16) -> String {
    let raw = match (given, streaming_url) {
        (Some(id), _) => id.to_string(),
        (None, Some(url)) => url
            .split("://")
            .last()
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_string(),
        (None, None) => format!("port-{port}"),
    };
    raw.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '_',
            },
        )
        .collect()
}

/// Makes a node: its registry copy, up to date with the cluster's if NATS answers within
/// [`JOIN_WAIT`], else as it was when the node last ran (see the module's header).
pub async fn join(
    dir: &Path,
    config: &ClusterConfig,
    id: String,
) -> anyhow::Result<(Registry, Node)> {
    let link = Link::new(&config.urls);
    // The client connects in the background, and again whenever it loses its server.
    let connecting = options(config)
        .await?
        .retry_on_initial_connect()
        .event_callback(link.on_event())
        .connect(servers(config)?);
    let client = on_runtime(async move { connecting.await.map_err(|e| anyhow!(e)) }).await?;
    let path = cache_dir(dir, &id)?.join(crate::registry::DB_FILE);
    let opening = move || Registry::open(&path).with_context(|| format!("{}", path.display()));
    let registry = tokio::task::spawn_blocking(opening).await??;
    let node = Node {
        presence: presence::Presence::new(id.clone()),
        id,
        client,
        link,
        conn: watch::channel(None).0,
        replicas: config.replicas,
        online: online::Online::default(),
    };
    if let Err(e) = up_to_date(&node, &registry).await {
        from_copy(&node, &registry, &config.urls, e)?;
    }
    let mirror = registry_kv::KvMirror::following(node.conn.subscribe());
    Ok((registry.with_mirror(Arc::new(mirror)), node))
}

fn cache_dir(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let cache = dir.join("nodes").join(id);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Owner only, like the rest of the data directory: the copy holds every key.
        builder.mode(0o700);
    }
    builder
        .create(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    Ok(cache)
}

/// Brings the node's copy up to the cluster's registry.
async fn up_to_date(node: &Node, registry: &Registry) -> anyhow::Result<()> {
    if !node.link.up_within(&node.client, JOIN_WAIT).await {
        anyhow::bail!("no NATS server answered within {JOIN_WAIT:?}");
    }
    let conn = node.open().await?;
    let copy = registry.clone();
    on_runtime(async move { registry_kv::load(&conn.registry, &copy).await }).await
}

/// Starts from the node's own copy, if it has one, since the cluster is unreachable.
fn from_copy(
    node: &Node,
    registry: &Registry,
    urls: &str,
    why: anyhow::Error,
) -> anyhow::Result<()> {
    let urls = link::shown(urls);
    if registry.setting(crate::init::HOSTNAME_SETTING).is_err() {
        return Err(why.context(format!(
            "node {} cannot start: it has no copy of the cluster's registry yet (it never \
             joined) and the cluster at {urls} is unreachable",
            node.id
        )));
    }
    let devices = registry.devices().map(|d| d.len()).unwrap_or_default();
    tracing::warn!(
        node = %node.id,
        cluster = %urls,
        devices,
        "cluster unreachable ({why:#}): starting from this node's copy of the registry; \
         the node joins by itself when NATS is back"
    );
    Ok(())
}

/// Starts the node's cluster tasks on `hub`: joining if it could not at start, the
/// registry watch, presence, the activity log, and the answering of other nodes' and the
/// CLI's requests.
pub fn start(hub: &Arc<Hub>, node: Node) -> anyhow::Result<()> {
    let node = Arc::new(node);
    if hub.cluster.set(node.clone()).is_err() {
        anyhow::bail!("the hub is in a cluster already");
    }
    // On the hub's runtime, like the work they start; each ends with the hub's shutdown.
    tokio::spawn(attach(hub.clone(), node.clone()));
    tokio::spawn(registry_kv::follow(hub.clone(), node.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    hub.sessions.report_to(tx);
    tokio::spawn(presence::write(hub.clone(), node.clone(), rx));
    tokio::spawn(presence::watch(hub.clone(), node.clone()));
    tokio::spawn(online::follow(hub.clone(), node.clone()));
    tokio::spawn(activity::publish(hub.clone(), node.clone()));
    tokio::spawn(streams::answer(hub.clone(), node.clone()));
    tokio::spawn(forward::answer(hub.clone(), node));
    Ok(())
}

/// Opens the buckets of a node that started without NATS, as soon as NATS answers.
async fn attach(hub: Arc<Hub>, node: Arc<Node>) {
    let mut retry = Retry::default();
    while node.conn().is_none() {
        if !node.link.up(&node.client, &hub.shutdown).await {
            return;
        }
        match node.open().await {
            Ok(_) => tracing::info!(node = %node.id, "joined the cluster"),
            Err(e) => tracing::warn!(node = %node.id, "cannot open the cluster's buckets: {e:#}"),
        }
        if node.conn().is_none() && !retry.wait(&node.link, &node.client, &hub.shutdown).await {
            return;
        }
    }
}
