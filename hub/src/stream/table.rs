//! The table of streams between a service's stream request and the moment both sides'
//! WebSockets have arrived, and the limits on how many there are.
//!
//! A stream gets a random id (its URL is `<streaming base>/bridges/<id>`) and two tokens,
//! one per side. A token is single-use, bound to its stream and its side, and dies with
//! the stream's connect window: [`Streams::claim`] checks it in constant time and spends
//! it. The first side to arrive waits; the second hands its WebSocket to the first,
//! whose task then relays (see [`super::relay`]).

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    sync::{Arc, Mutex, MutexGuard},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use device_streams_protocol::Secret;
use futures_util::SinkExt;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use tokio_util::sync::CancellationToken;

use super::record::StreamRecord;
use crate::http::ServerWs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Device,
    Service,
}

impl Side {
    /// Both sides, by [`Side::index`].
    pub const ALL: [Side; 2] = [Side::Device, Side::Service];

    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        match self {
            Side::Device => "device",
            Side::Service => "service",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("no such stream, or its connect window has passed")]
    UnknownStream,
    #[error("the token is not valid for this stream")]
    BadToken,
    #[error("the token has already been used")]
    Replayed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("the hub already carries its maximum of {0} streams")]
    Hub(usize),
    #[error("device '{0}' already has its maximum of {1} streams")]
    Device(String, usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Streams per device, and the token that cuts them all when the device is revoked.
    per_device: HashMap<String, (usize, CancellationToken)>,
    /// Streams per grant, and the token that cuts them all when the grant is withdrawn.
    per_grant: HashMap<Grant, (usize, CancellationToken)>,
}

/// What a stream was granted on: the shared access policy whose token asked for it, and a
/// fingerprint of the key that signed that token (when this node checked it; a request
/// another cluster node checked names only the policy). Deleting the policy, or replacing
/// that key, withdraws the grant and ends its streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub policy: String,
    pub key: Option<[u8; 16]>,
}

impl Grant {
    pub fn new(policy: &str, key: Option<&device_streams_protocol::Secret>) -> Self {
        Grant {
            policy: policy.to_string(),
            key: key.map(fingerprint),
        }
    }
}

/// The first half of a key's SHA-256: enough to tell keys apart, nothing to sign with.
pub fn fingerprint(key: &device_streams_protocol::Secret) -> [u8; 16] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.expose().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// One stream's place under the limits, from request to close; dropping it frees the place.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    device: String,
    revoked: CancellationToken,
    grant: Grant,
    withdrawn: CancellationToken,
}

impl Slot {
    /// Cancelled when the stream's device is disabled or deleted.
    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }

    /// Cancelled when the stream's grant (its policy, or the key that signed for it) is
    /// withdrawn.
    pub fn withdrawn(&self) -> &CancellationToken {
        &self.withdrawn
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        release_grant(&mut c, &self.grant);
        if let Some((n, _)) = c.per_device.get_mut(&self.device) {
            *n -= 1;
            if *n == 0 {
                c.per_device.remove(&self.device);
            }
        }
    }
}

fn release_grant(c: &mut Counts, grant: &Grant) {
    if let Some((n, _)) = c.per_grant.get_mut(grant) {
        *n -= 1;
        if *n == 0 {
            c.per_grant.remove(grant);
        }
    }
}

/// A warm fast-path connection's hold on the grant it authenticated with: counted among
/// the grant's holders, so that withdrawing the grant (its policy deleted, its key
/// replaced) cuts the connection as it ends the grant's streams. Dropping it lets go.
pub struct GrantHold {
    counts: Arc<Mutex<Counts>>,
    grant: Grant,
    withdrawn: CancellationToken,
}

impl GrantHold {
    /// Cancelled when the grant is withdrawn.
    pub fn withdrawn(&self) -> &CancellationToken {
        &self.withdrawn
    }
}

impl Drop for GrantHold {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        release_grant(&mut c, &self.grant);
    }
}

/// What the hub knows of a stream, carried from request to activity record.
pub struct StreamInfo {
    pub id: String,
    /// Its place under the limits, held until the stream ends.
    pub slot: Slot,
    pub record: StreamRecord,
}

impl StreamInfo {
    /// A new stream, under a fresh random id.
    pub fn pending(slot: Slot, record: StreamRecord) -> Self {
        StreamInfo {
            id: Streams::new_id(),
            slot,
            record,
        }
    }
}

/// The waiting side's WebSocket meets the other's here.
pub struct Paired {
    pub ws: ServerWs,
    pub info: StreamInfo,
    /// Which sides agreed to half-close, by [`Side`] index.
    pub half_close: [bool; 2],
}

struct Pending {
    info: StreamInfo,
    tokens: [Secret; 2],
    claimed: [bool; 2],
    half_close: [bool; 2],
    waiting: Option<(Side, oneshot::Sender<Paired>)>,
}

pub struct Streams {
    pending: Mutex<HashMap<String, Pending>>,
    counts: Arc<Mutex<Counts>>,
    max_total: AtomicUsize,
    max_per_device: AtomicUsize,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Closes a WebSocket with a reason the peer can log.
pub async fn close_with(mut ws: ServerWs, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        ws.send(Message::Close(Some(frame))),
    )
    .await;
}

impl Streams {
    pub fn new(max_total: usize, max_per_device: usize) -> Self {
        Streams {
            pending: Mutex::default(),
            counts: Arc::default(),
            max_total: AtomicUsize::new(max_total),
            max_per_device: AtomicUsize::new(max_per_device),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limits(&self) -> (usize, usize) {
        (
            self.max_total.load(Ordering::Relaxed),
            self.max_per_device.load(Ordering::Relaxed),
        )
    }

    /// New limits for streams requested from now on; streams over them already open stay.
    pub fn set_limits(&self, max_total: usize, max_per_device: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_device.store(max_per_device, Ordering::Relaxed);
    }

    /// Takes a place for a new stream to `device`, or says which limit is reached.
    pub fn reserve(&self, device: &str, grant: Grant) -> Result<Slot, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (max_total, max_per_device) = self.limits();
        if c.total >= max_total {
            return Err(LimitError::Hub(max_total));
        }
        let (n, revoked) = c.per_device.entry(device.to_string()).or_default();
        if *n >= max_per_device {
            return Err(LimitError::Device(device.to_string(), max_per_device));
        }
        *n += 1;
        let revoked = revoked.clone();
        c.total += 1;
        let (m, withdrawn) = c.per_grant.entry(grant.clone()).or_default();
        *m += 1;
        let withdrawn = withdrawn.clone();
        Ok(Slot {
            counts: self.counts.clone(),
            device: device.to_string(),
            revoked,
            grant,
            withdrawn,
        })
    }

    /// Holds `grant` for a connection that is not a stream yet (see [`GrantHold`]).
    pub fn hold_grant(&self, grant: Grant) -> GrantHold {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (m, withdrawn) = c.per_grant.entry(grant.clone()).or_default();
        *m += 1;
        GrantHold {
            counts: self.counts.clone(),
            withdrawn: withdrawn.clone(),
            grant,
        }
    }

    /// Cuts every stream of `device`, pending or open.
    pub fn revoke(&self, device: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, token)) = c.per_device.get_mut(device) {
            token.cancel();
            // Streams requested from now on (if the device comes back) get a fresh token.
            *token = CancellationToken::new();
        }
    }

    /// Ends every stream granted on `grant`.
    pub fn withdraw(&self, grant: &Grant) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, token)) = c.per_grant.get_mut(grant) {
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// The grants streams pending or open were made on.
    pub fn grants(&self) -> Vec<Grant> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.per_grant.keys().cloned().collect()
    }

    /// Devices with streams pending or open.
    pub fn devices(&self) -> Vec<String> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.per_device.keys().cloned().collect()
    }

    /// Streams pending or open right now.
    pub fn active(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub fn new_id() -> String {
        random_token(16)
    }

    /// Registers a stream awaiting its two WebSockets; returns (device token, service token).
    pub fn create(&self, info: StreamInfo) -> (Secret, Secret) {
        let tokens = [Secret::new(random_token(32)), Secret::new(random_token(32))];
        let out = (tokens[0].clone(), tokens[1].clone());
        let id = info.id.clone();
        self.lock().insert(
            id,
            Pending {
                info,
                tokens,
                claimed: [false; 2],
                half_close: [false; 2],
                waiting: None,
            },
        );
        out
    }

    pub fn mark_accepted(&self, id: &str) {
        if let Some(p) = self.lock().get_mut(id) {
            p.info.record.accepted();
        }
    }

    /// Drops a stream that will not be paired (rejected, timed out, or its window passed);
    /// a side still waiting for its peer is woken and closed. Returns what it knew.
    pub fn remove(&self, id: &str) -> Option<StreamInfo> {
        self.lock().remove(id).map(|p| p.info)
    }

    /// Checks `token` for stream `id` and spends it; a token works once.
    pub fn claim(&self, id: &str, token: &str) -> Result<(Side, String), ClaimError> {
        let mut pending = self.lock();
        let p = pending.get_mut(id).ok_or(ClaimError::UnknownStream)?;
        let side = [Side::Device, Side::Service]
            .into_iter()
            .find(|s| {
                bool::from(
                    p.tokens[s.index()]
                        .expose()
                        .as_bytes()
                        .ct_eq(token.as_bytes()),
                )
            })
            .ok_or(ClaimError::BadToken)?;
        if std::mem::replace(&mut p.claimed[side.index()], true) {
            return Err(ClaimError::Replayed);
        }
        Ok((side, p.info.record.device().to_string()))
    }

    /// Notes that `side` of stream `id` agreed to half-close.
    pub fn agree_half_close(&self, id: &str, side: Side) {
        if let Some(p) = self.lock().get_mut(id) {
            p.half_close[side.index()] = true;
        }
    }

    /// Brings a side's WebSocket to its stream. The first side waits here and gets the
    /// second's WebSocket to relay with; the second returns `None` at once.
    pub async fn join(&self, id: &str, side: Side, ws: ServerWs) -> Option<(ServerWs, Paired)> {
        let rx = {
            let mut pending = self.lock();
            match pending.get_mut(id).map(|p| p.waiting.take()) {
                None => None,
                Some(Some((other, tx))) if other != side => {
                    if let Some(p) = pending.remove(id) {
                        // If the waiter is gone its window passed just now; our socket drops with it.
                        let _ = tx.send(Paired {
                            ws,
                            info: p.info,
                            half_close: p.half_close,
                        });
                    }
                    return None;
                }
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    if let Some(p) = pending.get_mut(id) {
                        p.waiting = Some((side, tx));
                    }
                    Some(rx)
                }
            }
        };
        let Some(rx) = rx else {
            close_with(
                ws,
                CloseCode::Policy,
                "stream expired before both sides connected",
            )
            .await;
            return None;
        };
        match rx.await {
            Ok(paired) => Some((ws, paired)),
            Err(_) => {
                let why = "the other side did not connect within the connect timeout";
                close_with(ws, CloseCode::Again, why).await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::record::tests::recorder;

    fn grant() -> Grant {
        Grant::new("service", None)
    }

    #[test]
    fn withdrawing_a_grant_ends_its_streams_only() {
        let streams = Streams::new(10, 10);
        let key = device_streams_protocol::Secret::new("k1".to_string());
        let other = device_streams_protocol::Secret::new("k2".to_string());
        let a = streams.reserve("d1", Grant::new("p", Some(&key))).unwrap();
        let b = streams
            .reserve("d1", Grant::new("p", Some(&other)))
            .unwrap();
        assert_eq!(streams.grants().len(), 2);
        streams.withdraw(&Grant::new("p", Some(&key)));
        assert!(a.withdrawn().is_cancelled() && !b.withdrawn().is_cancelled());
        drop((a, b));
        assert!(streams.grants().is_empty());
    }

    async fn info(streams: &Streams, id: &str, device: &str) -> StreamInfo {
        let dir = tempfile::tempdir().unwrap();
        StreamInfo {
            id: id.into(),
            slot: streams.reserve(device, grant()).unwrap(),
            record: recorder(dir.path()).open(device, "ssh", "service").await,
        }
    }

    #[tokio::test]
    async fn tokens_are_single_use_and_bound_to_stream_and_side() {
        let streams = Streams::new(10, 10);
        let (dev, svc) = streams.create(info(&streams, "s1", "dev1").await);
        let (_, _) = streams.create(info(&streams, "s2", "dev1").await);
        assert_eq!(streams.claim("s2", dev.expose()), Err(ClaimError::BadToken));
        assert_eq!(streams.claim("s1", "nope"), Err(ClaimError::BadToken));
        assert_eq!(
            streams.claim("s1", dev.expose()),
            Ok((Side::Device, "dev1".into()))
        );
        assert_eq!(streams.claim("s1", dev.expose()), Err(ClaimError::Replayed));
        assert_eq!(
            streams.claim("s1", svc.expose()),
            Ok((Side::Service, "dev1".into()))
        );
        assert!(streams.remove("s1").is_some());
        assert_eq!(
            streams.claim("s1", svc.expose()),
            Err(ClaimError::UnknownStream)
        );
    }

    #[test]
    fn limits_count_streams_until_their_slot_drops() {
        let streams = Streams::new(3, 2);
        let a = streams.reserve("d1", grant()).unwrap();
        let _b = streams.reserve("d1", grant()).unwrap();
        assert_eq!(
            streams.reserve("d1", grant()).err(),
            Some(LimitError::Device("d1".into(), 2))
        );
        let _c = streams.reserve("d2", grant()).unwrap();
        assert_eq!(
            streams.reserve("d3", grant()).err(),
            Some(LimitError::Hub(3))
        );
        drop(a);
        let again = streams.reserve("d1", grant()).unwrap();
        streams.revoke("d1");
        assert!(again.revoked().is_cancelled() && _b.revoked().is_cancelled());
        assert!(!_c.revoked().is_cancelled());
        drop(again);
        assert_eq!(streams.active(), 2);
    }
}
