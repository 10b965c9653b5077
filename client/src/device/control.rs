//! The device's control channel: MQTT 3.1.1 over WebSocket to `/$iothub/websocket`, or
//! straight over TLS ([`MqttTransport`]).
//!
//! One session = connect, CONNECT with a fresh SAS token, SUBSCRIBE to stream requests,
//! then serve until the connection fails, the token is due for renewal (80% of its
//! lifetime), or shutdown. [`run`] repeats sessions forever with exponential backoff and
//! jitter, logging once per change of state rather than once per attempt. Streams are
//! separate WebSockets, so they outlive any one control session.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context};
use device_streams_protocol::{
    backoff::Backoff,
    mqtt::{MqttIo, MAX_PACKET},
    sas,
    wire::{self, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
    ws::WsStream,
    Secret,
};
use rumqttc::mqttbytes::{
    v4::{Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode},
    QoS,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::{either::Either, sync::CancellationToken};

use super::{
    incoming::{Answer, IncomingStream},
    MqttTransport, Settings, Status,
};
use crate::{
    connector::ClientTls,
    websocket::{self, ClientStream},
};

type Io = MqttIo<Either<ClientStream, ClientTls>>;

/// What the control loop hands requests to, and takes answers from.
pub(crate) struct Channels {
    pub requests: mpsc::Sender<IncomingStream>,
    pub answers_tx: mpsc::Sender<Answer>,
    pub answers_rx: mpsc::Receiver<Answer>,
    pub status: watch::Sender<Status>,
}

enum SessionEnd {
    Shutdown,
    RenewToken,
}

/// Runs the control channel until `shutdown`, reconnecting with backoff after every failure.
pub(crate) async fn run(settings: Arc<Settings>, mut ch: Channels, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(500), settings.max_backoff);
    let mut last_error: Option<String> = None;
    loop {
        let mut connected = false;
        let result = session(&settings, &mut ch, &shutdown, &mut connected).await;
        if connected {
            backoff.reset();
        }
        match result {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::RenewToken) => tracing::debug!("reconnecting to renew the SAS token"),
            Err(e) => {
                let msg = format!("{e:#}");
                let delay = backoff.next_delay();
                let next = format!("retrying in {:.1} s", delay.as_secs_f64());
                let host = &settings.connection.host;
                if last_error.as_deref() != Some(msg.as_str()) || connected {
                    tracing::warn!("control channel to hub {host}: {msg}; {next}");
                } else {
                    tracing::debug!("control channel to hub {host}: still failing; {next}");
                }
                let _ = ch.status.send(Status::Disconnected(msg.clone()));
                last_error = Some(msg);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    let _ = ch.status.send(Status::Stopped);
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("{what} timed out after {limit:?}"))?
}

/// The connection the control channel's MQTT runs on, and whether the hub said (in its
/// WebSocket 101 reply) that it serves the fast path.
async fn carrier(settings: &Settings) -> anyhow::Result<(Either<ClientStream, ClientTls>, bool)> {
    let host = &settings.connection.host;
    let carrier = match settings.transport {
        MqttTransport::WebSocket => {
            let url = format!("wss://{}:{}{MQTT_WS_PATH}", host.host, host.port);
            let connector = &settings.connector;
            let ws = websocket::connect_control(connector, &url, None, Some(MQTT_WS_SUBPROTOCOL));
            let (ws, fast) = ws.await?;
            (Either::Left(WsStream::new(ws)), fast)
        }
        MqttTransport::Tls { port } => (
            Either::Right(settings.connector.connect(&host.host, port).await?),
            false,
        ),
    };
    Ok(carrier)
}

/// Connects, authenticates and subscribes; returns the ready channel, and whether the
/// hub serves the fast path.
async fn open(settings: &Settings) -> anyhow::Result<(Io, bool)> {
    let cs = &settings.connection;
    let (carrier, fast) = carrier(settings)
        .await
        .context("cannot open the control channel")?;
    let mut io = MqttIo::new(carrier, MAX_PACKET);
    let host = cs.host.to_string();
    // An X.509 device's credential is the certificate its TLS connection presented.
    // A module identity is `<device>/<module>` to the hub: its own client id, user name
    // and SAS resource.
    let (client_id, username, resource) = match &cs.module_id {
        Some(m) => (
            format!("{}/{m}", cs.device_id),
            wire::mqtt_module_username(&host, &cs.device_id, m),
            sas::module_resource(&host, &cs.device_id, m),
        ),
        None => (
            cs.device_id.clone(),
            wire::mqtt_username(&host, &cs.device_id),
            sas::device_resource(&host, &cs.device_id),
        ),
    };
    let token = match cs.x509 {
        true => Secret::new(String::new()),
        false => sas::sign_for(&resource, &cs.key, settings.token_ttl, None)?,
    };
    let mut connect = Connect::new(client_id);
    connect.keep_alive = settings.keep_alive.as_secs().clamp(1, u64::from(u16::MAX)) as u16;
    connect.set_login(username, token.expose());
    let limit = settings.connector.timeout;
    within(limit, "CONNECT", async {
        Ok(io.write(Packet::Connect(connect)).await?)
    })
    .await?;
    match within(limit, "waiting for CONNACK", async { Ok(io.read().await?) }).await? {
        Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {}
        Some(Packet::ConnAck(ack)) => bail!(
            "hub refused device '{}': {}",
            cs.device_id,
            refusal(ack.code, cs.x509)
        ),
        _ => bail!("hub did not answer CONNECT with CONNACK"),
    }
    let subscribe = Subscribe::new(wire::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
    within(limit, "SUBSCRIBE", async {
        Ok(io.write(Packet::Subscribe(subscribe)).await?)
    })
    .await?;
    match within(limit, "waiting for SUBACK", async { Ok(io.read().await?) }).await? {
        Some(Packet::SubAck(ack))
            if matches!(
                ack.return_codes.first(),
                Some(SubscribeReasonCode::Success(_))
            ) =>
        {
            Ok((io, fast))
        }
        _ => bail!("hub refused the subscription to stream requests"),
    }
}

fn refusal(code: ConnectReturnCode, x509: bool) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword if x509 => "bad credentials (the hub refused the client certificate: expired or not yet valid, not the registered thumbprint, not from a registered CA, or its subject CN is not the device id; the hub's log says which)",
        ConnectReturnCode::BadUserNamePassword => "bad credentials (wrong key, or an expired token; check the connection string and the clock)",
        ConnectReturnCode::NotAuthorized => "not authorized (device unknown to the hub, or disabled)",
        ConnectReturnCode::BadClientId => "the device id is not acceptable",
        ConnectReturnCode::ServiceUnavailable => "the hub is unavailable",
        _ => "protocol refused",
    }
}

async fn session(
    settings: &Arc<Settings>,
    ch: &mut Channels,
    shutdown: &CancellationToken,
    connected: &mut bool,
) -> anyhow::Result<SessionEnd> {
    let (mut io, fast) = tokio::select! {
        io = open(settings) => io?,
        () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
    };
    *connected = true;
    let _standby = super::standby::for_session(settings, &ch.requests, shutdown, fast);
    let host = &settings.connection.host;
    let transport = settings.transport;
    tracing::info!(device = %settings.connection.device_id, "connected to hub {host} ({transport})");
    let _ = ch.status.send(Status::Connected);
    // An X.509 session has no token to renew.
    let renew_in = match settings.connection.x509 {
        true => Duration::from_secs(100 * 365 * 24 * 3600),
        false => settings.token_ttl.mul_f64(0.8),
    };
    let renew_at = Instant::now() + renew_in;
    let keep_alive = settings.keep_alive;
    let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                disconnect(&mut io).await;
                return Ok(SessionEnd::Shutdown);
            }
            () = tokio::time::sleep_until(renew_at) => {
                disconnect(&mut io).await;
                return Ok(SessionEnd::RenewToken);
            }
            _ = ping.tick() => {
                if std::mem::replace(&mut awaiting_pong, true) {
                    bail!("hub did not answer a ping within {keep_alive:?}");
                }
                within(keep_alive, "PINGREQ", async { Ok(io.write(Packet::PingReq).await?) }).await?;
            }
            Some(a) = ch.answers_rx.recv() => {
                within(keep_alive, "answering a stream request", answer(&mut io, a)).await?;
            }
            packet = io.read() => match packet.context("control channel")? {
                None => bail!("hub closed the control channel"),
                Some(Packet::PingResp) => awaiting_pong = false,
                Some(Packet::Publish(p)) => on_publish(settings, ch, &p.topic),
                Some(_) => {}
            },
        }
    }
}

async fn disconnect(io: &mut Io) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.write(Packet::Disconnect)).await;
}

async fn answer(io: &mut Io, answer: Answer) -> anyhow::Result<()> {
    let topic = wire::stream_response_topic(answer.status, &answer.rid);
    let payload = answer.reason.map(String::into_bytes).unwrap_or_default();
    let publish = Publish::new(topic, QoS::AtMostOnce, payload);
    Ok(io.write(Packet::Publish(publish)).await?)
}

/// Hands a stream request to the program. One the program is not taking fast enough (or
/// no longer takes) is dropped here, which rejects it.
fn on_publish(settings: &Arc<Settings>, ch: &Channels, topic: &str) {
    let request = match wire::parse_stream_request(topic) {
        Ok(r) => r,
        Err(e) => return tracing::warn!("ignoring a message from the hub: {e}"),
    };
    let incoming = IncomingStream::new(settings.clone(), request, ch.answers_tx.clone());
    if let Err(e) = ch.requests.try_send(incoming) {
        let (why, incoming) = match e {
            mpsc::error::TrySendError::Full(i) => {
                ("too many stream requests waiting on the device", i)
            }
            mpsc::error::TrySendError::Closed(i) => ("the device is shutting down", i),
        };
        tracing::warn!("rejecting stream request: {why}");
        incoming.reject_now(why);
    }
}
