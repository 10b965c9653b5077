//! Joining a local socket to a stream, and what end-of-stream means on the wire.
//!
//! The Azure device-streams protocol has no half-close: a stream's WebSocket either
//! carries bytes both ways or is closed. So:
//! - local end-of-file (the local peer shut down its write side, or closed) becomes a
//!   WebSocket Close frame once every byte before it has been sent; the splice then keeps
//!   delivering what is still on its way from the stream for up to `linger`, so a reply
//!   already in flight is not cut off;
//! - the stream ending (the other side's Close, or its connection dying) flushes what
//!   arrived to the local socket, shuts its write side and ends the splice: nothing
//!   written locally after that could reach anyone.
//!
//! SSH and RDP close both directions together, so for them this is exact.
//!
//! With half-close agreed (our hub and proxies; see [`crate::protocol::ws`]) end-of-file travels on
//! its own: local end-of-file becomes the end-of-data Ping and the splice keeps
//! delivering the other direction for as long as it runs; the other side's end-of-data
//! shuts the local write side and the splice keeps sending until local end-of-file.
//! When both directions are done the WebSocket is closed. A Close arriving early (the
//! other side died, or the hub ended the stream) still ends everything at once.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use device_streams_protocol::wire::DATA_MESSAGE;

/// Bytes moved by one splice, in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transferred {
    /// Bytes read from the local socket and written to the stream.
    pub local_to_stream: u64,
    /// Bytes read from the stream and written to the local socket.
    pub stream_to_local: u64,
}

/// An `AsyncWrite` that counts what passes through it.
struct Counted<'a, W> {
    inner: W,
    count: &'a AtomicU64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `reader` into `writer` until end of file, then shuts `writer` down.
async fn pump<R, W>(reader: R, writer: W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // One read of up to DATA_MESSAGE bytes becomes one WebSocket message; copy_buf flushes only
    // when the reader has nothing more right now, so bulk data batches and keystrokes don't wait.
    let mut reader = BufReader::with_capacity(DATA_MESSAGE, reader);
    let mut writer = Counted {
        inner: writer,
        count,
    };
    tokio::io::copy_buf(&mut reader, &mut writer).await?;
    writer.shutdown().await
}

/// Splices `local` and `stream` until the stream ends, following the module's EOF rules
/// (`half_close`: whether the stream carries half-close). Errors carry what was
/// transferred before them.
pub async fn splice<L, S>(
    local: L,
    stream: S,
    linger: Duration,
    half_close: bool,
) -> Result<Transferred, (io::Error, Transferred)>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut local_read, mut local_write) = tokio::io::split(local);
    let (mut stream_read, mut stream_write) = tokio::io::split(stream);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut upstream = Box::pin(pump(&mut local_read, &mut stream_write, &up));
    let mut downstream = Box::pin(pump(&mut stream_read, &mut local_write, &down));

    let first = tokio::select! {
        r = &mut downstream => Done::Down(r),
        r = &mut upstream => Done::Up(r),
    };
    let result = match first {
        Done::Up(Err(e)) | Done::Down(Err(e)) => Err(e),
        Done::Down(Ok(())) if !half_close => Ok(()),
        Done::Up(Ok(())) if !half_close => tokio::time::timeout(linger, downstream)
            .await
            .unwrap_or(Ok(())),
        // Our side is done sending; the other decides when it is done.
        Done::Up(Ok(())) => downstream.await,
        Done::Down(Ok(())) => {
            drop(downstream);
            tokio::select! {
                r = &mut upstream => r,
                () = closed(&mut stream_read) => Ok(()),
            }
        }
    };
    drop(upstream); // releases the stream's write half
    if half_close && result.is_ok() {
        // The end-of-data Ping went out with our end of file; this is the Close.
        let _ = stream_write.shutdown().await;
    }
    let moved = Transferred {
        local_to_stream: up.load(Ordering::Relaxed),
        stream_to_local: down.load(Ordering::Relaxed),
    };
    result.map(|()| moved).map_err(|e| (e, moved))
}

enum Done {
    Up(io::Result<()>),
    Down(io::Result<()>),
}

/// Resolves when the stream ends entirely (Close, connection lost, or an error).
async fn closed<R: AsyncRead + Unpin>(stream: &mut R) {
    let mut buf = [0u8; 1024];
    while let Ok(1..) = stream.read(&mut buf).await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    #[tokio::test]
    async fn carries_bytes_both_ways_and_ends_when_the_stream_ends() {
        let (local, mut app) = duplex(1024);
        let (stream, mut peer) = duplex(1024);
        let task = tokio::spawn(splice(local, stream, Duration::from_secs(5), false));

        app.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        peer.write_all(b"world!").await.unwrap();
        drop(peer); // the stream ends
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"world!");
        let moved = task.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                local_to_stream: 5,
                stream_to_local: 6
            }
        );
    }

    #[tokio::test]
    async fn local_eof_closes_the_stream_but_still_delivers_the_reply() {
        let (local, mut app) = duplex(1024);
        let (stream, mut peer) = duplex(1024);
        let task = tokio::spawn(splice(local, stream, Duration::from_secs(5), false));

        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let mut req = Vec::new();
        peer.read_to_end(&mut req).await.unwrap(); // EOF reached the stream side
        assert_eq!(req, b"request");
        peer.write_all(b"reply").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"reply");
        task.await.unwrap().unwrap();
    }
}
