//! Asking the hub for a stream (`POST /twins/{id}/streams/{name}`) and waiting for the
//! device's answer: Azure's call, with the hub's errors turned into [`StreamError`].

use std::time::Duration;

use bytes::Bytes;
use device_streams_protocol::{
    sas::{self, SasError},
    wire::{self, HEADER_AUTH_TOKEN, HEADER_IS_ACCEPTED, HEADER_URL, REASON_HEADER},
    Secret,
};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{Route, ServiceClient};
use crate::{
    connector::{ClientTls, DialError, Reusable},
    websocket::WsError,
};

/// hyper's message leaves out what caused it (e.g. the I/O error under "connection closed").
fn with_causes(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        text = format!("{text}: {cause}");
        next = cause.source();
    }
    text
}

/// How a rejection reads: the device's own reason when the hub passed one on (ours does),
/// else the usual causes (Azure's hub passes none).
fn rejection(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(": {r}"),
        None => " (the device maps no such name, its target is down, or it is at its stream limit)"
            .into(),
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("cannot reach the hub for device {device}: {cause}")]
    Unreachable { device: String, cause: DialError },
    #[error("stream request for device {device} failed: {}", with_causes(.cause))]
    Http { device: String, cause: hyper::Error },
    #[error("cannot sign a token for device {device}: {cause}")]
    Sign { device: String, cause: SasError },
    #[error("hub refused the stream to device {device}: {status}: {message}")]
    Refused {
        device: String,
        status: StatusCode,
        message: String,
    },
    #[error("device {device} rejected stream '{name}'{}", rejection(.reason))]
    Rejected {
        device: String,
        name: String,
        /// The device's reason, as the hub passed it on; `None` from Azure.
        reason: Option<String>,
    },
    #[error("no answer from the hub about device {device} within {after:?}")]
    Timeout { device: String, after: Duration },
    #[error("hub accepted the stream to device {device} but sent no {0} header", .missing)]
    Incomplete {
        device: String,
        missing: &'static str,
    },
    #[error("cannot open the stream to device {device}: {cause}")]
    WebSocket { device: String, cause: WsError },
}

/// Where and how to connect the service side of an accepted stream.
pub struct Granted {
    pub url: String,
    pub token: Secret,
}

/// Asks the hub for a stream along `route` and waits for the device's answer; also hands
/// back the request's connection when it can carry the stream's WebSocket next (see
/// [`Reusable`]).
pub(super) async fn request(
    client: &ServiceClient,
    route: &Route,
) -> Result<(Granted, Option<Reusable>), StreamError> {
    let device = || route.target();
    let cs = &client.connection;
    let tls = client
        .connector
        .connect_for_stream(&cs.host.host, cs.host.port)
        .await
        .map_err(|cause| StreamError::Unreachable {
            device: device(),
            cause,
        })?;
    let http_err = |cause| StreamError::Http {
        device: device(),
        cause,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(http_err)?;
    // Without shutdown: once the request is answered the connection comes back idle.
    let driver = tokio::spawn(conn.without_shutdown());

    let request = build_request(client, route)?;
    // The hub answers within the response timeout; allow it a little extra for the network.
    let limit = client.response_timeout + client.connector.timeout;
    let response = tokio::time::timeout(limit, sender.send_request(request))
        .await
        .map_err(|_| StreamError::Timeout {
            device: device(),
            after: limit,
        })?
        .map_err(http_err)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    drop(sender);
    let keep_alive = !headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let reuse = match status == StatusCode::OK && keep_alive {
        true => idle_connection(driver, cs.host.host.clone(), cs.host.port).await,
        false => {
            driver.abort();
            None
        }
    };

    let granted = read_answer(route, status, &headers, &body)?;
    Ok((granted, reuse))
}

/// The stream request, signed with a fresh token.
fn build_request(
    client: &ServiceClient,
    route: &Route,
) -> Result<Request<Empty<Bytes>>, StreamError> {
    let device = || route.target();
    let cs = &client.connection;
    let host = cs.host.to_string();
    let token =
        sas::sign_for(&host, &cs.key, client.token_ttl, Some(&cs.policy)).map_err(|cause| {
            StreamError::Sign {
                device: device(),
                cause,
            }
        })?;
    let secs = |d: Duration| d.as_secs().max(1).to_string();
    let path = match &route.module_id {
        Some(module) => {
            wire::module_stream_request_path(&route.device_id, module, &route.stream_name)
        }
        None => wire::stream_request_path(&route.device_id, &route.stream_name),
    };
    Request::post(path)
        .header(header::HOST, &host)
        .header(header::AUTHORIZATION, token.expose())
        .header(header::CONTENT_LENGTH, "0")
        .header(wire::HEADER_CONNECT_TIMEOUT, secs(client.connect_timeout))
        .header(wire::HEADER_RESPONSE_TIMEOUT, secs(client.response_timeout))
        .body(Empty::<Bytes>::new())
        .map_err(|_| StreamError::Incomplete {
            device: device(),
            missing: "valid request",
        })
}

/// What the hub's answer says: the stream's URL and token, or why there is none.
fn read_answer(
    route: &Route,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Granted, StreamError> {
    let device = || route.target();
    if status != StatusCode::OK {
        return Err(StreamError::Refused {
            device: device(),
            status,
            message: error_message(body),
        });
    }
    let get = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(StreamError::Incomplete {
                device: device(),
                missing: name,
            })
    };
    if !get(HEADER_IS_ACCEPTED)?.eq_ignore_ascii_case("true") {
        // Cleaned again: it is the device's text, and a hub is not trusted to have done so.
        let reason = headers
            .get(REASON_HEADER)
            .and_then(|v| wire::clean_reason(v.as_bytes()));
        return Err(StreamError::Rejected {
            device: device(),
            name: route.stream_name.clone(),
            reason,
        });
    }
    Ok(Granted {
        url: get(HEADER_URL)?,
        token: Secret::new(get(HEADER_AUTH_TOKEN)?),
    })
}

type Driver =
    tokio::task::JoinHandle<hyper::Result<hyper::client::conn::http1::Parts<TokioIo<ClientTls>>>>;

/// The request's connection back from hyper, if it is idle with nothing unread; else
/// `None` and the stream dials its own.
async fn idle_connection(driver: Driver, host: String, port: u16) -> Option<Reusable> {
    // The response is complete and the sender dropped, so hyper hands the connection back
    // at once; the bound only guards against a hub that misbehaves.
    let parts = tokio::time::timeout(Duration::from_secs(1), driver)
        .await
        .ok()?
        .ok()?
        .ok()?;
    parts.read_buf.is_empty().then(|| Reusable {
        host,
        port,
        tls: parts.io.into_inner(),
    })
}

/// The message of the hub's JSON error body (`message`, or Azure's `Message`), else the body.
fn error_message(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = json
        .as_ref()
        .and_then(|j| j.get("message").or_else(|| j.get("Message")))
        .and_then(|m| m.as_str());
    match from_json {
        Some(m) => m.to_string(),
        None if body.is_empty() => "no details given".to_string(),
        None => String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}
