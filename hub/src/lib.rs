//! `stream-hub`: a self-hosted stand-in for Azure IoT Hub's device streams.
//!
//! Layout:
//! - [`config`]: names the hub answers to and every limit it enforces.
//! - [`registry`]: devices and shared access policies in SQLite; [`auth`] checks SAS tokens against it.
//! - [`init`]: `stream-hub init`: CA, server certificate, registry, first policy;
//!   [`cli`]: the command line and `serve`; [`commands`]: every other sub-command
//!   (`main.rs` only parses and dispatches).
//! - [`server`]: the TLS port's accept loop and routing; [`http`] holds the shared HTTP bits.
//! - [`rest`]: services' stream requests; [`mqtt`]: devices' control sessions;
//!   [`sessions`]: which devices are connected, and requests awaiting their answers.
//! - [`streaming`]: streams awaiting both WebSockets, their tokens and limits;
//!   [`relay`]: the streaming endpoint's connections and the byte relay.
//! - [`activity`]: the DeviceStreams activity log; [`metrics`]: Prometheus metrics;
//!   [`admin`]: `/metrics` and `/healthz`, on the main port or a separate listener.
//! - [`registry_api`]: the registry's REST API; [`revocation`]: disabling a device cuts it off;
//!   [`rate`]: the new-streams-per-second limit.
#![forbid(unsafe_code)]

pub mod activity;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod init;
pub mod metrics;
pub mod mqtt;
pub mod rate;
pub mod registry;
pub mod registry_api;
pub mod relay;
pub mod rest;
pub mod revocation;
pub mod server;
pub mod sessions;
pub mod streaming;
pub mod tls;

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{Config, Limits};
pub use server::run;

/// Everything the hub's tasks share.
pub struct Hub {
    pub config: Config,
    pub registry: registry::Registry,
    pub sessions: sessions::Sessions,
    pub streams: streaming::Streams,
    pub activity: activity::Activity,
    pub metrics: metrics::Metrics,
    pub new_streams: rate::RateLimit,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Hub {
    /// A hub over `registry`; its activity log goes into the registry's database.
    pub fn new(
        config: Config,
        registry: registry::Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Hub>> {
        let limits = &config.limits;
        let streams = streaming::Streams::new(limits.max_streams, limits.max_streams_per_device);
        let new_streams = rate::RateLimit::new(limits.max_new_streams_per_second);
        let activity = activity::Activity::open(registry.path())?;
        Ok(Arc::new(Hub {
            config,
            registry,
            sessions: sessions::Sessions::default(),
            streams,
            activity,
            metrics: metrics::Metrics::default(),
            new_streams,
            tracker: TaskTracker::new(),
            shutdown,
        }))
    }

    /// Logs a stream request's outcome to the activity log and the metrics.
    pub fn record(&self, record: &activity::Record<'_>) {
        self.metrics.on_record(record);
        self.activity.record(record);
    }
}
