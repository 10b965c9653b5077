//! The data directory holds every key: only the hub's user may read it, whatever the umask
//! the commands run under. Each command runs as the real binary under `umask 022`, the
//! usual default, which on its own would leave the directory 0755 and the files 0644.
#![cfg(unix)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_stream-hub");

/// `stream-hub --data-dir <dir> <args>` under `umask 022`.
fn hub_under_umask_022(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 022; exec "$@""#)
        .arg("sh")
        .arg(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("STREAM_HUB_HOSTNAME")
        .env_remove("STREAM_HUB_CONFIG")
        .env("RUST_LOG", "info");
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = hub_under_umask_022(dir, args)
        .output()
        .expect("stream-hub runs");
    assert!(
        out.status.success(),
        "stream-hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The directory is 0700 and every file in it 0600; returns the files' names.
fn assert_private(dir: &Path) -> Vec<String> {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    files(dir)
        .into_iter()
        .map(|f| {
            assert_eq!(mode(&f), 0o600, "{} is {:04o}", f.display(), mode(&f));
            f.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Loosens the directory to 0755 and every file to 0644, as a copy or restore might.
fn loosen(dir: &Path) {
    set_mode(dir, 0o755);
    for f in files(dir) {
        set_mode(&f, 0o644);
    }
}

#[test]
fn init_under_umask_022_leaves_the_data_dir_to_its_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    run(&dir, &["init", "--hostname", "hub.example.com:8443"]);
    let names = assert_private(&dir);
    for file in [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "registry.db",
    ] {
        assert!(names.iter().any(|n| n == file), "{file} missing: {names:?}");
    }
    // Registry commands write to the database too (SQLite's -wal and -shm come and go).
    run(&dir, &["device", "add", "dev1"]);
    run(
        &dir,
        &["policy", "add", "reader", "--rights", "registry-read"],
    );
    assert_private(&dir);

    // An empty directory made beforehand (e.g. by a package) is made private as well.
    let made = tmp.path().join("made");
    fs::create_dir(&made).unwrap();
    set_mode(&made, 0o755);
    run(&made, &["init"]);
    assert_private(&made);
}

#[test]
fn registry_commands_take_back_access_others_had_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    run(&dir, &["init"]);
    loosen(&dir);
    let out = run(&dir, &["device", "list"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_private(&dir);
    for (path, old) in [
        (dir.clone(), "0755"),
        (dir.join("registry.db"), "0644"),
        (dir.join("server-key.pem"), "0644"),
    ] {
        let want = format!("{} was mode {old}", path.display());
        assert!(log.contains(&want), "no '{want}' in:\n{log}");
    }
    // Once private, nothing more to say.
    let out = run(&dir, &["device", "list"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("was mode"), "{log}");
}

/// Kills the hub this test started when the test ends, however it ends.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_takes_back_access_and_keeps_its_sqlite_files_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    run(&dir, &["init"]);
    loosen(&dir);
    let log_file = tmp.path().join("serve.log");
    let mut hub = Hub(
        hub_under_umask_022(&dir, &["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("stream-hub serve starts"),
    );

    // A running hub holds the database open, so SQLite's -wal and -shm files exist.
    let (wal, shm) = (dir.join("registry.db-wal"), dir.join("registry.db-shm"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(wal.exists() && shm.exists()) {
        if let Some(status) = hub.0.try_wait().unwrap() {
            panic!(
                "the hub exited ({status}):\n{}",
                fs::read_to_string(&log_file).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no -wal and -shm files appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = assert_private(&dir);
    assert!(names.iter().any(|n| n == "registry.db-wal"), "{names:?}");
    let log = fs::read_to_string(&log_file).unwrap();
    for (path, old) in [(dir.clone(), "0755"), (dir.join("ca-key.pem"), "0644")] {
        let want = format!("{} was mode {old}", path.display());
        assert!(log.contains(&want), "no '{want}' in:\n{log}");
    }
}
