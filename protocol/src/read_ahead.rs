//! A read buffer under TLS that exists only while data arrives in bulk.
//!
//! rustls reads its socket at most 4 KiB at a time, so a 16 KiB TLS record costs four
//! `read` system calls, and a 64 KiB stream message sixteen. A plain `BufReader` fixes
//! that but costs every connection its buffer for ever — on a hub, every idle device's
//! control channel. [`ReadAhead`] reads straight into the caller's buffer until a read
//! fills it (a sign that more is waiting), then reads ahead through a 64 KiB buffer; once a
//! read through that buffer brings less than the caller would have taken anyway, the
//! buffer bought nothing and is freed as soon as it is drained.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the read-ahead buffer: a few full TLS records per system call.
pub const READ_AHEAD: usize = 64 * 1024;

/// A reader that reads up to [`READ_AHEAD`] bytes per system call while data comes in bulk,
/// and holds no buffer while it does not.
pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    pos: usize,
    filled: usize,
    /// The last fill was small: free the buffer once it is drained.
    release: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, without a buffer until one pays.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: None,
            pos: 0,
            filled: 0,
            release: false,
        }
    }

    /// Whether a read-ahead buffer is allocated right now (for tests and memory figures).
    pub fn is_buffering(&self) -> bool {
        self.buf.is_some()
    }

    /// Moves buffered bytes into `out`; frees the buffer when drained after a small fill.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        if let Some(buf) = &self.buf {
            let n = (self.filled - self.pos).min(out.remaining());
            out.put_slice(&buf[self.pos..self.pos + n]);
            self.pos += n;
        }
        if self.pos == self.filled && self.release {
            self.buf = None;
            self.release = false;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.filled {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        let Some(buf) = this.buf.as_mut() else {
            let wanted = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            if wanted > 0 && out.filled().len() - before == wanted {
                this.buf = Some(vec![0; READ_AHEAD].into_boxed_slice());
            }
            return Poll::Ready(Ok(()));
        };
        let mut ahead = ReadBuf::new(buf);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
        let n = ahead.filled().len();
        this.release = n < out.remaining();
        (this.pos, this.filled) = (0, n);
        this.drain_into(out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn buffers_only_while_reads_come_in_bulk_and_loses_no_byte() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut rx = ReadAhead::new(rx);
        let mut small = [0u8; 4096];

        // Small messages: straight through, no buffer.
        tx.write_all(b"ping").await.unwrap();
        let n = rx.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"ping");
        assert!(!rx.is_buffering());

        // Bulk: a read that fills the caller's buffer switches read-ahead on.
        let bulk: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&bulk).await.unwrap();
        let mut got = Vec::new();
        while got.len() < bulk.len() {
            let n = rx.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
            if got.len() == 4096 {
                assert!(rx.is_buffering());
            }
        }
        assert_eq!(got, bulk);

        // Quiet again: the next small fill frees the buffer once drained.
        tx.write_all(b"pong").await.unwrap();
        let n = rx.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"pong");
        assert!(!rx.is_buffering());

        drop(tx);
        assert_eq!(rx.read(&mut small).await.unwrap(), 0);
    }
}
