//! `service-local-proxy`: the service (admin) side of device streams.
//!
//! Layout:
//! - [`run`]: the accept loop — one stream per accepted local connection, many at once.
//! - [`forward`]: several listeners, devices and streams in one process (`--forward`).
//! - [`run_stdio`]: one stream on stdin/stdout, for `ssh -o ProxyCommand=...`.
//!
//! Asking the hub and opening the stream is the SDK's ([`device_streams::ServiceClient`]);
//! this crate serves local connections with it. [`Config`] says which hub and how many
//! connections; a [`Route`] says which device and stream each listener's connections reach.
#![forbid(unsafe_code)]

pub mod forward;

use std::{sync::Arc, time::Duration};

use device_streams::{splice::splice, Route, ServiceClient};
use device_streams_common::{accept::Acceptor, shutdown::drain};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// After the local side ends, how long a reply already in flight may still arrive.
const LINGER: Duration = Duration::from_secs(5);

/// Which hub, and how local connections are served.
#[derive(Clone)]
pub struct Config {
    pub client: ServiceClient,
    /// Most local connections served at once (per listener).
    pub max_connections: usize,
    /// How long open streams may go on after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// Serves one local connection: a stream of its own, spliced until either side ends.
async fn serve<L: AsyncRead + AsyncWrite + Unpin>(
    client: &ServiceClient,
    route: &Route,
    mut local: L,
) -> anyhow::Result<()> {
    // On the fast path the local side's first bytes go with the request.
    let stream = client.open_piped(route, &mut local).await?;
    tracing::info!("stream open");
    let half_close = stream.half_close();
    let (moved, ended) = match splice(local, stream, LINGER, half_close).await {
        Ok(moved) => (moved, None),
        Err((e, moved)) => (moved, Some(e)),
    };
    let (sent, received) = (moved.local_to_stream, moved.stream_to_local);
    match ended {
        None => tracing::info!(
            bytes_sent = sent,
            bytes_received = received,
            "stream closed"
        ),
        Some(e) => tracing::info!(
            bytes_sent = sent,
            bytes_received = received,
            "stream ended: {e}"
        ),
    }
    Ok(())
}

/// Accepts local connections until `shutdown`, each a stream along `route`, then lets
/// open streams finish within the grace period.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    route: Route,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tracing::info!(
        addr = %listener.local_addr()?,
        device = %route.target(),
        stream = %route.stream_name(),
        "listening; each connection opens a stream"
    );
    let route = Arc::new(route);
    config.client.warm_up();
    let mut acceptor = Acceptor::new(listener);
    while let Some((tcp, peer)) = acceptor.next(&shutdown).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: {} already open (--max-connections)", config.max_connections);
            continue;
        };
        let (config, route) = (config.clone(), route.clone());
        let span = tracing::info_span!("conn", %peer, device = %route.target());
        tracker.spawn(
            async move {
                if let Err(e) = serve(&config.client, &route, tcp).await {
                    tracing::error!("{e:#}");
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
    drop(acceptor);
    drain(&tracker, config.shutdown_grace).await;
    Ok(())
}

/// Serves one stream along `route` on stdin/stdout (ssh's ProxyCommand). Errors are
/// returned for the caller to print.
pub async fn run_stdio(
    config: Arc<Config>,
    route: Route,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    tokio::select! {
        r = serve(&config.client, &route, stdio) => r,
        () = shutdown.cancelled() => Ok(()),
    }
}
