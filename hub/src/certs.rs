//! The hub's own certificates: the CA `init` makes, and the server certificate it signs —
//! at `init`, and again with `stream-hub cert` when the hub gains names (a new DNS name,
//! a load balancer's, an IP address). A running hub picks a re-issued certificate up by
//! itself (see [`crate::tls`]).
//!
//! The CA is rebuilt from its key and its name rather than parsed from `ca.pem`: a
//! certificate signed by the same key under the same issuer name chains to the `ca.pem`
//! every proxy already trusts.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM texts of a CA, its key, a server certificate and its key.
pub struct Issued {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA's parameters, which name it: the same host gives the same issuer name.
fn ca_params(host: &str) -> anyhow::Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("stream-hub CA for {host}"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

/// The names a server certificate for `host` covers: `host`, the loopback addresses for
/// `localhost`, and `extra`.
fn names(host: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![host.to_string()];
    if host == "localhost" {
        names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn server_cert(
    host: &str,
    names: Vec<String>,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names).context("a name is not a host name or an IP address")?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, ca, ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new CA and a server certificate for `host` (what `init` writes).
pub fn new_ca_and_server(host: &str) -> anyhow::Result<Issued> {
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(host)?.self_signed(&ca_key)?;
    let (cert_pem, key_pem) = server_cert(host, names(host, &[]), &ca, &ca_key)?;
    Ok(Issued {
        ca_pem: ca.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        cert_pem,
        key_pem,
    })
}

/// Where a data directory keeps its CA and server certificate.
pub struct Files {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `stream-hub cert`: a new server certificate for the data directory's host and `extra`
/// names, signed by its CA, replacing `server.pem` and `server-key.pem` (each written
/// whole, then renamed into place, so a running hub never reads half a file). Returns the
/// names it covers. `ca_host` is the host `init` named the CA after.
pub fn reissue(
    files: &Files,
    ca_host: &str,
    host: &str,
    extra: &[String],
) -> anyhow::Result<Vec<String>> {
    let ca_key_file = &files.ca_key;
    let ca_key_pem = fs::read_to_string(ca_key_file)
        .with_context(|| format!("cannot read the CA's key {}", ca_key_file.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("{} is not a PEM private key", ca_key_file.display()))?;
    let ca = ca_params(ca_host)?.self_signed(&ca_key)?;
    let ca_pem = fs::read_to_string(&files.ca)
        .with_context(|| format!("cannot read {}", files.ca.display()))?;
    let names = names(host, extra);
    let (cert_pem, key_pem) = server_cert(host, names.clone(), &ca, &ca_key)?;
    replace(&files.key, &key_pem)?;
    replace(&files.cert, &format!("{cert_pem}{ca_pem}"))?;
    Ok(names)
}

/// Writes `contents` to a new owner-only file beside `path`, then renames it over `path`.
fn replace(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
