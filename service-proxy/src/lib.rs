//! `service-local-proxy`: the service (admin) side of device streams.
//!
//! Layout:
//! - [`request`]: asking the hub for a stream to a device and opening its WebSocket.
//! - [`run`]: the accept loop — one stream per accepted local connection, many at once.
//! - [`forward`]: several listeners, devices and streams in one process (`--forward`).
//! - [`run_stdio`]: one stream on stdin/stdout, for `ssh -o ProxyCommand=...`.
#![forbid(unsafe_code)]

pub mod forward;
pub mod request;

use std::{sync::Arc, time::Duration};

use device_streams_common::{
    accept::Acceptor, connection_string::ServiceConnectionString, shutdown::drain, splice::splice,
    tls::Connector,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use request::{open_stream, StreamError};

/// After the local side ends, how long a reply already in flight may still arrive.
const LINGER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Config {
    pub connection: ServiceConnectionString,
    pub connector: Connector,
    pub device_id: String,
    pub stream_name: String,
    /// Asked of the hub: how long both sides may take to reach the streaming endpoint.
    pub connect_timeout: Duration,
    /// Asked of the hub: how long the device may take to answer.
    pub response_timeout: Duration,
    /// Lifetime of the SAS token signed for each request.
    pub token_ttl: Duration,
    /// Most local connections served at once.
    pub max_connections: usize,
    /// How long open streams may go on after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// Serves one local connection: a stream of its own, spliced until either side ends.
async fn serve<L: AsyncRead + AsyncWrite + Unpin>(config: &Config, local: L) -> anyhow::Result<()> {
    let stream = open_stream(config).await?;
    tracing::info!("stream open");
    let half_close = stream.half_close();
    match splice(local, stream, LINGER, half_close).await {
        Ok(moved) => {
            tracing::info!(
                bytes_sent = moved.local_to_stream,
                bytes_received = moved.stream_to_local,
                "stream closed"
            );
            Ok(())
        }
        Err((e, moved)) => {
            tracing::info!(
                bytes_sent = moved.local_to_stream,
                bytes_received = moved.stream_to_local,
                "stream ended: {e}"
            );
            Ok(())
        }
    }
}

/// Accepts local connections until `shutdown`, then lets open streams finish within the grace period.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tracing::info!(
        addr = %listener.local_addr()?,
        device = %config.device_id,
        stream = %config.stream_name,
        "listening; each connection opens a stream"
    );
    let mut acceptor = Acceptor::new(listener);
    while let Some((tcp, peer)) = acceptor.next(&shutdown).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: {} already open (--max-connections)", config.max_connections);
            continue;
        };
        let config = config.clone();
        let span = tracing::info_span!("conn", %peer, device = %config.device_id);
        tracker.spawn(
            async move {
                if let Err(e) = serve(&config, tcp).await {
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

/// Serves one stream on stdin/stdout (ssh's ProxyCommand). Errors are returned for the caller to print.
pub async fn run_stdio(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    tokio::select! {
        r = serve(&config, stdio) => r,
        () = shutdown.cancelled() => Ok(()),
    }
}
