//! The streaming endpoint: `GET /bridges/<id>` with `Authorization: Bearer <token>`
//! upgrades to a WebSocket, meets the stream's other side, and is relayed.
//!
//! The token is spent only once the upgrade request itself is valid, so a malformed
//! request cannot burn a side's single use. A side that sends [`HALF_CLOSE_HEADER`] is
//! told so in the 101 reply, with the hub's ping interval ([`PING_INTERVAL_HEADER`]).

use std::{sync::Arc, time::Duration};

use device_streams_protocol::wire::{HALF_CLOSE_HEADER, PING_INTERVAL_HEADER};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use super::{
    record::Traffic,
    relay::{relay, Ended},
    table::Paired,
    Side,
};
use crate::{
    http::{accept_upgrade, bearer, error, upgraded_stream, Body, ConnPermit, ServerWs, Upgrade},
    metrics::AuthKind,
    Hub,
};

/// Answers a streaming-endpoint request: checks the upgrade, spends the token, upgrades.
pub fn upgrade(hub: Arc<Hub>, mut req: Request<Incoming>, id: String) -> Response<Body> {
    let Some(token) = bearer(req.headers()).map(str::to_string) else {
        hub.metrics.auth_failure(AuthKind::StreamToken);
        let msg = "the streaming endpoint needs 'Authorization: Bearer <token>'";
        return error(StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess", msg);
    };
    let (mut resp, on_upgrade) = match accept_upgrade(&mut req, None) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    let (side, device) = match hub.streams.claim(&id, &token) {
        Ok(claimed) => {
            ConnPermit::authenticated_on(&req);
            claimed
        }
        Err(e) => {
            tracing::warn!(stream = %id, "streaming connection refused: {e}");
            hub.metrics.auth_failure(AuthKind::StreamToken);
            return error(
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                format!("stream {id}: {e}"),
            );
        }
    };
    if offer_half_close(&hub, req.headers(), resp.headers_mut()) {
        hub.streams.agree_half_close(&id, side);
    }
    let span = tracing::info_span!("stream", stream = %id, device, side = side.name());
    let tracker = hub.tracker.clone();
    tracker.spawn(serve_side(hub, id, side, on_upgrade).instrument(span));
    resp
}

/// Agrees to half-close with a side whose upgrade offered it ([`HALF_CLOSE_HEADER`]) and
/// tells it the hub's ping interval; returns whether it offered.
pub(crate) fn offer_half_close(
    hub: &Hub,
    req: &http::HeaderMap,
    resp: &mut http::HeaderMap,
) -> bool {
    if !req.contains_key(HALF_CLOSE_HEADER) {
        return false;
    }
    let ping_ms = ping_interval(hub).as_millis().to_string();
    resp.insert(HALF_CLOSE_HEADER, http::HeaderValue::from_static("1"));
    if let Ok(v) = http::HeaderValue::from_str(&ping_ms) {
        resp.insert(PING_INTERVAL_HEADER, v);
    }
    true
}

/// One side's connection: waits for the other side, and the side that arrived first
/// relays the pair and writes the stream's record.
async fn serve_side(hub: Arc<Hub>, id: String, side: Side, on_upgrade: Upgrade) {
    let ws = match upgraded_stream(on_upgrade, hub.limits().max_message).await {
        Ok(ws) => ws,
        Err(e) => return tracing::debug!("WebSocket upgrade failed: {e}"),
    };
    join_and_relay(&hub, &id, side, ws).await;
}

/// Brings `side`'s WebSocket to stream `id`; the side that arrived first relays the pair
/// and writes the stream's record. A fast-path warm connection joins here too.
pub(crate) async fn join_and_relay(hub: &Hub, id: &str, side: Side, ws: ServerWs) {
    if let Some((ours, paired)) = hub.streams.join(id, side, ws).await {
        relay_pair(hub, side, ours, paired).await;
    }
}

/// Relays `ours` (our `side`) with the other side's WebSocket until the stream ends, and
/// writes its record.
pub(crate) async fn relay_pair(hub: &Hub, side: Side, ours: ServerWs, paired: Paired) {
    let Paired {
        ws: theirs,
        info,
        half_close,
    } = paired;
    let ws = match side {
        Side::Device => [ours, theirs],
        Side::Service => [theirs, ours],
    };
    let paired_at = std::time::Instant::now();
    tracing::debug!("stream paired");
    let limits = hub.limits();
    let rec = &info.record;
    let open = hub
        .live
        .opened(&info.id, rec.device(), rec.stream(), rec.policy());
    let stop = async {
        tokio::select! {
            () = info.slot.revoked().cancelled() => Ended::Revoked,
            () = info.slot.withdrawn().cancelled() => Ended::Withdrawn,
            () = open.closed().cancelled() => Ended::ClosedByAdmin,
            () = async {
                hub.shutdown.cancelled().await;
                tokio::time::sleep(limits.shutdown_grace).await;
            } => Ended::Shutdown,
        }
    };
    let idle = limits.stream_idle_timeout;
    let r = relay(
        ws,
        open.counters(),
        stop,
        idle,
        ping_interval(hub),
        half_close,
    )
    .await;
    drop(open);
    let mut record = info.record;
    let traffic = Traffic {
        paired_at,
        bytes_to_device: r.to_device,
        bytes_from_device: r.from_device,
    };
    record.relayed(traffic, r.ended.to_string());
}

/// The hub's ping interval on streams; a zero interval would spin, and no real link
/// needs pings more often than this.
pub(crate) fn ping_interval(hub: &Hub) -> Duration {
    hub.limits()
        .stream_ping_interval
        .max(Duration::from_millis(50))
}
