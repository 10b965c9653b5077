//! What a running hub is told: its names and its limits.

use std::time::Duration;

/// Every bound the hub enforces; each is a `serve` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// TLS handshake on an accepted connection.
    pub tls_handshake: Duration,
    /// Time for an HTTP request's headers, and for a device's CONNECT after the upgrade.
    pub first_message: Duration,
    /// Simultaneous TCP connections of any kind.
    pub max_connections: usize,
    /// Streams pending or open on the whole hub.
    pub max_streams: usize,
    /// Streams pending or open per device.
    pub max_streams_per_device: usize,
    /// Connect and response timeout of a stream request that names none (Azure: 60 s):
    /// the handshake window in which both sides must reach the streaming endpoint.
    pub handshake_timeout: Duration,
    /// Upper bound on the connect/response timeouts a service may ask for.
    pub max_stream_timeout: Duration,
    /// New stream requests per second on the whole hub (bursts up to one second's worth).
    pub max_new_streams_per_second: u32,
    /// Devices with an open control connection.
    pub max_devices: usize,
    /// Largest WebSocket message on any connection.
    pub max_message: usize,
    /// A paired stream with no traffic either way for this long is closed (off if `None`).
    pub stream_idle_timeout: Option<Duration>,
    /// Largest MQTT packet from a device.
    pub max_mqtt_packet: usize,
    /// Largest HTTP request head.
    pub max_header_bytes: usize,
    /// How long open streams may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Pings on each stream's WebSockets while idle; a side silent for two intervals is cut.
    pub stream_ping_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake: Duration::from_secs(10),
            first_message: Duration::from_secs(10),
            max_connections: 20_000,
            max_streams: 5_000,
            max_streams_per_device: 100,
            handshake_timeout: device_streams_protocol::wire::DEFAULT_TIMEOUT,
            max_stream_timeout: Duration::from_secs(300),
            max_new_streams_per_second: 1_000,
            max_devices: 15_000,
            max_message: device_streams_protocol::wire::MAX_DATA_MESSAGE,
            stream_idle_timeout: None,
            max_mqtt_packet: device_streams_protocol::mqtt::MAX_PACKET,
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(10),
            stream_ping_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `host[:port]` as the connection strings name the hub; SAS resources are checked against it.
    pub hostname: String,
    /// Base of the streaming URLs handed out, e.g. `wss://hub.example.com:8443`.
    pub streaming_base: String,
    pub limits: Limits,
    /// Whether `/metrics` and `/healthz` are on the main port (not when an admin listener serves them).
    pub ops_on_main_port: bool,
}

impl Config {
    /// The advertised streaming endpoint: `--streaming-url` if given; else `wss://` with the
    /// host from `hostname` and its port if it names one, else the port the hub listens on.
    pub fn new(
        hostname: String,
        listen_port: u16,
        streaming_url: Option<String>,
        limits: Limits,
    ) -> Self {
        let streaming_base = match streaming_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if hostname.contains(':') => format!("wss://{hostname}"),
            None => format!("wss://{hostname}:{listen_port}"),
        };
        Config {
            hostname,
            streaming_base,
            limits,
            ops_on_main_port: true,
        }
    }

    /// What `stream-hub endpoints` prints, in the shape of Azure's `az iot hub devicestream show`.
    pub fn endpoints_json(&self) -> serde_json::Value {
        let https = self.streaming_base.replacen("wss://", "https://", 1);
        serde_json::json!({ "streamingEndpoints": [https] })
    }
}
