//! Outbound HTTP proxies (corporate networks): `HTTPS_PROXY` / `https_proxy` names an
//! `http://[user:password@]host[:port]` proxy, `NO_PROXY` / `no_proxy` the hosts reached
//! directly, and every dial to the hub goes through an HTTP `CONNECT` tunnel. All the
//! project's connections are TLS (REST, MQTT over WebSocket or straight over TLS,
//! streaming WebSocket), so one tunnel before the TLS handshake covers them all.
//!
//! The proxy's credentials are secrets: they live in a [`Secret`] and no error or log line
//! shows them; a proxy is named by its `host:port` only.

use std::{fmt, io};

use base64::Engine;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use device_streams_protocol::Secret;

/// Longest proxy response head read; a proxy's answer to CONNECT is a few lines.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// An HTTP proxy to tunnel through.
#[derive(Clone)]
pub struct HttpProxy {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Basic <base64(user:password)>`, from the URL's userinfo.
    authorization: Option<Secret>,
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpProxy({self})")
    }
}

/// `host:port`: never the credentials.
impl fmt::Display for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a proxy could not be used. Proxies are named by `host:port` only: a URL may hold a
/// password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL cannot be used. The URL is not echoed: it may hold a password.
    #[error("{var} is not an http://[user:password@]host[:port] URL ({why})")]
    BadUrl {
        /// Where the URL came from (e.g. `HTTPS_PROXY`).
        var: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Talking to the proxy failed.
    #[error("proxy {proxy}: {cause}")]
    Io {
        /// The proxy's `host:port`.
        proxy: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// The proxy answered CONNECT with an error status.
    #[error("proxy {proxy} refused the tunnel to {target}: {status}")]
    Refused {
        /// The proxy's `host:port`.
        proxy: String,
        /// The `host:port` the tunnel was for.
        target: String,
        /// The proxy's status line (e.g. `403 Forbidden`).
        status: String,
    },
    /// The proxy's answer to CONNECT was not HTTP.
    #[error("proxy {proxy} sent a malformed answer to CONNECT {target}")]
    Malformed {
        /// The proxy's `host:port`.
        proxy: String,
        /// The `host:port` the tunnel was for.
        target: String,
    },
}

impl HttpProxy {
    /// The proxy's host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Parses `http://[user:password@]host[:port]` (port 1080 if absent, as curl does).
    pub fn parse(url: &str, var: &'static str) -> Result<HttpProxy, ProxyError> {
        let bad = |why| ProxyError::BadUrl { var, why };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad("only http:// proxies are supported")),
            None => url,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("no host"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("bad port"))?,
            None => 1080,
        };
        let authorization = userinfo.map(|u| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", decode(user), decode(pass));
            Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        });
        Ok(HttpProxy {
            host: host.to_string(),
            port,
            authorization,
        })
    }

    /// Sends `CONNECT host:port` on `tcp` (already connected to the proxy) and reads the
    /// answer; on `Ok` the socket is a byte tunnel to `host:port`.
    pub async fn tunnel(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let io_err = |cause| ProxyError::Io {
            proxy: self.to_string(),
            cause,
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {}\r\n", auth.expose()));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(io_err)?;
        let head = read_head(tcp).await.map_err(io_err)?;
        let malformed = || ProxyError::Malformed {
            proxy: self.to_string(),
            target: target.clone(),
        };
        let status_line = head.lines().next().ok_or_else(malformed)?;
        let mut parts = status_line.splitn(3, ' ');
        let (version, code) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(malformed());
        }
        if code.starts_with('2') {
            return Ok(());
        }
        let reason: String = parts.next().unwrap_or_default().chars().take(100).collect();
        let status = match code {
            // 407 is the standard answer; some proxies (tinyproxy) send 401.
            "401" | "407" => format!(
                "{code} {reason} (the proxy wants valid credentials: http://user:password@host:port)"
            ),
            _ => format!("{code} {reason}"),
        };
        Err(ProxyError::Refused {
            proxy: self.to_string(),
            target,
            status,
        })
    }
}

/// Reads up to the blank line ending a response head, one byte at a time so that not a
/// byte of the tunnelled stream is consumed.
async fn read_head(tcp: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too long",
            ));
        }
        let byte = tcp.read_u8().await.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                io::Error::new(e.kind(), "closed the connection during CONNECT")
            }
            _ => e,
        })?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':'))).filter(|(h, _)| !h.is_empty());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    (!host.is_empty()).then_some((host, port))
}

/// Which hosts go through which proxy: the environment's `HTTPS_PROXY` and `NO_PROXY`
/// ([`ProxySettings::from_env`]), or set in code. `Default` is no proxy at all.
///
/// ```
/// use device_streams::connector::proxy::{HttpProxy, ProxySettings};
///
/// let proxy = HttpProxy::parse("http://proxy.example:3128", "--proxy").unwrap();
/// let settings = ProxySettings::via(proxy).bypass("localhost,.internal");
/// assert!(settings.for_host("hub.example").is_some());
/// assert!(settings.for_host("hub.internal").is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProxySettings {
    proxy: Option<HttpProxy>,
    /// `NO_PROXY` entries, lower-cased, without leading dots; `*` bypasses every host.
    no_proxy: Vec<String>,
}

impl ProxySettings {
    /// Every host through `proxy` (until [`ProxySettings::bypass`] says otherwise).
    pub fn via(proxy: HttpProxy) -> ProxySettings {
        ProxySettings {
            proxy: Some(proxy),
            no_proxy: Vec::new(),
        }
    }

    /// The same settings, reaching the hosts in `no_proxy` directly: a `NO_PROXY`-style
    /// comma-separated list (`host`, `.domain`, `*` for every host), replacing any before.
    pub fn bypass(mut self, no_proxy: &str) -> ProxySettings {
        self.no_proxy = parse_no_proxy(no_proxy);
        self
    }

    /// The proxy, if any.
    pub fn proxy(&self) -> Option<&HttpProxy> {
        self.proxy.as_ref()
    }

    /// From `https_proxy`/`HTTPS_PROXY` and `no_proxy`/`NO_PROXY` (lower case first, as curl).
    pub fn from_env() -> Result<ProxySettings, ProxyError> {
        let var = |names: [&'static str; 2]| {
            names.into_iter().find_map(|n| {
                std::env::var(n)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (n, v))
            })
        };
        let proxy = match var(["https_proxy", "HTTPS_PROXY"]) {
            Some((name, url)) => Some(HttpProxy::parse(url.trim(), name)?),
            None => None,
        };
        let no_proxy = var(["no_proxy", "NO_PROXY"])
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok(ProxySettings {
            proxy,
            no_proxy: parse_no_proxy(&no_proxy),
        })
    }

    /// The proxy to reach `host` through, if any.
    pub fn for_host(&self, host: &str) -> Option<&HttpProxy> {
        let proxy = self.proxy.as_ref()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'))
        });
        (!bypass).then_some(proxy)
    }
}

fn parse_no_proxy(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            // An entry may carry a port (host:port); it bypasses the host on every port.
            // A bare IPv6 address has several colons and no port.
            let has_port = e.starts_with('[') || e.matches(':').count() == 1;
            let host = match split_host_port(e) {
                Some((h, Some(p))) if has_port && p.chars().all(|c| c.is_ascii_digit()) => h,
                Some((h, None)) if e.starts_with('[') => h,
                _ => e,
            };
            host.trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls_without_showing_credentials() {
        let p =
            HttpProxy::parse("http://al%40ice:s3cr%3At@proxy.corp:3128/", "HTTPS_PROXY").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let auth = p.authorization.as_ref().unwrap().expose();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"al@ice:s3cr:t");
        assert_eq!(p.to_string(), "proxy.corp:3128");
        assert!(!format!("{p:?}").contains("s3cr"));

        let p = HttpProxy::parse("proxy:8080", "HTTPS_PROXY").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy", 8080));
        assert!(p.authorization.is_none());
        assert_eq!(HttpProxy::parse("http://[::1]", "X").unwrap().port, 1080);
        let e = HttpProxy::parse("https://u:hunter2@p:1", "HTTPS_PROXY").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(HttpProxy::parse("http://u:hunter2@p:x", "HTTPS_PROXY").is_err());
        assert!(HttpProxy::parse("http://", "HTTPS_PROXY").is_err());
    }

    /// A one-shot proxy: returns the request head it got, answers with `answer`.
    async fn one_shot(answer: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let head = read_head(&mut tcp).await.unwrap();
            tcp.write_all(answer.as_bytes()).await.unwrap();
            head
        });
        (port, task)
    }

    #[tokio::test]
    async fn connect_handshake_sends_credentials_and_reads_the_answer() {
        let (port, got) = one_shot("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let proxy = HttpProxy::parse(&format!("http://u:p%40ss@127.0.0.1:{port}"), "X").unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        proxy.tunnel(&mut tcp, "::1", 8443).await.unwrap();
        let head = got.await.unwrap();
        assert!(
            head.starts_with("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"),
            "{head}"
        );
        // base64("u:p@ss")
        assert!(
            head.contains("Proxy-Authorization: Basic dTpwQHNz\r\n"),
            "{head}"
        );

        let (port, _) = one_shot("HTTP/1.0 407 Proxy Authentication Required\r\n\r\n").await;
        let proxy = HttpProxy::parse(&format!("http://127.0.0.1:{port}"), "X").unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let e = proxy
            .tunnel(&mut tcp, "hub", 443)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refused the tunnel to hub:443: 407") && e.contains("credentials"),
            "{e}"
        );

        let (port, _) = one_shot("SSH-2.0-OpenSSH\r\n\r\n").await;
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let proxy = HttpProxy::parse(&format!("127.0.0.1:{port}"), "X").unwrap();
        let e = proxy.tunnel(&mut tcp, "hub", 443).await.unwrap_err();
        assert!(matches!(e, ProxyError::Malformed { .. }), "{e}");
    }

    #[test]
    fn no_proxy_matches_hosts_and_domains() {
        let settings = ProxySettings {
            proxy: Some(HttpProxy::parse("http://p:1", "X").unwrap()),
            no_proxy: parse_no_proxy("localhost, .internal.example,corp.example:443,::1"),
        };
        let via = |h: &str| settings.for_host(h).is_some();
        assert!(!via("localhost"));
        assert!(!via("hub.internal.example"));
        assert!(!via("internal.example"));
        assert!(!via("CORP.example"));
        assert!(!via("a.corp.example"));
        assert!(!via("[::1]"));
        assert!(via("notcorp.example"));
        assert!(via("hub.example.com"));
        let all = ProxySettings {
            no_proxy: parse_no_proxy("*"),
            ..settings.clone()
        };
        assert!(all.for_host("anything").is_none());
    }
}
