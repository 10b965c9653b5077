//! The hub's TLS ports: accept loop, TLS, HTTP/1.1, and routing to the endpoints; and,
//! with `serve --mqtt-listen`, the MQTT port (devices' control sessions straight over TLS).
//!
//! | route | endpoint |
//! |---|---|
//! | `POST /twins/{id}/streams/{name}`, `POST /twins/{id}/modules/{module}/streams/{name}` | [`crate::stream::request`]: a service asks for a stream |
//! | `GET /$iothub/websocket` | [`crate::mqtt`]: a device's control channel |
//! | `GET /bridges/{stream}` | [`crate::stream::endpoint`]: the streaming endpoint |
//! | `GET /$x-device-streams/open`, `GET /$x-device-streams/standby/{id}` | [`crate::stream::fast`]: the fast path's warm and standby connections |
//! | `GET,PUT,DELETE /devices/{id}`, `GET /devices` | [`crate::registry_api`] |
//! | `GET /metrics`, `GET /healthz` | [`crate::admin`], unless an admin listener serves them |
//! | `/dashboard/…` | [`crate::dashboard`], with `serve --dashboard` (sign-in required) |

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::Context;
use device_streams_common::{accept::Acceptor, shutdown::drain};
use device_streams_protocol::{fast, read_ahead::ReadAhead, sas::url_decode, wire};
use http::{Method, Request, Response, StatusCode};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::{net::TcpListener, net::TcpStream, sync::Semaphore};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tracing::Instrument;

use crate::{
    admin, dashboard,
    http::{error, Body, ConnPermit},
    metrics::Refused,
    mqtt,
    preauth::Full,
    registry_api, revocation,
    stream::{self, endpoint, request},
    x509::PeerCerts,
    Hub,
};

/// How long after the grace period the hub still waits for its tasks.
const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves `listener` until `hub.shutdown` is cancelled, then waits for every task
/// (open streams get the shutdown grace period) and returns.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    hub: Arc<Hub>,
) -> anyhow::Result<()> {
    run_with(listener, None, tls, hub).await
}

/// [`run`], and with `mqtt` also devices' MQTT straight over TLS (`serve --mqtt-listen`):
/// the same certificate, connection cap, limits and shutdown as the main port.
pub async fn run_with(
    listener: TcpListener,
    mqtt: Option<TcpListener>,
    tls: Arc<ServerConfig>,
    hub: Arc<Hub>,
) -> anyhow::Result<()> {
    // One cap over both ports: it bounds file descriptors and memory, not a kind of client.
    let connections = Arc::new(Semaphore::new(hub.limits().max_connections));
    tracing::info!(addr = %listener.local_addr()?, streaming = %hub.config.streaming_base, "hub listening");
    hub.tracker.spawn(revocation::watch(hub.clone()));
    hub.tracker
        .spawn(crate::dashboard::history::sample_every(hub.clone()));
    if let Some(mqtt) = mqtt {
        tracing::info!(addr = %mqtt.local_addr()?, "MQTT over TLS listening");
        let tls = TlsAcceptor::from(crate::tls::for_mqtt(&tls));
        let accept = accept(hub.clone(), mqtt, Port::Mqtt, tls, connections.clone());
        hub.tracker.spawn(accept);
    }
    accept(
        hub.clone(),
        listener,
        Port::Main,
        TlsAcceptor::from(tls),
        connections,
    )
    .await;
    // Open streams end `shutdown_grace` after the signal (the relay's stop); the margin
    // lets their Close handshakes and activity records finish.
    drain(&hub.tracker, hub.limits().shutdown_grace + DRAIN_MARGIN).await;
    hub.live.stop();
    tracing::info!("hub stopped");
    Ok(())
}

/// What a listener serves after the TLS handshake.
#[derive(Clone, Copy)]
enum Port {
    /// HTTP/1.1: REST, MQTT over WebSocket, the streaming endpoint.
    Main,
    /// MQTT 3.1.1, nothing else.
    Mqtt,
}

/// Accepts on `listener` until shutdown, each connection in its own task on the hub's
/// tracker, in a span naming the peer, holding a place under `--max-connections`.
async fn accept(
    hub: Arc<Hub>,
    listener: TcpListener,
    port: Port,
    tls: TlsAcceptor,
    connections: Arc<Semaphore>,
) {
    let mut acceptor = Acceptor::new(listener);
    while let Some((tcp, peer)) = acceptor.next(&hub.shutdown).await {
        hub.metrics.connection_accepted();
        let Some(permit) = admit(&hub, &connections, peer) else {
            continue;
        };
        let (hub, tls) = (hub.clone(), tls.clone());
        let tracker = hub.tracker.clone();
        match port {
            Port::Main => tracker.spawn(
                async move {
                    if let Err(e) = serve_connection(hub, tls, tcp, peer, permit).await {
                        tracing::debug!("connection ended: {e:#}");
                    }
                }
                .instrument(tracing::info_span!("conn", %peer)),
            ),
            // The span a WebSocket control session gets too, so both read alike in the log.
            Port::Mqtt => tracker.spawn(serve_mqtt(hub, tls, tcp, permit).instrument(
                tracing::info_span!(
                    "device",
                    %peer,
                    device = tracing::field::Empty
                ),
            )),
        };
    }
}

/// A place for a new connection from `peer` under `--max-connections` and among the
/// unauthenticated ones, or `None` (the connection is then dropped: closed at once).
fn admit(hub: &Hub, connections: &Arc<Semaphore>, peer: SocketAddr) -> Option<ConnPermit> {
    let limits = hub.limits();
    let Ok(conn) = connections.clone().try_acquire_owned() else {
        hub.metrics.connection_refused(Refused::MaxConnections);
        tracing::debug!(%peer, "connection refused: at the limit of {} connections", limits.max_connections);
        return None;
    };
    let max = limits.max_unauthenticated;
    let per_address = limits.max_unauthenticated_per_address;
    match hub.preauth.admit(peer.ip(), max, per_address) {
        Ok(place) => Some(ConnPermit::new(conn, place)),
        Err(full) => {
            // Debug only: a flood would otherwise write a line per connection; the
            // metric counts them.
            let why = match full {
                Full::Hub => Refused::Unauthenticated,
                Full::Address => Refused::UnauthenticatedAddress,
            };
            hub.metrics.connection_refused(why);
            tracing::debug!(%peer, "connection refused: too many unauthenticated connections ({full:?})");
            None
        }
    }
}

async fn handshake(
    hub: &Hub,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> anyhow::Result<TlsStream<ReadAhead<TcpStream>>> {
    let limit = hub.limits().tls_handshake;
    tokio::time::timeout(limit, acceptor.accept(ReadAhead::new(tcp)))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")
}

/// A connection to the MQTT port: one control session, exactly as over WebSocket.
async fn serve_mqtt(hub: Arc<Hub>, acceptor: TlsAcceptor, tcp: TcpStream, permit: ConnPermit) {
    match handshake(&hub, &acceptor, tcp).await {
        Ok(tls) => {
            let peer = PeerCerts::of(tls.get_ref().1);
            // Boxed for the reason `mqtt::upgrade` boxes its WebSocket.
            let carrier = Box::new(tls);
            if let Err(e) = mqtt::session(hub, carrier, peer, Some(permit.clone())).await {
                tracing::warn!("control session ended: {e:#}");
            }
        }
        Err(e) => tracing::debug!("connection ended: {e:#}"),
    }
    drop(permit);
}

async fn serve_connection(
    hub: Arc<Hub>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
) -> anyhow::Result<()> {
    let limits = hub.limits();
    let tls = handshake(&hub, &acceptor, tcp).await?;
    // For a control session over WebSocket on this connection (an X.509 device's proof).
    let peer_certs = PeerCerts::of(tls.get_ref().1);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.first_message)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let route_hub = hub.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(permit.clone());
        req.extensions_mut().insert(peer_certs.clone());
        route(route_hub.clone(), peer, req)
    });
    let conn = builder
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r.context("HTTP")?,
        () = hub.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await.context("HTTP")?;
        }
    }
    Ok(())
}

async fn route(
    hub: Arc<Hub>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method().clone(), path.as_str()) {
        (Method::POST, p) if p.starts_with("/twins/") => {
            let module = || wire::parse_module_stream_request_path(p);
            match wire::parse_stream_request_path(p) {
                Some((device, name)) => request::stream_request(hub, req, (device, None), name).await,
                None => match module() {
                    Some((device, module, name)) => {
                        request::stream_request(hub, req, (device, Some(module)), name).await
                    }
                    None => error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "expected /twins/{deviceId}/streams/{streamName} or /twins/{deviceId}/modules/{moduleId}/streams/{streamName}",
                    ),
                },
            }
        }
        (Method::GET, wire::MQTT_WS_PATH) => mqtt::upgrade(hub, req, peer),
        (Method::GET, fast::OPEN_PATH) => stream::fast::open::upgrade(hub, req),
        (Method::GET, p) if p.starts_with(fast::STANDBY_PATH) => {
            match fast::parse_standby_path(p) {
                Some(identity) => stream::fast::standby::upgrade(hub, req, identity),
                None => error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "expected /$x-device-streams/standby/{deviceId}[/{moduleId}]",
                ),
            }
        }
        (Method::GET, p) if p.starts_with(wire::BRIDGES_PREFIX) => {
            let id = p[wire::BRIDGES_PREFIX.len()..].to_string();
            endpoint::upgrade(hub, req, id)
        }
        (_, "/devices") => registry_api::handle(hub, req, None).await,
        (_, p) if p.starts_with("/devices/") => match url_decode(&p["/devices/".len()..]) {
            Ok(id) => registry_api::handle(hub, req, Some(id)).await,
            Err(_) => error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "device id is not valid UTF-8",
            ),
        },
        (_, p) if hub.config.dashboard_on_main_port && dashboard::on_tls_port(p).is_some() => {
            let page = dashboard::on_tls_port(p).unwrap_or("/").to_string();
            dashboard::respond(&hub, dashboard::Served::TLS, &page, req).await
        }
        (method, p) => match hub
            .config
            .ops_on_main_port
            .then(|| admin::respond(&hub, &method, p))
        {
            Some(Some(resp)) => resp,
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no endpoint for {method} {path}"),
            ),
        },
    };
    Ok(resp)
}
