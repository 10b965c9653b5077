//! The byte relay between a stream's two WebSockets, and why it ended.
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
//! Half-close: a side that agreed to it (see [`super::endpoint`]) ends its data with the
//! [`EOF_PING`]. That Ping goes on to the other side if that side agreed too, and the
//! other direction keeps flowing; the stream ends when both directions are done (or on a
//! Close). If the other side did not agree, end-of-data ends the stream as a Close would.

use std::{
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{
    stream::{SplitSink, SplitStream},
    FutureExt, SinkExt, StreamExt,
};
use tokio_tungstenite::tungstenite::{
    error::CapacityError,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Error as WsError, Message,
};

use device_streams_protocol::wire::EOF_PING;

use super::Side;
use crate::http::ServerWs;

/// Why a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The side closed its WebSocket, or ended its data (both directions done).
    ClosedBy(Side),
    /// The side's connection failed (reset, TLS error, protocol violation).
    Broken(Side, String),
    /// The side sent a message over the hub's limit; it was closed with code 1009.
    TooBig { side: Side, size: usize, max: usize },
    /// The side showed no sign of life for two ping intervals.
    Silent(Side),
    /// The stream's device was disabled or deleted.
    Revoked,
    /// The policy the stream was granted on was deleted, or its signing key replaced.
    Withdrawn,
    /// An admin closed it (`stream-hub streams close`).
    ClosedByAdmin,
    /// The hub shut down and the grace period passed.
    Shutdown,
    /// No byte moved either way for the idle timeout.
    Idle,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::ClosedBy(side) => write!(f, "closed by {}", side.name()),
            Ended::Broken(side, e) => write!(f, "the {}'s connection failed: {e}", side.name()),
            Ended::TooBig { side, size, max } => write!(
                f,
                "closed by the hub: the {} sent a {size}-byte message, over the limit of {max}",
                side.name()
            ),
            Ended::Silent(side) => write!(
                f,
                "closed by the hub: the {} stopped answering pings",
                side.name()
            ),
            Ended::Revoked => f.write_str("closed by the hub: device revoked"),
            Ended::Withdrawn => {
                f.write_str("closed by the hub: its policy was deleted or its key replaced")
            }
            Ended::ClosedByAdmin => f.write_str("closed by an admin"),
            Ended::Shutdown => f.write_str("closed by the hub: hub shutdown"),
            Ended::Idle => f.write_str("closed by the hub: idle timeout"),
        }
    }
}

impl Ended {
    /// The Close the hub sends the sides that did not end the stream themselves.
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Ended::ClosedBy(_) | Ended::Broken(..) | Ended::Silent(_) => return None,
            Ended::TooBig { .. } => (CloseCode::Size, "message too big"),
            Ended::Revoked => (CloseCode::Away, "device revoked"),
            Ended::Withdrawn => (CloseCode::Policy, "grant withdrawn"),
            Ended::ClosedByAdmin => (CloseCode::Normal, "closed by an admin"),
            Ended::Shutdown => (CloseCode::Away, "hub shutdown"),
            Ended::Idle => (CloseCode::Normal, "idle timeout"),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

/// Bytes relayed so far each way. Shared so that the hub can publish a running stream's
/// counts (see [`crate::live`]) while the relay only ever adds to them.
#[derive(Debug, Default)]
pub struct Counters {
    pub to_device: AtomicU64,
    pub from_device: AtomicU64,
}

/// Bytes relayed each way, and why the stream ended.
#[derive(Debug)]
pub struct Relayed {
    pub to_device: u64,
    pub from_device: u64,
    pub ended: Ended,
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

/// What ended a direction `from` → other side: its Close or end of data, or its error.
fn ended_by(from: Side, r: Result<Option<CloseFrame>, WsError>) -> (Ended, Option<CloseFrame>) {
    match r {
        Ok(frame) => (Ended::ClosedBy(from), frame),
        Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
            let ended = Ended::TooBig {
                side: from,
                size,
                max: max_size,
            };
            let frame = ended.close_frame();
            (ended, frame)
        }
        Err(e) => (Ended::Broken(from, e.to_string()), None),
    }
}

/// Relays `ws` (by [`Side`] index) until either side ends, `stop` resolves (with the
/// reason), a side falls silent (see the module docs), or — with `idle` set — no byte
/// has moved either way for that long. `agreed`: which sides agreed to half-close.
/// `counters` grow as bytes pass.
pub async fn relay(
    ws: [ServerWs; 2],
    counters: &Counters,
    stop: impl std::future::Future<Output = Ended>,
    idle: Option<Duration>,
    ping_every: Duration,
    agreed: [bool; 2],
) -> Relayed {
    let [device, service] = ws;
    let (mut dev_tx, mut dev_rx) = device.split();
    let (mut svc_tx, mut svc_rx) = service.split();
    let (to_dev, from_dev) = (&counters.to_device, &counters.from_device);
    let alive = Liveness::new();
    let eof = [AtomicBool::new(false), AtomicBool::new(false)];
    let hop = |count, src: Side, dst: Side| Hop {
        count,
        alive: &alive,
        src: src.index(),
        dst: dst.index(),
        ping_every,
        agreed,
        eof: &eof,
    };
    let watchdog = async {
        let mut check = tokio::time::interval(ping_every);
        loop {
            check.tick().await;
            if let Some(side) = alive.silent(ping_every * 2) {
                return Side::ALL[side];
            }
        }
    };
    let (ended, frame) = tokio::select! {
        r = forward(&mut svc_rx, &mut dev_tx, hop(to_dev, Side::Service, Side::Device)) => ended_by(Side::Service, r),
        r = forward(&mut dev_rx, &mut svc_tx, hop(from_dev, Side::Device, Side::Service)) => ended_by(Side::Device, r),
        side = watchdog => (Ended::Silent(side), None),
        why = stop => { let frame = why.close_frame(); (why, frame) }
        () = idle_for(idle, to_dev, from_dev) => (Ended::Idle, Ended::Idle.close_frame()),
    };
    // The Close (with its reason, if any) goes to both sides; a side that sent its own
    // Close gets it back as the closing handshake's answer. Both are then closed.
    let close = |f: &Option<CloseFrame>| Message::Close(f.clone());
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = dev_tx.send(close(&frame)).await;
        let _ = svc_tx.send(close(&frame)).await;
        let _ = svc_tx.close().await;
        let _ = dev_tx.close().await;
    })
    .await;
    Relayed {
        to_device: to_dev.load(Ordering::Relaxed),
        from_device: from_dev.load(Ordering::Relaxed),
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_s_close_says_so_to_the_log_and_the_sides() {
        assert_eq!(Ended::ClosedByAdmin.to_string(), "closed by an admin");
        let frame = Ended::ClosedByAdmin.close_frame().unwrap();
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode::Normal, "closed by an admin")
        );
    }
}
