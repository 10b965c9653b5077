//! A throw-away OpenSSH server on a free loopback port, and `ssh` commands for it.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

fn find(name: &str, fallbacks: &[&str]) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    on_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install OpenSSH (Debian: openssh-server openssh-client; .ci/run does)"))
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
}

pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    /// Starts `sshd -D` with its own host key, accepting the current user with a fresh client key.
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("id_ed25519"));
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let _ = std::fs::create_dir_all("/run/sshd"); // privilege separation directory
        let sshd = find("sshd", &["/usr/sbin/sshd"]);
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 MaxStartups 100:30:200\nMaxSessions 100\nLogLevel ERROR\n",
                d = d.display()
            );
            std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("sshd starts");
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd { dir, port, child };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // lost the port race: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start: {log}");
    }

    fn base(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.dir.path().join("id_ed25519"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=20",
            ]);
        cmd
    }

    /// `ssh -p <port> <user>@127.0.0.1 <remote command>`: through a service proxy listening on `port`.
    pub fn ssh(&self, port: u16, remote: &str) -> Command {
        let mut cmd = self.base();
        cmd.arg("-p")
            .arg(port.to_string())
            .arg(format!("{}@127.0.0.1", user()))
            .arg(remote);
        cmd
    }

    /// `ssh -o ProxyCommand=<proxy> <user>@<host> <remote command>`.
    pub fn ssh_via(&self, proxy_command: &str, host: &str, remote: &str) -> Command {
        let mut cmd = self.base();
        cmd.arg("-o")
            .arg(format!("ProxyCommand={proxy_command}"))
            .arg(format!("{}@{host}", user()))
            .arg(remote);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
