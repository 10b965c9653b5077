//! A bare MQTT-over-WebSocket client, for playing a device that misbehaves.

use device_streams::websocket::{self, ClientStream};
use device_streams::Connector;
use device_streams_protocol::ws::WsStream;
use device_streams_protocol::{
    mqtt::{MqttIo, MAX_PACKET},
    wire::{self, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
};
use rumqttc::mqttbytes::{
    v4::{Connect, ConnectReturnCode, Packet, Subscribe},
    QoS,
};

pub type Io = MqttIo<ClientStream>;

pub async fn open(connector: &Connector, hostname: &str) -> Io {
    let url = format!("wss://{hostname}{MQTT_WS_PATH}");
    let ws = websocket::connect(connector, &url, None, Some(MQTT_WS_SUBPROTOCOL))
        .await
        .expect("control WebSocket");
    MqttIo::new(WsStream::new(ws), MAX_PACKET)
}

/// Sends CONNECT with `password` and returns the hub's CONNACK code.
pub async fn connect(
    io: &mut Io,
    hostname: &str,
    device: &str,
    password: &str,
) -> ConnectReturnCode {
    let mut connect = Connect::new(device);
    connect.keep_alive = 30;
    connect.set_login(wire::mqtt_username(hostname, device), password);
    io.write(Packet::Connect(connect))
        .await
        .expect("send CONNECT");
    match io.read().await {
        Ok(Some(Packet::ConnAck(ack))) => ack.code,
        other => panic!(
            "expected CONNACK, got {:?}",
            other.map(|p| p.map(|p| p.size()))
        ),
    }
}

/// Opens a control channel to `sys` as `device`, signing its token with `key`.
pub async fn connect_with_key(
    sys: &super::System,
    device: &str,
    key: &super::Secret,
) -> (Io, ConnectReturnCode) {
    let expiry = device_streams_protocol::sas::unix_now() + 60;
    connect_until(sys, device, key, expiry).await
}

/// [`connect_with_key`] with a token that expires at `expiry` (Unix seconds).
pub async fn connect_until(
    sys: &super::System,
    device: &str,
    key: &super::Secret,
    expiry: u64,
) -> (Io, ConnectReturnCode) {
    let host = sys.hostname();
    let resource = device_streams_protocol::sas::device_resource(&host, device);
    let token = device_streams_protocol::sas::sign(&resource, key, expiry, None).expect("sign");
    let mut io = open(&sys.connector(), &host).await;
    let code = connect(&mut io, &host, device, token.expose()).await;
    (io, code)
}

/// Reads until the hub closes the channel; false if it is still open after `limit`.
pub async fn closed_within(io: &mut Io, limit: std::time::Duration) -> bool {
    let until_closed = async { while let Ok(Some(_)) = io.read().await {} };
    tokio::time::timeout(limit, until_closed).await.is_ok()
}

pub async fn subscribe(io: &mut Io) {
    let sub = Subscribe::new(wire::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
    io.write(Packet::Subscribe(sub))
        .await
        .expect("send SUBSCRIBE");
    assert!(matches!(io.read().await, Ok(Some(Packet::SubAck(_)))));
}
