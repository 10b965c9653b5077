//! `service-local-proxy`: command line. Everything but argument parsing lives in the library.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use device_streams::service::defaults;
use device_streams::{
    protocol::{wire, Secret},
    Route, ServiceClient,
};
use device_streams_common::{cli, logging, sd_notify};
use service_local_proxy::{
    forward::{self, Forward},
    Config,
};

/// Service side of Azure IoT Hub device streams: each local connection (or stdin/stdout
/// with --stdio) becomes a stream to a device, through the hub.
#[derive(Parser)]
#[command(version = device_streams_common::version!(), about)]
struct Args {
    /// Service connection string: HostName=<host[:port]>;SharedAccessKeyName=<policy>;SharedAccessKey=<key>.
    /// Prefer the environment variable: command lines are visible to other users.
    #[arg(long, env = "SERVICE_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<Secret>,
    /// File holding the service connection string (mode 0600), when it is not given directly.
    #[arg(long, env = "SERVICE_PROXY_CONNECTION_STRING_FILE")]
    connection_string_file: Option<PathBuf>,
    /// TOML file with any of these options, keys named like the long flags
    /// (e.g. `forward = ["2222=dev1:ssh"]`); flags and environment variables override it.
    #[arg(long, env = "SERVICE_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// PEM file with the CA certificate(s) to trust for the hub, instead of the system's.
    #[arg(long, env = "SERVICE_PROXY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The device to open streams to.
    /// (Required unless --forward is given.)
    #[arg(long, env = "SERVICE_PROXY_DEVICE_ID")]
    device_id: Option<String>,
    /// Open streams to this module identity of --device-id instead of the device itself
    /// (the device program connected with the module's connection string serves them).
    #[arg(long, env = "SERVICE_PROXY_MODULE_ID", requires = "device_id")]
    module_id: Option<String>,
    /// Instead of --device-id: LOCALPORT=DEVICE:STREAM, a listener on 127.0.0.1:LOCALPORT
    /// (or ADDRESS:PORT=…) whose connections become streams to DEVICE's STREAM; repeat for
    /// more (the variable takes a comma-separated list), e.g. 2222=dev1:ssh 3389=dev2:rdp.
    #[arg(
        long,
        env = "SERVICE_PROXY_FORWARD",
        value_delimiter = ',',
        conflicts_with_all = ["device_id", "stdio", "listen", "stream_name"]
    )]
    forward: Vec<Forward>,
    /// Stream name: selects the target in the device's --map.
    #[arg(long, env = "SERVICE_PROXY_STREAM_NAME", default_value = "ssh")]
    stream_name: String,
    /// Local address to listen on; each accepted connection opens a stream.
    #[arg(long, env = "SERVICE_PROXY_LISTEN", default_value = "127.0.0.1:2222")]
    listen: SocketAddr,
    /// Serve one stream on stdin/stdout instead of listening (for ssh's ProxyCommand).
    #[arg(long, env = "SERVICE_PROXY_STDIO")]
    stdio: bool,
    /// Do not keep a spare TLS connection to the hub for 5 s after each stream (it makes the
    /// next stream's set-up faster; never kept with --stdio, which serves one stream).
    #[arg(long, env = "SERVICE_PROXY_NO_SPARE")]
    no_spare: bool,
    /// Warm fast-path connections to keep ready (0: none). Against a hub that serves the
    /// fast path (ours, unless `--no-fast-path`) a stream then opens in about two round
    /// trips, its first bytes riding with the request; against Azure the first dial finds
    /// out it does not, and streams go Azure's way. Never kept with --stdio.
    #[arg(long, env = "SERVICE_PROXY_WARM", default_value_t = 2)]
    warm: usize,
    /// Time allowed to reach the hub (TCP, TLS, WebSocket handshakes, each), and asked of
    /// the hub for both sides to reach the streaming endpoint.
    #[arg(long, env = "SERVICE_PROXY_CONNECT_TIMEOUT", default_value_t = defaults::TIMEOUT.into())]
    connect_timeout: humantime::Duration,
    /// How long the device may take to answer a stream request.
    #[arg(long, env = "SERVICE_PROXY_RESPONSE_TIMEOUT", default_value_t = defaults::RESPONSE_TIMEOUT.into())]
    response_timeout: humantime::Duration,
    /// Lifetime of the SAS token signed for each request.
    #[arg(long, env = "SERVICE_PROXY_TOKEN_TTL", default_value_t = defaults::TOKEN_TTL.into())]
    token_ttl: humantime::Duration,
    /// Most local connections served at once.
    #[arg(long, env = "SERVICE_PROXY_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// How long open streams may go on after SIGTERM.
    #[arg(long, env = "SERVICE_PROXY_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, env = "SERVICE_PROXY_LOG_FORMAT", value_enum, default_value_t)]
    log_format: logging::LogFormat,
}

/// Which local connections become streams, and along which routes.
enum Mode {
    /// One stream on stdin/stdout.
    Stdio(Route),
    /// A listener whose every connection is a stream along the route.
    Listen(SocketAddr, Route),
    /// Several listeners, each with its own route (`--forward`).
    Forward(Vec<Forward>),
}

fn main() -> ExitCode {
    let (args, matches) = cli::parse_with_matches::<Args>("service-local-proxy");
    // In --stdio mode stdout carries the stream, so only warnings go to stderr by default.
    logging::init(args.log_format, if args.stdio { "warn" } else { "info" });
    cli::main(
        "service-local-proxy",
        hub_and_mode(args, &matches),
        |(config, mode), shutdown| async move {
            let config = Arc::new(config);
            match mode {
                Mode::Stdio(route) => service_local_proxy::run_stdio(config, route, shutdown).await,
                Mode::Forward(forwards) => {
                    let bound = forward::bind(&forwards).await?;
                    sd_notify::ready(&format!("listening for {} forwards", bound.len()));
                    forward::serve(bound, config, shutdown).await
                }
                Mode::Listen(listen, route) => {
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .with_context(|| format!("cannot listen on {listen}"))?;
                    sd_notify::ready(&format!("listening on {listen}"));
                    service_local_proxy::run(listener, config, route, shutdown).await
                }
            }
        },
    )
}

/// Which hub (and how) from the hub's flags, and which routes from the others.
fn hub_and_mode(args: Args, matches: &clap::ArgMatches) -> anyhow::Result<(Config, Mode)> {
    let mode = mode(&args)?;
    Ok((hub(args, matches)?, mode))
}

/// `--forward`'s routes (each checked when parsed), or `--device-id` and `--stream-name`
/// for `--stdio` or `--listen`.
fn mode(args: &Args) -> anyhow::Result<Mode> {
    if !args.forward.is_empty() {
        return Ok(Mode::Forward(args.forward.clone()));
    }
    let device_id = args
        .device_id
        .clone()
        .context("--device-id (or --forward) is required")?;
    anyhow::ensure!(
        wire::valid_device_id(&device_id),
        "--device-id: '{device_id}' is not a valid device id"
    );
    anyhow::ensure!(
        wire::valid_stream_name(&args.stream_name),
        "--stream-name: '{}' is not a valid stream name (letters, digits, - . _)",
        args.stream_name
    );
    let mut route = Route::new(device_id, args.stream_name.clone());
    if let Some(module) = &args.module_id {
        anyhow::ensure!(
            wire::valid_device_id(module),
            "--module-id: '{module}' is not a valid module id"
        );
        route = route.with_module(module);
    }
    Ok(match args.stdio {
        true => Mode::Stdio(route),
        false => Mode::Listen(args.listen, route),
    })
}

/// Which hub, with which credentials and timeouts, and how many connections.
fn hub(args: Args, matches: &clap::ArgMatches) -> anyhow::Result<Config> {
    let connection = cli::connection_string(
        &Args::command(),
        matches,
        args.connection_string,
        args.connection_string_file.as_deref(),
        "service-connection-string",
    )?;
    let mut client = ServiceClient::builder(connection)
        .timeout(args.connect_timeout.into())
        .response_timeout(args.response_timeout.into())
        .token_ttl(args.token_ttl.into())
        // One stream per process with --stdio: a spare would only be dialed to be dropped.
        .spares(!args.no_spare && !args.stdio)
        .warm(if args.stdio { 0 } else { args.warm });
    if let Some(ca) = &args.ca_file {
        client = client.ca_file(ca);
    }
    Ok(Config {
        client: client.build().context("--ca-file")?,
        max_connections: args.max_connections,
        shutdown_grace: args.shutdown_grace,
    })
}
