//! Operations endpoints: `GET /metrics` (Prometheus text format) and `GET /healthz`.
//! They are served on the main TLS port, or — with `serve --admin-listen` — only on a
//! separate plain-HTTP listener meant for a private network or loopback, which also
//! serves the HTML dashboard ([`crate::dashboard`]).

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
        (&Method::GET, "/healthz") => Some(health(hub)),
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

/// `ok`, or what a cluster node cannot do while it is cut off from NATS. Still 200: the
/// node goes on serving the devices it holds, and a balancer that took every node out
/// when NATS is down would cut those too; one that prefers to drain such a node can
/// match the body (HAProxy: `http-check expect rstring ^ok`).
fn health(hub: &Hub) -> Response<Body> {
    let trouble = hub.cluster.get().and_then(|node| node.trouble());
    text(
        StatusCode::OK,
        trouble.unwrap_or_else(|| "ok".into()) + "\n",
    )
}

/// The operations endpoints, then the dashboard's pages, then 404.
async fn route(
    hub: &Hub,
    served: crate::dashboard::Served,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(resp) = respond(hub, req.method(), &path) {
        return resp;
    }
    if crate::dashboard::serves(&path) {
        return crate::dashboard::respond(hub, served, &path, req).await;
    }
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "only /metrics, /healthz and the dashboard (/)",
    )
}

/// Serves the operations endpoints on a plain-HTTP listener until the hub shuts down;
/// its connections are the hub's tasks, so the hub's drain waits for them too.
pub async fn run(listener: TcpListener, hub: Arc<Hub>) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin listener (metrics, health, dashboard) up");
    // Reads without a sign-in only where just this machine can reach the listener.
    let served = crate::dashboard::Served {
        open_reads: local.ip().is_loopback(),
        secure: false,
        base: "",
    };
    let mut acceptor = Acceptor::new(listener);
    let tracker = hub.tracker.clone();
    while let Some((tcp, peer)) = acceptor.next(&hub.shutdown).await {
        let hub_shutdown = hub.shutdown.clone();
        let hub = hub.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let hub = hub.clone();
            async move { Ok::<_, Infallible>(route(&hub, served, req).await) }
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
