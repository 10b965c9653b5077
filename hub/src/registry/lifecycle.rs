//! A device together with what hangs off it: registering one that authenticates by X.509
//! (undone if its authentication is refused), and removing one with its modules and X.509
//! entry, so that a device added later under the same id starts afresh — with SAS and no
//! modules, in the mirror too, whose entries are separate.

use rusqlite::Connection;

use super::{
    error::RegistryError,
    model::{Change, Device, DeviceAuth},
    modules::module_ids_in,
    store::Registry,
    x509::{normalized, store_auth},
};

impl Registry {
    /// Registers a device that authenticates as `auth` (its SAS keys exist but are refused
    /// while it is an X.509 device). Thumbprints are normalised; a bad one adds nothing.
    pub fn add_device_with_auth(
        &self,
        id: &str,
        auth: &DeviceAuth,
    ) -> Result<Device, RegistryError> {
        let auth = normalized(auth)?;
        let device = self.add_device(id)?;
        if let Err(e) = self.set_device_auth(id, &auth) {
            let _ = self.delete_device(id);
            return Err(e);
        }
        Ok(device)
    }

    pub fn delete_device(&self, id: &str) -> Result<(), RegistryError> {
        self.write_all(|c| {
            // The mirror hears of the dependants first: should it refuse part way, the
            // device itself stays whole there (see `Registry::write_all`).
            let mut changes: Vec<Change> = module_ids_in(c, id)?
                .into_iter()
                .map(|m| Change::ModuleGone(id.to_string(), m))
                .collect();
            let (had_x509, removed) = remove_device(c, id)?;
            if had_x509 {
                changes.push(Change::Auth(id.to_string(), DeviceAuth::Sas));
            }
            match removed {
                false => Err(RegistryError::UnknownDevice(id.to_string())),
                true => {
                    changes.push(Change::DeviceGone(id.to_string()));
                    Ok(((), changes))
                }
            }
        })
    }
}

/// Removes device `id`, its modules and its X.509 entry, for a change made here or
/// mirrored (whose own removals of the dependants may arrive in any order). Says whether
/// it had an X.509 entry and whether the device was there.
pub(super) fn remove_device(c: &Connection, id: &str) -> rusqlite::Result<(bool, bool)> {
    let had_x509 = store_auth(c, id, &DeviceAuth::Sas)? > 0;
    c.execute("DELETE FROM modules WHERE device_id = ?1", [id])?;
    let removed = c.execute("DELETE FROM devices WHERE id = ?1", [id])? > 0;
    Ok((had_x509, removed))
}
