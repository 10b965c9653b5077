//! The service-facing REST API: `POST /twins/{deviceId}/streams/{streamName}`.
//!
//! The call blocks until the device accepts or rejects the stream, or the response
//! timeout passes. Accepted and rejected both answer 200 with
//! `iothub-streaming-is-accepted: True|False`, as Azure does; everything else is an error
//! status with a JSON body naming the device and the cause.

use std::{sync::Arc, time::Duration};

use device_streams_protocol::wire::{self, HEADER_AUTH_TOKEN, HEADER_IS_ACCEPTED, HEADER_URL};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::{
    activity::{Outcome, Record},
    auth::{self, AuthError},
    http::{error, text, Body},
    metrics::AuthKind,
    registry::Right,
    sessions::RequestError,
    streaming::{Slot, StreamInfo, Streams},
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

/// A timeout header's value in seconds, else `default`; at least 1 s, at most `max`.
fn timeout_header(headers: &HeaderMap, name: &str, default: Duration, max: Duration) -> Duration {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
        .clamp(Duration::from_secs(1), max.max(Duration::from_secs(1)))
}

pub async fn stream_request(
    hub: Arc<Hub>,
    req: Request<Incoming>,
    device: String,
    name: String,
) -> Response<Body> {
    let (policy, slot) = match admit(&hub, &req, &device, &name) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let refuse = |status, code, outcome, msg: String| {
        hub.record(&Record::request(&device, &name, &policy, outcome, &msg));
        error(status, code, msg)
    };
    let limits = &hub.config.limits;
    let (default, max) = (limits.handshake_timeout, limits.max_stream_timeout);
    let connect_timeout = timeout_header(req.headers(), wire::HEADER_CONNECT_TIMEOUT, default, max);
    let response_timeout =
        timeout_header(req.headers(), wire::HEADER_RESPONSE_TIMEOUT, default, max);

    let id = Streams::new_id();
    let url = format!("{}{}{id}", hub.config.streaming_base, wire::BRIDGES_PREFIX);
    let info = StreamInfo {
        id: id.clone(),
        device: device.clone(),
        name: name.clone(),
        policy: policy.clone(),
        requested_at: std::time::Instant::now(),
        accepted_at: None,
        slot,
    };
    let (device_token, service_token) = hub.streams.create(info);
    let mut guard = PendingGuard {
        hub: &hub,
        id: id.clone(),
        armed: true,
    };
    let topic = |rid: &str| wire::stream_request_topic(&name, rid, &url, &device_token);
    let answer = hub.sessions.request(&device, topic, response_timeout).await;
    let (status, code, outcome, e) = match answer {
        Ok(wire::ACCEPT) => {
            guard.armed = false;
            hub.streams.mark_accepted(&id);
            hub.tracker.spawn(reap(hub.clone(), id, connect_timeout));
            return accepted(&url, service_token.expose());
        }
        Ok(status) => {
            let msg = format!("device '{device}' rejected stream '{name}' (status {status})");
            hub.record(&Record::request(
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
    refuse(status, code, outcome, e.to_string())
}

/// Every check before the device is asked: the caller's token and right, the stream
/// name, the device's state, and the hub's limits. Returns the policy and a stream slot.
fn admit(
    hub: &Hub,
    req: &Request<Incoming>,
    device: &str,
    name: &str,
) -> Result<(String, Slot), Box<Response<Body>>> {
    let header = req.headers().get(header::AUTHORIZATION);
    let header = header.and_then(|v| v.to_str().ok()).unwrap_or("");
    let policy = match auth::service(
        &hub.registry,
        &hub.config.hostname,
        header,
        Right::ServiceConnect,
    ) {
        Ok(policy) => policy,
        Err(AuthError::Registry(e)) => {
            tracing::error!(error = %e, "registry unavailable");
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "RegistryUnavailable",
                e.to_string(),
            )));
        }
        Err(e) => {
            hub.metrics.auth_failure(AuthKind::Service);
            let msg = format!("stream request for device '{device}' refused: {e}");
            hub.record(&Record::request(
                device,
                name,
                "",
                Outcome::Unauthorized,
                &msg,
            ));
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                msg,
            )));
        }
    };
    let refuse = |status, code, outcome, msg: String| {
        hub.record(&Record::request(device, name, &policy, outcome, &msg));
        Err(Box::new(error(status, code, msg)))
    };
    if !wire::valid_stream_name(name) {
        let msg = format!("'{name}' is not a valid stream name (letters, digits, - . _)");
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidStreamName",
            Outcome::Failed,
            msg,
        );
    }
    match hub.registry.device(device) {
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
            let msg = e.to_string();
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "RegistryUnavailable",
                Outcome::Failed,
                msg,
            );
        }
    }
    if !hub.sessions.is_connected(device) {
        let msg = format!("device '{device}' is not connected to the hub");
        return refuse(
            StatusCode::NOT_FOUND,
            "DeviceNotOnline",
            Outcome::DeviceOffline,
            msg,
        );
    }
    if !hub.new_streams.try_acquire() {
        let msg = format!(
            "stream to device '{device}' refused: the hub's limit of {} new streams per second is reached",
            hub.new_streams.per_second()
        );
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            Outcome::Limited,
            msg,
        );
    }
    match hub.streams.reserve(device) {
        Ok(slot) => Ok((policy, slot)),
        Err(e) => {
            let msg = format!("stream to device '{device}' refused: {e}");
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                Outcome::Limited,
                msg,
            )
        }
    }
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
        let record = Record::request(
            &info.device,
            &info.name,
            &info.policy,
            Outcome::Timeout,
            &msg,
        );
        hub.record(&record);
    }
}
