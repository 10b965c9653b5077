//! The system under test as real processes: the hub and both proxies from `target/release`,
//! and rathole's server and client. Each is killed when its handle drops.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

pub struct Proc {
    pub name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with its stderr in `<work>/<name>.log` and `RUST_LOG=warn`
    /// (both tunnels log per connection at info; neither pays for it here).
    pub fn spawn(name: &'static str, mut cmd: Command, work: &Path) -> anyhow::Result<Proc> {
        let log = File::create(work.join(format!("{name}.log")))?;
        let child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Proc { name, child })
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .with_context(|| format!("{} is not running", self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS for {}", self.name))
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited: {status}", self.name),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {addr} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// rathole in its websocket+TLS transport: the server exposes `public`, the client (the
/// "device") dials out to the server and forwards to `target`.
pub struct Rathole {
    pub server: Proc,
    pub client: Proc,
}

pub struct RatholeTls {
    /// PKCS#12 identity for the server (password `bench`).
    pub pkcs12: PathBuf,
    /// The certificate the client trusts.
    pub cert_pem: PathBuf,
}

impl Rathole {
    pub fn start(
        bin: &Path,
        tls: &RatholeTls,
        work: &Path,
        public: u16,
        target: SocketAddr,
    ) -> anyhow::Result<Rathole> {
        let control = free_port()?;
        let server_toml = side_config(
            "server",
            &format!("bind_addr = \"127.0.0.1:{control}\""),
            &format!(
                "pkcs12 = \"{}\"\npkcs12_password = \"bench\"",
                tls.pkcs12.display()
            ),
            &format!("bind_addr = \"127.0.0.1:{public}\""),
        );
        let client_toml = side_config(
            "client",
            &format!("remote_addr = \"localhost:{control}\""),
            &format!(
                "trusted_root = \"{}\"\nhostname = \"localhost\"",
                tls.cert_pem.display()
            ),
            &format!("local_addr = \"{target}\""),
        );
        let (s, c) = (
            work.join("rathole-server.toml"),
            work.join("rathole-client.toml"),
        );
        std::fs::write(&s, server_toml)?;
        std::fs::write(&c, client_toml)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--server").arg(&s);
        let server = Proc::spawn("rathole-server", cmd, work)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--client").arg(&c);
        let client = Proc::spawn("rathole-client", cmd, work)?;
        Ok(Rathole { server, client })
    }
}

/// One side's rathole config: websocket+TLS transport and the one service, `echo`.
fn side_config(side: &str, endpoint: &str, tls: &str, service: &str) -> String {
    format!(
        r#"[{side}]
{endpoint}
[{side}.transport]
type = "websocket"
[{side}.transport.tls]
{tls}
[{side}.transport.websocket]
tls = true
[{side}.services.echo]
token = "bench-token"
{service}
"#
    )
}
