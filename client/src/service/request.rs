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

/// Why a stream could not be opened. Every variant names the device; match on
/// [`StreamError::kind`] to act on the cause (retry later, tell the user the device is
/// offline, ...) without depending on every variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The hub could not be dialed (TCP, HTTP proxy or TLS).
    #[error("cannot reach the hub for device {device}: {cause}")]
    Unreachable {
        /// The device the stream was for.
        device: String,
        /// What failed while dialing.
        cause: DialError,
    },
    /// The stream request failed at the HTTP level (the connection broke, a malformed answer).
    #[error("stream request for device {device} failed: {}", with_causes(.cause))]
    Http {
        /// The device the stream was for.
        device: String,
        /// hyper's error.
        cause: hyper::Error,
    },
    /// No SAS token could be signed with the connection string's key.
    #[error("cannot sign a token for device {device}: {cause}")]
    Sign {
        /// The device the stream was for.
        device: String,
        /// Why signing failed.
        cause: SasError,
    },
    /// The hub answered with an error status: the device is offline or unknown (404),
    /// the policy is not authorised (401, 403), a limit is reached (429, 503), the device
    /// did not answer in time (504). [`StreamError::kind`] sorts these out.
    #[error("hub refused the stream to device {device}: {status}: {message}")]
    Refused {
        /// The device the stream was for.
        device: String,
        /// The hub's HTTP status.
        status: StatusCode,
        /// The hub's message (its JSON error's `message`, or the body).
        message: String,
    },
    /// The device program rejected the stream.
    #[error("device {device} rejected stream '{name}'{}", rejection(.reason))]
    Rejected {
        /// The device that rejected it.
        device: String,
        /// The stream name asked for.
        name: String,
        /// The device's reason, as the hub passed it on; `None` from Azure.
        reason: Option<String>,
    },
    /// The hub did not answer within the response timeout (plus the connect timeout).
    #[error("no answer from the hub about device {device} within {after:?}")]
    Timeout {
        /// The device the stream was for.
        device: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The hub accepted the stream but its answer lacked a header the stream needs.
    #[error("hub accepted the stream to device {device} but sent no {0} header", .missing)]
    Incomplete {
        /// The device the stream was for.
        device: String,
        /// The missing header.
        missing: &'static str,
    },
    /// Reading the local side's first bytes, to send them ahead on the fast path, failed.
    #[error("stream to device {device}: reading the local connection failed: {cause}")]
    Local {
        /// The device the stream was for.
        device: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The device accepted, but the stream's WebSocket could not be opened.
    #[error("cannot open the stream to device {device}: {cause}")]
    WebSocket {
        /// The device the stream was for.
        device: String,
        /// What failed.
        cause: WsError,
    },
}

/// What a [`StreamError`] comes down to, for a program that acts on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamErrorKind {
    /// The device is not connected to the hub, or the hub does not know it.
    Offline,
    /// The device program said no ([`StreamError::Rejected`] holds its reason).
    Rejected,
    /// The hub does not accept the connection string's policy or key for this, or the
    /// device is disabled.
    Unauthorized,
    /// A limit of the hub's is reached (streams per second, concurrent streams, load);
    /// trying again later may work.
    Limited,
    /// Nobody answered in time: the hub, or the device through the hub.
    TimedOut,
    /// The hub could not be reached, or the connection to it failed.
    Unreachable,
    /// Anything else (a malformed request or answer).
    Other,
}

impl StreamError {
    /// The device the stream was for.
    pub fn device(&self) -> &str {
        match self {
            StreamError::Unreachable { device, .. }
            | StreamError::Http { device, .. }
            | StreamError::Sign { device, .. }
            | StreamError::Refused { device, .. }
            | StreamError::Rejected { device, .. }
            | StreamError::Timeout { device, .. }
            | StreamError::Incomplete { device, .. }
            | StreamError::Local { device, .. }
            | StreamError::WebSocket { device, .. } => device,
        }
    }

    /// What the error comes down to: offline, rejected, unauthorised, limited, timed out...
    ///
    /// ```
    /// use device_streams::{device::Status, DeviceClient, Route, ServiceClient};
    /// use device_streams::{StreamError, StreamErrorKind};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main] async fn main() -> anyhow::Result<()> {
    /// # let hub = e2e::System::start().await; // a real hub, in-process
    /// # let (device_connection_string, service_connection_string, ca) =
    /// #     (hub.add_device("dev1"), hub.service_connection(), hub.ca_file());
    /// # let _never_connects = hub.add_device("dev2");
    /// // A device that says no to everything, with a reason.
    /// let shutdown = CancellationToken::new();
    /// let device = DeviceClient::builder(device_connection_string).ca_file(&ca).build()?;
    /// let mut incoming = device.start(shutdown.clone());
    /// incoming.status().wait_for(|s| *s == Status::Connected).await?;
    /// tokio::spawn(async move {
    ///     while let Some(request) = incoming.next().await {
    ///         request.reject("under maintenance").await;
    ///     }
    /// });
    ///
    /// let service = ServiceClient::builder(service_connection_string).ca_file(&ca).build()?;
    /// let Err(e) = service.open(&Route::new("dev1", "ssh")).await else { panic!("accepted") };
    /// assert_eq!(e.kind(), StreamErrorKind::Rejected);
    /// assert!(matches!(&e, StreamError::Rejected { reason: Some(r), .. } if r == "under maintenance"));
    ///
    /// // dev2 is registered but not connected.
    /// let Err(e) = service.open(&Route::new("dev2", "ssh")).await else { panic!("accepted") };
    /// assert_eq!((e.kind(), e.device()), (StreamErrorKind::Offline, "dev2"));
    /// # shutdown.cancel();
    /// # Ok(()) }
    /// ```
    pub fn kind(&self) -> StreamErrorKind {
        use StreamErrorKind as Kind;
        match self {
            StreamError::Rejected { .. } => Kind::Rejected,
            StreamError::Timeout { .. } => Kind::TimedOut,
            StreamError::Refused { status, .. } => match *status {
                StatusCode::NOT_FOUND => Kind::Offline,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Kind::Unauthorized,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Kind::Limited,
                StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => Kind::TimedOut,
                _ => Kind::Other,
            },
            StreamError::Unreachable { cause, .. } => match cause {
                DialError::ConnectTimeout { .. } | DialError::HandshakeTimeout { .. } => {
                    Kind::TimedOut
                }
                _ => Kind::Unreachable,
            },
            StreamError::Http { .. } => Kind::Unreachable,
            StreamError::WebSocket { cause, .. } => match cause {
                WsError::Timeout { .. } => Kind::TimedOut,
                WsError::Refused { status: 401, .. } => Kind::Unauthorized,
                WsError::Dial(_) | WsError::Handshake { .. } => Kind::Unreachable,
                _ => Kind::Other,
            },
            StreamError::Sign { .. }
            | StreamError::Incomplete { .. }
            | StreamError::Local { .. } => Kind::Other,
        }
    }
}

/// Where and how to connect the service side of an accepted stream: what
/// [`ServiceClient::request`] returns for a program that opens the WebSocket itself.
#[non_exhaustive]
pub struct Granted {
    /// The stream's `wss://` URL on the streaming endpoint.
    pub url: String,
    /// The one-time token that opens it (as `Authorization: Bearer`).
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
    if let Some(warm) = &client.warm {
        warm.hub_says(headers.contains_key(device_streams_protocol::fast::FAST_HEADER));
    }
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
