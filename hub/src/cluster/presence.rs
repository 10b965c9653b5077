//! Which node holds each device's control session: a KV bucket, device → node id.
//!
//! A node puts its entry when a device connects to it and deletes it (only if still its
//! own) when the session ends. The newest entry wins: a node whose device shows up in a
//! later entry of another node's cuts its own session, so a second session replaces the
//! first cluster-wide, as on one hub.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use anyhow::anyhow;
use async_nats::jetstream::kv::{self, Operation};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Node, OP_TIMEOUT};
use crate::Hub;

pub(crate) struct Presence {
    store: kv::Store,
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
    pub fn new(store: kv::Store, node: String) -> Self {
        Presence {
            store,
            node,
            revisions: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Revisions> {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node holding `device`'s session, if the bucket names one other than this.
    pub async fn holder(&self, device: &str) -> anyhow::Result<Option<String>> {
        let entry = tokio::time::timeout(OP_TIMEOUT, self.store.entry(key(device)))
            .await
            .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))??;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| String::from_utf8(e.value.to_vec()).ok())
            .filter(|node| *node != self.node))
    }
}

/// Writes this node's sessions coming and going into the bucket, in order.
pub(crate) async fn write(
    hub: Arc<Hub>,
    node: Arc<Node>,
    mut changes: mpsc::Receiver<(String, bool)>,
) {
    let p = &node.presence;
    loop {
        let (device, online) = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        let k = key(&device);
        if online {
            let put = p.store.put(k, p.node.clone().into());
            match tokio::time::timeout(OP_TIMEOUT, put).await {
                Ok(Ok(revision)) => {
                    let mut revs = p.lock();
                    revs.mine.insert(device.clone(), revision);
                    let newer = revs.theirs.get(&device).is_some_and(|&r| r > revision);
                    drop(revs);
                    if newer {
                        replaced(&hub, &device);
                    }
                }
                Ok(Err(e)) => tracing::warn!(device, "cluster presence not recorded: {e}"),
                Err(_) => tracing::warn!(device, "cluster presence not recorded: no answer"),
            }
        } else {
            let mine = p.lock().mine.remove(&device);
            // Only our own entry: another node's newer one must stay.
            if let Some(revision) = mine {
                let delete = p.store.delete_expect_revision(k, Some(revision));
                let _ = tokio::time::timeout(OP_TIMEOUT, delete).await;
            }
        }
    }
}

/// Cuts this node's sessions of devices that connected to another node since.
pub(crate) async fn watch(hub: Arc<Hub>, node: Arc<Node>) {
    let p = &node.presence;
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let watching = async {
            let mut watch = p.store.watch_all().await?;
            while let Some(entry) = watch.next().await {
                let entry = entry?;
                if entry.operation != Operation::Put || entry.value[..] == *p.node.as_bytes() {
                    continue;
                }
                let Some(device) = device_of(&entry.key) else {
                    continue;
                };
                let mut revs = p.lock();
                revs.theirs.insert(device.clone(), entry.revision);
                let ours_older = revs.mine.get(&device).is_some_and(|&r| r < entry.revision);
                drop(revs);
                if ours_older {
                    replaced(&hub, &device);
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            r = watching => if let Err(e) = r {
                tracing::warn!("cluster presence watch: {e:#}; again in {pause:?}");
            },
        }
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}

fn replaced(hub: &Hub, device: &str) {
    if hub.sessions.disconnect(device) {
        tracing::info!(
            device,
            "a newer connection on another node replaces this one"
        );
    }
}
