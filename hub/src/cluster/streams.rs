//! `stream-hub streams list/close` against a cluster. Open streams are each node's own
//! (a stream's bytes never leave its node), so the CLI asks every node at once — a request
//! on `stream_hub.streams.list` / `.close` with one reply subject — and gathers what the
//! nodes answer within [`GATHER`]. Rows name devices, streams and policies, never tokens.

use std::{sync::Arc, time::Duration};

use anyhow::anyhow;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{link::Retry, ClusterConfig, Node, OP_TIMEOUT};
use crate::{
    live::{self, StreamRow},
    Hub,
};

const LIST: &str = "stream_hub.streams.list";
const CLOSE: &str = "stream_hub.streams.close";
/// How long the CLI gathers answers: the number of live nodes is not known, and each
/// answers from its own database within milliseconds.
const GATHER: Duration = Duration::from_secs(1);
/// The header naming the node that answers, so the dashboard can stop waiting once every
/// node it expects has (the CLI ignores it).
const NODE_HEADER: &str = "Stream-Hub-Node";

#[derive(Serialize, Deserialize)]
struct ListAsk {
    device: Option<String>,
}

/// Answers the CLI's list and close requests for this node's streams until shutdown.
pub(crate) async fn answer(hub: Arc<Hub>, node: Arc<Node>) {
    let client = &node.client;
    let mut retry = Retry::default();
    loop {
        let subscribed = async {
            anyhow::Ok((
                client.subscribe(LIST).await?,
                client.subscribe(CLOSE).await?,
            ))
        };
        match subscribed.await {
            Ok((mut lists, mut closes)) => loop {
                let (message, list) = tokio::select! {
                    () = hub.shutdown.cancelled() => return,
                    m = lists.next() => (m, true),
                    m = closes.next() => (m, false),
                };
                let Some(message) = message else { break };
                let Some(reply_to) = message.reply else {
                    continue;
                };
                let reply = match list {
                    true => list_here(&hub, &message.payload),
                    false => close_here(&hub, &message.payload),
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::warn!("cannot answer a streams request from the CLI: {e:#}");
                        continue;
                    }
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(NODE_HEADER, node.id.as_str());
                let publish = client.publish_with_headers(reply_to, headers, reply);
                let sent = tokio::time::timeout(OP_TIMEOUT, publish).await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!("cannot answer a streams request from the CLI");
                }
            },
            Err(e) => tracing::warn!("cannot take the CLI's streams requests: {e:#}"),
        }
        if !retry.wait(&node.link, client, &hub.shutdown).await {
            return;
        }
    }
}

fn list_here(hub: &Hub, payload: &[u8]) -> anyhow::Result<Bytes> {
    let ask: ListAsk = serde_json::from_slice(payload)?;
    let rows = live::open_streams(&hub.registry, ask.device.as_deref())?;
    Ok(serde_json::to_vec(&rows)?.into())
}

fn close_here(hub: &Hub, payload: &[u8]) -> anyhow::Result<Bytes> {
    let id = std::str::from_utf8(payload)?;
    let found = hub.live.close(id);
    if found {
        tracing::info!(stream = %id, "an admin asked to close a stream");
    }
    Ok(serde_json::to_vec(&found)?.into())
}

/// Every node's open streams (optionally one device's), oldest first.
pub fn list(config: &ClusterConfig, device: Option<&str>) -> anyhow::Result<Vec<StreamRow>> {
    let ask = serde_json::to_vec(&ListAsk {
        device: device.map(str::to_string),
    })?;
    let answers = gather(config, LIST, ask.into())?;
    let mut rows = Vec::new();
    for answer in answers {
        let theirs: Vec<StreamRow> = serde_json::from_slice(&answer)?;
        rows.extend(theirs);
    }
    rows.sort_by(|a, b| (a.opened_at, &a.stream_id).cmp(&(b.opened_at, &b.stream_id)));
    Ok(rows)
}

/// Every node's open streams, by node, on this node's connection: for the dashboard,
/// which stops waiting when each node of `expected` has answered (or at `limit`), and
/// gets the nodes that answered.
pub(crate) async fn list_on(
    node: &Node,
    expected: &std::collections::HashSet<String>,
    limit: Duration,
) -> anyhow::Result<(Vec<(String, StreamRow)>, std::collections::HashSet<String>)> {
    let ask = serde_json::to_vec(&ListAsk { device: None })?;
    let client = node.client.clone();
    let expected = expected.clone();
    super::on_runtime(async move {
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await?;
        client.publish_with_reply(LIST, inbox, ask.into()).await?;
        let deadline = tokio::time::Instant::now() + limit;
        let (mut rows, mut answered) = (Vec::new(), std::collections::HashSet::new());
        while !expected.is_subset(&answered) {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            let from = message
                .headers
                .as_ref()
                .and_then(|h| h.get(NODE_HEADER))
                .map(|v| v.to_string())
                .unwrap_or_default();
            // One node's unreadable answer (another version, say) costs its rows only.
            match serde_json::from_slice::<Vec<StreamRow>>(&message.payload) {
                Ok(theirs) => rows.extend(theirs.into_iter().map(|r| (from.clone(), r))),
                Err(e) => tracing::warn!(node = %from, "unreadable open streams: {e}"),
            }
            answered.insert(from);
        }
        Ok((rows, answered))
    })
    .await
}

/// Closes stream `id` on whichever node has it, on this node's connection; false if no
/// node said it had it within `limit`.
pub(crate) async fn close_on(node: &Node, id: &str, limit: Duration) -> anyhow::Result<bool> {
    let client = node.client.clone();
    let ask = Bytes::copy_from_slice(id.as_bytes());
    super::on_runtime(async move {
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await?;
        client.publish_with_reply(CLOSE, inbox, ask).await?;
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
            if serde_json::from_slice::<bool>(&message.payload).unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
}

/// Closes stream `id` on whichever node has it; false if none does.
pub fn close(config: &ClusterConfig, id: &str) -> anyhow::Result<bool> {
    let answers = gather(config, CLOSE, Bytes::copy_from_slice(id.as_bytes()))?;
    Ok(answers
        .iter()
        .any(|a| serde_json::from_slice::<bool>(a).unwrap_or(false)))
}

/// Asks every node on `subject` and returns the answers that came within [`GATHER`].
fn gather(config: &ClusterConfig, subject: &'static str, ask: Bytes) -> anyhow::Result<Vec<Bytes>> {
    let config = config.clone();
    super::block(async move {
        let client = super::connect(&config).await?.client;
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await?;
        let ask = async {
            client.publish_with_reply(subject, inbox, ask).await?;
            client.flush().await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(OP_TIMEOUT, ask)
            .await
            .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut got = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
            got.push(message.payload);
        }
        Ok(got)
    })
}
