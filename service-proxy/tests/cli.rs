//! The command line as users meet it: usage errors exit 2 with one clear line, and never
//! echo a key.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_service-local-proxy");
const KEY: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";

fn run(args: &[&str], connection_string: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("SERVICE_CONNECTION_STRING");
    if let Some(cs) = connection_string {
        cmd.env("SERVICE_CONNECTION_STRING", cs);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_connection_string_is_a_usage_error_without_the_key() {
    let (code, err) = run(
        &["--device-id", "dev1"],
        Some(&format!("HostName=h;SharedAccessKey={KEY}")),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("from environment variable SERVICE_CONNECTION_STRING is not valid")
            && err.contains("SharedAccessKeyName"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");

    let device_cs = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    let (code, err) = run(&["--device-id", "dev1"], Some(&device_cs));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("device's, not a service's") && !err.contains(KEY),
        "{err}"
    );
}

#[test]
fn bad_device_id_stream_name_and_ca_file_are_named() {
    let cs = format!("HostName=h;SharedAccessKeyName=service;SharedAccessKey={KEY}");
    let (code, err) = run(&["--device-id", "a/b"], Some(&cs));
    assert_eq!(code, Some(2));
    assert!(err.contains("--device-id") && err.contains("a/b"), "{err}");
    let (code, err) = run(
        &["--device-id", "d", "--stream-name", "no spaces"],
        Some(&cs),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("--stream-name"), "{err}");
    let (code, err) = run(
        &["--device-id", "d", "--ca-file", "/nonexistent/ca.pem"],
        Some(&cs),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--ca-file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn help_names_every_environment_variable_but_shows_no_secret_value() {
    let cs = format!("HostName=h;SharedAccessKeyName=service;SharedAccessKey={KEY}");
    let out = Command::new(BIN)
        .arg("--help")
        .env("SERVICE_CONNECTION_STRING", &cs)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for var in [
        "SERVICE_CONNECTION_STRING",
        "SERVICE_PROXY_DEVICE_ID",
        "SERVICE_PROXY_LISTEN",
        "SERVICE_PROXY_STDIO",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    assert!(!help.contains(KEY));
}

/// One setting, four sources: flag, then its environment variable, then the `--config`
/// file, then the built-in default. Each source names a different connection-string file,
/// and the error says which one was read.
#[test]
fn a_setting_comes_from_flag_then_environment_then_config_file_then_default() {
    let dir = std::env::temp_dir().join(format!("slp-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let config = dir.join("service.toml");
    let text = format!(
        "device-id = \"dev1\"\nconnection-string-file = \"{}\"\n",
        file("from-file")
    );
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("SERVICE_CONNECTION_STRING")
            .env_remove("SERVICE_PROXY_CONFIG")
            .env_remove("SERVICE_PROXY_DEVICE_ID")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("SERVICE_PROXY_CONNECTION_STRING_FILE");
        if let Some(path) = env {
            cmd.env("SERVICE_PROXY_CONNECTION_STRING_FILE", path);
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
    let err = run(&["--device-id", "dev1"], None);
    assert!(
        err.contains("no connection string"),
        "then the default (none): {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
