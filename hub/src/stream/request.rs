//! A service's stream request: `POST /twins/{deviceId}/streams/{streamName}`, or to a
//! module identity `POST /twins/{deviceId}/modules/{moduleId}/streams/{streamName}`.
//!
//! Here the request is authenticated and checked for form; then, for a device held by
//! another cluster node, forwarded there, else asked here ([`super::ask`]). The call
//! blocks until the device accepts or rejects the stream, or the response timeout
//! passes; every refusal is an error status with a JSON body naming the device and the
//! cause.

use std::{sync::Arc, time::Duration};

use device_streams_protocol::wire;
use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{ask::authorized, Grant};
use crate::{
    activity::Outcome,
    auth,
    http::{Body, ConnPermit},
    metrics::AuthKind,
    refusal::Refusal,
    registry::Right,
    Hub,
};

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

/// A stream request to `target`: a device, or a device's module (the hub knows a module
/// as `<device>/<module>`).
pub async fn stream_request(
    hub: Arc<Hub>,
    req: Request<Incoming>,
    target: (String, Option<String>),
    name: String,
) -> Response<Body> {
    let device = match &target {
        (device, Some(module)) => format!("{device}/{module}"),
        (device, None) => device.clone(),
    };
    // Only a request that authenticated and names a well-formed device and stream leaves
    // a record: anyone can send the others, and they must cost no disk (metrics count them).
    let login = match authenticate(&hub, &req, &device)
        .and_then(|l| well_formed(&target, &name).map(|()| l))
    {
        Ok(login) => login,
        Err(refusal) => return refusal.response(),
    };
    let policy = login.policy.clone();
    ConnPermit::authenticated_on(&req);
    let limits = hub.limits();
    let (default, max) = (limits.handshake_timeout, limits.max_stream_timeout);
    let connect_timeout = timeout_header(req.headers(), wire::HEADER_CONNECT_TIMEOUT, default, max);
    let response_timeout =
        timeout_header(req.headers(), wire::HEADER_RESPONSE_TIMEOUT, default, max);
    let timeouts = (connect_timeout, response_timeout);
    // In cluster mode a device held by another node is asked there, which records it.
    let elsewhere = crate::cluster::forward::elsewhere(&hub, &device, &name, &policy, timeouts);
    if let Some(response) = elsewhere.await {
        return response;
    }
    let grant = Grant::new(&login.policy, Some(&login.key));
    authorized(hub, device, name, grant, timeouts).await
}

/// The caller's token and right; returns its policy.
fn authenticate(
    hub: &Hub,
    req: &Request<Incoming>,
    device: &str,
) -> Result<auth::ServiceLogin, Refusal> {
    let header = req.headers().get(header::AUTHORIZATION);
    let header = header.and_then(|v| v.to_str().ok()).unwrap_or("");
    auth::service_login(
        &hub.registry,
        &hub.config.names,
        hub.limits().max_token_lifetime,
        header,
        Right::ServiceConnect,
    )
    .map_err(|e| {
        let refusal = Refusal::from(e);
        if refusal.is_auth_failure() {
            hub.metrics.auth_failure(AuthKind::Service);
        } else {
            tracing::error!(error = %refusal.message, "registry unavailable");
        }
        refusal.about(format_args!("stream request for device '{device}' refused"))
    })
}

/// The device id and stream name are ones a registry and a device could hold.
pub(crate) fn well_formed(
    (device, module): &(String, Option<String>),
    name: &str,
) -> Result<(), Refusal> {
    let bad = StatusCode::BAD_REQUEST;
    if module.as_deref().is_some_and(|m| !wire::valid_device_id(m)) {
        let msg = "the module id is not valid (letters, digits and - . _ : @, at most 128)";
        return Err(Refusal::new(bad, "InvalidModuleId", Outcome::Failed, msg));
    }
    if !wire::valid_device_id(device) {
        let msg = "the device id is not valid (letters, digits and - . _ : @, at most 128)";
        return Err(Refusal::new(bad, "InvalidDeviceId", Outcome::Failed, msg));
    }
    if !wire::valid_stream_name(name) {
        let msg = format!("'{name}' is not a valid stream name (letters, digits, - . _)");
        return Err(Refusal::new(bad, "InvalidStreamName", Outcome::Failed, msg));
    }
    Ok(())
}
