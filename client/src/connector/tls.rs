//! Client TLS configs: trust one CA file (a self-hosted hub) or the operating system's roots.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use device_streams_protocol::tls::{load_certs, provider};
use rustls::{ClientConfig, RootCertStore};

/// A client config trusting `ca_file` if given, else the operating system's roots.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert).with_context(|| {
                    format!("CA file {} holds an unusable certificate", path.display())
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // One malformed system certificate should not make every other one unusable.
                let _ = roots.add(cert);
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "no system CA certificates found; pass --ca-file"
            );
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
