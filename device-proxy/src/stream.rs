//! One accepted stream on the device: dial the mapped target first (so an unreachable
//! target is a clean rejection, not a dead stream), accept, open the stream's WebSocket
//! with its one-time token, and splice the two until either side ends.

use std::{sync::Arc, time::Duration};

use device_streams_common::{
    protocol::{StreamRequest, ACCEPT, REJECT},
    splice::splice,
    ws,
};
use tokio::{net::TcpStream, sync::mpsc, sync::OwnedSemaphorePermit};
use tokio_util::task::AbortOnDropHandle;

use crate::{control::Answer, Config};

/// After our side ends, how long a reply already in flight may still arrive.
const LINGER: Duration = Duration::from_secs(5);

pub async fn serve(
    config: Arc<Config>,
    request: StreamRequest,
    _slot: OwnedSemaphorePermit,
    answers: mpsc::Sender<Answer>,
) {
    let Some(target) = config.targets.get(&request.name) else {
        let _ = answers.send((REJECT, request.rid)).await;
        return;
    };
    // The TLS connection for the stream's WebSocket, dialed while the target is dialed and
    // the request answered: the hub pairs the stream when this side arrives, so this
    // handshake is on the set-up's critical path. Dropped (aborted) on a rejection.
    let predial = AbortOnDropHandle::new(tokio::spawn({
        let (config, url) = (config.clone(), request.url.clone());
        async move { ws::dial(&config.connector, &url).await }
    }));
    let dial = tokio::time::timeout(config.target_timeout, TcpStream::connect(target)).await;
    let local = match dial {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return reject(
                answers,
                request,
                format!("cannot connect to target {target}: {e}"),
            )
            .await
        }
        Err(_) => {
            let why = format!(
                "connecting to target {target} timed out after {:?}",
                config.target_timeout
            );
            return reject(answers, request, why).await;
        }
    };
    let _ = local.set_nodelay(true);
    if answers.send((ACCEPT, request.rid.clone())).await.is_err() {
        return;
    }
    // A failed pre-dial is dialed again by the WebSocket, which reports the failure.
    let reuse = predial.await.ok().and_then(Result::ok);
    let ws = ws::connect_stream_on(&config.connector, &request.url, &request.auth, reuse);
    let ws = match ws.await {
        Ok(ws) => ws,
        Err(e) => {
            return tracing::warn!(
                "stream '{}' accepted but its WebSocket failed: {e}",
                request.name
            )
        }
    };
    tracing::info!(target = %target, "stream open");
    if let Ok((host, port)) = ws::host_and_port(&request.url) {
        config.connector.prepare_spare(&host, port);
    }
    let half_close = ws.half_close();
    match splice(local, ws, LINGER, half_close).await {
        Ok(moved) => tracing::info!(
            bytes_to_target = moved.stream_to_local,
            bytes_from_target = moved.local_to_stream,
            "stream closed"
        ),
        Err((e, moved)) => tracing::info!(
            bytes_to_target = moved.stream_to_local,
            bytes_from_target = moved.local_to_stream,
            "stream ended: {e}"
        ),
    }
}

async fn reject(answers: mpsc::Sender<Answer>, request: StreamRequest, why: String) {
    tracing::warn!("rejecting stream '{}': {why}", request.name);
    let _ = answers.send((REJECT, request.rid)).await;
}
