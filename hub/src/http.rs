//! HTTP plumbing shared by the hub's endpoints: JSON error replies and the server side
//! of a WebSocket upgrade on a hyper connection.

use bytes::Bytes;
use device_streams_common::ws;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
    WebSocketStream,
};

pub type Body = Full<Bytes>;
pub type ServerWs = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

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
) -> Result<(Response<Body>, OnUpgrade), BadUpgrade> {
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
    Ok((resp, hyper::upgrade::on(req)))
}

/// Waits for the upgrade to finish and wraps the connection as a server-side WebSocket
/// for a control channel (small buffers: one per connected device).
pub async fn upgraded(on_upgrade: OnUpgrade) -> hyper::Result<ServerWs> {
    upgraded_with(on_upgrade, ws::control_config()).await
}

/// As [`upgraded`], for a stream's data WebSocket (buffers sized for 64 KiB messages).
pub async fn upgraded_stream(on_upgrade: OnUpgrade) -> hyper::Result<ServerWs> {
    upgraded_with(on_upgrade, ws::config()).await
}

async fn upgraded_with(on_upgrade: OnUpgrade, config: WebSocketConfig) -> hyper::Result<ServerWs> {
    let io = TokioIo::new(on_upgrade.await?);
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
