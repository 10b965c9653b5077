//! Stream requests for a device another node holds: asked on that node over NATS
//! request/reply (subject `stream_hub.node.<id>.stream`), which does all it does for a
//! request of its own — record, checks, the device's answer — and replies with the HTTP
//! response to give, naming its own streaming URL. The reply carries the service's
//! stream token: it is never logged, here or there.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::link::Retry;
use super::Node;
use crate::{activity::Outcome, http::Body, refusal::Refusal, sessions::RequestError, Hub};

/// Beyond the device's response timeout, what the asking node allows the other for
/// its own work and the two NATS hops.
const MARGIN: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize)]
struct Ask {
    device: String,
    name: String,
    policy: String,
    connect_timeout_ms: u64,
    response_timeout_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn subject(node: &str) -> String {
    format!("stream_hub.node.{node}.stream")
}

/// The response for a stream request to a device held by another node, asked there;
/// `None` when this hub is no cluster node, holds the device itself, or no other node
/// does (then the request goes on here, and is refused here if need be).
pub(crate) async fn elsewhere(
    hub: &Arc<Hub>,
    device: &str,
    name: &str,
    policy: &str,
    (connect_timeout, response_timeout): (Duration, Duration),
) -> Option<Response<Body>> {
    let node = hub.cluster.get()?;
    if hub.sessions.is_connected(device) {
        return None;
    }
    if !node.is_up() {
        // Which node holds it, if any, cannot be known: say so rather than "not connected".
        return Some(unreachable(device).response());
    }
    let holder = match super::presence::holder(node, device).await {
        Ok(holder) => holder?,
        Err(e) => {
            tracing::warn!(
                device,
                "cannot ask the cluster which node holds the device: {e:#}"
            );
            return None;
        }
    };
    let ask = Ask {
        device: device.to_string(),
        name: name.to_string(),
        policy: policy.to_string(),
        connect_timeout_ms: connect_timeout.as_millis() as u64,
        response_timeout_ms: response_timeout.as_millis() as u64,
    };
    let payload = Bytes::from(serde_json::to_vec(&ask).ok()?);
    let wait = response_timeout + MARGIN;
    let request = node.client.request(subject(&holder), payload);
    let not_connected = || Refusal::from(RequestError::NotConnected(device.to_string()));
    let reply = match tokio::time::timeout(wait, request).await {
        Ok(Ok(message)) => message,
        // No responders: the node has gone (its devices will reconnect elsewhere).
        Ok(Err(e)) => {
            tracing::info!(device, node = %holder, "the node holding the device does not answer: {e}");
            return Some(not_connected().response());
        }
        Err(_) => {
            let timeout = RequestError::Timeout(device.to_string(), response_timeout);
            return Some(Refusal::from(timeout).response());
        }
    };
    match serde_json::from_slice::<Reply>(&reply.payload) {
        Ok(reply) => Some(response(reply)),
        Err(e) => {
            tracing::warn!(device, node = %holder, "unreadable answer from the node holding the device: {e}");
            Some(not_connected().response())
        }
    }
}

fn unreachable(device: &str) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        Outcome::DeviceOffline,
        format!(
            "device '{device}' is not connected to this node, and the cluster that knows \
             which node holds it is unreachable"
        ),
    )
}

fn response(reply: Reply) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// Answers other nodes' stream requests for devices this node holds, each in a task of
/// its own, until the hub shuts down.
pub(crate) async fn answer(hub: Arc<Hub>, node: Arc<Node>) {
    let mut retry = Retry::default();
    loop {
        let subscribed = node.client.subscribe(subject(&node.id)).await;
        match subscribed {
            Ok(mut requests) => loop {
                let message = tokio::select! {
                    () = hub.shutdown.cancelled() => return,
                    m = requests.next() => m,
                };
                let Some(message) = message else { break };
                let Some(reply_to) = message.reply else {
                    continue;
                };
                let (hub, client) = (hub.clone(), node.client.clone());
                tokio::spawn(async move {
                    let reply = match handle(hub, &message.payload).await {
                        Ok(reply) => reply,
                        Err(e) => {
                            tracing::warn!("a forwarded stream request was unreadable: {e:#}");
                            return;
                        }
                    };
                    if let Err(e) = client.publish(reply_to, reply).await {
                        tracing::warn!("cannot answer a forwarded stream request: {e}");
                    }
                });
            },
            Err(e) => tracing::warn!("cannot take other nodes' stream requests: {e}"),
        }
        if !retry.wait(&node.link, &node.client, &hub.shutdown).await {
            return;
        }
    }
}

async fn handle(hub: Arc<Hub>, payload: &[u8]) -> anyhow::Result<Bytes> {
    let ask: Ask = serde_json::from_slice(payload).context("not a stream request")?;
    let limits = hub.limits();
    let bound = |ms: u64| {
        Duration::from_millis(ms).clamp(Duration::from_secs(1), limits.max_stream_timeout)
    };
    let timeouts = (
        bound(ask.connect_timeout_ms),
        bound(ask.response_timeout_ms),
    );
    let device = ask.device;
    // A module is asked for as `<device>/<module>`, the identity its session holds.
    if !crate::registry::valid_identity(&device)
        || !device_streams_protocol::wire::valid_stream_name(&ask.name)
    {
        anyhow::bail!("not a valid device id or stream name");
    }
    let response = crate::stream::ask::authorized(
        hub,
        device,
        ask.name,
        crate::stream::Grant::new(&ask.policy, None),
        timeouts,
    )
    .await;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let reply = Reply {
        status: parts.status.as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    Ok(Bytes::from(serde_json::to_vec(&reply)?))
}
