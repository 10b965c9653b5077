//! Opening WebSockets to the hub: a stream's (with its one-time token, offering the
//! half-close extension) and the control channel's (MQTT subprotocol), each step bound by
//! the connector's timeout; and dialing a stream's TLS connection ahead of its upgrade.

use std::time::Duration;

use device_streams_protocol::{
    wire::{HALF_CLOSE_HEADER, PING_INTERVAL_HEADER},
    ws::{config, WsStream},
    Secret,
};
use http::{header, HeaderValue, Uri};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest},
    WebSocketStream,
};

use crate::{
    connector::{ClientTls, Connector, DialError, Reusable},
    stream::Stream,
};

/// Why a WebSocket to the hub could not be opened. `host` is the `host:port` dialed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The URL (at most 200 characters of it) is not a `wss://` URL.
    #[error("'{0}' is not a wss:// URL")]
    BadUrl(String),
    /// The TLS connection could not be made.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The server answered the upgrade with an HTTP error (401: a used or unknown token).
    #[error("{host} refused the WebSocket: HTTP {status}{}", body_suffix(.body))]
    Refused {
        /// Where to.
        host: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body (at most 300 characters).
        body: String,
    },
    /// The upgrade failed otherwise (the connection broke, a malformed answer).
    #[error("WebSocket handshake with {host} failed: {cause}")]
    Handshake {
        /// Where to.
        host: String,
        /// tungstenite's error.
        cause: Box<tungstenite::Error>,
    },
    /// The upgrade took longer than the connector's timeout.
    #[error("WebSocket handshake with {host} timed out after {after:?}")]
    Timeout {
        /// Where to.
        host: String,
        /// The timeout.
        after: Duration,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A client WebSocket to the hub, message by message.
pub type ClientWs = WebSocketStream<ClientTls>;
/// A client WebSocket as a byte stream.
pub type ClientStream = WsStream<ClientTls>;

/// Opens a WebSocket to a `wss://` URL, optionally with `Authorization: Bearer <token>` and a
/// subprotocol; the TLS dial and the upgrade are each bound by the connector's timeout.
pub async fn connect(
    connector: &Connector,
    url: &str,
    bearer: Option<&Secret>,
    subprotocol: Option<&str>,
) -> Result<ClientWs, WsError> {
    Ok(handshake(connector, url, bearer, subprotocol, false, None)
        .await?
        .0)
}

/// Opens a stream's WebSocket with its token, offering half-close; the stream uses it
/// only if the hub agreed (our hub does, Azure's does not).
pub async fn connect_stream(
    connector: &Connector,
    url: &str,
    token: &Secret,
) -> Result<Stream, WsError> {
    connect_stream_on(connector, url, token, None).await
}

/// [`connect_stream`], on `reuse` when it leads to the URL's host and port.
pub async fn connect_stream_on(
    connector: &Connector,
    url: &str,
    token: &Secret,
    reuse: Option<Reusable>,
) -> Result<Stream, WsError> {
    let (ws, agreed, pings) = handshake(connector, url, Some(token), None, true, reuse).await?;
    let stream = match agreed {
        true => WsStream::with_half_close(ws),
        false => WsStream::new(ws),
    };
    Ok(Stream::new(match pings {
        Some(every) => stream.expect_pings(every),
        None => stream,
    }))
}

fn bad_url(url: &str) -> WsError {
    WsError::BadUrl(url.chars().take(200).collect())
}

/// The host and port a `wss://` URL leads to.
pub fn host_and_port(url: &str) -> Result<(String, u16), WsError> {
    let uri: Uri = url.parse().map_err(|_| bad_url(url))?;
    if uri.scheme_str() != Some("wss") {
        return Err(bad_url(url));
    }
    let host = uri.host().ok_or_else(|| bad_url(url))?.to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// Dials the TLS connection a WebSocket to `url` will run on, ahead of the upgrade (the
/// device proxy does this while it dials its target and answers the request).
pub async fn dial(connector: &Connector, url: &str) -> Result<Reusable, WsError> {
    let (host, port) = host_and_port(url)?;
    let tls = connector.connect_for_stream(&host, port).await?;
    Ok(Reusable { host, port, tls })
}

/// The upgrade request for `url`, with the stream's token, subprotocol and half-close offer.
fn upgrade_request(
    url: &str,
    bearer: Option<&Secret>,
    subprotocol: Option<&str>,
    half_close: bool,
) -> Result<tungstenite::handshake::client::Request, WsError> {
    let bad_url = || bad_url(url);
    let mut request = url.into_client_request().map_err(|_| bad_url())?;
    let headers = request.headers_mut();
    if let Some(token) = bearer {
        let value =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| bad_url())?;
        headers.insert(header::AUTHORIZATION, value);
    }
    if half_close {
        headers.insert(HALF_CLOSE_HEADER, HeaderValue::from_static("1"));
    }
    if let Some(proto) = subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(proto).map_err(|_| bad_url())?,
        );
    }
    Ok(request)
}

/// [`connect`], optionally offering half-close and on a connection to reuse; returns
/// whether the server agreed to half-close, and the ping interval it announced.
async fn handshake(
    connector: &Connector,
    url: &str,
    bearer: Option<&Secret>,
    subprotocol: Option<&str>,
    half_close: bool,
    reuse: Option<Reusable>,
) -> Result<(ClientWs, bool, Option<Duration>), WsError> {
    let (host, port) = host_and_port(url)?;
    let request = upgrade_request(url, bearer, subprotocol, half_close)?;
    let tls = match reuse {
        Some(r) if r.leads_to(&host, port) => r.tls,
        _ => connector.connect(&host, port).await?,
    };
    let handshake = tokio_tungstenite::client_async_with_config(request, tls, Some(config()));
    let addr = format!("{host}:{port}");
    match tokio::time::timeout(connector.timeout, handshake).await {
        Err(_) => Err(WsError::Timeout {
            host: addr,
            after: connector.timeout,
        }),
        Ok(Ok((ws, response))) => {
            let headers = response.headers();
            let agreed = half_close && headers.contains_key(HALF_CLOSE_HEADER);
            let pings = headers
                .get(PING_INTERVAL_HEADER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis);
            Ok((ws, agreed, pings.filter(|_| half_close)))
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).chars().take(300).collect())
                .unwrap_or_default();
            Err(WsError::Refused {
                host: addr,
                status,
                body,
            })
        }
        Ok(Err(cause)) => Err(WsError::Handshake {
            host: addr,
            cause: Box::new(cause),
        }),
    }
}
