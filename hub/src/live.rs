//! What a running hub publishes for the CLI, which is another process: which devices are
//! connected (and when each was last seen), which streams are open with their byte counts
//! so far, and the CLI's requests to close one.
//!
//! The hub keeps this state in memory and one writer thread copies it into tables of the
//! registry database (`presence`, `open_streams`) every 250 ms: changes since the last
//! tick go in short transactions (256 rows at most each), and byte counts of streams that moved are refreshed every
//! 2 s. Nothing on a connection's or a stream's path waits for the disk: they
//! only note a change in memory, and the relay only adds to its atomic counters.
//!
//! The writer writes through the registry's own connection: SQLite's `data_version` does
//! not change for a connection's own commits, so the hub's watcher
//! ([`crate::revocation::watch`]) goes on seeing only other processes' changes. One of
//! those is `stream-hub streams close ID`, which adds a row to `stream_close_requests`;
//! the watcher takes it and cancels that stream ([`close_requested`]).
//!
//! Each run of the hub has an id (setting `live_run`). On start the hub clears what an
//! earlier run left (devices it had online, its streams, unserved close requests); the
//! CLI believes only rows of the current run, and a row is only ever taken offline by
//! the run that put it online. After a crash the tables show the crashed run's state
//! until the hub starts again.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use device_streams_protocol::sas::unix_now;
use rusqlite::{params, Connection, OptionalExtension};
use tokio_util::sync::CancellationToken;

use crate::{
    activity::unix_ms,
    registry::{Registry, RegistryError},
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

const RUN: &str = "(SELECT value FROM settings WHERE name = 'live_run')";

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
        registry.with(|c| Ok(clear_stale(c, &run)?))?;
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
        let mut rows: Vec<StreamRow> = open
            .iter()
            .map(|s| StreamRow {
                stream_id: s.id.clone(),
                device_id: s.device.clone(),
                stream_name: s.name.clone(),
                policy: s.policy.clone(),
                opened_at: s.opened_at_ms,
                bytes_to_device: s.counters.to_device.load(Ordering::Relaxed),
                bytes_from_device: s.counters.from_device.load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by(|a, b| (a.opened_at, &a.stream_id).cmp(&(b.opened_at, &b.stream_id)));
        rows
    }

    /// The hub has stopped: this run's devices are offline and its streams gone. Later
    /// changes are not written (they would describe a hub that no longer runs).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let result = self.registry.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE presence SET online_since = NULL, last_seen = ?2
                 WHERE run = ?1 AND online_since IS NOT NULL",
                params![self.run, unix_now()],
            )?;
            tx.execute("DELETE FROM open_streams WHERE run = ?1", [&self.run])?;
            Ok(tx.commit()?)
        });
        if let Err(e) = result {
            tracing::warn!("cannot clear the hub's live state on shutdown: {e}");
        }
    }
}

fn clear_stale(c: &Connection, run: &str) -> rusqlite::Result<()> {
    let tx = c.unchecked_transaction()?;
    tx.execute_batch(
        "UPDATE presence SET online_since = NULL WHERE online_since IS NOT NULL;
         DELETE FROM open_streams; DELETE FROM stream_close_requests;",
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO settings (name, value) VALUES ('live_run', ?1)",
        [run],
    )?;
    tx.commit()
}

/// One row's worth of change, as the writer applies it.
enum Write {
    Presence(String, bool, u64),
    Opened(Arc<OpenStream>),
    Ended(String),
    Bytes(String, u64, u64),
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
            if let Err(e) = registry.with(|c| Ok(apply(c, &run, chunk)?)) {
                tracing::warn!("cannot publish the hub's live state: {e}");
            }
        }
        if last {
            return;
        }
    }
}

fn take_pending(shared: &Shared, written: &mut HashMap<String, (u64, u64)>) -> Vec<Write> {
    let pending = std::mem::take(&mut *lock(&shared.pending));
    let presence = pending.presence.into_iter();
    let mut writes: Vec<Write> = presence
        .map(|(device, (online, at))| Write::Presence(device, online, at))
        .collect();
    for (id, change) in pending.streams {
        writes.push(match change {
            Change::Opened(stream) => Write::Opened(stream),
            Change::Ended => {
                written.remove(&id);
                Write::Ended(id)
            }
        });
    }
    writes
}

/// Byte counts of open streams that changed since they were last written.
fn moved_bytes(shared: &Shared, written: &mut HashMap<String, (u64, u64)>) -> Vec<Write> {
    let open: Vec<Arc<OpenStream>> = lock(&shared.open).values().cloned().collect();
    let mut writes = Vec::new();
    for s in open {
        let now = (
            s.counters.to_device.load(Ordering::Relaxed),
            s.counters.from_device.load(Ordering::Relaxed),
        );
        if written.insert(s.id.clone(), now) != Some(now) {
            writes.push(Write::Bytes(s.id.clone(), now.0, now.1));
        }
    }
    writes
}

fn apply(c: &Connection, run: &str, writes: &[Write]) -> rusqlite::Result<()> {
    let tx = c.unchecked_transaction()?;
    for w in writes {
        match w {
            Write::Presence(device, true, at) => tx.prepare_cached(
                "INSERT INTO presence (device, run, online_since, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (device) DO UPDATE SET run = ?2, online_since = ?3, last_seen = ?3",
            )?.execute(params![device, run, at])?,
            // Only the run that put a device online takes it offline: a hub stopping late
            // must not undo the next one's rows.
            Write::Presence(device, false, at) => tx.prepare_cached(
                "INSERT INTO presence (device, run, online_since, last_seen) VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (device) DO UPDATE SET online_since = NULL, last_seen = ?3
                 WHERE presence.run = ?2 OR presence.online_since IS NULL",
            )?.execute(params![device, run, at])?,
            Write::Opened(s) => tx.prepare_cached(
                "INSERT OR REPLACE INTO open_streams (id, run, device, name, policy, opened_at,
                 bytes_to_device, bytes_from_device) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0)",
            )?.execute(params![s.id, run, s.device, s.name, s.policy, s.opened_at_ms])?,
            Write::Ended(id) => tx
                .prepare_cached("DELETE FROM open_streams WHERE id = ?1")?
                .execute([id])?,
            Write::Bytes(id, to, from) => tx.prepare_cached(
                "UPDATE open_streams SET bytes_to_device = ?2, bytes_from_device = ?3 WHERE id = ?1",
            )?.execute(params![id, to, from])?,
        };
    }
    tx.commit()
}

/// Cancels the streams the CLI asked to close; called when another process changed the
/// database. A request for a stream not open here (it ended meanwhile) is dropped.
pub fn close_requested(hub: &Hub) {
    match take_close_requests(&hub.registry) {
        Ok(ids) => {
            for id in ids {
                let found = hub.live.close(&id);
                tracing::info!(stream = %id, found, "an admin asked to close a stream");
            }
        }
        Err(e) => tracing::warn!("cannot read stream close requests: {e}"),
    }
}

fn take_close_requests(registry: &Registry) -> Result<Vec<String>, RegistryError> {
    registry.with(|c| {
        let mut stmt = c.prepare_cached("DELETE FROM stream_close_requests RETURNING id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(ids.collect::<Result<Vec<_>, _>>()?)
    })
}

/// A device's connection state as the running hub last published it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// Unix seconds: since when it is connected, if it is.
    pub online_since: Option<u64>,
    /// Unix seconds: when its last session ended, or began if it is connected.
    pub last_seen: Option<u64>,
    pub open_streams: u64,
}

/// Every device's published state (devices never seen have none).
pub fn device_states(registry: &Registry) -> Result<HashMap<String, DeviceState>, RegistryError> {
    registry.with(|c| {
        let mut states: HashMap<String, DeviceState> = HashMap::new();
        let sql = format!(
            "SELECT device, CASE WHEN run = {RUN} THEN online_since END, last_seen FROM presence"
        );
        let mut stmt = c.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let state = states.entry(row.get(0)?).or_default();
            (state.online_since, state.last_seen) = (row.get(1)?, row.get(2)?);
        }
        let sql =
            format!("SELECT device, COUNT(*) FROM open_streams WHERE run = {RUN} GROUP BY device");
        let mut stmt = c.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            states.entry(row.get(0)?).or_default().open_streams = row.get(1)?;
        }
        Ok(states)
    })
}

/// An open stream as the running hub last published it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRow {
    pub stream_id: String,
    pub device_id: String,
    pub stream_name: String,
    pub policy: String,
    /// Unix milliseconds.
    pub opened_at: u64,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
}

/// Open streams, oldest first, optionally only `device`'s.
pub fn open_streams(
    registry: &Registry,
    device: Option<&str>,
) -> Result<Vec<StreamRow>, RegistryError> {
    registry.with(|c| {
        let sql = format!(
            "SELECT id, device, name, policy, opened_at, bytes_to_device, bytes_from_device
             FROM open_streams WHERE run = {RUN} AND (?1 IS NULL OR device = ?1)
             ORDER BY opened_at, id"
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map([device], |r| {
            Ok(StreamRow {
                stream_id: r.get(0)?,
                device_id: r.get(1)?,
                stream_name: r.get(2)?,
                policy: r.get(3)?,
                opened_at: r.get(4)?,
                bytes_to_device: r.get(5)?,
                bytes_from_device: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

/// Asks the running hub to close stream `id`; false if no such stream is open.
pub fn request_close(registry: &Registry, id: &str) -> Result<bool, RegistryError> {
    registry.with(|c| {
        let sql = format!("SELECT 1 FROM open_streams WHERE id = ?1 AND run = {RUN}");
        if c.query_row(&sql, [id], |_| Ok(())).optional()?.is_none() {
            return Ok(false);
        }
        c.execute(
            "INSERT OR REPLACE INTO stream_close_requests (id, requested_at) VALUES (?1, ?2)",
            params![id, unix_now()],
        )?;
        Ok(true)
    })
}

/// Whether stream `id` is still listed as open.
pub fn is_open(registry: &Registry, id: &str) -> Result<bool, RegistryError> {
    registry.with(|c| {
        let sql = format!("SELECT 1 FROM open_streams WHERE id = ?1 AND run = {RUN}");
        Ok(c.query_row(&sql, [id], |_| Ok(())).optional()?.is_some())
    })
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
        assert_eq!(take_close_requests(&registry).unwrap(), ["s1"]);
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
