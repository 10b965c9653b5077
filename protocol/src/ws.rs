//! A WebSocket as a byte stream, and the WebSocket limits both ends use.
//!
//! On a device stream the WebSocket carries raw bytes in binary messages of at most
//! 64 KiB, nothing else. [`WsStream`] turns that into `AsyncRead`/`AsyncWrite` so the
//! proxies can splice it with ordinary tokio I/O, and the hub can run MQTT over it:
//! - each `poll_write` becomes one binary message (at most [`MAX_DATA_MESSAGE`] bytes);
//!   messages are only flushed on `poll_flush`, so bulk copies batch them;
//! - text messages are taken as data too (some clients send them); empty ones are skipped;
//! - a Close frame, or the peer's end of the connection, reads as end of file;
//! - `poll_shutdown` sends a Close frame.
//!
//! Half-close (only when both ends agreed with [`HALF_CLOSE_HEADER`] in the upgrade,
//! see [`WsStream::with_half_close`]): the first `poll_shutdown` sends the [`EOF_PING`] Ping instead,
//! and a received [`EOF_PING`] reads as end of file while writing goes on; a later
//! `poll_shutdown` sends the Close. tungstenite forbids sending after a Close either
//! way, so the Close frame cannot carry a half-close itself.
//!
//! Liveness: our hub says in its 101 reply ([`PING_INTERVAL_HEADER`]) how often it pings
//! an idle stream. A read that then waits [`SILENCE_FACTOR`] intervals without any frame
//! fails with `TimedOut`: the link to the hub went silent without closing.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    tungstenite::{self, protocol::WebSocketConfig, Message},
    WebSocketStream,
};

use crate::wire::{DATA_MESSAGE, EOF_PING, MAX_DATA_MESSAGE};
#[cfg(doc)]
use crate::wire::{HALF_CLOSE_HEADER, PING_INTERVAL_HEADER};

/// Limits every stream's WebSocket uses: one data message is at most 64 KiB. The read
/// buffer starts small: tungstenite reserves room for a whole frame once it has read the
/// frame's header, so bulk data still arrives 64 KiB at a time, while an idle stream holds
/// 8 KiB instead of 65 (the hub holds two per open stream) and a new one zero-fills less.
pub fn config() -> WebSocketConfig {
    config_with_max(MAX_DATA_MESSAGE)
}

/// The same, with another bound on incoming messages (the hub's `--max-message-size`).
pub fn config_with_max(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(STREAM_READ_BUFFER)
        // tungstenite writes once its buffer holds more than this, so a full data message
        // goes out at once, alone (four whole TLS records), and small ones wait for a flush.
        .write_buffer_size(DATA_MESSAGE)
        .max_write_buffer_size(4 * MAX_DATA_MESSAGE)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A control channel's WebSocket (MQTT): the same limits, but a small read buffer. tungstenite
/// allocates the read buffer up front, and a hub holds one control channel per connected
/// device, idle almost always; a 65 KiB buffer each was most of an idle device's memory,
/// and 2 KiB was still a seventh of it. 256 bytes hold any answer, ping or SUBSCRIBE a
/// device sends; tungstenite grows the buffer to a frame's length once it has read the
/// frame's header, so CONNECT (with its SAS token) and larger messages still fit.
pub fn control_config(max_message: usize) -> WebSocketConfig {
    config_with_max(max_message).read_buffer_size(CONTROL_READ_BUFFER)
}

const CONTROL_READ_BUFFER: usize = 256;
const STREAM_READ_BUFFER: usize = 8 * 1024;

/// Bytes over a WebSocket; see the module docs for what each message kind means.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    pending: Bytes,
    half_close: bool,
    eof: EofSent,
    /// How long a read may wait without any frame, and the wait in progress.
    silence_limit: Option<Duration>,
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Intervals of the hub's pings a read may wait in silence before the link counts as dead.
pub const SILENCE_FACTOR: u32 = 3;

/// Progress of our half-close: `poll_shutdown` may need several polls to send it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EofSent {
    No,
    Sending,
    Yes,
}

impl<S> WsStream<S> {
    /// A byte stream over `inner`, without half-close (Azure's way: `shutdown` closes it).
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsStream {
            inner,
            pending: Bytes::new(),
            half_close: false,
            eof: EofSent::No,
            silence_limit: None,
            silence: None,
        }
    }

    /// Fails a read that waits [`SILENCE_FACTOR`] × `hub_ping_interval` without any frame.
    pub fn expect_pings(mut self, hub_ping_interval: Duration) -> Self {
        self.silence_limit = Some(hub_ping_interval * SILENCE_FACTOR);
        self
    }

    /// Pending while the silence is within its limit; an error once it is not.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(limit) = self.silence_limit else {
            return Poll::Pending;
        };
        let timer = self
            .silence
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(std::future::Future::poll(timer.as_mut(), cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing from the hub for {limit:?} although it pings idle streams: the link is dead"),
        )))
    }

    /// A stream on which both ends agreed to half-close (see the module docs).
    pub fn with_half_close(inner: WebSocketStream<S>) -> Self {
        WsStream {
            half_close: true,
            ..Self::new(inner)
        }
    }

    /// Whether half-close is on: end-of-file travels on its own, as with TCP.
    pub fn half_close(&self) -> bool {
        self.half_close
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

fn is_closed(e: &tungstenite::Error) -> bool {
    matches!(
        e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            let next = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return self.poll_silence(cx),
            };
            self.silence = None;
            match next {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Text(text))) => self.pending = Bytes::from(text),
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Ping(p))) if self.half_close && p[..] == *EOF_PING => {
                    return Poll::Ready(Ok(()))
                }
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(e)) if is_closed(&e) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        if self.pending.is_empty() {
            // An empty view still holds the message's allocation (a part of tungstenite's
            // read buffer, which then cannot reuse it in place): let it go.
            self.pending = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(DATA_MESSAGE);
        let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        Pin::new(&mut self.inner).start_send(msg).map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.half_close && self.eof == EofSent::No {
            ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(to_io)?;
            let eof = Message::Ping(Bytes::from_static(EOF_PING));
            Pin::new(&mut self.inner).start_send(eof).map_err(to_io)?;
            self.eof = EofSent::Sending;
        }
        if self.eof == EofSent::Sending {
            ready!(Pin::new(&mut self.inner).poll_flush(cx)).map_err(to_io)?;
            self.eof = EofSent::Yes;
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Err(e) if !is_closed(&e) => Poll::Ready(Err(to_io(e))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// What a proxy sends for bulk data, as bytes on the wire: each full message's frame
    /// (masked, as a client's must be) is exactly 64 KiB, so under TLS it is four whole
    /// records, and it is written at once, without waiting for a flush.
    #[tokio::test]
    async fn a_full_data_message_is_a_64_kib_frame_written_at_once() {
        let (ours, mut wire) = tokio::io::duplex(4 * MAX_DATA_MESSAGE);
        let ws = WebSocketStream::from_raw_socket(ours, Role::Client, Some(config())).await;
        let mut stream = WsStream::new(ws);
        stream.write_all(&[7u8; DATA_MESSAGE]).await.unwrap();

        let mut frame = vec![0u8; 64 * 1024];
        tokio::time::timeout(Duration::from_secs(5), wire.read_exact(&mut frame))
            .await
            .expect("a full message must not wait for a flush")
            .unwrap();
        assert_eq!(frame[0], 0x82, "one final binary frame");
        assert_eq!(frame[1], 0x80 | 126, "masked, 16-bit length");
        let len = u16::from_be_bytes([frame[2], frame[3]]) as usize;
        assert_eq!(len, DATA_MESSAGE);
        assert_eq!(
            2 + 2 + 4 + len,
            frame.len(),
            "header and payload fill 64 KiB"
        );
    }
}
