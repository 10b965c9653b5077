//! Waiting on a fast-path connection that carries no stream yet. The hub pings it every
//! stream ping interval, as it pings idle streams, and lets it go once it has shown no
//! sign of life for two intervals: a warm or standby connection whose link went silent
//! must not hold its place until its token expires.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    http::{upgraded, ServerWs, Upgrade},
    Hub,
};

/// Longest a ping may take to go out before the connection counts as stuck.
const SEND_LIMIT: Duration = Duration::from_secs(5);

/// Completes a fast-path connection's upgrade. Its read buffer is a control channel's
/// (small while idle; it grows for bulk data once the connection carries a stream).
pub(crate) async fn upgrade(hub: &Hub, on_upgrade: Upgrade) -> Option<ServerWs> {
    match upgraded(on_upgrade, hub.limits().max_message).await {
        Ok(ws) => Some(ws),
        Err(e) => {
            tracing::debug!("WebSocket upgrade failed: {e}");
            None
        }
    }
}

/// Resolves when a token that expires at `expiry` (Unix seconds) has expired.
pub(crate) async fn expired(expiry: u64) {
    let left = device_streams_protocol::sas::unix_now();
    tokio::time::sleep(Duration::from_secs(expiry.saturating_sub(left))).await;
}

/// What ended the wait.
pub(crate) enum Woke<T> {
    /// The peer sent a message (not a ping, pong or close).
    Message(Message),
    /// The connection closed, broke or fell silent (why, for the log).
    Gone(&'static str),
    /// `stop` resolved first.
    Stopped(T),
}

/// Waits on `ws` until the peer sends a message, the connection ends, or `stop` resolves.
pub(crate) async fn wait<T>(
    ws: &mut ServerWs,
    ping_every: Duration,
    stop: impl Future<Output = T>,
) -> Woke<T> {
    tokio::pin!(stop);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            why = &mut stop => return Woke::Stopped(why),
            _ = ping.tick() => {
                if heard.elapsed() > ping_every * 2 {
                    return Woke::Gone("silent for two ping intervals");
                }
                let sent = tokio::time::timeout(SEND_LIMIT, ws.send(Message::Ping(Bytes::new())));
                if !matches!(sent.await, Ok(Ok(()))) {
                    return Woke::Gone("a ping could not be sent");
                }
            }
            next = ws.next() => match next {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Woke::Gone("closed"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    heard = Instant::now();
                }
                Some(Ok(message)) => return Woke::Message(message),
            },
        }
    }
}
