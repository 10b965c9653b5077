//! Many idle devices on one hub, for the memory figures: each is a bare MQTT-over-WebSocket
//! control session (TLS, WebSocket upgrade, CONNECT with its SAS token, SUBSCRIBE), held open.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use device_streams::{
    connector::tls,
    websocket::{self, ClientStream},
    Connector,
};
use device_streams_protocol::ws::WsStream;
use device_streams_protocol::{
    mqtt::{MqttIo, MAX_PACKET},
    sas,
    wire::{self, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
    Secret,
};
use rumqttc::mqttbytes::{
    v4::{Connect, ConnectReturnCode, Packet, Subscribe},
    QoS,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Semaphore,
};

use crate::ours::Registered;

pub type Session = MqttIo<ClientStream>;

/// Handshakes in flight at once.
const PARALLEL: usize = 32;

pub async fn connect_one(
    connector: &Connector,
    hostname: &str,
    id: &str,
    key: &Secret,
) -> anyhow::Result<Session> {
    let url = format!("wss://{hostname}{MQTT_WS_PATH}");
    let socket = websocket::connect(connector, &url, None, Some(MQTT_WS_SUBPROTOCOL)).await?;
    let mut io = MqttIo::new(WsStream::new(socket), MAX_PACKET);
    sign_in(&mut io, hostname, id, key).await?;
    Ok(io)
}

/// CONNECT with the device's SAS token and SUBSCRIBE to stream requests on an open
/// control channel, as a device does; each answer must be a success.
pub async fn sign_in<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut MqttIo<S>,
    hostname: &str,
    id: &str,
    key: &Secret,
) -> anyhow::Result<()> {
    let token = sas::sign_for(
        &sas::device_resource(hostname, id),
        key,
        Duration::from_secs(3600),
        None,
    )?;
    let mut connect = Connect::new(id);
    // Long keep-alive: the figure is what an idle device costs, not its pings.
    connect.keep_alive = 3600;
    connect.set_login(wire::mqtt_username(hostname, id), token.expose());
    io.write(Packet::Connect(connect)).await?;
    match io.read().await? {
        Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {}
        _ => anyhow::bail!("device {id}: no successful CONNACK"),
    }
    let sub = Subscribe::new(wire::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
    io.write(Packet::Subscribe(sub)).await?;
    match io.read().await? {
        Some(Packet::SubAck(_)) => Ok(()),
        _ => anyhow::bail!("device {id}: no SUBACK"),
    }
}

/// Connects devices `from..to` of `reg.idle` and appends their sessions to `sessions`.
pub async fn connect_range(
    reg: &Registered,
    from: usize,
    to: usize,
    sessions: &mut Vec<Session>,
    limit: Duration,
) -> anyhow::Result<()> {
    let connector = Connector::new(
        tls::client_config(Some(&reg.ca_file))?,
        Duration::from_secs(20),
    );
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for (id, key) in &reg.idle[from..to] {
        let (id, key) = (id.clone(), key.clone());
        let (connector, hostname, gate) = (connector.clone(), reg.hostname.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            connect_one(&connector, &hostname, &id, &key).await
        }));
    }
    let all = async {
        for t in tasks {
            sessions.push(t.await??);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(limit, all)
        .await
        .with_context(|| format!("connecting devices {from}..{to} took over {limit:?}"))?
}
