//! What a running hub is told: its names and its limits ([`Config`], [`Limits`]).

use std::time::Duration;

use clap::{Args, FromArgMatches};
use device_streams_protocol::wire;

/// Every bound the hub enforces; each is a `serve` flag (its doc comment is the help),
/// and the flags' defaults are the only defaults: [`Limits::default`] reads them.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Time allowed for a TLS handshake.
    /// (Short: a connection in its handshake has shown no credential yet; a real client
    /// finishes in a few round trips.)
    #[arg(long = "tls-handshake-timeout", env = "STREAM_HUB_TLS_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub tls_handshake: Duration,
    /// Time allowed for HTTP request headers and for a device's CONNECT.
    #[arg(long = "first-message-timeout", env = "STREAM_HUB_FIRST_MESSAGE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub first_message: Duration,
    /// Connect and response timeout of stream requests that name none (Azure: 60 s): both
    /// sides must reach the streaming endpoint within it.
    #[arg(long, env = "STREAM_HUB_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub handshake_timeout: Duration,
    /// Cap on the connect and response timeouts a service may ask for.
    #[arg(long, env = "STREAM_HUB_MAX_STREAM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_stream_timeout: Duration,
    /// Most simultaneous connections of any kind.
    #[arg(long, env = "STREAM_HUB_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Most connections that have not authenticated yet (no valid token or CONNECT so far),
    /// of all addresses together; past it, new connections are closed at accept.
    #[arg(
        long = "max-unauthenticated-connections",
        env = "STREAM_HUB_MAX_UNAUTHENTICATED_CONNECTIONS",
        default_value_t = 5_000
    )]
    pub max_unauthenticated: usize,
    /// Most connections from one IP address that have not authenticated yet.
    #[arg(
        long = "max-unauthenticated-per-address",
        env = "STREAM_HUB_MAX_UNAUTHENTICATED_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_unauthenticated_per_address: usize,
    /// Most devices with an open control connection.
    #[arg(long, env = "STREAM_HUB_MAX_DEVICES", default_value_t = 15_000)]
    pub max_devices: usize,
    /// Most streams (pending or open) on the hub.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS", default_value_t = 5_000)]
    pub max_streams: usize,
    /// Most streams (pending or open) per device.
    #[arg(long, env = "STREAM_HUB_MAX_STREAMS_PER_DEVICE", default_value_t = 100)]
    pub max_streams_per_device: usize,
    /// Most new stream requests per second on the hub (bursts up to one second's worth).
    #[arg(
        long,
        env = "STREAM_HUB_MAX_NEW_STREAMS_PER_SECOND",
        default_value_t = 1_000
    )]
    pub max_new_streams_per_second: u32,
    /// Largest WebSocket message accepted, in bytes (stream data comes in ≤ 64 KiB messages).
    #[arg(long = "max-message-size", env = "STREAM_HUB_MAX_MESSAGE_SIZE", default_value_t = wire::MAX_DATA_MESSAGE)]
    pub max_message: usize,
    /// Largest HTTP request head, in bytes.
    #[arg(long, env = "STREAM_HUB_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Close a paired stream after this long without traffic either way (off unless set).
    #[arg(long, env = "STREAM_HUB_STREAM_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Option<Duration>,
    /// How long open streams may go on after SIGTERM.
    #[arg(long, env = "STREAM_HUB_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// WebSocket ping interval on streams; a side silent for two intervals is cut (and a
    /// proxy that hears nothing for three ends its side): a dead peer shows within 20-30 s.
    #[arg(long, env = "STREAM_HUB_STREAM_PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub stream_ping_interval: Duration,
    /// Longest a device's or service's SAS token may still be valid when presented
    /// (its `se` minus now); a longer-lived token is refused. A device's control session
    /// also ends when its token expires, so this bounds how long a stolen token is useful.
    #[arg(long, env = "STREAM_HUB_MAX_TOKEN_LIFETIME", value_parser = humantime::parse_duration, default_value = "24h")]
    pub max_token_lifetime: Duration,
    /// Turn the fast path off (warm and standby connections, `docs/FASTPATH.md`): the hub
    /// then serves only Azure's protocol, and our proxies behave exactly as against Azure.
    #[arg(long, env = "STREAM_HUB_NO_FAST_PATH")]
    pub no_fast_path: bool,
    /// Most warm (ready, unused) fast-path connections one shared access policy may hold.
    #[arg(long, env = "STREAM_HUB_MAX_WARM_PER_POLICY", default_value_t = 64)]
    pub max_warm_per_policy: usize,
    /// Most standby fast-path connections one device (or module) may hold.
    #[arg(long, env = "STREAM_HUB_MAX_STANDBY_PER_DEVICE", default_value_t = 4)]
    pub max_standby_per_device: usize,
    /// Most warm and standby connections the hub holds altogether.
    #[arg(long, env = "STREAM_HUB_MAX_IDLE_FAST", default_value_t = 10_000)]
    pub max_idle_fast: usize,
    /// Largest MQTT packet from a device (not a flag: the protocol fixes it).
    #[arg(skip = device_streams_protocol::mqtt::MAX_PACKET)]
    pub max_mqtt_packet: usize,
}

impl Default for Limits {
    fn default() -> Self {
        flag_defaults()
    }
}

/// A group of flags as `serve` with no flags, no environment and no file has them, so
/// that the flags' defaults are the only place defaults are written.
pub fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>));
    let parsed = cmd
        .try_get_matches_from(["defaults"])
        .and_then(|m| T::from_arg_matches(&m));
    match parsed {
        Ok(values) => values,
        // Only a broken attribute gets here, and every test would show it.
        Err(e) => panic!("flag defaults do not parse: {e}"),
    }
}

/// How much of the activity log the hub keeps.
#[derive(Debug, Clone, Args)]
pub struct Retention {
    /// Delete activity records older than this.
    #[arg(long = "activity-max-age", env = "STREAM_HUB_ACTIVITY_MAX_AGE", value_parser = humantime::parse_duration, default_value = "30days")]
    pub max_age: Duration,
    /// Keep at most this many activity records (about 200 bytes each on disk), the newest.
    #[arg(
        long = "activity-max-records",
        env = "STREAM_HUB_ACTIVITY_MAX_RECORDS",
        default_value_t = 1_000_000
    )]
    pub max_records: u64,
}

impl Default for Retention {
    fn default() -> Self {
        flag_defaults()
    }
}

/// What the hub is told at start and keeps for its life. Its limits are not here: they
/// go to [`crate::Hub::new`], and a reload (SIGHUP) replaces them, so the only place to
/// read them is [`crate::Hub::limits`].
#[derive(Debug, Clone)]
pub struct Config {
    /// `host[:port]` as the connection strings name the hub; SAS resources are checked against it.
    pub hostname: String,
    /// Every name tokens may be signed for: `hostname`, then the aliases (`serve --alias`).
    pub names: Vec<String>,
    /// Base of the streaming URLs handed out, e.g. `wss://hub.example.com:8443`.
    pub streaming_base: String,
    /// How much of the activity log to keep.
    pub retention: Retention,
    /// Whether `/metrics` and `/healthz` are on the main port (not when an admin listener serves them).
    pub ops_on_main_port: bool,
    /// Whether the dashboard is served on the main port too, under `/dashboard/`
    /// (`serve --dashboard`).
    pub dashboard_on_main_port: bool,
}

impl Config {
    /// The advertised streaming endpoint: `--streaming-url` if given; else `wss://` with the
    /// host from `hostname` and its port if it names one, else the port the hub listens on.
    pub fn new(hostname: String, listen_port: u16, streaming_url: Option<String>) -> Self {
        let streaming_base = match streaming_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if hostname.contains(':') => format!("wss://{hostname}"),
            None => format!("wss://{hostname}:{listen_port}"),
        };
        Config {
            names: vec![hostname.clone()],
            hostname,
            streaming_base,
            retention: Default::default(),
            ops_on_main_port: true,
            dashboard_on_main_port: false,
        }
    }

    /// Also accepts tokens signed for `name` (`host[:port]`): the hub reached under another
    /// name or port, such as a load balancer's.
    pub fn with_alias(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// What `stream-hub endpoints` prints, in the shape of Azure's `az iot hub devicestream show`.
    pub fn endpoints_json(&self) -> serde_json::Value {
        let https = self.streaming_base.replacen("wss://", "https://", 1);
        serde_json::json!({ "streamingEndpoints": [https] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_the_flags_defaults_whatever_the_environment() {
        std::env::set_var("STREAM_HUB_MAX_STREAMS", "7");
        let limits = Limits::default();
        std::env::remove_var("STREAM_HUB_MAX_STREAMS");
        assert_eq!(limits.max_streams, 5_000);
        assert_eq!(limits.tls_handshake, Duration::from_secs(5));
        assert_eq!(limits.max_stream_timeout, Duration::from_secs(300));
        assert_eq!(limits.stream_idle_timeout, None);
        assert_eq!(limits.max_token_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(
            limits.max_mqtt_packet,
            device_streams_protocol::mqtt::MAX_PACKET
        );
    }
}
