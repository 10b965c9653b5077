//! The identity registry: devices and shared access policies, persisted in SQLite.
//!
//! The CLI and a running hub open the same database file (WAL mode), so a device
//! added or disabled from the command line takes effect on the running hub at once.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use device_streams_protocol::{sas::unix_now, wire::valid_device_id, Secret};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

pub const DB_FILE: &str = "registry.db";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("device '{0}' already exists")]
    DeviceExists(String),
    #[error("device '{0}' is not registered")]
    UnknownDevice(String),
    #[error(
        "{0:?} is not a valid device id (letters, digits and - . _ : @, at most 128; not . or ..)"
    )]
    BadDeviceId(String),
    #[error("policy '{0}' already exists")]
    PolicyExists(String),
    #[error("policy '{0}' does not exist")]
    UnknownPolicy(String),
    #[error(
        "'{0}' is not a right (service-connect, registry-read, registry-list, registry-write)"
    )]
    BadRight(String),
    #[error("CA '{0}' already exists")]
    CaExists(String),
    #[error("CA '{0}' is not registered")]
    UnknownCa(String),
    #[error(
        "{0:?} is not a thumbprint (hex SHA-1 or SHA-256 of the DER certificate; colons allowed)"
    )]
    BadThumbprint(String),
    #[error("device '{0}' does not authenticate by thumbprint (x509-thumbprint)")]
    NotThumbprintDevice(String),
    #[error("setting '{0}' is missing from the registry")]
    MissingSetting(&'static str),
    #[error("registry database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The cluster's registry (a JetStream KV bucket) did not take a change: it was not made.
    #[error("cluster registry: {0}")]
    Cluster(String),
    #[error("registry file {}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
}

/// What a shared access policy lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    ServiceConnect,
    /// Read the registry, device keys included (Azure's `registryRead`).
    RegistryRead,
    /// Read the registry without device keys: for monitoring and inventory tools that
    /// must not be able to act as a device.
    RegistryList,
    RegistryWrite,
}

impl Right {
    pub const ALL: [Right; 4] = [
        Right::ServiceConnect,
        Right::RegistryRead,
        Right::RegistryList,
        Right::RegistryWrite,
    ];

    pub fn parse(name: &str) -> Result<Right, RegistryError> {
        Right::ALL
            .into_iter()
            .find(|r| r.name() == name.trim())
            .ok_or_else(|| RegistryError::BadRight(name.trim().to_string()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Right::ServiceConnect => "service-connect",
            Right::RegistryRead => "registry-read",
            Right::RegistryList => "registry-list",
            Right::RegistryWrite => "registry-write",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub primary_key: Secret,
    pub secondary_key: Secret,
    pub enabled: bool,
    pub created_at: u64,
    pub last_connected_at: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub primary_key: Secret,
    pub secondary_key: Secret,
    pub rights: Vec<String>,
}

impl Policy {
    pub fn allows(&self, right: Right) -> bool {
        self.rights.iter().any(|r| r == right.name())
    }
}

/// How a device proves who it is, as Azure's device JSON names the kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceAuth {
    /// SAS tokens signed with one of its keys.
    #[default]
    Sas,
    /// A certificate whose thumbprint (normalised: lower-case hex) is one of these.
    SelfSigned {
        primary: Option<String>,
        secondary: Option<String>,
    },
    /// A certificate chaining to a registered CA, with the device id as subject CN.
    CertificateAuthority,
}

impl DeviceAuth {
    /// Azure's name for the kind: `sas`, `selfSigned`, `certificateAuthority`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceAuth::Sas => "sas",
            DeviceAuth::SelfSigned { .. } => "selfSigned",
            DeviceAuth::CertificateAuthority => "certificateAuthority",
        }
    }

    pub fn is_x509(&self) -> bool {
        !matches!(self, DeviceAuth::Sas)
    }
}

/// A CA that device certificates may chain to (`stream-hub ca add`).
#[derive(Debug, Clone)]
pub struct CaCert {
    pub name: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    pub added_at: u64,
}

/// A fresh 256-bit key, base64 as Azure's keys are.
pub fn new_key() -> Secret {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(STANDARD.encode(bytes))
}

/// One change to the registry's devices, policies or settings, as a [`Mirror`] carries it.
#[derive(Debug, Clone)]
pub enum Change {
    Device(Device),
    DeviceGone(String),
    Policy(Policy),
    PolicyGone(String),
    Setting(String, String),
    /// How a device authenticates; `Sas` removes its X.509 row.
    Auth(String, DeviceAuth),
    Ca(CaCert),
    CaGone(String),
    Module(crate::registry_modules::Module),
    /// A module gone: its device and module ids.
    ModuleGone(String, String),
}

/// What a mirror holds, by name: the rest of a copy is [`Registry::retain`]ed away.
#[derive(Debug, Default)]
pub struct Present {
    pub devices: std::collections::HashSet<String>,
    pub policies: std::collections::HashSet<String>,
    /// Devices with an X.509 entry.
    pub auths: std::collections::HashSet<String>,
    pub cas: std::collections::HashSet<String>,
    /// (device, module).
    pub modules: std::collections::HashSet<(String, String)>,
}

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    last_connected_at INTEGER
);
CREATE TABLE IF NOT EXISTS device_x509 (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    primary_thumbprint TEXT,
    secondary_thumbprint TEXT
);
CREATE TABLE IF NOT EXISTS cas (
    name TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY,
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    rights TEXT NOT NULL
);";

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: row.get(0)?,
        primary_key: Secret::new(row.get::<_, String>(1)?),
        secondary_key: Secret::new(row.get::<_, String>(2)?),
        enabled: row.get(3)?,
        created_at: row.get(4)?,
        last_connected_at: row.get(5)?,
    })
}

const POLICY_COLUMNS: &str = "name, primary_key, secondary_key, rights";

fn policy_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Policy> {
    Ok(Policy {
        name: row.get(0)?,
        primary_key: Secret::new(row.get::<_, String>(1)?),
        secondary_key: Secret::new(row.get::<_, String>(2)?),
        rights: row
            .get::<_, String>(3)?
            .split(',')
            .map(str::to_string)
            .collect(),
    })
}

const DEVICE_COLUMNS: &str =
    "id, primary_key, secondary_key, enabled, created_at, last_connected_at";

impl Registry {
    /// Opens (creating if needed) the database at `path`, readable by its owner only: it
    /// holds every key.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        create_private(path).map_err(|source| RegistryError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL still never corrupts; it only skips an fsync per commit, which
        // matters when thousands of devices reconnect at once (each records its connect time).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::live::SCHEMA)?;
        conn.execute_batch(crate::registry_modules::SCHEMA)?;
        // SQLite gives the -wal and -shm files it has just made the database's mode, so they
        // are private already; this covers a database from before, or one another tool made.
        for file in sqlite_files(path) {
            make_private(&file);
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
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, Change), RegistryError>,
    ) -> Result<T, RegistryError> {
        self.write_all(|c| f(c).map(|(value, change)| (value, vec![change])))
    }

    /// [`Self::write`] for a change that is several to the mirror (a device deleted with
    /// its modules and X.509 entry). Should the mirror refuse one part way, this database
    /// is rolled back while the mirror kept the earlier ones: those are removals of the
    /// device's dependants, listed first, so the device itself stays whole in both.
    pub(crate) fn write_all<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, Vec<Change>), RegistryError>,
    ) -> Result<T, RegistryError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
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

    /// Applies a change that comes from the mirror (another node's or the CLI's), without
    /// writing it back. The connection time a device had here is kept.
    pub fn apply(&self, change: &Change) -> Result<(), RegistryError> {
        self.with(|c| {
            match change {
                Change::Device(d) => c.execute(
                    "INSERT INTO devices (id, primary_key, secondary_key, enabled, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO UPDATE SET \
                     primary_key = ?2, secondary_key = ?3, enabled = ?4, created_at = ?5",
                    params![
                        d.id,
                        d.primary_key.expose(),
                        d.secondary_key.expose(),
                        d.enabled,
                        d.created_at
                    ],
                )?,
                Change::DeviceGone(id) => {
                    // As `delete_device` does: a device's dependants go with it, whatever
                    // order their own removals arrive in.
                    c.execute("DELETE FROM device_x509 WHERE id = ?1", [id])?;
                    c.execute("DELETE FROM modules WHERE device_id = ?1", [id])?;
                    c.execute("DELETE FROM devices WHERE id = ?1", [id])?
                }
                Change::Policy(p) => c.execute(
                    "INSERT OR REPLACE INTO policies (name, primary_key, secondary_key, rights) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        p.name,
                        p.primary_key.expose(),
                        p.secondary_key.expose(),
                        p.rights.join(",")
                    ],
                )?,
                Change::PolicyGone(n) => c.execute("DELETE FROM policies WHERE name = ?1", [n])?,
                Change::Setting(n, v) => c.execute(
                    "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                    params![n, v],
                )?,
                Change::Auth(id, auth) => crate::registry_x509::store_auth(c, id, auth)?,
                Change::Ca(ca) => crate::registry_x509::store_ca(c, ca)?,
                Change::CaGone(n) => c.execute("DELETE FROM cas WHERE name = ?1", [n])?,
                Change::Module(m) => crate::registry_modules::store(c, m)?,
                Change::ModuleGone(d, m) => c.execute(
                    "DELETE FROM modules WHERE device_id = ?1 AND module_id = ?2",
                    [d, m],
                )?,
            };
            Ok(())
        })
    }

    /// Removes every entry `present` does not name (the mirror no longer has it).
    pub fn retain(&self, present: &Present) -> Result<(), RegistryError> {
        let mut gone = Vec::new();
        for d in self.devices()? {
            if !present.devices.contains(&d.id) {
                gone.push(Change::DeviceGone(d.id));
            }
        }
        for p in self.policies()? {
            if !present.policies.contains(&p.name) {
                gone.push(Change::PolicyGone(p.name));
            }
        }
        for id in self.device_auths()?.into_keys() {
            if !present.auths.contains(&id) {
                gone.push(Change::Auth(id, DeviceAuth::Sas));
            }
        }
        for ca in self.cas()? {
            if !present.cas.contains(&ca.name) {
                gone.push(Change::CaGone(ca.name));
            }
        }
        for (device, module) in self.all_modules()? {
            if !present.modules.contains(&(device.clone(), module.clone())) {
                gone.push(Change::ModuleGone(device, module));
            }
        }
        for change in gone {
            self.apply(&change)?;
        }
        Ok(())
    }

    /// The database file, which the activity log shares.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        // A panic while holding the lock cannot leave SQLite inconsistent; keep serving.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), RegistryError> {
        self.write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                params![name, value],
            )?;
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

    pub fn add_device(&self, id: &str) -> Result<Device, RegistryError> {
        if !valid_device_id(id) {
            return Err(RegistryError::BadDeviceId(id.to_string()));
        }
        let device = Device {
            id: id.to_string(),
            primary_key: new_key(),
            secondary_key: new_key(),
            enabled: true,
            created_at: unix_now(),
            last_connected_at: None,
        };
        self.write(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO devices (id, primary_key, secondary_key, enabled, created_at) VALUES (?1, ?2, ?3, 1, ?4)",
                params![device.id, device.primary_key.expose(), device.secondary_key.expose(), device.created_at],
            )?;
            if inserted == 0 {
                return Err(RegistryError::DeviceExists(id.to_string()));
            }
            Ok(((), Change::Device(device.clone())))
        })?;
        Ok(device)
    }

    pub fn device(&self, id: &str) -> Result<Option<Device>, RegistryError> {
        self.with(|c| device_in(c, id))
    }

    pub fn devices(&self) -> Result<Vec<Device>, RegistryError> {
        self.with(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))?;
            let rows = stmt.query_map([], device_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), RegistryError> {
        self.update_device(id, "UPDATE devices SET enabled = ?2 WHERE id = ?1", enabled)
    }

    pub fn delete_device(&self, id: &str) -> Result<(), RegistryError> {
        self.write_all(|c| {
            // A device added later under the same id starts with SAS, not this one's X.509,
            // and with no modules: in the mirror too, whose entries are separate.
            let mut changes: Vec<Change> = crate::registry_modules::module_ids_in(c, id)?
                .into_iter()
                .map(|m| Change::ModuleGone(id.to_string(), m))
                .collect();
            if c.execute("DELETE FROM device_x509 WHERE id = ?1", [id])? > 0 {
                changes.push(Change::Auth(id.to_string(), DeviceAuth::Sas));
            }
            c.execute("DELETE FROM modules WHERE device_id = ?1", [id])?;
            match c.execute("DELETE FROM devices WHERE id = ?1", [id])? {
                0 => Err(RegistryError::UnknownDevice(id.to_string())),
                _ => {
                    changes.push(Change::DeviceGone(id.to_string()));
                    Ok(((), changes))
                }
            }
        })
    }

    /// Replaces the primary (or secondary) key; the other keeps working meanwhile.
    pub fn rotate_key(&self, id: &str, secondary: bool) -> Result<Device, RegistryError> {
        let sql = match secondary {
            true => "UPDATE devices SET secondary_key = ?2 WHERE id = ?1",
            false => "UPDATE devices SET primary_key = ?2 WHERE id = ?1",
        };
        self.update_device(id, sql, new_key().expose())?;
        self.device(id)?
            .ok_or_else(|| RegistryError::UnknownDevice(id.to_string()))
    }

    /// Changes whenever another connection (the CLI) commits to the database, so a running
    /// hub can notice revocations cheaply.
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("PRAGMA data_version")?;
            Ok(stmt.query_row([], |r| r.get(0))?)
        })
    }

    /// Records a connection here only: in cluster mode each node knows when devices last
    /// connected to it, and the cluster is not written on every CONNECT.
    pub fn touch_device(&self, id: &str) -> Result<(), RegistryError> {
        let sql = "UPDATE devices SET last_connected_at = ?2 WHERE id = ?1";
        self.with(|c| match c.execute(sql, params![id, unix_now()])? {
            0 => Err(RegistryError::UnknownDevice(id.to_string())),
            _ => Ok(()),
        })
    }

    fn update_device(
        &self,
        id: &str,
        sql: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<(), RegistryError> {
        self.write(|c| match c.execute(sql, params![id, value])? {
            0 => Err(RegistryError::UnknownDevice(id.to_string())),
            _ => {
                let device = device_in(c, id)?;
                let device = device.ok_or_else(|| RegistryError::UnknownDevice(id.to_string()))?;
                Ok(((), Change::Device(device)))
            }
        })
    }

    pub fn add_policy(&self, name: &str, rights: &[Right]) -> Result<Policy, RegistryError> {
        let policy = Policy {
            name: name.to_string(),
            primary_key: new_key(),
            secondary_key: new_key(),
            rights: rights.iter().map(|r| r.name().to_string()).collect(),
        };
        self.write(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO policies (name, primary_key, secondary_key, rights) VALUES (?1, ?2, ?3, ?4)",
                params![name, policy.primary_key.expose(), policy.secondary_key.expose(), policy.rights.join(",")],
            )?;
            if inserted == 0 {
                return Err(RegistryError::PolicyExists(name.to_string()));
            }
            Ok(((), Change::Policy(policy.clone())))
        })?;
        Ok(policy)
    }

    /// Replaces one of a policy's keys; streams opened with the old key end (see
    /// [`crate::revocation`]).
    pub fn rotate_policy_key(&self, name: &str, secondary: bool) -> Result<Policy, RegistryError> {
        let mut policy = self
            .policy(name)?
            .ok_or_else(|| RegistryError::UnknownPolicy(name.to_string()))?;
        match secondary {
            true => policy.secondary_key = new_key(),
            false => policy.primary_key = new_key(),
        }
        self.write(|c| {
            c.execute(
                "UPDATE policies SET primary_key = ?2, secondary_key = ?3 WHERE name = ?1",
                params![
                    name,
                    policy.primary_key.expose(),
                    policy.secondary_key.expose()
                ],
            )?;
            Ok(((), Change::Policy(policy.clone())))
        })?;
        Ok(policy)
    }

    pub fn policies(&self) -> Result<Vec<Policy>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"
            ))?;
            let rows = stmt.query_map([], policy_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn delete_policy(&self, name: &str) -> Result<(), RegistryError> {
        self.write(
            |c| match c.execute("DELETE FROM policies WHERE name = ?1", [name])? {
                0 => Err(RegistryError::UnknownPolicy(name.to_string())),
                _ => Ok(((), Change::PolicyGone(name.to_string()))),
            },
        )
    }

    pub fn policy(&self, name: &str) -> Result<Option<Policy>, RegistryError> {
        self.with(|c| {
            let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = ?1");
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt.query_row([name], policy_from_row).optional()?)
        })
    }
}

fn device_in(c: &Connection, id: &str) -> Result<Option<Device>, RegistryError> {
    // Every stream request and device connect looks a device up: parse the SQL once.
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1");
    let mut stmt = c.prepare_cached(&sql)?;
    Ok(stmt.query_row([id], device_from_row).optional()?)
}

/// The database and the files SQLite keeps beside it in WAL mode.
fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let beside = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), beside("-wal"), beside("-shm")]
}

/// Creates `path` empty and owner-only if it does not exist. Left to SQLite, a new
/// database would get 0644 less the umask (and its -wal and -shm files the same).
fn create_private(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        // An empty file is an empty database to SQLite.
        Ok(file) => set_mode(&file, 0o600),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `file`'s mode exactly: the umask only ever takes bits away from a mode asked for at
/// creation, and one that takes the owner's away would leave the hub unable to read it.
pub fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Takes group and other access away from `path` if it has any, with a warning naming the
/// path and its old mode; a mode it cannot change is warned about and left (see
/// `DataDir::make_private` for why neither stops the hub).
pub fn make_private(path: &Path) {
    match remove_others_access(path) {
        Ok(None) => {}
        Ok(Some(old)) => tracing::warn!(
            "{} was mode {old:04o}, open to other local users; changed to {:04o} \
             (the data directory holds every key: rotate them if others may have read it)",
            path.display(),
            old & 0o700
        ),
        Err(e) => tracing::warn!(
            "{} is open to other local users and its mode cannot be changed: {e}",
            path.display()
        ),
    }
}

/// Takes group and other access away from `path` if it has any, and returns its mode from
/// before then. A missing path is left alone, and so is a symbolic link: changing the mode
/// would follow the link to a file outside the data directory.
fn remove_others_access(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() || mode & 0o077 == 0 {
            return Ok(None);
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_wal_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let reg = Registry::open(&path).unwrap();
        reg.add_device("dev1").unwrap();
        for file in sqlite_files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(reg);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let _reg = Registry::open(&path).unwrap();
        for file in sqlite_files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

    #[test]
    fn devices_and_policies_persist_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let reg = Registry::open(&path).unwrap();
        let dev = reg.add_device("dev1").unwrap();
        assert!(matches!(
            reg.add_device("dev1"),
            Err(RegistryError::DeviceExists(_))
        ));
        for bad in ["bad/id", ".", ".."] {
            assert!(matches!(
                reg.add_device(bad),
                Err(RegistryError::BadDeviceId(_))
            ));
        }
        reg.add_policy("service", &[Right::ServiceConnect]).unwrap();
        drop(reg);

        let reg = Registry::open(&path).unwrap();
        let got = reg.device("dev1").unwrap().unwrap();
        assert_eq!(got.primary_key, dev.primary_key);
        assert!(got.enabled);
        reg.set_enabled("dev1", false).unwrap();
        assert!(!reg.device("dev1").unwrap().unwrap().enabled);
        assert!(reg
            .policy("service")
            .unwrap()
            .unwrap()
            .allows(Right::ServiceConnect));
        assert!(!reg
            .policy("service")
            .unwrap()
            .unwrap()
            .allows(Right::RegistryWrite));
        let old = reg.device("dev1").unwrap().unwrap();
        let rotated = reg.rotate_key("dev1", false).unwrap();
        assert_ne!(rotated.primary_key, old.primary_key);
        assert_eq!(rotated.secondary_key, old.secondary_key);
        assert_eq!(reg.policies().unwrap().len(), 1);
        reg.delete_policy("service").unwrap();
        assert!(matches!(
            reg.delete_policy("service"),
            Err(RegistryError::UnknownPolicy(_))
        ));
        assert_eq!(Right::parse(" registry-read").unwrap(), Right::RegistryRead);
        assert!(Right::parse("root").is_err());
        reg.delete_device("dev1").unwrap();
        assert!(reg.device("dev1").unwrap().is_none());
        assert!(matches!(
            reg.delete_device("dev1"),
            Err(RegistryError::UnknownDevice(_))
        ));
    }
}
