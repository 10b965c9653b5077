//! Module identities: a device's named sub-identities (Azure's modules), each with its own
//! keys and status, in table `modules`. A module connects and takes streams as
//! `<device>/<module>`, the identity string the hub's sessions, presence, stream table and
//! activity log use; device ids cannot hold a `/`, so the two never collide.

use device_streams_protocol::{sas::unix_now, wire::valid_device_id, Secret};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    error::RegistryError,
    model::{new_key, Change, Module},
    store::Registry,
};

const COLUMNS: &str =
    "device_id, module_id, primary_key, secondary_key, enabled, created_at, last_connected_at";

fn module_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Module> {
    Ok(Module {
        device_id: row.get(0)?,
        module_id: row.get(1)?,
        primary_key: Secret::new(row.get::<_, String>(2)?),
        secondary_key: Secret::new(row.get::<_, String>(3)?),
        enabled: row.get(4)?,
        created_at: row.get(5)?,
        last_connected_at: row.get(6)?,
    })
}

/// Splits an identity into its device and, for a module, its module.
pub fn split_identity(identity: &str) -> (&str, Option<&str>) {
    match identity.split_once('/') {
        Some((device, module)) => (device, Some(module)),
        None => (identity, None),
    }
}

/// Whether `identity` is a device id or `<device id>/<module id>`, each part valid.
pub fn valid_identity(identity: &str) -> bool {
    match split_identity(identity) {
        (device, Some(module)) => valid_device_id(device) && valid_device_id(module),
        (device, None) => valid_device_id(device),
    }
}

fn unknown(device: &str, module: &str) -> RegistryError {
    RegistryError::UnknownDevice(format!("{device}/{module}"))
}

impl Registry {
    /// Adds module `module` to the registered device `device`, with fresh keys.
    pub fn add_module(&self, device: &str, module: &str) -> Result<Module, RegistryError> {
        if !valid_device_id(module) {
            return Err(RegistryError::BadDeviceId(module.to_string()));
        }
        if self.device(device)?.is_none() {
            return Err(RegistryError::UnknownDevice(device.to_string()));
        }
        let m = Module {
            device_id: device.to_string(),
            module_id: module.to_string(),
            primary_key: new_key(),
            secondary_key: new_key(),
            enabled: true,
            created_at: unix_now(),
            last_connected_at: None,
        };
        self.write(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO modules (device_id, module_id, primary_key, secondary_key, enabled, created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                params![m.device_id, m.module_id, m.primary_key.expose(), m.secondary_key.expose(), m.created_at],
            )?;
            match inserted {
                0 => Err(RegistryError::DeviceExists(m.identity())),
                _ => Ok(((), Change::Module(m.clone()))),
            }
        })?;
        Ok(m)
    }

    pub fn module(&self, device: &str, module: &str) -> Result<Option<Module>, RegistryError> {
        self.with(|c| module_in(c, device, module))
    }

    /// A device's modules, by id.
    pub fn modules(&self, device: &str) -> Result<Vec<Module>, RegistryError> {
        self.with(|c| {
            let sql =
                format!("SELECT {COLUMNS} FROM modules WHERE device_id = ?1 ORDER BY module_id");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([device], module_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn set_module_enabled(
        &self,
        device: &str,
        module: &str,
        enabled: bool,
    ) -> Result<(), RegistryError> {
        let sql = "UPDATE modules SET enabled = ?3 WHERE device_id = ?1 AND module_id = ?2";
        self.update_module(device, module, sql, enabled)
    }

    pub fn delete_module(&self, device: &str, module: &str) -> Result<(), RegistryError> {
        self.write(|c| match remove(c, device, module)? {
            0 => Err(unknown(device, module)),
            _ => Ok(((), Change::ModuleGone(device.into(), module.into()))),
        })
    }

    /// Replaces a module's primary (or secondary) key; the other keeps working meanwhile.
    pub fn rotate_module_key(
        &self,
        device: &str,
        module: &str,
        secondary: bool,
    ) -> Result<Module, RegistryError> {
        let sql = match secondary {
            true => "UPDATE modules SET secondary_key = ?3 WHERE device_id = ?1 AND module_id = ?2",
            false => "UPDATE modules SET primary_key = ?3 WHERE device_id = ?1 AND module_id = ?2",
        };
        self.update_module(device, module, sql, new_key().expose())?;
        self.module(device, module)?
            .ok_or_else(|| unknown(device, module))
    }

    /// Records a connection here only, as [`Registry::touch_device`] does.
    pub fn touch_module(&self, device: &str, module: &str) -> Result<(), RegistryError> {
        let sql =
            "UPDATE modules SET last_connected_at = ?3 WHERE device_id = ?1 AND module_id = ?2";
        self.with(
            |c| match c.execute(sql, params![device, module, unix_now()])? {
                0 => Err(unknown(device, module)),
                _ => Ok(()),
            },
        )
    }

    /// Every module, as (device, module).
    pub fn all_modules(&self) -> Result<Vec<(String, String)>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT device_id, module_id FROM modules")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Whether `identity` (a device, or `<device>/<module>`) is registered (`None`: it is
    /// not) and enabled; a module is enabled only while its device is too.
    pub fn identity_enabled(&self, identity: &str) -> Result<Option<bool>, RegistryError> {
        let (device, module) = split_identity(identity);
        let Some(d) = self.device(device)? else {
            return Ok(None);
        };
        match module {
            None => Ok(Some(d.enabled)),
            Some(m) => Ok(self.module(device, m)?.map(|m| m.enabled && d.enabled)),
        }
    }

    fn update_module(
        &self,
        device: &str,
        module: &str,
        sql: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<(), RegistryError> {
        self.write(|c| match c.execute(sql, params![device, module, value])? {
            0 => Err(unknown(device, module)),
            _ => {
                let changed = module_in(c, device, module)?;
                let changed = changed.ok_or_else(|| unknown(device, module))?;
                Ok(((), Change::Module(changed)))
            }
        })
    }
}

fn module_in(c: &Connection, device: &str, module: &str) -> Result<Option<Module>, RegistryError> {
    let sql = format!("SELECT {COLUMNS} FROM modules WHERE device_id = ?1 AND module_id = ?2");
    let mut stmt = c.prepare_cached(&sql)?;
    Ok(stmt
        .query_row([device, module], module_from_row)
        .optional()?)
}

/// The ids of `device`'s modules.
pub(super) fn module_ids_in(c: &Connection, device: &str) -> Result<Vec<String>, RegistryError> {
    let mut stmt = c.prepare_cached("SELECT module_id FROM modules WHERE device_id = ?1")?;
    let rows = stmt.query_map([device], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes a module, for a change made here or mirrored; how many rows went (0 or 1).
pub(super) fn remove(c: &Connection, device: &str, module: &str) -> rusqlite::Result<usize> {
    let sql = "DELETE FROM modules WHERE device_id = ?1 AND module_id = ?2";
    c.execute(sql, [device, module])
}

/// Writes a module as mirrored from the cluster; the connection time it had here is kept.
pub(super) fn store(c: &Connection, m: &Module) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO modules (device_id, module_id, primary_key, secondary_key, enabled, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(device_id, module_id) DO UPDATE SET \
         primary_key = ?3, secondary_key = ?4, enabled = ?5, created_at = ?6",
        params![
            m.device_id,
            m.module_id,
            m.primary_key.expose(),
            m.secondary_key.expose(),
            m.enabled,
            m.created_at
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_belong_to_a_device_and_follow_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        assert!(matches!(
            reg.add_module("dev1", "m"),
            Err(RegistryError::UnknownDevice(_))
        ));
        reg.add_device("dev1").unwrap();
        let m = reg.add_module("dev1", "m").unwrap();
        assert_eq!(m.identity(), "dev1/m");
        assert!(matches!(
            reg.add_module("dev1", "m"),
            Err(RegistryError::DeviceExists(_))
        ));
        assert!(matches!(
            reg.add_module("dev1", "a/b"),
            Err(RegistryError::BadDeviceId(_))
        ));
        assert_eq!(reg.identity_enabled("dev1/m").unwrap(), Some(true));
        assert_eq!(reg.identity_enabled("dev1/x").unwrap(), None);
        reg.set_enabled("dev1", false).unwrap();
        assert_eq!(reg.identity_enabled("dev1/m").unwrap(), Some(false));
        reg.set_enabled("dev1", true).unwrap();
        reg.set_module_enabled("dev1", "m", false).unwrap();
        assert_eq!(reg.identity_enabled("dev1/m").unwrap(), Some(false));
        let rotated = reg.rotate_module_key("dev1", "m", true).unwrap();
        assert_eq!(rotated.primary_key, m.primary_key);
        assert_ne!(rotated.secondary_key, m.secondary_key);
        assert_eq!(reg.modules("dev1").unwrap().len(), 1);
        reg.delete_device("dev1").unwrap();
        reg.add_device("dev1").unwrap();
        assert!(reg.modules("dev1").unwrap().is_empty());
        assert!(valid_identity("d/m") && valid_identity("d"));
        assert!(!valid_identity("d/m/x") && !valid_identity("/m") && !valid_identity("d/"));
    }
}
