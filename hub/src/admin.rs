//! Operations endpoints: `GET /metrics` (Prometheus text format) and `GET /healthz`.
//! They are served on the main TLS port, or — with `serve --admin-listen` — only on a
//! separate plain-HTTP listener meant for a private network or loopback.

use std::{convert::Infallible, sync::Arc};

use device_streams_common::accept::Acceptor;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::{
    http::{error, text, Body},
    Hub,
};

/// Answers an operations request, or `None` if the path is not one.
pub fn respond(hub: &Hub, method: &Method, path: &str) -> Option<Response<Body>> {
    match (method, path) {
        (&Method::GET, "/healthz") => Some(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/metrics") => {
            let body = hub.metrics.render(crate::metrics::Gauges {
                connected_devices: hub.sessions.connected(),
                open_streams: hub.streams.active(),
                unauthenticated: hub.preauth.unauthenticated(),
            });
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Some(resp)
        }
        _ => None,
    }
}

/// Serves the operations endpoints on a plain-HTTP listener until the hub shuts down;
/// its connections are the hub's tasks, so the hub's drain waits for them too.
pub async fn run(listener: TcpListener, hub: Arc<Hub>) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "admin listener (metrics, health) up");
    let mut acceptor = Acceptor::new(listener);
    let tracker = hub.tracker.clone();
    while let Some((tcp, peer)) = acceptor.next(&hub.shutdown).await {
        let hub_shutdown = hub.shutdown.clone();
        let hub = hub.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let resp = respond(&hub, req.method(), req.uri().path()).unwrap_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "only /metrics and /healthz",
                )
            });
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let shutdown = hub_shutdown.clone();
            let r = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!("admin connection: {e}");
            }
        };
        tracker.spawn(conn.instrument(tracing::debug_span!("admin", %peer)));
    }
    Ok(())
}
