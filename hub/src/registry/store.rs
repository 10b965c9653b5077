//! The registry's database connection: opening it (private files, WAL, every table), and
//! the one way every part writes — a transaction that commits only once the cluster's
//! mirror, if any, took the change. The settings table lives here too: it is the
//! database's own, read by the hub and the live state alike.
//!
//! The CLI and a running hub open the same database file (WAL mode), so a device
//! added or disabled from the command line takes effect on the running hub at once.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{error::RegistryError, files, model::Change, schema};

pub const DB_FILE: &str = "registry.db";

/// Where registry changes must also go before they count: in cluster mode the shared
/// JetStream KV bucket ([`crate::cluster`]), of which this database is then the node's
/// cache. A change the mirror refuses is rolled back here, so the cache never holds what
/// the cluster does not.
pub trait Mirror: Send + Sync {
    fn write(&self, change: &Change) -> Result<(), String>;
}

/// Clones share one connection: the hub's writes through it (see [`crate::live`]) do not
/// change the `data_version` its watcher reads.
#[derive(Clone)]
pub struct Registry {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    mirror: Option<Arc<dyn Mirror>>,
}

impl Registry {
    /// Opens (creating if needed) the database at `path`, readable by its owner only: it
    /// holds every key.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        files::create_private(path).map_err(|source| RegistryError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL still never corrupts; it only skips an fsync per commit, which
        // matters when thousands of devices reconnect at once (each records its connect time).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        schema::create(&conn)?;
        // SQLite gives the -wal and -shm files it has just made the database's mode, so they
        // are private already; this covers a database from before, or one another tool made.
        for file in files::sqlite_files(path) {
            files::make_private(&file);
        }
        Ok(Registry {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            mirror: None,
        })
    }

    /// This registry with every change also written to `mirror` (first, see [`Mirror`]).
    pub fn with_mirror(mut self, mirror: Arc<dyn Mirror>) -> Registry {
        self.mirror = Some(mirror);
        self
    }

    /// Runs a change in one transaction that commits only once the mirror (if any) took
    /// the change `f` reports. The lock is held meanwhile, so the cache and the mirror
    /// see changes in the same order.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, Change), RegistryError>,
    ) -> Result<T, RegistryError> {
        self.write_all(|c| f(c).map(|(value, change)| (value, vec![change])))
    }

    /// [`Self::write`] for a change that is several to the mirror (a device deleted with
    /// its modules and X.509 entry). Should the mirror refuse one part way, this database
    /// is rolled back while the mirror kept the earlier ones: those are removals of the
    /// device's dependants, listed first, so the device itself stays whole in both.
    pub(super) fn write_all<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, Vec<Change>), RegistryError>,
    ) -> Result<T, RegistryError> {
        self.with(|c| {
            // IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before
            // the change reads anything. A deferred transaction that read first and then
            // wrote after another process (the hub, the CLI) committed would fail at once
            // with SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out.
            let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
            let (value, changes) = f(&tx)?;
            if let Some(mirror) = &self.mirror {
                for change in &changes {
                    mirror.write(change).map_err(RegistryError::Cluster)?;
                }
            }
            tx.commit()?;
            Ok(value)
        })
    }

    /// Runs `f` on the connection, for reads and for writes that are this node's alone
    /// (never mirrored: connection times, live state, changes that came from the mirror).
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        // A panic while holding the lock cannot leave SQLite inconsistent; keep serving.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// The database file, which the activity log shares.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever another connection (the CLI) commits to the database, so a running
    /// hub can notice revocations cheaply.
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("PRAGMA data_version")?;
            Ok(stmt.query_row([], |r| r.get(0))?)
        })
    }

    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), RegistryError> {
        self.write(|c| {
            store_setting(c, name, value)?;
            Ok(((), Change::Setting(name.to_string(), value.to_string())))
        })
    }

    pub fn setting(&self, name: &'static str) -> Result<String, RegistryError> {
        self.with(|c| {
            c.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(RegistryError::MissingSetting(name))
        })
    }
}

/// Writes a setting, for a change made here or mirrored.
pub(super) fn store_setting(c: &Connection, name: &str, value: &str) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
        params![name, value],
    )
}

#[cfg(all(test, unix))]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_database_and_its_wal_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let reg = Registry::open(&path).unwrap();
        // A write, so that SQLite makes its -wal and -shm files.
        reg.set_setting("hostname", "hub.example.com").unwrap();
        for file in files::sqlite_files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(reg);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let _reg = Registry::open(&path).unwrap();
        for file in files::sqlite_files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}
