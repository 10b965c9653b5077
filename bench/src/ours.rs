//! Our tunnel as real processes: `stream-hub serve`, `device-local-proxy` mapping the
//! stream `echo` to the target, and a listening `service-local-proxy`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;
use device_streams_protocol::{
    connection_string::{DeviceConnectionString, ServiceConnectionString},
    Secret,
};
use stream_hub::init::{self, DataDir};

use crate::procs::{free_port, loopback, wait_listening, Proc};

/// Keys of the idle devices registered for the memory figures.
pub struct Registered {
    pub hostname: String,
    pub ca_file: PathBuf,
    pub idle: Vec<(String, Secret)>,
}

pub struct Ours {
    pub hub: Proc,
    /// How to start the hub again (same data directory, same port).
    hub_command: HubCommand,
    pub device: Proc,
    pub service: Proc,
    /// The service proxy's listening address: the tunnel's entrance.
    pub entrance: SocketAddr,
    pub registered: Registered,
}

impl Ours {
    /// Creates the hub's data directory with `idle_devices` extra devices, then starts everything.
    pub async fn start(
        bin: &Path,
        work: &Path,
        target: SocketAddr,
        idle_devices: usize,
    ) -> anyhow::Result<Ours> {
        let port = free_port()?;
        Self::start_behind(bin, work, target, idle_devices, port, port).await
    }

    /// As [`Ours::start`], with the hub listening on `hub_port` but known to both proxies
    /// (connection strings, streaming URL) as `localhost:public_port`, where something else
    /// — a latency-injecting forwarder — listens and forwards to the hub.
    pub async fn start_behind(
        bin: &Path,
        work: &Path,
        target: SocketAddr,
        idle_devices: usize,
        hub_port: u16,
        public_port: u16,
    ) -> anyhow::Result<Ours> {
        let hostname = format!("localhost:{public_port}");
        let data = DataDir::new(work.join("hub"));
        init::init(&data, &hostname).context("hub init")?;
        let registry = data.registry()?;
        let device = registry.add_device("bench-dev")?;
        let host = data.host(&registry)?;
        let device_cs = DeviceConnectionString::new(host.clone(), "bench-dev", device.primary_key)
            .to_secret_string();
        let policy = registry
            .policy(init::DEFAULT_POLICY)?
            .context("the default policy is missing")?;
        let service_cs =
            ServiceConnectionString::new(host, policy.name, policy.primary_key).to_secret_string();
        let mut idle = Vec::with_capacity(idle_devices);
        for i in 0..idle_devices {
            let id = format!("idle-{i}");
            idle.push((id.clone(), registry.add_device(&id)?.primary_key));
        }
        drop(registry);

        let hub_command = HubCommand {
            bin: bin.to_path_buf(),
            data_dir: data.path.clone(),
            port: hub_port,
            work: work.to_path_buf(),
        };
        let hub = hub_command.start().await?;

        let device = device_proxy(bin, work, &device_cs, &data.ca_file(), target)?;
        let entrance = loopback(free_port()?);
        let service = service_proxy(
            bin,
            work,
            "service-proxy",
            &service_cs,
            &data.ca_file(),
            entrance,
        )
        .await?;
        Ok(Ours {
            hub,
            hub_command,
            device,
            service,
            entrance,
            registered: Registered {
                hostname,
                ca_file: data.ca_file(),
                idle,
            },
        })
    }
}

/// `device-local-proxy` for `bench-dev` (`connection`), its stream `echo` mapped to `target`.
pub fn device_proxy(
    bin: &Path,
    work: &Path,
    connection: &Secret,
    ca_file: &Path,
    target: SocketAddr,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin.join("device-local-proxy"));
    cmd.env("DEVICE_CONNECTION_STRING", connection.expose())
        .arg("--ca-file")
        .arg(ca_file)
        .arg("--map")
        .arg(format!("echo={target}"))
        .args(["--max-streams", "2000"]);
    Proc::spawn("device-proxy", cmd, work)
}

/// `service-local-proxy` listening on `entrance` for `bench-dev`'s stream `echo`, asking
/// the hub `connection` names; returns once it listens.
pub async fn service_proxy(
    bin: &Path,
    work: &Path,
    name: &'static str,
    connection: &Secret,
    ca_file: &Path,
    entrance: SocketAddr,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin.join("service-local-proxy"));
    cmd.env("SERVICE_CONNECTION_STRING", connection.expose())
        .arg("--ca-file")
        .arg(ca_file)
        .args(["--device-id", "bench-dev", "--stream-name", "echo"])
        .arg("--listen")
        .arg(entrance.to_string())
        .args(["--max-connections", "2000"]);
    let service = Proc::spawn(name, cmd, work)?;
    wait_listening(entrance, Duration::from_secs(10)).await?;
    Ok(service)
}

/// `stream-hub serve` as the benchmark runs it.
struct HubCommand {
    bin: PathBuf,
    data_dir: PathBuf,
    port: u16,
    work: PathBuf,
}

impl HubCommand {
    async fn start(&self) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(self.bin.join("stream-hub"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(loopback(self.port).to_string())
            .args(["--max-connections", "25000", "--max-devices", "25000"])
            .args(["--max-streams", "10000", "--max-streams-per-device", "2000"])
            // The default (1,000/s) is a guard rail; the figure wanted here is capacity.
            .args(["--max-new-streams-per-second", "100000"]);
        let hub = Proc::spawn("hub", cmd, &self.work)?;
        wait_listening(loopback(self.port), Duration::from_secs(10)).await?;
        Ok(hub)
    }
}

impl Ours {
    /// Where the hub listens.
    pub fn hub_addr(&self) -> SocketAddr {
        loopback(self.hub_command.port)
    }

    /// Kills the hub (as a crash or a power cut would: no goodbye to anyone).
    pub fn kill_hub(&mut self) {
        self.hub.kill();
    }

    /// Starts the hub again on its port and data directory; returns once it listens.
    pub async fn restart_hub(&mut self) -> anyhow::Result<()> {
        self.hub = self.hub_command.start().await?;
        Ok(())
    }
}
