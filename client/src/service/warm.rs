//! The service side's warm connections (the fast path, `device_streams_protocol::fast`):
//! a few WebSockets to the hub's open path, authenticated ahead of need, each of which
//! becomes one stream with a single message ([`super::pipeline`]).
//!
//! Each place in the pool is a task that dials its connection, holds it — answering the
//! hub's pings, noticing a link gone silent (three of the hub's ping intervals), retiring
//! it at 80% of its token's life — and dials again as soon as a stream takes it. Negotiation: the first dial is the
//! probe. A hub that answers it with an HTTP error (Azure: no such path; our hub with
//! `--no-fast-path`) is not asked again until one of its stream answers says it serves
//! the fast path ([`FAST_HEADER`](device_streams_protocol::fast::FAST_HEADER)), so a
//! client of Azure's hub pays one failed probe per start. The pool starts on first use.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use device_streams_protocol::{backoff::Backoff, fast::OPEN_PATH, sas};
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::oneshot, sync::Notify, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::ServiceClient;
use crate::websocket::{connect_fast, ClientWs, WsError};

/// A warm connection handed over for a stream.
pub(crate) struct Conn {
    pub ws: ClientWs,
    pub half_close: bool,
    pub pings: Option<Duration>,
}

type Give = oneshot::Sender<Conn>;

const UNKNOWN: u8 = 0;
const SERVED: u8 = 1;
const NOT_SERVED: u8 = 2;

/// Idle connections, oldest first, and whether the hub serves the fast path.
struct Shared {
    size: usize,
    ready: Mutex<VecDeque<(u64, oneshot::Sender<Give>)>>,
    next: AtomicU64,
    state: AtomicU8,
    /// Wakes the places waiting after a failed probe: the hub may serve it now.
    wake: Notify,
}

/// The pool; dropping the last clone of its client stops it.
pub(crate) struct Warm {
    shared: Arc<Shared>,
    started: std::sync::Once,
}

impl Warm {
    pub(crate) fn new(size: usize) -> Self {
        Warm {
            shared: Arc::new(Shared {
                size,
                ready: Mutex::default(),
                next: AtomicU64::new(0),
                state: AtomicU8::new(UNKNOWN),
                wake: Notify::new(),
            }),
            started: std::sync::Once::new(),
        }
    }

    /// Starts the pool's places (once), which dial with `client`'s connector and
    /// credentials.
    pub(crate) fn start(&self, client: &ServiceClient) {
        self.started.call_once(|| {
            // Without the pool: the places must not keep it alive.
            let client = ServiceClient {
                warm: None,
                ..client.clone()
            };
            for _ in 0..self.shared.size {
                tokio::spawn(slot(Arc::downgrade(&self.shared), client.clone()));
            }
        });
    }

    /// Whether the hub is known to serve the fast path.
    pub(crate) fn served(&self) -> bool {
        self.shared.state.load(Ordering::Relaxed) == SERVED
    }

    /// A stream answer said whether the hub serves the fast path: one that does after a
    /// failed probe is asked again.
    pub(crate) fn hub_says(&self, serves: bool) {
        if serves && self.shared.state.load(Ordering::Relaxed) == NOT_SERVED {
            self.shared.state.store(UNKNOWN, Ordering::Relaxed);
            self.shared.wake.notify_waiters();
        }
    }

    /// A ready warm connection, if there is one; the pool refills behind it.
    pub(crate) async fn take(&self) -> Option<Conn> {
        loop {
            let entry = self.shared.lock().pop_front()?;
            let (give, taken) = oneshot::channel();
            if entry.1.send(give).is_ok() {
                if let Ok(conn) = taken.await {
                    return Some(conn);
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<Give>)>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }
}

/// One place in the pool, while the client lives: dials, holds the connection until a
/// stream takes it (or it ends), dials again at once. The places dial in parallel, so a
/// pool drained by streams back to back refills in one dial's time (TCP, TLS, upgrade:
/// about 3 round trips), not one per connection.
async fn slot(shared: Weak<Shared>, client: ServiceClient) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let Some(pool) = shared.upgrade() else { return };
        if pool.state.load(Ordering::Relaxed) == NOT_SERVED {
            // Woken when the hub says it serves the fast path; the timeout lets a client
            // that is gone drop the pool.
            let _ = tokio::time::timeout(Duration::from_secs(5), pool.wake.notified()).await;
            continue;
        }
        drop(pool);
        match dial(&client).await {
            Ok((conn, retire)) => {
                let Some(pool) = shared.upgrade() else { return };
                pool.state.store(SERVED, Ordering::Relaxed);
                backoff.reset();
                let id = pool.next.fetch_add(1, Ordering::Relaxed);
                let (take, taken) = oneshot::channel();
                pool.lock().push_back((id, take));
                drop(pool);
                keep(&shared, id, conn, taken, retire).await;
            }
            Err(WsError::Refused { status, .. }) if status != 429 && status != 503 => {
                tracing::debug!(hub = %client.hub(), status, "the hub does not serve the fast path: using Azure's protocol");
                if let Some(pool) = shared.upgrade() {
                    pool.state.store(NOT_SERVED, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!("warm connection to the hub failed: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// One warm connection, and when to retire it (80% of its token's life).
async fn dial(client: &ServiceClient) -> Result<(Conn, Instant), WsError> {
    let cs = &client.connection;
    let host = cs.host.to_string();
    let ttl = client.token_ttl;
    let token = sas::sign_for(&host, &cs.key, ttl, Some(&cs.policy))
        .map_err(|e| WsError::BadUrl(format!("cannot sign a token: {e}")))?;
    let url = format!("wss://{}:{}{OPEN_PATH}", cs.host.host, cs.host.port);
    let up = connect_fast(&client.connector, &url, Some(&token)).await?;
    let conn = Conn {
        ws: up.ws,
        half_close: up.half_close,
        pings: up.pings,
    };
    Ok((conn, Instant::now() + ttl.mul_f64(0.8)))
}

/// Holds one warm connection until it is taken, ends, or retires.
async fn keep(
    pool: &Weak<Shared>,
    id: u64,
    mut conn: Conn,
    mut taken: oneshot::Receiver<Give>,
    retire: Instant,
) {
    let silence = conn.pings.map(|every| every * 3);
    loop {
        let quiet = silence.unwrap_or(Duration::from_secs(24 * 3600));
        tokio::select! {
            give = &mut taken => {
                if let Ok(give) = give {
                    let _ = give.send(conn);
                }
                return;
            }
            () = tokio::time::sleep_until(retire) => break,
            () = tokio::time::sleep(quiet) => break,
            next = conn.ws.next() => match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    // Sends the pong tungstenite queued.
                    if conn.ws.flush().await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
        }
    }
    if let Some(pool) = pool.upgrade() {
        pool.remove(id);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.ws.close(None)).await;
}
