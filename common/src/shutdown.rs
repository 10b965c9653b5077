//! SIGINT/SIGTERM become one `CancellationToken` that every entry point watches; SIGHUP
//! asks a running process to re-read what can change under it ([`on_hangup`]).

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        // Before anything else: the process may exit as soon as the token is cancelled.
        crate::sd_notify::notify("STOPPING=1");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Closes `tracker` and waits up to `grace` for its tasks (open streams) to finish.
pub async fn drain(tracker: &tokio_util::task::TaskTracker, grace: std::time::Duration) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "{} tasks (open streams, connections) still running after the grace period; ending them",
            tracker.len()
        );
    }
}

/// Calls `reload` on every SIGHUP until `shutdown` (the usual "re-read your files" signal:
/// `systemctl reload`, `kill -HUP`).
pub async fn on_hangup(mut reload: impl FnMut(), shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return tracing::warn!("cannot watch SIGHUP; reloading needs a restart");
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hup.recv() => match got {
                    Some(()) => reload(),
                    None => return,
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (&mut reload, shutdown);
    }
}
