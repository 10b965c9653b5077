//! The hub's data directory: `stream-hub init` creates it, every other command opens it.
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA that signed the server certificate: give it to proxies as `--ca-file` |
//! | `ca-key.pem` | the CA's key, to issue a new server certificate later |
//! | `server.pem`, `server-key.pem` | the hub's TLS certificate chain and key |
//! | `registry.db` (`-wal`, `-shm`) | devices, policies and settings (SQLite), with every key |
//!
//! The directory is mode 0700 and every file in it 0600, whatever the umask: `init` makes
//! them so, and every later command takes group and other access away again, with a warning.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use crate::certs;
use crate::registry::{make_private, set_mode, Registry, Right, DB_FILE};
use anyhow::Context;
use device_streams_protocol::connection_string::HostName;

pub const HOSTNAME_SETTING: &str = "hostname";
/// The policy `init` creates, with every right.
pub const DEFAULT_POLICY: &str = "service";
/// Owner only: the directory holds every key.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

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
    /// The CA and server certificate files, for `stream-hub cert`.
    pub fn cert_files(&self) -> certs::Files {
        certs::Files {
            ca: self.ca_file(),
            ca_key: self.path.join("ca-key.pem"),
            cert: self.cert_file(),
            key: self.key_file(),
        }
    }

    /// Opens the registry of an initialised directory, first taking away any access group
    /// and other users have to the directory or its files.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        if let Some(cluster) = crate::cluster::remembered(&self.path)? {
            self.make_private();
            return crate::cluster::cli_registry(&self.path, &cluster);
        }
        let db = self.path.join(DB_FILE);
        anyhow::ensure!(
            db.is_file(),
            "{} is not a hub data directory (no {DB_FILE}); create one with 'stream-hub init --data-dir {}'",
            self.path.display(),
            self.path.display()
        );
        self.make_private();
        Registry::open(&db).with_context(|| format!("cannot open {}", db.display()))
    }

    /// Takes group and other access away from the directory and the entries in it (not
    /// below: without access to the directory there is none to those). A loose mode is
    /// fixed rather than refused, so a hub restarts after a copy or restore that lost the
    /// modes; the warning names the path and its old mode, because whoever could read the
    /// files meanwhile may have copied keys that then need rotating. What cannot be fixed
    /// (another user's file) is warned about and left for the admin.
    fn make_private(&self) {
        let mut paths = vec![self.path.clone()];
        match fs::read_dir(&self.path) {
            Ok(entries) => paths.extend(entries.flatten().map(|e| e.path())),
            Err(e) => tracing::warn!(
                "cannot list {} to check its modes: {e}",
                self.path.display()
            ),
        }
        for path in paths {
            make_private(&path);
        }
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

/// Creates `path` owner-only: the keys are secret, and the rest need not be shared either.
fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    set_mode(&f, FILE_MODE)
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the data directory owner-only (its parents as usual), or makes an existing empty
/// one owner-only.
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    match builder.create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    // Exactly 0700 whatever the umask, and for a directory that was there already.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(())
}

/// Creates a data directory for a hub reachable as `hostname` (`host[:port]`).
/// Refuses to touch a directory that exists and is not empty.
pub fn init(dir: &DataDir, hostname: &str) -> anyhow::Result<()> {
    init_with(dir, hostname, None)
}

/// [`init`], with the registry in `cluster` rather than in the directory when given.
pub fn init_with(
    dir: &DataDir,
    hostname: &str,
    cluster: Option<&crate::cluster::ClusterConfig>,
) -> anyhow::Result<()> {
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
    create_private_dir(&dir.path)?;

    let issued = certs::new_ca_and_server(&host.host).context("generating certificates")?;
    write_file(&dir.ca_file(), &issued.ca_pem)?;
    write_file(&dir.path.join("ca-key.pem"), &issued.ca_key_pem)?;
    let chain = format!("{}{}", issued.cert_pem, issued.ca_pem);
    write_file(&dir.cert_file(), &chain)?;
    write_file(&dir.key_file(), &issued.key_pem)?;

    let registry = match cluster {
        Some(cluster) => {
            crate::cluster::remember(&dir.path, cluster)?;
            dir.registry()?
        }
        None => Registry::open(&dir.path.join(DB_FILE))?,
    };
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

/// Why devices on Microsoft's SDKs could not use a hub named `hostname`, as one line for
/// `init` to print, or `None` if they could. Their C SDK refuses a HostName without a dot
/// (it splits the hub's name off the domain) and takes no port: it always dials 443
/// (WebSocket) or 8883 (MQTT), and signs its tokens for the name without one.
pub fn microsoft_sdk_warning(hostname: &str) -> Option<String> {
    let host: HostName = hostname.parse().ok()?;
    let mut why = Vec::new();
    if !host.host.contains('.') {
        why.push("it has no dot");
    }
    if host.to_string() != host.host {
        why.push("it names a port (they always dial 443 or 8883)");
    }
    if why.is_empty() {
        return None;
    }
    Some(format!(
        "warning: devices built on Microsoft's IoT SDKs cannot use --hostname '{hostname}': {} \
         (see \"Devices built on Microsoft's SDKs\" in the README)",
        why.join(", and ")
    ))
}
