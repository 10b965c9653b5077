//! The activity log, category DeviceStreams: one record per stream request — time, device,
//! stream name, requesting policy, result, setup time, duration, bytes each way.
//!
//! Each record is emitted as a structured tracing event (target `activity`) and stored in
//! the registry database's `activity` table by a writer thread, so stream set-up never
//! waits for the disk; `stream-hub logs` queries the table.
//!
//! No record is ever dropped: a stream reserves its place in the writer's queue before it
//! is admitted ([`Activity::reserve`]) and holds it until its record is written, so when
//! the disk falls behind, new stream requests wait — back-pressure — instead of records
//! of streams that happened being lost. Only authenticated requests get a record (the
//! hub counts the others in its metrics), and the table is pruned by age and by count.
//!
//! In cluster mode the writer also hands each stored record to the cluster's log
//! ([`Activity::copy_to`], see [`crate::cluster::activity`]) without waiting for it: the
//! node's own table stays the record that is never dropped, and a cluster that is away or
//! slow costs the cluster's copy records (counted, warned), never a stream's set-up.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Retention;

/// Records the writer takes into one transaction at most.
const BATCH: usize = 4096;

/// How often the writer prunes the table (also after every [`BATCH`] records).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Accepted,
    Rejected,
    Timeout,
    DeviceOffline,
    Unauthorized,
    Limited,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Rejected,
        Outcome::Timeout,
        Outcome::DeviceOffline,
        Outcome::Unauthorized,
        Outcome::Limited,
        Outcome::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::DeviceOffline => "device-offline",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Limited => "limited",
            Outcome::Failed => "failed",
        }
    }
}

/// One stream request's record, as built by the code that saw it end.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub device: &'a str,
    pub stream: &'a str,
    pub policy: &'a str,
    pub outcome: Outcome,
    pub setup: Option<Duration>,
    pub duration: Option<Duration>,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    pub detail: &'a str,
}

impl<'a> Record<'a> {
    pub fn request(
        device: &'a str,
        stream: &'a str,
        policy: &'a str,
        outcome: Outcome,
        detail: &'a str,
    ) -> Self {
        Record {
            device,
            stream,
            policy,
            outcome,
            setup: None,
            duration: None,
            bytes_to_device: 0,
            bytes_from_device: 0,
            detail,
        }
    }
}

/// A stored record, as `stream-hub logs` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    // Every record is of the one category; one read back from the cluster says so too.
    #[serde(skip_deserializing, default = "category")]
    pub category: &'static str,
    /// Unix time in milliseconds.
    pub time: u64,
    pub device: String,
    pub stream: String,
    pub policy: String,
    pub result: String,
    pub setup_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    pub detail: String,
}

fn category() -> &'static str {
    "DeviceStreams"
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS activity (
    time INTEGER NOT NULL, device TEXT NOT NULL, stream TEXT NOT NULL, policy TEXT NOT NULL,
    result TEXT NOT NULL, setup_ms REAL, duration_ms REAL,
    bytes_to_device INTEGER NOT NULL, bytes_from_device INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS activity_time ON activity (time);
CREATE INDEX IF NOT EXISTS activity_device ON activity (device, time);";

fn open(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// The log's writing end.
pub struct Activity {
    tx: mpsc::Sender<Entry>,
    copies: Copies,
}

/// Where the writer also hands stored records, once the hub has joined a cluster.
type Copies = Arc<OnceLock<mpsc::Sender<Entry>>>;

/// A place in the writer's queue, held by one stream until its record is written.
pub type Reserved = mpsc::OwnedPermit<Entry>;

impl Activity {
    /// Opens (creating if needed) the activity table in `db` and starts its writer thread,
    /// which ends once the `Activity` and every [`Reserved`] place are dropped. `capacity`
    /// bounds the records waiting, and so the streams that can hold a place at once.
    pub fn open(db: &Path, capacity: usize, retention: Retention) -> anyhow::Result<Activity> {
        let conn = open(db)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let copies = Copies::default();
        let to = copies.clone();
        std::thread::Builder::new()
            .name("activity-log".into())
            .spawn(move || write_loop(conn, rx, retention, to))?;
        Ok(Activity { tx, copies })
    }

    /// Hands every record stored from now on to `tx` as well (once; false if already).
    pub fn copy_to(&self, tx: mpsc::Sender<Entry>) -> bool {
        self.copies.set(tx).is_ok()
    }

    /// Waits for a place in the writer's queue; `None` once the writer has stopped.
    pub async fn reserve(&self) -> Option<Reserved> {
        self.tx.clone().reserve_owned().await.ok()
    }

    /// Writes `r` into its reserved place (and, either way, as a tracing event).
    pub fn record(place: Option<Reserved>, r: &Record<'_>) {
        tracing::info!(
            target: "activity",
            category = "DeviceStreams",
            device = r.device,
            stream = r.stream,
            policy = r.policy,
            result = r.outcome.name(),
            setup_ms = ms(r.setup),
            duration_ms = ms(r.duration),
            bytes_to_device = r.bytes_to_device,
            bytes_from_device = r.bytes_from_device,
            detail = r.detail,
            "stream {}", r.outcome.name()
        );
        let Some(place) = place else { return };
        place.send(Entry {
            category: "DeviceStreams",
            time: unix_ms(SystemTime::now()),
            device: r.device.to_string(),
            stream: r.stream.to_string(),
            policy: r.policy.to_string(),
            result: r.outcome.name().to_string(),
            setup_ms: ms(r.setup),
            duration_ms: ms(r.duration),
            bytes_to_device: r.bytes_to_device,
            bytes_from_device: r.bytes_from_device,
            detail: r.detail.to_string(),
        });
    }
}

fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Entry>,
    retention: Retention,
    copies: Copies,
) {
    let mut pruned = Instant::now();
    let mut since_prune = 0;
    let mut batch = Vec::new();
    let mut uncopied = 0u64;
    while rx.blocking_recv_many(&mut batch, BATCH) > 0 {
        if let Err(e) = insert(&mut conn, &batch) {
            tracing::warn!("cannot store {} activity records: {e}", batch.len());
        }
        if let Some(tx) = copies.get() {
            copy(tx, &batch, &mut uncopied);
        }
        since_prune += batch.len();
        batch.clear();
        if since_prune >= BATCH || pruned.elapsed() >= PRUNE_EVERY {
            if let Err(e) = prune(&conn, &retention, SystemTime::now()) {
                tracing::warn!("cannot prune the activity log: {e}");
            }
            (pruned, since_prune) = (Instant::now(), 0);
        }
    }
}

/// Hands `batch` to the cluster's log without waiting; what its full queue cannot take is
/// counted and warned about at every 1000th (the node's table has it still).
fn copy(tx: &mpsc::Sender<Entry>, batch: &[Entry], uncopied: &mut u64) {
    for e in batch {
        if tx.try_send(e.clone()).is_err() {
            *uncopied += 1;
            if *uncopied % 1000 == 1 {
                tracing::warn!(
                    uncopied = *uncopied,
                    "the cluster's activity log is behind: records kept on this node only"
                );
            }
        }
    }
}

fn insert(conn: &mut Connection, batch: &[Entry]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO activity (time, device, stream, policy, result, setup_ms, duration_ms,
             bytes_to_device, bytes_from_device, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for e in batch {
            stmt.execute(params![
                e.time,
                e.device,
                e.stream,
                e.policy,
                e.result,
                e.setup_ms,
                e.duration_ms,
                e.bytes_to_device,
                e.bytes_from_device,
                e.detail
            ])?;
        }
    }
    tx.commit()
}

/// Deletes records older than the retention's age, then all but its newest count.
fn prune(conn: &Connection, retention: &Retention, now: SystemTime) -> rusqlite::Result<usize> {
    let cutoff = unix_ms(now).saturating_sub(retention.max_age.as_millis() as u64);
    let old = conn.execute("DELETE FROM activity WHERE time < ?1", params![cutoff])?;
    let excess = conn.execute(
        "DELETE FROM activity WHERE rowid <= (SELECT MAX(rowid) FROM activity) - ?1",
        params![retention.max_records],
    )?;
    Ok(old + excess)
}

/// Records since `since_ms` (unix milliseconds), oldest first, optionally for one device.
pub fn query(db: &Path, device: Option<&str>, since_ms: u64) -> anyhow::Result<Vec<Entry>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare(
        "SELECT time, device, stream, policy, result, setup_ms, duration_ms, bytes_to_device,
         bytes_from_device, detail FROM activity
         WHERE time >= ?1 AND (?2 IS NULL OR device = ?2) ORDER BY time, rowid",
    )?;
    let rows = stmt.query_map(params![since_ms, device], |row| {
        Ok(Entry {
            category: "DeviceStreams",
            time: row.get(0)?,
            device: row.get(1)?,
            stream: row.get(2)?,
            policy: row.get(3)?,
            result: row.get(4)?,
            setup_ms: row.get(5)?,
            duration_ms: row.get(6)?,
            bytes_to_device: row.get(7)?,
            bytes_from_device: row.get(8)?,
            detail: row.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(db: &Path, n: usize) -> Vec<Entry> {
        for _ in 0..250 {
            let all = query(db, None, 0).unwrap();
            if all.len() >= n {
                return all;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        query(db, None, 0).unwrap()
    }

    #[tokio::test]
    async fn records_are_stored_and_queried_by_device_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let log = Activity::open(&db, 8, Retention::default()).unwrap();
        let rejected = Record::request("dev1", "ssh", "service", Outcome::Rejected, "no target");
        Activity::record(log.reserve().await, &rejected);
        let accepted = Record {
            setup: Some(Duration::from_millis(3)),
            duration: Some(Duration::from_secs(2)),
            bytes_to_device: 10,
            bytes_from_device: 20,
            ..Record::request("dev2", "ssh", "service", Outcome::Accepted, "closed")
        };
        Activity::record(log.reserve().await, &accepted);
        drop(log); // the writer drains its queue and ends
        assert_eq!(entries(&db, 2).len(), 2);
        let dev2 = query(&db, Some("dev2"), 0).unwrap();
        assert_eq!(dev2.len(), 1);
        assert_eq!(
            (dev2[0].result.as_str(), dev2[0].bytes_from_device),
            ("accepted", 20)
        );
        assert_eq!(dev2[0].setup_ms, Some(3.0));
        assert!(query(&db, None, unix_ms(SystemTime::now()) + 60_000)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_makes_new_streams_wait_instead_of_losing_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let log = std::sync::Arc::new(Activity::open(&db, 2, Retention::default()).unwrap());
        // Two streams hold the only places: a third waits for one of them to end.
        let (a, b) = (log.reserve().await, log.reserve().await);
        let third = tokio::spawn({
            let log = log.clone();
            async move { log.reserve().await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "a third place was handed out");
        let r = Record::request("dev1", "ssh", "service", Outcome::Accepted, "");
        Activity::record(a, &r);
        Activity::record(b, &r);
        assert!(third.await.unwrap());
        // Many more, each waiting for room: none is lost.
        for _ in 0..500 {
            Activity::record(log.reserve().await, &r);
        }
        assert_eq!(entries(&db, 502).len(), 502);
    }

    #[test]
    fn pruning_keeps_the_newest_records_within_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("r.db")).unwrap();
        let now = SystemTime::now();
        let entry = |age: Duration| Entry {
            category: "DeviceStreams",
            time: unix_ms(now - age),
            device: "d".into(),
            stream: "ssh".into(),
            policy: "service".into(),
            result: "accepted".into(),
            setup_ms: None,
            duration_ms: None,
            bytes_to_device: 0,
            bytes_from_device: 0,
            detail: String::new(),
        };
        let old: Vec<Entry> = (0..5).map(|_| entry(Duration::from_secs(7200))).collect();
        let new: Vec<Entry> = (0..10).map(|_| entry(Duration::ZERO)).collect();
        insert(&mut conn, &old).unwrap();
        insert(&mut conn, &new).unwrap();
        let retention = Retention {
            max_age: Duration::from_secs(3600),
            max_records: 4,
        };
        assert_eq!(prune(&conn, &retention, now).unwrap(), 11);
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM activity", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 4);
    }
}
