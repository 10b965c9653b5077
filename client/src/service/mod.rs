//! The service side: open a stream to a device through the hub.
//!
//! A [`ServiceClient`] says which hub and how (a service connection string, TLS trust,
//! timeouts); a [`Route`] says to which device and stream name. [`ServiceClient::open`]
//! asks the hub (Azure's `POST /twins/{device}/streams/{name}`), waits for the device to
//! accept, and opens the stream's WebSocket with the one-time token the hub hands back.
//!
//! Against a hub that serves the fast path (ours; see `device_streams_protocol::fast`),
//! a client built with [`ServiceClientBuilder::warm`] keeps warm connections and opens
//! on one of them instead: one message, with the local side's first bytes right behind
//! it ([`ServiceClient::open_piped`]). Against Azure it asks as above.
//!
//! Layout: `request` (the REST call and its errors), `warm` (the warm connections),
//! `pipeline` (opening on one).

mod pipeline;
mod request;
mod warm;

use std::{path::PathBuf, sync::Arc, time::Duration};

use device_streams_protocol::connection_string::ServiceConnectionString;

pub use request::{Granted, StreamError, StreamErrorKind};

use crate::{
    connector::{tls::client_config, Connector, Reusable},
    stream::Stream,
    websocket,
};

/// [`ServiceClientBuilder`]'s defaults, which the service proxy's flags share.
pub mod defaults {
    use std::time::Duration;

    /// Each step of reaching the hub, and both sides' time to reach the streaming endpoint.
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    /// How long the device may take to answer.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Lifetime of the SAS token signed for each request.
    pub const TOKEN_TTL: Duration = Duration::from_secs(300);
}

/// Where a stream goes: a device (or one of its module identities) and the stream name
/// its device program decides by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    device_id: String,
    module_id: Option<String>,
    stream_name: String,
}

impl Route {
    /// A stream named `stream_name` (e.g. `ssh`) to `device_id`.
    pub fn new(device_id: impl Into<String>, stream_name: impl Into<String>) -> Self {
        Route {
            device_id: device_id.into(),
            module_id: None,
            stream_name: stream_name.into(),
        }
    }

    /// The same stream to the device's module identity `module_id` instead (Azure's
    /// `POST /twins/{device}/modules/{module}/streams/{name}`), which a device program
    /// connected with that module's connection string serves.
    pub fn with_module(mut self, module_id: impl Into<String>) -> Self {
        self.module_id = Some(module_id.into());
        self
    }

    /// The device the stream goes to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The module identity the stream goes to, if not the device itself.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// Who the stream goes to, as the hub and its messages name it: the device id, or
    /// `<device>/<module>`.
    pub fn target(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// The stream name the device program decides by.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }
}

/// A service's way into one hub. Cheap to clone; clones share the connector (and its
/// spare connection).
#[derive(Clone)]
pub struct ServiceClient {
    connection: ServiceConnectionString,
    connector: Connector,
    connect_timeout: Duration,
    response_timeout: Duration,
    token_ttl: Duration,
    /// Warm fast-path connections, when kept.
    warm: Option<Arc<warm::Warm>>,
}

/// Builds a [`ServiceClient`]; every setting has the service proxy's default.
pub struct ServiceClientBuilder {
    connection: ServiceConnectionString,
    ca_file: Option<PathBuf>,
    connector: Option<Connector>,
    timeout: Duration,
    response_timeout: Duration,
    token_ttl: Duration,
    spares: bool,
    warm: usize,
}

impl ServiceClient {
    /// A client for the hub (and policy) a service connection string names.
    ///
    /// ```
    /// use std::time::Duration;
    /// use device_streams::ServiceClient;
    ///
    /// # #[tokio::main] async fn main() -> anyhow::Result<()> {
    /// # let hub = e2e::System::start().await; // a hub in-process, for its CA file
    /// # let secret = hub.service_connection().to_secret_string();
    /// # let (connection_string, ca_file) = (secret.expose(), hub.ca_file());
    /// // "HostName=hub.example.com;SharedAccessKeyName=service;SharedAccessKey=..."
    /// let client = ServiceClient::builder(connection_string.parse()?)
    ///     .ca_file(ca_file) // a self-hosted hub's CA; leave out for Azure
    ///     .timeout(Duration::from_secs(5))
    ///     .response_timeout(Duration::from_secs(20))
    ///     .build()?;
    /// println!("streams go through {}", client.hub());
    /// # Ok(()) }
    /// ```
    pub fn builder(connection: ServiceConnectionString) -> ServiceClientBuilder {
        ServiceClientBuilder {
            connection,
            ca_file: None,
            connector: None,
            timeout: defaults::TIMEOUT,
            response_timeout: defaults::RESPONSE_TIMEOUT,
            token_ttl: defaults::TOKEN_TTL,
            spares: true,
            warm: 0,
        }
    }

    /// The hub's `host[:port]`, as the connection string names it.
    pub fn hub(&self) -> String {
        self.connection.host.to_string()
    }

    /// The connector this client dials the hub with.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Asks the hub for a stream along `route` and waits for the device's answer, without
    /// opening the stream: where (`url`) and with which one-time token to connect.
    pub async fn request(&self, route: &Route) -> Result<Granted, StreamError> {
        Ok(request::request(self, route).await?.0)
    }

    /// Opens a stream along `route`: asks the hub, waits for the device to accept, and
    /// opens the stream's WebSocket. The [`Stream`] is `AsyncRead + AsyncWrite`; `flush`
    /// sends what was written, `shutdown` ends the stream (or only our half, where the
    /// hub agreed to half-close).
    ///
    /// Not run here (it needs a device to answer: the [crate-level example](crate) runs a
    /// full round trip); how a program tells the causes of failure apart:
    ///
    /// ```no_run
    /// use device_streams::{Route, ServiceClient, StreamError, StreamErrorKind};
    ///
    /// # async fn example(client: ServiceClient) -> anyhow::Result<()> {
    /// match client.open(&Route::new("dev1", "ssh")).await {
    ///     Ok(stream) => { /* read and write it */ }
    ///     Err(StreamError::Rejected { reason, .. }) => {
    ///         eprintln!("the device said no: {}", reason.as_deref().unwrap_or("no reason given"))
    ///     }
    ///     Err(e) if e.kind() == StreamErrorKind::Offline => eprintln!("dev1 is offline"),
    ///     Err(e) if e.kind() == StreamErrorKind::Limited => eprintln!("try again later: {e}"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn open(&self, route: &Route) -> Result<Stream, StreamError> {
        self.open_piped(route, &mut tokio::io::empty()).await
    }

    /// Starts keeping warm connections (if the client keeps them: see
    /// [`ServiceClientBuilder::warm`]) before the first stream needs one. Must be called
    /// within a Tokio runtime.
    pub fn warm_up(&self) {
        if let Some(warm) = &self.warm {
            warm.start(self);
        }
    }

    /// Whether streams open on the fast path now: the hub serves it and warm connections
    /// are kept.
    pub fn fast_path(&self) -> bool {
        self.warm.as_ref().is_some_and(|w| w.served())
    }

    /// [`ServiceClient::open`], sending what `local` says while the device decides: on the
    /// fast path, `local`'s first bytes (at most 64 KiB) travel with the request and reach
    /// the device's side right behind the offer, so a protocol whose client speaks first
    /// gets its first answer a round trip sooner. Those bytes are part of the stream: go
    /// on reading `local` for the rest. Without the fast path, the same as `open`.
    pub async fn open_piped<L>(&self, route: &Route, local: &mut L) -> Result<Stream, StreamError>
    where
        L: tokio::io::AsyncRead + Unpin,
    {
        let mut early = Vec::new();
        if let Some(warm) = &self.warm {
            warm.start(self);
            if let Some(conn) = warm.take().await {
                let limit = self.response_timeout + self.connector.timeout;
                match pipeline::open(conn, route, local, limit).await? {
                    pipeline::Opened::Stream(stream) => return Ok(*stream),
                    pipeline::Opened::Retry(sent) => early = sent,
                }
            }
        }
        let mut stream = self.open_azure(route).await?;
        if !early.is_empty() {
            use tokio::io::AsyncWriteExt;
            let replay = async {
                stream.write_all(&early).await?;
                stream.flush().await
            };
            if let Err(cause) = replay.await {
                let device = route.target();
                return Err(StreamError::Local { device, cause });
            }
        }
        Ok(stream)
    }

    /// Azure's way: the REST request, then the stream's WebSocket.
    async fn open_azure(&self, route: &Route) -> Result<Stream, StreamError> {
        let (granted, reuse) = request::request(self, route).await?;
        let elsewhere = |r: &Reusable| {
            websocket::host_and_port(&granted.url)
                .is_ok_and(|(host, port)| !r.leads_to(&host, port))
        };
        let reuse = match reuse {
            // Another host streams (Azure): the idle request connection serves the next request.
            Some(r) if elsewhere(&r) => {
                self.connector.offer_spare(r);
                None
            }
            other => other,
        };
        let stream =
            websocket::connect_stream_on(&self.connector, &granted.url, &granted.token, reuse)
                .await
                .map_err(|cause| StreamError::WebSocket {
                    device: route.target(),
                    cause,
                })?;
        let hub = &self.connection.host;
        self.connector.prepare_spare(&hub.host, hub.port);
        Ok(stream)
    }
}

impl ServiceClientBuilder {
    /// Trust this PEM CA file for the hub instead of the system's roots (self-hosted hubs).
    /// Ignored when [`ServiceClientBuilder::connector`] is given.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Dial the hub with this connector (TLS trust, HTTP proxy, timeouts).
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Time allowed for each step of reaching the hub (TCP, TLS, WebSocket) when the client
    /// makes its own connector, and asked of the hub for both sides to reach the streaming
    /// endpoint ([`defaults::TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the device may take to answer a stream request ([`defaults::RESPONSE_TIMEOUT`]).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Lifetime of the SAS token signed for each request ([`defaults::TOKEN_TTL`]).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Whether to keep a spare TLS connection to the hub for a few seconds after each stream
    /// (it makes the next stream's set-up faster; default on). A connector given with
    /// `connector` keeps spares if it was made [`Connector::with_spares`].
    pub fn spares(mut self, on: bool) -> Self {
        self.spares = on;
        self
    }

    /// How many warm fast-path connections to keep ready (default 0: none). Against a hub
    /// that serves the fast path each stream then opens in about two round trips; against
    /// Azure the first dial finds out it does not, and streams go Azure's way.
    pub fn warm(mut self, connections: usize) -> Self {
        self.warm = connections;
        self
    }

    /// The client; fails only if no TLS trust can be set up (an unreadable CA file, or
    /// no system roots).
    pub fn build(self) -> anyhow::Result<ServiceClient> {
        let connector = match self.connector {
            Some(c) => c,
            None => {
                let made = Connector::new(client_config(self.ca_file.as_deref())?, self.timeout);
                match self.spares {
                    true => made.with_spares(),
                    false => made,
                }
            }
        };
        Ok(ServiceClient {
            connection: self.connection,
            connector,
            connect_timeout: self.timeout,
            response_timeout: self.response_timeout,
            token_ttl: self.token_ttl,
            warm: (self.warm > 0).then(|| Arc::new(warm::Warm::new(self.warm))),
        })
    }
}
