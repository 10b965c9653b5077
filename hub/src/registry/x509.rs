//! The registry's X.509 side: how each device authenticates (table `device_x509`; a device
//! without a row uses SAS) and the CAs device certificates may chain to (table `cas`).
//! Thumbprints are stored normalised, as [`normalize_thumbprint`] makes them.

use std::collections::HashMap;

use device_streams_protocol::sas::unix_now;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    devices,
    error::RegistryError,
    model::{CaCert, Change, DeviceAuth},
    store::Registry,
};

const SELF_SIGNED: &str = "selfSigned";
const CERTIFICATE_AUTHORITY: &str = "certificateAuthority";

fn auth_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceAuth> {
    let kind: String = row.get(0)?;
    Ok(match kind.as_str() {
        SELF_SIGNED => DeviceAuth::SelfSigned {
            primary: row.get(1)?,
            secondary: row.get(2)?,
        },
        // Only this program writes the table; an unknown kind cannot be SAS by accident.
        _ => DeviceAuth::CertificateAuthority,
    })
}

/// The thumbprint normalised, or the error naming what was given.
fn thumbprint(text: &str) -> Result<String, RegistryError> {
    normalize_thumbprint(text).ok_or_else(|| RegistryError::BadThumbprint(text.to_string()))
}

impl Registry {
    /// How `id` authenticates (SAS unless it has an X.509 row).
    pub fn device_auth(&self, id: &str) -> Result<DeviceAuth, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, primary_thumbprint, secondary_thumbprint FROM device_x509 WHERE id = ?1",
            )?;
            Ok(stmt.query_row([id], auth_from_row).optional()?.unwrap_or_default())
        })
    }

    /// Every X.509 device's authentication, by id; the rest use SAS.
    pub fn device_auths(&self) -> Result<HashMap<String, DeviceAuth>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT kind, primary_thumbprint, secondary_thumbprint, id FROM device_x509",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(3)?, auth_from_row(r)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Sets how `id` authenticates.
    pub fn set_device_auth(&self, id: &str, auth: &DeviceAuth) -> Result<(), RegistryError> {
        let auth = normalized(auth)?;
        self.write(|c| {
            if !devices::exists(c, id)? {
                return Err(RegistryError::UnknownDevice(id.to_string()));
            }
            store_auth(c, id, &auth)?;
            Ok(((), Change::Auth(id.to_string(), auth.clone())))
        })
    }

    /// Replaces a thumbprint device's primary (or secondary) thumbprint; `None` removes it.
    /// A session that signed in with the old one is cut ([`crate::revocation`]).
    pub fn set_thumbprint(
        &self,
        id: &str,
        value: Option<&str>,
        secondary: bool,
    ) -> Result<DeviceAuth, RegistryError> {
        let value = value.map(thumbprint).transpose()?;
        let DeviceAuth::SelfSigned {
            mut primary,
            secondary: mut second,
        } = self.device_auth(id)?
        else {
            return Err(RegistryError::NotThumbprintDevice(id.to_string()));
        };
        match secondary {
            true => second = value,
            false => primary = value,
        }
        let auth = DeviceAuth::SelfSigned {
            primary,
            secondary: second,
        };
        self.set_device_auth(id, &auth)?;
        Ok(auth)
    }

    /// Registers a CA certificate (DER) under `name`.
    pub fn add_ca(&self, name: &str, der: &[u8]) -> Result<CaCert, RegistryError> {
        let ca = CaCert {
            name: name.to_string(),
            der: der.to_vec(),
            added_at: unix_now(),
        };
        self.write(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO cas (name, der, added_at) VALUES (?1, ?2, ?3)",
                params![ca.name, ca.der, ca.added_at],
            )?;
            match inserted {
                0 => Err(RegistryError::CaExists(name.to_string())),
                _ => Ok(((), Change::Ca(ca.clone()))),
            }
        })?;
        Ok(ca)
    }

    pub fn cas(&self) -> Result<Vec<CaCert>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT name, der, added_at FROM cas ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok(CaCert {
                    name: r.get(0)?,
                    der: r.get(1)?,
                    added_at: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Removes a CA; sessions whose certificates chained to it are cut.
    pub fn delete_ca(&self, name: &str) -> Result<(), RegistryError> {
        self.write(|c| match remove_ca(c, name)? {
            0 => Err(RegistryError::UnknownCa(name.to_string())),
            _ => Ok(((), Change::CaGone(name.to_string()))),
        })
    }
}

/// Writes how `id` authenticates (no row: SAS), for a change made here or mirrored.
pub(super) fn store_auth(c: &Connection, id: &str, auth: &DeviceAuth) -> rusqlite::Result<usize> {
    match auth {
        DeviceAuth::Sas => c.execute("DELETE FROM device_x509 WHERE id = ?1", [id]),
        DeviceAuth::SelfSigned { primary, secondary } => c.execute(
            "INSERT OR REPLACE INTO device_x509 (id, kind, primary_thumbprint, secondary_thumbprint) VALUES (?1, ?2, ?3, ?4)",
            params![id, SELF_SIGNED, primary, secondary],
        ),
        DeviceAuth::CertificateAuthority => c.execute(
            "INSERT OR REPLACE INTO device_x509 (id, kind) VALUES (?1, ?2)",
            params![id, CERTIFICATE_AUTHORITY],
        ),
    }
}

/// Writes a CA as mirrored from the cluster (replacing one of the same name).
pub(super) fn store_ca(c: &Connection, ca: &CaCert) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT OR REPLACE INTO cas (name, der, added_at) VALUES (?1, ?2, ?3)",
        params![ca.name, ca.der, ca.added_at],
    )
}

/// Removes a CA, for a change made here or mirrored; how many rows went (0 or 1).
pub(super) fn remove_ca(c: &Connection, name: &str) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM cas WHERE name = ?1", [name])
}

/// A thumbprint as an admin may write it (any case, bytes separated by `:` or spaces), as
/// the hub stores and compares it: lower-case hex of a SHA-1 (40) or SHA-256 (64) digest.
pub fn normalize_thumbprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = matches!(hex.len(), 40 | 64) && hex.chars().all(|c| c.is_ascii_hexdigit());
    valid.then_some(hex)
}

/// `auth` with its thumbprints normalised; a self-signed device needs at least one.
pub(super) fn normalized(auth: &DeviceAuth) -> Result<DeviceAuth, RegistryError> {
    Ok(match auth {
        DeviceAuth::SelfSigned { primary, secondary } => DeviceAuth::SelfSigned {
            primary: primary.as_deref().map(thumbprint).transpose()?,
            secondary: secondary.as_deref().map(thumbprint).transpose()?,
        },
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_devices_and_cas_persist_and_deleting_a_device_forgets_its_auth() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        let upper = "AB:".repeat(31) + "AB";
        let auth = DeviceAuth::SelfSigned {
            primary: Some(upper),
            secondary: None,
        };
        reg.add_device_with_auth("cam", &auth).unwrap();
        let lower = "ab".repeat(32);
        assert_eq!(
            reg.device_auth("cam").unwrap(),
            DeviceAuth::SelfSigned {
                primary: Some(lower.clone()),
                secondary: None
            }
        );
        let bad = DeviceAuth::SelfSigned {
            primary: Some("xyz".into()),
            secondary: None,
        };
        assert!(matches!(
            reg.add_device_with_auth("bad", &bad),
            Err(RegistryError::BadThumbprint(_))
        ));
        assert!(reg.device("bad").unwrap().is_none());
        let sha1 = "0".repeat(40);
        let after = reg.set_thumbprint("cam", Some(&sha1), true).unwrap();
        assert_eq!(
            after,
            DeviceAuth::SelfSigned {
                primary: Some(lower),
                secondary: Some(sha1)
            }
        );
        reg.add_device("plain").unwrap();
        assert_eq!(reg.device_auth("plain").unwrap(), DeviceAuth::Sas);
        assert!(matches!(
            reg.set_thumbprint("plain", Some(&"1".repeat(40)), false),
            Err(RegistryError::NotThumbprintDevice(_))
        ));
        assert_eq!(reg.device_auths().unwrap().len(), 1);
        reg.delete_device("cam").unwrap();
        reg.add_device("cam").unwrap();
        assert_eq!(reg.device_auth("cam").unwrap(), DeviceAuth::Sas);

        reg.add_ca("root", b"der").unwrap();
        assert!(matches!(
            reg.add_ca("root", b"x"),
            Err(RegistryError::CaExists(_))
        ));
        assert_eq!(reg.cas().unwrap()[0].der, b"der");
        reg.delete_ca("root").unwrap();
        assert!(matches!(
            reg.delete_ca("root"),
            Err(RegistryError::UnknownCa(_))
        ));
    }
}
