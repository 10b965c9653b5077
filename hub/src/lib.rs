//! `stream-hub`: a self-hosted stand-in for Azure IoT Hub's device streams.
//!
//! Layout:
//! - [`config`]: names the hub answers to, every limit it enforces, how much log it keeps.
//! - [`registry`]: devices, their modules and X.509 authentication, CAs, policies and
//!   settings in SQLite (a core of model, schema and connection, and parts over it);
//!   [`auth`] checks SAS tokens against it; [`x509`] checks device certificates against it.
//! - [`init`]: `stream-hub init`: CA, server certificate, registry, first policy;
//!   [`cli`]: the command line and `serve`; [`commands`]: every other sub-command
//!   (`main.rs` only parses and dispatches).
//! - [`tls`]: the rustls server configs (main and MQTT port), whose certificate reloads
//!   under a running hub; [`certs`]: the CA and server certificate `init` makes and
//!   `stream-hub cert` re-issues.
//! - [`server`]: the TLS ports' accept loop (the main port, and the MQTT port of
//!   `serve --mqtt-listen`) and the main port's routing; [`http`] holds the shared HTTP bits;
//!   [`refusal`]: every "no" the REST endpoints give, as status, error code and outcome.
//! - [`stream`]: a stream's whole life — the service's request, the table of pending
//!   streams and their tokens, the streaming endpoint, the relay, and its activity record.
//! - [`mqtt`]: devices' control sessions, over WebSocket or straight over TLS;
//!   [`sessions`]: which devices are connected, and requests awaiting their answers
//!   ([`request_queue`]: each session's small queue of them).
//! - [`activity`]: the DeviceStreams activity log; [`metrics`]: Prometheus metrics;
//!   [`admin`]: `/metrics` and `/healthz`, on the main port or a separate listener;
//!   [`dashboard`]: the HTML dashboard on that listener and, with `serve --dashboard`, on
//!   the TLS port (pages, charts, sign-in, actions).
//! - [`registry_api`]: the registry's REST API; [`revocation`]: disabling a device cuts it off;
//!   [`rate`]: the new-streams-per-second limit; [`preauth`]: what a connection may cost
//!   before it has authenticated.
//! - [`cluster`]: cluster mode, many nodes sharing the registry, presence and stream
//!   requests through NATS JetStream.
//! - [`live`]: what the running hub publishes in the database for the CLI (which devices
//!   are online, open streams and their bytes) and the CLI's requests to close a stream.
#![forbid(unsafe_code)]

pub mod activity;
pub mod admin;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod init;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod preauth;
pub mod rate;
pub mod refusal;
pub mod registry;
pub mod registry_api;
pub mod request_queue;
pub mod revocation;
pub mod server;
pub mod sessions;
pub mod stream;
pub mod tls;
pub mod x509;

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{Config, Limits};
pub use server::{run, run_with};

/// Everything the hub's tasks share.
pub struct Hub {
    pub config: Config,
    pub registry: registry::Registry,
    pub(crate) sessions: sessions::Sessions,
    pub(crate) streams: stream::Streams,
    /// The fast path's standby pool and idle connection counts.
    pub(crate) fast: stream::fast::Fast,
    pub(crate) live: live::Live,
    pub(crate) activity: Arc<activity::Activity>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) new_streams: rate::RateLimit,
    pub(crate) tracker: TaskTracker,
    /// Places of the connections that have not authenticated yet.
    pub(crate) preauth: preauth::Gate,
    pub shutdown: CancellationToken,
    /// The limits in force: those the hub started with, replaced by a reload (SIGHUP).
    limits: std::sync::RwLock<Arc<Limits>>,
    /// This hub as a node of a cluster (`serve --cluster`), set once at start.
    pub(crate) cluster: std::sync::OnceLock<Arc<cluster::Node>>,
    /// Signed-in dashboard sessions (memory only: a restart signs admins out).
    pub(crate) dashboard: dashboard::auth::Sessions,
    /// The last hour of the hub's metrics, for the dashboard's charts.
    pub(crate) history: dashboard::history::History,
}

impl Hub {
    /// A hub over `registry`, starting with `limits`; its activity log goes into the
    /// registry's database.
    pub fn new(
        config: Config,
        limits: Limits,
        registry: registry::Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Hub>> {
        let streams = stream::Streams::new(limits.max_streams, limits.max_streams_per_device);
        let new_streams = rate::RateLimit::new(limits.max_new_streams_per_second);
        // Every stream pending or open holds a place until its record is written; the rest
        // is room for records on their way to the disk.
        let places = limits.max_streams + 4096;
        let activity = activity::Activity::open(registry.path(), places, config.retention.clone());
        let activity = Arc::new(activity?);
        let live = live::Live::start(&registry)?;
        Ok(Arc::new(Hub {
            config,
            registry,
            sessions: sessions::Sessions::new(live.presence()),
            streams,
            fast: stream::fast::Fast::default(),
            live,
            activity,
            metrics: Arc::default(),
            new_streams,
            tracker: TaskTracker::new(),
            preauth: preauth::Gate::default(),
            shutdown,
            limits: std::sync::RwLock::new(Arc::new(limits)),
            cluster: std::sync::OnceLock::new(),
            dashboard: dashboard::auth::Sessions::default(),
            history: dashboard::history::History::default(),
        }))
    }

    /// The limits in force now.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `new` in force for what starts from now on: stream requests, connections,
    /// sessions. What is open keeps the limits it began under. `--max-connections` and the
    /// activity log's queue are sized at start; they stay (a restart changes them).
    pub fn set_limits(&self, mut new: Limits) {
        let old = self.limits();
        new.max_connections = old.max_connections;
        self.streams
            .set_limits(new.max_streams, new.max_streams_per_device);
        self.new_streams
            .set_per_second(new.max_new_streams_per_second);
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// Whether `device` has a control session on this hub.
    pub fn is_connected(&self, device: &str) -> bool {
        self.sessions.is_connected(device)
    }

    /// Devices with a control session on this hub.
    pub fn connected_devices(&self) -> usize {
        self.sessions.connected()
    }

    /// Streams pending (requested, not yet paired) or open on this hub.
    pub fn open_streams(&self) -> usize {
        self.streams.active()
    }

    /// Fast-path standby connections `identity` (a device, or `device/module`) holds now.
    pub fn standby_connections(&self, identity: &str) -> usize {
        self.fast.standby.count(identity)
    }

    /// Fast-path connections, warm and standby, waiting for a stream now.
    pub fn idle_fast_connections(&self) -> usize {
        self.fast.idle()
    }

    /// Where a stream's record goes when it ends: the activity log and the metrics.
    pub fn recorder(&self) -> stream::Recorder {
        stream::Recorder {
            metrics: self.metrics.clone(),
            activity: self.activity.clone(),
        }
    }
}
