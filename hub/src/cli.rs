//! `stream-hub`'s command line: the clap definitions (their doc comments are the help)
//! and what each sub-command does.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_streams_common::{logging, tls};
use tokio_util::sync::CancellationToken;

use crate::{
    activity,
    init::{self, DataDir},
    registry::{Device, Policy, Registry, Right},
    registry_api::device_json,
    Config, Hub, Limits,
};

/// Self-hosted hub for Azure IoT Hub device streams: a device registry, the main endpoint
/// (REST for services, MQTT over WebSocket for devices) and the streaming endpoint, on one TLS port.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The hub's data directory (certificates, registry, activity log).
    #[arg(
        long,
        global = true,
        env = "STREAM_HUB_DATA_DIR",
        default_value = "/var/lib/stream-hub"
    )]
    pub data_dir: PathBuf,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "STREAM_HUB_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create the data directory: a CA, a server certificate, the registry and a service policy.
    Init {
        /// Name (host or host:port) devices and services reach the hub by; goes into the
        /// certificate and the connection strings.
        #[arg(long, env = "STREAM_HUB_HOSTNAME", default_value = "localhost")]
        hostname: String,
    },
    /// Manage devices in the registry (a running hub sees changes at once).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage shared access policies (the credentials of services and admin tools).
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    /// Show the activity log (category DeviceStreams): one record per stream request.
    Logs {
        /// Only this device's records.
        #[arg(long)]
        device: Option<String>,
        /// Only records this recent (e.g. 30m, 1h, 7d).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        since: Duration,
        /// One JSON array instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the hub.
    Serve(ServeArgs),
}

#[derive(Subcommand)]
pub enum DeviceCommand {
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
    /// Replace a device's primary key (or --secondary) and print the new connection string;
    /// the other key keeps working, so devices move over without downtime.
    RotateKey {
        id: String,
        #[arg(long)]
        secondary: bool,
    },
    /// Let a disabled device connect again.
    Enable { id: String },
    /// Refuse a device: its connection and streams are cut and it cannot reconnect.
    Disable { id: String },
    /// Remove a device (cut like `disable`).
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create a policy and print its service connection string.
    Add {
        name: String,
        /// Comma-separated: service-connect, registry-read, registry-write.
        #[arg(long, value_delimiter = ',', required = true)]
        rights: Vec<String>,
    },
    /// List policies and their rights.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a policy; its connection strings stop working.
    Delete { name: String },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the TLS port (REST, MQTT over WebSocket, streaming endpoint).
    #[arg(long, env = "STREAM_HUB_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Streaming endpoint to advertise (e.g. wss://streams.example.com:443) if not this port.
    #[arg(long, env = "STREAM_HUB_STREAMING_URL")]
    pub streaming_url: Option<String>,
    /// Serve /metrics and /healthz on this plain-HTTP address instead of the TLS port.
    #[arg(long, env = "STREAM_HUB_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Time allowed for a TLS handshake.
    #[arg(long, env = "STREAM_HUB_TLS_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub tls_handshake_timeout: Duration,
    /// Time allowed for HTTP request headers and for a device's CONNECT.
    #[arg(long, env = "STREAM_HUB_FIRST_MESSAGE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub first_message_timeout: Duration,
    /// Connect and response timeout of stream requests that name none: both sides must
    /// reach the streaming endpoint within it.
    #[arg(long, env = "STREAM_HUB_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub handshake_timeout: Duration,
    /// Cap on the connect and response timeouts a service may ask for.
    #[arg(long, env = "STREAM_HUB_MAX_STREAM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_stream_timeout: Duration,
    /// Most simultaneous connections of any kind.
    #[arg(long, env = "STREAM_HUB_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Most devices with an open control connection.
    #[arg(long, env = "STREAM_HUB_MAX_DEVICES", default_value_t = 15_000)]
    pub max_devices: usize,
    /// Most streams (pending or open) on the hub.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS", default_value_t = 5_000)]
    pub max_streams: usize,
    /// Most streams (pending or open) per device.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS_PER_DEVICE", default_value_t = 100)]
    pub max_streams_per_device: usize,
    /// Most new stream requests per second on the hub.
    #[arg(
        long,
        env = "STREAM_HUB_MAX_NEW_STREAMS_PER_SECOND",
        default_value_t = 1_000
    )]
    pub max_new_streams_per_second: u32,
    /// Largest WebSocket message accepted, in bytes (stream data comes in ≤ 64 KiB messages).
    #[arg(long, env = "STREAM_HUB_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,
    /// Largest HTTP request head, in bytes.
    #[arg(long, env = "STREAM_HUB_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Close a paired stream after this long without traffic either way (off unless set).
    #[arg(long, env = "STREAM_HUB_STREAM_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Option<Duration>,
    /// How long open streams may go on after SIGTERM.
    #[arg(long, env = "STREAM_HUB_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            tls_handshake: self.tls_handshake_timeout,
            first_message: self.first_message_timeout,
            max_connections: self.max_connections,
            max_streams: self.max_streams,
            max_streams_per_device: self.max_streams_per_device,
            handshake_timeout: self.handshake_timeout,
            max_stream_timeout: self.max_stream_timeout,
            max_new_streams_per_second: self.max_new_streams_per_second,
            max_devices: self.max_devices,
            max_message: self.max_message_size,
            max_header_bytes: self.max_header_bytes,
            stream_idle_timeout: self.stream_idle_timeout,
            shutdown_grace: self.shutdown_grace,
            ..Limits::default()
        }
    }
}

/// Runs every sub-command but `serve` (which needs the runtime: see [`serve`]).
pub fn run(dir: &DataDir, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { hostname } => {
            init::init(dir, &hostname)?;
            eprintln!(
                "initialised {} for {hostname}; CA certificate: {}",
                dir.path.display(),
                dir.ca_file().display()
            );
            Ok(())
        }
        Command::Device(cmd) => device(dir, cmd),
        Command::Policy(cmd) => policy(dir, cmd),
        Command::ConnectionString { policy } => {
            let registry = dir.registry()?;
            let p = registry
                .policy(&policy)?
                .with_context(|| format!("policy '{policy}' does not exist"))?;
            print_service_string(&dir.hostname(&registry)?, &p);
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
        Command::Logs {
            device,
            since,
            json,
        } => logs(dir, device.as_deref(), since, json),
        Command::Serve(_) => anyhow::bail!("serve runs through cli::serve"),
    }
}

fn print_service_string(hostname: &str, p: &Policy) {
    println!(
        "{}",
        init::service_connection_string(hostname, &p.name, &p.primary_key).expose()
    );
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
    let public = |d: &Device| {
        let mut json = device_json(d, false);
        if let Some(obj) = json.as_object_mut() {
            obj.remove("authentication");
            obj.remove("connectionState");
        }
        json
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
        DeviceCommand::RotateKey { id, secondary } => {
            let d = registry.rotate_key(&id, secondary)?;
            print_cs(
                &id,
                if secondary {
                    &d.secondary_key
                } else {
                    &d.primary_key
                },
            );
        }
        DeviceCommand::List { json: true } => {
            let list = registry.devices()?.iter().map(public).collect();
            println!("{}", serde_json::Value::Array(list));
        }
        DeviceCommand::List { json: false } => {
            for d in registry.devices()? {
                println!(
                    "{}\t{}",
                    d.id,
                    if d.enabled { "enabled" } else { "disabled" }
                );
            }
        }
        DeviceCommand::Show { id, json: true } => println!("{}", public(&find(&id)?)),
        DeviceCommand::Show { id, json: false } => {
            println!("{}", serde_json::to_string_pretty(&public(&find(&id)?))?)
        }
        DeviceCommand::Enable { id } => registry.set_enabled(&id, true)?,
        DeviceCommand::Disable { id } => registry.set_enabled(&id, false)?,
        DeviceCommand::Delete { id } => registry.delete_device(&id)?,
    }
    Ok(())
}

fn policy(dir: &DataDir, cmd: PolicyCommand) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    match cmd {
        PolicyCommand::Add { name, rights } => {
            let rights = rights
                .iter()
                .map(|r| Right::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let p = registry.add_policy(&name, &rights)?;
            print_service_string(&dir.hostname(&registry)?, &p);
        }
        PolicyCommand::List { json } => {
            let policies = registry.policies()?;
            if json {
                let list: Vec<_> = policies
                    .iter()
                    .map(|p| serde_json::json!({ "name": p.name, "rights": p.rights }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for p in policies {
                    println!("{}\t{}", p.name, p.rights.join(","));
                }
            }
        }
        PolicyCommand::Delete { name } => registry.delete_policy(&name)?,
    }
    Ok(())
}

fn logs(dir: &DataDir, device: Option<&str>, since: Duration, json: bool) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let from = std::time::SystemTime::now()
        .checked_sub(since)
        .unwrap_or(std::time::UNIX_EPOCH);
    let entries = activity::query(registry.path(), device, activity::unix_ms(from))?;
    if json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    for e in entries {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(e.time);
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}ms")).unwrap_or_else(|| "-".into());
        println!(
            "{} {} {} {} policy={} setup={} duration={} to_device={} from_device={} {}",
            humantime::format_rfc3339_millis(time),
            e.device,
            e.stream,
            e.result,
            e.policy,
            ms(e.setup_ms),
            ms(e.duration_ms),
            e.bytes_to_device,
            e.bytes_from_device,
            e.detail
        );
    }
    Ok(())
}

/// Runs the hub until `shutdown`: the TLS port, and the admin listener if asked for.
pub async fn serve(
    dir: &DataDir,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let hostname = dir.hostname(&registry)?;
    let tls = tls::server_config(&dir.cert_file(), &dir.key_file())?;
    let mut config = Config::new(
        hostname,
        args.listen.port(),
        args.streaming_url.clone(),
        args.limits(),
    );
    config.ops_on_main_port = args.admin_listen.is_none();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = match args.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?,
        ),
        None => None,
    };
    let hub = Hub::new(config, registry, shutdown)?;
    if let Some(admin) = admin {
        tokio::spawn(crate::admin::run(admin, hub.clone()));
    }
    crate::run(listener, tls, hub).await
}
