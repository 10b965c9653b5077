//! The tables a running hub publishes for the CLI, which is another process — `presence`
//! (which devices are connected, and when each was last seen), `open_streams` (with their
//! byte counts so far) and `stream_close_requests` (the CLI's requests to close one) — as
//! rows: what the hub writes into them, and what the CLI reads back.
//!
//! Each run of the hub has an id (setting `live_run`). A run starts by clearing what an
//! earlier one left; readers believe only rows of the current run, and a row is only ever
//! taken offline by the run that put it online. Keeping this state in memory and copying
//! it here is [`crate::live`]'s.

use std::collections::HashMap;

use device_streams_protocol::sas::unix_now;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{error::RegistryError, store::Registry};

const RUN: &str = "(SELECT value FROM settings WHERE name = 'live_run')";

/// One row's worth of change, as the hub's writer hands it over.
pub(crate) enum LiveWrite {
    /// A device online (true) or offline, at unix seconds.
    Presence(String, bool, u64),
    Opened(StreamRow),
    Ended(String),
    /// A stream's bytes to and from the device so far.
    Bytes(String, u64, u64),
}

/// Starts run `run`: what earlier runs left is cleared (their devices offline, with when
/// they were last seen kept; their streams and unserved close requests gone).
pub(crate) fn start_run(registry: &Registry, run: &str) -> Result<(), RegistryError> {
    registry.with(|c| Ok(clear_stale(c, run)?))
}

fn clear_stale(c: &Connection, run: &str) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
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

/// Writes `writes` in one transaction.
pub(crate) fn write(
    registry: &Registry,
    run: &str,
    writes: &[LiveWrite],
) -> Result<(), RegistryError> {
    registry.with(|c| Ok(apply(c, run, writes)?))
}

fn apply(c: &Connection, run: &str, writes: &[LiveWrite]) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
    for w in writes {
        match w {
            LiveWrite::Presence(device, true, at) => tx.prepare_cached(
                "INSERT INTO presence (device, run, online_since, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (device) DO UPDATE SET run = ?2, online_since = ?3, last_seen = ?3",
            )?.execute(params![device, run, at])?,
            // Only the run that put a device online takes it offline: a hub stopping late
            // must not undo the next one's rows.
            LiveWrite::Presence(device, false, at) => tx.prepare_cached(
                "INSERT INTO presence (device, run, online_since, last_seen) VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (device) DO UPDATE SET online_since = NULL, last_seen = ?3
                 WHERE presence.run = ?2 OR presence.online_since IS NULL",
            )?.execute(params![device, run, at])?,
            LiveWrite::Opened(s) => tx.prepare_cached(
                "INSERT OR REPLACE INTO open_streams (id, run, device, name, policy, opened_at,
                 bytes_to_device, bytes_from_device) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?.execute(params![
                s.stream_id, run, s.device_id, s.stream_name, s.policy, s.opened_at,
                s.bytes_to_device, s.bytes_from_device
            ])?,
            LiveWrite::Ended(id) => tx
                .prepare_cached("DELETE FROM open_streams WHERE id = ?1")?
                .execute([id])?,
            LiveWrite::Bytes(id, to, from) => tx.prepare_cached(
                "UPDATE open_streams SET bytes_to_device = ?2, bytes_from_device = ?3 WHERE id = ?1",
            )?.execute(params![id, to, from])?,
        };
    }
    tx.commit()
}

/// Ends run `run`: its devices are offline and its streams gone.
pub(crate) fn end_run(registry: &Registry, run: &str) -> Result<(), RegistryError> {
    registry.with(|c| {
        let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE presence SET online_since = NULL, last_seen = ?2
             WHERE run = ?1 AND online_since IS NOT NULL",
            params![run, unix_now()],
        )?;
        tx.execute("DELETE FROM open_streams WHERE run = ?1", [run])?;
        Ok(tx.commit()?)
    })
}

/// The close requests the CLI left, taken: each is served once.
pub(crate) fn take_close_requests(registry: &Registry) -> Result<Vec<String>, RegistryError> {
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
