//! A throw-away tinyproxy (a real HTTP proxy, as corporate networks have) on a free
//! loopback port, optionally demanding basic-auth credentials, logging every request.

use std::process::{Command, Stdio};

use crate::daemon::{find, Daemon};

pub struct Tinyproxy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _daemon: Daemon,
}

impl Tinyproxy {
    /// Starts `tinyproxy -d` allowing CONNECT to any port, with `credentials` (user, password) required if given.
    pub fn start(credentials: Option<(&str, &str)>) -> Tinyproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        let tinyproxy = find(
            "tinyproxy",
            &["/usr/bin/tinyproxy"],
            "tinyproxy (Debian: tinyproxy)",
        );
        let log = d.join("tinyproxy.log");
        let daemon = Daemon::start("tinyproxy", &log, |port| {
            // No ConnectPort line: CONNECT to every port (the hub's is random).
            let mut config = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 200\nLogLevel Info\n\
                 LogFile \"{}\"\nAllow 127.0.0.1\n",
                log.display()
            );
            if let Some((user, password)) = credentials {
                config.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            std::fs::write(d.join("tinyproxy.conf"), config).expect("tinyproxy.conf");
            let mut cmd = Command::new(&tinyproxy);
            cmd.arg("-d")
                .arg("-c")
                .arg(d.join("tinyproxy.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        });
        Tinyproxy {
            port: daemon.port,
            _daemon: daemon,
            dir,
        }
    }

    /// `http://[user:password@]127.0.0.1:<port>`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// How many CONNECT requests for `target` (`host:port`) the proxy has logged.
    pub fn connects_to(&self, target: &str) -> usize {
        let log =
            std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default();
        let needle = format!("CONNECT {target} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}
