//! Which devices are online anywhere in the cluster, for the dashboard on any node: the
//! presence bucket ([`super::presence`]) copied into memory by a watch that starts with
//! its current entries, so the devices page reads a map instead of asking NATS while
//! 10,000 rows render.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::anyhow;
use async_nats::jetstream::kv::{self, Operation};
use futures_util::StreamExt;

use super::{
    link::{keep_following, Started},
    Node, OP_TIMEOUT,
};
use crate::Hub;

/// Entries kept at most: the bucket has one per device that ever connected, and a
/// registry far beyond this is beyond what one dashboard page shows anyway.
const MAX_ENTRIES: usize = 1_000_000;

/// A device's presence entry: the node holding its session, or none since it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub node: Option<String>,
    /// Unix seconds of the entry: when the session began, or ended.
    pub at: u64,
}

#[derive(Default)]
pub struct Online {
    by_device: Mutex<HashMap<String, Seen>>,
}

impl Online {
    /// Every device's entry as last seen.
    pub fn snapshot(&self) -> HashMap<String, Seen> {
        self.by_device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note(&self, device: String, seen: Seen) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_ENTRIES || map.contains_key(&device) {
            map.insert(device, seen);
        }
    }
}

/// Follows the presence bucket into `node.online` until the hub shuts down: from the
/// current entries again after a failure, and each time the client reconnects (the watch
/// may have missed what changed while NATS was away).
pub(crate) async fn follow(hub: Arc<Hub>, node: Arc<Node>) {
    let Some(conn) = node.opened(&hub.shutdown).await else {
        return;
    };
    let what = "cluster presence (dashboard)";
    keep_following(&node.link, &node.client, &hub.shutdown, what, |started| {
        copy(&node, &conn.presence, started)
    })
    .await
}

async fn copy(node: &Node, store: &kv::Store, started: Started) -> anyhow::Result<()> {
    let mut watch = tokio::time::timeout(OP_TIMEOUT, store.watch_with_history(">"))
        .await
        .map_err(|_| anyhow!("no watch within {OP_TIMEOUT:?}"))??;
    started.now();
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let Some(device) = super::presence::device_of(&entry.key) else {
            continue;
        };
        let at = u64::try_from(entry.created.unix_timestamp()).unwrap_or_default();
        let node_id = (entry.operation == Operation::Put)
            .then(|| String::from_utf8_lossy(&entry.value).into_owned());
        node.online.note(device, Seen { node: node_id, at });
    }
    anyhow::bail!("the watch ended")
}
