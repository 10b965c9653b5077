//! What a running hub publishes for the CLI, which is another process: which devices are
//! connected (and when each was last seen), which streams are open with their byte counts
//! so far, and the CLI's requests to close one.
//!
//! The hub keeps this state in memory and one writer thread copies it into tables of the
//! registry database ([`crate::registry::live`], which also reads them back for the CLI)
//! every 250 ms: changes since the last tick go in short transactions (256 rows at most
//! each), and byte counts of streams that moved are refreshed every 2 s. Nothing on a
//! connection's or a stream's path waits for the disk: they only note a change in memory,
//! and the relay only adds to its atomic counters.
//!
//! The writer writes through the registry's own connection: SQLite's `data_version` does
//! not change for a connection's own commits, so the hub's watcher
//! ([`crate::revocation::watch`]) goes on seeing only other processes' changes. One of
//! those is `stream-hub streams close ID`, which adds a row to `stream_close_requests`;
//! the watcher takes it and cancels that stream ([`close_requested`]).
//!
//! Each run of the hub has its own id, and starts by clearing what an earlier run left.
//! After a crash the tables show the crashed run's state until the hub starts again.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use device_streams_protocol::sas::unix_now;
use tokio_util::sync::CancellationToken;

pub use crate::registry::live::{device_states, is_open, open_streams, request_close};
pub use crate::registry::live::{DeviceState, StreamRow};
use crate::{
    activity::unix_ms,
    registry::{
        live::{self as tables, LiveWrite},
        Registry,
    },
    stream::relay::Counters,
    Hub,
};

/// How often the writer copies changes into the database.
const TICK: Duration = Duration::from_millis(250);

/// How often the byte counts of open streams are refreshed.
const BYTES_EVERY: Duration = Duration::from_secs(2);

/// Rows written per transaction at most, so a device lookup waiting for the registry's
/// connection waits for one short transaction.
const CHUNK: usize = 256;

/// A stream being relayed, as the hub knows it while it runs.
pub struct OpenStream {
    id: String,
    device: String,
    name: String,
    policy: String,
    opened_at_ms: u64,
    counters: Counters,
    close: CancellationToken,
}

impl OpenStream {
    /// The stream as a row, with its byte counts this instant.
    fn row(&self) -> StreamRow {
        StreamRow {
            stream_id: self.id.clone(),
            device_id: self.device.clone(),
            stream_name: self.name.clone(),
            policy: self.policy.clone(),
            opened_at: self.opened_at_ms,
            bytes_to_device: self.counters.to_device.load(Ordering::Relaxed),
            bytes_from_device: self.counters.from_device.load(Ordering::Relaxed),
        }
    }
}

enum Change {
    Opened(Arc<OpenStream>),
    Ended,
}

/// Changes not yet written: the latest per device and per stream, so a burst of
/// reconnects or short streams costs one row each at most.
#[derive(Default)]
struct Pending {
    /// Device → (online, unix seconds of the change).
    presence: HashMap<String, (bool, u64)>,
    streams: HashMap<String, Change>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    open: Mutex<HashMap<String, Arc<OpenStream>>>,
    stopped: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hub's side: note changes, find open streams; the writer thread does the rest.
pub struct Live {
    shared: Arc<Shared>,
    registry: Registry,
    run: String,
}

/// Where control sessions report a device going online or offline. Cheap to clone.
#[derive(Clone, Default)]
pub struct Presence(Option<Arc<Shared>>);

impl Presence {
    pub fn set(&self, device: &str, online: bool) {
        if let Some(shared) = &self.0 {
            let mut pending = lock(&shared.pending);
            pending
                .presence
                .insert(device.to_string(), (online, unix_now()));
        }
    }
}

/// A stream's entry among the open ones, removed when this drops.
pub struct Opened {
    shared: Arc<Shared>,
    stream: Arc<OpenStream>,
}

impl Opened {
    pub fn counters(&self) -> &Counters {
        &self.stream.counters
    }

    /// Cancelled when an admin closes the stream.
    pub fn closed(&self) -> &CancellationToken {
        &self.stream.close
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let id = &self.stream.id;
        lock(&self.shared.open).remove(id);
        let mut pending = lock(&self.shared.pending);
        // Opened and ended within one tick: the database never needs to hear of it.
        if let Some(Change::Opened(_)) = pending.streams.remove(id) {
            return;
        }
        pending.streams.insert(id.clone(), Change::Ended);
    }
}

impl Live {
    /// Clears what earlier runs left in `registry` and starts the writer thread, which
    /// ends with the last `Live`, [`Presence`] or [`Opened`].
    pub fn start(registry: &Registry) -> anyhow::Result<Live> {
        let run = crate::stream::Streams::new_id();
        tables::start_run(registry, &run)?;
        let shared = Arc::new(Shared::default());
        let writer = (shared.clone(), registry.clone(), run.clone());
        std::thread::Builder::new()
            .name("live-state".into())
            .spawn(move || write_loop(writer.0, writer.1, writer.2))?;
        Ok(Live {
            shared,
            registry: registry.clone(),
            run,
        })
    }

    pub fn presence(&self) -> Presence {
        Presence(Some(self.shared.clone()))
    }

    /// Lists a stream among the open ones until the returned [`Opened`] drops.
    pub fn opened(&self, id: &str, device: &str, name: &str, policy: &str) -> Opened {
        let stream = Arc::new(OpenStream {
            id: id.to_string(),
            device: device.to_string(),
            name: name.to_string(),
            policy: policy.to_string(),
            opened_at_ms: unix_ms(SystemTime::now()),
            counters: Counters::default(),
            close: CancellationToken::new(),
        });
        lock(&self.shared.open).insert(id.to_string(), stream.clone());
        let change = Change::Opened(stream.clone());
        lock(&self.shared.pending)
            .streams
            .insert(id.to_string(), change);
        Opened {
            shared: self.shared.clone(),
            stream,
        }
    }

    /// Ends stream `id` if it is open here; true if it was.
    pub fn close(&self, id: &str) -> bool {
        let open = lock(&self.shared.open);
        open.get(id).inspect(|s| s.close.cancel()).is_some()
    }

    /// The streams open on this hub now, oldest first, with their byte counts this
    /// instant (the dashboard reads memory, not the tables, so its counts are live).
    pub fn snapshot(&self) -> Vec<StreamRow> {
        let open: Vec<Arc<OpenStream>> = lock(&self.shared.open).values().cloned().collect();
        let mut rows: Vec<StreamRow> = open.iter().map(|s| s.row()).collect();
        rows.sort_by(|a, b| (a.opened_at, &a.stream_id).cmp(&(b.opened_at, &b.stream_id)));
        rows
    }

    /// The hub has stopped: this run's devices are offline and its streams gone. Later
    /// changes are not written (they would describe a hub that no longer runs).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Err(e) = tables::end_run(&self.registry, &self.run) {
            tracing::warn!("cannot clear the hub's live state on shutdown: {e}");
        }
    }
}

fn write_loop(shared: Arc<Shared>, registry: Registry, run: String) {
    let mut written: HashMap<String, (u64, u64)> = HashMap::new();
    let mut bytes_at = std::time::Instant::now();
    loop {
        std::thread::sleep(TICK);
        let last = Arc::strong_count(&shared) == 1;
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let mut writes = take_pending(&shared, &mut written);
        if bytes_at.elapsed() >= BYTES_EVERY || last {
            bytes_at = std::time::Instant::now();
            writes.extend(moved_bytes(&shared, &mut written));
        }
        for chunk in writes.chunks(CHUNK) {
            if let Err(e) = tables::write(&registry, &run, chunk) {
                tracing::warn!("cannot publish the hub's live state: {e}");
            }
        }
        if last {
            return;
        }
    }
}

fn take_pending(shared: &Shared, written: &mut HashMap<String, (u64, u64)>) -> Vec<LiveWrite> {
    let pending = std::mem::take(&mut *lock(&shared.pending));
    let presence = pending.presence.into_iter();
    let mut writes: Vec<LiveWrite> = presence
        .map(|(device, (online, at))| LiveWrite::Presence(device, online, at))
        .collect();
    for (id, change) in pending.streams {
        writes.push(match change {
            Change::Opened(stream) => LiveWrite::Opened(stream.row()),
            Change::Ended => {
                written.remove(&id);
                LiveWrite::Ended(id)
            }
        });
    }
    writes
}

/// Byte counts of open streams that changed since they were last written.
fn moved_bytes(shared: &Shared, written: &mut HashMap<String, (u64, u64)>) -> Vec<LiveWrite> {
    let open: Vec<Arc<OpenStream>> = lock(&shared.open).values().cloned().collect();
    let mut writes = Vec::new();
    for s in open {
        let now = (
            s.counters.to_device.load(Ordering::Relaxed),
            s.counters.from_device.load(Ordering::Relaxed),
        );
        if written.insert(s.id.clone(), now) != Some(now) {
            writes.push(LiveWrite::Bytes(s.id.clone(), now.0, now.1));
        }
    }
    writes
}

/// Cancels the streams the CLI asked to close; called when another process changed the
/// database. A request for a stream not open here (it ended meanwhile) is dropped.
pub fn close_requested(hub: &Hub) {
    match tables::take_close_requests(&hub.registry) {
        Ok(ids) => {
            for id in ids {
                let found = hub.live.close(&id);
                tracing::info!(stream = %id, found, "an admin asked to close a stream");
            }
        }
        Err(e) => tracing::warn!("cannot read stream close requests: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn state(registry: &Registry, device: &str) -> DeviceState {
        let mut states = device_states(registry).unwrap();
        states.remove(device).unwrap_or_default()
    }

    #[test]
    fn presence_and_open_streams_reach_the_database_and_a_new_run_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        let live = Live::start(&registry).unwrap();
        let presence = live.presence();
        presence.set("dev1", true);
        let opened = live.opened("s1", "dev1", "ssh", "service");
        assert!(wait(|| state(&registry, "dev1").online_since.is_some()));
        assert_eq!(state(&registry, "dev1").open_streams, 1);
        opened.counters().to_device.fetch_add(7, Ordering::Relaxed);
        let bytes = || open_streams(&registry, Some("dev1")).unwrap()[0].bytes_to_device;
        assert!(wait(|| bytes() == 7));

        assert!(request_close(&registry, "s1").unwrap());
        assert!(!request_close(&registry, "nope").unwrap());
        assert_eq!(tables::take_close_requests(&registry).unwrap(), ["s1"]);
        assert!(live.close("s1") && opened.closed().is_cancelled());
        drop(opened);
        assert!(wait(|| !is_open(&registry, "s1").unwrap()));
        // Opened and ended between two ticks: never written.
        drop(live.opened("s2", "dev1", "ssh", "service"));

        // A new run: the old one's device is offline, with when it was last seen kept.
        let next = Live::start(&registry).unwrap();
        let s = state(&registry, "dev1");
        assert!(s.online_since.is_none() && s.last_seen.is_some(), "{s:?}");
        next.presence().set("dev1", true);
        assert!(wait(|| state(&registry, "dev1").online_since.is_some()));
        // The old run's late news must not take the new run's device offline.
        presence.set("dev1", false);
        std::thread::sleep(TICK * 3);
        assert!(state(&registry, "dev1").online_since.is_some());
        next.presence().set("dev1", false);
        assert!(wait(|| state(&registry, "dev1").online_since.is_none()));
        next.stop();
        assert!(open_streams(&registry, None).unwrap().is_empty());
    }
}
