//! Devices' standby connections: `GET /$x-device-streams/standby/<device>[/<module>]`
//! with the device's (or module's) SAS token, upgraded to a WebSocket the hub can hand a
//! stream to with one offer ([`super::carry`]).
//!
//! A standby connection lives under the device's control session on this node: it is
//! refused unless that session is here and signed in with the same key, and it ends when
//! the session does — so revoking the device, rotating its key, a newer session or the
//! hub's shutdown cut it exactly as they cut the session. It also ends at its token's
//! expiry, when it falls silent, and when the device closes it. Each carries at most one
//! stream: taking it out of the pool is the only way to a stream.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use device_streams_protocol::Secret;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{idle, Place};
use crate::{
    activity::Outcome,
    auth,
    http::{accept_upgrade, Body, ConnPermit, ServerWs, Upgrade},
    metrics::AuthKind,
    refusal::Refusal,
    registry::split_identity,
    stream::{endpoint, table::close_with},
    x509::PeerCerts,
    Hub,
};

/// A standby connection handed over for a stream.
pub struct Standby {
    pub ws: ServerWs,
    /// Whether the device agreed to half-close in its upgrade.
    pub half_close: bool,
}

type Give = oneshot::Sender<Standby>;

struct Entry {
    id: u64,
    take: oneshot::Sender<Give>,
}

/// The standby connections waiting, by identity (`device` or `device/module`), oldest first.
#[derive(Default)]
pub struct Pool {
    entries: Mutex<HashMap<String, VecDeque<Entry>>>,
    next: AtomicU64,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place in the pool for one more connection of `identity`, unless it holds `max`.
    fn add(&self, identity: &str, max: usize) -> Option<(u64, oneshot::Receiver<Give>)> {
        let mut entries = self.lock();
        let queue = entries.entry(identity.to_string()).or_default();
        if queue.len() >= max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (take, rx) = oneshot::channel();
        queue.push_back(Entry { id, take });
        Some((id, rx))
    }

    fn remove(&self, identity: &str, id: u64) {
        let mut entries = self.lock();
        if let Some(queue) = entries.get_mut(identity) {
            queue.retain(|e| e.id != id);
            if queue.is_empty() {
                entries.remove(identity);
            }
        }
    }

    /// How many standby connections `identity` holds now.
    pub fn count(&self, identity: &str) -> usize {
        self.lock().get(identity).map_or(0, VecDeque::len)
    }

    /// Takes one of `identity`'s standby connections out of the pool, if it has a live one.
    pub async fn take(&self, identity: &str) -> Option<Standby> {
        loop {
            let entry = {
                let mut entries = self.lock();
                let queue = entries.get_mut(identity)?;
                let entry = queue.pop_front();
                if queue.is_empty() {
                    entries.remove(identity);
                }
                entry?
            };
            let (give, taken) = oneshot::channel();
            // A connection that ended just now has dropped its end: try the next one.
            if entry.take.send(give).is_ok() {
                if let Ok(standby) = taken.await {
                    return Some(standby);
                }
            }
        }
    }
}

/// Takes the connection's entry out of the pool when its task ends, however it ends.
struct Listed<'a> {
    pool: &'a Pool,
    identity: &'a str,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.pool.remove(self.identity, self.id);
    }
}

/// What a standby connection was admitted with.
struct Admitted {
    identity: String,
    session: CancellationToken,
    expiry: u64,
    place: Place,
    id: u64,
    taken: oneshot::Receiver<Give>,
}

/// Answers a standby upgrade: authenticates it, binds it to the device's control
/// session, takes its places, upgrades.
pub fn upgrade(
    hub: Arc<Hub>,
    mut req: Request<Incoming>,
    (device, module): (String, Option<String>),
) -> Response<Body> {
    if !super::enabled(&hub) {
        return super::off(req.uri().path());
    }
    let identity = match &module {
        Some(m) => format!("{device}/{m}"),
        None => device.clone(),
    };
    // The upgrade is checked first: once admitted, the connection is in the pool.
    let (mut resp, on_upgrade) = match accept_upgrade(&mut req, None) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    let admitted = match admit(&hub, &req, identity) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    ConnPermit::authenticated_on(&req);
    let half_close = endpoint::offer_half_close(&hub, req.headers(), resp.headers_mut());
    let span = tracing::info_span!("standby", device = %admitted.identity);
    let task = serve(hub.clone(), admitted, on_upgrade, half_close);
    hub.tracker.spawn(task.instrument(span));
    resp
}

/// The checks before the upgrade: the credential, the control session, the caps.
fn admit(hub: &Hub, req: &Request<Incoming>, identity: String) -> Result<Admitted, Refusal> {
    let refused = || format!("standby connection for device '{identity}' refused");
    let (credential, expiry) = credential(hub, req, &identity).map_err(|e| e.about(refused()))?;
    let limits = hub.limits();
    let session = session_of(hub, &identity, &credential)?;
    let place = hub
        .fast
        .place(limits.max_idle_fast)
        .ok_or_else(|| super::busy(limits.max_idle_fast))?;
    let max = limits.max_standby_per_device;
    let (id, taken) = hub.fast.standby.add(&identity, max).ok_or_else(|| {
        let msg =
            format!("device '{identity}' already holds its maximum of {max} standby connections");
        let limited = StatusCode::TOO_MANY_REQUESTS;
        Refusal::new(limited, "ThrottlingException", Outcome::Limited, msg)
    })?;
    Ok(Admitted {
        identity,
        session,
        expiry,
        place,
        id,
        taken,
    })
}

/// What the connection proves, as its control session holds it: the key that signed its
/// SAS token, or an X.509 device's certificate (the TLS connection's, checked as at
/// CONNECT); and when that expires (Unix seconds).
fn credential(
    hub: &Hub,
    req: &Request<Incoming>,
    identity: &str,
) -> Result<(Secret, u64), Refusal> {
    let limits = hub.limits();
    let (names, max_life) = (&hub.config.names, limits.max_token_lifetime);
    let token = req.headers().get(header::AUTHORIZATION);
    let token = token.and_then(|v| v.to_str().ok()).unwrap_or("");
    let login = match split_identity(identity) {
        (d, Some(m)) => auth::module(&hub.registry, names, max_life, (d, m), token).map(Into::into),
        (d, None) => {
            let kind = hub.registry.device_auth(d)?;
            if kind.is_x509() {
                let certs = req.extensions().get::<PeerCerts>().cloned();
                auth::device_x509(&hub.registry, d, &kind, &certs.unwrap_or_default())
            } else {
                auth::device(&hub.registry, names, max_life, d, token).map(Into::into)
            }
        }
    };
    let login = login.map_err(|e| {
        hub.metrics.auth_failure(AuthKind::Device);
        Refusal::from(e)
    })?;
    Ok((login.credential, login.expiry.unwrap_or(u64::MAX)))
}

/// The device's control session here, signed in with `key`; a standby connection lives
/// under it.
fn session_of(hub: &Hub, identity: &str, key: &Secret) -> Result<CancellationToken, Refusal> {
    hub.sessions.session_token(identity, key).ok_or_else(|| {
        let msg = format!(
            "device '{identity}' has no control session on this hub node signed with the same key; standby connections follow the control session"
        );
                let conflict = StatusCode::CONFLICT;
        Refusal::new(conflict, "DeviceNotConnectedHere", Outcome::DeviceOffline, msg)
    })
}

/// Why a standby connection stopped waiting.
enum Stop {
    Taken(Result<Give, oneshot::error::RecvError>),
    Cut(&'static str),
}

/// Holds the connection in the pool until a stream takes it or it ends.
async fn serve(hub: Arc<Hub>, admitted: Admitted, on_upgrade: Upgrade, half_close: bool) {
    let Admitted {
        identity,
        session,
        expiry,
        place,
        id,
        taken,
    } = admitted;
    let _listed = Listed {
        pool: &hub.fast.standby,
        identity: &identity,
        id,
    };
    let _place = place;
    let Some(mut ws) = idle::upgrade(&hub, on_upgrade).await else {
        return;
    };
    let stop = async {
        tokio::select! {
            given = taken => Stop::Taken(given),
            () = session.cancelled() => Stop::Cut("the device's control session ended"),
            () = idle::expired(expiry) => Stop::Cut("token expired"),
            () = hub.shutdown.cancelled() => Stop::Cut("hub shutdown"),
        }
    };
    match idle::wait(&mut ws, endpoint::ping_interval(&hub), stop).await {
        idle::Woke::Stopped(Stop::Taken(Ok(give))) => {
            // If the taker is gone the connection drops with this: it was never offered.
            let _ = give.send(Standby { ws, half_close });
        }
        idle::Woke::Stopped(Stop::Taken(Err(_))) => {}
        idle::Woke::Stopped(Stop::Cut(why)) => {
            tracing::debug!("standby connection cut: {why}");
            close_with(ws, CloseCode::Away, why).await;
        }
        idle::Woke::Message(_) => {
            let why = "a standby connection speaks only after an offer";
            close_with(ws, CloseCode::Protocol, why).await;
        }
        idle::Woke::Gone(why) => tracing::debug!("standby connection ended: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pool_caps_each_device_and_skips_connections_that_ended() {
        let pool = Pool::default();
        let (gone, dropped) = pool.add("d1", 2).unwrap();
        let (_live, _rx) = pool.add("d1", 2).unwrap();
        assert!(pool.add("d1", 2).is_none(), "at its cap");
        assert_eq!(pool.count("d1"), 2);
        drop(dropped); // that connection's task ended without being taken
                       // `take` skips it; the live one never answers here, so stop waiting for it.
        let taken = tokio::time::timeout(Duration::from_millis(100), pool.take("d1")).await;
        assert!(taken.is_err());
        assert_eq!(pool.count("d1"), 0, "both left the pool");
        pool.remove("d1", gone);
        assert!(pool.take("nobody").await.is_none());
    }
}
