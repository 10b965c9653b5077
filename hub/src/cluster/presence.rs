//! Which node holds each device's control session: a KV bucket, device → node id.
//!
//! A node puts its entry when a device connects to it and deletes it (only if still its
//! own) when the session ends. The newest entry wins: a node whose device shows up in a
//! later entry of another node's cuts its own session, so a second session replaces the
//! first cluster-wide, as on one hub. After NATS was away, each node writes again every
//! session it holds and removes its entries for sessions that ended meanwhile.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::anyhow;
use async_nats::jetstream::kv::{self, Operation};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    link::{keep_following, Started},
    Node, OP_TIMEOUT,
};
use crate::Hub;

/// How soon presence writes NATS did not take are tried again: doubling, while they keep
/// failing, up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

pub(crate) struct Presence {
    node: String,
    /// Revisions of this node's own entries, and the latest revision seen of another
    /// node's entry, by device.
    revisions: Mutex<Revisions>,
}

#[derive(Default)]
struct Revisions {
    mine: HashMap<String, u64>,
    theirs: HashMap<String, u64>,
}

fn key(device: &str) -> String {
    URL_SAFE_NO_PAD.encode(device)
}

/// The device a bucket key names, if it is one of [`key`]'s.
pub(crate) fn device_of(key: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

impl Presence {
    pub fn new(node: String) -> Self {
        Presence {
            node,
            revisions: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Revisions> {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node holding `device`'s session, if the bucket names one other than `node`.
pub(crate) async fn holder(node: &Node, device: &str) -> anyhow::Result<Option<String>> {
    let store = node
        .conn()
        .ok_or_else(|| anyhow!("not in the cluster yet"))?
        .presence;
    let entry = tokio::time::timeout(OP_TIMEOUT, store.entry(key(device)))
        .await
        .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .and_then(|e| String::from_utf8(e.value.to_vec()).ok())
        .filter(|holder| *holder != node.id))
}

/// Writes this node's sessions coming and going into the bucket, in order. Each time
/// the client (re)connects it writes every session it holds, since what came and went
/// while NATS was away never reached the bucket; a write that fails while NATS is
/// reachable (a bucket between leaders) is tried again after [`RETRY_PAUSE`] and more.
pub(crate) async fn write(
    hub: Arc<Hub>,
    node: Arc<Node>,
    mut changes: mpsc::Receiver<(String, bool)>,
) {
    let Some(conn) = node.opened(&hub.shutdown).await else {
        return;
    };
    let store = &conn.presence;
    let mut seen = node.link.watch();
    let mut written = None;
    let mut failed = HashSet::new();
    let mut pause = RETRY_PAUSE;
    loop {
        let epoch = seen.borrow_and_update().epoch;
        if written != Some(epoch) && node.is_up() {
            // What is queued is older than the sessions the resync writes.
            while changes.try_recv().is_ok() {}
            failed.extend(hub.sessions.devices());
            written = Some(epoch);
        }
        let retry = !failed.is_empty() && node.is_up();
        let device = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = seen.changed() => continue,
            () = tokio::time::sleep(pause), if retry => None,
            change = changes.recv() => match change {
                Some((device, _)) => Some(device),
                None => return,
            },
        };
        match device {
            // While NATS is away, the resync when it is back covers it.
            Some(device) if !node.is_up() || !settle(&hub, &node, store, &device).await => {
                failed.insert(device);
            }
            Some(_) => {}
            None => pause = settle_failed(&hub, &node, store, &mut failed, pause).await,
        }
    }
}

/// Tries again the writes that failed; returns the pause before the next round.
async fn settle_failed(
    hub: &Hub,
    node: &Node,
    store: &kv::Store,
    failed: &mut HashSet<String>,
    pause: Duration,
) -> Duration {
    for device in std::mem::take(failed) {
        if !node.is_up() || !settle(hub, node, store, &device).await {
            failed.insert(device);
        }
    }
    if failed.is_empty() {
        return RETRY_PAUSE;
    }
    let pause = (pause * 2).min(MAX_RETRY_PAUSE);
    let sessions = failed.len();
    tracing::warn!(
        sessions,
        "cluster presence not taken by NATS; again in {pause:?}"
    );
    pause
}

/// Writes what the bucket should say of `device` now: this node while it holds the
/// session, else not this node. False if NATS did not take it.
async fn settle(hub: &Hub, node: &Node, store: &kv::Store, device: &str) -> bool {
    match hub.sessions.is_connected(device) {
        true => put(hub, node, store, device).await,
        false => remove(node, store, device).await,
    }
}

async fn put(hub: &Hub, node: &Node, store: &kv::Store, device: &str) -> bool {
    let p = &node.presence;
    let put = store.put(key(device), p.node.clone().into());
    match tokio::time::timeout(OP_TIMEOUT, put).await {
        Ok(Ok(revision)) => {
            let mut revs = p.lock();
            revs.mine.insert(device.to_string(), revision);
            let newer = revs.theirs.get(device).is_some_and(|&r| r > revision);
            drop(revs);
            if newer {
                replaced(hub, device);
            }
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(device, "cluster presence not recorded (tried again): {e}");
            false
        }
        Err(_) => {
            tracing::warn!(
                device,
                "cluster presence not recorded (tried again): no answer"
            );
            false
        }
    }
}

/// Deletes this node's entry for `device`, only if it is still the one this node put:
/// another node's newer one must stay.
async fn remove(node: &Node, store: &kv::Store, device: &str) -> bool {
    let Some(revision) = node.presence.lock().mine.get(device).copied() else {
        return true;
    };
    let delete = store.delete_expect_revision(key(device), Some(revision));
    let deleted = match tokio::time::timeout(OP_TIMEOUT, delete).await {
        Ok(Ok(())) => true,
        // Refused as the entry has changed since (nothing of ours left), or NATS failed.
        _ => match tokio::time::timeout(OP_TIMEOUT, store.entry(key(device))).await {
            Ok(Ok(entry)) => entry.is_none_or(|e| e.revision != revision),
            _ => false,
        },
    };
    if deleted {
        node.presence.lock().mine.remove(device);
    }
    deleted
}

/// Cuts this node's sessions of devices that connected to another node since, and
/// deletes the entries naming this node for sessions it no longer holds (left from
/// before a crash, or ended while NATS was away). Taken up again from the start each
/// time the client reconnects.
pub(crate) async fn watch(hub: Arc<Hub>, node: Arc<Node>) {
    let Some(conn) = node.opened(&hub.shutdown).await else {
        return;
    };
    let what = "cluster presence watch";
    keep_following(&node.link, &node.client, &hub.shutdown, what, |started| {
        watch_once(&hub, &node, &conn.presence, started)
    })
    .await
}

async fn watch_once(
    hub: &Arc<Hub>,
    node: &Node,
    store: &kv::Store,
    started: Started,
) -> anyhow::Result<()> {
    let p = &node.presence;
    let mut watch = tokio::time::timeout(OP_TIMEOUT, store.watch_all())
        .await
        .map_err(|_| anyhow!("no watch within {OP_TIMEOUT:?}"))??;
    started.now();
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let Some(device) = device_of(&entry.key) else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        if entry.value[..] == *p.node.as_bytes() {
            if !hub.sessions.is_connected(&device) {
                let stale = store.delete_expect_revision(&entry.key, Some(entry.revision));
                let _ = tokio::time::timeout(OP_TIMEOUT, stale).await;
            }
            continue;
        }
        let mut revs = p.lock();
        revs.theirs.insert(device.clone(), entry.revision);
        let ours_older = revs.mine.get(&device).is_some_and(|&r| r < entry.revision);
        drop(revs);
        if ours_older {
            replaced(hub, &device);
        }
    }
    anyhow::bail!("the watch ended")
}

fn replaced(hub: &Hub, device: &str) {
    if hub.sessions.disconnect(device) {
        tracing::info!(
            device,
            "a newer connection on another node replaces this one"
        );
    }
}
