//! Asking the device: a stream request past authentication, for a device (or module)
//! this node holds — the stream's record, the device's state and the hub's limits, the
//! MQTT request and its answer, and the connect window that follows an accept. The REST
//! endpoint ([`super::request`]) ends here for a device of this node, and so does a
//! request another cluster node forwards ([`crate::cluster::forward`]).
//!
//! Accepted and rejected both answer 200 with `iothub-streaming-is-accepted: True|False`,
//! as Azure does; a rejection carries the device's reason, when it gave one, in
//! [`REASON_HEADER`], which Azure's clients ignore.

use std::{sync::Arc, time::Duration};

use device_streams_protocol::{
    wire::{self, HEADER_AUTH_TOKEN, HEADER_IS_ACCEPTED, HEADER_URL, REASON_HEADER},
    Secret,
};
use http::{HeaderValue, Response, StatusCode};

use super::{record::StreamRecord, table::StreamInfo, Grant, Streams};
use crate::{
    activity::Outcome,
    http::{text, Body},
    refusal::Refusal,
    Hub,
};

/// Removes a pending stream if the request ends before the device accepted it
/// (including the service hanging up mid-wait, which drops this handler); the stream's
/// record then says so as it drops.
struct PendingGuard<'a> {
    streams: &'a Streams,
    id: String,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.streams.remove(&self.id);
        }
    }
}

/// A stream request past authentication, for a device this node may hold: its record,
/// the checks, and asking the device. Other nodes' forwarded requests start here.
pub(crate) async fn authorized(
    hub: Arc<Hub>,
    device: String,
    name: String,
    grant: Grant,
    timeouts: (Duration, Duration),
) -> Response<Body> {
    let response_timeout = timeouts.1;
    let open = hub.recorder();
    let open = open.open(&device, &name, &grant.policy);
    let Ok(record) = tokio::time::timeout(response_timeout, open).await else {
        return log_behind(&device).response();
    };
    let slot = match admit(&hub, &device, grant) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(record, refusal),
    };
    ask_device(
        &hub,
        &device,
        &name,
        StreamInfo::pending(slot, record),
        timeouts,
    )
    .await
}

/// Publishes the stream request into the device's session and answers with what the
/// device said: accepted (the stream's URL and the service's token), rejected (with the
/// device's reason, when it gave one), or a refusal when it did not answer.
async fn ask_device(
    hub: &Arc<Hub>,
    device: &str,
    name: &str,
    info: StreamInfo,
    timeouts: (Duration, Duration),
) -> Response<Body> {
    let mut resp = match ask(hub, device, name, info, timeouts).await {
        Asked::Accepted {
            url, service_token, ..
        } => accepted(&url, service_token.expose()),
        Asked::Rejected(reason) => rejected(reason.as_deref()),
        Asked::Refused(refusal) => refusal.response(),
    };
    super::fast::advertise(hub, resp.headers_mut());
    resp
}

/// What came of asking the device over MQTT. The stream's record is ended unless the
/// device accepted.
pub(crate) enum Asked {
    /// The stream awaits its two sides at `url` (stream `id`); the service side's token.
    Accepted {
        id: String,
        url: String,
        service_token: Secret,
    },
    /// The device said no, with its reason (cleaned) when it gave one.
    Rejected(Option<String>),
    /// The device did not answer, or could not be asked.
    Refused(Refusal),
}

/// Registers the stream, publishes its request into the device's session and waits for
/// the answer; an accepted stream's connect window starts (see [`reap`]).
pub(crate) async fn ask(
    hub: &Arc<Hub>,
    device: &str,
    name: &str,
    info: StreamInfo,
    (connect_timeout, response_timeout): (Duration, Duration),
) -> Asked {
    let id = info.id.clone();
    let url = format!("{}{}{id}", hub.config.streaming_base, wire::BRIDGES_PREFIX);
    let (device_token, service_token) = hub.streams.create(info);
    let mut guard = PendingGuard {
        streams: &hub.streams,
        id: id.clone(),
        armed: true,
    };
    let topic = |rid: &str| wire::stream_request_topic(name, rid, &url, &device_token);
    match hub.sessions.request(device, topic, response_timeout).await {
        Ok(answer) if answer.status == wire::ACCEPT => {
            guard.armed = false;
            hub.streams.mark_accepted(&id);
            hub.tracker
                .spawn(reap(hub.clone(), id.clone(), connect_timeout));
            Asked::Accepted {
                id,
                url,
                service_token,
            }
        }
        Ok(answer) => {
            if let Some(mut info) = hub.streams.remove(&id) {
                let status = answer.status;
                let mut msg =
                    format!("device '{device}' rejected stream '{name}' (status {status})");
                if let Some(r) = &answer.reason {
                    msg = format!("{msg}: {r}");
                }
                info.record.end(Outcome::Rejected, msg);
            }
            Asked::Rejected(answer.reason)
        }
        Err(e) => {
            let refusal = Refusal::from(e);
            if let Some(mut info) = hub.streams.remove(&id) {
                info.record.end(refusal.outcome, refusal.message.clone());
            }
            Asked::Refused(refusal)
        }
    }
}

/// Ends `record` with `refusal` and answers with it.
fn refuse(mut record: StreamRecord, refusal: Refusal) -> Response<Body> {
    let response = refusal.response();
    record.end(refusal.outcome, refusal.message);
    response
}

/// The activity log could not take the stream's record within its response timeout.
pub(crate) fn log_behind(device: &str) -> Refusal {
    let msg =
        format!("stream to device '{device}' refused: the hub's activity log is behind; try again");
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    Refusal::new(unavailable, "ServerBusy", Outcome::Limited, msg)
}

/// Every check between a well-formed, authenticated request and asking the device: the
/// device's state and the hub's limits. Returns the stream's place under the limits.
pub(crate) fn admit(hub: &Hub, device: &str, grant: Grant) -> Result<super::Slot, Refusal> {
    match hub.registry.identity_enabled(device)? {
        Some(true) => {}
        Some(false) => {
            let msg = format!("device '{device}' is disabled");
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "DeviceDisabled",
                Outcome::Unauthorized,
                msg,
            ));
        }
        None => {
            let msg = format!("device '{device}' is not registered on this hub");
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "DeviceNotFound",
                Outcome::DeviceOffline,
                msg,
            ));
        }
    }
    if !hub.sessions.is_connected(device) {
        return Err(crate::sessions::RequestError::NotConnected(device.to_string()).into());
    }
    let refused = format!("stream to device '{device}' refused");
    if !hub.new_streams.try_acquire() {
        let msg = format!(
            "the hub's limit of {} new streams per second is reached",
            hub.new_streams.per_second()
        );
        let limited = StatusCode::TOO_MANY_REQUESTS;
        let refusal = Refusal::new(limited, "ThrottlingException", Outcome::Limited, msg);
        return Err(refusal.about(refused));
    }
    hub.streams
        .reserve(device, grant)
        .map_err(|e| Refusal::from(e).about(refused))
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

/// `reason` is already cleaned (no control characters), so it is a valid header value;
/// UTF-8 beyond ASCII goes as its bytes, which our client reads back as UTF-8.
fn rejected(reason: Option<&str>) -> Response<Body> {
    let mut resp = text(StatusCode::OK, "");
    let h = resp.headers_mut();
    h.insert(HEADER_IS_ACCEPTED, HeaderValue::from_static("False"));
    if let Some(value) = reason.and_then(|r| HeaderValue::from_bytes(r.as_bytes()).ok()) {
        h.insert(REASON_HEADER, value);
    }
    resp
}

/// Ends an accepted stream's connect window: whoever has not connected by then never will.
pub(crate) async fn reap(hub: Arc<Hub>, id: String, window: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(window) => {}
        _ = hub.shutdown.cancelled() => {}
    }
    if let Some(mut info) = hub.streams.remove(&id) {
        let msg = format!("both sides did not connect to the streaming endpoint within {window:?}");
        info.record.end(Outcome::Timeout, msg);
    }
}
