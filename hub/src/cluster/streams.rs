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
                let sent = tokio::time::timeout(OP_TIMEOUT, client.publish(reply_to, reply)).await;
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
