//! What the registry holds — devices, their modules and how they authenticate, shared
//! access policies and their rights, CAs — and [`Change`], one edit to any of them as the
//! cluster's mirror carries it. Plain data: the parts that read and write the tables build
//! on these types.

use base64::{engine::general_purpose::STANDARD, Engine};
use device_streams_protocol::Secret;
use rand::RngCore;

use super::error::RegistryError;

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

/// A device's named sub-identity (Azure's module), with its own keys and status.
#[derive(Debug, Clone)]
pub struct Module {
    pub device_id: String,
    pub module_id: String,
    pub primary_key: Secret,
    pub secondary_key: Secret,
    pub enabled: bool,
    pub created_at: u64,
    pub last_connected_at: Option<u64>,
}

impl Module {
    /// The identity the hub knows it by: `<device>/<module>`.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.device_id, self.module_id)
    }
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

/// One change to the registry's devices, policies or settings, as a
/// [`Mirror`](super::store::Mirror) carries it.
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
    Module(Module),
    /// A module gone: its device and module ids.
    ModuleGone(String, String),
}
