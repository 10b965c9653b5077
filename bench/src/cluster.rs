//! `bench --cluster`: what cluster mode adds to a stream's set-up. A 3-server NATS
//! JetStream cluster, two hub nodes A and B sharing one data directory (`init --cluster`,
//! buckets replicated 3 times), the device proxy on A, and two service proxies: one asking
//! A (the device's own node) and one asking B, which asks A over NATS and hands back A's
//! streaming URL (the stream's bytes then go to A). One table: set-up p50/p99 and
//! streams/s through each, and the CPU each part spent per stream.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;
use device_streams_protocol::connection_string::{
    DeviceConnectionString, HostName, ServiceConnectionString,
};

use crate::{
    measure, ours,
    procs::{free_port, loopback, wait_listening, Proc},
    target::Target,
    Args,
};

/// The two ways a service reaches the device on node A.
const PATHS: [&str; 2] = ["same node (A → A)", "other node (B → A)"];

struct Cluster {
    nats: Vec<Proc>,
    nodes: Vec<Proc>,
    _device: Proc,
    _services: Vec<Proc>,
    /// The service proxies' listening addresses, as [`PATHS`].
    entrances: [SocketAddr; 2],
}

/// Runs the cluster benchmark and prints its table.
pub async fn run(args: &Args, target: &Target) -> anyhow::Result<()> {
    let work = args.work.join("cluster");
    std::fs::create_dir_all(&work)?;
    let mut cluster = start(args, &work, target.addr).await?;
    for (name, addr) in PATHS.iter().zip(cluster.entrances) {
        measure::wait_ready(addr, Duration::from_secs(30))
            .await
            .with_context(|| format!("{name} is not up (logs in {})", work.display()))?;
    }
    eprintln!("both paths echo; measuring");
    let mut rows: Vec<(String, [String; 2])> = Vec::new();
    let mut setups = Vec::new();
    for (name, addr) in PATHS.iter().zip(cluster.entrances) {
        let p = measure::setup(addr, args.setups, Duration::from_secs(60)).await?;
        eprintln!("set-up {name}: {} samples", p.n);
        setups.push(p);
        target.settle(Duration::from_secs(10)).await;
    }
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    rows.push((
        "stream set-up (connect → first echo), p50, ms".into(),
        [ms(setups[0].p50), ms(setups[1].p50)],
    ));
    rows.push((
        "stream set-up (connect → first echo), p99, ms".into(),
        [ms(setups[0].p99), ms(setups[1].p99)],
    ));
    rows.extend(rates(args, target, &cluster).await?);
    for p in cluster.nats.iter_mut().chain(&mut cluster.nodes) {
        p.check_alive()?;
    }
    println!(
        "| 3 NATS servers, 2 hub nodes, device on A | {} | {} |",
        PATHS[0], PATHS[1]
    );
    println!("|---|---:|---:|");
    for (name, [a, b]) in rows {
        println!("| {name} | {a} | {b} |");
    }
    Ok(())
}

/// streams/s through each path, and the CPU each part spent per stream meanwhile.
async fn rates(
    args: &Args,
    target: &Target,
    cluster: &Cluster,
) -> anyhow::Result<Vec<(String, [String; 2])>> {
    let parts: [(&str, Vec<&Proc>); 3] = [
        ("node A", vec![&cluster.nodes[0]]),
        ("node B", vec![&cluster.nodes[1]]),
        ("NATS (3 servers)", cluster.nats.iter().collect()),
    ];
    let mut per_second = [String::new(), String::new()];
    let mut cpu: Vec<[String; 2]> = vec![Default::default(); parts.len()];
    for (i, addr) in cluster.entrances.into_iter().enumerate() {
        let before: Vec<Duration> = parts
            .iter()
            .map(|(_, p)| cpu_time(p))
            .collect::<Result<_, _>>()?;
        let r = measure::rate(addr, args.rate_workers, args.rate_window).await;
        eprintln!(
            "streams/s {}: {:.0} ({} failed)",
            PATHS[i], r.per_second, r.failed
        );
        per_second[i] = format!("{:.0}", r.per_second);
        for (j, (_, procs)) in parts.iter().enumerate() {
            let used = cpu_time(procs)? - before[j];
            cpu[j][i] = format!("{:.0}", used.as_secs_f64() * 1e6 / r.done.max(1) as f64);
        }
        target.settle(Duration::from_secs(15)).await;
    }
    let mut rows = vec![(
        format!(
            "streams/s opened+closed ({} at a time, {:?})",
            args.rate_workers, args.rate_window
        ),
        per_second,
    )];
    for ((name, _), cells) in parts.iter().zip(cpu) {
        rows.push((format!("CPU per stream, {name}, µs"), cells));
    }
    Ok(rows)
}

fn cpu_time(procs: &[&Proc]) -> anyhow::Result<Duration> {
    procs.iter().map(|p| p.cpu_time()).sum()
}

/// Everything up: NATS, the data directory, both nodes, the proxies.
async fn start(args: &Args, work: &Path, target: SocketAddr) -> anyhow::Result<Cluster> {
    let (nats, urls) = start_nats(&args.nats_server, work).await?;
    let data = work.join("data");
    let cli = Cli {
        bin: args.bin_dir.join("stream-hub"),
        data: data.clone(),
    };
    cli.retried(&[
        "init",
        "--hostname",
        "localhost:1",
        "--cluster",
        &urls,
        "--cluster-replicas",
        "3",
    ])
    .await?;
    let device: DeviceConnectionString = cli
        .retried(&["device", "add", "bench-dev"])
        .await?
        .trim()
        .parse()?;
    let service: ServiceConnectionString =
        cli.retried(&["connection-string"]).await?.trim().parse()?;
    let ports = [free_port()?, free_port()?];
    let mut nodes = Vec::new();
    for (name, port) in ["node-a", "node-b"].into_iter().zip(ports) {
        nodes.push(start_node(args, &data, &urls, name, port, work)?);
    }
    for port in ports {
        wait_listening(loopback(port), Duration::from_secs(20)).await?;
    }
    let host = |port: u16| -> anyhow::Result<HostName> { Ok(format!("localhost:{port}").parse()?) };
    let ca = data.join("ca.pem");
    let device = DeviceConnectionString {
        host: host(ports[0])?,
        ..device
    };
    let device = ours::device_proxy(&args.bin_dir, work, &device.to_secret_string(), &ca, target)?;
    let entrances = [loopback(free_port()?), loopback(free_port()?)];
    let mut services = Vec::new();
    for ((name, port), entrance) in ["service-a", "service-b"]
        .into_iter()
        .zip(ports)
        .zip(entrances)
    {
        let via = ServiceConnectionString {
            host: host(port)?,
            ..service.clone()
        };
        let via = via.to_secret_string();
        services.push(ours::service_proxy(&args.bin_dir, work, name, &via, &ca, entrance).await?);
    }
    Ok(Cluster {
        nats,
        nodes,
        _device: device,
        _services: services,
        entrances,
    })
}

/// Three `nats-server -js` with routes between them; returns them and the client URLs.
async fn start_nats(bin: &Path, work: &Path) -> anyhow::Result<(Vec<Proc>, String)> {
    let routes = [free_port()?, free_port()?, free_port()?];
    let route_urls: Vec<String> = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for (i, name) in ["nats-0", "nats-1", "nats-2"].into_iter().enumerate() {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(work.join(name))
            .args(["-n", name, "--cluster_name", "bench"])
            .args([
                "--cluster",
                &route_urls[i],
                "--routes",
                &route_urls.join(","),
            ]);
        servers.push(Proc::spawn(name, cmd, work)?);
        urls.push(format!("nats://127.0.0.1:{port}"));
    }
    for url in &urls {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("a NATS port")?;
        wait_listening(loopback(port), Duration::from_secs(20)).await?;
    }
    Ok((servers, urls.join(",")))
}

/// A hub node, with the benchmark's limits (capacity is what is measured, not the guard rails).
fn start_node(
    args: &Args,
    data: &Path,
    urls: &str,
    name: &'static str,
    port: u16,
    work: &Path,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(args.bin_dir.join("stream-hub"));
    cmd.arg("--data-dir")
        .arg(data)
        .arg("serve")
        .args(["--listen", &loopback(port).to_string()])
        .args(["--streaming-url", &format!("wss://localhost:{port}")])
        .args(["--alias", &format!("localhost:{port}")])
        .args(["--cluster", urls])
        .args(["--max-connections", "25000", "--max-streams", "10000"])
        .args([
            "--max-streams-per-device",
            "2000",
            "--max-new-streams-per-second",
            "100000",
        ]);
    Proc::spawn(name, cmd, work)
}

/// The `stream-hub` command line against the cluster's data directory.
struct Cli {
    bin: PathBuf,
    data: PathBuf,
}

impl Cli {
    /// Runs `args`, again for up to 10 s while the fresh NATS cluster elects its leaders;
    /// returns stdout.
    async fn retried(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = String::new();
        for _ in 0..40 {
            let out = Command::new(&self.bin)
                .arg("--data-dir")
                .arg(&self.data)
                .args(args)
                .output()
                .with_context(|| format!("cannot run {}", self.bin.display()))?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            if args[0] == "init" {
                // A failed init may have left part of the directory behind.
                let _ = std::fs::remove_dir_all(&self.data);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("stream-hub {}: {last}", args[0])
    }
}
