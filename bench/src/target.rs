//! The far end every path leads to: one loopback listener whose first byte picks a mode.
//!
//! - `E` echo: answers `E`, then echoes everything (set-up, latency, streams/s, idle streams);
//! - `S` sink: reads and counts everything (upload throughput is counted here, at the receiver);
//! - `D` source: writes 64 KiB blocks until the connection dies (download throughput).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub const BLOCK: usize = 64 * 1024;

/// What the target has seen, shared with the measurements.
#[derive(Default)]
pub struct Counters {
    /// Bytes the sink has received, over all connections.
    pub sunk: AtomicU64,
    /// Connections still open, of any mode.
    pub open: AtomicUsize,
}

pub struct Target {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl Target {
    pub async fn start() -> anyhow::Result<Target> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let c = c.clone();
                c.open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = serve(tcp, &c).await;
                    c.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Ok(Target { addr, counters })
    }

    /// Waits (at most `limit`) until every connection from earlier runs has gone.
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.counters.open.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(mut tcp: TcpStream, c: &Counters) -> std::io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    let mode = tcp.read_u8().await?;
    match mode {
        b'E' => {
            tcp.write_all(b"E").await?;
            loop {
                let n = tcp.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                tcp.write_all(&buf[..n]).await?;
            }
        }
        b'S' => loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            c.sunk.fetch_add(n as u64, Ordering::Relaxed);
        },
        b'D' => {
            fill(&mut buf);
            loop {
                tcp.write_all(&buf).await?;
            }
        }
        _ => Ok(()),
    }
}

/// Bytes that do not compress, so no layer gets a free ride.
pub fn fill(buf: &mut [u8]) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}
