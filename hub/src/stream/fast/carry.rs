//! An open message's stream, from the checks to the relay. It gets what a REST stream
//! request gets — the form checks, a record (exactly one, whatever ends it), the device's
//! state and the hub's limits — and then reaches the device one of two ways:
//! - on one of the device's standby connections: an offer naming the stream, with the
//!   service's first bytes right behind it (read ahead, at most `MAX_EARLY_BYTES`); the
//!   device alone accepts or refuses by name, as ever, and reads those bytes only once it
//!   has accepted;
//! - without one (Microsoft's SDKs, or an empty pool): Azure's MQTT request, and the
//!   device's `/bridges/` WebSocket is paired with the warm connection, which holds the
//!   stream's service token on the service's behalf. The service's bytes wait unread.
//!
//! In cluster mode a device this node does not hold is answered `elsewhere`: the service
//! then asks Azure's way, which reaches the node that holds it.

use std::{sync::Arc, time::Duration};

use device_streams_protocol::fast::{Message as Fast, Route, MAX_EARLY_BYTES};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

use super::standby::Standby;
use crate::{
    activity::Outcome,
    http::ServerWs,
    refusal::Refusal,
    stream::{
        ask::{admit, ask, log_behind, Asked},
        endpoint,
        request::well_formed,
        table::{close_with, Paired},
        Grant, Side, StreamInfo,
    },
    Hub,
};

/// What the service asked for on its warm connection.
pub struct Open {
    pub grant: Grant,
    /// Whether the service agreed to half-close in its upgrade.
    pub half_close: bool,
    pub target: (String, Option<String>),
    pub name: String,
}

const SERVICE_GONE: &str = "the service hung up before the device answered";

/// Carries the stream `open` asks for on the warm connection `svc`, to its end.
pub(crate) async fn carry(hub: Arc<Hub>, svc: ServerWs, open: Open) {
    let Open {
        grant,
        half_close,
        target,
        name,
    } = open;
    if let Err(refusal) = well_formed(&target, &name) {
        return refuse(svc, &refusal).await;
    }
    let device = match &target {
        (d, Some(m)) => format!("{d}/{m}"),
        (d, None) => d.clone(),
    };
    if hub.cluster.get().is_some() && !hub.sessions.is_connected(&device) {
        return say_and_close(svc, Fast::Elsewhere).await;
    }
    let limits = hub.limits();
    let timeouts = (limits.handshake_timeout, limits.handshake_timeout);
    let record = hub.recorder();
    let record = tokio::time::timeout(timeouts.1, record.open(&device, &name, &grant.policy));
    let Ok(mut record) = record.await else {
        return refuse(svc, &log_behind(&device)).await;
    };
    let slot = match admit(&hub, &device, grant) {
        Ok(slot) => slot,
        Err(refusal) => {
            record.end(refusal.outcome, refusal.message.clone());
            return refuse(svc, &refusal).await;
        }
    };
    let info = StreamInfo::pending(slot, record);
    let stream = Stream {
        hub: &hub,
        device: &device,
        name: &name,
        svc_half_close: half_close,
    };
    match hub.fast.standby.take(&device).await {
        Some(standby) => stream.via_standby(svc, standby, info).await,
        None => stream.via_mqtt(svc, info, timeouts).await,
    }
}

/// One fast-path stream past its checks.
struct Stream<'a> {
    hub: &'a Arc<Hub>,
    device: &'a str,
    name: &'a str,
    svc_half_close: bool,
}

impl Stream<'_> {
    /// Offers the stream on a standby connection, passes the service's first bytes on,
    /// and relays once the device accepts.
    async fn via_standby(&self, mut svc: ServerWs, standby: Standby, mut info: StreamInfo) {
        info.record.fast_path(Route::Standby.as_str());
        let mut dev = standby.ws;
        let offer = Fast::Offer {
            stream: self.name.to_string(),
        };
        if send(&mut dev, &offer).await.is_err() {
            // Gone between its last pong and now: nothing reached it, ask Azure's way.
            let limit = self.hub.limits().handshake_timeout;
            return self.via_mqtt(svc, info, (limit, limit)).await;
        }
        let limit = self.hub.limits().handshake_timeout;
        let mut early = 0;
        let answer = verdict(&mut dev, &mut svc, &mut early);
        let answer = tokio::time::timeout(limit, answer).await;
        info.record.early_to_device(early);
        let answer = answer.unwrap_or(Err(Failure::Timeout(limit)));
        match answer {
            Ok(Fast::Accept) => {
                info.record.accepted();
                if send(&mut svc, &Fast::Accepted(Route::Standby))
                    .await
                    .is_err()
                {
                    info.record.end(Outcome::Failed, SERVICE_GONE);
                    return close_with(dev, CloseCode::Normal, SERVICE_GONE).await;
                }
                self.hub.metrics.fast_path(Route::Standby.as_str());
                let half_close = [standby.half_close, self.svc_half_close];
                let paired = Paired {
                    ws: dev,
                    info,
                    half_close,
                };
                endpoint::relay_pair(self.hub, Side::Service, svc, paired).await;
            }
            Ok(Fast::Reject(reason)) => {
                let reason = Some(reason).filter(|r| !r.is_empty());
                let mut msg = format!("device '{}' rejected stream '{}'", self.device, self.name);
                if let Some(r) = &reason {
                    msg = format!("{msg}: {r}");
                }
                info.record.end(Outcome::Rejected, msg);
                say_and_close(svc, Fast::Rejected(reason)).await;
                close_with(dev, CloseCode::Normal, "rejected").await;
            }
            Ok(_) => self.failed(svc, dev, info, Failure::Protocol).await,
            Err(failure) => self.failed(svc, dev, info, failure).await,
        }
    }

    /// The offer came to nothing: the record and the service say why.
    async fn failed(&self, svc: ServerWs, dev: ServerWs, mut info: StreamInfo, why: Failure) {
        let device = self.device;
        let refusal = match why {
            Failure::ServiceGone => {
                info.record.end(Outcome::Failed, SERVICE_GONE);
                return close_with(dev, CloseCode::Normal, SERVICE_GONE).await;
            }
            Failure::Timeout(limit) => Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                Outcome::Timeout,
                format!("device '{device}' did not answer within {limit:?}"),
            ),
            Failure::Device(cause) => Refusal::new(
                StatusCode::BAD_GATEWAY,
                "DeviceStandbyFailed",
                Outcome::Failed,
                format!("device '{device}': {cause}"),
            ),
            Failure::Protocol => Refusal::new(
                StatusCode::BAD_GATEWAY,
                "DeviceStandbyFailed",
                Outcome::Failed,
                format!("device '{device}' answered the offer with something else than accept or reject"),
            ),
        };
        info.record.end(refusal.outcome, refusal.message.clone());
        refuse(svc, &refusal).await;
        close_with(dev, CloseCode::Protocol, "no valid answer").await;
    }

    /// Asks the device Azure's way and pairs its `/bridges/` WebSocket with `svc`.
    async fn via_mqtt(
        &self,
        mut svc: ServerWs,
        mut info: StreamInfo,
        timeouts: (Duration, Duration),
    ) {
        info.record.fast_path(Route::Mqtt.as_str());
        let (hub, device, name) = (self.hub, self.device, self.name);
        match ask(hub, device, name, info, timeouts).await {
            Asked::Accepted {
                id, service_token, ..
            } => {
                if hub.streams.claim(&id, service_token.expose()).is_err() {
                    return close_with(svc, CloseCode::Again, "stream expired").await;
                }
                if self.svc_half_close {
                    hub.streams.agree_half_close(&id, Side::Service);
                }
                if send(&mut svc, &Fast::Accepted(Route::Mqtt)).await.is_err() {
                    // The device's side finds no peer; the connect window ends the record.
                    return;
                }
                hub.metrics.fast_path(Route::Mqtt.as_str());
                endpoint::join_and_relay(hub, &id, Side::Service, svc).await;
            }
            Asked::Rejected(reason) => say_and_close(svc, Fast::Rejected(reason)).await,
            Asked::Refused(refusal) => refuse(svc, &refusal).await,
        }
    }
}

/// Why an offer came to nothing.
enum Failure {
    ServiceGone,
    Timeout(Duration),
    Device(&'static str),
    Protocol,
}

/// Reads the device's answer to an offer; meanwhile passes the service's first bytes on
/// to the device, up to [`MAX_EARLY_BYTES`] (the rest waits for the answer). The device
/// reads them only once it has accepted.
async fn verdict(dev: &mut ServerWs, svc: &mut ServerWs, early: &mut u64) -> Result<Fast, Failure> {
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            next = dev.next() => match next {
                Some(Ok(Message::Text(t))) => return Fast::parse(t.as_str()).map_err(|_| Failure::Protocol),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(_))) => return Err(Failure::Protocol),
                _ => return Err(Failure::Device("its standby connection closed before it answered")),
            },
                        next = svc.next(), if reading && *early < MAX_EARLY_BYTES as u64 => match next {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                                        *early += m.len() as u64;
                    if dev.send(m).await.is_err() {
                        return Err(Failure::Device("its standby connection failed"));
                    }
                }
                // The service's end of data (half-close) goes on, and nothing after it.
                Some(Ok(m @ Message::Ping(_))) if !m.is_empty() => {
                    reading = false;
                    if dev.send(m).await.is_err() {
                        return Err(Failure::Device("its standby connection failed"));
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                _ => return Err(Failure::ServiceGone),
            },
        }
    }
}

async fn send(ws: &mut ServerWs, message: &Fast) -> Result<(), ()> {
    let sent = ws.send(Message::text(message.encode()));
    match tokio::time::timeout(Duration::from_secs(10), sent).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends `message` and closes: the connection's one stream is not to be.
async fn say_and_close(mut ws: ServerWs, message: Fast) {
    if send(&mut ws, &message).await.is_ok() {
        close_with(ws, CloseCode::Normal, "").await;
    }
}

/// Tells the service why not, with the status the REST endpoint would have answered.
async fn refuse(ws: ServerWs, refusal: &Refusal) {
    let message = Fast::Refused {
        status: refusal.status.as_u16(),
        message: refusal.message.clone(),
    };
    say_and_close(ws, message).await;
}
