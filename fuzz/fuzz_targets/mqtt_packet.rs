//! Bytes from a device's control channel, read the way the hub reads them: MqttIo over
//! the stream, with the hub's packet limit, then the hub's checks on each packet.
#![no_main]

use device_streams_protocol::{mqtt::{MqttIo, MAX_PACKET}, wire::{parse_stream_response, valid_device_id}};
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::Packet;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let io = tokio::io::join(data, tokio::io::sink());
        let mut mqtt = MqttIo::new(io, MAX_PACKET);
        // Each packet consumes at least two bytes, so this ends.
        while let Ok(Some(packet)) = mqtt.read().await {
            let echo = packet.clone();
            match packet {
                Packet::Connect(c) => {
                    let _ = valid_device_id(&c.client_id);
                    if let Some(login) = &c.login {
                        let _ = login.username.split('/').nth(1);
                    }
                }
                Packet::Publish(p) => {
                    let _ = parse_stream_response(&p.topic);
                }
                Packet::Subscribe(s) => {
                    let _ = s.filters.iter().all(|f| f.path.starts_with("$iothub/streams/"));
                }
                _ => {}
            }
            // What the codec read, it can write again (the hub writes the same codec).
            let _ = mqtt.write(echo).await;
        }
    });
});
