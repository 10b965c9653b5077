//! The device side's standby connections (the fast path, `device_streams_protocol::fast`):
//! a few WebSockets to the hub, authenticated with the device's credential, that the hub
//! hands a stream to with one offer. An offer reaches the program as an
//! [`IncomingStream`] like any request: it accepts or rejects by name, as ever, and the
//! service's first bytes, which the hub sends right behind the offer, are read only once
//! it has accepted.
//!
//! They live under one control session: started when the hub's 101 reply to MQTT over
//! WebSocket says it serves the fast path (Azure's never does), stopped when the session
//! ends. A connection taken by an offer is replaced at once; one the hub refuses with an
//! HTTP error (the fast path turned off, a cluster node that does not hold the session,
//! the hub at its cap) stops the pool for this session: one failed probe. So do three
//! failed dials in a row (a hub at its connection cap closes them at accept).

use std::{sync::Arc, time::Duration};

use device_streams_protocol::{
    backoff::Backoff,
    fast::{standby_path, Message as Fast},
    sas, wire,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{IncomingStream, Settings};
use crate::{
    stream::Stream,
    websocket::{connect_fast, stream_of, ClientWs, Upgraded, WsError},
};

/// An offer on a standby connection, waiting for the program's answer.
pub(crate) struct Offer {
    up: Upgraded,
    host: String,
}

impl Offer {
    /// Accepts: the connection is the stream from here on.
    pub(crate) async fn accept(mut self) -> Result<Stream, WsError> {
        let accept = Message::text(Fast::Accept.encode());
        if let Err(cause) = self.up.ws.send(accept).await {
            let (host, cause) = (self.host, Box::new(cause));
            return Err(WsError::Handshake { host, cause });
        }
        Ok(stream_of(self.up.ws, self.up.half_close, self.up.pings))
    }

    /// Rejects with `reason` (cleaned, at most a line), which reaches the service.
    pub(crate) async fn reject(mut self, reason: &str) {
        let reason = wire::clean_reason(reason.as_bytes()).unwrap_or_default();
        let reject = Message::text(Fast::Reject(reason).encode());
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.up.ws.send(reject).await;
            let _ = self.up.ws.close(None).await;
        })
        .await;
    }
}

/// Dials that may fail in a row before a slot gives up until the next control session.
const MAX_FAILURES: u32 = 3;

/// Keeps `settings.standby` standby connections, handing offers to `requests`, if the
/// hub serves the fast path (`fast`), until the returned guard drops with the control
/// session (or `shutdown`).
pub(crate) fn for_session(
    settings: &Arc<Settings>,
    requests: &mpsc::Sender<IncomingStream>,
    shutdown: &CancellationToken,
    fast: bool,
) -> DropGuard {
    let session = shutdown.child_token();
    if fast {
        for _ in 0..settings.standby {
            let slot = slot(settings.clone(), requests.clone(), session.clone());
            tokio::spawn(slot);
        }
    }
    session.drop_guard()
}

/// One place in the pool: dials, waits for an offer, hands it over, dials again.
async fn slot(
    settings: Arc<Settings>,
    requests: mpsc::Sender<IncomingStream>,
    session: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), settings.max_backoff);
    let mut failures = 0;
    while !session.is_cancelled() {
        let dialed = tokio::select! {
            dialed = dial(&settings) => dialed,
            () = session.cancelled() => return,
        };
        let (up, host) = match dialed {
            Ok(dialed) => dialed,
            // Any answer but 101 (the fast path off, another cluster node, the hub at
            // its cap of standby connections) holds for this session: one probe.
            Err(WsError::Refused { status, .. }) => {
                tracing::debug!(
                    status,
                    "the hub takes no standby connections now: streams come Azure's way"
                );
                return session.cancel();
            }
            // A hub at its connection cap closes at accept: give up after a few in a row
            // rather than dial it every backoff period.
            Err(e) if failures >= MAX_FAILURES => {
                tracing::debug!("standby connections given up for this session: {e}");
                return session.cancel();
            }
            Err(e) => {
                failures += 1;
                tracing::debug!("standby connection to the hub failed: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        failures = 0;
        let opened = Instant::now();
        let retire = opened + settings.token_ttl.mul_f64(0.8);
        match wait(up, &session, retire).await {
            Some((up, stream)) => {
                backoff.reset();
                let offer = Offer { up, host };
                let incoming = IncomingStream::standby(settings.clone(), stream, offer);
                if let Err(e) = requests.try_send(incoming) {
                    let why = "too many stream requests waiting on the device";
                    tokio::spawn(async move { e.into_inner().reject(why).await });
                }
            }
            // Ended at once (a hub that closes them): not a tight loop.
            None if opened.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            None => {}
        }
    }
}

/// A standby connection with the device's SAS token (an X.509 device's is the
/// certificate its connector presents), and the `host:port` it goes to.
async fn dial(settings: &Settings) -> Result<(Upgraded, String), WsError> {
    let cs = &settings.connection;
    let host = cs.host.to_string();
    let (path, resource) = match &cs.module_id {
        Some(m) => (
            standby_path(&cs.device_id, Some(m)),
            sas::module_resource(&host, &cs.device_id, m),
        ),
        None => (
            standby_path(&cs.device_id, None),
            sas::device_resource(&host, &cs.device_id),
        ),
    };
    let token = match cs.x509 {
        true => None,
        false => Some(
            sas::sign_for(&resource, &cs.key, settings.token_ttl, None)
                .map_err(|e| WsError::BadUrl(format!("cannot sign a token: {e}")))?,
        ),
    };
    let url = format!("wss://{}:{}{path}", cs.host.host, cs.host.port);
    let up = connect_fast(&settings.connector, &url, token.as_ref()).await?;
    Ok((up, host))
}

/// Waits for an offer; `None` if the connection ends first, retires, or the session ends.
async fn wait(
    mut up: Upgraded,
    session: &CancellationToken,
    retire: Instant,
) -> Option<(Upgraded, String)> {
    let quiet = up.pings.map_or(Duration::from_secs(24 * 3600), |p| p * 3);
    loop {
        tokio::select! {
            () = session.cancelled() => break,
            () = tokio::time::sleep_until(retire) => break,
            () = tokio::time::sleep(quiet) => return None,
            next = up.ws.next() => match next {
                Some(Ok(Message::Text(text))) => match Fast::parse(text.as_str()) {
                    Ok(Fast::Offer { stream }) => return Some((up, stream)),
                    _ => break,
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    if up.ws.flush().await.is_err() {
                        return None;
                    }
                }
                _ => return None,
            },
        }
    }
    close(&mut up.ws).await;
    None
}

async fn close(ws: &mut ClientWs) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}
