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

    /// CPU time used so far (user + system, all threads), from /proc; 10 ms resolution.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .with_context(|| format!("{} is not running", self.name))?;
        let ticks =
            cpu_ticks(&stat).with_context(|| format!("unreadable /proc stat for {}", self.name))?;
        // /proc counts in USER_HZ, which is 100 on Linux whatever the kernel's own HZ.
        Ok(Duration::from_millis(ticks * 10))
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited: {status}", self.name),
        }
    }
}

impl Proc {
    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name comes second, in
/// parentheses, and may itself hold spaces and parentheses, so fields are counted from
/// its last `)`: utime and stime are the 12th and 13th after it.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
        Self::start_via(bin, tls, work, public, control, control, target)
    }

    /// As [`Rathole::start`], with the server's control port chosen by the caller and the
    /// client dialing `dial` (a forwarder in front of `control`) instead.
    pub fn start_via(
        bin: &Path,
        tls: &RatholeTls,
        work: &Path,
        public: u16,
        control: u16,
        dial: u16,
        target: SocketAddr,
    ) -> anyhow::Result<Rathole> {
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
            &format!("remote_addr = \"localhost:{dial}\""),
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

/// Three `tcp-relay` processes in a chain in front of `target`: a stream's shape (three
/// processes, four loopback hops) without its TLS and framing.
pub struct Relays {
    pub procs: Vec<Proc>,
    pub entrance: SocketAddr,
}

impl Relays {
    pub fn start(bin_dir: &Path, work: &Path, target: SocketAddr) -> anyhow::Result<Relays> {
        let mut next = target;
        let mut procs = Vec::new();
        for name in ["relay-device", "relay-hub", "relay-service"] {
            let listen = loopback(free_port()?);
            let mut cmd = Command::new(bin_dir.join("tcp-relay"));
            cmd.arg(listen.to_string()).arg(next.to_string());
            procs.push(Proc::spawn(name, cmd, work)?);
            next = listen;
        }
        Ok(Relays {
            procs,
            entrance: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_ticks;

    #[test]
    fn cpu_ticks_counts_fields_after_the_command_name() {
        // A real line's shape, with a command name holding a space and a parenthesis.
        let stat = "4242 (tokio rt) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    731 269 0 0 20 0 3 0 1000 2000000 500";
        assert_eq!(cpu_ticks(stat), Some(731 + 269));
        assert_eq!(cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis at all"), None);
    }
}
