//! `stream-hub`'s registry commands as an operator uses them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stream-hub");

fn hub(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("STREAM_HUB_HOSTNAME")
        .output()
        .expect("stream-hub runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn init_device_and_connection_strings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    ok(&hub(&dir, &["init", "--hostname", "hub.example.com:8443"]));
    for file in ["ca.pem", "server.pem", "server-key.pem", "registry.db"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let again = hub(&dir, &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let cs = ok(&hub(&dir, &["device", "add", "dev1"]));
    assert_eq!(cs.lines().count(), 1);
    assert!(
        cs.starts_with("HostName=hub.example.com:8443;DeviceId=dev1;SharedAccessKey="),
        "{cs}"
    );
    let service = ok(&hub(&dir, &["connection-string"]));
    assert!(service
        .starts_with("HostName=hub.example.com:8443;SharedAccessKeyName=service;SharedAccessKey="));

    let dup = hub(&dir, &["device", "add", "dev1"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("device 'dev1' already exists"));
    let list = ok(&hub(&dir, &["device", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["deviceId"], "dev1");
    assert_eq!(list[0]["status"], "enabled");
    ok(&hub(&dir, &["device", "disable", "dev1"]));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&hub(&dir, &["device", "show", "dev1", "--json"]))).unwrap();
    assert_eq!(show["status"], "disabled");
    assert!(
        !show
            .to_string()
            .contains(cs.trim().split("SharedAccessKey=").nth(1).unwrap()),
        "keys must not be shown"
    );

    let endpoints: serde_json::Value =
        serde_json::from_str(&ok(&hub(&dir, &["endpoints"]))).unwrap();
    assert_eq!(
        endpoints["streamingEndpoints"][0],
        "https://hub.example.com:8443"
    );
}

#[test]
fn commands_on_a_missing_data_dir_say_how_to_create_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = hub(&tmp.path().join("nothing"), &["device", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream-hub init"));
}

/// One setting, four sources: flag, then its environment variable, then the `--config`
/// file, then the built-in default (`/var/lib/stream-hub`). Each names a different data
/// directory, and the error says which one was opened.
#[test]
fn a_setting_comes_from_flag_then_environment_then_config_file_then_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let config = tmp.path().join("hub.toml");
    std::fs::write(&config, format!("data-dir = \"{}\"\n", dir("from-file"))).unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("STREAM_HUB_CONFIG")
            .env_remove("STREAM_HUB_DATA_DIR");
        if let Some(path) = env {
            cmd.env("STREAM_HUB_DATA_DIR", path);
        }
        let out = cmd.output().expect("stream-hub runs");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cfg = config.to_str().unwrap();
    let (flag, env) = (dir("from-flag"), dir("from-env"));
    let err = run(
        &["--config", cfg, "--data-dir", &flag, "device", "list"],
        Some(&env),
    );
    assert!(err.contains("from-flag"), "flag first: {err}");
    let err = run(&["--config", cfg, "device", "list"], Some(&env));
    assert!(err.contains("from-env"), "then the environment: {err}");
    let err = run(&["--config", cfg, "device", "list"], None);
    assert!(err.contains("from-file"), "then the file: {err}");
    let err = run(&["device", "list"], None);
    assert!(
        err.contains("/var/lib/stream-hub"),
        "then the default: {err}"
    );
}

/// Microsoft's SDKs need a host name with a dot and no port: `init` says so, on one
/// line of stderr, and still creates the directory (our own proxies are fine with it).
#[test]
fn init_warns_when_microsoft_s_sdks_could_not_use_the_host_name() {
    let tmp = tempfile::tempdir().unwrap();
    let warning = |hostname: &str| {
        let dir = tmp.path().join(hostname.replace(':', "_"));
        let out = hub(&dir, &["init", "--hostname", hostname]);
        ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("warning")).collect();
        assert!(warnings.len() <= 1, "{stderr}");
        warnings.first().map(|w| w.to_string())
    };
    let both = warning("localhost:8443").expect("a warning for localhost:8443");
    assert!(
        both.contains("Microsoft") && both.contains("no dot") && both.contains("port"),
        "{both}"
    );
    let port = warning("hub.example.com:443").expect("a warning for a port");
    assert!(
        port.contains("names a port") && !port.contains("no dot"),
        "{port}"
    );
    assert_eq!(warning("hub.example.com"), None);
}
