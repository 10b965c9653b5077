//! Client TLS configs: trust one CA file (a self-hosted hub) or the operating system's roots;
//! an X.509 device's also presents its certificate ([`client_config_with_cert`]).

use std::{path::Path, sync::Arc};

use anyhow::Context;
use device_streams_protocol::tls::{load_certs, provider};
use rustls::{
    pki_types::{pem::PemObject, PrivateKeyDer},
    ClientConfig, RootCertStore,
};

/// A client config trusting `ca_file` if given, else the operating system's roots.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] that presents the client certificate in `cert_file` (PEM chain, leaf
/// first) with the private key in `key_file` (PEM): an X.509 device's credential.
pub fn client_config_with_cert(
    ca_file: Option<&Path>,
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<Arc<ClientConfig>> {
    let certs = load_certs(cert_file)?;
    // The error names the file only: the key's bytes never reach a message.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| {
        anyhow::anyhow!("cannot read a PEM private key from {}", key_file.display())
    })?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_file)?)
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not make a client certificate and its key: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// `ca_file`'s certificates, or the operating system's roots.
fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
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
    Ok(roots)
}
