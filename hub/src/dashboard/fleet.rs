//! What the dashboard shows of the whole hub — one node, or every node of a cluster.
//!
//! On one hub everything is in this process. In a cluster a device's control session and
//! its streams live on whichever node it reached, so the dashboard on any node reads:
//! online state from the presence bucket (kept in memory, [`crate::cluster::online`]),
//! open streams by asking every node over NATS (as `streams list` does, stopping as soon
//! as each node holding a device has answered), the activity log from the cluster's
//! stream, and closes a stream wherever it is. A node that does not answer in time is
//! named on the page rather than waited for.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use crate::{
    activity::{self, Entry},
    cluster,
    live::StreamRow,
    Hub,
};

/// How long a page waits for other nodes' open streams: a live node answers from memory
/// in milliseconds; one that does not answer within this is reported, not waited for.
const NODES_LIMIT: Duration = Duration::from_millis(250);

/// Where a device's session is, as far as this node knows.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    pub online: bool,
    /// The node holding it, in a cluster.
    pub node: Option<String>,
    /// Unix seconds: when its session last ended (or began), if known from the cluster.
    pub at: Option<u64>,
}

/// Every device's presence: this node's sessions, and in a cluster every node's.
pub fn presence(hub: &Hub) -> HashMap<String, Presence> {
    let mut map = HashMap::new();
    if let Some(node) = hub.cluster.get() {
        for (device, seen) in node.online.snapshot() {
            let p = Presence {
                online: seen.node.is_some(),
                node: seen.node,
                at: Some(seen.at),
            };
            map.insert(device, p);
        }
    }
    for device in hub.sessions.devices() {
        let node = hub.cluster.get().map(|n| n.id.clone());
        let at = map.get(&device).and_then(|p| p.at);
        map.insert(
            device,
            Presence {
                online: true,
                node,
                at,
            },
        );
    }
    map
}

/// The open streams, oldest first, each with its node in a cluster; and the nodes that
/// hold devices but did not answer in time.
pub async fn streams(hub: &Hub) -> (Vec<(Option<String>, StreamRow)>, Vec<String>) {
    let Some(node) = hub.cluster.get() else {
        let rows = hub.live.snapshot().into_iter().map(|r| (None, r)).collect();
        return (rows, Vec::new());
    };
    let mut expected: HashSet<String> = node
        .online
        .snapshot()
        .into_values()
        .filter_map(|s| s.node)
        .collect();
    expected.insert(node.id.clone());
    let (theirs, answered) = match cluster::streams::list_on(node, &expected, NODES_LIMIT).await {
        Ok(got) => got,
        Err(e) => {
            tracing::warn!("dashboard: the cluster's open streams: {e:#}");
            (Vec::new(), HashSet::new())
        }
    };
    // This node's own from memory (live byte counts), the others' as they answered.
    let mut rows: Vec<(Option<String>, StreamRow)> = hub
        .live
        .snapshot()
        .into_iter()
        .map(|r| (Some(node.id.clone()), r))
        .collect();
    rows.extend(
        theirs
            .into_iter()
            .filter(|(from, _)| *from != node.id)
            .map(|(from, r)| (Some(from), r)),
    );
    rows.sort_by(|a, b| (a.1.opened_at, &a.1.stream_id).cmp(&(b.1.opened_at, &b.1.stream_id)));
    let mut silent: Vec<String> = expected.difference(&answered).cloned().collect();
    silent.retain(|n| *n != node.id);
    silent.sort();
    (rows, silent)
}

/// Closes stream `id` here, or on whichever node has it.
pub async fn close_stream(hub: &Hub, id: &str) -> bool {
    if hub.live.close(id) {
        return true;
    }
    let Some(node) = hub.cluster.get() else {
        return false;
    };
    cluster::streams::close_on(node, id, cluster::OP_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("dashboard: closing a stream through the cluster: {e:#}");
            false
        })
}

/// The activity log since `since_ms`, oldest first: this hub's, or the cluster's.
pub async fn activity(
    hub: &Hub,
    device: Option<&str>,
    since_ms: u64,
) -> anyhow::Result<Vec<Entry>> {
    match hub.cluster.get() {
        Some(node) => cluster::activity::query_on_node(node, device, since_ms).await,
        None => {
            let path = hub.registry.path().to_path_buf();
            let device = device.map(str::to_string);
            let query = move || activity::query(&path, device.as_deref(), since_ms);
            tokio::task::spawn_blocking(query).await?
        }
    }
}

/// This node's id in a cluster.
pub fn node_id(hub: &Hub) -> Option<&str> {
    hub.cluster.get().map(|n| n.id.as_str())
}
