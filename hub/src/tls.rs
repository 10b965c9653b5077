//! The hub's TLS server config, and its certificate, which can change under a running hub:
//! an ACME client renewing `--tls-cert`, or `stream-hub cert` re-issuing the self-made one.
//!
//! The config resolves its certificate through a [`CertStore`] rather than holding one, so
//! a new certificate is swapped in without a restart ([`CertStore::reload`], on SIGHUP or
//! when the files change — [`watch`]); connections already open keep the one they began
//! with. A reload that fails (half-written files, a key that does not match) keeps the
//! certificate in use and says why.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use device_streams_protocol::tls::{load_certs, provider};
use rustls::{
    pki_types::{pem::PemObject, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio_util::sync::CancellationToken;

/// How often [`watch`] looks at the certificate files.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The certificate and key files the hub serves, and what was last loaded from them.
#[derive(Debug)]
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads `cert_file` (PEM chain, leaf first) and `key_file` (PEM private key).
    pub fn open(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertStore> {
        Ok(CertStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(load(cert_file, key_file)?)),
        })
    }

    /// Reads the files again; on success new handshakes use the new certificate.
    pub fn reload(&self) -> anyhow::Result<()> {
        let loaded = load(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// When either file last changed (the later of the two), if both can be read.
    fn modified(&self) -> Option<SystemTime> {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some(mtime(&self.cert_file)?.max(mtime(&self.key_file)?))
    }

    /// Reloads and logs the outcome; `why` says what asked for it.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.cert_file.display(),
                "TLS certificate reloaded ({why})"
            ),
            Err(e) => tracing::error!(
                "TLS certificate not reloaded ({why}), still serving the previous one: {e:#}"
            ),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("cannot read a PEM private key from {}", key_file.display()))?;
    let key = CertifiedKey::from_der(certs, key, &provider()).with_context(|| {
        format!(
            "{} and {} do not make a certificate and its key",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(key)
}

/// The server config, resolving its certificate through `store`. It asks clients for a
/// certificate (X.509 devices), which none needs to give ([`crate::x509::AnyClientCert`]).
pub fn server_config(store: Arc<CertStore>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(crate::x509::AnyClientCert::new(provider())))
        .with_cert_resolver(store);
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

/// Reloads `store` whenever its files change, until `shutdown`.
pub async fn watch(store: Arc<CertStore>, shutdown: CancellationToken) {
    let mut seen = store.modified();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = store.modified();
        if now.is_some() && now != seen {
            seen = now;
            store.reload_logged("its files changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, host: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    fn leaf(store: &CertStore) -> Vec<u8> {
        let current = store.current.read().unwrap();
        current.cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a", "one.example");
        let store = CertStore::open(&cert, &key).unwrap();
        let first = leaf(&store);

        let (cert2, key2) = pair(dir.path(), "b", "two.example");
        std::fs::copy(&cert2, &cert).unwrap();
        std::fs::copy(&key2, &key).unwrap();
        store.reload().unwrap();
        let second = leaf(&store);
        assert_ne!(first, second);

        // A certificate with another certificate's key: refused, the old one stays.
        std::fs::copy(dir.path().join("a.pem"), dir.path().join("keep.pem")).unwrap();
        let (cert3, _) = pair(dir.path(), "c", "three.example");
        std::fs::copy(&cert3, &cert).unwrap();
        let err = store.reload().unwrap_err();
        assert!(
            format!("{err:#}").contains("do not make a certificate"),
            "{err:#}"
        );
        assert_eq!(leaf(&store), second);
    }
}
