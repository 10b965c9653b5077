//! A throw-away xrdp (a real RDP server) on a free loopback port, and FreeRDP's
//! `xfreerdp +auth-only` (under `xvfb-run`: the X client wants a display even when it
//! only connects) as the client.
//!
//! xrdp checks passwords in its login session (xrdp-sesman), after the RDP connection
//! sequence; `+auth-only` ends right after that sequence (TLS, MCS, channels, licensing),
//! so a success means a complete RDP handshake crossed the tunnel, whatever the password.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use crate::daemon::{find, Daemon};

const INSTALL: &str = "xrdp, freerdp2-x11, xvfb and xauth (Debian packages)";

pub struct Xrdp {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _daemon: Daemon,
}

/// The system's xrdp.ini (its channel and session sections are what the connection
/// sequence needs) with our port, TLS security, no forking and our log file.
fn config(system: &str, port: u16, log: &Path) -> String {
    let mut replaced = [false; 4];
    system
        .lines()
        .map(|line| {
            let set = |i: usize, replaced: &mut [bool; 4], key: &str, value: String| {
                if !replaced[i] && line.starts_with(key) {
                    replaced[i] = true;
                    Some(format!("{key}{value}"))
                } else {
                    None
                }
            };
            set(0, &mut replaced, "port=", format!("tcp://127.0.0.1:{port}"))
                .or_else(|| set(1, &mut replaced, "security_layer=", "tls".into()))
                .or_else(|| set(2, &mut replaced, "fork=", "false".into()))
                .or_else(|| set(3, &mut replaced, "LogFile=", log.display().to_string()))
                .unwrap_or_else(|| line.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Xrdp {
    pub fn start() -> Xrdp {
        let xrdp = find("xrdp", &["/usr/sbin/xrdp"], INSTALL);
        let system = std::fs::read_to_string("/etc/xrdp/xrdp.ini")
            .unwrap_or_else(|e| panic!("/etc/xrdp/xrdp.ini: {e}: install {INSTALL}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        let log = d.join("xrdp.log");
        let daemon = Daemon::start("xrdp", &log, |port| {
            std::fs::write(d.join("xrdp.ini"), config(&system, port, &log)).expect("xrdp.ini");
            let mut cmd = Command::new(&xrdp);
            cmd.arg("--nodaemon")
                .arg("--config")
                .arg(d.join("xrdp.ini"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        });
        Xrdp {
            port: daemon.port,
            _daemon: daemon,
            dir,
        }
    }
}

/// `xvfb-run -a xfreerdp +auth-only /v:127.0.0.1:<port> …`: exits 0 once the RDP
/// connection sequence completed.
pub fn auth_only(port: u16) -> Command {
    find("xvfb-run", &["/usr/bin/xvfb-run"], INSTALL);
    find("xfreerdp", &["/usr/bin/xfreerdp"], INSTALL);
    let mut cmd = Command::new("xvfb-run");
    cmd.args(["-a", "xfreerdp", "+auth-only", "/cert:ignore", "/sec:tls"])
        .args(["/u:admin", "/p:not-checked-by-auth-only", "/timeout:20000"])
        .arg(format!("/v:127.0.0.1:{port}"))
        .stdin(Stdio::null());
    cmd
}
