//! TLS everywhere, with rustls (ring provider): client configs that trust either the
//! system's roots or one CA file (self-hosted hubs), the hub's server config, and
//! dialing a TLS connection with a bound on every step — through an HTTP proxy when the
//! environment names one ([`crate::proxy`]).

use std::{io, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore, ServerConfig,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{
    keepalive,
    proxy::{HttpProxy, ProxyError, ProxySettings},
    read_ahead::ReadAhead,
    resolve::Resolver,
    spare::{Spares, SPARE_TTL},
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first (ring's default puts AES-256 first): still a strong suite, and
    // cheaper per byte; a stream's bytes are encrypted and decrypted twice (service → hub
    // → device), so bulk transfers feel it. Both ends use this order, so it is what they agree.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// What a client's TLS runs on: the TCP socket with read-ahead while data comes in bulk
/// (rustls alone reads 4 KiB per system call).
pub type Transport = ReadAhead<TcpStream>;

/// A client's TLS connection to the hub.
pub type ClientTls = TlsStream<Transport>;

/// A TLS connection to `host:port` with nothing in flight, which a WebSocket or request to
/// that same `host:port` may use instead of dialing: the service proxy's connection that
/// just carried the stream request (our hub streams on the port it serves REST on;
/// Azure's streaming endpoint is another host), the device proxy's dial made ahead
/// ([`crate::ws::dial`]), or a spare ([`crate::spare`]). It takes a TCP connect and a TLS
/// handshake off a stream's set-up.
pub struct Reusable {
    pub host: String,
    pub port: u16,
    pub tls: ClientTls,
}

impl Reusable {
    /// Whether this connection leads where a connection to `host:port` must go.
    pub fn leads_to(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.eq_ignore_ascii_case(host)
    }
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

/// The hub's server config from a PEM certificate chain and a PEM private key.
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

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: io::Error },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake with {addr} failed: {cause}")]
    Handshake { addr: String, cause: io::Error },
    #[error("TLS handshake with {addr} timed out after {after:?}")]
    HandshakeTimeout { addr: String, after: Duration },
    #[error("cannot reach {addr} through the proxy: {cause}")]
    Proxy { addr: String, cause: ProxyError },
    #[error("cannot connect to {addr}: {cause}")]
    ProxySettings {
        addr: String,
        cause: Arc<ProxyError>,
    },
}

/// Dials TLS connections: TCP connect (through the environment's `HTTPS_PROXY` unless
/// `NO_PROXY` names the host) and TLS handshake, each within `timeout`.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
    pub timeout: Duration,
    /// A bad `HTTPS_PROXY` fails each dial with its reason rather than being ignored.
    proxy: Result<Arc<ProxySettings>, Arc<ProxyError>>,
    resolver: Resolver,
    /// Set by [`Connector::with_spares`]: stream dials keep one connection ready.
    spares: Option<Spares>,
}

impl Connector {
    /// A connector that honours `HTTPS_PROXY` / `NO_PROXY` from the environment.
    pub fn new(config: Arc<ClientConfig>, timeout: Duration) -> Self {
        Connector {
            connector: TlsConnector::from(config),
            timeout,
            proxy: ProxySettings::from_env().map(Arc::new).map_err(Arc::new),
            resolver: Resolver::default(),
            spares: None,
        }
    }

    /// The same connector with explicit proxy settings instead of the environment's.
    pub fn with_proxy(mut self, settings: ProxySettings) -> Self {
        self.proxy = Ok(Arc::new(settings));
        self
    }

    /// The same connector, keeping a spare connection after each [`Connector::connect_for_stream`]
    /// (see [`crate::spare`]).
    pub fn with_spares(mut self) -> Self {
        self.spares = Some(Spares::default());
        self
    }

    /// The spares, when kept.
    pub fn spares(&self) -> Option<&Spares> {
        self.spares.as_ref()
    }

    /// A connection for a stream's set-up: the spare if one is ready, else a new dial.
    pub async fn connect_for_stream(&self, host: &str, port: u16) -> Result<ClientTls, DialError> {
        match self.spares.as_ref().and_then(|s| s.take(host, port)) {
            Some(tls) => Ok(tls),
            None => self.connect(host, port).await,
        }
    }

    /// Keeps `idle`, a connection that nothing else will use, as the spare, if spares are
    /// kept (the service proxy's request connection when the stream's WebSocket goes to
    /// another host, as with Azure).
    pub fn offer_spare(&self, idle: Reusable) {
        if let Some(spares) = &self.spares {
            spares.put(idle);
        }
    }

    /// Dials the next stream's spare to `host:port` in the background, if spares are kept
    /// and none is ready. Called once a stream is open, so the dial does not compete with
    /// its set-up for the CPU.
    pub fn prepare_spare(&self, host: &str, port: u16) {
        let Some(spares) = &self.spares else { return };
        if spares.is_ready() {
            return;
        }
        let (connector, spares, host) = (self.clone(), spares.clone(), host.to_string());
        // Bounded by the connector's timeouts and the spare's lifetime; a failed spare is no loss.
        tokio::spawn(async move {
            if let Ok(tls) = connector.connect(&host, port).await {
                spares.put(Reusable { host, port, tls });
                tokio::time::sleep(SPARE_TTL).await;
                spares.expire();
            }
        });
    }

    pub async fn connect(&self, host: &str, port: u16) -> Result<ClientTls, DialError> {
        let addr = format!("{host}:{port}");
        let proxy = match &self.proxy {
            Ok(settings) => settings.for_host(host),
            Err(e) => {
                return Err(DialError::ProxySettings {
                    addr,
                    cause: e.clone(),
                })
            }
        };
        let tcp = tokio::time::timeout(self.timeout, self.tcp(host, port, proxy))
            .await
            .map_err(|_| {
                // The address may be stale: resolve again next time.
                self.resolver.forget(host, port);
                DialError::ConnectTimeout {
                    addr: addr.clone(),
                    after: self.timeout,
                }
            })??;
        // Interactive sessions (ssh keystrokes) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        keepalive::apply(&tcp);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| DialError::ServerName(host.into()))?;
        let tcp = ReadAhead::new(tcp);
        tokio::time::timeout(self.timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| DialError::HandshakeTimeout {
                addr: addr.clone(),
                after: self.timeout,
            })?
            .map_err(|cause| DialError::Handshake { addr, cause })
    }

    /// A TCP connection to `host:port` through the resolver's cache.
    async fn tcp_direct(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let addrs = self.resolver.resolve(host, port).await?;
        match TcpStream::connect(&addrs[..]).await {
            Ok(tcp) => {
                if let Ok(addr) = tcp.peer_addr() {
                    self.resolver.prefer(host, port, addr);
                }
                Ok(tcp)
            }
            Err(e) => {
                self.resolver.forget(host, port);
                Err(e)
            }
        }
    }

    /// A TCP connection to `host:port`, directly or tunnelled through `proxy`.
    async fn tcp(
        &self,
        host: &str,
        port: u16,
        proxy: Option<&HttpProxy>,
    ) -> Result<TcpStream, DialError> {
        let Some(proxy) = proxy else {
            return self
                .tcp_direct(host, port)
                .await
                .map_err(|cause| DialError::Connect {
                    addr: format!("{host}:{port}"),
                    cause,
                });
        };
        let mut tcp = self
            .tcp_direct(&proxy.host, proxy.port)
            .await
            .map_err(|cause| DialError::Connect {
                addr: format!("proxy {proxy} (for {host}:{port})"),
                cause,
            })?;
        proxy
            .tunnel(&mut tcp, host, port)
            .await
            .map_err(|cause| DialError::Proxy {
                addr: format!("{host}:{port}"),
                cause,
            })?;
        Ok(tcp)
    }
}
