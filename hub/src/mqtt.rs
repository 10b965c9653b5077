//! Devices' control channel: MQTT 3.1.1 over WebSocket at `/$iothub/websocket` on the main
//! port ([`upgrade`]), or straight after the TLS handshake on the MQTT port
//! (`serve --mqtt-listen`, Azure's 8883, where Microsoft's SDKs' default MQTT transport
//! goes; [`crate::server`] accepts it). Both run the one [`session`]: the same
//! authentication, limits and session loop, whatever carries the bytes.
//!
//! A module identity is a session of its own, as `<deviceId>/<moduleId>` (its client id),
//! signing in with the module's keys.
//!
//! The first packet must be a CONNECT, within the first-message timeout, whose password is
//! the device's SAS token, or, for an X.509 device, whose TLS connection presented the
//! device's certificate ([`crate::x509`]). After that the hub publishes stream requests to the device
//! and takes its answers (`$iothub/streams/res/<status>/?$rid=<rid>`). A device may only
//! subscribe to the streams topics and only publish stream answers; anything else is
//! refused or ignored, and a malformed packet ends the session.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use device_streams_protocol::ws::WsStream;
use device_streams_protocol::{
    mqtt::MqttIo,
    wire::{self, MQTT_WS_SUBPROTOCOL},
};
use http::{Request, Response};
use hyper::body::Incoming;
use rumqttc::mqttbytes::{
    v4::{
        ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
        SubscribeReasonCode, UnsubAck,
    },
    QoS,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    auth::{self, AuthError, Login},
    http::{accept_upgrade, upgraded, Body, ConnPermit},
    metrics::AuthKind,
    registry::{split_identity, valid_identity, RegistryError},
    request_queue,
    sessions::Outgoing,
    x509::PeerCerts,
    Hub,
};

/// What a control session needs of its connection: a byte stream both ways.
pub trait Carrier: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Carrier for S {}

/// Idle limit for a device that asked for no keep-alive at all.
const MAX_IDLE: Duration = Duration::from_secs(30 * 60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn upgrade(hub: Arc<Hub>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let permit = req.extensions().get::<ConnPermit>().cloned();
    let certs = req
        .extensions()
        .get::<PeerCerts>()
        .cloned()
        .unwrap_or_default();
    let (mut resp, on_upgrade) = match accept_upgrade(&mut req, Some(MQTT_WS_SUBPROTOCOL)) {
        Ok(accepted) => accepted,
        Err(bad) => return bad.response(),
    };
    // Tells our device proxy it may keep standby connections (Azure never says this).
    crate::stream::fast::advertise(&hub, resp.headers_mut());
    let span = tracing::info_span!("device", %peer, device = tracing::field::Empty);
    let tracker = hub.tracker.clone();
    tracker.spawn(
        async move {
            let result = async {
                // MQTT packets are small (`max_mqtt_packet`): so are the WebSocket messages
                // carrying them, which bounds what a connection can make the hub buffer
                // before it has authenticated.
                let carrier = {
                    let max = hub.limits().max_mqtt_packet;
                    let ws = upgraded(on_upgrade, max).await;
                    // Boxed: this task lives as long as the device is connected, and a
                    // future keeps a place for each value a live scope moved from; boxed,
                    // those places are a pointer each, not a whole WebSocket.
                    Box::new(WsStream::new(ws.context("WebSocket upgrade failed")?))
                };
                session(hub, carrier, certs, permit).await
            };
            if let Err(e) = result.await {
                tracing::warn!("control session ended: {e:#}");
            }
        }
        .instrument(span),
    );
    resp
}

/// A device's control session on `carrier`, from its first packet to its end; `certs` is
/// what the TLS connection under it presented, and `permit` the connection's place, which
/// a successful CONNECT marks authenticated. Run it in a span with an empty `device`
/// field: the session fills it in from CONNECT.
pub async fn session<S: Carrier>(
    hub: Arc<Hub>,
    carrier: S,
    certs: PeerCerts,
    permit: Option<ConnPermit>,
) -> anyhow::Result<()> {
    let mut io = MqttIo::new(carrier, hub.limits().max_mqtt_packet);
    // CONNECT is taken in a function of its own, so that none of its values (the packet,
    // its strings, the SAS token) keep a place in this future, which lives as long as the
    // device is connected.
    let Admitted {
        device,
        login,
        keep_alive,
    } = admit(&hub, &mut io, &certs, permit.as_ref()).await?;
    let expires = login.ends_at();
    let registration = hub
        .sessions
        .register(&device, login.credential, &hub.shutdown);
    record_connection(&hub, &device);
    let result = async {
        let accepted = ConnAck::new(ConnectReturnCode::Success, false);
        write(&mut io, Packet::ConnAck(accepted)).await?;
        tracing::info!("device connected");
        let (requests, cancel) = (registration.rx, &registration.cancel);
        run(
            &hub, &device, &mut io, requests, cancel, keep_alive, expires,
        )
        .await
    }
    .await;
    hub.sessions.unregister(&device, registration.generation);
    io.shutdown().await;
    let why = result?;
    tracing::info!("device disconnected: {why}");
    Ok(())
}

/// What a CONNECT the hub accepted gives the session.
struct Admitted {
    device: String,
    login: Login,
    keep_alive: Duration,
}

/// Reads the first packet, which must be a CONNECT, and authenticates it, marking the
/// connection's `permit` authenticated; a refused device gets its CONNACK, and the
/// connection is shut down.
async fn admit<S: Carrier>(
    hub: &Hub,
    io: &mut MqttIo<S>,
    certs: &PeerCerts,
    permit: Option<&ConnPermit>,
) -> anyhow::Result<Admitted> {
    let connect = read_connect(hub, io).await?;
    let device = connect.client_id.clone();
    tracing::Span::current().record("device", device.as_str());
    let keep_alive = keep_alive(&connect);
    let login = authenticate(hub, &connect, certs);
    match login.and_then(|l| room_for(hub, &device).map(|()| l)) {
        Ok(login) => {
            if let Some(permit) = permit {
                permit.authenticated();
            }
            Ok(Admitted {
                device,
                login,
                keep_alive,
            })
        }
        Err((code, why)) => {
            let _ = write(io, Packet::ConnAck(ConnAck::new(code, false))).await;
            io.shutdown().await;
            bail!("device '{device}' refused: {why}");
        }
    }
}

/// The session's first packet, which must be CONNECT and come within the first-message
/// timeout.
async fn read_connect<S: Carrier>(hub: &Hub, io: &mut MqttIo<S>) -> anyhow::Result<Connect> {
    let first = tokio::select! {
        // Nothing is registered yet, so nothing needs the grace period.
        () = hub.shutdown.cancelled() => bail!("hub shutting down before CONNECT"),
        first = tokio::time::timeout(hub.limits().first_message, io.read()) => first,
    };
    let first = first
        .context("no CONNECT within the first-message timeout")?
        .context("reading CONNECT")?;
    match first {
        Some(Packet::Connect(connect)) => Ok(connect),
        Some(_) => bail!("first packet was not CONNECT"),
        None => bail!("connection closed before CONNECT"),
    }
}

/// Notes when the identity last connected, for `device list`; a failure costs only that.
fn record_connection(hub: &Hub, identity: &str) {
    let touched = match split_identity(identity) {
        (d, Some(m)) => hub.registry.touch_module(d, m),
        (d, None) => hub.registry.touch_device(d),
    };
    if let Err(e) = touched {
        tracing::warn!("could not record the connection time: {e}");
    }
}

/// How long the session may stay silent: one and a half of the keep-alive the device
/// asked for, as MQTT has it, or [`MAX_IDLE`] if it asked for none.
fn keep_alive(connect: &Connect) -> Duration {
    match connect.keep_alive {
        0 => MAX_IDLE,
        secs => Duration::from_secs(u64::from(secs)) * 3 / 2,
    }
}

/// Whether the hub may take one more connected device (a reconnecting one always fits).
fn room_for(hub: &Hub, device: &str) -> Result<(), (ConnectReturnCode, String)> {
    let max = hub.limits().max_devices;
    if hub.sessions.connected() >= max && !hub.sessions.is_connected(device) {
        let why = format!("the hub is at its limit of {max} connected devices");
        return Err((ConnectReturnCode::ServiceUnavailable, why));
    }
    Ok(())
}

fn authenticate(
    hub: &Hub,
    connect: &Connect,
    certs: &PeerCerts,
) -> Result<Login, (ConnectReturnCode, String)> {
    // A module identity connects as `<deviceId>/<moduleId>`.
    let identity = &connect.client_id;
    if !valid_identity(identity) {
        let why = "client id is not a valid device id (or <deviceId>/<moduleId>)";
        return Err((ConnectReturnCode::BadClientId, why.into()));
    }
    let (device, module) = split_identity(identity);
    let login = connect.login.as_ref().ok_or((
        ConnectReturnCode::BadUserNamePassword,
        "CONNECT has no user name and password".to_string(),
    ))?;
    let mut user = login.username.split('/').skip(1);
    let names_it = user.next() == Some(device) && module.is_none_or(|m| user.next() == Some(m));
    if !names_it {
        let why = "user name must be '<host>/<deviceId>/?api-version=...' (a module's: '<host>/<deviceId>/<moduleId>/?api-version=...')".to_string();
        return Err((ConnectReturnCode::BadUserNamePassword, why));
    }
    let unavailable = |e: RegistryError| (ConnectReturnCode::ServiceUnavailable, e.to_string());
    if module.is_none() {
        let kind = hub.registry.device_auth(device).map_err(unavailable)?;
        if kind.is_x509() {
            return auth::device_x509(&hub.registry, device, &kind, certs)
                .map_err(|e| refused(hub, e));
        }
    }
    let max_lifetime = hub.limits().max_token_lifetime;
    let names = &hub.config.names;
    let login = match module {
        Some(m) => auth::module(
            &hub.registry,
            names,
            max_lifetime,
            (device, m),
            &login.password,
        ),
        None => auth::device(&hub.registry, names, max_lifetime, device, &login.password),
    };
    login.map(Login::from).map_err(|e| refused(hub, e))
}

/// A refused login as CONNACK says it, counted as a device's authentication failure.
fn refused(hub: &Hub, e: AuthError) -> (ConnectReturnCode, String) {
    hub.metrics.auth_failure(AuthKind::Device);
    let code = match e {
        AuthError::UnknownDevice(_) | AuthError::DisabledDevice(_) => {
            ConnectReturnCode::NotAuthorized
        }
        AuthError::Registry(_) => ConnectReturnCode::ServiceUnavailable,
        _ => ConnectReturnCode::BadUserNamePassword,
    };
    (code, e.to_string())
}

async fn write<S: Carrier>(io: &mut MqttIo<S>, packet: Packet) -> anyhow::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, io.write(packet))
        .await
        .context("device stopped reading its control channel")??;
    Ok(())
}

/// Serves an authenticated session until it ends (at the latest at `expires`, when its
/// token does; `None`: beyond what the clock can hold); returns why it ended.
async fn run<S: Carrier>(
    hub: &Hub,
    device: &str,
    io: &mut MqttIo<S>,
    mut requests: request_queue::Receiver<Outgoing>,
    cancel: &CancellationToken,
    keep_alive: Duration,
    expires: Option<Instant>,
) -> anyhow::Result<&'static str> {
    let token_expiry = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(token_expiry);
    let mut deadline = Instant::now() + keep_alive;
    // Stream requests wait until the device has subscribed to them: one published
    // between CONNACK and SUBACK would reach a device not yet ready for it.
    let mut subscribed = false;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return Ok("disconnected by the hub (device disabled or deleted, its key rotated, replaced by a newer connection, or hub shutting down)"),
            () = &mut token_expiry => return Ok("device token (or X.509 certificate) expired"),
            () = tokio::time::sleep_until(deadline) => bail!("no packet within the keep-alive window ({keep_alive:?})"),
            out = requests.pop(), if subscribed => Event::Request(out),
            packet = io.read() => Event::Packet(packet.context("control channel")?),
        };
        // Each answer runs boxed: answers are rare, and inline their futures (a packet to
        // write, a write timeout) would keep a place in this loop's state, which every
        // idle device's task holds for as long as it is connected.
        match event {
            Event::Request(out) => {
                let publish = Publish::new(out.topic.expose(), QoS::AtMostOnce, Vec::new());
                Box::pin(write(io, Packet::Publish(publish))).await?;
            }
            Event::Packet(packet) => {
                deadline = Instant::now() + keep_alive;
                match packet {
                    None => return Ok("connection closed by the device"),
                    Some(Packet::Disconnect) => return Ok("device sent DISCONNECT"),
                    Some(Packet::Subscribe(sub)) => {
                        subscribed |= Box::pin(subscribe(io, sub)).await?;
                    }
                    Some(packet) => Box::pin(handle(hub, device, io, packet)).await?,
                }
            }
        }
    }
}

/// What woke an idle session up.
enum Event {
    /// A stream request to publish.
    Request(Outgoing),
    /// A packet from the device, or `None` at the end of its connection.
    Packet(Option<Packet>),
}

/// Answers a SUBSCRIBE: only the streams topics are served. True if one was granted.
async fn subscribe<S: Carrier>(io: &mut MqttIo<S>, sub: Subscribe) -> anyhow::Result<bool> {
    let codes: Vec<_> = sub
        .filters
        .iter()
        .map(|f| match f.path.starts_with("$iothub/streams/") {
            true => SubscribeReasonCode::Success(QoS::AtMostOnce),
            false => {
                tracing::info!(filter = %f.path, "refusing subscription: only device streams are served");
                SubscribeReasonCode::Failure
            }
        })
        .collect();
    let granted = codes
        .iter()
        .any(|c| matches!(c, SubscribeReasonCode::Success(_)));
    write(io, Packet::SubAck(SubAck::new(sub.pkid, codes))).await?;
    Ok(granted)
}

async fn handle<S: Carrier>(
    hub: &Hub,
    device: &str,
    io: &mut MqttIo<S>,
    packet: Packet,
) -> anyhow::Result<()> {
    match packet {
        Packet::PingReq => write(io, Packet::PingResp).await,
        Packet::Unsubscribe(unsub) => write(io, Packet::UnsubAck(UnsubAck::new(unsub.pkid))).await,
        Packet::Publish(publish) => {
            match wire::parse_stream_response(&publish.topic) {
                Ok((status, rid)) => {
                    if !hub.sessions.answer(device, &rid, status, &publish.payload) {
                        tracing::debug!(
                            rid,
                            "answer to no waiting request (too late, or not ours)"
                        );
                    }
                }
                Err(e) => tracing::info!("ignoring a publish the hub does not serve: {e}"),
            }
            match publish.qos {
                QoS::AtMostOnce => Ok(()),
                QoS::AtLeastOnce => write(io, Packet::PubAck(PubAck::new(publish.pkid))).await,
                QoS::ExactlyOnce => bail!("QoS 2 is not supported"),
            }
        }
        Packet::Connect(_) => bail!("second CONNECT on one connection"),
        _ => Ok(()),
    }
}
