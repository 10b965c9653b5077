//! The hub's data directory: `stream-hub init` creates it, every other command opens it.
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA that signed the server certificate: give it to proxies as `--ca-file` |
//! | `ca-key.pem` | the CA's key (mode 0600), to issue a new server certificate later |
//! | `server.pem`, `server-key.pem` | the hub's TLS certificate chain and key (0600) |
//! | `registry.db` | devices, policies and settings (SQLite) |

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use device_streams_protocol::connection_string::HostName;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::registry::{Registry, Right, DB_FILE};

pub const HOSTNAME_SETTING: &str = "hostname";
/// The policy `init` creates, with every right.
pub const DEFAULT_POLICY: &str = "service";

pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataDir { path: path.into() }
    }
    pub fn ca_file(&self) -> PathBuf {
        self.path.join("ca.pem")
    }
    pub fn cert_file(&self) -> PathBuf {
        self.path.join("server.pem")
    }
    pub fn key_file(&self) -> PathBuf {
        self.path.join("server-key.pem")
    }

    /// Opens the registry of an initialised directory.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let db = self.path.join(DB_FILE);
        anyhow::ensure!(
            db.is_file(),
            "{} is not a hub data directory (no {DB_FILE}); create one with 'stream-hub init --data-dir {}'",
            self.path.display(),
            self.path.display()
        );
        Registry::open(&db).with_context(|| format!("cannot open {}", db.display()))
    }

    pub fn hostname(&self, registry: &Registry) -> anyhow::Result<String> {
        Ok(registry.setting(HOSTNAME_SETTING)?)
    }

    /// The hub's name as connection strings carry it.
    pub fn host(&self, registry: &Registry) -> anyhow::Result<HostName> {
        let name = self.hostname(registry)?;
        name.parse()
            .with_context(|| format!("the registry's host name '{name}' is not host[:port]"))
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates a data directory for a hub reachable as `hostname` (`host[:port]`).
/// Refuses to touch a directory that exists and is not empty.
pub fn init(dir: &DataDir, hostname: &str) -> anyhow::Result<()> {
    let host: HostName = hostname.parse().context("--hostname")?;
    if dir.path.exists() {
        let mut entries = fs::read_dir(&dir.path)
            .with_context(|| format!("cannot read {}", dir.path.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{} already exists and is not empty; refusing to overwrite it",
            dir.path.display()
        );
    }
    fs::create_dir_all(&dir.path)
        .with_context(|| format!("cannot create {}", dir.path.display()))?;

    let (ca_pem, ca_key_pem, cert_pem, key_pem) =
        certificates(&host.host).context("generating certificates")?;
    write_file(&dir.ca_file(), &ca_pem, false)?;
    write_file(&dir.path.join("ca-key.pem"), &ca_key_pem, true)?;
    write_file(&dir.cert_file(), &format!("{cert_pem}{ca_pem}"), false)?;
    write_file(&dir.key_file(), &key_pem, true)?;

    let registry = Registry::open(&dir.path.join(DB_FILE))?;
    registry.set_setting(HOSTNAME_SETTING, &host.to_string())?;
    registry.add_policy(
        DEFAULT_POLICY,
        &[
            Right::ServiceConnect,
            Right::RegistryRead,
            Right::RegistryWrite,
        ],
    )?;
    Ok(())
}

/// A CA and a server certificate for `host` (plus the loopback addresses for `localhost`).
fn certificates(host: &str) -> anyhow::Result<(String, String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("stream-hub CA for {host}"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut names = vec![host.to_string()];
    if host == "localhost" {
        names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((
        ca_cert.pem(),
        ca_key.serialize_pem(),
        cert.pem(),
        key.serialize_pem(),
    ))
}
