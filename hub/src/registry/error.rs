//! Why a registry operation failed: one error type for every part of the registry, so the
//! REST API, the CLI and the cluster map each cause once ([`crate::refusal`]).

use std::{io, path::PathBuf};

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
