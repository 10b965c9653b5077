//! One TLS connection to the hub dialed ahead, for the next stream.
//!
//! Streams come in bursts (`scp` after `ssh`, Ansible, a script looping over devices), and
//! a stream's set-up waits for a TCP connect and a TLS handshake on each proxy. So after a
//! proxy dials for a stream it dials one more in the background and keeps it for
//! [`SPARE_TTL`]; the next stream within that time starts on it. Like an HTTP client's
//! idle keep-alive connection, it costs the hub one idle TLS connection per recently
//! active proxy, for a few seconds.
//!
//! A spare is only taken if it is fresh and still open (the hub may have restarted or
//! closed it): anything else is dropped and the stream dials as usual.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::task::noop_waker_ref;
use tokio::io::{AsyncRead, ReadBuf};

use super::conn::{ClientTls, Reusable};

/// How long a spare is kept: well inside the hub's 10 s wait for a first request.
pub const SPARE_TTL: Duration = Duration::from_secs(5);

struct Spare {
    conn: Reusable,
    dialed: Instant,
}

/// At most one spare TLS connection, shared by a connector's clones.
#[derive(Clone, Default)]
pub struct Spares {
    slot: Arc<Mutex<Option<Spare>>>,
    /// Streams that started on a spare (for tests and curiosity).
    used: Arc<AtomicU64>,
}

impl Spares {
    /// The spare for `host:port`, if there is a fresh, open one.
    pub fn take(&self, host: &str, port: u16) -> Option<ClientTls> {
        let mut spare = self.lock().take()?;
        let usable = spare.conn.leads_to(host, port)
            && spare.dialed.elapsed() < SPARE_TTL
            && is_open(&mut spare.conn.tls);
        usable.then(|| {
            self.used.fetch_add(1, Ordering::Relaxed);
            spare.conn.tls
        })
    }

    /// Keeps `conn` as the spare, replacing an older one.
    pub fn put(&self, conn: Reusable) {
        *self.lock() = Some(Spare {
            conn,
            dialed: Instant::now(),
        });
    }

    /// Closes the spare once it is too old to be taken.
    pub fn expire(&self) {
        let mut slot = self.lock();
        if slot
            .as_ref()
            .is_some_and(|s| s.dialed.elapsed() >= SPARE_TTL)
        {
            *slot = None;
        }
    }

    /// How many spares have been taken so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a spare is kept now (fresh or not).
    pub fn is_ready(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether there is a spare that [`Spares::take`] would take now for its host.
    pub fn is_usable(&self) -> bool {
        let mut slot = self.lock();
        slot.as_mut()
            .is_some_and(|s| s.dialed.elapsed() < SPARE_TTL && is_open(&mut s.conn.tls))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Spare>> {
        // Taking or putting a spare cannot leave the slot half-written.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the hub has neither closed the connection nor sent data on it: a read that
/// would block. The read also takes in what TLS 1.3 servers send after the handshake
/// (session tickets), which is not data. Anything else on an idle connection — end of
/// file, an alert, a reset, stray bytes — means it is not fit to carry a request.
fn is_open(tls: &mut ClientTls) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(noop_waker_ref());
    matches!(Pin::new(tls).poll_read(&mut cx, &mut buf), Poll::Pending)
}
