//! The command line as users meet it: usage errors exit 2 with one clear line naming the
//! bad part, and never echo a key.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_device-local-proxy");
const KEY: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";

fn run(args: &[&str], connection_string: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DEVICE_CONNECTION_STRING", connection_string)
        .env_remove("DEVICE_PROXY_MAP")
        .output()
        .expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_map_values_are_named() {
    let cs = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    for (map, expect) in [
        ("ssh", "NAME=HOST:PORT"),
        ("ssh=localhost", "HOST:PORT"),
        ("s h=127.0.0.1:22", "stream name"),
    ] {
        let (code, err) = run(&["--map", map], &cs);
        assert_eq!(code, Some(2), "{map}: {err}");
        assert!(err.contains(expect), "{map}: {err}");
    }
    let (code, err) = run(&["--map", "ssh=h:22", "--map", "ssh=h:23"], &cs);
    assert_eq!(code, Some(2));
    assert!(err.contains("mapped twice"), "{err}");
    let (code, _) = run(&[], &cs);
    assert_eq!(code, Some(2), "--map is required");
}

#[test]
fn bad_connection_string_and_ca_file_are_named_without_the_key() {
    let (code, err) = run(
        &["--map", "ssh=h:22"],
        &format!("HostName=h;SharedAccessKey={KEY}"),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--connection-string") && err.contains("DeviceId") && !err.contains(KEY),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("dlp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "this is not a certificate").unwrap();
    let cs = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    let (code, err) = run(
        &["--map", "ssh=h:22", "--ca-file", not_pem.to_str().unwrap()],
        &cs,
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--ca-file") && err.contains("no PEM certificate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
