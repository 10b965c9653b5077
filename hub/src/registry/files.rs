//! The registry's files are owner-only: the database holds every key. SQLite would create
//! them 0644 less the umask, and a copy or a restore can widen them later, so the files
//! are made private at creation and checked again on every open.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The database and the files SQLite keeps beside it in WAL mode.
pub(super) fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let beside = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), beside("-wal"), beside("-shm")]
}

/// Creates `path` empty and owner-only if it does not exist. Left to SQLite, a new
/// database would get 0644 less the umask (and its -wal and -shm files the same).
pub(super) fn create_private(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        // An empty file is an empty database to SQLite.
        Ok(file) => set_mode(&file, 0o600),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `file`'s mode exactly: the umask only ever takes bits away from a mode asked for at
/// creation, and one that takes the owner's away would leave the hub unable to read it.
pub fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Takes group and other access away from `path` if it has any, with a warning naming the
/// path and its old mode; a mode it cannot change is warned about and left (see
/// `DataDir::make_private` for why neither stops the hub).
pub fn make_private(path: &Path) {
    match remove_others_access(path) {
        Ok(None) => {}
        Ok(Some(old)) => tracing::warn!(
            "{} was mode {old:04o}, open to other local users; changed to {:04o} \
             (the data directory holds every key: rotate them if others may have read it)",
            path.display(),
            old & 0o700
        ),
        Err(e) => tracing::warn!(
            "{} is open to other local users and its mode cannot be changed: {e}",
            path.display()
        ),
    }
}

/// Takes group and other access away from `path` if it has any, and returns its mode from
/// before then. A missing path is left alone, and so is a symbolic link: changing the mode
/// would follow the link to a file outside the data directory.
fn remove_others_access(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() || mode & 0o077 == 0 {
            return Ok(None);
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}
