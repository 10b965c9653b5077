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
//!
//! # A round trip
//!
//! A device program that echoes streams named `echo`, and a service program that opens
//! one. (The example starts a hub in-process for the two to meet at, in lines not shown;
//! yours come from the connection strings Azure, or `stream-hub device add` and
//! `stream-hub connection-string`, give you. `ca_file` is for a self-hosted hub's own CA:
//! against Azure leave it out.)
//!
//! ```
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! # let hub = e2e::System::start().await;
//! # let (device_connection_string, service_connection_string, ca) =
//! #     (hub.add_device("dev1"), hub.service_connection(), hub.ca_file());
//! use device_streams::{device::Status, DeviceClient, Route, ServiceClient};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio_util::sync::CancellationToken;
//!
//! // The device: stays connected and echoes every stream named "echo".
//! let shutdown = CancellationToken::new();
//! let device = DeviceClient::builder(device_connection_string).ca_file(&ca).build()?;
//! let mut incoming = device.start(shutdown.clone());
//! let mut status = incoming.status();
//! tokio::spawn(async move {
//!     while let Some(request) = incoming.next().await {
//!         if request.name() != "echo" {
//!             request.reject("this device only echoes").await;
//!             continue;
//!         }
//!         tokio::spawn(async move {
//!             let Ok(stream) = request.accept().await else { return };
//!             let (mut from_service, mut to_service) = tokio::io::split(stream);
//!             let _ = tokio::io::copy(&mut from_service, &mut to_service).await;
//!             let _ = to_service.shutdown().await;
//!         });
//!     }
//! });
//! status.wait_for(|s| *s == Status::Connected).await?;
//!
//! // The service: opens a stream to the device and gets its bytes back.
//! let service = ServiceClient::builder(service_connection_string).ca_file(&ca).build()?;
//! let mut stream = service.open(&Route::new("dev1", "echo")).await?;
//! stream.write_all(b"hello").await?;
//! stream.flush().await?; // writes are batched until a flush
//! let mut echoed = [0; 5];
//! stream.read_exact(&mut echoed).await?;
//! assert_eq!(&echoed, b"hello");
//! stream.shutdown().await?;
//!
//! shutdown.cancel(); // the device client disconnects
//! # Ok(()) }
//! ```
//!
//! A stream that cannot be opened says why, as a [`StreamError`]; [`StreamError::kind`]
//! sorts it into offline, rejected (with the device's reason), unauthorised, limited,
//! timed out or unreachable.
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
