//! Module identities: `module add` prints a `ModuleId=` connection string; the real device
//! proxy with it connects as `<device>/<module>` (its own presence entry) and serves real
//! ssh to `service-local-proxy --module-id`; modules are rotated, disabled, enabled and
//! deleted like devices, each change taking effect on the live session.

use std::{process::Stdio, time::Duration};

use device_streams::StreamError;
use device_streams_protocol::connection_string::DeviceConnectionString;
use e2e::{
    bin, eventually, expose, fault::Peer, hub_cli, open_stream, random_bytes, round_trip, sha256,
    sshd::Sshd, System,
};
use tokio::io::{AsyncBufReadExt, BufReader};

fn refused_status(result: Result<device_streams::Stream, StreamError>) -> u16 {
    match result {
        Err(StreamError::Refused { status, .. }) => status.as_u16(),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_identity_carries_real_ssh_as_its_own_presence_entry() {
    let sshd = Sshd::start();
    let sys = System::start().await;
    sys.add_device("dev1");
    let data = sys.data().path;
    let cs = hub_cli(&data, &["module", "add", "dev1", "shell"]);
    let cs = cs.trim();
    let prefix = format!(
        "HostName={};DeviceId=dev1;ModuleId=shell;SharedAccessKey=",
        sys.hostname()
    );
    assert!(cs.starts_with(&prefix), "{cs}");

    let mut child = tokio::process::Command::new(bin("device-local-proxy"))
        .args(["--ca-file", &sys.ca_file().display().to_string()])
        .args(["--map", &format!("ssh=127.0.0.1:{}", sshd.port)])
        .env("DEVICE_CONNECTION_STRING", cs)
        .env("RUST_LOG", "info")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("connected to hub") {
                return;
            }
        }
        panic!("the device proxy exited before connecting");
    })
    .await
    .expect("the module connects within 10 s");
    sys.wait_connected("dev1/shell").await;
    assert!(
        !sys.hub.is_connected("dev1"),
        "the module's session counted as the device's"
    );

    let proxy = format!(
        "{} --stdio --ca-file {} --device-id dev1 --module-id shell",
        bin("service-local-proxy").display(),
        sys.ca_file().display()
    );
    let data_in = random_bytes(512 * 1024);
    let mut cmd = sshd.ssh_via(&proxy, "dev1", "sha256sum");
    cmd.env(
        "SERVICE_CONNECTION_STRING",
        expose(&sys.service_connection().to_secret_string()),
    );
    let out = e2e::run_with_input(cmd, data_in.clone()).await;
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}  -\n", sha256(&data_in))
    );

    // The device itself has no session: a stream to it is refused as not connected.
    assert_eq!(
        refused_status(open_stream(&sys.service_config("dev1", "ssh")).await),
        404
    );
    let list = hub_cli(&data, &["module", "list", "dev1"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("shell") && l.contains("online")),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_rotated_disabled_enabled_and_deleted_like_devices() {
    let sys = System::start().await;
    let echo = Peer::echo().await;
    let map = format!("echo={}", echo.addr);
    sys.add_device("dev1");
    let data = sys.data().path;
    let cs: DeviceConnectionString = hub_cli(&data, &["module", "add", "dev1", "m"])
        .trim()
        .parse()
        .unwrap();
    let first = sys.start_device(cs, &[&map]).await;
    let mut config = sys.service_config("dev1", "echo");
    config.module_id = Some("m".into());
    let mut s = open_stream(&config).await.unwrap();
    round_trip(&mut s, b"to a module").await;

    // Rotating the key its session signed in with cuts it; the other key connects.
    hub_cli(&data, &["module", "rotate-key", "dev1", "m"]);
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("dev1/m"));
    assert!(cut.await, "the session outlived its rotated key by 2 s");
    drop(first);
    let second = hub_cli(
        &data,
        &["module", "connection-string", "dev1", "m", "--secondary"],
    );
    let _device = sys
        .start_device(second.trim().parse().unwrap(), &[&map])
        .await;
    let mut s = open_stream(&config).await.unwrap();
    round_trip(&mut s, b"on the secondary key").await;

    hub_cli(&data, &["module", "disable", "dev1", "m"]);
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("dev1/m"));
    assert!(cut.await, "a disabled module's session outlived it by 2 s");
    assert_eq!(refused_status(open_stream(&config).await), 403);
    hub_cli(&data, &["module", "enable", "dev1", "m"]);
    sys.wait_connected("dev1/m").await;

    // Disabling the device takes its modules with it.
    hub_cli(&data, &["device", "disable", "dev1"]);
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("dev1/m"));
    assert!(cut.await, "a disabled device's module outlived it by 2 s");
    hub_cli(&data, &["device", "enable", "dev1"]);
    sys.wait_connected("dev1/m").await;

    hub_cli(&data, &["module", "delete", "dev1", "m"]);
    let cut = eventually(Duration::from_secs(2), || !sys.hub.is_connected("dev1/m"));
    assert!(cut.await, "a deleted module's session outlived it by 2 s");
    assert_eq!(refused_status(open_stream(&config).await), 404);
}
