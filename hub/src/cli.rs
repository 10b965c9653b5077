//! `stream-hub`'s command line: the clap definitions (their doc comments are the help)
//! and `serve`; the other sub-commands are in [`crate::commands`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_streams_common::logging;
use tokio_util::sync::CancellationToken;

use crate::{
    init::{self, DataDir},
    Config, Hub, Limits,
};

/// Self-hosted hub for Azure IoT Hub device streams: a device registry, the main endpoint
/// (REST for services, MQTT over WebSocket for devices) and the streaming endpoint, on one TLS port.
#[derive(Parser)]
#[command(version = device_streams_common::version!(), about)]
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
    /// TOML file with options of any sub-command, keys named like the long
    /// flags (e.g. `listen = "0.0.0.0:443"`); flags and environment variables override it.
    #[arg(long, global = true, env = "STREAM_HUB_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// WebSocket ping interval on streams; a side silent for two intervals is cut.
    #[arg(long, env = "STREAM_HUB_STREAM_PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub stream_ping_interval: Duration,
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
            stream_ping_interval: self.stream_ping_interval,
            ..Limits::default()
        }
    }
}

/// Runs the hub until `shutdown`: the TLS port, and the admin listener if asked for.
pub async fn serve(
    dir: &DataDir,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let hostname = dir.hostname(&registry)?;
    let tls = crate::tls::server_config(&dir.cert_file(), &dir.key_file())?;
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
        let run = crate::admin::run(admin, hub.clone());
        hub.tracker.spawn(async move {
            if let Err(e) = run.await {
                tracing::error!("admin listener: {e:#}");
            }
        });
    }
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    device_streams_common::sd_notify::ready(&format!("listening on {addr}"));
    crate::run(listener, tls, hub).await
}
