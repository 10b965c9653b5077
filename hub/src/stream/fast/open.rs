//! Services' warm connections: `GET /$x-device-streams/open` with the service's SAS
//! token (a policy with the `service-connect` right), upgraded to a WebSocket that waits,
//! pinged, for one open message, then becomes that stream's service side ([`super::carry`]).
//!
//! A warm connection is bound to what authenticated it: it ends at its token's expiry,
//! and when its policy is deleted or the key that signed the token is replaced (it holds
//! the grant as a stream does: [`crate::stream::table::GrantHold`]). It carries one
//! stream, then closes.

use std::sync::Arc;

use device_streams_protocol::{
    fast::{Message as Fast, MAX_CONTROL_MESSAGE},
    sas::SasToken,
};
use http::{header, Request, Response};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use tracing::Instrument;

use super::{carry, idle, Place};
use crate::{
    auth,
    http::{accept_upgrade, Body, ConnPermit, Upgrade},
    metrics::AuthKind,
    refusal::Refusal,
    registry::Right,
    stream::{endpoint, table::close_with, table::GrantHold, Grant},
    Hub,
};

/// What a warm connection was admitted with.
struct Admitted {
    grant: Grant,
    hold: GrantHold,
    place: Place,
    expiry: u64,
}

/// Answers a warm connection's upgrade: authenticates it, takes its places, upgrades.
pub fn upgrade(hub: Arc<Hub>, mut req: Request<Incoming>) -> Response<Body> {
    if !super::enabled(&hub) {
        return super::off(req.uri().path());
    }
    let (mut resp, on_upgrade) = match accept_upgrade(&mut req, None) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    let admitted = match admit(&hub, &req) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    ConnPermit::authenticated_on(&req);
    let half_close = endpoint::offer_half_close(&hub, req.headers(), resp.headers_mut());
    let span = tracing::info_span!("warm", policy = %admitted.grant.policy);
    let task = serve(hub.clone(), admitted, on_upgrade, half_close);
    hub.tracker.spawn(task.instrument(span));
    resp
}

/// The checks before the upgrade: the token and its right, the caps.
fn admit(hub: &Hub, req: &Request<Incoming>) -> Result<Admitted, Refusal> {
    let token = req.headers().get(header::AUTHORIZATION);
    let token = token.and_then(|v| v.to_str().ok()).unwrap_or("");
    let limits = hub.limits();
    let names = &hub.config.names;
    let right = Right::ServiceConnect;
    let login = auth::service_login(
        &hub.registry,
        names,
        limits.max_token_lifetime,
        token,
        right,
    )
    .map_err(|e| {
        let refusal = Refusal::from(e);
        if refusal.is_auth_failure() {
            hub.metrics.auth_failure(AuthKind::Service);
        }
        refusal.about("warm connection refused")
    })?;
    // Parsed again only for its expiry: service_login has checked it.
    let expiry = SasToken::parse(token).map_or(0, |t| t.expiry);
    let place = hub.fast.warm_place(&login.policy, &limits)?;
    let grant = Grant::new(&login.policy, Some(&login.key));
    Ok(Admitted {
        hold: hub.streams.hold_grant(grant.clone()),
        grant,
        place,
        expiry,
    })
}

/// Why a warm connection stopped waiting.
enum Stop {
    Withdrawn,
    Expired,
    Shutdown,
}

/// Waits for the open message, then carries its stream.
async fn serve(hub: Arc<Hub>, admitted: Admitted, on_upgrade: Upgrade, half_close: bool) {
    let Admitted {
        grant,
        hold,
        place,
        expiry,
    } = admitted;
    let Some(mut ws) = idle::upgrade(&hub, on_upgrade).await else {
        return;
    };
    let stop = async {
        tokio::select! {
            () = hold.withdrawn().cancelled() => Stop::Withdrawn,
            () = idle::expired(expiry) => Stop::Expired,
            () = hub.shutdown.cancelled() => Stop::Shutdown,
        }
    };
    let woke = idle::wait(&mut ws, endpoint::ping_interval(&hub), stop).await;
    drop(place);
    let text = match woke {
        idle::Woke::Message(Message::Text(text)) if text.len() <= MAX_CONTROL_MESSAGE => text,
        idle::Woke::Message(_) => {
            let why = "expected an open message";
            return close_with(ws, CloseCode::Protocol, why).await;
        }
        idle::Woke::Gone(why) => return tracing::debug!("warm connection ended: {why}"),
        idle::Woke::Stopped(stop) => {
            let (code, why) = match stop {
                Stop::Withdrawn => (CloseCode::Policy, "grant withdrawn"),
                Stop::Expired => (CloseCode::Policy, "token expired"),
                Stop::Shutdown => (CloseCode::Away, "hub shutdown"),
            };
            return close_with(ws, code, why).await;
        }
    };
    match Fast::parse(text.as_str()) {
        Ok(Fast::Open {
            device,
            module,
            stream,
        }) => {
            drop(hold); // the stream holds the grant from here (its slot)
            let open = carry::Open {
                grant,
                half_close,
                target: (device, module),
                name: stream,
            };
            carry::carry(hub, ws, open).await;
        }
        _ => close_with(ws, CloseCode::Protocol, "expected an open message").await,
    }
}
