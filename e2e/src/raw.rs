//! A bare MQTT client speaking Azure's device protocol, over WebSocket ([`open`]) or
//! straight over TLS ([`open_tls`]), for playing a device that misbehaves (or a device
//! built on another SDK), with a SAS token or, as an X.509 device, with the client
//! certificate its connector presents ([`connect_x509_tls`]).

use device_streams::websocket::{self, ClientStream};
use device_streams::{connector::ClientTls, Connector};
use device_streams_protocol::ws::WsStream;
use device_streams_protocol::{
    mqtt::{MqttIo, MAX_PACKET},
    wire::{self, MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL},
};
use rumqttc::mqttbytes::{
    v4::{Connect, ConnectReturnCode, Packet, Publish, Subscribe},
    QoS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub type Io = MqttIo<ClientStream>;
/// A raw device's session straight over TLS (the hub's `--mqtt-listen` port).
pub type TlsIo = MqttIo<ClientTls>;

pub async fn open(connector: &Connector, hostname: &str) -> Io {
    let url = format!("wss://{hostname}{MQTT_WS_PATH}");
    let ws = websocket::connect(connector, &url, None, Some(MQTT_WS_SUBPROTOCOL))
        .await
        .expect("control WebSocket");
    MqttIo::new(WsStream::new(ws), MAX_PACKET)
}

/// A TLS connection to `host:port` carrying MQTT from its first byte, as Azure's 8883.
pub async fn open_tls(connector: &Connector, host: &str, port: u16) -> TlsIo {
    let tls = connector
        .connect(host, port)
        .await
        .expect("TLS to the MQTT port");
    MqttIo::new(tls, MAX_PACKET)
}

/// Sends CONNECT with `password` and returns the hub's CONNACK code.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut MqttIo<S>,
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

/// [`connect_with_key`] straight over TLS, to the hub's MQTT port.
pub async fn connect_tls_with_key(
    sys: &super::System,
    device: &str,
    key: &super::Secret,
) -> (TlsIo, ConnectReturnCode) {
    let host = sys.hostname();
    let resource = device_streams_protocol::sas::device_resource(&host, device);
    let expiry = device_streams_protocol::sas::unix_now() + 60;
    let token = device_streams_protocol::sas::sign(&resource, key, expiry, None).expect("sign");
    let mut io = open_tls(&sys.connector(), "localhost", sys.mqtt_port()).await;
    let code = connect(&mut io, &host, device, token.expose()).await;
    (io, code)
}

/// An X.509 device's CONNECT straight over TLS: `connector` presents its certificate (or
/// none) and the password is empty, as Azure's X.509 devices send it.
pub async fn connect_x509_tls(
    connector: &Connector,
    hostname: &str,
    mqtt_port: u16,
    device: &str,
) -> (TlsIo, ConnectReturnCode) {
    let mut io = open_tls(connector, "localhost", mqtt_port).await;
    let code = connect(&mut io, hostname, device, "").await;
    (io, code)
}

/// [`connect_x509_tls`] over WebSocket on the main port.
pub async fn connect_x509_ws(
    connector: &Connector,
    hostname: &str,
    device: &str,
) -> (Io, ConnectReturnCode) {
    let mut io = open(connector, hostname).await;
    let code = connect(&mut io, hostname, device, "").await;
    (io, code)
}

/// Reads until the hub closes the channel; false if it is still open after `limit`.
pub async fn closed_within<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut MqttIo<S>,
    limit: std::time::Duration,
) -> bool {
    let until_closed = async { while let Ok(Some(_)) = io.read().await {} };
    tokio::time::timeout(limit, until_closed).await.is_ok()
}

pub async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(io: &mut MqttIo<S>) {
    let sub = Subscribe::new(wire::STREAM_REQUEST_FILTER, QoS::AtMostOnce);
    io.write(Packet::Subscribe(sub))
        .await
        .expect("send SUBSCRIBE");
    assert!(matches!(io.read().await, Ok(Some(Packet::SubAck(_)))));
}

/// Takes one stream request for `echo` on `io` (a raw device's session), accepts it,
/// opens the device's side of the stream and echoes once: the service's `msg` comes back.
pub async fn serve_one_echo<S: AsyncRead + AsyncWrite + Unpin>(
    sys: &crate::System,
    io: &mut MqttIo<S>,
    device: &str,
    msg: &[u8],
) {
    let config = sys.service_config(device, "echo");
    let service = tokio::spawn(async move { crate::open_stream(&config).await });
    let topic = match io.read().await.unwrap() {
        Some(Packet::Publish(p)) => p.topic,
        _ => panic!("the device got no stream request"),
    };
    let req = wire::parse_stream_request(&topic).unwrap();
    assert_eq!(req.name, "echo");
    let answer = wire::stream_response_topic(wire::ACCEPT, &req.rid);
    let publish = Publish::new(answer, QoS::AtMostOnce, Vec::new());
    io.write(Packet::Publish(publish)).await.unwrap();
    let mut device_side = websocket::connect_stream(&sys.connector(), &req.url, &req.auth)
        .await
        .expect("the device's side of the stream");
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let n = device_side.read(&mut buf).await.unwrap();
        device_side.write_all(&buf[..n]).await.unwrap();
        device_side.flush().await.unwrap();
        device_side
    });
    let mut stream = service.await.unwrap().expect("the stream opens");
    crate::round_trip(&mut stream, msg).await;
    drop(echo.await.unwrap());
}
