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
    let host = sys.hostname();
    let resource = device_streams_protocol::sas::device_resource(&host, device);
    let token = device_streams_protocol::sas::sign_for(
        &resource,
        key,
        std::time::Duration::from_secs(60),
        None,
    )
    .expect("sign");
    let mut io = open(&sys.connector(), &host).await;
    let code = connect(&mut io, &host, device, token.expose()).await;
    (io, code)
}

pub async fn subscribe(io: &mut Io) {
    let sub = Subscribe::new(wire::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
    io.write(Packet::Subscribe(sub))
        .await
        .expect("send SUBSCRIBE");
    assert!(matches!(io.read().await, Ok(Some(Packet::SubAck(_)))));
}
