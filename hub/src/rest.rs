//! The service-facing REST API: `POST /twins/{deviceId}/streams/{streamName}`.
//!
//! The call blocks until the device accepts or rejects the stream, or the response
//! timeout passes. Accepted and rejected both answer 200 with
//! `iothub-streaming-is-accepted: True|False`, as Azure does; everything else is an error
//! status with a JSON body naming the device and the cause.

use std::{sync::Arc, time::Duration};

use device_streams_common::protocol::{self, HEADER_AUTH_TOKEN, HEADER_IS_ACCEPTED, HEADER_URL};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::{
    activity::{self, Outcome, Record},
    auth::{self, AuthError},
    http::{error, text, Body},
    registry::Right,
    sessions::RequestError,
    streaming::{StreamInfo, Streams},
    Hub,
};

/// Removes a pending stream if the request ends before the device accepted it
/// (including the service hanging up mid-wait, which drops this handler).
struct PendingGuard<'a> {
    hub: &'a Hub,
    id: String,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.streams.remove(&self.id);
        }
    }
}

fn timeout_header(headers: &HeaderMap, name: &str, max: Duration) -> Duration {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(protocol::DEFAULT_TIMEOUT)
        .clamp(Duration::from_secs(1), max)
}

pub async fn stream_request(
    hub: Arc<Hub>,
    req: Request<Incoming>,
    device: String,
    name: String,
) -> Response<Body> {
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let policy = match auth::service(
        &hub.registry,
        &hub.config.hostname,
        auth_header,
        Right::ServiceConnect,
    ) {
        Ok(policy) => policy,
        Err(AuthError::Registry(e)) => {
            tracing::error!(error = %e, "registry unavailable");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "RegistryUnavailable",
                e.to_string(),
            );
        }
        Err(e) => {
            let msg = format!("stream request for device '{device}' refused: {e}");
            activity::record(&Record::request(
                &device,
                &name,
                "",
                Outcome::Unauthorized,
                &msg,
            ));
            return error(StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess", msg);
        }
    };
    let refuse = |status, code, outcome, msg: String| {
        activity::record(&Record::request(&device, &name, &policy, outcome, &msg));
        error(status, code, msg)
    };
    if !protocol::valid_stream_name(&name) {
        let msg = format!("'{name}' is not a valid stream name (letters, digits, - . _)");
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidStreamName",
            Outcome::Failed,
            msg,
        );
    }
    match hub.registry.device(&device) {
        Ok(Some(d)) if d.enabled => {}
        Ok(Some(_)) => {
            let msg = format!("device '{device}' is disabled");
            return refuse(
                StatusCode::FORBIDDEN,
                "DeviceDisabled",
                Outcome::Unauthorized,
                msg,
            );
        }
        Ok(None) => {
            let msg = format!("device '{device}' is not registered on this hub");
            return refuse(
                StatusCode::NOT_FOUND,
                "DeviceNotFound",
                Outcome::DeviceOffline,
                msg,
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "RegistryUnavailable",
                e.to_string(),
            )
        }
    }
    if !hub.sessions.is_connected(&device) {
        let msg = format!("device '{device}' is not connected to the hub");
        return refuse(
            StatusCode::NOT_FOUND,
            "DeviceNotOnline",
            Outcome::DeviceOffline,
            msg,
        );
    }
    let slot = match hub.streams.reserve(&device) {
        Ok(slot) => slot,
        Err(e) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                Outcome::Limited,
                e.to_string(),
            )
        }
    };
    let max = hub.config.limits.max_stream_timeout;
    let connect_timeout = timeout_header(req.headers(), protocol::HEADER_CONNECT_TIMEOUT, max);
    let response_timeout = timeout_header(req.headers(), protocol::HEADER_RESPONSE_TIMEOUT, max);

    let id = Streams::new_id();
    let url = format!(
        "{}{}{id}",
        hub.config.streaming_base,
        protocol::BRIDGES_PREFIX
    );
    let requested_at = std::time::Instant::now();
    let info = StreamInfo {
        id: id.clone(),
        device: device.clone(),
        name: name.clone(),
        policy: policy.clone(),
        requested_at,
        accepted_at: None,
        slot,
    };
    let (device_token, service_token) = hub.streams.create(info);
    let mut guard = PendingGuard {
        hub: &hub,
        id: id.clone(),
        armed: true,
    };
    let topic = |rid: &str| protocol::stream_request_topic(&name, rid, &url, &device_token);
    let (status, code, outcome, msg) =
        match hub.sessions.request(&device, topic, response_timeout).await {
            Ok(protocol::ACCEPT) => {
                guard.armed = false;
                hub.streams.mark_accepted(&id);
                hub.tracker.spawn(reap(hub.clone(), id, connect_timeout));
                return accepted(&url, service_token.expose());
            }
            Ok(status) => {
                let msg = format!("device '{device}' rejected stream '{name}' (status {status})");
                activity::record(&Record::request(
                    &device,
                    &name,
                    &policy,
                    Outcome::Rejected,
                    &msg,
                ));
                return rejected();
            }
            Err(e @ RequestError::Timeout(..)) => (
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                Outcome::Timeout,
                e,
            ),
            Err(e @ RequestError::Busy(_)) => (
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                Outcome::Limited,
                e,
            ),
            Err(e) => (
                StatusCode::NOT_FOUND,
                "DeviceNotOnline",
                Outcome::DeviceOffline,
                e,
            ),
        };
    refuse(status, code, outcome, msg.to_string())
}

fn accepted(url: &str, token: &str) -> Response<Body> {
    let mut resp = text(StatusCode::OK, "");
    let h = resp.headers_mut();
    h.insert(HEADER_IS_ACCEPTED, HeaderValue::from_static("True"));
    if let (Ok(u), Ok(t)) = (HeaderValue::from_str(url), HeaderValue::from_str(token)) {
        h.insert(HEADER_URL, u);
        h.insert(HEADER_AUTH_TOKEN, t);
    }
    resp
}

fn rejected() -> Response<Body> {
    let mut resp = text(StatusCode::OK, "");
    resp.headers_mut()
        .insert(HEADER_IS_ACCEPTED, HeaderValue::from_static("False"));
    resp
}

/// Ends an accepted stream's connect window: whoever has not connected by then never will.
async fn reap(hub: Arc<Hub>, id: String, window: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(window) => {}
        _ = hub.shutdown.cancelled() => {}
    }
    if let Some(info) = hub.streams.remove(&id) {
        let msg = format!("both sides did not connect to the streaming endpoint within {window:?}");
        activity::record(&Record::request(
            &info.device,
            &info.name,
            &info.policy,
            Outcome::Timeout,
            &msg,
        ));
    }
}
