//! Every table of the registry database, made (if missing) each time it opens, so an
//! older database gains the tables added since. One list, so opening the database needs
//! none of the parts that use the tables.

/// The registry proper: settings, devices and their X.509 entries, modules, CAs, policies.
const REGISTRY: &str = "
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
);
CREATE TABLE IF NOT EXISTS modules (
    device_id TEXT NOT NULL,
    module_id TEXT NOT NULL,
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    last_connected_at INTEGER,
    PRIMARY KEY (device_id, module_id)
);";

/// What a running hub publishes for the CLI ([`super::live`]): presence, open streams,
/// and the CLI's requests to close one. Made with the registry so that the CLI can read
/// them before any hub has run.
const LIVE: &str = "
CREATE TABLE IF NOT EXISTS presence (
    device TEXT PRIMARY KEY, run TEXT NOT NULL,
    online_since INTEGER, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_streams (
    id TEXT PRIMARY KEY, run TEXT NOT NULL, device TEXT NOT NULL, name TEXT NOT NULL,
    policy TEXT NOT NULL, opened_at INTEGER NOT NULL,
    bytes_to_device INTEGER NOT NULL, bytes_from_device INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stream_close_requests (id TEXT PRIMARY KEY, requested_at INTEGER NOT NULL);";

/// Makes every table that is missing.
pub(super) fn create(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    c.execute_batch(REGISTRY)?;
    c.execute_batch(LIVE)
}
