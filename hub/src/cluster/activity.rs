//! The cluster's activity log and connection state, for the CLI against a cluster.
//!
//! Every node copies the records it stores ([`crate::activity`]) into one JetStream
//! stream, `stream_hub_activity`, subject `stream_hub.activity.<node>`, which keeps them
//! for `--activity-max-age` (and at most `--activity-max-records` in all, the newest);
//! `stream-hub logs` reads that stream. Records name devices, streams and policies, never
//! a key or token. Which devices are online is the presence bucket's ([`super::presence`]).

use std::{collections::HashMap, sync::Arc};

use anyhow::{anyhow, Context};
use async_nats::jetstream::{self, consumer, kv::Operation, stream};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{ClusterConfig, Node, OP_TIMEOUT};
use crate::{activity::Entry, config::Retention, live::DeviceState, Hub};

const STREAM: &str = "stream_hub_activity";
/// Records a node may have on their way to the cluster; more wait on this node only.
const QUEUE: usize = 65_536;
/// Records published before their acknowledgements are awaited together.
const BATCH: usize = 256;

fn subject(node: &str) -> String {
    format!("stream_hub.activity.{node}")
}

/// Makes the stream, or brings its limits to this node's flags: the last node to start
/// sets them for all (replicas only when it is made: NATS cannot change them in place).
async fn ensure(
    js: &jetstream::Context,
    retention: &Retention,
    replicas: usize,
) -> anyhow::Result<()> {
    let config = stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["stream_hub.activity.>".to_string()],
        max_age: retention.max_age,
        max_messages: i64::try_from(retention.max_records).unwrap_or(i64::MAX),
        num_replicas: replicas,
        ..Default::default()
    };
    let made = tokio::time::timeout(OP_TIMEOUT, js.create_or_update_stream(config.clone())).await;
    match made {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            // Most likely other replicas than the stream has: keep those, take the limits.
            let mut info = tokio::time::timeout(OP_TIMEOUT, js.get_stream(STREAM))
                .await
                .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("cannot make the activity stream: {e}"))?;
            let replicas = info.info().await.map(|i| i.config.num_replicas)?;
            let config = stream::Config {
                num_replicas: replicas,
                ..config
            };
            tokio::time::timeout(OP_TIMEOUT, js.update_stream(config))
                .await
                .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))?
                .map(drop)
                .context("cannot set the activity stream's limits")
        }
        Err(_) => anyhow::bail!("no answer within {OP_TIMEOUT:?}"),
    }
}

/// Copies this node's records into the cluster's stream until the hub shuts down. A
/// record NATS does not take within [`OP_TIMEOUT`], or that comes while NATS is away,
/// stays on this node only (warned).
pub(crate) async fn publish(hub: Arc<Hub>, node: Arc<Node>) {
    let js = jetstream::new(node.client.clone());
    let (tx, mut rx) = mpsc::channel(QUEUE);
    if !hub.activity.copy_to(tx) {
        return;
    }
    let subject = subject(&node.id);
    let mut ensured = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let got = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if got == 0 {
            return;
        }
        if !ensured && node.is_up() {
            if let Err(e) = ensure(&js, &hub.config.retention, node.replicas).await {
                // The stream may exist already; publishing tells.
                tracing::warn!("cluster activity log: {e:#}");
            }
            ensured = true;
        }
        let lost = match node.is_up() {
            true => send(&js, &subject, &batch).await,
            false => batch.len(),
        };
        if lost > 0 {
            tracing::warn!(
                lost,
                "activity records not taken by the cluster: kept on this node only"
            );
        }
        batch.clear();
    }
}

/// Publishes `batch`, then waits for every acknowledgement; returns how many failed.
async fn send(js: &jetstream::Context, subject: &str, batch: &[Entry]) -> usize {
    let mut acks = Vec::with_capacity(batch.len());
    let mut lost = 0;
    for entry in batch {
        let Ok(payload) = serde_json::to_vec(entry) else {
            lost += 1;
            continue;
        };
        let sent =
            tokio::time::timeout(OP_TIMEOUT, js.publish(subject.to_string(), payload.into()));
        match sent.await {
            Ok(Ok(ack)) => acks.push(ack),
            _ => lost += 1,
        }
    }
    for ack in acks {
        if !matches!(
            tokio::time::timeout(OP_TIMEOUT, std::future::IntoFuture::into_future(ack)).await,
            Ok(Ok(_))
        ) {
            lost += 1;
        }
    }
    lost
}

/// The cluster's records since `since_ms` (unix milliseconds), oldest first, optionally
/// for one device (a module's records are `<device>/<module>`'s).
pub fn query(
    config: &ClusterConfig,
    device: Option<&str>,
    since_ms: u64,
) -> anyhow::Result<Vec<Entry>> {
    let config = config.clone();
    let device = device.map(str::to_string);
    super::block(async move {
        let conn = super::connect(&config).await?;
        query_on(conn.client, device, since_ms).await
    })
}

/// [`query`] on a node's own connection (the dashboard's activity page), on the cluster
/// runtime.
pub(crate) async fn query_on_node(
    node: &Node,
    device: Option<&str>,
    since_ms: u64,
) -> anyhow::Result<Vec<Entry>> {
    let client = node.client.clone();
    let device = device.map(str::to_string);
    super::on_runtime(query_on(client, device, since_ms)).await
}

async fn query_on(
    client: async_nats::Client,
    device: Option<String>,
    since_ms: u64,
) -> anyhow::Result<Vec<Entry>> {
    let js = jetstream::new(client);
    let Ok(Ok(stream)) = tokio::time::timeout(OP_TIMEOUT, js.get_stream(STREAM)).await else {
        // No node has started yet: no records.
        return Ok(Vec::new());
    };
    let nanos = i128::from(since_ms) * 1_000_000;
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)?;
    let ordered = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
        ..Default::default()
    };
    let consumer = tokio::time::timeout(OP_TIMEOUT, stream.create_consumer(ordered))
        .await
        .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
    let mut entries = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(entries);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let message = tokio::time::timeout(OP_TIMEOUT, messages.next())
            .await
            .map_err(|_| anyhow!("the activity log stopped coming within {OP_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("the activity log ended early"))??;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        match serde_json::from_slice::<Entry>(&message.payload) {
            Ok(e) if device.as_deref().is_none_or(|d| d == e.device) => entries.push(e),
            Ok(_) => {}
            Err(e) => tracing::warn!("an activity record in the cluster is unreadable: {e}"),
        }
        if pending == 0 {
            break;
        }
    }
    // Each node's records are in order; the nodes' interleave by when NATS took them.
    entries.sort_by_key(|e| e.time);
    Ok(entries)
}

/// Every identity's connection state as the presence bucket has it: online since its
/// node's entry was put, or last seen when that entry was deleted; and its open streams,
/// each node's own, counted from what every node answers ([`super::streams::list`]).
pub fn device_states(config: &ClusterConfig) -> anyhow::Result<HashMap<String, DeviceState>> {
    let mut states = presence_states(config)?;
    for row in super::streams::list(config, None)? {
        states.entry(row.device_id).or_default().open_streams += 1;
    }
    Ok(states)
}

fn presence_states(config: &ClusterConfig) -> anyhow::Result<HashMap<String, DeviceState>> {
    let config = config.clone();
    super::block(async move {
        let conn = super::connect(&config).await?;
        let mut store = conn.presence.clone();
        let mut states = HashMap::new();
        let info = tokio::time::timeout(OP_TIMEOUT, store.stream.info())
            .await
            .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
        if info.state.messages == 0 {
            return Ok(states);
        }
        let mut watch = tokio::time::timeout(OP_TIMEOUT, store.watch_with_history(">"))
            .await
            .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
        loop {
            let entry = tokio::time::timeout(OP_TIMEOUT, watch.next())
                .await
                .map_err(|_| anyhow!("the presence bucket stopped coming within {OP_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("the presence bucket's watch ended early"))??;
            let at = u64::try_from(entry.created.unix_timestamp()).unwrap_or_default();
            let device = URL_SAFE_NO_PAD
                .decode(&entry.key)
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some(device) = device {
                let online = entry.operation == Operation::Put;
                let state = DeviceState {
                    online_since: online.then_some(at),
                    last_seen: Some(at),
                    open_streams: 0,
                };
                states.insert(device, state);
            }
            if entry.delta == 0 {
                break;
            }
        }
        Ok(states)
    })
}
