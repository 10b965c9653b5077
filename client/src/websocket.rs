//! Opening WebSockets to the hub: a stream's (with its one-time token, offering the
//! half-close extension) and the control channel's (MQTT subprotocol), each step bound by
//! the connector's timeout; and dialing a stream's TLS connection ahead of its upgrade.

use std::time::Duration;

use device_streams_protocol::{
    fast::FAST_HEADER,
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
    Ok(connect_control(connector, url, bearer, subprotocol)
        .await?
        .0)
}

/// [`connect`], also saying whether the hub offers the fast path ([`FAST_HEADER`] in
/// its 101 reply: our hub's MQTT-over-WebSocket endpoint says so, Azure's never does).
pub async fn connect_control(
    connector: &Connector,
    url: &str,
    bearer: Option<&Secret>,
    subprotocol: Option<&str>,
) -> Result<(ClientWs, bool), WsError> {
    let auth = bearer.map_or(Auth::None, Auth::Bearer);
    let up = handshake(connector, url, auth, subprotocol, false, None).await?;
    Ok((up.ws, up.fast))
}

/// How an upgrade request authenticates.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    None,
    /// A stream's one-time token: `Authorization: Bearer <token>`.
    Bearer(&'a Secret),
    /// A SAS token, as the REST endpoints take it (the fast path's connections).
    Sas(&'a Secret),
}

/// An upgraded WebSocket and what the hub's 101 reply agreed to.
#[non_exhaustive]
pub struct Upgraded {
    /// The WebSocket.
    pub ws: ClientWs,
    /// Half-close agreed (only when offered).
    pub half_close: bool,
    /// The hub's ping interval on this connection, when it announced one.
    pub pings: Option<Duration>,
    /// The hub offers the fast path.
    pub fast: bool,
}

impl Upgraded {
    /// The WebSocket as a stream's byte stream, with what was agreed.
    pub(crate) fn into_stream(self) -> Stream {
        stream_of(self.ws, self.half_close, self.pings)
    }
}

/// A stream's byte stream on `ws`, with half-close and the hub's pings as agreed.
pub(crate) fn stream_of(ws: ClientWs, half_close: bool, pings: Option<Duration>) -> Stream {
    let stream = match half_close {
        true => WsStream::with_half_close(ws),
        false => WsStream::new(ws),
    };
    Stream::new(match pings {
        Some(every) => stream.expect_pings(every),
        None => stream,
    })
}

/// A fast-path connection (warm or standby, see `device_streams_protocol::fast`) to
/// `url`, authenticated with a SAS token (or, with none, by the client certificate the
/// connector presents: an X.509 device), offering half-close.
pub async fn connect_fast(
    connector: &Connector,
    url: &str,
    sas: Option<&Secret>,
) -> Result<Upgraded, WsError> {
    let auth = sas.map_or(Auth::None, Auth::Sas);
    handshake(connector, url, auth, None, true, None).await
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
    let up = handshake(connector, url, Auth::Bearer(token), None, true, reuse).await?;
    Ok(up.into_stream())
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
    auth: Auth<'_>,
    subprotocol: Option<&str>,
    half_close: bool,
) -> Result<tungstenite::handshake::client::Request, WsError> {
    let bad_url = || bad_url(url);
    let mut request = url.into_client_request().map_err(|_| bad_url())?;
    let headers = request.headers_mut();
    let value = match auth {
        Auth::None => None,
        Auth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
        Auth::Sas(token) => Some(token.expose().to_string()),
    };
    if let Some(value) = value {
        let value = HeaderValue::from_str(&value).map_err(|_| bad_url())?;
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
/// what the server's 101 reply agreed to.
async fn handshake(
    connector: &Connector,
    url: &str,
    auth: Auth<'_>,
    subprotocol: Option<&str>,
    half_close: bool,
    reuse: Option<Reusable>,
) -> Result<Upgraded, WsError> {
    let (host, port) = host_and_port(url)?;
    let request = upgrade_request(url, auth, subprotocol, half_close)?;
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
            let fast = headers.contains_key(FAST_HEADER);
            Ok(Upgraded {
                ws,
                half_close: agreed,
                pings: pings.filter(|_| half_close),
                fast,
            })
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
