//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` units: one
//! datagram per state change to the unix socket in `$NOTIFY_SOCKET` (a name starting with
//! `@` is in the abstract namespace). Without the variable every call is a no-op, so the
//! binaries behave the same outside systemd.
//!
//! - `READY=1`: the device proxy once connected and subscribed, the hub once listening;
//! - `WATCHDOG=1`: every half `$WATCHDOG_USEC` (`WatchdogSec=`), from a task on the main
//!   runtime, so a wedged runtime stops feeding it and systemd restarts the service;
//! - `STOPPING=1`: when a shutdown signal arrives.

use std::{io, os::unix::net::UnixDatagram, time::Duration};

use tokio_util::sync::CancellationToken;

/// Sends `state` (`KEY=VALUE` lines) to systemd. Returns whether a socket was named; a
/// failure to send is logged, never fatal: the service works without its supervisor.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    if let Err(e) = send(&path.to_string_lossy(), state) {
        tracing::debug!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
    true
}

fn send(path: &str, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            return socket.send_to_addr(state.as_bytes(), &addr).map(drop);
        }
        #[cfg(not(target_os = "linux"))]
        return Err(io::Error::other(format!(
            "abstract socket @{name} needs Linux"
        )));
    }
    socket.send_to(state.as_bytes(), path).map(drop)
}

/// `READY=1` with a human-readable status line for `systemctl status`.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={status}"))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

/// Feeds the watchdog, if systemd asked for one, until `shutdown`. Call from within the
/// runtime. (`STOPPING=1` is sent by [`crate::shutdown::on_signal`].)
pub fn supervise(shutdown: &CancellationToken) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => { notify("WATCHDOG=1"); }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("device-streams-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let rx = UnixDatagram::bind_addr(&addr).unwrap();
            send(&format!("@{name}"), "WATCHDOG=1").unwrap();
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"WATCHDOG=1");
        }
    }
}
