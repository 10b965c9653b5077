//! The streaming endpoint's connections: `GET /bridges/<id>` with `Authorization: Bearer
//! <token>` upgrades to a WebSocket, meets the stream's other side, and is relayed.
//!
//! Relaying passes messages through unchanged, one direction per future, with
//! backpressure (a message is read only once the previous one was handed on).
//! Either side's Close — or its connection dying — closes the other: the stream ends.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{
    stream::{SplitSink, SplitStream},
    FutureExt, SinkExt, StreamExt,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Error as WsError, Message,
};
use tracing::Instrument;

use crate::{
    activity::{Outcome, Record},
    http::{accept_upgrade, bearer, error, upgraded_stream, Body, ServerWs, Upgrade},
    metrics::AuthKind,
    streaming::Side,
    Hub,
};

/// Answers a streaming-endpoint request: checks and spends the token, then upgrades.
pub fn upgrade(hub: Arc<Hub>, mut req: Request<Incoming>, id: String) -> Response<Body> {
    let Some(token) = bearer(req.headers()) else {
        hub.metrics.auth_failure(AuthKind::StreamToken);
        let msg = "the streaming endpoint needs 'Authorization: Bearer <token>'";
        return error(StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess", msg);
    };
    let (side, device) = match hub.streams.claim(&id, token) {
        Ok(claimed) => claimed,
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
    let (resp, on_upgrade) = match accept_upgrade(&mut req, None) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    let span = tracing::info_span!("stream", stream = %id, device, side = side.name());
    let tracker = hub.tracker.clone();
    tracker.spawn(serve_side(hub, id, side, on_upgrade).instrument(span));
    resp
}

async fn serve_side(hub: Arc<Hub>, id: String, side: Side, on_upgrade: Upgrade) {
    let ws = match upgraded_stream(on_upgrade, hub.config.limits.max_message).await {
        Ok(ws) => ws,
        Err(e) => return tracing::debug!("WebSocket upgrade failed: {e}"),
    };
    let Some((ours, paired)) = hub.streams.join(&id, side, ws).await else {
        return;
    };
    let (device_ws, service_ws) = match side {
        Side::Device => (ours, paired.ws),
        Side::Service => (paired.ws, ours),
    };
    let info = paired.info;
    let started = Instant::now();
    tracing::debug!("stream paired");
    let limits = &hub.config.limits;
    let stop = async {
        tokio::select! {
            () = info.slot.revoked().cancelled() => "device revoked",
            () = async {
                hub.shutdown.cancelled().await;
                tokio::time::sleep(limits.shutdown_grace).await;
            } => "hub shutdown",
        }
    };
    let r = relay(service_ws, device_ws, stop, limits.stream_idle_timeout).await;
    let detail = format!(
        "closed by {}",
        match r.ended_by {
            "a" => "service",
            "b" => "device",
            other => other,
        }
    );
    hub.record(&Record {
        setup: Some(started - info.requested_at),
        duration: Some(started.elapsed()),
        bytes_to_device: r.a_to_b,
        bytes_from_device: r.b_to_a,
        ..Record::request(
            &info.device,
            &info.name,
            &info.policy,
            Outcome::Accepted,
            &detail,
        )
    });
}

/// Bytes relayed each way, and why the stream ended.
#[derive(Debug, Default)]
pub struct Relayed {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub ended_by: &'static str,
}

/// Forwards `from` to `to` until a Close, the end of `from`, or an error. Flushes only
/// when no further message is ready, so bulk transfers batch their writes.
async fn forward(
    from: &mut SplitStream<ServerWs>,
    to: &mut SplitSink<ServerWs, Message>,
    count: &AtomicU64,
) -> Result<Option<CloseFrame>, WsError> {
    loop {
        let next = match from.next().now_or_never() {
            Some(next) => next,
            None => {
                to.flush().await?;
                from.next().await
            }
        };
        match next.transpose()? {
            None => return Ok(None),
            Some(Message::Close(frame)) => return Ok(frame),
            Some(msg @ (Message::Binary(_) | Message::Text(_))) => {
                count.fetch_add(msg.len() as u64, Ordering::Relaxed);
                to.feed(msg).await?;
            }
            Some(_) => {} // ping/pong are per hop; tungstenite answers pings
        }
    }
}

/// Resolves once neither counter has moved for `idle`; never if `idle` is `None`.
async fn idle_for(idle: Option<Duration>, ab: &AtomicU64, ba: &AtomicU64) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let total = || ab.load(Ordering::Relaxed) + ba.load(Ordering::Relaxed);
    let mut seen = total();
    loop {
        tokio::time::sleep(idle).await;
        let now = total();
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Relays until either side ends, `stop` resolves (with the reason), or — with `idle` set —
/// no byte has moved either way for that long.
pub async fn relay(
    a: ServerWs,
    b: ServerWs,
    stop: impl std::future::Future<Output = &'static str>,
    idle: Option<Duration>,
) -> Relayed {
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    let (ab, ba) = (AtomicU64::new(0), AtomicU64::new(0));
    let (ended_by, frame) = tokio::select! {
        r = forward(&mut a_rx, &mut b_tx, &ab) => ("a", r.ok().flatten()),
        r = forward(&mut b_rx, &mut a_tx, &ba) => ("b", r.ok().flatten()),
        why = stop => (why, Some(CloseFrame { code: CloseCode::Away, reason: why.into() })),
        () = idle_for(idle, &ab, &ba) => {
            let why = "idle timeout";
            (why, Some(CloseFrame { code: CloseCode::Normal, reason: why.into() }))
        }
    };
    // The Close (with its reason, if any) goes on to the other side; both are then closed.
    let close = |f: &Option<CloseFrame>| Message::Close(f.clone());
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = b_tx.send(close(&frame)).await;
        let _ = a_tx.send(close(&frame)).await;
        let _ = a_tx.close().await;
        let _ = b_tx.close().await;
    })
    .await;
    Relayed {
        a_to_b: ab.load(Ordering::Relaxed),
        b_to_a: ba.load(Ordering::Relaxed),
        ended_by,
    }
}
