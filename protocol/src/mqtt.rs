//! MQTT 3.1.1 packets on a byte stream (the control channel rides MQTT over WebSocket).
//! The codec is `rumqttc`'s; this only frames it onto tokio I/O with a size bound.
//!
//! Packets are never logged with `Debug`: CONNECT carries the SAS token as its password.

use bytes::BytesMut;
use rumqttc::mqttbytes::{self, v4::Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest control packet either side accepts; stream requests are a few hundred bytes.
pub const MAX_PACKET: usize = 16 * 1024;

/// Why an MQTT packet could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The byte stream failed.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// A packet that is not MQTT 3.1.1, or larger than allowed.
    #[error("malformed MQTT packet: {0}")]
    Malformed(mqttbytes::Error),
    /// The stream ended inside a packet.
    #[error("connection closed in the middle of a packet")]
    Truncated,
}

/// MQTT 3.1.1 packets over a byte stream.
///
/// The read buffer exists only while a packet is coming in: a hub holds one `MqttIo` per
/// connected device, idle almost always, and a standing 1 KiB buffer each was a tenth of
/// an idle device's memory. Between packets it is an empty `BytesMut`, which the next
/// read grows from 64 bytes as the packet needs.
pub struct MqttIo<S> {
    io: S,
    buf: BytesMut,
    max_packet: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MqttIo<S> {
    /// Packets on `io`, none larger than `max_packet` bytes either way.
    pub fn new(io: S, max_packet: usize) -> Self {
        MqttIo {
            io,
            buf: BytesMut::new(),
            max_packet,
        }
    }

    /// The next packet, or `None` at a clean end of stream. Cancel-safe: bytes read
    /// before a cancellation stay buffered for the next call.
    pub async fn read(&mut self) -> Result<Option<Packet>, MqttError> {
        loop {
            match Packet::read(&mut self.buf, self.max_packet) {
                Ok(packet) => {
                    if self.buf.is_empty() {
                        // The packet holds what it needs of the old allocation.
                        self.buf = BytesMut::new();
                    }
                    return Ok(Some(packet));
                }
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(MqttError::Malformed(e)),
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(MqttError::Truncated)
                };
            }
        }
    }

    /// Writes and flushes one packet.
    pub async fn write(&mut self, packet: Packet) -> Result<(), MqttError> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, self.max_packet)
            .map_err(MqttError::Malformed)?;
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Shuts the byte stream down; errors are of no interest then.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::{v4::Publish, QoS};

    #[tokio::test]
    async fn round_trips_packets_split_across_reads_and_rejects_garbage() {
        let (a, b) = tokio::io::duplex(7); // tiny pipe: packets arrive in pieces
        let mut tx = MqttIo::new(a, MAX_PACKET);
        let mut rx = MqttIo::new(b, MAX_PACKET);
        let publish = Publish::new("$iothub/streams/res/200/?$rid=1", QoS::AtMostOnce, vec![]);
        let writer = tokio::spawn(async move {
            tx.write(Packet::Publish(publish)).await.unwrap();
            tx.write(Packet::PingReq).await.unwrap();
            tx
        });
        assert!(
            matches!(rx.read().await.unwrap(), Some(Packet::Publish(p)) if p.topic.ends_with("rid=1"))
        );
        assert!(matches!(rx.read().await.unwrap(), Some(Packet::PingReq)));
        assert_eq!(rx.buf.capacity(), 0, "no buffer is held between packets");
        drop(writer.await.unwrap());
        assert!(rx.read().await.unwrap().is_none());

        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = MqttIo::new(b, MAX_PACKET);
        a.write_all(&[0xF0, 0x00]).await.unwrap(); // packet type 15 does not exist
        assert!(matches!(rx.read().await, Err(MqttError::Malformed(_))));
    }

    #[tokio::test]
    async fn refuses_packets_over_the_limit() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = MqttIo::new(b, 100);
        // PUBLISH claiming 1,000 bytes of remaining length.
        a.write_all(&[0x30, 0xE8, 0x07]).await.unwrap();
        assert!(matches!(rx.read().await, Err(MqttError::Malformed(_))));
    }
}
