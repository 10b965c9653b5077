//! Dialing the hub: TCP connect (through the environment's `HTTPS_PROXY` unless
//! `NO_PROXY` names the host) and TLS handshake, each within a timeout, with names
//! resolved once per 30 s, TCP keepalive on every connection, and optionally one spare
//! connection kept ready for the next stream.
//!
//! Layout: [`tls`] (client configs: system roots or one CA file), [`conn`] (the TLS
//! connection type and [`Reusable`], a connection with nothing in flight), [`proxy`]
//! (HTTP CONNECT tunnels), [`resolve`] (the name cache), [`keepalive`] and [`spare`].

pub mod conn;
pub mod keepalive;
pub mod proxy;
pub mod resolve;
pub mod spare;
pub mod tls;

use std::{io, sync::Arc, time::Duration};

use rustls::{pki_types::ServerName, ClientConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use conn::{ClientTls, Reusable, Transport};

use device_streams_protocol::read_ahead::ReadAhead;
use proxy::{HttpProxy, ProxyError, ProxySettings};
use resolve::Resolver;
use spare::{Spares, SPARE_TTL};

/// Why a connection to the hub could not be made. `addr` is the `host:port` dialed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The TCP connect failed (or name resolution did).
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// Where to.
        addr: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// The TCP connect (through the proxy, if any) took longer than the connector's timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Where to.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The host is not a name TLS can verify a certificate for.
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    /// The TLS handshake failed: most often the hub's certificate chains to no trusted CA.
    #[error("TLS handshake with {addr} failed: {cause}{}", ca_hint(.cause))]
    Handshake {
        /// Where to.
        addr: String,
        /// The I/O error (wrapping rustls's).
        cause: io::Error,
    },
    /// The TLS handshake took longer than the connector's timeout.
    #[error("TLS handshake with {addr} timed out after {after:?}")]
    HandshakeTimeout {
        /// Where to.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The HTTP proxy would not tunnel to the hub.
    #[error("cannot reach {addr} through the proxy: {cause}")]
    Proxy {
        /// Where to.
        addr: String,
        /// What the proxy did.
        cause: ProxyError,
    },
    /// `HTTPS_PROXY` in the environment is not usable, so no dial is tried.
    #[error("cannot connect to {addr}: {cause}")]
    ProxySettings {
        /// Where to.
        addr: String,
        /// What is wrong with the setting.
        cause: Arc<ProxyError>,
    },
}

/// A hint after a handshake error that says the hub's certificate chains to no CA we
/// trust, which with a self-hosted hub almost always means its CA file was not given:
/// `UnknownIssuer` when no trusted CA has the issuer's name (the system's roots),
/// `BadSignature` when one has it but did not sign (another hub's CA for the same host
/// name, or this hub's from before `init` ran again).
fn ca_hint(cause: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let untrusted = cause
        .get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .is_some_and(|e| {
            matches!(
                e,
                Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            )
        });
    if untrusted {
        " (is the hub's CA given with --ca-file?)"
    } else {
        ""
    }
}

/// Dials TLS connections: TCP connect (through the environment's `HTTPS_PROXY` unless
/// `NO_PROXY` names the host) and TLS handshake, each within `timeout`.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
    /// Crate-visible as a field: the control channel bounds its own steps by it.
    pub(crate) timeout: Duration,
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

    /// The time allowed for each step of a dial (TCP connect, TLS handshake, WebSocket
    /// upgrade).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same connector with explicit proxy settings instead of the environment's.
    pub fn with_proxy(mut self, settings: ProxySettings) -> Self {
        self.proxy = Ok(Arc::new(settings));
        self
    }

    /// The same connector, keeping a spare connection after each [`Connector::connect_for_stream`]
    /// (see [`spare`]).
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

    /// A new TLS connection to `host:port` (through the proxy, if one applies), each step
    /// within the connector's timeout.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_untrusted_issuer_gets_the_ca_hint() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        for untrusted in [
            rustls::CertificateError::UnknownIssuer,
            rustls::CertificateError::BadSignature,
        ] {
            let e = tls(rustls::Error::InvalidCertificate(untrusted));
            assert_eq!(ca_hint(&e), " (is the hub's CA given with --ca-file?)");
        }
        let expired = tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert_eq!(ca_hint(&expired), "");
        assert_eq!(ca_hint(&io::Error::other("reset")), "");
    }
}
