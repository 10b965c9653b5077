//! Tools for fault tests: peers that echo or answer once, a loopback forwarder that can
//! go silent without closing (a half-dead link), the binaries as child processes, and
//! counts of what a process holds (file descriptors, resident memory).

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};
use tokio_util::sync::CancellationToken;

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A loopback port free right now (for a child process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub use crate::{eventually, eventually_async};

/// A TCP server on loopback; `open` counts the connections it holds right now.
pub struct Peer {
    pub addr: SocketAddr,
    pub open: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    _stop: tokio_util::sync::DropGuard,
}

impl Peer {
    /// Echoes every byte back until the client closes.
    pub async fn echo() -> Peer {
        Self::serve(|mut tcp| async move {
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await
    }

    /// A request/response peer: reads the request to end of file, then answers with
    /// `reply_len` bytes derived from it and closes.
    pub async fn answer_after_eof(reply_len: usize) -> Peer {
        Self::serve(move |mut tcp| async move {
            let mut request = Vec::new();
            if tcp.read_to_end(&mut request).await.is_err() {
                return;
            }
            let _ = tcp.write_all(&reply_for(&request, reply_len)).await;
            let _ = tcp.shutdown().await;
        })
        .await
    }

    /// Writes as fast as the connection takes it; `written` counts bytes handed to the kernel.
    pub async fn firehose(written: Arc<AtomicUsize>) -> Peer {
        Self::serve(move |mut tcp| {
            let written = written.clone();
            async move {
                let chunk = vec![0x5a; 64 * 1024];
                while let Ok(n) = tcp.write(&chunk).await {
                    written.fetch_add(n, Ordering::Relaxed);
                }
            }
        })
        .await
    }

    async fn serve<F, Fut>(handler: F) -> Peer
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (count, total, cancel) = (open.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = listener.accept() => match r { Ok((tcp, _)) => tcp, Err(_) => continue },
                };
                count.fetch_add(1, Ordering::SeqCst);
                total.fetch_add(1, Ordering::SeqCst);
                let (count, task) = (count.clone(), handler(tcp));
                tokio::spawn(async move {
                    task.await;
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Peer {
            addr,
            open,
            accepted,
            _stop: stop.drop_guard(),
        }
    }
}

/// What [`Peer::answer_after_eof`] answers to `request`: its length, then a pattern.
pub fn reply_for(request: &[u8], len: usize) -> Vec<u8> {
    let mut reply = format!("{}:", request.len()).into_bytes();
    reply.extend((0..len).map(|i| (i % 251) as u8));
    reply
}

/// A loopback TCP forwarder to `upstream`. [`Forwarder::freeze`] makes every connection
/// open at that moment stop forwarding in both directions without closing — the link
/// of a peer that lost power or network — while later connections pass normally.
pub struct Forwarder {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    freeze: Arc<Mutex<CancellationToken>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let freeze = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (count, frozen, cancel) = (accepted.clone(), freeze.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = listener.accept() => match r { Ok((tcp, _)) => tcp, Err(_) => continue },
                };
                count.fetch_add(1, Ordering::SeqCst);
                let freeze = frozen.lock().unwrap().clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        _ = async { tokio::join!(pipe(cr, sw, &freeze), pipe(sr, cw, &freeze)) } => {}
                    }
                });
            }
        });
        Forwarder {
            addr,
            accepted,
            freeze,
            _stop: stop.drop_guard(),
        }
    }

    /// Waits up to `limit` until at least `n` connections were accepted.
    pub async fn wait_accepted(&self, n: usize, limit: Duration) -> bool {
        eventually(limit, || self.accepted.load(Ordering::SeqCst) >= n).await
    }

    /// Silences every connection open now; they stay open but carry nothing more.
    pub fn freeze(&self) {
        let mut token = self.freeze.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    freeze: &CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            () = freeze.cancelled() => std::future::pending().await,
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        if freeze.is_cancelled() {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// One of the workspace's binaries as a child process, killed if the test drops it.
pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn binary")
}

/// Sends `signal` (e.g. "TERM", "KILL") to a child.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits up to `limit` for a child to exit; its exit code, or `None` if it did not.
pub async fn exit_code(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => Some(status.code()),
        _ => None,
    }
}

/// A hub run as the real `stream-hub` binary: a data directory made by its own CLI
/// (`init`, `device add dev1`) and `serve` on a fixed loopback port, so it can be
/// killed and started again on the same address.
pub struct HubProcess {
    _tmp: tempfile::TempDir,
    pub dir: std::path::PathBuf,
    pub port: u16,
    pub device_cs: String,
    pub service_cs: String,
}

impl HubProcess {
    pub fn init() -> HubProcess {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("hub");
        let port = free_port();
        let cli = |args: &[&str]| crate::hub_cli(&dir, args).trim().to_string();
        cli(&["init", "--hostname", &format!("localhost:{port}")]);
        let device_cs = cli(&["device", "add", "dev1"]);
        let service_cs = cli(&["connection-string"]);
        HubProcess {
            _tmp: tmp,
            dir,
            port,
            device_cs,
            service_cs,
        }
    }

    pub fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `stream-hub serve` with `--shutdown-grace grace`.
    pub fn serve(&self, grace: &str) -> Child {
        self.serve_with(&["--shutdown-grace", grace])
    }

    /// `stream-hub serve` on this data directory and port, with `extra` flags.
    pub fn serve_with(&self, extra: &[&str]) -> Child {
        let dir = self.dir.display().to_string();
        let listen = self.listen();
        let mut args = vec!["serve", "--data-dir", &dir, "--listen", &listen];
        args.extend(extra);
        spawn(&crate::bin("stream-hub"), &args, &[])
    }

    pub fn connector(&self) -> device_streams::Connector {
        crate::connector(&self.dir.join("ca.pem"))
    }

    /// A service config for `dev1`'s stream `name` on this hub.
    pub fn service_config(&self, name: &str) -> crate::ServiceConfig {
        let cs = self.service_cs.parse().expect("service connection string");
        crate::ServiceConfig::new(cs, self.connector(), "dev1", name)
    }
}

/// Retries `attempt` every 50 ms for up to 10 s (a process starting, a device reconnecting).
pub async fn retry<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..200 {
        if let Ok(v) = attempt().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not ready within 10 s");
}

/// A hub with `dev1` connected through an in-process device proxy that maps `echo` to an
/// echo peer: the starting point of most fault tests.
pub async fn echo_system(limits: stream_hub::Limits) -> (crate::System, Peer, crate::Running) {
    let sys = crate::System::start_with(limits).await;
    let echo = Peer::echo().await;
    let dev = sys.add_device("dev1");
    let device = sys
        .start_device(dev, &[&format!("echo={}", echo.addr)])
        .await;
    (sys, echo, device)
}
