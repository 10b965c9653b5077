//! An open device stream: bytes both ways, as `AsyncRead + AsyncWrite`.
//!
//! What the other side sees:
//! - every write is sent as one or more binary WebSocket messages of at most
//!   [`DATA_MESSAGE`](device_streams_protocol::wire::DATA_MESSAGE) bytes; writes are
//!   batched until a flush, so call `flush` after a message that must go now;
//! - `shutdown` ends the stream — unless the hub agreed to half-close
//!   ([`Stream::half_close`]): then the first `shutdown` only says "no more data from
//!   me" and reading goes on until the other side is done too, as with TCP;
//! - a read returns end of file when the other side ended the stream (or its half);
//! - against our hub, a link that goes silent (no frame for three of the hub's ping
//!   intervals) fails the read with `TimedOut`.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use device_streams_protocol::ws::WsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connector::ClientTls;

/// One open stream to (or from) a device.
pub struct Stream {
    inner: WsStream<ClientTls>,
}

impl Stream {
    pub(crate) fn new(inner: WsStream<ClientTls>) -> Self {
        Stream { inner }
    }

    /// Whether end of file travels on its own (TCP-style half-close) on this stream:
    /// our hub agrees to it, Azure's does not.
    pub fn half_close(&self) -> bool {
        self.inner.half_close()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
