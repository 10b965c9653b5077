//! Opening a stream on a warm connection ([`super::warm`]): one open message, and right
//! behind it, without waiting, what the local side has already said (at most
//! [`MAX_EARLY_BYTES`]); then the hub's answer. Accepted: the connection is the stream.
//! Refused or rejected: the error a REST request would have given. `elsewhere`, or a
//! connection that broke before any answer: the caller asks Azure's way, replaying the
//! bytes sent ahead.

use std::time::Duration;

use bytes::Bytes;
use device_streams_protocol::fast::{Message as Fast, MAX_EARLY_BYTES};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::Message;

use super::{warm::Conn, Route, StreamError};
use crate::{stream::Stream, websocket::stream_of};

/// What came of opening on a warm connection.
pub(crate) enum Opened {
    Stream(Box<Stream>),
    /// Not on this connection: ask Azure's way, and send these bytes first.
    Retry(Vec<u8>),
}

/// Opens `route` on `conn`, sending what `local` says meanwhile; waits at most `limit`
/// for the hub's answer.
pub(crate) async fn open<L: AsyncRead + Unpin>(
    mut conn: Conn,
    route: &Route,
    local: &mut L,
    limit: Duration,
) -> Result<Opened, StreamError> {
    let open = Fast::Open {
        device: route.device_id.clone(),
        module: route.module_id.clone(),
        stream: route.stream_name.clone(),
    };
    let mut early = Vec::new();
    if conn.ws.send(Message::text(open.encode())).await.is_err() {
        return Ok(Opened::Retry(early));
    }
    let answer = tokio::time::timeout(limit, answer(&mut conn, local, &mut early)).await;
    let device = route.target();
    match answer {
        Err(_) => Err(StreamError::Timeout {
            device,
            after: limit,
        }),
        Ok(Err(e)) => Err(StreamError::Local { device, cause: e }),
        Ok(Ok(None) | Ok(Some(Fast::Elsewhere))) => Ok(Opened::Retry(early)),
        Ok(Ok(Some(Fast::Accepted(_)))) => {
            let stream = stream_of(conn.ws, conn.half_close, conn.pings);
            Ok(Opened::Stream(Box::new(stream)))
        }
        Ok(Ok(Some(Fast::Rejected(reason)))) => Err(StreamError::Rejected {
            device,
            name: route.stream_name.clone(),
            reason,
        }),
        Ok(Ok(Some(Fast::Refused { status, message }))) => Err(StreamError::Refused {
            device,
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        }),
        Ok(Ok(Some(other))) => Err(StreamError::Refused {
            device,
            status: StatusCode::BAD_GATEWAY,
            message: format!("the hub answered the open with '{}'", other.encode()),
        }),
    }
}

/// The hub's answer (`None`: the connection ended first, or the answer did not parse),
/// passing `local`'s bytes on meanwhile and keeping a copy of them in `early`.
async fn answer<L: AsyncRead + Unpin>(
    conn: &mut Conn,
    local: &mut L,
    early: &mut Vec<u8>,
) -> std::io::Result<Option<Fast>> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut local_done = false;
    loop {
        let room = MAX_EARLY_BYTES.saturating_sub(early.len()).min(buf.len());
        tokio::select! {
            biased;
            next = conn.ws.next() => match next {
                Some(Ok(Message::Text(text))) => return Ok(Fast::parse(text.as_str()).ok()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                _ => return Ok(None),
            },
            n = local.read(&mut buf[..room]), if !local_done && room > 0 => {
                let n = n?;
                if n == 0 {
                    local_done = true;
                    continue;
                }
                early.extend_from_slice(&buf[..n]);
                let data = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                if conn.ws.send(data).await.is_err() {
                    return Ok(None);
                }
            }
        }
    }
}
