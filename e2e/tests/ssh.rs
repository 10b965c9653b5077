//! A real OpenSSH client reaches a real sshd through service proxy → hub → device proxy.

use std::process::Output;

use e2e::{bin, expose, random_bytes, sha256, sshd::Sshd, SshTunnel, System};

fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ssh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_a_command_through_the_tunnel() {
    let t = SshTunnel::start().await;

    let out = e2e::run_with_input(t.ssh("echo hello from $(id -un)"), vec![]).await;
    assert_eq!(
        assert_ok(&out).trim(),
        format!("hello from {}", e2e::sshd::user())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_mib_each_way_arrive_hash_exact() {
    let t = SshTunnel::start().await;
    let size = 32 * 1024 * 1024;

    // Upload: the remote side hashes what arrives.
    let data = random_bytes(size);
    let want = sha256(&data);
    let out = e2e::run_with_input(t.ssh("sha256sum"), data).await;
    assert_eq!(
        assert_ok(&out).split_whitespace().next(),
        Some(want.as_str())
    );

    // Download: a file made on the remote side, hashed there and here.
    let file = t.sshd.dir.path().join("download.bin");
    let remote = format!(
        "head -c {size} /dev/urandom > {f} && sha256sum {f} >&2 && cat {f}",
        f = file.display()
    );
    let out = e2e::run_with_input(t.ssh(&remote), vec![]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), size);
    let remote_hash = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .next()
        .map(str::to_string);
    assert_eq!(remote_hash, Some(sha256(&out.stdout)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_sessions_each_get_their_own_bytes() {
    let t = SshTunnel::start().await;

    let sessions = (0..20).map(|i| {
        let data = random_bytes(512 * 1024 + i);
        let want = sha256(&data);
        let cmd = t.ssh(&format!("echo session {i}; sha256sum"));
        async move {
            let out = e2e::run_with_input(cmd, data).await;
            let text = assert_ok(&out);
            assert_eq!(text, format!("session {i}\n{want}  -\n"));
        }
    });
    futures_util::future::join_all(sessions).await;
    assert!(t.sys.hub.open_streams() <= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_proxycommand_with_stdio_mode() {
    let sshd = Sshd::start();
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("ssh=127.0.0.1:{}", sshd.port)])
        .await;

    let proxy = format!(
        "{} --stdio --ca-file {} --device-id %h",
        bin("service-local-proxy").display(),
        sys.ca_file().display()
    );
    let mut cmd = sshd.ssh_via(&proxy, "dev1", "echo via proxycommand");
    cmd.env(
        "SERVICE_CONNECTION_STRING",
        expose(&sys.service_connection().to_secret_string()),
    );
    let out = e2e::run_with_input(cmd, vec![]).await;
    assert_eq!(assert_ok(&out).trim(), "via proxycommand");
}
