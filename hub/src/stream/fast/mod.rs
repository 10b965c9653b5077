//! The fast path on the hub (the wire: `device_streams_protocol::fast`): services' warm
//! connections that become a stream with one message, and devices' standby connections
//! a stream is handed to directly — about two round trips from a service's first byte to
//! the device's answer, against Azure's five to eight. `serve --no-fast-path` turns it
//! off: the paths answer 404 and nothing advertises it, as on Azure.
//!
//! - [`open`]: `GET /$x-device-streams/open`: a service's warm connection, idle until
//!   its open message.
//! - [`standby`]: `GET /$x-device-streams/standby/<device>`: devices' standby connections.
//! - [`carry`]: an open message's stream: the checks and the record a REST request gets,
//!   the device reached on a standby connection or by Azure's MQTT request, the relay.
//! - [`idle`]: waiting on a connection that carries no stream yet: pings, liveness, its end.
//!
//! Bounds: warm connections per policy, standby connections per device, and both
//! together (`serve --max-warm-per-policy`, `--max-standby-per-device`, `--max-idle-fast`);
//! a warm connection's first message is at most `MAX_CONTROL_MESSAGE` bytes, and the
//! service's early bytes are read only up to `MAX_EARLY_BYTES` before the device answers.

pub mod carry;
pub mod idle;
pub mod open;
pub mod standby;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use device_streams_protocol::fast::FAST_HEADER;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::{
    activity::Outcome,
    http::{error, Body},
    refusal::Refusal,
    Hub,
};

/// What the fast path keeps: the standby pool and the counts of idle connections.
#[derive(Default)]
pub struct Fast {
    pub(crate) standby: standby::Pool,
    /// Warm and standby connections not carrying a stream yet.
    idle: Arc<AtomicUsize>,
    /// Warm connections per policy.
    warm: PerPolicy,
}

type PerPolicy = Arc<Mutex<HashMap<String, usize>>>;

/// An idle fast-path connection's place under the caps; dropping it frees the place.
pub struct Place {
    idle: Arc<AtomicUsize>,
    warm: Option<(PerPolicy, String)>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.idle.fetch_sub(1, Ordering::Relaxed);
        if let Some((warm, policy)) = &self.warm {
            let mut warm = warm.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = warm.get_mut(policy) {
                *n -= 1;
                if *n == 0 {
                    warm.remove(policy);
                }
            }
        }
    }
}

impl Fast {
    /// Warm and standby connections not carrying a stream yet.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// A place for one more idle connection, unless `max` are held.
    fn place(&self, max: usize) -> Option<Place> {
        let taken = self
            .idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| Place {
            idle: self.idle.clone(),
            warm: None,
        })
    }

    /// A place for one more warm connection of `policy`, under both caps.
    fn warm_place(&self, policy: &str, limits: &crate::Limits) -> Result<Place, Refusal> {
        let Some(mut place) = self.place(limits.max_idle_fast) else {
            return Err(busy(limits.max_idle_fast));
        };
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        let n = warm.entry(policy.to_string()).or_default();
        if *n >= limits.max_warm_per_policy {
            let msg = format!(
                "policy '{policy}' already holds its maximum of {} warm connections",
                limits.max_warm_per_policy
            );
            let limited = StatusCode::TOO_MANY_REQUESTS;
            return Err(Refusal::new(
                limited,
                "ThrottlingException",
                Outcome::Limited,
                msg,
            ));
        }
        *n += 1;
        place.warm = Some((self.warm.clone(), policy.to_string()));
        Ok(place)
    }
}

type Response = http::Response<Body>;

/// The hub holds its maximum of idle fast-path connections.
fn busy(max: usize) -> Refusal {
    let msg = format!("the hub holds its maximum of {max} fast-path connections; use Azure's way");
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    Refusal::new(unavailable, "ServerBusy", Outcome::Limited, msg)
}

/// Whether the fast path is on now (`serve --no-fast-path` turns it off; a reload may).
pub(crate) fn enabled(hub: &Hub) -> bool {
    !hub.limits().no_fast_path
}

/// Says in a reply that this hub serves the fast path, when it does.
pub(crate) fn advertise(hub: &Hub, headers: &mut HeaderMap) {
    if enabled(hub) {
        headers.insert(FAST_HEADER, HeaderValue::from_static("1"));
    }
}

/// The answer to a fast-path path while the fast path is off: as for any path the hub
/// does not serve, which is what Azure answers too.
fn off(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no endpoint for GET {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_capped_per_policy_and_in_total() {
        let fast = Fast::default();
        let limits = crate::Limits {
            max_warm_per_policy: 2,
            max_idle_fast: 3,
            ..crate::Limits::default()
        };
        let a1 = fast.warm_place("a", &limits).unwrap();
        let _a2 = fast.warm_place("a", &limits).unwrap();
        let full = fast.warm_place("a", &limits).err().unwrap();
        assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(full.message.contains("policy 'a'"), "{}", full.message);
        let _b1 = fast.warm_place("b", &limits).unwrap();
        let total = fast.warm_place("b", &limits).err().unwrap();
        assert_eq!(total.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(fast.idle(), 3);
        drop(a1);
        assert_eq!(fast.idle(), 2);
        assert!(
            fast.warm_place("a", &limits).is_ok(),
            "a freed place is taken again"
        );
    }
}
