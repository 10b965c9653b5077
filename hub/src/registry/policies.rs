//! Shared access policies in table `policies`: what services sign their tokens with, and
//! the rights each grants.

use device_streams_protocol::Secret;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    error::RegistryError,
    model::{new_key, Change, Policy, Right},
    store::Registry,
};

const COLUMNS: &str = "name, primary_key, secondary_key, rights";

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

impl Registry {
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
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM policies ORDER BY name"))?;
            let rows = stmt.query_map([], policy_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn delete_policy(&self, name: &str) -> Result<(), RegistryError> {
        self.write(|c| match remove(c, name)? {
            0 => Err(RegistryError::UnknownPolicy(name.to_string())),
            _ => Ok(((), Change::PolicyGone(name.to_string()))),
        })
    }

    pub fn policy(&self, name: &str) -> Result<Option<Policy>, RegistryError> {
        self.with(|c| {
            let sql = format!("SELECT {COLUMNS} FROM policies WHERE name = ?1");
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt.query_row([name], policy_from_row).optional()?)
        })
    }
}

/// Writes a policy as mirrored from the cluster (replacing one of the same name).
pub(super) fn store(c: &Connection, p: &Policy) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT OR REPLACE INTO policies (name, primary_key, secondary_key, rights) \
         VALUES (?1, ?2, ?3, ?4)",
        params![
            p.name,
            p.primary_key.expose(),
            p.secondary_key.expose(),
            p.rights.join(",")
        ],
    )
}

/// Removes a policy, for a change made here or mirrored; how many rows went (0 or 1).
pub(super) fn remove(c: &Connection, name: &str) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM policies WHERE name = ?1", [name])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DB_FILE;

    #[test]
    fn policies_persist_across_opens_with_their_rights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let reg = Registry::open(&path).unwrap();
        reg.add_policy("service", &[Right::ServiceConnect]).unwrap();
        assert!(matches!(
            reg.add_policy("service", &[]),
            Err(RegistryError::PolicyExists(_))
        ));
        drop(reg);

        let reg = Registry::open(&path).unwrap();
        let policy = reg.policy("service").unwrap().unwrap();
        assert!(policy.allows(Right::ServiceConnect));
        assert!(!policy.allows(Right::RegistryWrite));
        let rotated = reg.rotate_policy_key("service", true).unwrap();
        assert_eq!(rotated.primary_key, policy.primary_key);
        assert_ne!(rotated.secondary_key, policy.secondary_key);
        assert_eq!(reg.policies().unwrap().len(), 1);
        reg.delete_policy("service").unwrap();
        assert!(matches!(
            reg.delete_policy("service"),
            Err(RegistryError::UnknownPolicy(_))
        ));
        assert_eq!(Right::parse(" registry-read").unwrap(), Right::RegistryRead);
        assert!(Right::parse("root").is_err());
    }
}
