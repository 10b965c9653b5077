//! The SDK's examples (client/examples/) as a user runs them: real processes, configured
//! only by their environment variables and flags, against a real hub. `cargo test
//! --workspace` does not build examples, so the test builds them itself with the same
//! cargo (and target directory) that runs it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Once,
    time::Duration,
};

use e2e::{expose, System};
use tokio::io::{AsyncBufReadExt, BufReader};

static BUILD: Once = Once::new();

/// The example binary `name`, built (once per test process).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/examples/<name>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    // Built every time (a no-op when fresh), so the test never runs a stale example.
    BUILD.call_once(|| {
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cargo = Command::new(env!("CARGO"));
        // What cargo sets for this test's own run (CARGO_PKG_NAME=e2e, ...) would read as a
        // changed environment to build scripts (ring's) and rebuild them each time.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let per_crate = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| key.starts_with(p));
            if per_crate
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key)
            {
                cargo.env_remove(&*key);
            }
        }
        let status = cargo
            // --workspace: the features `cargo test --workspace` built the libraries with,
            // so nothing is built twice.
            .args(["build", "--workspace", "--examples", "--target-dir"])
            .arg(target_dir)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --examples failed");
    });
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Runs the echo pair: the device example serves, the service example sends `lines` and
/// must get each back.
#[tokio::test(flavor = "multi_thread")]
async fn echo_examples_round_trip_against_a_real_hub() {
    let (device_bin, service_bin) = (example("echo_device"), example("echo_service"));
    let sys = System::start().await;
    let device = sys.add_device("echo-dev");
    let ca = sys.ca_file();

    let mut device_proc = tokio::process::Command::new(device_bin)
        .env(
            "DEVICE_CONNECTION_STRING",
            expose(&device.to_secret_string()),
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .arg("--ca-file")
        .arg(&ca)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start echo_device");
    let mut device_out = BufReader::new(device_proc.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), device_out.next_line())
        .await
        .expect("echo_device says it is connected")
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("connected"), "{first}");
    sys.wait_connected("echo-dev").await;

    let service = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&service_bin);
        cmd.env(
            "SERVICE_CONNECTION_STRING",
            expose(&sys.service_connection().to_secret_string()),
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("DEVICE_ID")
        .arg("--ca-file")
        .arg(&ca)
        .args(["--device", "echo-dev"])
        .args(args)
        .kill_on_drop(true);
        cmd
    };

    // Lines as arguments: each comes back and is printed.
    let out = service(&["hello", "device streams"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\ndevice streams\n"
    );

    // Lines from stdin.
    let mut child = service(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\nthree\n").await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");

    // Another stream name: the device's reason reaches the service's error.
    let out = service(&["--stream", "other", "x"]).output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rejected stream 'other'") && err.contains("echoes only stream 'TestStream'"),
        "{err}"
    );

    // An unknown device: said so, not a hang.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        service(&["--device", "nobody", "x"]).output(),
    )
    .await
    .expect("echo_service gives up")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody"), "{err}");

    device_proc.start_kill().unwrap();
    let _ = device_proc.wait().await;
}

/// The file example: the receiver saves what the sender streams, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn send_file_example_streams_a_file_whole() {
    let bin = example("send_file");
    let sys = System::start().await;
    let device = sys.add_device("file-dev");
    let ca = sys.ca_file();
    let work = tempfile::tempdir().unwrap();
    let (inbox, source) = (work.path().join("inbox"), work.path().join("data.bin"));
    std::fs::create_dir(&inbox).unwrap();
    let data = e2e::random_bytes(3 * 1024 * 1024 + 17);
    std::fs::write(&source, &data).unwrap();

    let mut receiver = tokio::process::Command::new(&bin)
        .env(
            "DEVICE_CONNECTION_STRING",
            expose(&device.to_secret_string()),
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .arg("--ca-file")
        .arg(&ca)
        .arg("receive")
        .arg(&inbox)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    sys.wait_connected("file-dev").await;

    let out = tokio::process::Command::new(&bin)
        .env(
            "SERVICE_CONNECTION_STRING",
            expose(&sys.service_connection().to_secret_string()),
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .arg("--ca-file")
        .arg(&ca)
        .args(["send", "file-dev"])
        .arg(&source)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{} bytes sent", data.len())),
        "{stdout}"
    );
    assert_eq!(std::fs::read(inbox.join("data.bin")).unwrap(), data);

    receiver.start_kill().unwrap();
    let _ = receiver.wait().await;
}
