//! The Azure IoT Hub device-streams wire protocol, and the I/O adapters both ends of it
//! share: what the hub and the clients (the proxies, or any program using the
//! `device-streams` SDK) must agree on.
//!
//! Layout:
//! - [`secret`]: a string type whose `Debug`/`Display` never show the value (keys, tokens).
//! - [`connection_string`]: Azure-style device and service connection strings, parsed and written.
//! - [`sas`]: shared access signature tokens: signing, parsing, verifying; URL encoding.
//! - [`wire`]: topics, REST paths, headers, extension headers, limits, request/answer formats.
//! - [`fast`]: the negotiated fast path (warm and standby connections), our extension.
//! - [`mqtt`]: reading and writing MQTT 3.1.1 packets on a byte stream (codec from `rumqttc`).
//! - [`ws`]: a WebSocket carrying raw bytes, adapted to `AsyncRead`/`AsyncWrite`, and the
//!   WebSocket limits both ends use.
//! - [`read_ahead`]: a read buffer under TLS that exists only while data comes in bulk.
//! - [`tls`]: the rustls crypto provider both ends use, and reading PEM certificates.
//! - [`backoff`]: exponential backoff with jitter (reconnects, accept errors).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
pub mod connection_string;
pub mod fast;
pub mod mqtt;
pub mod read_ahead;
pub mod sas;
pub mod secret;
pub mod tls;
pub mod wire;
pub mod ws;

pub use secret::Secret;
