//! The device side: stay connected to the hub and take stream requests.
//!
//! [`DeviceClient::start`] runs the control channel in the background — connect, sign a
//! SAS token, subscribe, keep alive, renew the token before it expires, reconnect forever
//! with backoff and jitter — and hands each stream request to the program as an
//! [`IncomingStream`], which the program accepts (getting a [`Stream`](crate::Stream)) or
//! rejects. Requests are decided by name only: the program, not the hub, chooses what a
//! name reaches.
//!
//! Against a hub that serves the fast path (ours), the client also keeps standby
//! connections the hub hands streams to directly (`standby`; see
//! [`DeviceClientBuilder::standby`]); their offers arrive as [`IncomingStream`]s too.
//!
//! Layout: `control` (the session loop), `incoming` (one request and its answer),
//! `standby` (the fast path's standby connections).

mod control;
mod incoming;
mod standby;

use std::{path::PathBuf, sync::Arc, time::Duration};

use device_streams_protocol::connection_string::DeviceConnectionString;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use incoming::{AcceptError, IncomingStream};

use crate::connector::{
    tls::{client_config, client_config_with_cert},
    Connector,
};

/// Requests handed to the program but not yet taken; past this the hub is told no.
const QUEUE: usize = 64;

/// [`DeviceClientBuilder`]'s defaults, which the device proxy's flags share.
pub mod defaults {
    use std::time::Duration;

    /// Each step of reaching the hub.
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    /// MQTT keep-alive.
    pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
    /// Lifetime of each SAS token.
    pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
    /// Longest wait between reconnect attempts: short, so a fleet is back within ~10 s of
    /// its hub's return however long the outage was (`scripts/bench --herd`: 10,000
    /// devices after 60 s down, p99 9.2 s; a 60 s cap gave 54 s).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
    /// Standby connections kept on a hub that serves the fast path: two, so that streams
    /// opened back to back each find one while the last one used is being replaced
    /// (a replacement takes TCP + TLS + upgrade, about 3 round trips; a stream 2).
    pub const STANDBY: usize = 2;
    /// Azure IoT Hub's port for MQTT straight over TLS ([`super::MqttTransport::Tls`]).
    pub const MQTT_PORT: u16 = 8883;
}

/// How the control channel (MQTT 3.1.1) reaches the hub. Streams always go over
/// WebSockets to the URL the hub names, whichever this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MqttTransport {
    /// A WebSocket to `wss://<HostName>/$iothub/websocket`, at the connection string's host
    /// and port (443 unless it names one), like every other connection to the hub: the one
    /// firewalls and HTTP proxies let through.
    #[default]
    WebSocket,
    /// MQTT straight over TLS to the connection string's host on `port`, whatever port the
    /// connection string names: Azure's default device transport, on
    /// [`defaults::MQTT_PORT`]. Through `HTTPS_PROXY` too (a `CONNECT` tunnel to that
    /// port, which many proxies allow only for 443).
    Tls {
        /// The hub's MQTT port.
        port: u16,
    },
}

impl std::fmt::Display for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MqttTransport::WebSocket => f.write_str("MQTT over WebSocket"),
            MqttTransport::Tls { port } => write!(f, "MQTT over TLS, port {port}"),
        }
    }
}

/// The control channel's state, as [`Incoming::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Not connected yet.
    Connecting,
    /// Connected, authenticated and subscribed to stream requests.
    Connected,
    /// The last attempt failed (why); the client is waiting to try again.
    Disconnected(String),
    /// Shut down.
    Stopped,
}

/// What the control loop runs with.
pub(crate) struct Settings {
    pub connection: DeviceConnectionString,
    pub connector: Connector,
    pub transport: MqttTransport,
    pub keep_alive: Duration,
    pub token_ttl: Duration,
    pub max_backoff: Duration,
    /// Dial the stream's TLS connection as soon as a request arrives.
    pub predial: bool,
    /// Standby connections to keep on a hub that serves the fast path.
    pub standby: usize,
}

/// A device's client, ready to start. Build it with [`DeviceClient::builder`].
pub struct DeviceClient {
    settings: Settings,
}

/// Builds a [`DeviceClient`]; every setting has the device proxy's default.
pub struct DeviceClientBuilder {
    connection: DeviceConnectionString,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    connector: Option<Connector>,
    transport: MqttTransport,
    timeout: Duration,
    keep_alive: Duration,
    token_ttl: Duration,
    max_backoff: Duration,
    spares: bool,
    standby: usize,
}

impl DeviceClient {
    /// A client for the device (and hub) a connection string names.
    ///
    /// ```
    /// use std::time::Duration;
    /// use device_streams::DeviceClient;
    ///
    /// # #[tokio::main] async fn main() -> anyhow::Result<()> {
    /// # let hub = e2e::System::start().await; // a hub in-process, for its CA file
    /// # let secret = hub.add_device("dev1").to_secret_string();
    /// # let (connection_string, ca_file) = (secret.expose(), hub.ca_file());
    /// // "HostName=hub.example.com;DeviceId=dev1;SharedAccessKey=..."
    /// let client = DeviceClient::builder(connection_string.parse()?)
    ///     .ca_file(ca_file) // a self-hosted hub's CA; leave out for Azure
    ///     .token_ttl(Duration::from_secs(3600)) // renewed at 80%
    ///     .max_backoff(Duration::from_secs(30))
    ///     .build()?;
    /// assert_eq!(client.device_id(), "dev1");
    /// # Ok(()) }
    /// ```
    ///
    /// An `HTTPS_PROXY` (and `NO_PROXY`) in the environment is used for every connection
    /// to the hub; [`DeviceClientBuilder::connector`] with
    /// [`Connector::with_proxy`](crate::Connector::with_proxy) sets one in code.
    pub fn builder(connection: DeviceConnectionString) -> DeviceClientBuilder {
        DeviceClientBuilder {
            connection,
            ca_file: None,
            client_cert: None,
            connector: None,
            transport: MqttTransport::default(),
            timeout: defaults::TIMEOUT,
            keep_alive: defaults::KEEP_ALIVE,
            token_ttl: defaults::TOKEN_TTL,
            max_backoff: defaults::MAX_BACKOFF,
            spares: true,
            standby: defaults::STANDBY,
        }
    }

    /// The device this client is.
    pub fn device_id(&self) -> &str {
        &self.settings.connection.device_id
    }

    /// The hub's `host[:port]`, as the connection string names it.
    pub fn hub(&self) -> String {
        self.settings.connection.host.to_string()
    }

    /// Starts the control channel; it runs until `shutdown` is cancelled. Stream requests
    /// arrive through the returned [`Incoming`]. Must be called within a Tokio runtime.
    ///
    /// ```
    /// use device_streams::{device::Status, DeviceClient};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main] async fn main() -> anyhow::Result<()> {
    /// # let hub = e2e::System::start().await;
    /// # let (connection_string, ca_file) = (hub.add_device("dev1"), hub.ca_file());
    /// # let client = DeviceClient::builder(connection_string).ca_file(ca_file).build()?;
    /// let shutdown = CancellationToken::new();
    /// let mut incoming = client.start(shutdown.clone());
    /// // Connected, authenticated and subscribed: services can reach the device now.
    /// incoming.status().wait_for(|s| *s == Status::Connected).await?;
    /// # let serve = async {
    /// while let Some(request) = incoming.next().await {
    ///     // accept or reject it (see IncomingStream)
    /// #   drop(request);
    /// }
    /// # };
    /// # shutdown.cancel();
    /// # serve.await;
    /// # Ok(()) }
    /// ```
    pub fn start(self, shutdown: CancellationToken) -> Incoming {
        let (requests, rx) = mpsc::channel(QUEUE);
        let (answers_tx, answers_rx) = mpsc::channel(256);
        let (status, status_rx) = watch::channel(Status::Connecting);
        let channels = control::Channels {
            requests,
            answers_tx,
            answers_rx,
            status,
        };
        let task = tokio::spawn(control::run(Arc::new(self.settings), channels, shutdown));
        Incoming {
            rx,
            status: status_rx,
            task,
        }
    }
}

impl DeviceClientBuilder {
    /// Trust this PEM CA file for the hub instead of the system's roots (self-hosted hubs).
    /// Ignored when [`DeviceClientBuilder::connector`] is given.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Present this client certificate (PEM chain, leaf first) with its private key (PEM)
    /// on every connection to the hub: an X.509 device's credential (connection string
    /// `…;x509=true`). Ignored when [`DeviceClientBuilder::connector`] is given, whose
    /// config must then carry the certificate.
    pub fn client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Dial the hub with this connector (TLS trust, HTTP proxy, timeouts).
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How the control channel reaches the hub (default: [`MqttTransport::WebSocket`]).
    pub fn transport(mut self, transport: MqttTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Time allowed for each step of reaching the hub (TCP, TLS, WebSocket, MQTT) when the
    /// client makes its own connector ([`defaults::TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// MQTT keep-alive: ping the hub this often; a missing answer means the link is dead.
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// Lifetime of each SAS token; the client reconnects with a new one at 80% of it.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Longest wait between reconnect attempts.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Whether to keep a spare TLS connection to the streaming endpoint for a few seconds
    /// after each stream (it makes the next stream's set-up faster; default on). A connector given with
    /// `connector` keeps spares if it was made [`Connector::with_spares`].
    pub fn spares(mut self, on: bool) -> Self {
        self.spares = on;
        self
    }

    /// How many standby connections to keep on a hub that serves the fast path (default
    /// [`defaults::STANDBY`]; 0: none, every stream comes Azure's way). Each lets the hub
    /// hand a stream over in one round trip; one is replaced as soon as it is used, so
    /// more than the default matter only for bursts of streams opened at the same moment. Only over MQTT
    /// over WebSocket, whose 101 reply says whether the hub serves it.
    pub fn standby(mut self, connections: usize) -> Self {
        self.standby = connections;
        self
    }

    /// The client; fails if no TLS trust can be set up (an unreadable CA file, or no
    /// system roots), or the client certificate cannot be read.
    pub fn build(self) -> anyhow::Result<DeviceClient> {
        let connector = match self.connector {
            Some(c) => c,
            None => {
                let ca = self.ca_file.as_deref();
                let config = match &self.client_cert {
                    Some((cert, key)) => client_config_with_cert(ca, cert, key)?,
                    None => client_config(ca)?,
                };
                let made = Connector::new(config, self.timeout);
                match self.spares {
                    true => made.with_spares(),
                    false => made,
                }
            }
        };
        Ok(DeviceClient {
            settings: Settings {
                connection: self.connection,
                connector,
                transport: self.transport,
                keep_alive: self.keep_alive,
                token_ttl: self.token_ttl,
                max_backoff: self.max_backoff,
                predial: true,
                standby: self.standby,
            },
        })
    }
}

/// The receiving end of a started [`DeviceClient`].
pub struct Incoming {
    rx: mpsc::Receiver<IncomingStream>,
    status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

impl Incoming {
    /// The next stream request; `None` once the client has shut down.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }

    /// The control channel's state now, and changes to it.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits for the control channel to stop (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        drop(self.rx);
        let _ = self.task.await;
    }
}
