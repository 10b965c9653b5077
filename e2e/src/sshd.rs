//! A throw-away OpenSSH server on a free loopback port, and `ssh` commands for it.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use crate::daemon::{find, Daemon};

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
    _daemon: Daemon,
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
        let sshd = find(
            "sshd",
            &["/usr/sbin/sshd"],
            "OpenSSH (Debian: openssh-server openssh-client)",
        );
        let daemon = Daemon::start("sshd", &d.join("sshd.log"), |port| {
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 MaxStartups 100:30:200\nMaxSessions 100\nLogLevel ERROR\n",
                d = d.display()
            );
            std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
            let mut cmd = Command::new(&sshd);
            cmd.arg("-D")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null());
            cmd
        });
        Sshd {
            port: daemon.port,
            _daemon: daemon,
            dir,
        }
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
