//! `stream-hub`: a self-hosted stand-in for Azure IoT Hub's device streams.
//!
//! Layout:
//! - [`config`]: names the hub answers to and every limit it enforces.
//! - [`registry`]: devices and shared access policies in SQLite; [`auth`] checks SAS tokens against it.
//! - [`init`]: `stream-hub init`: CA, server certificate, registry, first policy.
//! - [`server`]: the TLS port's accept loop and routing; [`http`] holds the shared HTTP bits.
//! - [`rest`]: services' stream requests; [`mqtt`]: devices' control sessions;
//!   [`sessions`]: which devices are connected, and requests awaiting their answers.
//! - [`streaming`]: streams awaiting both WebSockets, their tokens and limits;
//!   [`relay`]: the streaming endpoint's connections and the byte relay.
//! - [`activity`]: the DeviceStreams activity log.
#![forbid(unsafe_code)]

pub mod activity;
pub mod auth;
pub mod config;
pub mod http;
pub mod init;
pub mod mqtt;
pub mod registry;
pub mod relay;
pub mod rest;
pub mod server;
pub mod sessions;
pub mod streaming;

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
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Hub {
    pub fn new(
        config: Config,
        registry: registry::Registry,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        let streams = streaming::Streams::new(
            config.limits.max_streams,
            config.limits.max_streams_per_device,
        );
        Arc::new(Hub {
            config,
            registry,
            sessions: sessions::Sessions::default(),
            streams,
            tracker: TaskTracker::new(),
            shutdown,
        })
    }
}
