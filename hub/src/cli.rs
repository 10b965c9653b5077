//! `stream-hub`'s command line: the clap definitions (their doc comments are the help)
//! and `serve`; the other sub-commands are in [`crate::commands`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_streams_common::logging;
use tokio_util::sync::CancellationToken;

use crate::{
    init::{self, DataDir},
    registry::Registry,
    Config, Hub, Limits,
};

/// Self-hosted hub for Azure IoT Hub device streams: a device registry, the main endpoint
/// (REST for services, MQTT over WebSocket for devices) and the streaming endpoint, on one TLS port
/// (and devices' MQTT straight over TLS on a second one with `serve --mqtt-listen`).
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
        /// Keep the registry in a cluster (see `serve --cluster`) instead of SQLite.
        #[command(flatten)]
        cluster: crate::cluster::ClusterArgs,
    },
    /// Manage devices in the registry (a running hub sees changes at once).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage shared access policies (the credentials of services and admin tools).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage module identities: a device's named sub-identities, each with its own keys,
    /// connecting and taking streams on their own.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Manage the CAs whose certificates x509-ca devices may present.
    #[command(subcommand)]
    Ca(CaCommand),
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
    /// Open streams on the running hub: list them, or close one.
    #[command(subcommand)]
    Streams(StreamsCommand),
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
    /// Issue a new server certificate from the data directory's CA, for the hub's host name
    /// and the names given (a running hub serves it within seconds; proxies keep trusting
    /// ca.pem). Not for --tls-cert certificates, which their own CA issues.
    Cert {
        /// Another DNS name or IP address the certificate should cover; repeatable.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Run the hub.
    Serve(Box<ServeArgs>),
    /// The cluster a data directory's hub nodes share (`init --cluster`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The cluster's NATS server, buckets, and which node holds how many devices.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its connection string.
    Add {
        id: String,
        /// How the device authenticates: `sas` (keys, SAS tokens), `x509-thumbprint` (a
        /// certificate known by its thumbprint: Azure's selfSigned) or `x509-ca` (a
        /// certificate issued by a CA registered with `ca add`, subject CN = device id).
        #[arg(long, value_enum, default_value_t)]
        auth: AuthType,
        /// With x509-thumbprint: hex SHA-256 (or SHA-1) of the device's DER certificate,
        /// any case, colons allowed (`openssl x509 -noout -fingerprint -sha256`).
        #[arg(long, required_if_eq("auth", "x509-thumbprint"))]
        thumbprint: Option<String>,
        /// With x509-thumbprint: a second accepted thumbprint (the next certificate, for
        /// rolling over without downtime).
        #[arg(long, requires = "thumbprint")]
        secondary_thumbprint: Option<String>,
    },
    /// Replace an x509-thumbprint device's thumbprint (or --secondary one), or --remove it;
    /// a session that signed in with the old one is cut within a second.
    SetThumbprint {
        id: String,
        /// The new thumbprint: hex SHA-256 or SHA-1 of the DER certificate.
        #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
        thumbprint: Option<String>,
        /// Change the secondary thumbprint instead of the primary.
        #[arg(long)]
        secondary: bool,
        /// Remove the thumbprint instead of replacing it.
        #[arg(long)]
        remove: bool,
    },
    /// List devices: status, online or offline, last seen, open streams, authentication.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one device, connection state included (keys are not shown; use connection-string).
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
pub enum StreamsCommand {
    /// List the streams being relayed: id, device, name, policy, age, bytes each way so far
    /// (refreshed every 2 s).
    List {
        /// Only this device's streams.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// End a stream: the hub closes both sides; its activity record says "closed by an admin".
    Close { id: String },
}

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Add a module to a registered device and print its connection string (`…;ModuleId=…`).
    Add { device: String, module: String },
    /// List a device's modules: status, online or offline, last seen.
    List {
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a module's connection string (primary key, or --secondary).
    ConnectionString {
        device: String,
        module: String,
        #[arg(long)]
        secondary: bool,
    },
    /// Replace a module's primary key (or --secondary) and print the new connection string.
    RotateKey {
        device: String,
        module: String,
        #[arg(long)]
        secondary: bool,
    },
    /// Let a disabled module connect again.
    Enable { device: String, module: String },
    /// Refuse a module: its connection and streams are cut and it cannot reconnect.
    Disable { device: String, module: String },
    /// Remove a module (cut like `disable`).
    Delete { device: String, module: String },
}

/// `device add --auth`: Azure's three kinds of device authentication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthType {
    /// Shared access keys (SAS tokens).
    #[default]
    Sas,
    /// A certificate known by its thumbprint (Azure's selfSigned).
    X509Thumbprint,
    /// A certificate chaining to a registered CA, subject CN = device id.
    X509Ca,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Register a CA certificate (PEM); devices added with `--auth x509-ca` may present
    /// certificates it issued (a running hub takes them at once).
    Add {
        name: String,
        /// PEM file holding the CA certificate (its first certificate is taken).
        #[arg(long)]
        cert: PathBuf,
    },
    /// List registered CAs: name, subject thumbprint (SHA-256), when added.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a CA: sessions whose certificates chained to it are cut.
    Delete { name: String },
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
    /// Remove a policy; its connection strings stop working and the streams it opened end.
    Delete { name: String },
    /// Replace one of a policy's keys and print the connection string with the new one;
    /// streams opened with the old key end within a second (move services to the other
    /// key first).
    RotateKey {
        name: String,
        /// Replace the secondary key instead of the primary.
        #[arg(long)]
        secondary: bool,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the TLS port (REST, MQTT over WebSocket, streaming endpoint).
    #[arg(long, env = "STREAM_HUB_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Streaming endpoint to advertise (e.g. wss://streams.example.com:443) if not this port.
    #[arg(long, env = "STREAM_HUB_STREAMING_URL")]
    pub streaming_url: Option<String>,
    /// Another name (HOST[:PORT]) devices and services reach this hub by and sign their
    /// tokens for, besides the one given to `init` — e.g. a load balancer's; repeatable.
    #[arg(long = "alias", env = "STREAM_HUB_ALIAS", value_delimiter = ',')]
    pub aliases: Vec<String>,
    /// Also serve devices' MQTT straight over TLS on this address (Azure's port is 8883,
    /// the default transport of Microsoft's device SDKs): same certificate, limits and
    /// credentials as MQTT over WebSocket on the main port. Off unless given.
    #[arg(long, env = "STREAM_HUB_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Serve /metrics, /healthz and the HTML dashboard (at /) on this plain-HTTP address
    /// instead of the TLS port.
    #[arg(long, env = "STREAM_HUB_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Also serve the HTML dashboard on the TLS port, at /dashboard/, for remote admins:
    /// every page there needs a sign-in with a policy (registry-read or registry-list to
    /// look, registry-write to act) and the session cookie is Secure.
    #[arg(long, env = "STREAM_HUB_DASHBOARD")]
    pub dashboard: bool,
    /// PEM certificate chain to serve instead of the data directory's (e.g. an ACME
    /// client's fullchain.pem); re-read when it changes and on SIGHUP.
    #[arg(long, env = "STREAM_HUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "STREAM_HUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub retention: crate::config::Retention,
    /// Run as a node of a cluster (default: the one `init --cluster` remembered).
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    /// This node's name in the cluster (letters, digits, - and _); default: from
    /// --streaming-url, else the port.
    #[arg(long, env = "STREAM_HUB_NODE_ID")]
    pub node_id: Option<String>,
}

/// Reads the command line and `--config` file again and puts `serve`'s limits in force
/// (SIGHUP); a file that does not parse keeps the limits in force.
fn reload_limits(hub: &Hub) {
    let parsed = device_streams_common::cli::reparse::<Cli>().and_then(|cli| match cli.command {
        Command::Serve(args) => Ok(args.limits),
        _ => anyhow::bail!("the command line is no longer `serve`"),
    });
    match parsed {
        Ok(limits) => {
            tracing::info!(?limits, "limits reloaded (SIGHUP)");
            hub.set_limits(limits);
        }
        Err(e) => tracing::error!("limits not reloaded (SIGHUP), keeping them: {e:#}"),
    }
}

/// The certificate to serve: `--tls-cert`/`--tls-key`, else the data directory's own.
fn cert_store(dir: &DataDir, args: &ServeArgs) -> anyhow::Result<Arc<crate::tls::CertStore>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (dir.cert_file(), dir.key_file()),
    };
    let store = crate::tls::CertStore::open(&cert, &key).context("--tls-cert/--tls-key")?;
    Ok(Arc::new(store))
}

/// Runs the hub until `shutdown`: the TLS port, and the admin listener if asked for.
pub async fn serve(
    dir: &DataDir,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (registry, node) = open_registry(dir, &args).await?;
    let config = config(dir.hostname(&registry)?, &args);
    let certs = cert_store(dir, &args)?;
    let tls = crate::tls::server_config(certs.clone())?;
    let listener = bind(args.listen, "").await?;
    let mqtt = bind_if(args.mqtt_listen, " (--mqtt-listen)").await?;
    let admin = bind_if(args.admin_listen, " (--admin-listen)").await?;
    let hub = Hub::new(config, args.limits, registry, shutdown)?;
    if let Some(node) = node {
        tracing::info!(node = %node.id, "serving as a cluster node");
        crate::cluster::start(&hub, node)?;
    }
    hub.tracker
        .spawn(crate::tls::watch(certs.clone(), hub.shutdown.clone()));
    reload_on_hangup(&hub, certs);
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
    crate::run_with(listener, mqtt, tls, hub).await
}

/// The data directory's registry, or in cluster mode the node's copy of the cluster's
/// with the node that keeps it so.
async fn open_registry(
    dir: &DataDir,
    args: &ServeArgs,
) -> anyhow::Result<(Registry, Option<crate::cluster::Node>)> {
    let Some(cluster) = args.cluster.resolve(&dir.path)? else {
        return Ok((dir.registry()?, None));
    };
    let url = args.streaming_url.as_deref();
    let id = crate::cluster::node_id(args.node_id.as_deref(), url, args.listen.port());
    let (registry, node) = crate::cluster::join(&dir.path, &cluster, id).await?;
    Ok((registry, Some(node)))
}

/// What the hub is told at start: its names, where its streams are, what log it keeps.
fn config(hostname: String, args: &ServeArgs) -> Config {
    let port = args.listen.port();
    let mut config = Config::new(hostname, port, args.streaming_url.clone());
    config.ops_on_main_port = args.admin_listen.is_none();
    config.dashboard_on_main_port = args.dashboard;
    config.retention = args.retention.clone();
    for alias in &args.aliases {
        config = config.with_alias(alias.clone());
    }
    config
}

/// Listens on `addr`; an error names it and the flag that gave it (`flag`: its suffix).
async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}{flag}"))
}

/// [`bind`] for a listener that is off unless its flag is given.
async fn bind_if(
    addr: Option<SocketAddr>,
    flag: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(bind(addr, flag).await?)),
        None => Ok(None),
    }
}

/// On SIGHUP, re-reads the certificate and puts the limits of the command line and
/// `--config` file as they are now in force.
fn reload_on_hangup(hub: &Arc<Hub>, certs: Arc<crate::tls::CertStore>) {
    let reloading = hub.clone();
    let reload = move || {
        certs.reload_logged("SIGHUP");
        reload_limits(&reloading);
    };
    let hangups = device_streams_common::shutdown::on_hangup(reload, hub.shutdown.clone());
    hub.tracker.spawn(hangups);
}
