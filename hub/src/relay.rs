//! The streaming endpoint's connections: `GET /bridges/<id>` with `Authorization: Bearer
//! <token>` upgrades to a WebSocket, meets the stream's other side, and is relayed.
//!
//! Relaying passes messages through unchanged, one direction per future, with
//! backpressure (a message is read only once the previous one was handed on).
//! Either side's Close — or its connection dying — closes the other: the stream ends.
//!
//! A peer can also vanish without closing (its link drops packets). The hub pings each
//! side every `stream_ping_interval` when it has nothing else to send it, and ends the
//! stream once a side has shown no sign of life for two intervals. A sign of life is
//! any frame from the side (its pong included) or a data message it took from the hub;
//! so a slow reader that keeps taking data is alive even while its pongs wait behind it.
//!
//! Half-close: a side that offered [`HALF_CLOSE_HEADER`] is told so in the 101 reply. Its
//! end-of-data Ping ([`EOF_PING`]) goes on to the other side if that side agreed too,
//! and the other direction keeps flowing; the stream ends when both directions are done
//! (or on a Close). If the other side did not agree, end-of-data ends the stream as a
//! Close would.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
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

use device_streams_protocol::wire::{EOF_PING, HALF_CLOSE_HEADER, PING_INTERVAL_HEADER};

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
    let (mut resp, on_upgrade) = match accept_upgrade(&mut req, None) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    if req.headers().contains_key(HALF_CLOSE_HEADER) {
        hub.streams.agree_half_close(&id, side);
        let ping_ms = ping_interval(&hub).as_millis().to_string();
        let h = resp.headers_mut();
        h.insert(HALF_CLOSE_HEADER, http::HeaderValue::from_static("1"));
        if let Ok(v) = http::HeaderValue::from_str(&ping_ms) {
            h.insert(PING_INTERVAL_HEADER, v);
        }
    }
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
    let (info, agreed) = (paired.info, paired.half_close);
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
    let r = relay(
        service_ws,
        device_ws,
        stop,
        limits.stream_idle_timeout,
        ping_interval(&hub),
        [agreed[Side::Service.index()], agreed[Side::Device.index()]],
    )
    .await;
    let detail = format!(
        "closed by {}",
        match r.ended_by {
            "a" => "service",
            "b" => "device",
            "silent a" => "the hub: the service stopped answering pings",
            "silent b" => "the hub: the device stopped answering pings",
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

/// The hub's ping interval on streams; a zero interval would spin, and no real link
/// needs pings more often than this.
fn ping_interval(hub: &Hub) -> Duration {
    hub.config
        .limits
        .stream_ping_interval
        .max(Duration::from_millis(50))
}

/// Bytes relayed each way, and why the stream ended.
#[derive(Debug, Default)]
pub struct Relayed {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub ended_by: &'static str,
}

/// When each side last showed a sign of life, in milliseconds since the relay began.
struct Liveness {
    epoch: Instant,
    last: [AtomicU64; 2],
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            epoch: Instant::now(),
            last: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    fn touch(&self, side: usize) {
        self.last[side].store(self.now(), Ordering::Relaxed);
    }
    /// A side silent for longer than `limit`, if any.
    fn silent(&self, limit: Duration) -> Option<usize> {
        let now = self.now();
        (0..2).find(|&i| {
            now.saturating_sub(self.last[i].load(Ordering::Relaxed)) > limit.as_millis() as u64
        })
    }
}

/// One direction of a relay: side `from` (index `src`) to side `dst`.
struct Hop<'a> {
    count: &'a AtomicU64,
    alive: &'a Liveness,
    src: usize,
    dst: usize,
    ping_every: Duration,
    /// Which sides agreed to half-close, and which have sent their end of data.
    agreed: [bool; 2],
    eof: &'a [AtomicBool; 2],
}

/// Forwards `from` to `to` until a Close, the end of `from`, or an error. Flushes only
/// when no further message is ready, so bulk transfers batch their writes; while idle,
/// pings `to` every `ping_every` so a vanished peer shows up as silence.
async fn forward(
    from: &mut SplitStream<ServerWs>,
    to: &mut SplitSink<ServerWs, Message>,
    hop: Hop<'_>,
) -> Result<Option<CloseFrame>, WsError> {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + hop.ping_every, hop.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = match from.next().now_or_never() {
            Some(next) => next,
            None => {
                to.flush().await?;
                loop {
                    tokio::select! {
                        next = from.next() => break next,
                        _ = ping.tick() => to.send(Message::Ping(Bytes::new())).await?,
                    }
                }
            }
        };
        hop.alive.touch(hop.src);
        match next.transpose()? {
            None => return Ok(None),
            Some(Message::Close(frame)) => return Ok(frame),
            Some(Message::Ping(p)) if hop.agreed[hop.src] && p[..] == *EOF_PING => {
                if !hop.agreed[hop.dst] {
                    return Ok(None); // the other side only knows Close
                }
                to.send(Message::Ping(p)).await?;
                hop.eof[hop.src].store(true, Ordering::SeqCst);
                if hop.eof[hop.dst].load(Ordering::SeqCst) {
                    return Ok(None); // both directions are done
                }
            }
            Some(Message::Binary(_) | Message::Text(_))
                if hop.eof[hop.src].load(Ordering::Relaxed) =>
            {
                tracing::debug!("dropping data sent after its sender's end of data");
            }
            Some(msg @ (Message::Binary(_) | Message::Text(_))) => {
                hop.count.fetch_add(msg.len() as u64, Ordering::Relaxed);
                to.feed(msg).await?;
                hop.alive.touch(hop.dst);
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

/// Relays until either side ends, `stop` resolves (with the reason), a side falls silent
/// (see the module docs), or — with `idle` set — no byte has moved either way for that long.
pub async fn relay(
    a: ServerWs,
    b: ServerWs,
    stop: impl std::future::Future<Output = &'static str>,
    idle: Option<Duration>,
    ping_every: Duration,
    agreed: [bool; 2],
) -> Relayed {
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    let (ab, ba) = (AtomicU64::new(0), AtomicU64::new(0));
    let alive = Liveness::new();
    let eof = [AtomicBool::new(false), AtomicBool::new(false)];
    let hop = |count, src, dst| Hop {
        count,
        alive: &alive,
        src,
        dst,
        ping_every,
        agreed,
        eof: &eof,
    };
    let watchdog = async {
        let mut check = tokio::time::interval(ping_every);
        loop {
            check.tick().await;
            if let Some(side) = alive.silent(ping_every * 2) {
                return side;
            }
        }
    };
    let (ended_by, frame) = tokio::select! {
        r = forward(&mut a_rx, &mut b_tx, hop(&ab, 0, 1)) => ("a", r.ok().flatten()),
        r = forward(&mut b_rx, &mut a_tx, hop(&ba, 1, 0)) => ("b", r.ok().flatten()),
        side = watchdog => (if side == 0 { "silent a" } else { "silent b" }, None),
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
