//! A client's TLS connection to the hub, and a connection with nothing in flight that the
//! next request or WebSocket to the same `host:port` may use instead of dialing.

use device_streams_protocol::read_ahead::ReadAhead;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// What a client's TLS runs on: the TCP socket with read-ahead while data comes in bulk
/// (rustls alone reads 4 KiB per system call).
pub type Transport = ReadAhead<TcpStream>;

/// A client's TLS connection to the hub.
pub type ClientTls = TlsStream<Transport>;

/// A TLS connection to `host:port` with nothing in flight, which a WebSocket or request to
/// that same `host:port` may use instead of dialing: the service client's connection that
/// just carried the stream request (our hub streams on the port it serves REST on;
/// Azure's streaming endpoint is another host), the device client's dial made ahead
/// ([`crate::websocket::dial`]), or a spare ([`super::spare`]). It takes a TCP connect
/// and a TLS handshake off a stream's set-up.
pub struct Reusable {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: ClientTls,
}

impl Reusable {
    /// Whether this connection leads where a connection to `host:port` must go.
    pub fn leads_to(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}
