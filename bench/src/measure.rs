//! The measurements, each against one address (direct target, rathole's public port, or
//! our service proxy): every loop is bounded in time and in count.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::target::{fill, Counters, BLOCK};

/// Bounds every single connect / read in the measurements.
const IO_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(IO_LIMIT, f)
        .await
        .with_context(|| format!("{what} timed out after {IO_LIMIT:?}"))?
        .with_context(|| what.to_string())
}

/// Opens a connection in echo mode and waits for the echo of the mode byte.
pub async fn open_echo(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut tcp = bounded("connect", TcpStream::connect(addr)).await?;
    tcp.set_nodelay(true)?;
    bounded("write", tcp.write_all(b"E")).await?;
    let b = bounded("read the echo", tcp.read_u8()).await?;
    anyhow::ensure!(b == b'E', "the echo was {b:#x}, not 'E'");
    Ok(tcp)
}

/// Retries [`open_echo`] until it works or `limit` passes: a path is up when it echoes.
pub async fn wait_ready(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let err = match tokio::time::timeout(Duration::from_secs(3), open_echo(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no echo within 3s".into(),
        };
        if Instant::now() > deadline {
            anyhow::bail!("{addr} does not echo after {limit:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy)]
pub enum Direction {
    /// Service side → device side (the target's sink counts).
    Up,
    /// Device side → service side (the client counts).
    Down,
}

/// Bytes per second over `streams` parallel connections, counted at the receiver
/// between `warmup` and `warmup + window`.
pub async fn throughput(
    addr: SocketAddr,
    target: &Counters,
    dir: Direction,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut tcp = bounded("connect", TcpStream::connect(addr)).await?;
        let (stop, received) = (stop.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; BLOCK];
            match dir {
                Direction::Up => {
                    fill(&mut buf);
                    tcp.write_all(b"S").await?;
                    while !stop.load(Ordering::Relaxed) {
                        tcp.write_all(&buf).await?;
                    }
                }
                Direction::Down => {
                    tcp.write_all(b"D").await?;
                    while !stop.load(Ordering::Relaxed) {
                        let n = tcp.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let count = || match dir {
        Direction::Up => target.sunk.load(Ordering::Relaxed),
        Direction::Down => received.load(Ordering::Relaxed),
    };
    tokio::time::sleep(warmup).await;
    let (b0, t0) = (count(), Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (count(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // A writer blocked on a full pipe is not waiting for the flag: drop it.
        t.abort();
        let _ = t.await;
    }
    anyhow::ensure!(b1 > b0, "no bytes moved in the window");
    Ok((b1 - b0) as f64 / (t1 - t0).as_secs_f64())
}

/// Percentiles of a sample, in the sample's unit.
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

pub fn percentiles(mut v: Vec<Duration>) -> anyhow::Result<Percentiles> {
    anyhow::ensure!(!v.is_empty(), "no samples");
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Ok(Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        n: v.len(),
    })
}

/// Round trips of 64-byte messages on one open stream.
pub async fn ping_pong(
    addr: SocketAddr,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Percentiles> {
    let mut tcp = open_echo(addr).await?;
    let mut msg = [0u8; 64];
    fill(&mut msg);
    let mut back = [0u8; 64];
    let deadline = Instant::now() + limit;
    let mut samples = Vec::with_capacity(count);
    while samples.len() < count && Instant::now() < deadline {
        let t = Instant::now();
        bounded("write", tcp.write_all(&msg)).await?;
        bounded("read", tcp.read_exact(&mut back)).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(back == msg, "the echo differs from what was sent");
    }
    percentiles(samples)
}

/// New connection → first byte echoed back, one stream at a time.
pub async fn setup(addr: SocketAddr, count: usize, limit: Duration) -> anyhow::Result<Percentiles> {
    let deadline = Instant::now() + limit;
    let mut samples = Vec::with_capacity(count);
    while samples.len() < count && Instant::now() < deadline {
        let t = Instant::now();
        let tcp = open_echo(addr).await?;
        samples.push(t.elapsed());
        drop(tcp);
    }
    percentiles(samples)
}

/// Streams opened (first byte echoed) and closed per second, `workers` at a time, for `window`.
/// Returns (streams per second, failures).
/// Streams opened and closed by [`rate`].
pub struct Rate {
    pub per_second: f64,
    pub done: u64,
    pub failed: u64,
}

pub async fn rate(addr: SocketAddr, workers: usize, window: Duration) -> Rate {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match open_echo(addr).await {
                    Ok(tcp) => {
                        drop(tcp);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let done = done.load(Ordering::Relaxed);
    Rate {
        per_second: done as f64 / start.elapsed().as_secs_f64(),
        done,
        failed: failed.load(Ordering::Relaxed),
    }
}

/// Opens `count` idle echo streams (each proven open by its first echo) and keeps them.
pub async fn idle_streams(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        open.push(open_echo(addr).await?);
    }
    Ok(open)
}
