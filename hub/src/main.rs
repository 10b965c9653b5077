//! `stream-hub`: command line. Everything but argument parsing lives in the library.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_streams_common::{logging, shutdown, tls};
use stream_hub::{
    init::{self, DataDir},
    registry::Registry,
    Config, Hub, Limits,
};

/// Self-hosted hub for Azure IoT Hub device streams: a device registry, the main endpoint
/// (REST for services, MQTT over WebSocket for devices) and the streaming endpoint, on one TLS port.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The hub's data directory (certificates, registry).
    #[arg(
        long,
        global = true,
        env = "STREAM_HUB_DATA_DIR",
        default_value = "/var/lib/stream-hub"
    )]
    data_dir: PathBuf,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "STREAM_HUB_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory: a CA, a server certificate, the registry and a service policy.
    Init {
        /// Name (host or host:port) devices and services reach the hub by; goes into the
        /// certificate and the connection strings.
        #[arg(long, env = "STREAM_HUB_HOSTNAME", default_value = "localhost")]
        hostname: String,
    },
    /// Manage devices in the registry.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Print a service connection string for a shared access policy.
    ConnectionString {
        /// The policy whose key the string carries.
        #[arg(long, env = "STREAM_HUB_POLICY", default_value = init::DEFAULT_POLICY)]
        policy: String,
    },
    /// Print the streaming endpoints as JSON, like `az iot hub devicestream show`.
    Endpoints {
        /// Listening port, when the hostname names none (as for `serve`).
        #[arg(long, env = "STREAM_HUB_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Advertised streaming endpoint, as for `serve`.
        #[arg(long, env = "STREAM_HUB_STREAMING_URL")]
        streaming_url: Option<String>,
    },
    /// Run the hub.
    Serve(ServeArgs),
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register a device and print its connection string.
    Add { id: String },
    /// List devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one device (keys are not shown; use connection-string).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a device's connection string (primary key, or --secondary).
    ConnectionString {
        id: String,
        #[arg(long)]
        secondary: bool,
    },
    /// Let a disabled device connect again.
    Enable { id: String },
    /// Refuse a device's connections and stream requests.
    Disable { id: String },
    /// Remove a device.
    Delete { id: String },
}

#[derive(Args)]
struct ServeArgs {
    /// Address of the TLS port (REST, MQTT over WebSocket, streaming endpoint).
    #[arg(long, env = "STREAM_HUB_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Streaming endpoint to advertise (e.g. wss://streams.example.com:443) if not this port.
    #[arg(long, env = "STREAM_HUB_STREAMING_URL")]
    streaming_url: Option<String>,
    /// Time allowed for a TLS handshake.
    #[arg(long, env = "STREAM_HUB_TLS_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    tls_handshake_timeout: Duration,
    /// Time allowed for HTTP request headers and for a device's CONNECT.
    #[arg(long, env = "STREAM_HUB_FIRST_MESSAGE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    first_message_timeout: Duration,
    /// Most simultaneous connections.
    #[arg(long, env = "STREAM_HUB_MAX_CONNECTIONS", default_value_t = 20_000)]
    max_connections: usize,
    /// Most streams (pending or open) on the hub.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS", default_value_t = 5_000)]
    max_streams: usize,
    /// Most streams (pending or open) per device.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS_PER_DEVICE", default_value_t = 100)]
    max_streams_per_device: usize,
    /// Cap on the connect and response timeouts a service may ask for.
    #[arg(long, env = "STREAM_HUB_MAX_STREAM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    max_stream_timeout: Duration,
    /// How long open streams may go on after SIGTERM.
    #[arg(long, env = "STREAM_HUB_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// WebSocket ping interval on streams; a side silent for two intervals is cut.
    #[arg(long, env = "STREAM_HUB_STREAM_PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    stream_ping_interval: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, "info");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = DataDir::new(&cli.data_dir);
    match cli.command {
        Command::Init { hostname } => {
            init::init(&dir, &hostname)?;
            eprintln!(
                "initialised {} for {hostname}; CA certificate: {}",
                dir.path.display(),
                dir.ca_file().display()
            );
            Ok(())
        }
        Command::Device(cmd) => device(&dir, cmd),
        Command::ConnectionString { policy } => {
            let registry = dir.registry()?;
            let p = registry
                .policy(&policy)?
                .with_context(|| format!("policy '{policy}' does not exist"))?;
            let cs =
                init::service_connection_string(&dir.hostname(&registry)?, &p.name, &p.primary_key);
            println!("{}", cs.expose());
            Ok(())
        }
        Command::Endpoints {
            listen,
            streaming_url,
        } => {
            let registry = dir.registry()?;
            let config = Config::new(
                dir.hostname(&registry)?,
                listen.port(),
                streaming_url,
                Limits::default(),
            );
            println!("{}", config.endpoints_json());
            Ok(())
        }
        Command::Serve(args) => serve(&dir, args),
    }
}

fn device(dir: &DataDir, cmd: DeviceCommand) -> anyhow::Result<()> {
    let registry: Registry = dir.registry()?;
    let hostname = dir.hostname(&registry)?;
    let print_cs = |id: &str, key| {
        println!(
            "{}",
            init::device_connection_string(&hostname, id, key).expose()
        )
    };
    let find = |id: &str| {
        registry
            .device(id)?
            .with_context(|| format!("device '{id}' is not registered"))
    };
    match cmd {
        DeviceCommand::Add { id } => print_cs(&id, &registry.add_device(&id)?.primary_key),
        DeviceCommand::ConnectionString { id, secondary } => {
            let d = find(&id)?;
            print_cs(
                &id,
                if secondary {
                    &d.secondary_key
                } else {
                    &d.primary_key
                },
            );
        }
        DeviceCommand::List { json } => {
            let devices = registry.devices()?;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(devices.iter().map(device_json).collect())
                );
            } else {
                for d in devices {
                    println!(
                        "{}\t{}",
                        d.id,
                        if d.enabled { "enabled" } else { "disabled" }
                    );
                }
            }
        }
        DeviceCommand::Show { id, json } => {
            let d = find(&id)?;
            match json {
                true => println!("{}", device_json(&d)),
                false => println!("{}", serde_json::to_string_pretty(&device_json(&d))?),
            }
        }
        DeviceCommand::Enable { id } => registry.set_enabled(&id, true)?,
        DeviceCommand::Disable { id } => registry.set_enabled(&id, false)?,
        DeviceCommand::Delete { id } => registry.delete_device(&id)?,
    }
    Ok(())
}

fn device_json(d: &stream_hub::registry::Device) -> serde_json::Value {
    serde_json::json!({
        "deviceId": d.id,
        "status": if d.enabled { "enabled" } else { "disabled" },
        "createdAt": d.created_at,
        "lastConnectedAt": d.last_connected_at,
    })
}

fn serve(dir: &DataDir, args: ServeArgs) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let hostname = dir.hostname(&registry)?;
    let tls = tls::server_config(&dir.cert_file(), &dir.key_file())?;
    let limits = Limits {
        tls_handshake: args.tls_handshake_timeout,
        first_message: args.first_message_timeout,
        max_connections: args.max_connections,
        max_streams: args.max_streams,
        max_streams_per_device: args.max_streams_per_device,
        max_stream_timeout: args.max_stream_timeout,
        shutdown_grace: args.shutdown_grace,
        stream_ping_interval: args.stream_ping_interval,
        ..Limits::default()
    };
    let config = Config::new(hostname, args.listen.port(), args.streaming_url, limits);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let hub = Hub::new(config, registry, shutdown::on_signal());
        stream_hub::run(listener, tls, hub).await
    })
}
