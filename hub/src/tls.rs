//! The hub's TLS server config, from a PEM certificate chain and a PEM private key.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use device_streams_protocol::tls::{load_certs, provider};
use rustls::{
    pki_types::{pem::PemObject, PrivateKeyDer},
    ServerConfig,
};

pub fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("cannot read a PEM private key from {}", key_file.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
