//! HTTP plumbing shared by the hub's endpoints: JSON error replies and the server side
//! of a WebSocket upgrade on a hyper connection.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use device_streams_protocol::ws;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::OwnedSemaphorePermit,
};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
    WebSocketStream,
};

pub type Body = Full<Bytes>;
pub type ServerWs = WebSocketStream<Conn>;

/// The hub's place for one connection under `--max-connections`, and its place among the
/// unauthenticated ones until it shows a credential; a request carries it (as an
/// extension) so an upgraded WebSocket keeps it for as long as it lives.
#[derive(Clone)]
pub struct ConnPermit {
    _conn: Arc<OwnedSemaphorePermit>,
    place: crate::preauth::Place,
}

impl ConnPermit {
    pub fn new(conn: OwnedSemaphorePermit, place: crate::preauth::Place) -> Self {
        ConnPermit {
            _conn: Arc::new(conn),
            place,
        }
    }

    /// The connection has authenticated: it no longer counts as unauthenticated.
    pub fn authenticated(&self) {
        self.place.authenticated();
    }

    /// [`ConnPermit::authenticated`] for the connection a request came on, if it has one.
    pub fn authenticated_on<B>(req: &http::Request<B>) {
        if let Some(permit) = req.extensions().get::<ConnPermit>() {
            permit.authenticated();
        }
    }
}

/// An upgraded connection, holding its connection permit.
pub struct Conn {
    io: TokioIo<hyper::upgrade::Upgraded>,
    _permit: Option<ConnPermit>,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An accepted upgrade, not yet completed.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    permit: Option<ConnPermit>,
}

/// An error reply: `{"errorCode": "...", "message": "..."}`, so a user sees the cause.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({ "errorCode": code, "message": message.into() });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Why a WebSocket upgrade request was refused.
#[derive(Debug)]
pub struct BadUpgrade(pub &'static str);

impl BadUpgrade {
    pub fn response(&self) -> Response<Body> {
        error(StatusCode::BAD_REQUEST, "BadWebSocketUpgrade", self.0)
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a WebSocket upgrade request and builds the 101 reply; `subprotocol` is echoed
/// if the client offered it. Returns the future that yields the upgraded connection,
/// or a 400 reply saying what is wrong with the request.
pub fn accept_upgrade(
    req: &mut Request<Incoming>,
    subprotocol: Option<&str>,
) -> Result<(Response<Body>, Upgrade), BadUpgrade> {
    let headers = req.headers();
    let bad = BadUpgrade;
    if !header_has(headers, header::UPGRADE, "websocket")
        || !header_has(headers, header::CONNECTION, "upgrade")
    {
        return Err(bad(
            "this endpoint only speaks WebSocket (Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(bad("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| bad("Sec-WebSocket-Key is missing"))?;
    let accept = derive_accept_key(key.as_bytes());
    let offered = subprotocol.filter(|p| header_has(headers, header::SEC_WEBSOCKET_PROTOCOL, p));

    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| bad("bad key"))?,
    );
    if let Some(p) = offered {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).map_err(|_| bad("bad subprotocol"))?,
        );
    }
    let permit = req.extensions().get::<ConnPermit>().cloned();
    Ok((
        resp,
        Upgrade {
            on_upgrade: hyper::upgrade::on(req),
            permit,
        },
    ))
}

/// Waits for the upgrade to finish and wraps the connection as a server-side WebSocket
/// for a control channel (a small read buffer: the hub holds one per connected device).
pub async fn upgraded(upgrade: Upgrade, max_message: usize) -> hyper::Result<ServerWs> {
    upgraded_with(upgrade, ws::control_config(max_message)).await
}

/// As [`upgraded`], for a stream's data WebSocket (see [`ws::config`]).
pub async fn upgraded_stream(upgrade: Upgrade, max_message: usize) -> hyper::Result<ServerWs> {
    upgraded_with(upgrade, ws::config_with_max(max_message)).await
}

async fn upgraded_with(upgrade: Upgrade, config: WebSocketConfig) -> hyper::Result<ServerWs> {
    let io = Conn {
        io: TokioIo::new(upgrade.on_upgrade.await?),
        _permit: upgrade.permit,
    };
    Ok(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
