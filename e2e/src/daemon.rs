//! Real third-party daemons (sshd, tinyproxy) for the tests: found on the system, started
//! in the foreground on a free loopback port, killed on drop.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

/// `name` on `PATH`, else the first existing fallback; panics with `install` as the hint.
pub fn find(name: &str, fallbacks: &[&str], install: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    on_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install {install} (scripts/test installs it)"))
}

/// A daemon process, killed on drop.
pub struct Daemon {
    pub port: u16,
    child: Child,
}

/// How many times, 50 ms apart, a daemon's port is tried before it counts as not started:
/// 15 s, as a cluster node whose NATS is down waits a few seconds for it before it listens.
const POLLS: u32 = 300;

impl Daemon {
    /// Picks a free loopback port, has `command(port)` build the daemon's command line, and
    /// waits until the port accepts connections. Losing the port to another process between
    /// the pick and the daemon's bind makes the daemon exit: then it tries another port.
    /// Panics, with the text of `log` if it exists, if the daemon never comes up.
    pub fn start(name: &str, log: &Path, mut command: impl FnMut(u16) -> Command) -> Daemon {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = command(port)
                .spawn()
                .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
            for _ in 0..POLLS {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Daemon { port, child };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // lost the port race: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{name} did not start: {log}");
    }
}

impl Daemon {
    /// Starts `command`, which listens on `port` (chosen beforehand because something
    /// else must name it first), and waits until the port accepts connections.
    pub fn start_on(name: &str, log: &Path, port: u16, mut command: Command) -> Daemon {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        for _ in 0..POLLS {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Daemon { port, child };
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{name} did not start on port {port}: {log}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
