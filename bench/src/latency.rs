//! `--one-way-delay D`: stream set-up over a real distance. Every leg that crosses the
//! "network" goes through a [`Delay`] forwarder — the admin to the direct target, both
//! rathole sides to its server, both of our proxies to the hub (main and streaming endpoint
//! alike) — while each tunnel's last hop to the target stays local, as on a device.
//!
//! Set-up is connect → first echo, in milliseconds and in round trips (RTT = 2 × D):
//! warm (back to back, what a script looping over devices sees) and cold (the first after
//! an idle pause, what an admin typing `ssh` sees).

use std::{fmt::Write, net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    delay::Delay,
    measure::{self, Percentiles},
    ours::Ours,
    procs::{free_port, loopback, Rathole, RatholeTls},
    target::Target,
};

const PATHS: [&str; 3] = ["direct", "rathole", "ours"];

/// What the latency run needs from the command line.
pub struct Plan<'a> {
    pub one_way: Duration,
    pub warm: usize,
    pub cold: usize,
    pub idle: Duration,
    pub bin_dir: &'a std::path::Path,
    pub rathole: &'a std::path::Path,
    pub rathole_tls: RatholeTls,
    pub work: &'a std::path::Path,
}

/// The three paths behind their forwarders; dropping it stops everything.
struct Paths {
    entrances: [SocketAddr; 3],
    _delays: Vec<Delay>,
    _ours: Ours,
    _rathole: Rathole,
}

async fn start(plan: &Plan<'_>, target: SocketAddr) -> anyhow::Result<Paths> {
    let d = plan.one_way;
    let direct = Delay::start(target, d).await?;

    let (public, control) = (free_port()?, free_port()?);
    let rathole_control = Delay::start(loopback(control), d).await?;
    let rathole_public = Delay::start(loopback(public), d).await?;
    let rathole = Rathole::start_via(
        plan.rathole,
        &plan.rathole_tls,
        plan.work,
        public,
        control,
        rathole_control.addr.port(),
        target,
    )?;

    // The hub's public name is the forwarder's port, so its streaming URL leads through it too.
    let front = TcpListener::bind("127.0.0.1:0").await?;
    let public_port = front.local_addr()?.port();
    let hub_port = free_port()?;
    let hub_front = Delay::serve(front, loopback(hub_port), d)?;
    let ours =
        Ours::start_behind(plan.bin_dir, plan.work, target, 0, hub_port, public_port).await?;

    let entrances = [direct.addr, rathole_public.addr, ours.entrance];
    for (name, addr) in PATHS.iter().zip(entrances) {
        measure::wait_ready(addr, Duration::from_secs(60))
            .await
            .with_context(|| format!("{name} path is not up (logs in {})", plan.work.display()))?;
    }
    Ok(Paths {
        entrances,
        _delays: vec![direct, rathole_control, rathole_public, hub_front],
        _ours: ours,
        _rathole: rathole,
    })
}

/// Runs the set-up measurements and prints their table.
pub async fn run(plan: Plan<'_>, target: &Target) -> anyhow::Result<()> {
    let paths = start(&plan, target.addr).await?;
    eprintln!(
        "all paths echo through {:?} forwarders; measuring",
        plan.one_way
    );

    let mut warm = Vec::new();
    for (name, addr) in PATHS.iter().zip(paths.entrances) {
        let p = measure::setup(addr, plan.warm, Duration::from_secs(120))
            .await
            .with_context(|| format!("warm set-up via {name}"))?;
        eprintln!("warm set-up via {name}: {} samples", p.n);
        warm.push(p);
    }

    // One idle pause serves every path: each takes its turn right after it.
    let mut cold: [Vec<Duration>; 3] = Default::default();
    for round in 0..plan.cold {
        tokio::time::sleep(plan.idle).await;
        for (i, addr) in paths.entrances.into_iter().enumerate() {
            let t = std::time::Instant::now();
            let tcp = measure::open_echo(addr)
                .await
                .with_context(|| format!("cold set-up via {}", PATHS[i]))?;
            cold[i].push(t.elapsed());
            drop(tcp);
        }
        eprintln!("cold round {}/{}", round + 1, plan.cold);
    }
    let cold = cold
        .into_iter()
        .map(measure::percentiles)
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("{}", render(&plan, &warm, &cold));
    Ok(())
}

/// `12.3 ms (2.5 RTT)`.
fn cell(d: Duration, rtt: Duration) -> String {
    format!(
        "{:.1} ms ({:.1} RTT)",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() / rtt.as_secs_f64()
    )
}

/// One row: its name, which run, which percentile.
type RowSpec<'a> = (&'a str, &'a [Percentiles], fn(&Percentiles) -> Duration);

fn render(plan: &Plan<'_>, warm: &[Percentiles], cold: &[Percentiles]) -> String {
    let rtt = 2 * plan.one_way;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| set-up, connect → first echo ({:?} each way, RTT {:?}) | {} | {} | {} | ours / rathole |",
        plan.one_way, rtt, PATHS[0], PATHS[1], PATHS[2]
    );
    out.push_str("|---|---:|---:|---:|---:|\n");
    let rows: [RowSpec; 4] = [
        ("warm (back to back), p50", warm, |p| p.p50),
        ("warm (back to back), p99", warm, |p| p.p99),
        ("cold (first after the idle pause), p50", cold, |p| p.p50),
        ("cold (first after the idle pause), p99", cold, |p| p.p99),
    ];
    for (name, runs, pick) in rows {
        let v: Vec<Duration> = runs.iter().map(pick).collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.2}× |",
            cell(v[0], rtt),
            cell(v[1], rtt),
            cell(v[2], rtt),
            v[2].as_secs_f64() / v[1].as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "\n{} warm set-ups per path; {} cold ones, each after {:?} idle.",
        warm.first().map_or(0, |p| p.n),
        plan.cold,
        plan.idle
    );
    out
}
