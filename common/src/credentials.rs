//! Where a connection string comes from: its flag or variable (or the config file's key), a
//! file (`--connection-string-file`), or a systemd credential (`LoadCredential=`), in that
//! order. Files keep the secret off command lines and out of unit files' environment.
//!
//! Every error names the source a value came from, never the value: it holds a key.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::Context;

use device_streams_protocol::Secret;

/// Where a connection string was found, as the user would look for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The flag, e.g. `--connection-string`.
    Flag(String),
    /// The flag's environment variable, e.g. `DEVICE_CONNECTION_STRING`.
    Env(String),
    /// The flag's key in the `--config` file at this path.
    ConfigFile(PathBuf),
    /// `--connection-string-file`.
    File(PathBuf),
    /// The systemd credential of this name, at this path.
    Credential(String, PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "{flag}"),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::ConfigFile(path) => {
                write!(f, "key connection-string of config file {}", path.display())
            }
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Credential(name, path) => {
                write!(f, "systemd credential {name} ({})", path.display())
            }
        }
    }
}

/// The places a proxy looks for its connection string, by the names a user sets, for the
/// error that says none of them held one.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The connection string's own variable (`DEVICE_CONNECTION_STRING`).
    pub env: Option<&'a str>,
    /// The variable of `--connection-string-file`.
    pub file_env: Option<&'a str>,
    /// The systemd credential (`device-connection-string`).
    pub credential: &'a str,
}

/// The connection string from `value`, else read from `file`, else from the systemd
/// credential `names.credential` (`$CREDENTIALS_DIRECTORY/<credential>`), with surrounding
/// whitespace and quotes taken off, and where it came from.
pub fn connection_string(
    value: Option<(Secret, Source)>,
    file: Option<&Path>,
    names: Names<'_>,
) -> anyhow::Result<(Secret, Source)> {
    let (raw, source) = match (value, file) {
        (Some(given), _) => given,
        (None, Some(path)) => {
            warn_if_readable_by_others(path);
            (read(path)?, Source::File(path.to_path_buf()))
        }
        (None, None) => {
            let path = credential_path(names.credential).ok_or_else(|| none_given(names))?;
            let source = Source::Credential(names.credential.to_string(), path.clone());
            (read(&path)?, source)
        }
    };
    let text = unquote(raw.expose());
    anyhow::ensure!(
        !text.is_empty(),
        "the connection string from {source} is empty"
    );
    Ok((Secret::new(text), source))
}

fn read(path: &Path) -> anyhow::Result<Secret> {
    std::fs::read_to_string(path)
        .map(Secret::new)
        .with_context(|| format!("cannot read the connection string from {}", path.display()))
}

fn none_given(names: Names<'_>) -> anyhow::Error {
    let mut ways = Vec::new();
    if let Some(env) = names.env {
        ways.push(format!("set {env}"));
    }
    match names.file_env {
        Some(env) => ways.push(format!(
            "pass --connection-string-file FILE (or set {env}=FILE)"
        )),
        None => ways.push("pass --connection-string-file FILE".to_string()),
    }
    ways.push(format!(
        "under systemd, give the credential {0} (LoadCredential={0}:FILE)",
        names.credential
    ));
    anyhow::anyhow!("no connection string: {}", ways.join(", or "))
}

/// `text` without surrounding whitespace and one pair of matching surrounding quotes:
/// connection strings are pasted from docs and shell snippets into env files and
/// credential files, which keep the quotes a shell would have removed.
fn unquote(text: &str) -> &str {
    let text = text.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return inner.trim();
        }
    }
    text
}

/// A connection-string file others can read leaks the key to every local user; the proxy
/// still starts (the admin may have reasons), but says so once.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if let Some(warning) = readable_warning(path, meta.permissions().mode()) {
            tracing::warn!("{warning}");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The warning for a file of `mode`, if its group or others may read it.
#[cfg_attr(not(unix), allow(dead_code))]
fn readable_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o044 != 0).then(|| {
        format!(
            "connection string file {} has mode {:04o}: other users can read the key \
             (chmod 600 it)",
            path.display(),
            mode & 0o7777
        )
    })
}

/// `$CREDENTIALS_DIRECTORY/<name>` if systemd passed credentials and that one exists.
fn credential_path(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(name);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names<'static> = Names {
        env: Some("DEVICE_CONNECTION_STRING"),
        file_env: Some("DEVICE_PROXY_CONNECTION_STRING_FILE"),
        credential: "no-such-credential-in-tests",
    };

    #[test]
    fn value_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cs");
        std::fs::write(&file, "HostName=h;DeviceId=d;SharedAccessKey=a2V5\n").unwrap();
        let (got, source) = connection_string(None, Some(&file), NAMES).unwrap();
        assert_eq!(got.expose(), "HostName=h;DeviceId=d;SharedAccessKey=a2V5");
        assert_eq!(source, Source::File(file.clone()));
        let flag = Source::Flag("--connection-string".into());
        let given = Some((Secret::new("v"), flag.clone()));
        let (got, source) = connection_string(given, Some(&file), NAMES).unwrap();
        assert_eq!((got.expose(), source), ("v", flag));
        let e = connection_string(None, Some(&dir.path().join("none")), NAMES).unwrap_err();
        assert!(format!("{e:#}").contains("none"), "{e:#}");
        std::fs::write(&file, "\n").unwrap();
        let e = connection_string(None, Some(&file), NAMES).unwrap_err();
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    }

    #[test]
    fn quotes_and_whitespace_are_taken_off() {
        for pasted in [
            "HostName=h;DeviceId=d;SharedAccessKey=a2V5",
            "  HostName=h;DeviceId=d;SharedAccessKey=a2V5\r\n",
            "\"HostName=h;DeviceId=d;SharedAccessKey=a2V5\"\n",
            "'HostName=h;DeviceId=d;SharedAccessKey=a2V5'",
            " ' HostName=h;DeviceId=d;SharedAccessKey=a2V5\n' ",
        ] {
            assert_eq!(
                unquote(pasted),
                "HostName=h;DeviceId=d;SharedAccessKey=a2V5",
                "{pasted:?}"
            );
        }
        // Only a matching pair is a quotation.
        assert_eq!(unquote("\"abc'"), "\"abc'");
        assert_eq!(unquote("\""), "\"");
        let e = connection_string(
            Some((Secret::new("\"\""), Source::Env("X_CS".into()))),
            None,
            NAMES,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the connection string from environment variable X_CS is empty"
        );
    }

    #[test]
    fn nothing_given_names_every_place_to_put_it() {
        let e = connection_string(None, None, NAMES)
            .unwrap_err()
            .to_string();
        for name in [
            "DEVICE_CONNECTION_STRING",
            "--connection-string-file",
            "DEVICE_PROXY_CONNECTION_STRING_FILE",
            "LoadCredential=no-such-credential-in-tests:",
        ] {
            assert!(e.contains(name), "{name} missing from: {e}");
        }
    }

    #[test]
    fn group_or_other_readable_files_are_warned_about() {
        let path = Path::new("/etc/cs");
        assert_eq!(readable_warning(path, 0o100600), None);
        assert_eq!(readable_warning(path, 0o400), None);
        let w = readable_warning(path, 0o100640).unwrap();
        assert!(w.contains("/etc/cs") && w.contains("0640"), "{w}");
        assert!(readable_warning(path, 0o604).unwrap().contains("0604"));
    }
}
