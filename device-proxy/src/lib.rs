//! `device-local-proxy`: the device side of device streams.
//!
//! Layout:
//! - [`targets`]: the device's own map of stream names to local `host:port` targets.
//! - [`control`]: the control channel to the hub (MQTT over WebSocket): connect with a
//!   SAS token, subscribe, answer stream requests, keep alive, renew the token,
//!   reconnect forever with backoff.
//! - [`stream`]: one accepted stream: dial the target, open the stream's WebSocket, splice.
//!
//! Entry point: [`run`], which returns once `shutdown` is cancelled and open streams
//! have finished (or the grace period has passed).
#![forbid(unsafe_code)]

pub mod control;
pub mod stream;
pub mod targets;

use std::time::Duration;

use device_streams_common::{connection_string::DeviceConnectionString, tls::Connector};

pub use control::run;
pub use targets::{Target, Targets};

pub struct Config {
    pub connection: DeviceConnectionString,
    /// Dials the hub and the streaming endpoint (TLS, with the connect timeout).
    pub connector: Connector,
    pub targets: Targets,
    /// Time allowed to connect to a local target.
    pub target_timeout: Duration,
    /// MQTT keep-alive: a PINGREQ this often, and the hub must answer within it.
    pub keep_alive: Duration,
    /// Lifetime of each SAS token; the control channel reconnects with a new one at 80% of it.
    pub token_ttl: Duration,
    /// Most streams open at once; requests past it are rejected.
    pub max_streams: usize,
    /// How long open streams may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}
