//! Azure IoT Hub connection strings.
//!
//! - device:  `HostName=<host[:port]>;DeviceId=<id>;SharedAccessKey=<base64 key>`, or for an
//!   X.509 device (its client certificate is its credential) `HostName=…;DeviceId=<id>;x509=true`;
//!   a module identity adds `;ModuleId=<module>`
//! - service: `HostName=<host[:port]>;SharedAccessKeyName=<policy>;SharedAccessKey=<base64 key>`
//!
//! The port is this project's extension for self-hosted hubs; Azure's strings omit it (443).

use std::{fmt, str::FromStr};

use base64::{engine::general_purpose::STANDARD, Engine};

use crate::Secret;

/// The port a `HostName` without one means.
pub const DEFAULT_PORT: u16 = 443;

/// Why a connection string could not be parsed. Never shows the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Counted from 1: the part itself may be a piece of the key, so it is never shown.
    #[error("connection string part {0} is not of the form Name=Value")]
    NotKeyValue(usize),
    /// A required part is absent.
    #[error("connection string is missing {0}")]
    Missing(&'static str),
    /// A part is given twice.
    #[error("connection string names {0} twice")]
    Duplicate(String),
    /// A part this kind of connection string does not have.
    #[error("connection string has an unknown part {0}")]
    Unknown(PartName),
    /// The key is not base64.
    #[error("connection string's SharedAccessKey is not valid base64")]
    BadKey,
    /// `HostName` is not `host` or `host:port`.
    #[error("connection string's HostName '{0}' is not host or host:port")]
    BadHost(String),
    /// A device's connection string where a service's was expected.
    #[error("connection string has DeviceId, so it is a device's, not a service's")]
    DeviceNotService,
    /// A service's connection string where a device's was expected.
    #[error("connection string has SharedAccessKeyName, so it is a service's, not a device's")]
    ServiceNotDevice,
    /// `x509=` with a value other than `true` or `false`.
    #[error("connection string's x509 is not true or false")]
    BadX509,
    /// `x509=true` together with a key: an X.509 device authenticates by certificate only.
    #[error(
        "connection string has both x509=true and a SharedAccessKey; an X.509 device has no key"
    )]
    X509WithKey,
}

/// How an error names an unknown part: by its name when that looks like one (a short word),
/// else by its position, because a mangled string can put a piece of the key before an `=`.
#[derive(Debug, PartialEq, Eq)]
pub enum PartName {
    /// The part's name.
    Name(String),
    /// The part's position, counted from 1.
    Position(usize),
}

impl PartName {
    fn new(name: &str, position: usize) -> Self {
        let word = name.len() <= 32 && name.chars().all(|c| c.is_ascii_alphabetic());
        if word {
            PartName::Name(name.to_string())
        } else {
            PartName::Position(position)
        }
    }
}

impl fmt::Display for PartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartName::Name(name) => write!(f, "'{name}'"),
            PartName::Position(n) => write!(f, "(part {n})"),
        }
    }
}

/// `host[:port]` as given in `HostName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostName {
    /// The host name.
    pub host: String,
    /// The port ([`DEFAULT_PORT`] when not given).
    pub port: u16,
    /// Whether `HostName` spelled the port out; SAS resources use the text as written.
    explicit_port: bool,
}

impl HostName {
    /// `host`, on `port` if given (written out then) or [`DEFAULT_PORT`].
    pub fn new(host: impl Into<String>, port: Option<u16>) -> Self {
        HostName {
            host: host.into(),
            port: port.unwrap_or(DEFAULT_PORT),
            explicit_port: port.is_some(),
        }
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.explicit_port {
            write!(f, "{}:{}", self.host, self.port)
        } else {
            f.write_str(&self.host)
        }
    }
}

impl FromStr for HostName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::BadHost(s.to_string());
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if host.is_empty() || !host.chars().all(valid) || port == Some(0) {
            return Err(bad());
        }
        Ok(HostName::new(host, port))
    }
}

/// A device's connection string: `HostName=…;DeviceId=…;SharedAccessKey=…`, parsed with
/// `str::parse`. `Debug` masks the key.
#[derive(Clone, Debug)]
pub struct DeviceConnectionString {
    /// `HostName`: the hub.
    pub host: HostName,
    /// `DeviceId`.
    pub device_id: String,
    /// `SharedAccessKey` (base64); empty when [`DeviceConnectionString::x509`] is set.
    pub key: Secret,
    /// `x509=true`: the device authenticates with its TLS client certificate, not SAS.
    pub x509: bool,
    /// `ModuleId`: the string is a module identity's, within the device.
    pub module_id: Option<String>,
}

/// A service's connection string (a shared access policy's):
/// `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`, parsed with `str::parse`. `Debug`
/// masks the key.
#[derive(Clone, Debug)]
pub struct ServiceConnectionString {
    /// `HostName`: the hub.
    pub host: HostName,
    /// `SharedAccessKeyName`: the policy.
    pub policy: String,
    /// `SharedAccessKey` (base64).
    pub key: Secret,
}

#[derive(Default)]
struct Parts {
    host: Option<String>,
    device_id: Option<String>,
    policy: Option<String>,
    key: Option<String>,
    module_id: Option<String>,
    x509: Option<String>,
}

fn parse_parts(s: &str) -> Result<Parts, ParseError> {
    let mut parts = Parts::default();
    let nonempty = s.trim().split(';').filter(|p| !p.trim().is_empty());
    for (index, part) in nonempty.enumerate() {
        // Only a name is ever echoed in errors: the value may be the key.
        let (name, value) = part
            .split_once('=')
            .ok_or(ParseError::NotKeyValue(index + 1))?;
        let slot = match name.trim() {
            "HostName" => &mut parts.host,
            "DeviceId" => &mut parts.device_id,
            "SharedAccessKeyName" => &mut parts.policy,
            "SharedAccessKey" => &mut parts.key,
            "ModuleId" => &mut parts.module_id,
            "x509" => &mut parts.x509,
            // Azure adds this to some strings; it does not change how we connect.
            "GatewayHostName" => continue,
            other => return Err(ParseError::Unknown(PartName::new(other, index + 1))),
        };
        if slot.replace(value.trim().to_string()).is_some() {
            return Err(ParseError::Duplicate(name.trim().to_string()));
        }
    }
    Ok(parts)
}

fn host_and_key(parts: &mut Parts) -> Result<(HostName, Secret), ParseError> {
    let host = parts
        .host
        .take()
        .ok_or(ParseError::Missing("HostName"))?
        .parse()?;
    let key = parts
        .key
        .take()
        .ok_or(ParseError::Missing("SharedAccessKey"))?;
    if key.is_empty() || STANDARD.decode(&key).is_err() {
        return Err(ParseError::BadKey);
    }
    Ok((host, Secret::new(key)))
}

impl FromStr for DeviceConnectionString {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut parts = parse_parts(s)?;
        if parts.policy.is_some() {
            return Err(ParseError::ServiceNotDevice);
        }
        let x509 = match parts.x509.take().map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ParseError::BadX509),
        };
        let (host, key) = match x509 {
            true if parts.key.is_some() => return Err(ParseError::X509WithKey),
            true => (
                parts
                    .host
                    .take()
                    .ok_or(ParseError::Missing("HostName"))?
                    .parse()?,
                Secret::new(String::new()),
            ),
            false => host_and_key(&mut parts)?,
        };
        let device_id = parts
            .device_id
            .filter(|d| !d.is_empty())
            .ok_or(ParseError::Missing("DeviceId"))?;
        Ok(DeviceConnectionString {
            host,
            device_id,
            key,
            x509,
            module_id: parts.module_id.filter(|m| !m.is_empty()),
        })
    }
}

impl FromStr for ServiceConnectionString {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut parts = parse_parts(s)?;
        if parts.device_id.is_some() {
            return Err(ParseError::DeviceNotService);
        }
        let (host, key) = host_and_key(&mut parts)?;
        let policy = parts
            .policy
            .filter(|p| !p.is_empty())
            .ok_or(ParseError::Missing("SharedAccessKeyName"))?;
        Ok(ServiceConnectionString { host, policy, key })
    }
}

impl DeviceConnectionString {
    /// The connection string of `device_id` on `host`, with its base64 key.
    pub fn new(host: HostName, device_id: impl Into<String>, key: Secret) -> Self {
        DeviceConnectionString {
            host,
            device_id: device_id.into(),
            key,
            x509: false,
            module_id: None,
        }
    }

    /// An X.509 device's string (`x509=true`): no key, its certificate is its credential.
    pub fn new_x509(host: HostName, device_id: impl Into<String>) -> Self {
        DeviceConnectionString {
            x509: true,
            ..DeviceConnectionString::new(host, device_id, Secret::new(String::new()))
        }
    }

    /// The same identity's module `module` (`ModuleId=`).
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.module_id = Some(module.into());
        self
    }

    /// The string itself; it holds the key, so it is a secret too.
    pub fn to_secret_string(&self) -> Secret {
        let module = match &self.module_id {
            Some(m) => format!(";ModuleId={m}"),
            None => String::new(),
        };
        let credential = match self.x509 {
            true => "x509=true".to_string(),
            false => format!("SharedAccessKey={}", self.key.expose()),
        };
        Secret::new(format!(
            "HostName={};DeviceId={}{module};{credential}",
            self.host, self.device_id
        ))
    }
}

impl ServiceConnectionString {
    /// The connection string of shared access policy `policy` on `host`, with its base64 key.
    pub fn new(host: HostName, policy: impl Into<String>, key: Secret) -> Self {
        ServiceConnectionString {
            host,
            policy: policy.into(),
            key,
        }
    }

    /// The string itself; it holds the key, so it is a secret too.
    pub fn to_secret_string(&self) -> Secret {
        Secret::new(format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host,
            self.policy,
            self.key.expose()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwMTI=";

    #[test]
    fn parses_device_string_with_and_without_port() {
        let cs: DeviceConnectionString =
            format!("HostName=hub.example.com;DeviceId=dev1;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert_eq!(cs.host.host, "hub.example.com");
        assert_eq!(cs.host.port, 443);
        assert_eq!(cs.host.to_string(), "hub.example.com");
        assert_eq!(cs.device_id, "dev1");
        assert_eq!(cs.key.expose(), KEY);

        let cs: DeviceConnectionString =
            format!("HostName=localhost:8443;DeviceId=dev1;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert_eq!(cs.host.port, 8443);
        assert_eq!(cs.host.to_string(), "localhost:8443");
        assert_eq!(cs.to_secret_string().expose().matches(KEY).count(), 1);
    }

    #[test]
    fn parses_service_string() {
        let cs: ServiceConnectionString =
            format!("HostName=localhost:8443;SharedAccessKeyName=service;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert_eq!(cs.policy, "service");
        assert_eq!(cs.host.port, 8443);
    }

    #[test]
    fn rejects_bad_strings_without_echoing_the_key() {
        let cases = [
            (
                "HostName=h;DeviceId=d",
                ParseError::Missing("SharedAccessKey"),
            ),
            (
                "DeviceId=d;SharedAccessKey=AAAA",
                ParseError::Missing("HostName"),
            ),
            (
                "HostName=h;SharedAccessKey=AAAA",
                ParseError::Missing("DeviceId"),
            ),
            (
                "HostName=h;DeviceId=d;SharedAccessKey=not base64!",
                ParseError::BadKey,
            ),
            (
                "HostName=h:99999;DeviceId=d;SharedAccessKey=AAAA",
                ParseError::BadHost("h:99999".into()),
            ),
            (
                "HostName=h;DeviceId=d;Bogus=1;SharedAccessKey=AAAA",
                ParseError::Unknown(PartName::Name("Bogus".into())),
            ),
            // A mangled string: pieces of the key where names should be.
            (
                "HostName=h;DeviceId=d;SharedAccessKey AAAA",
                ParseError::NotKeyValue(3),
            ),
            (
                "HostName=h;DeviceId=d;AAAA+/AAAA==",
                ParseError::Unknown(PartName::Position(3)),
            ),
            (
                "HostName=h;HostName=h;DeviceId=d;SharedAccessKey=AAAA",
                ParseError::Duplicate("HostName".into()),
            ),
            (
                "HostName=h;SharedAccessKeyName=p;SharedAccessKey=AAAA",
                ParseError::ServiceNotDevice,
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<DeviceConnectionString>().unwrap_err();
            assert_eq!(err, want, "{input}");
            assert!(!err.to_string().contains("AAAA"));
        }
        let err = "HostName=h;DeviceId=d;SharedAccessKey=AAAA"
            .parse::<ServiceConnectionString>()
            .unwrap_err();
        assert_eq!(err, ParseError::DeviceNotService);
    }

    #[test]
    fn x509_and_module_strings_parse_and_format() {
        let cs: DeviceConnectionString =
            "HostName=hub:8443;DeviceId=cam;x509=true".parse().unwrap();
        assert!(cs.x509);
        assert_eq!(cs.key.expose(), "");
        assert_eq!(
            cs.to_secret_string().expose(),
            "HostName=hub:8443;DeviceId=cam;x509=true"
        );
        let err = format!("HostName=h;DeviceId=d;x509=true;SharedAccessKey={KEY}")
            .parse::<DeviceConnectionString>()
            .unwrap_err();
        assert_eq!(err, ParseError::X509WithKey);
        assert!(!err.to_string().contains(KEY));
        let err = "HostName=h;DeviceId=d;x509=yes".parse::<DeviceConnectionString>();
        assert_eq!(err.unwrap_err(), ParseError::BadX509);
        let plain: DeviceConnectionString =
            format!("HostName=h;DeviceId=d;x509=false;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert!(!plain.x509);

        let text = format!("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey={KEY}");
        let module: DeviceConnectionString = text.parse().unwrap();
        assert_eq!(module.module_id.as_deref(), Some("m"));
        assert_eq!(module.to_secret_string().expose(), text);
        let x509_module =
            DeviceConnectionString::new_x509("h".parse().unwrap(), "d").with_module("m");
        assert_eq!(
            x509_module.to_secret_string().expose(),
            "HostName=h;DeviceId=d;ModuleId=m;x509=true"
        );
    }

    #[test]
    fn debug_masks_the_key() {
        let cs: DeviceConnectionString = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")
            .parse()
            .unwrap();
        assert!(!format!("{cs:?}").contains(KEY));
    }
}
