//! `bench`: brings up direct loopback TCP, rathole (websocket+TLS), our tunnel (hub,
//! device proxy, service proxy as real processes with real TLS) and three plain TCP relays
//! in a chain (our tunnel's shape without its work) side by side, and prints one table.
//! Run it through `scripts/bench`, which builds, installs rathole and makes rathole's
//! certificate. Not a test: nothing here asserts a speed.
#![forbid(unsafe_code)]

mod cluster;
mod delay;
mod devices;
mod fleet;
mod herd;
mod latency;
mod measure;
mod ours;
mod procs;
mod table;
mod target;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use measure::Direction;
use procs::{free_port, loopback, Rathole, RatholeTls, Relays};
use table::{Row, Table};

/// Benchmark: direct TCP vs rathole websocket+TLS vs device streams vs plain relays, one table.
#[derive(Parser)]
struct Args {
    /// Directory holding stream-hub, device-local-proxy and service-local-proxy.
    #[arg(long, env = "BENCH_BIN_DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// The rathole binary.
    #[arg(long, env = "BENCH_RATHOLE", default_value = "rathole")]
    rathole: PathBuf,
    /// rathole server identity, PKCS#12 with password `bench`.
    #[arg(long, env = "BENCH_RATHOLE_PKCS12")]
    rathole_pkcs12: PathBuf,
    /// The PEM certificate rathole's client trusts.
    #[arg(long, env = "BENCH_RATHOLE_CERT")]
    rathole_cert: PathBuf,
    /// Scratch directory (hub data, configs, logs).
    #[arg(long, env = "BENCH_WORK")]
    work: PathBuf,
    /// Measuring window of each throughput figure (after a 0.5 s warm-up).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// How long streams are opened and closed for the streams/s figure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    rate_window: Duration,
    /// Streams opened at once for the streams/s figure.
    #[arg(long, default_value_t = 16)]
    rate_workers: usize,
    /// Round trips for the latency figure, and connections for the set-up figure.
    #[arg(long, default_value_t = 2000)]
    pings: usize,
    #[arg(long, default_value_t = 300)]
    setups: usize,
    /// Idle streams held open for the memory-per-stream figure.
    #[arg(long, default_value_t = 200)]
    idle_streams: usize,
    /// Idle devices for the memory-per-device figures (the smaller, then the larger).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    devices: Vec<usize>,
    /// Instead of the table: the herd — this many devices on one hub, the hub killed for
    /// --outage and started again; prints how long each device took to come back.
    #[arg(long, default_value_t = 0)]
    herd: usize,
    /// How long the hub stays down in the herd run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// The devices' longest wait between reconnect attempts in the herd run (the device
    /// proxy's --max-backoff).
    #[arg(long, default_value_t = device_streams::device::defaults::MAX_BACKOFF.into())]
    herd_max_backoff: humantime::Duration,
    /// Instead of the table: stream set-up over a distance — this delay added each way on
    /// every leg to the hub (rathole's server, the direct target), warm and cold, in ms and
    /// round trips.
    #[arg(long, value_parser = humantime::parse_duration)]
    one_way_delay: Option<Duration>,
    /// Back-to-back set-ups per path in the --one-way-delay run.
    #[arg(long, default_value_t = 40)]
    warm_setups: usize,
    /// Set-ups after an idle pause per path in the --one-way-delay run.
    #[arg(long, default_value_t = 6)]
    cold_setups: usize,
    /// The idle pause before each cold set-up.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    cold_idle: Duration,
    /// Instead of the table: cluster mode's set-up and streams/s when the service asks the
    /// device's own node vs another node (3 NATS servers, 2 hub nodes; docs/SCALING.md).
    #[arg(long)]
    cluster: bool,
    /// The nats-server binary (2.10 or later) for --cluster.
    #[arg(long, env = "NATS_SERVER", default_value = "nats-server")]
    nats_server: PathBuf,
    /// Instead of the table: the fleet — this many devices connected to one hub from
    /// child processes; prints the connect rate and the hub's RSS per idle device.
    #[arg(long, default_value_t = 0)]
    fleet: usize,
    /// Child processes the fleet's devices are spread over (one source address each).
    #[arg(long, default_value_t = 4)]
    fleet_children: usize,
    /// Handshakes in flight per fleet child.
    #[arg(long, default_value_t = 64)]
    fleet_parallel: usize,
    /// Paths measured for the speed figures (for profiling one of them alone).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,rathole,ours,relays"
    )]
    paths: Vec<String>,
}

/// The paths measured side by side; `relays` is three plain TCP relays in a chain (see
/// `src/bin/tcp-relay.rs`): a stream's processes and hops without TLS or framing.
const PATHS: [&str; 4] = ["direct", "rathole", "ours", "relays"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(fleet::CHILD) {
        return fleet::child_main().await;
    }
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let target = target::Target::start().await?;
    if args.herd > 0 {
        return herd_table(&args, &target).await;
    }
    if let Some(one_way) = args.one_way_delay {
        return latency_table(&args, &target, one_way).await;
    }
    if args.cluster {
        return cluster::run(&args, &target).await;
    }
    if args.fleet > 0 {
        let shape = (args.fleet, args.fleet_children, args.fleet_parallel);
        return fleet::table(&args.bin_dir, &args.work, target.addr, shape).await;
    }
    let mut table = Table::default();

    // Phase 1: fresh processes; memory per idle stream first, so nothing earlier has
    // left freed memory around for the streams to reuse; then the speed figures.
    let work = args.work.join("speed");
    std::fs::create_dir_all(&work)?;
    let mut ours = ours::Ours::start(&args.bin_dir, &work, target.addr, 0).await?;
    let tls = RatholeTls {
        pkcs12: args.rathole_pkcs12.clone(),
        cert_pem: args.rathole_cert.clone(),
    };
    let rathole_port = free_port()?;
    let mut rathole = Rathole::start(&args.rathole, &tls, &work, rathole_port, target.addr)?;
    let mut relays = Relays::start(&args.bin_dir, &work, target.addr)?;
    let addrs: [SocketAddr; 4] = [
        target.addr,
        loopback(rathole_port),
        ours.entrance,
        relays.entrance,
    ];
    for (name, addr) in PATHS.iter().zip(addrs) {
        measure::wait_ready(addr, Duration::from_secs(30))
            .await
            .with_context(|| format!("{name} path is not up (logs in {})", work.display()))?;
    }
    eprintln!("all paths echo; measuring");

    idle_stream_memory(&args, &mut table, &ours, &rathole, addrs[1]).await?;
    target.settle(Duration::from_secs(10)).await;

    for (dir, dname) in [
        (Direction::Up, "service→device"),
        (Direction::Down, "device→service"),
    ] {
        for streams in [1, 8] {
            let mut vals = [None; 4];
            for (i, addr) in chosen(&args, addrs) {
                let bps = measure::throughput(
                    addr,
                    &target.counters,
                    dir,
                    streams,
                    Duration::from_millis(500),
                    args.window,
                )
                .await
                .with_context(|| format!("throughput via {}", PATHS[i]))?;
                vals[i] = Some(bps / 1e6);
                target.settle(Duration::from_secs(10)).await;
            }
            table.push(Row::new(
                format!("throughput {dname}, {streams} stream(s)"),
                "MB/s",
                vals,
            ));
            eprintln!("throughput {dname} x{streams}: {vals:?}");
        }
    }

    let mut rtt: [Option<measure::Percentiles>; 4] = Default::default();
    for (i, addr) in chosen(&args, addrs) {
        rtt[i] = Some(measure::ping_pong(addr, args.pings, Duration::from_secs(20)).await?);
    }
    push_percentiles(&mut table, "round trip 64 B", "µs", 1e6, &rtt);
    target.settle(Duration::from_secs(10)).await;

    let mut setup: [Option<measure::Percentiles>; 4] = Default::default();
    for (i, addr) in chosen(&args, addrs) {
        let p = measure::setup(addr, args.setups, Duration::from_secs(30)).await?;
        eprintln!("set-up via {}: {} samples", PATHS[i], p.n);
        setup[i] = Some(p);
        target.settle(Duration::from_secs(10)).await;
    }
    let name = "stream set-up (connect → first echo)";
    push_percentiles(&mut table, name, "ms", 1e3, &setup);

    let mut rates = [None; 4];
    let mut cpu = [None; 4];
    let mut failures = Vec::new();
    let tunnels: [Vec<&procs::Proc>; 4] = [
        vec![],
        vec![&rathole.server, &rathole.client],
        vec![&ours.hub, &ours.device, &ours.service],
        relays.procs.iter().collect(),
    ];
    for (i, addr) in chosen(&args, addrs) {
        let before = cpu_time(&tunnels[i])?;
        let r = measure::rate(addr, args.rate_workers, args.rate_window).await;
        let used = cpu_time(&tunnels[i])? - before;
        rates[i] = Some(r.per_second);
        if !tunnels[i].is_empty() && r.done > 0 {
            cpu[i] = Some(used.as_secs_f64() * 1e6 / r.done as f64);
        }
        failures.push(format!("{}: {}", PATHS[i], r.failed));
        target.settle(Duration::from_secs(15)).await;
    }
    table.push(Row::new(
        format!(
            "streams/s opened+closed ({} at a time, {:?})",
            args.rate_workers, args.rate_window
        ),
        "1/s",
        rates,
    ));
    table.push(Row::new(
        "CPU per stream opened+closed (all of a tunnel's processes)",
        "µs",
        cpu,
    ));
    for p in [&mut ours.hub, &mut ours.device, &mut ours.service] {
        p.check_alive()?;
    }
    rathole.server.check_alive()?;
    rathole.client.check_alive()?;
    for p in &mut relays.procs {
        p.check_alive()?;
    }
    drop((ours, rathole, relays));

    // Phase 2: a fresh hub with many registered devices, for memory per idle device.
    let work = args.work.join("devices");
    std::fs::create_dir_all(&work)?;
    let most = args.devices.iter().copied().max().unwrap_or(0);
    eprintln!("registering {most} devices");
    let ours = ours::Ours::start(&args.bin_dir, &work, target.addr, most).await?;
    measure::wait_ready(ours.entrance, Duration::from_secs(30)).await?;
    let base = settled_rss(&ours.hub).await?;
    let mut sessions = Vec::new();
    for &n in &args.devices {
        let from = sessions.len();
        devices::connect_range(
            &ours.registered,
            from,
            n,
            &mut sessions,
            Duration::from_secs(600),
        )
        .await?;
        let rss = settled_rss(&ours.hub).await?;
        let per = (rss.saturating_sub(base)) as f64 / n as f64;
        eprintln!("{n} idle devices: hub RSS {base} → {rss} KiB");
        table.push(Row::new(
            format!(
                "hub RSS per idle device ({n} devices; hub total {} MiB)",
                rss / 1024
            ),
            "KiB",
            [None, None, Some(per), None],
        ));
    }
    drop(sessions);
    eprintln!("stream failures during streams/s: {}", failures.join(", "));
    println!("{}", table.render(&PATHS));
    Ok(())
}

/// `--one-way-delay D`: set-up over a distance, as a table of its own.
async fn latency_table(
    args: &Args,
    target: &target::Target,
    one_way: Duration,
) -> anyhow::Result<()> {
    let work = args.work.join("latency");
    std::fs::create_dir_all(&work)?;
    let plan = latency::Plan {
        one_way,
        warm: args.warm_setups,
        cold: args.cold_setups,
        idle: args.cold_idle,
        bin_dir: &args.bin_dir,
        rathole: &args.rathole,
        rathole_tls: RatholeTls {
            pkcs12: args.rathole_pkcs12.clone(),
            cert_pem: args.rathole_cert.clone(),
        },
        work: &work,
    };
    latency::run(plan, target).await
}

/// `--herd N`: the return of N devices after an outage, as a table of its own.
async fn herd_table(args: &Args, target: &target::Target) -> anyhow::Result<()> {
    let work = args.work.join("herd");
    std::fs::create_dir_all(&work)?;
    eprintln!("registering {} devices", args.herd);
    let mut ours = ours::Ours::start(&args.bin_dir, &work, target.addr, args.herd).await?;
    let max_backoff = args.herd_max_backoff.into();
    let herd = herd::run(&mut ours, args.outage, max_backoff).await?;
    let secs = |q| herd.quantile(q).map(|d| d.as_secs_f64());
    println!(
        "| {} devices, hub down {:?}, device max backoff {:?} | seconds |",
        herd.devices, args.outage, max_backoff
    );
    println!("|---|---|");
    for (name, q) in [("back, p50", 0.5), ("back, p99", 0.99), ("back, last", 1.0)] {
        let v = secs(q).map_or("-".to_string(), |s| format!("{s:.2}"));
        println!("| {name} | {v} |");
    }
    println!(
        "| not back within 2 × max backoff + 60 s | {} |",
        herd.missing
    );
    println!(
        "| failed attempts after the hub was back | {} |",
        herd.failed_attempts
    );
    Ok(())
}

/// The paths picked with `--paths`, as (index into [`PATHS`], address).
fn chosen(args: &Args, addrs: [SocketAddr; 4]) -> Vec<(usize, SocketAddr)> {
    (0..PATHS.len())
        .filter(|&i| args.paths.iter().any(|p| p == PATHS[i]))
        .map(|i| (i, addrs[i]))
        .collect()
}

/// Two rows, p50 and p99, in `unit` (`scale` per second).
fn push_percentiles(
    table: &mut Table,
    name: &str,
    unit: &'static str,
    scale: f64,
    runs: &[Option<measure::Percentiles>; 4],
) {
    for (q, pick) in [("p50", 0), ("p99", 1)] {
        let vals = runs.each_ref().map(|r| {
            r.as_ref()
                .map(|p| [p.p50, p.p99][pick].as_secs_f64() * scale)
        });
        table.push(Row::new(format!("{name}, {q}"), unit, vals));
    }
}

/// CPU time `procs` have used so far, together.
fn cpu_time(procs: &[&procs::Proc]) -> anyhow::Result<Duration> {
    procs.iter().map(|p| p.cpu_time()).sum()
}

/// RSS once it has stopped moving (allocations of the last connections settle).
async fn settled_rss(p: &procs::Proc) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.rss_kib()
}

async fn idle_stream_memory(
    args: &Args,
    table: &mut Table,
    ours: &ours::Ours,
    rathole: &Rathole,
    rathole_addr: SocketAddr,
) -> anyhow::Result<()> {
    let n = args.idle_streams;
    let before = (settled_rss(&ours.hub).await?, rathole.server.rss_kib()?);
    let a = measure::idle_streams(ours.entrance, n).await?;
    let b = measure::idle_streams(rathole_addr, n).await?;
    let after = (settled_rss(&ours.hub).await?, rathole.server.rss_kib()?);
    drop((a, b));
    let per = |x: u64, y: u64| Some(y.saturating_sub(x) as f64 / n as f64);
    table.push(Row::new(
        format!("RSS per open idle stream ({n} streams; hub vs rathole server)"),
        "KiB",
        [None, per(before.1, after.1), per(before.0, after.0), None],
    ));
    Ok(())
}
