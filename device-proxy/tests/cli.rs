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
        err.contains("from environment variable DEVICE_CONNECTION_STRING is not valid")
            && err.contains("DeviceId")
            && !err.contains(KEY),
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

/// One setting, four sources: the flag wins over its environment variable, which wins over
/// the `--config` file, which wins over the built-in default. Each source names a different
/// connection-string file, and the error says which one was read.
#[test]
fn a_setting_comes_from_flag_then_environment_then_config_file_then_default() {
    let dir = std::env::temp_dir().join(format!("dlp-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let config = dir.join("device.toml");
    std::fs::write(
        &config,
        format!(
            "map = [\"ssh=127.0.0.1:22\"]\nconnection-string-file = \"{}\"\n",
            file("from-file")
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("DEVICE_CONNECTION_STRING")
            .env_remove("DEVICE_PROXY_MAP")
            .env_remove("DEVICE_PROXY_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("DEVICE_PROXY_CONNECTION_STRING_FILE");
        if let Some(path) = env {
            cmd.env("DEVICE_PROXY_CONNECTION_STRING_FILE", path);
        }
        let out = cmd.output().expect("binary runs");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cfg = config.to_str().unwrap();
    let (flag, env) = (file("from-flag"), file("from-env"));
    let err = run(
        &["--config", cfg, "--connection-string-file", &flag],
        Some(&env),
    );
    assert!(err.contains("from-flag"), "flag first: {err}");
    let err = run(&["--config", cfg], Some(&env));
    assert!(err.contains("from-env"), "then the environment: {err}");
    let err = run(&["--config", cfg], None);
    assert!(err.contains("from-file"), "then the file: {err}");
    let err = run(&["--map", "ssh=127.0.0.1:22"], None);
    assert!(
        err.contains("no connection string"),
        "then the default (none): {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
