//! Devices in table `devices`: registering one with fresh keys, looking one up (every
//! stream request and device connect does), enabling, rotating keys, and the connection
//! time each node records for itself. Removing a device, which takes its modules and
//! X.509 entry with it, is [`super::lifecycle`]'s.

use device_streams_protocol::{sas::unix_now, wire::valid_device_id, Secret};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    error::RegistryError,
    model::{new_key, Change, Device},
    store::Registry,
};

const COLUMNS: &str = "id, primary_key, secondary_key, enabled, created_at, last_connected_at";

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

impl Registry {
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
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM devices ORDER BY id"))?;
            let rows = stmt.query_map([], device_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), RegistryError> {
        self.update_device(id, "UPDATE devices SET enabled = ?2 WHERE id = ?1", enabled)
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
}

fn device_in(c: &Connection, id: &str) -> Result<Option<Device>, RegistryError> {
    // Every stream request and device connect looks a device up: parse the SQL once.
    let sql = format!("SELECT {COLUMNS} FROM devices WHERE id = ?1");
    let mut stmt = c.prepare_cached(&sql)?;
    Ok(stmt.query_row([id], device_from_row).optional()?)
}

/// Whether device `id` is registered, for the parts that hang things off a device.
pub(super) fn exists(c: &Connection, id: &str) -> Result<bool, RegistryError> {
    let found = c.query_row("SELECT 1 FROM devices WHERE id = ?1", [id], |_| Ok(()));
    Ok(found.optional()?.is_some())
}

/// Writes a device as mirrored from the cluster; the connection time it had here is kept.
pub(super) fn store(c: &Connection, d: &Device) -> rusqlite::Result<usize> {
    c.execute(
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DB_FILE;

    #[test]
    fn devices_persist_across_opens() {
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
        drop(reg);

        let reg = Registry::open(&path).unwrap();
        let got = reg.device("dev1").unwrap().unwrap();
        assert_eq!(got.primary_key, dev.primary_key);
        assert!(got.enabled);
        reg.set_enabled("dev1", false).unwrap();
        assert!(!reg.device("dev1").unwrap().unwrap().enabled);
        let old = reg.device("dev1").unwrap().unwrap();
        let rotated = reg.rotate_key("dev1", false).unwrap();
        assert_ne!(rotated.primary_key, old.primary_key);
        assert_eq!(rotated.secondary_key, old.secondary_key);
        reg.delete_device("dev1").unwrap();
        assert!(reg.device("dev1").unwrap().is_none());
        assert!(matches!(
            reg.delete_device("dev1"),
            Err(RegistryError::UnknownDevice(_))
        ));
    }
}
