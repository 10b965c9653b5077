//! A latency-injecting TCP forwarder, as toxiproxy's latency toxic: every chunk that passes
//! arrives `one_way` after it was sent, in either direction, and a new connection costs one
//! round trip before its first byte moves (the TCP handshake a real distance would cost).
//! `tc netem` is not available on the machines this runs on; this runs inside the benchmark.
//!
//! The model, for a connection accepted at `t0` with one-way delay `d`:
//! - the far side sees the connection at `t0 + d` (the SYN's trip);
//! - the client could only have sent after the SYN-ACK came back (`t0 + 2d`), so a byte it
//!   wrote at `t` arrives at `max(t, t0 + 2d) + d`;
//! - a byte the far side writes at `t` arrives at `t + d`.
//!
//! Nothing here bounds throughput: only set-up and round trips are measured through it.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

/// Chunks in flight per direction before the reading side waits (enough for any set-up).
const IN_FLIGHT: usize = 1024;

/// A forwarder listening on loopback; stops (with its connections) when dropped.
pub struct Delay {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Delay {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> anyhow::Result<Delay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, upstream, one_way)
    }

    /// Forwards connections accepted on `listener` (bound by the caller, e.g. to a port a
    /// configuration already names).
    pub fn serve(
        listener: TcpListener,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> anyhow::Result<Delay> {
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => {
                        conns.spawn(forward(tcp, upstream, one_way));
                    }
                    // Out of descriptors and the like: wait a little, as any accept loop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Delay { addr, accept })
    }
}

/// One connection: the handshake's round trip, then both directions delayed.
async fn forward(client: TcpStream, upstream: SocketAddr, d: Duration) {
    let accepted = Instant::now();
    tokio::time::sleep_until(accepted + d).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the client sees the connection close, as after a refused SYN
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pipe(cr, sw, d, accepted + 2 * d),
        pipe(sr, cw, d, accepted + d),
    );
}

/// Copies `from` to `to`, each chunk written `d` after it was read (and not before
/// `not_before + d`); end of stream is passed on after the same delay.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, d: Duration, not_before: Instant) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now().max(not_before) + d;
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            if tx.send((due, chunk)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) if to.write_all(&bytes).await.is_ok() => {}
                _ => break,
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind a 20 ms forwarder: the first echo costs the handshake's round
    /// trip and the echo's own, 80 ms; a second one on the same connection 40 ms.
    #[tokio::test]
    async fn a_connection_costs_a_round_trip_and_each_exchange_another() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 16];
            loop {
                let n = tcp.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                tcp.write_all(&buf[..n]).await.unwrap();
            }
        });
        let d = Duration::from_millis(20);
        let delay = Delay::start(upstream, d).await.unwrap();
        let t = Instant::now();
        let mut tcp = TcpStream::connect(delay.addr).await.unwrap();
        tcp.write_all(b"x").await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), b'x');
        let first = t.elapsed();
        let t = Instant::now();
        tcp.write_all(b"y").await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), b'y');
        let second = t.elapsed();
        // Lower bounds only: a busy machine may add, never take away.
        assert!(first >= 4 * d, "first echo after {first:?}");
        assert!(second >= 2 * d, "second echo after {second:?}");
        assert!(second < first, "{second:?} vs {first:?}");
    }
}
