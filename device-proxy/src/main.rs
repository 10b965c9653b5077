//! `device-local-proxy`: command line. Everything but argument parsing lives in the library.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser};
use device_local_proxy::{Config, Target, Targets};
use device_streams::device::{defaults, MqttTransport};
use device_streams::{protocol::Secret, DeviceClient};
use device_streams_common::{cli, logging};

/// Device side of Azure IoT Hub device streams: keeps a control connection to the hub and
/// splices each accepted stream to a local target from --map (e.g. the local sshd).
#[derive(Parser)]
#[command(version = device_streams_common::version!(), about)]
struct Args {
    /// Device connection string: HostName=<host[:port]>;DeviceId=<id>;SharedAccessKey=<key>
    /// (or, for an X.509 device, HostName=<host[:port]>;DeviceId=<id>;x509=true with --cert and --key).
    /// Prefer the environment variable: command lines are visible to other users.
    #[arg(long, env = "DEVICE_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<Secret>,
    /// File holding the device connection string (mode 0600), when it is not given directly.
    /// Under systemd, `LoadCredential=device-connection-string:FILE` works without this flag.
    #[arg(long, env = "DEVICE_PROXY_CONNECTION_STRING_FILE")]
    connection_string_file: Option<PathBuf>,
    /// TOML file with any of these options, keys named like the long flags
    /// (e.g. `map = ["ssh=127.0.0.1:22"]`); flags and environment variables override it.
    #[arg(long, env = "DEVICE_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// PEM file with the CA certificate(s) to trust for the hub, instead of the system's.
    #[arg(long, env = "DEVICE_PROXY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate (chain, leaf first) this device presents to the hub: its
    /// credential when the connection string says `x509=true` (then with --key).
    #[arg(long, env = "DEVICE_PROXY_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert (mode 0600; it is the device's credential).
    #[arg(long, env = "DEVICE_PROXY_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// A stream name and the local target it reaches, NAME=HOST:PORT; repeat for more
    /// (the variable takes a comma-separated list). Requests for other names are rejected.
    #[arg(
        long = "map",
        env = "DEVICE_PROXY_MAP",
        value_delimiter = ',',
        required = true
    )]
    map: Vec<Target>,
    /// How the control channel reaches the hub. `mqtt-ws`: MQTT over WebSocket on the
    /// connection string's host:port, like everything else (the firewall-friendly one).
    /// `mqtt`: MQTT straight over TLS to the connection string's host on --mqtt-port (Azure's
    /// default device transport). HTTPS_PROXY applies to both; with `mqtt` it must allow
    /// CONNECT to the MQTT port (many proxies allow only 443). Streams are WebSockets either way.
    #[arg(long, env = "DEVICE_PROXY_TRANSPORT", value_enum, default_value_t = Transport::MqttWs)]
    transport: Transport,
    /// The hub's MQTT-over-TLS port, for --transport mqtt (Azure's is 8883; a stream-hub
    /// serves it with `serve --mqtt-listen`). The connection string's port is not used for it.
    #[arg(long, env = "DEVICE_PROXY_MQTT_PORT", default_value_t = defaults::MQTT_PORT)]
    mqtt_port: u16,
    /// Time allowed to reach the hub (TCP, TLS, WebSocket, MQTT handshakes, each).
    #[arg(long, env = "DEVICE_PROXY_CONNECT_TIMEOUT", default_value_t = defaults::TIMEOUT.into())]
    connect_timeout: humantime::Duration,
    /// Time allowed to connect to a local target.
    #[arg(long, env = "DEVICE_PROXY_TARGET_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    target_timeout: Duration,
    /// MQTT keep-alive: ping the hub this often; a missing answer means the link is dead.
    #[arg(long, env = "DEVICE_PROXY_KEEP_ALIVE", default_value_t = defaults::KEEP_ALIVE.into())]
    keep_alive: humantime::Duration,
    /// Lifetime of each SAS token; renewed (by reconnecting the control channel) at 80% of it.
    #[arg(long, env = "DEVICE_PROXY_TOKEN_TTL", default_value_t = defaults::TOKEN_TTL.into())]
    token_ttl: humantime::Duration,
    /// Most streams open at once.
    #[arg(long, env = "DEVICE_PROXY_MAX_STREAMS", default_value_t = 100)]
    max_streams: usize,
    /// How long open streams may go on after SIGTERM.
    #[arg(long, env = "DEVICE_PROXY_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Longest wait between reconnect attempts.
    #[arg(long, env = "DEVICE_PROXY_MAX_BACKOFF", default_value_t = defaults::MAX_BACKOFF.into())]
    max_backoff: humantime::Duration,
    /// Do not keep a spare TLS connection to the streaming endpoint for 5 s after each
    /// stream (it makes the next stream's set-up faster).
    #[arg(long, env = "DEVICE_PROXY_NO_SPARE")]
    no_spare: bool,
    /// Standby fast-path connections to keep (0: none): a hub that serves the fast path
    /// (ours) hands a stream to one in a single round trip; each is replaced as soon as
    /// it is used. Only with --transport mqtt-ws (whose 101 reply says whether the hub
    /// serves it); Azure's hub never does, and then none are kept.
    #[arg(long, env = "DEVICE_PROXY_STANDBY", default_value_t = defaults::STANDBY)]
    standby: usize,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, env = "DEVICE_PROXY_LOG_FORMAT", value_enum, default_value_t)]
    log_format: logging::LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Transport {
    /// MQTT straight over TLS (port --mqtt-port).
    Mqtt,
    /// MQTT over WebSocket (the connection string's port).
    MqttWs,
}

fn main() -> ExitCode {
    let (args, matches) = cli::parse_with_matches::<Args>("device-local-proxy");
    logging::init(args.log_format, "info");
    cli::main(
        "device-local-proxy",
        config(args, &matches),
        device_local_proxy::run,
    )
}

fn config(args: Args, matches: &clap::ArgMatches) -> anyhow::Result<Config> {
    use anyhow::Context;
    let connection: device_streams::protocol::connection_string::DeviceConnectionString =
        cli::connection_string(
            &Args::command(),
            matches,
            args.connection_string,
            args.connection_string_file.as_deref(),
            "device-connection-string",
        )?;
    let x509 = connection.x509;
    let mut client = DeviceClient::builder(connection)
        .timeout(args.connect_timeout.into())
        .keep_alive(args.keep_alive.into())
        .token_ttl(args.token_ttl.into())
        .max_backoff(args.max_backoff.into())
        .transport(match args.transport {
            Transport::Mqtt => MqttTransport::Tls {
                port: args.mqtt_port,
            },
            Transport::MqttWs => MqttTransport::WebSocket,
        })
        .spares(!args.no_spare)
        .standby(args.standby);
    if let Some(ca) = &args.ca_file {
        client = client.ca_file(ca);
    }
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => client = client.client_cert(cert, key),
        _ if x509 => anyhow::bail!(
            "the connection string says x509=true: give the device's certificate and key with --cert and --key"
        ),
        _ => {}
    }
    Ok(Config {
        client: client.build().context("--ca-file, --cert, --key")?,
        targets: Targets::new(args.map).context("--map")?,
        target_timeout: args.target_timeout,
        max_streams: args.max_streams,
        shutdown_grace: args.shutdown_grace,
        reload_targets: Some(Box::new(|| {
            let args: Args = cli::reparse()?;
            Targets::new(args.map).context("--map")
        })),
    })
}
