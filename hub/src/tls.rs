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

/// The MQTT port's config: the same certificate, without the main port's ALPN. A client
/// that offers ALPN names none of ours (`http/1.1`) there, and rustls refuses a handshake
/// whose offered protocols it cannot match; with none configured it ignores the offer.
pub fn for_mqtt(main: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::clone(main);
    config.alpn_protocols.clear();
    Arc::new(config)
}
