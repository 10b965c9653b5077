//! A plain HTTP/1.1 client for the dashboard tests: one request per connection, over
//! TCP (the admin listener) or the hub's TLS port, with the cookie and form a browser
//! would send, and the reply's status, `Set-Cookie`, `Location` and body.

use std::net::SocketAddr;

use device_streams::Connector;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};

/// A reply: status, `Set-Cookie` and `Location` if any, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub cookie: Option<String>,
    pub location: Option<String>,
    pub body: String,
}

/// Where requests go: the admin listener, or the hub's TLS port by its host name.
#[derive(Clone)]
pub enum Site {
    Plain(SocketAddr),
    Tls {
        connector: Connector,
        /// `host:port` as in the hub's certificate and `Host` header.
        hostname: String,
    },
}

impl Site {
    fn host(&self) -> String {
        match self {
            Site::Plain(addr) => addr.to_string(),
            Site::Tls { hostname, .. } => hostname.clone(),
        }
    }

    /// One request; `form` is sent as `application/x-www-form-urlencoded`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Reply {
        self.send(build(method, path, &self.host(), cookie, form))
            .await
    }

    async fn send(&self, req: Request) -> Reply {
        match self {
            Site::Plain(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                send(tcp, req).await
            }
            Site::Tls {
                connector,
                hostname,
            } => {
                let (host, port) = hostname.rsplit_once(':').expect("host:port");
                let port = port.parse().expect("port");
                let tls = connector.connect(host, port).await.expect("TLS to the hub");
                send(tls, req).await
            }
        }
    }

    /// A form POST as a page of another site `origin` would send it.
    pub async fn request_from(&self, origin: &str, path: &str, form: &str) -> Reply {
        let mut req = build("POST", path, &self.host(), None, Some(form));
        let origin = http::HeaderValue::from_str(origin).expect("an origin");
        req.headers_mut().insert(http::header::ORIGIN, origin);
        self.send(req).await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.request("GET", path, cookie, None).await
    }

    pub async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> Reply {
        self.request("POST", path, cookie, Some(form)).await
    }
}

type Request = http::Request<http_body_util::Full<bytes::Bytes>>;

fn build(
    method: &str,
    path: &str,
    host: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Request {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = bytes::Bytes::from(form.unwrap_or("").to_string());
    req.body(http_body_util::Full::new(body)).expect("request")
}

async fn send<S>(io: S, req: Request) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let header = |name: http::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let cookie = header(http::header::SET_COOKIE);
    let location = header(http::header::LOCATION);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        cookie,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `fields` as a form body.
pub fn form(fields: &[(&str, &str)]) -> String {
    let pairs = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", device_streams::protocol::sas::url_encode(v)));
    pairs.collect::<Vec<_>>().join("&")
}

/// The value of the hidden `name` input in `html`.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in:\n{html}"))
        + marker.len();
    html[at..].chars().take_while(|c| *c != '"').collect()
}

/// The `name=value` part of a `Set-Cookie`.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

/// Signs in with `policy` and `key`; returns the `Set-Cookie` header, or the refusal.
pub async fn sign_in(site: &Site, base: &str, policy: &str, key: &str) -> Result<String, Reply> {
    let body = form(&[("policy", policy), ("key", key)]);
    let reply = site.post(&format!("{base}/login"), None, &body).await;
    match (reply.status, &reply.cookie) {
        (303, Some(c)) => Ok(c.clone()),
        _ => Err(reply),
    }
}

/// The primary key in a service connection string (`policy add` prints one).
pub fn key_of(connection_string: &str) -> String {
    let at = connection_string
        .find("SharedAccessKey=")
        .expect("a key in the connection string")
        + "SharedAccessKey=".len();
    connection_string[at..]
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}
