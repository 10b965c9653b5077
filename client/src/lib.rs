//! `device-streams`: open and serve Azure IoT Hub device streams from your own program —
//! against Azure IoT Hub or a self-hosted `stream-hub`.
//!
//! A device stream is a TCP-like byte stream between a service program and a device that
//! accepts no inbound connections: both dial out over TLS to the hub, which pairs them.
//!
//! Layout:
//! - [`service`]: [`ServiceClient`] opens a stream to a device along a [`Route`].
//! - [`device`]: [`DeviceClient`] stays connected and yields incoming stream requests.
//! - [`stream`]: [`Stream`], an open stream as `AsyncRead + AsyncWrite`.
//! - [`splice`]: joining a local socket to a stream, and what end-of-stream means.
//! - [`connector`]: dialing the hub (TLS, HTTP proxy, DNS cache, keepalive, spares).
//! - [`websocket`]: opening a stream's or the control channel's WebSocket.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connector;
pub mod device;
pub mod service;
pub mod splice;
pub mod stream;
pub mod websocket;

pub use connector::Connector;
pub use device::{DeviceClient, IncomingStream};
pub use device_streams_protocol as protocol;
pub use service::{Route, ServiceClient, StreamError, StreamErrorKind};
pub use stream::Stream;
