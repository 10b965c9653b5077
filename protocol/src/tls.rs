//! What both ends' TLS share: the crypto provider (and its cipher-suite order) and reading
//! PEM certificate files. The client config is the SDK's, the server config the hub's.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// rustls' ring provider with AES-128-GCM first (ring's default puts AES-256 first): still
/// a strong suite, and cheaper per byte; a stream's bytes are encrypted and decrypted twice
/// (service → hub → device), so bulk transfers feel it. Both ends use this order, so it is
/// what they agree on.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Reads every certificate in a PEM file; an empty or unreadable file is an error naming it.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate file {} is not valid PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "certificate file {} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}
