//! Where a connection string comes from: its flag or variable, a file
//! (`--connection-string-file`), or a systemd credential (`LoadCredential=`), in that order.
//! Files keep the secret off command lines and out of unit files' environment.

use std::path::{Path, PathBuf};

use anyhow::Context;

use device_streams_protocol::Secret;

/// The connection string from `value`, else read from `file`, else from the systemd
/// credential `credential` (`$CREDENTIALS_DIRECTORY/<credential>`). Errors name the file,
/// never its content.
pub fn connection_string(
    value: Option<Secret>,
    file: Option<&Path>,
    credential: &str,
) -> anyhow::Result<Secret> {
    if let Some(value) = value {
        return Ok(value);
    }
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => credential_path(credential).with_context(|| {
            format!(
                "no connection string: pass --connection-string-file, set its environment \
                 variable, or run under systemd with LoadCredential={credential}:…"
            )
        })?,
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the connection string from {}", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
    Ok(Secret::new(text))
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

    #[test]
    fn value_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cs");
        std::fs::write(&file, "HostName=h;DeviceId=d;SharedAccessKey=a2V5\n").unwrap();
        let got = connection_string(None, Some(&file), "x").unwrap();
        assert_eq!(got.expose(), "HostName=h;DeviceId=d;SharedAccessKey=a2V5");
        let got = connection_string(Some(Secret::new("v")), Some(&file), "x").unwrap();
        assert_eq!(got.expose(), "v");
        let e = connection_string(None, Some(&dir.path().join("none")), "x").unwrap_err();
        assert!(format!("{e:#}").contains("none"), "{e:#}");
        std::fs::write(&file, "\n").unwrap();
        assert!(connection_string(None, Some(&file), "x").is_err());
    }
}
