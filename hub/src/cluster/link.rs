//! Whether this node reaches the cluster right now, from the NATS client's own connection
//! events. The tasks that follow the cluster wait on it rather than on timers, so a node
//! catches up as soon as NATS is back (not at its next retry, up to half a minute later),
//! and `/healthz` and the logs say when a node is cut off and since when.

use std::{
    future::Ready,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::{connection::State, Client, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The client's reconnect delay: quick at first, never more than [`MAX_RECONNECT`] plus
/// jitter, so a node is back within about a second and a half of NATS, and the nodes of a
/// cluster do not all knock at the same instant.
const MAX_RECONNECT: Duration = Duration::from_secs(1);
/// The first pause of a cluster task after a failure while NATS is reachable; it doubles
/// on each failure in a row, up to [`MAX_PAUSE`] (short: such failures are mostly a
/// JetStream stream between leaders, over within seconds, and a retry is one request).
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The connection's history as its events tell it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// How many times the client has connected: a change means the cluster came back,
    /// and what was followed (KV watches) must be taken up again from the start.
    pub epoch: u64,
    /// When the client last connected or lost its server.
    pub since: Instant,
}

pub struct Link {
    seen: watch::Sender<Seen>,
    /// What the log calls the cluster: its URLs without credentials.
    name: String,
}

impl Link {
    pub(crate) fn new(urls: &str) -> Arc<Link> {
        let seen = Seen {
            epoch: 0,
            since: Instant::now(),
        };
        Arc::new(Link {
            seen: watch::channel(seen).0,
            name: shown(urls),
        })
    }

    /// The client's event callback ([`async_nats::ConnectOptions::event_callback`]).
    pub(crate) fn on_event(self: &Arc<Self>) -> impl Fn(Event) -> Ready<()> + Send + Sync {
        let link = self.clone();
        move |event| {
            link.note(&event);
            std::future::ready(())
        }
    }

    fn note(&self, event: &Event) {
        let now = Instant::now();
        let before = *self.seen.borrow();
        match event {
            Event::Connected => {
                self.seen.send_replace(Seen {
                    epoch: before.epoch + 1,
                    since: now,
                });
                match before.epoch {
                    0 => tracing::info!(cluster = %self.name, "cluster reached"),
                    _ => tracing::info!(
                        cluster = %self.name,
                        "cluster reachable again after {:.1?}: following it again",
                        now - before.since
                    ),
                }
            }
            Event::Disconnected => {
                self.seen.send_replace(Seen {
                    since: now,
                    ..before
                });
                tracing::warn!(
                    cluster = %self.name,
                    "cluster unreachable: devices held here are served with the last known \
                     registry; streams to devices held elsewhere and registry changes are \
                     refused until it is back"
                );
            }
            _ => {}
        }
    }

    pub(crate) fn seen(&self) -> Seen {
        *self.seen.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Seen> {
        self.seen.subscribe()
    }

    /// Waits until `client` is connected (true), or `shutdown` (false).
    pub(crate) async fn up(&self, client: &Client, shutdown: &CancellationToken) -> bool {
        let mut seen = self.watch();
        loop {
            if client.connection_state() == State::Connected {
                return true;
            }
            // The state is the client's; the event only wakes us (re-checked each second,
            // as an event may come just before the state it announces).
            let change = tokio::time::timeout(Duration::from_secs(1), seen.changed());
            tokio::select! {
                () = shutdown.cancelled() => return false,
                _ = change => {}
            }
        }
    }

    /// Waits until `client` is connected, for at most `limit`.
    pub(crate) async fn up_within(&self, client: &Client, limit: Duration) -> bool {
        let never = CancellationToken::new();
        tokio::time::timeout(limit, self.up(client, &never))
            .await
            .unwrap_or(false)
    }

    /// What `/healthz` says of the cluster: `None` while it is reachable.
    pub(crate) fn trouble(&self, client: &Client) -> Option<String> {
        if client.connection_state() == State::Connected {
            return None;
        }
        let seen = self.seen();
        let what = match seen.epoch {
            0 => "never reached since this node started",
            _ => "unreachable",
        };
        Some(format!(
            "degraded: cluster {what} for {}s; devices held here are served with the last \
             known registry, streams to devices held elsewhere and registry changes are refused",
            seen.since.elapsed().as_secs()
        ))
    }
}

/// The reconnect delay for the `attempts`-th try in a row (one per server tried): 50 ms,
/// doubling to [`MAX_RECONNECT`], plus up to a quarter of it at random.
pub(crate) fn reconnect_delay(attempts: usize) -> Duration {
    let base = Duration::from_millis(50)
        .saturating_mul(1 << attempts.min(5))
        .min(MAX_RECONNECT);
    base + base.mul_f64(rand::random::<f64>() / 4.0)
}

/// How a cluster task waits before it tries again after a failure.
pub(crate) struct Retry {
    pause: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { pause: FIRST_PAUSE }
    }
}

impl Retry {
    /// While NATS is away: until it is back (plus a little jitter, so that the tasks and
    /// nodes do not all ask at once). Otherwise: a pause that doubles with each failure
    /// in a row. False on shutdown.
    pub(crate) async fn wait(
        &mut self,
        link: &Link,
        client: &Client,
        shutdown: &CancellationToken,
    ) -> bool {
        if client.connection_state() != State::Connected {
            self.pause = FIRST_PAUSE;
            if !link.up(client, shutdown).await {
                return false;
            }
            let jitter = FIRST_PAUSE.mul_f64(rand::random::<f64>());
            return sleep_or_shutdown(jitter, shutdown).await;
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        sleep_or_shutdown(pause, shutdown).await
    }

    /// After a success: the next failure pauses briefly again.
    pub(crate) fn reset(&mut self) {
        self.pause = FIRST_PAUSE;
    }
}

/// Set by a watch once it runs, so that the pause after its next failure starts short.
#[derive(Clone, Default)]
pub(crate) struct Started(Arc<AtomicBool>);

impl Started {
    /// The watch is running: whatever failed before is behind us.
    pub(crate) fn now(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Runs `once` — one watch of the cluster, which returns only when it fails — until
/// `shutdown`: again after a failure (after [`Retry::wait`]), and from the start each time
/// the client reconnects, since a watch may have missed what changed while NATS was away.
pub(crate) async fn keep_following<F, Fut>(
    link: &Link,
    client: &Client,
    shutdown: &CancellationToken,
    what: &str,
    mut once: F,
) where
    F: FnMut(Started) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut retry = Retry::default();
    let mut seen = link.watch();
    loop {
        let epoch = seen.borrow_and_update().epoch;
        let started = Started::default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = reconnected(&mut seen, epoch) => continue,
            r = once(started.clone()) => if let Err(e) = r {
                tracing::warn!("{what}: {e:#}; following it again");
            },
        }
        if started.take() {
            retry.reset();
        }
        if !retry.wait(link, client, shutdown).await {
            return;
        }
    }
}

/// Returns once the client has connected again after `epoch`: what was followed through
/// the old connection is taken up from the start, without waiting for it to fail. The
/// first connection is no reconnection: its event may come after the task began on the
/// state it announces, and a second load of the registry would be for nothing.
pub(crate) async fn reconnected(seen: &mut watch::Receiver<Seen>, epoch: u64) {
    if seen.wait_for(|s| s.epoch > epoch.max(1)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(pause) => true,
    }
}

/// `urls` without the credentials a `nats://user:password@host` URL may carry.
pub(crate) fn shown(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match (url.split_once("://"), url.rfind('@')) {
                (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &url[at + 1..]),
                _ => url.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let urls = "nats://alice:s3cret@n1:4222, nats://n2:4222";
        assert_eq!(shown(urls), "nats://…@n1:4222,nats://n2:4222");
    }

    #[test]
    fn reconnects_come_within_a_second_and_a_quarter() {
        assert!(reconnect_delay(0) >= Duration::from_millis(50));
        for attempts in [1, 5, 50, usize::MAX] {
            let d = reconnect_delay(attempts);
            assert!(d <= MAX_RECONNECT + MAX_RECONNECT / 4, "{d:?}");
        }
        assert!(reconnect_delay(50) >= MAX_RECONNECT);
    }
}
