//! `device-local-proxy`: the device side of device streams.
//!
//! Layout:
//! - [`targets`]: the device's own map of stream names to local `host:port` targets.
//! - [`run`]: takes stream requests from the SDK's [`DeviceClient`] (which keeps the
//!   control channel up: token renewal, keep-alive, reconnects with backoff) and admits
//!   each by its name and the stream limit;
//! - [`stream`]: one admitted stream: dial the target, accept, splice.
//!
//! Entry point: [`run`], which returns once `shutdown` is cancelled and open streams
//! have finished (or the grace period has passed). On SIGHUP it re-reads its map
//! ([`Config::reload_targets`]); streams already open keep the target they dialed.
#![forbid(unsafe_code)]

pub mod stream;
pub mod targets;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use device_streams::{
    device::{IncomingStream, Status},
    DeviceClient,
};
use device_streams_common::{
    sd_notify,
    shutdown::{drain, on_hangup},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use targets::{Target, Targets};

pub struct Config {
    /// The control channel to the hub, ready to start.
    pub client: DeviceClient,
    pub targets: Targets,
    /// Time allowed to connect to a local target.
    pub target_timeout: Duration,
    /// Most streams open at once; requests past it are rejected.
    pub max_streams: usize,
    /// How long open streams may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Reads the map again (on SIGHUP); `None`: the map never changes.
    pub reload_targets: Option<Reload>,
}

/// Reads the target map again, e.g. from the command line and a config file that changed.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Targets> + Send + Sync>;

/// What every stream task shares.
struct Shared {
    targets: RwLock<Arc<Targets>>,
    target_timeout: Duration,
}

impl Shared {
    /// The map as it is now; a reload swaps it for new requests.
    fn targets(&self) -> Arc<Targets> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload(&self, read: &Reload) {
        match read() {
            Ok(targets) => {
                tracing::info!(map = %targets.names().join(", "), "map reloaded (SIGHUP)");
                *self.targets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(targets);
            }
            Err(e) => tracing::error!("map not reloaded (SIGHUP), keeping the old one: {e:#}"),
        }
    }
}

/// Serves stream requests until `shutdown`, then lets open streams finish within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_streams));
    let shared = Arc::new(Shared {
        targets: RwLock::new(Arc::new(config.targets)),
        target_timeout: config.target_timeout,
    });
    if let Some(read) = config.reload_targets {
        let shared = shared.clone();
        tracker.spawn(on_hangup(move || shared.reload(&read), shutdown.clone()));
    }
    let hub = config.client.hub();
    let mut incoming = config.client.start(shutdown.clone());
    tracker.spawn(tell_systemd(incoming.status(), hub));
    while let Some(request) = incoming.next().await {
        match admit(&shared, &slots, config.max_streams, &request) {
            Ok(slot) => {
                // Not `name`: JSON logs put the span's own name under that key, so a field called
                // `name` would make a duplicate key that parsers resolve by dropping one.
                let span = tracing::info_span!("stream", stream = %request.name(), rid = %request.request_id());
                tracker.spawn(stream::serve(shared.clone(), request, slot).instrument(span));
            }
            Err(Refusal { log, answer }) => {
                tracing::warn!(stream = %request.name(), "rejecting stream request: {log}");
                request.reject(&answer).await;
            }
        }
    }
    incoming.stopped().await;
    drain(&tracker, config.shutdown_grace).await;
    Ok(())
}

/// Why a request was not admitted: for the device's log, and for the admin (through the
/// hub), who is not told what else the device maps.
struct Refusal {
    log: String,
    answer: String,
}

/// Whether this device takes the request: its name must be in the map and a slot free.
fn admit(
    shared: &Shared,
    slots: &Arc<Semaphore>,
    max_streams: usize,
    request: &IncomingStream,
) -> Result<OwnedSemaphorePermit, Refusal> {
    let name = request.name();
    let targets = shared.targets();
    if targets.get(name).is_none() {
        return Err(Refusal {
            log: format!(
                "stream name '{name}' is not in this device's --map (it maps: {})",
                targets.names().join(", ")
            ),
            answer: format!("no target is mapped for stream '{name}'"),
        });
    }
    slots.clone().try_acquire_owned().map_err(|_| {
        let why = format!("the device is at its --max-streams limit ({max_streams} open)");
        Refusal {
            log: why.clone(),
            answer: why,
        }
    })
}

/// Tells systemd the service is ready once the control channel is first up.
async fn tell_systemd(mut status: tokio::sync::watch::Receiver<Status>, hub: String) {
    while status.changed().await.is_ok() {
        if *status.borrow() == Status::Connected {
            sd_notify::ready(&format!("connected to hub {hub}"));
        }
    }
}
