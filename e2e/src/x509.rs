//! X.509 device certificates for tests, made with rcgen: a CA, certificates it issues and
//! self-signed ones, each written as PEM files the proxies' `--cert`/`--key` and the hub's
//! `ca add` read, with a connector that presents one.

use std::path::{Path, PathBuf};

use device_streams::{
    connector::{proxy::ProxySettings, tls::client_config_with_cert},
    Connector,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate and its key, in memory and as PEM files.
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    issued: rcgen::Certificate,
    key_pair: KeyPair,
}

impl Pem {
    /// Hex SHA-256 of the DER certificate: the thumbprint `device add` takes.
    pub fn sha256(&self) -> String {
        crate::sha256(&self.der)
    }

    /// A connector that trusts `ca_file` for the hub and presents this certificate.
    pub fn connector(&self, ca_file: &Path) -> Connector {
        let config = client_config_with_cert(Some(ca_file), &self.cert, &self.key);
        Connector::new(
            config.expect("client TLS with a certificate"),
            std::time::Duration::from_secs(5),
        )
        .with_proxy(ProxySettings::default())
    }
}

/// What to make: subject CN, validity in whole years, and whether it may issue others.
pub struct Spec<'a> {
    pub cn: &'a str,
    pub from_year: i32,
    pub to_year: i32,
    pub ca: bool,
    /// An exact end of validity instead of `to_year`.
    pub until: Option<std::time::SystemTime>,
}

impl<'a> Spec<'a> {
    /// A leaf for `cn`, valid from 2000 to 2100.
    pub fn leaf(cn: &'a str) -> Self {
        Spec {
            cn,
            from_year: 2000,
            to_year: 2100,
            ca: false,
            until: None,
        }
    }

    /// A CA named `cn`.
    pub fn ca(cn: &'a str) -> Self {
        Spec {
            ca: true,
            ..Spec::leaf(cn)
        }
    }

    /// The same, valid until `at` (to the second).
    pub fn until(self, at: std::time::SystemTime) -> Self {
        Spec {
            until: Some(at),
            ..self
        }
    }

    /// The same, valid from `from` to `to` (1 January each).
    pub fn years(self, from: i32, to: i32) -> Self {
        Spec {
            from_year: from,
            to_year: to,
            ..self
        }
    }
}

/// Makes `spec`'s certificate, signed by `issuer` (self-signed without one), into
/// `<dir>/<name>.pem` and `<dir>/<name>.key`.
pub fn make(dir: &Path, name: &str, spec: Spec<'_>, issuer: Option<&Pem>) -> Pem {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, spec.cn);
    params.not_before = rcgen::date_time_ymd(spec.from_year, 1, 1);
    params.not_after = match spec.until {
        Some(at) => at.into(),
        None => rcgen::date_time_ymd(spec.to_year, 1, 1),
    };
    if spec.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let key_pair = KeyPair::generate().expect("key");
    let issued = match issuer {
        Some(ca) => params.signed_by(&key_pair, &ca.issued, &ca.key_pair),
        None => params.self_signed(&key_pair),
    }
    .expect("certificate");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, issued.pem()).expect("write certificate");
    std::fs::write(&key, key_pair.serialize_pem()).expect("write key");
    Pem {
        cert,
        key,
        der: issued.der().to_vec(),
        issued,
        key_pair,
    }
}
