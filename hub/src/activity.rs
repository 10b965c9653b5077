//! The activity log, category DeviceStreams: one record per stream request — time, device,
//! stream name, requesting policy, result, setup time, duration, bytes each way.
//!
//! Each record is emitted as a structured tracing event (target `activity`) and stored in
//! the registry database's `activity` table by a writer thread, so stream set-up never
//! waits for the disk; `stream-hub logs` queries the table.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{params, Connection};
use serde::Serialize;

/// Records waiting for the writer; past this the log drops records (and counts them).
const QUEUE: usize = 4096;

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
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
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
    tx: SyncSender<Entry>,
    dropped: AtomicU64,
}

impl Activity {
    /// Opens (creating if needed) the activity table in `db` and starts its writer thread,
    /// which ends once the `Activity` is dropped.
    pub fn open(db: &Path) -> anyhow::Result<Activity> {
        let conn = open(db)?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("activity-log".into())
            .spawn(move || write_loop(conn, rx))?;
        Ok(Activity {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn record(&self, r: &Record<'_>) {
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
        let entry = Entry {
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
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(entry) {
            // The disk is behind: losing a record beats stalling stream set-up.
            if self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                tracing::warn!("activity log is behind; records are being dropped");
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(mut conn: Connection, rx: Receiver<Entry>) {
    while let Ok(first) = rx.recv() {
        // Batch whatever else is already queued into one transaction.
        let batch: Vec<Entry> = std::iter::once(first)
            .chain(rx.try_iter().take(QUEUE))
            .collect();
        if let Err(e) = insert(&mut conn, &batch) {
            tracing::warn!("cannot store {} activity records: {e}", batch.len());
        }
    }
}

fn insert(conn: &mut Connection, batch: &[Entry]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
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

    #[test]
    fn records_are_stored_and_queried_by_device_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let log = Activity::open(&db).unwrap();
        log.record(&Record::request(
            "dev1",
            "ssh",
            "service",
            Outcome::Rejected,
            "no such target",
        ));
        log.record(&Record {
            setup: Some(Duration::from_millis(3)),
            duration: Some(Duration::from_secs(2)),
            bytes_to_device: 10,
            bytes_from_device: 20,
            ..Record::request(
                "dev2",
                "ssh",
                "service",
                Outcome::Accepted,
                "closed by service",
            )
        });
        drop(log); // the writer drains its queue and ends
        let mut all = Vec::new();
        for _ in 0..100 {
            all = query(&db, None, 0).unwrap();
            if all.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(all.len(), 2);
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
}
