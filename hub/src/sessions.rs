//! Connected devices and the stream requests waiting for their answers.
//!
//! Each device has at most one control session; a new CONNECT for the same id
//! replaces the old one, as on Azure. A service's stream request is published into the
//! device's session and waits here, by request id, for the device's 200 or 400.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use device_streams_protocol::{wire, Secret};
use tokio::sync::{mpsc, oneshot};

use crate::request_queue;
use tokio_util::sync::CancellationToken;

use crate::live::Presence;

/// How many stream requests may queue for one device before the hub says it is busy.
const QUEUE: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("device '{0}' is not connected to the hub")]
    NotConnected(String),
    #[error("device '{0}' has too many stream requests waiting")]
    Busy(String),
    #[error("device '{0}' did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("device '{0}' disconnected before answering")]
    Disconnected(String),
}

/// A stream request to publish; the topic carries the device's stream token.
pub struct Outgoing {
    pub topic: Secret,
}

/// A device's answer to a stream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Why the device rejected the stream, as it said, cleaned ([`wire::clean_reason`]);
    /// `None` from a device that gives none (Azure's SDKs).
    pub reason: Option<String>,
}

struct Handle {
    generation: u64,
    tx: request_queue::Sender<Outgoing>,
    cancel: CancellationToken,
    /// The device key the session's token was signed with (or an X.509 device's
    /// [`crate::x509::Proof::credential`]), so that rotating it away cuts the session
    /// ([`Sessions::disconnect_unless_key`]). A `Secret`: never logged.
    key: Secret,
}

struct Waiter {
    device: String,
    tx: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<String, Handle>,
    waiters: HashMap<String, Waiter>,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
    next: AtomicU64,
    /// Told, under the lock, whenever a device's session comes or goes, so the changes
    /// reach it in the order they happened.
    presence: Presence,
    /// In cluster mode, the same changes for the cluster's presence bucket
    /// ([`crate::cluster::presence`]); full, it loses them with a warning rather than
    /// holding up sessions while the cluster is slow or away.
    cluster: std::sync::OnceLock<mpsc::Sender<(String, bool)>>,
}

/// What a new control session gets: its id, its queue of requests and its kill switch.
pub struct Registration {
    pub generation: u64,
    pub rx: request_queue::Receiver<Outgoing>,
    pub cancel: CancellationToken,
}

impl Sessions {
    pub fn new(presence: Presence) -> Self {
        Sessions {
            presence,
            ..Sessions::default()
        }
    }

    /// Has every later change of presence sent to `tx` too (cluster mode).
    pub(crate) fn report_to(&self, tx: mpsc::Sender<(String, bool)>) {
        let _ = self.cluster.set(tx);
    }

    fn set_presence(&self, device: &str, online: bool) {
        self.presence.set(device, online);
        if let Some(tx) = self.cluster.get() {
            if tx.try_send((device.to_string(), online)).is_err() {
                tracing::warn!(
                    device,
                    online,
                    "cluster presence update lost: its queue is full"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session for `device`, signed in with `key`, ending any earlier one.
    pub fn register(&self, device: &str, key: Secret, parent: &CancellationToken) -> Registration {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = request_queue::bounded(QUEUE);
        let cancel = parent.child_token();
        let mut inner = self.lock();
        let handle = Handle {
            generation,
            tx,
            cancel: cancel.clone(),
            key,
        };
        let old = inner.devices.insert(device.to_string(), handle);
        self.set_presence(device, true);
        drop(inner);
        if let Some(old) = old {
            tracing::info!(device, "a new connection replaces the device's earlier one");
            old.cancel.cancel();
        }
        Registration {
            generation,
            rx,
            cancel,
        }
    }

    /// Removes the session if it is still the current one, failing its waiting requests.
    pub fn unregister(&self, device: &str, generation: u64) {
        let mut inner = self.lock();
        if inner
            .devices
            .get(device)
            .is_some_and(|h| h.generation == generation)
        {
            inner.devices.remove(device);
            inner.waiters.retain(|_, w| w.device != device);
            self.set_presence(device, false);
        }
    }

    /// Cuts a device's control session (it was disabled or deleted).
    pub fn disconnect(&self, device: &str) -> bool {
        let mut inner = self.lock();
        match inner.devices.remove(device) {
            Some(handle) => {
                handle.cancel.cancel();
                self.set_presence(device, false);
                true
            }
            None => false,
        }
    }

    /// Cuts a device's control session if the key it signed in with is none of `keys`
    /// (the device's keys now: one was rotated). Checked and cut under one lock, so a
    /// session that has just reconnected with a current key is left alone.
    pub fn disconnect_unless_key(&self, device: &str, keys: &[&Secret]) -> bool {
        let mut inner = self.lock();
        let stale = inner
            .devices
            .get(device)
            .is_some_and(|h| !keys.contains(&&h.key));
        match stale.then(|| inner.devices.remove(device)).flatten() {
            Some(handle) => {
                handle.cancel.cancel();
                self.set_presence(device, false);
                true
            }
            None => false,
        }
    }

    /// The kill switch of `device`'s control session, if it signed in with `key`: what
    /// its fast-path standby connections live under, so that whatever cuts the session
    /// (revocation, key rotation, a newer session, shutdown) cuts them too.
    pub fn session_token(&self, device: &str, key: &Secret) -> Option<CancellationToken> {
        let inner = self.lock();
        let handle = inner.devices.get(device).filter(|h| h.key == *key)?;
        Some(handle.cancel.clone())
    }

    pub fn is_connected(&self, device: &str) -> bool {
        self.lock().devices.contains_key(device)
    }

    pub fn devices(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }

    pub fn connected(&self) -> usize {
        self.lock().devices.len()
    }

    /// Publishes a stream request to `device` and waits for its answer.
    /// `make_topic` gets the request id the hub chose.
    pub async fn request(
        &self,
        device: &str,
        make_topic: impl FnOnce(&str) -> Secret,
        timeout: Duration,
    ) -> Result<Answer, RequestError> {
        let rid = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let handle = inner
                .devices
                .get(device)
                .ok_or_else(|| RequestError::NotConnected(device.to_string()))?;
            handle
                .tx
                .try_push(Outgoing {
                    topic: make_topic(&rid),
                })
                .map_err(|_| RequestError::Busy(device.to_string()))?;
            inner.waiters.insert(
                rid.clone(),
                Waiter {
                    device: device.to_string(),
                    tx,
                },
            );
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        self.lock().waiters.remove(&rid);
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RequestError::Disconnected(device.to_string())),
            Err(_) => Err(RequestError::Timeout(device.to_string(), timeout)),
        }
    }

    /// A device's answer, with its payload (a rejection's reason, from our device proxy);
    /// answers to another device's requests are ignored.
    pub fn answer(&self, device: &str, rid: &str, status: u16, payload: &[u8]) -> bool {
        let mut inner = self.lock();
        match inner.waiters.get(rid) {
            Some(w) if w.device == device => {
                let waiter = inner.waiters.remove(rid);
                let reason = wire::clean_reason(payload);
                waiter.is_some_and(|w| w.tx.send(Answer { status, reason }).is_ok())
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_answered_only_by_their_device() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let root = CancellationToken::new();
        let mut reg = sessions.register("dev1", Secret::new("k1"), &root);
        let s = sessions.clone();
        let req = tokio::spawn(async move {
            s.request(
                "dev1",
                |rid| Secret::new(rid.to_string()),
                Duration::from_secs(5),
            )
            .await
        });
        let out = reg.rx.pop().await;
        let rid = out.topic.expose().to_string();
        assert!(!sessions.answer("dev2", &rid, 200, b""));
        assert!(sessions.answer("dev1", &rid, 400, b"no target\x1b[2J"));
        let answer = req.await.unwrap().unwrap();
        assert_eq!(answer.status, 400);
        assert_eq!(answer.reason.as_deref(), Some("no target [2J"));

        let err = sessions
            .request(
                "nobody",
                |r| Secret::new(r.to_string()),
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(err, Err(RequestError::NotConnected("nobody".into())));

        let replaced = sessions.register("dev1", Secret::new("k2"), &root);
        assert!(reg.cancel.is_cancelled());
        sessions.unregister("dev1", reg.generation); // stale: must not remove the new one
        assert!(sessions.is_connected("dev1"));
        sessions.unregister("dev1", replaced.generation);
        assert!(!sessions.is_connected("dev1"));
    }

    #[test]
    fn a_session_is_cut_when_its_key_is_no_longer_the_devices() {
        let sessions = Sessions::default();
        let root = CancellationToken::new();
        let [k1, k2, k3] = ["k1", "k2", "k3"].map(Secret::new);
        let reg = sessions.register("dev1", k1.clone(), &root);
        assert!(!sessions.disconnect_unless_key("dev1", &[&k1, &k2]));
        assert!(!sessions.disconnect_unless_key("dev1", &[&k3, &k1]));
        assert!(!reg.cancel.is_cancelled());
        assert!(sessions.disconnect_unless_key("dev1", &[&k3, &k2]));
        assert!(reg.cancel.is_cancelled());
        assert!(!sessions.is_connected("dev1"));
        assert!(!sessions.disconnect_unless_key("nobody", &[]));
    }
}
