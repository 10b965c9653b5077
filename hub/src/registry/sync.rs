//! This database as a copy of the cluster's registry: changes that come from the mirror
//! (another node's or the CLI's) are applied without being written back, and what the
//! mirror no longer holds is removed.

use std::collections::HashSet;

use super::{
    devices, error::RegistryError, lifecycle::remove_device, model::Change, model::DeviceAuth,
    modules, policies, store::store_setting, store::Registry, x509,
};

/// What a mirror holds, by name: the rest of a copy is [`Registry::retain`]ed away.
#[derive(Debug, Default)]
pub struct Present {
    pub devices: HashSet<String>,
    pub policies: HashSet<String>,
    /// Devices with an X.509 entry.
    pub auths: HashSet<String>,
    pub cas: HashSet<String>,
    /// (device, module).
    pub modules: HashSet<(String, String)>,
}

impl Registry {
    /// Applies a change that comes from the mirror (another node's or the CLI's), without
    /// writing it back. The connection time a device had here is kept.
    pub fn apply(&self, change: &Change) -> Result<(), RegistryError> {
        self.with(|c| {
            // How many rows each took does not matter: a mirrored removal of what is not
            // here (any more) is no error.
            match change {
                Change::Device(d) => devices::store(c, d)?,
                Change::DeviceGone(id) => remove_device(c, id).map(|_| 0)?,
                Change::Policy(p) => policies::store(c, p)?,
                Change::PolicyGone(name) => policies::remove(c, name)?,
                Change::Setting(name, value) => store_setting(c, name, value)?,
                Change::Auth(id, auth) => x509::store_auth(c, id, auth)?,
                Change::Ca(ca) => x509::store_ca(c, ca)?,
                Change::CaGone(name) => x509::remove_ca(c, name)?,
                Change::Module(m) => modules::store(c, m)?,
                Change::ModuleGone(device, module) => modules::remove(c, device, module)?,
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
}
