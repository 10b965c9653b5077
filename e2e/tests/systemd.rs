//! Running under systemd: the real binaries, configured by a TOML file and a credential
//! file, tell a `NOTIFY_SOCKET` (a datagram socket the test binds, as systemd does) READY=1
//! once they serve, WATCHDOG=1 at half `WATCHDOG_USEC`, and STOPPING=1 on SIGTERM.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use e2e::{bin, expose, System};
use tokio::net::UnixDatagram;

/// Reads notifications until one contains `want`; panics after `limit`.
async fn wait_for(socket: &UnixDatagram, want: &str, limit: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want} within {limit:?}"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.lines().any(|l| l == want) {
            return text;
        }
    }
}

fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    (UnixDatagram::bind(&path).unwrap(), path)
}

/// SIGTERM (what `systemctl stop` sends), then the exit status.
async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// A child process killed on drop unless [`terminate`]d.
struct Reap(Option<Child>);

/// Starts `cmd` quietly, notifying the socket at `socket`.
fn spawn(cmd: &mut Command, socket: &Path) -> Reap {
    let child = cmd
        .env("NOTIFY_SOCKET", socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Reap(Some(child))
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn device_proxy_is_ready_once_connected_feeds_the_watchdog_and_says_stopping() {
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(dir.path());

    // The connection string as a systemd credential (LoadCredential=), everything else
    // from the config file.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let cs = format!(
        "HostName={};DeviceId=dev1;SharedAccessKey={}",
        sys.hostname(),
        expose(&dev.key)
    );
    std::fs::write(creds.join("device-connection-string"), &cs).unwrap();
    let config = dir.path().join("device.toml");
    std::fs::write(
        &config,
        format!(
            "ca-file = {:?}\nmap = [\"ssh=127.0.0.1:22\", \"rdp=127.0.0.1:3389\"]\nshutdown-grace = \"1s\"\n",
            sys.ca_file().to_str().unwrap()
        ),
    )
    .unwrap();

    let mut child = spawn(
        Command::new(bin("device-local-proxy"))
            .arg("--config")
            .arg(&config)
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("DEVICE_CONNECTION_STRING"),
        &socket_path,
    );

    let ready = wait_for(&socket, "READY=1", Duration::from_secs(20)).await;
    assert!(
        ready.contains(&format!("STATUS=connected to hub {}", sys.hostname())),
        "{ready}"
    );
    assert!(
        sys.hub.is_connected("dev1"),
        "READY=1 before the hub saw the device"
    );
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5)).await;
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5)).await;

    let status = terminate(child.0.take().unwrap()).await;
    wait_for(&socket, "STOPPING=1", Duration::from_secs(5)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn hub_is_ready_once_listening_with_settings_from_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let out = Command::new(bin("stream-hub"))
        .args(["init", "--hostname", "localhost", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (socket, socket_path) = notify_socket(dir.path());
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {:?}\nlisten = \"127.0.0.1:0\"\nmax_streams = 7\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = spawn(
        Command::new(bin("stream-hub"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("STREAM_HUB_LISTEN"),
        &socket_path,
    );
    let ready = wait_for(&socket, "READY=1", Duration::from_secs(20)).await;
    assert!(
        ready.contains("STATUS=listening on 127.0.0.1:") && !ready.ends_with(":0"),
        "{ready}"
    );
    let status = terminate(child.0.take().unwrap()).await;
    wait_for(&socket, "STOPPING=1", Duration::from_secs(5)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn unknown_config_keys_are_a_usage_error_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("svc.toml");
    std::fs::write(
        &config,
        "device-id = \"dev1\"\nlisten-adress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new(bin("service-local-proxy"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown key 'listen-adress'") && stderr.contains("svc.toml"),
        "{stderr}"
    );
}

#[test]
fn the_example_configs_name_only_real_flags() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/examples");
    // A file's values become clap's defaults, so `--help` shows one the built-in
    // defaults do not have: proof the file was read, and every key in it was a flag.
    for (binary, file, shown) in [
        (
            "device-local-proxy",
            "device.toml",
            "[default: ssh=127.0.0.1:22 rdp=127.0.0.1:3389]",
        ),
        (
            "service-local-proxy",
            "service.toml",
            "[default: 2222=dev1:ssh 2223=dev2:ssh 3389=dev2:rdp]",
        ),
        ("stream-hub", "hub.toml", "[default: 0.0.0.0:443]"),
    ] {
        let mut cmd = Command::new(bin(binary));
        if binary == "stream-hub" {
            cmd.arg("serve");
        }
        // Clean of the variables a developer's shell may set, so the file's values show.
        for (name, _) in std::env::vars() {
            if name.starts_with("DEVICE_PROXY_")
                || name.starts_with("SERVICE_PROXY_")
                || name.starts_with("STREAM_HUB_")
            {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .arg("--config")
            .arg(examples.join(file))
            .arg("--help")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(shown), "{file}: {stdout}");
    }
}
