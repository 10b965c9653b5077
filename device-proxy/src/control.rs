//! The device's control channel: MQTT 3.1.1 over WebSocket to `/$iothub/websocket`.
//!
//! One session = connect, CONNECT with a fresh SAS token, SUBSCRIBE to stream requests,
//! then serve until the connection fails, the token is due for renewal (80% of its
//! lifetime), or shutdown. [`run`] repeats sessions forever with exponential backoff and
//! jitter, logging once per change of state rather than once per attempt. Streams are
//! separate WebSockets, so they outlive any one control session.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context};
use device_streams_common::{
    backoff::Backoff,
    mqtt::{MqttIo, MAX_PACKET},
    protocol::{self, StreamRequest, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
    sas, sd_notify,
    shutdown::drain,
    ws::{self, ClientStream, WsStream},
};
use rumqttc::mqttbytes::{
    v4::{Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode},
    QoS,
};
use tokio::{
    sync::{mpsc, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{stream, Config};

type Io = MqttIo<ClientStream>;

/// A stream task's answer to the hub: (status, request id).
pub type Answer = (u16, String);

enum SessionEnd {
    Shutdown,
    RenewToken,
}

/// Runs the control channel until `shutdown`, then lets open streams finish within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_streams));
    let (answers_tx, mut answers_rx) = mpsc::channel::<Answer>(256);
    let mut backoff = Backoff::new(Duration::from_millis(500), config.max_backoff);
    let mut last_error: Option<String> = None;
    let ctx = Ctx {
        config: &config,
        tracker: &tracker,
        slots: &slots,
        answers: &answers_tx,
    };
    loop {
        let mut connected = false;
        let result = session(&ctx, &mut answers_rx, &shutdown, &mut connected).await;
        if connected {
            backoff.reset();
        }
        match result {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::RenewToken) => tracing::debug!("reconnecting to renew the SAS token"),
            Err(e) => {
                let msg = format!("{e:#}");
                if last_error.as_deref() != Some(msg.as_str()) || connected {
                    tracing::warn!(
                        "control channel to hub {}: {msg}; retrying with backoff",
                        config.connection.host
                    );
                }
                last_error = Some(msg);
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    drain(&tracker, config.shutdown_grace).await;
    Ok(())
}

struct Ctx<'a> {
    config: &'a Arc<Config>,
    tracker: &'a TaskTracker,
    slots: &'a Arc<Semaphore>,
    answers: &'a mpsc::Sender<Answer>,
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

/// Connects, authenticates and subscribes; returns the ready channel.
async fn open(config: &Config) -> anyhow::Result<Io> {
    let cs = &config.connection;
    let url = format!("wss://{}:{}{MQTT_WS_PATH}", cs.host.host, cs.host.port);
    let ws = ws::connect(&config.connector, &url, None, Some(MQTT_WS_SUBPROTOCOL))
        .await
        .context("cannot open the control channel")?;
    let mut io = MqttIo::new(WsStream::new(ws), MAX_PACKET);
    let host = cs.host.to_string();
    let token = sas::sign_for(
        &sas::device_resource(&host, &cs.device_id),
        &cs.key,
        config.token_ttl,
        None,
    )?;
    let mut connect = Connect::new(cs.device_id.clone());
    connect.keep_alive = config.keep_alive.as_secs().clamp(1, u64::from(u16::MAX)) as u16;
    connect.set_login(
        protocol::mqtt_username(&host, &cs.device_id),
        token.expose(),
    );
    let limit = config.connector.timeout;
    within(limit, "CONNECT", async {
        Ok(io.write(Packet::Connect(connect)).await?)
    })
    .await?;
    match within(limit, "waiting for CONNACK", async { Ok(io.read().await?) }).await? {
        Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {}
        Some(Packet::ConnAck(ack)) => bail!(
            "hub refused device '{}': {}",
            cs.device_id,
            refusal(ack.code)
        ),
        _ => bail!("hub did not answer CONNECT with CONNACK"),
    }
    let subscribe = Subscribe::new(protocol::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
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
            Ok(io)
        }
        _ => bail!("hub refused the subscription to stream requests"),
    }
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => "bad credentials (wrong key, or an expired token; check the connection string and the clock)",
        ConnectReturnCode::NotAuthorized => "not authorized (device unknown to the hub, or disabled)",
        ConnectReturnCode::BadClientId => "the device id is not acceptable",
        ConnectReturnCode::ServiceUnavailable => "the hub is unavailable",
        _ => "protocol refused",
    }
}

async fn session(
    ctx: &Ctx<'_>,
    answers: &mut mpsc::Receiver<Answer>,
    shutdown: &CancellationToken,
    connected: &mut bool,
) -> anyhow::Result<SessionEnd> {
    let config = ctx.config;
    let mut io = tokio::select! {
        io = open(config) => io?,
        () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
    };
    *connected = true;
    tracing::info!(device = %config.connection.device_id, "connected to hub {}", config.connection.host);
    sd_notify::ready(&format!("connected to hub {}", config.connection.host));
    let renew_at = Instant::now() + config.token_ttl.mul_f64(0.8);
    let mut ping = tokio::time::interval_at(Instant::now() + config.keep_alive, config.keep_alive);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), io.write(Packet::Disconnect)).await;
                return Ok(SessionEnd::Shutdown);
            }
            () = tokio::time::sleep_until(renew_at) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), io.write(Packet::Disconnect)).await;
                return Ok(SessionEnd::RenewToken);
            }
            _ = ping.tick() => {
                if std::mem::replace(&mut awaiting_pong, true) {
                    bail!("hub did not answer a ping within {:?}", config.keep_alive);
                }
                within(config.keep_alive, "PINGREQ", async { Ok(io.write(Packet::PingReq).await?) }).await?;
            }
            Some((status, rid)) = answers.recv() => {
                let publish = Publish::new(protocol::stream_response_topic(status, &rid), QoS::AtMostOnce, Vec::new());
                within(config.keep_alive, "answering a stream request", async { Ok(io.write(Packet::Publish(publish)).await?) }).await?;
            }
            packet = io.read() => match packet.context("control channel")? {
                None => bail!("hub closed the control channel"),
                Some(Packet::PingResp) => awaiting_pong = false,
                Some(Packet::Publish(p)) => on_publish(ctx, &p.topic, &mut io).await?,
                Some(_) => {}
            },
        }
    }
}

async fn on_publish(ctx: &Ctx<'_>, topic: &str, io: &mut Io) -> anyhow::Result<()> {
    let request = match protocol::parse_stream_request(topic) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("ignoring a message from the hub: {e}");
            return Ok(());
        }
    };
    match admit(ctx, &request) {
        Ok(permit) => {
            let span = tracing::info_span!("stream", name = %request.name, rid = %request.rid);
            let task = stream::serve(ctx.config.clone(), request, permit, ctx.answers.clone());
            ctx.tracker.spawn(task.instrument(span));
            Ok(())
        }
        Err(why) => {
            tracing::warn!(name = %request.name, "rejecting stream request: {why}");
            let publish = Publish::new(
                protocol::stream_response_topic(protocol::REJECT, &request.rid),
                QoS::AtMostOnce,
                Vec::new(),
            );
            Ok(io.write(Packet::Publish(publish)).await?)
        }
    }
}

/// Whether this device takes the request: its name must be in the map and a slot free.
fn admit(
    ctx: &Ctx<'_>,
    request: &StreamRequest,
) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
    if ctx.config.targets.get(&request.name).is_none() {
        return Err(format!(
            "stream name '{}' is not in this device's --map (it maps: {})",
            request.name,
            ctx.config.targets.names().join(", ")
        ));
    }
    ctx.slots.clone().try_acquire_owned().map_err(|_| {
        format!(
            "already {} streams open (--max-streams)",
            ctx.config.max_streams
        )
    })
}
