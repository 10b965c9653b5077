//! One admitted stream on the device: dial the mapped target first (so an unreachable
//! target is a clean rejection, not a dead stream), accept, and splice the two until
//! either side ends.

use std::{sync::Arc, time::Duration};

use device_streams::{device::IncomingStream, splice::splice};
use tokio::{net::TcpStream, sync::OwnedSemaphorePermit};

use crate::Shared;

/// After our side ends, how long a reply already in flight may still arrive.
const LINGER: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    shared: Arc<Shared>,
    request: IncomingStream,
    _slot: OwnedSemaphorePermit,
) {
    let targets = shared.targets();
    let Some(target) = targets.get(request.name()) else {
        let why = format!("no target is mapped for stream '{}'", request.name());
        return request.reject(&why).await;
    };
    let local = match dial(target, shared.target_timeout).await {
        Ok(tcp) => tcp,
        Err(why) => {
            tracing::warn!("rejecting stream '{}': {why}", request.name());
            return request.reject(&why).await;
        }
    };
    let ws = match request.accept().await {
        Ok(ws) => ws,
        Err(e) => return tracing::warn!("{e}"),
    };
    tracing::info!(target = %target, "stream open");
    let half_close = ws.half_close();
    let (moved, ended) = match splice(local, ws, LINGER, half_close).await {
        Ok(moved) => (moved, None),
        Err((e, moved)) => (moved, Some(e)),
    };
    let (to, from) = (moved.stream_to_local, moved.local_to_stream);
    match ended {
        None => tracing::info!(
            bytes_to_target = to,
            bytes_from_target = from,
            "stream closed"
        ),
        Some(e) => tracing::info!(
            bytes_to_target = to,
            bytes_from_target = from,
            "stream ended: {e}"
        ),
    }
}

/// Connects to the target within `limit`, or says why not (naming the target).
async fn dial(target: &str, limit: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(limit, TcpStream::connect(target)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(format!("cannot connect to target {target}: {e}")),
        Err(_) => Err(format!(
            "connecting to target {target} timed out after {limit:?}"
        )),
    }
}
