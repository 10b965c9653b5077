//! The set-up every cluster test starts from: NATS ([`Nats`]), `stream-hub init --cluster`
//! with a device `dev1` and the service's connection string, and hub nodes as real
//! processes ([`Cluster`]); and what the tests ask of it (where a device is, a stream
//! through a node, a node's `/healthz`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use device_streams::protocol::connection_string::{
    DeviceConnectionString, HostName, ServiceConnectionString,
};

use crate::{
    connector, daemon::Daemon, device_config, eventually, hub_cli, nats, spawn_device, Running,
    ServiceConfig,
};

/// The NATS servers of a cluster, killed on drop.
pub struct Nats {
    pub servers: Vec<Daemon>,
    pub urls: String,
    /// Replicas of the buckets `init` makes: one per server, up to 3.
    replicas: usize,
}

impl Nats {
    /// One `nats-server -js` on a free port.
    pub fn one(dir: &Path) -> Nats {
        Self::single(nats::start_nats(dir))
    }

    /// One on `port`, where [`nats::start_nats_on`] can bring it back with its state.
    pub fn on(dir: &Path, port: u16) -> Nats {
        Self::single(nats::start_nats_on(dir, port))
    }

    /// One with its monitoring endpoint on `monitor` ([`nats::varz`]).
    pub fn monitored(dir: &Path, monitor: u16) -> Nats {
        Self::single(nats::start_nats_monitored(dir, monitor))
    }

    /// Three in one NATS cluster, the buckets replicated on all three.
    pub fn three(dir: &Path) -> Nats {
        let (servers, urls) = nats::start_nats_cluster(dir);
        Nats {
            servers,
            urls,
            replicas: 3,
        }
    }

    fn single(server: Daemon) -> Nats {
        let urls = format!("nats://127.0.0.1:{}", server.port);
        Nats {
            servers: vec![server],
            urls,
            replicas: 1,
        }
    }
}

/// A hub node (while it runs) and its log.
pub struct Node {
    pub daemon: Option<Daemon>,
    port: u16,
    pub log: PathBuf,
}

impl Node {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its name: `localhost:PORT`.
    pub fn host(&self) -> HostName {
        format!("localhost:{}", self.port())
            .parse()
            .expect("a host name")
    }

    /// Its log so far, for a failing assertion's message.
    pub fn log(&self) -> String {
        nats::log(&self.log)
    }
}

/// A cluster's data directory, NATS, nodes, and `dev1`'s and the service's connection
/// strings (naming the host `init` was given).
pub struct Cluster {
    pub data: PathBuf,
    pub nats: Nats,
    pub nodes: Vec<Node>,
    pub device: DeviceConnectionString,
    pub service: ServiceConnectionString,
    /// The names every node answers to besides its own (a balancer's).
    aliases: Vec<String>,
}

/// Two nodes on one NATS server: what most cluster tests need.
pub fn two_nodes(tmp: &Path) -> Cluster {
    Cluster::start(tmp, Nats::one(tmp), 2, None)
}

impl Cluster {
    /// `init` against `nats` (retried while a fresh NATS cluster settles), `dev1`, and
    /// `nodes` nodes; with `balancer`, the port of a load balancer that `init`'s host
    /// name names and every node answers to.
    pub fn start(tmp: &Path, nats: Nats, nodes: usize, balancer: Option<u16>) -> Cluster {
        let data = tmp.join("data");
        let hostname = format!("localhost:{}", balancer.unwrap_or(1));
        let replicas = nats.replicas.to_string();
        let init = [
            "init",
            "--hostname",
            &hostname,
            "--cluster",
            &nats.urls,
            "--cluster-replicas",
            &replicas,
        ];
        retried(&data, &init, || {
            let _ = std::fs::remove_dir_all(&data);
        });
        let device = retried(&data, &["device", "add", "dev1"], || {});
        let service = hub_cli(&data, &["connection-string"]);
        let mut cluster = Cluster {
            device: device.trim().parse().expect("dev1's connection string"),
            service: service
                .trim()
                .parse()
                .expect("the service's connection string"),
            data,
            nats,
            nodes: Vec::new(),
            aliases: balancer.map(|_| hostname).into_iter().collect(),
        };
        for i in 0..nodes {
            let log = tmp.join(format!("node{i}.log"));
            let daemon =
                nats::start_node(&cluster.data, &cluster.nats.urls, &log, &cluster.aliases);
            cluster.nodes.push(Node {
                port: daemon.port,
                daemon: Some(daemon),
                log,
            });
        }
        cluster
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].daemon = None;
    }

    /// Starts node `i` again on its port, so with its node id and registry copy, after
    /// [`Cluster::kill`]; returns once it listens.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let (urls, aliases) = (&self.nats.urls, &self.aliases);
        let daemon = nats::start_node_on(&self.data, urls, &node.log, aliases, node.port);
        node.daemon = Some(daemon);
    }

    /// The data directory's CA, which the nodes' certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.data.join("ca.pem")
    }

    /// `stream-hub <args>` against the cluster.
    pub fn cli(&self, args: &[&str]) -> String {
        hub_cli(&self.data, args)
    }

    /// How many devices node `i` holds, as `stream-hub cluster status` says; `None` while
    /// the cluster does not answer (a NATS cluster electing new leaders).
    pub fn devices_on(&self, i: usize) -> Option<u64> {
        let out = std::process::Command::new(crate::bin("stream-hub"))
            .arg("--data-dir")
            .arg(&self.data)
            .args(["cluster", "status", "--json"])
            .output()
            .expect("stream-hub runs");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let id = format!("localhost_{}", self.nodes[i].port());
        Some(status["devices_by_node"][id].as_u64().unwrap_or(0))
    }

    /// `dev1`'s connection string, naming node `i`.
    pub fn device_to(&self, i: usize) -> DeviceConnectionString {
        DeviceConnectionString {
            host: self.nodes[i].host(),
            ..self.device.clone()
        }
    }

    /// A service's request for `dev1`'s stream `echo`, asked on node `i`.
    pub fn service_via(&self, i: usize) -> ServiceConfig {
        let via = ServiceConnectionString {
            host: self.nodes[i].host(),
            ..self.service.clone()
        };
        ServiceConfig::new(via, connector(&self.ca()), "dev1", "echo")
    }

    /// `dev1`'s device proxy on node `i`, its stream `echo` mapped to `echo`; returns
    /// once the cluster shows it there.
    pub async fn device_on(&self, i: usize, echo: std::net::SocketAddr) -> Running {
        let map = format!("echo={echo}");
        let config = device_config(self.device_to(i), connector(&self.ca()), &[&map]);
        let running = spawn_device(config);
        let shown = eventually(Duration::from_secs(10), || self.devices_on(i) == Some(1)).await;
        assert!(
            shown,
            "dev1 never showed on node {i}: {}",
            self.nodes[i].log()
        );
        running
    }

    /// Node `i`'s `/healthz` body.
    pub async fn health(&self, i: usize) -> String {
        let host = self.nodes[i].host().to_string();
        let (status, body) =
            crate::https(&connector(&self.ca()), &host, "GET", "/healthz", None, "").await;
        assert_eq!(status, 200, "node {i}'s /healthz: {body}");
        body
    }

    /// Every node's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        let logs = self.nodes.iter().enumerate();
        logs.map(|(i, n)| format!("--- node {i}:\n{}\n", n.log()))
            .collect()
    }
}

/// `stream-hub args`, retried for up to 10 s while a fresh NATS cluster settles (JetStream
/// elects its leaders, and answers for replicated streams, a moment after it starts);
/// `undo` runs after each failure.
pub fn retried(data: &Path, args: &[&str], mut undo: impl FnMut()) -> String {
    let mut last = String::new();
    for _ in 0..40 {
        let out = std::process::Command::new(crate::bin("stream-hub"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .output()
            .expect("stream-hub runs");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        undo();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("stream-hub {args:?}: {last}")
}
