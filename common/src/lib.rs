//! What the three binaries share.
//!
//! Layout:
//! - [`secret`]: a string type whose `Debug`/`Display` never show the value (keys, tokens).
//! - [`connection_string`]: Azure-style device and service connection strings.
//! - [`credentials`]: a connection string from a flag, a file, or a systemd credential.
//! - [`sas`]: shared access signature tokens: signing, parsing, verifying.
//! - [`protocol`]: the Azure IoT Hub device-streams wire protocol: topics, headers, paths, limits.
//! - [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` and the HTTP CONNECT tunnel every dial may go through.
//! - [`tls`]: rustls client and server set-up, and dialing a TLS connection with timeouts;
//!   under it [`resolve`] (names resolved once per 30 s), [`keepalive`] (TCP keepalive to the
//!   hub), [`read_ahead`] (a read buffer only while data comes in bulk) and [`spare`] (one
//!   connection dialed ahead for the next stream).
//! - [`ws`]: a WebSocket carrying raw bytes, adapted to `AsyncRead`/`AsyncWrite`, and the client dial.
//! - [`splice`]: joining a local socket to a stream's WebSocket, and what end-of-stream means.
//! - [`mqtt`]: reading and writing MQTT 3.1.1 packets on a byte stream (codec from `rumqttc`).
//! - [`backoff`]: exponential backoff with jitter for reconnect loops.
//! - [`config_file`]: `--config FILE`, a TOML file of flag values, applied through the flags' variables.
//! - [`sd_notify`]: telling systemd the service is ready, alive (watchdog) or stopping.
//! - [`logging`], [`shutdown`] and [`cli`]: tracing set-up, SIGINT/SIGTERM handling, and the
//!   binaries' shared `main` (exit codes, one-line errors), plus [`accept`] for accept loops.
#![forbid(unsafe_code)]

pub mod accept;
pub mod backoff;
pub mod cli;
pub mod config_file;
pub mod connection_string;
pub mod credentials;
pub mod keepalive;
pub mod logging;
pub mod mqtt;
pub mod protocol;
pub mod proxy;
pub mod read_ahead;
pub mod resolve;
pub mod sas;
pub mod sd_notify;
pub mod secret;
pub mod shutdown;
pub mod spare;
pub mod splice;
pub mod tls;
pub mod ws;

pub use secret::Secret;
