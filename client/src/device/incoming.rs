//! One stream request as the device program sees it: its name, and the choice to accept
//! it (getting the stream) or reject it. A request dropped unanswered is rejected, so the
//! hub never waits for an answer that will not come.
//!
//! The TLS connection the stream's WebSocket will use is dialed as soon as the request
//! arrives, while the program decides (and, typically, dials its own target): the hub
//! pairs the stream when the device's side arrives, so that handshake is on the set-up's
//! critical path. A rejection drops (aborts) the dial.
//!
//! A rejection's reason goes back to the hub only when the request asked for it
//! ([`StreamRequest::wants_reason`], our hub): Azure's hub expects an empty answer.

use std::sync::Arc;

use device_streams_protocol::wire::{self, StreamRequest, ACCEPT, REJECT};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::Settings;
use crate::{
    connector::Reusable,
    stream::Stream,
    websocket::{self, WsError},
};

/// An answer to the hub.
pub(crate) struct Answer {
    pub status: u16,
    pub rid: String,
    /// Sent as the answer's payload; only for a hub that asked for it (Azure's answers are empty).
    pub reason: Option<String>,
}

/// Why an accepted stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client shut down (or its control loop ended) before the answer could be sent.
    #[error("stream '{name}': the control channel to the hub is gone, so the answer was not sent")]
    ControlChannelGone {
        /// The stream's name.
        name: String,
    },
    /// The hub was told yes, but the stream's WebSocket could not be opened (e.g. the
    /// service gave up and the hub closed the stream's connect window).
    #[error("stream '{name}' accepted but its WebSocket failed: {cause}")]
    WebSocket {
        /// The stream's name.
        name: String,
        /// What failed.
        cause: WsError,
    },
}

/// A stream request from the hub, waiting for the program's answer.
pub struct IncomingStream {
    settings: Arc<Settings>,
    request: StreamRequest,
    /// `None` once answered.
    answers: Option<mpsc::Sender<Answer>>,
    predial: Option<AbortOnDropHandle<Result<Reusable, WsError>>>,
    /// A fast-path offer on a standby connection: answered on it, not over MQTT.
    standby: Option<super::standby::Offer>,
}

impl IncomingStream {
    pub(crate) fn new(
        settings: Arc<Settings>,
        request: StreamRequest,
        answers: mpsc::Sender<Answer>,
    ) -> Self {
        let predial = settings.predial.then(|| {
            let (connector, url) = (settings.connector.clone(), request.url.clone());
            AbortOnDropHandle::new(tokio::spawn(async move {
                websocket::dial(&connector, &url).await
            }))
        });
        IncomingStream {
            settings,
            request,
            answers: Some(answers),
            predial,
            standby: None,
        }
    }

    /// A stream named `name` offered on a standby connection (the fast path).
    pub(crate) fn standby(
        settings: Arc<Settings>,
        name: String,
        offer: super::standby::Offer,
    ) -> Self {
        let cs = &settings.connection;
        let request = StreamRequest {
            name,
            rid: "fast-path".into(),
            url: format!(
                "wss://{}:{}{}",
                cs.host.host,
                cs.host.port,
                device_streams_protocol::fast::STANDBY_PATH
            ),
            auth: device_streams_protocol::Secret::new(String::new()),
            wants_reason: true,
        };
        IncomingStream {
            settings,
            request,
            answers: None,
            predial: None,
            standby: Some(offer),
        }
    }

    /// The stream name the service asked for (e.g. `ssh`): what the device decides by.
    pub fn name(&self) -> &str {
        &self.request.name
    }

    /// The hub's id for this request, for log lines.
    pub fn request_id(&self) -> &str {
        &self.request.rid
    }

    /// The requesting hub's streaming endpoint for this stream (a `wss://` URL; the
    /// one-time token travels apart from it and is never shown).
    pub fn url(&self) -> &str {
        &self.request.url
    }

    /// Whether the hub passes a rejection's reason on to the service (ours does; Azure's
    /// does not).
    pub fn reason_reaches_service(&self) -> bool {
        self.request.wants_reason
    }

    /// Accepts the request and opens the stream's WebSocket with its one-time token. The
    /// [`Stream`] is `AsyncRead + AsyncWrite`: what the service writes arrives here, and
    /// `shutdown` ends the stream (or only the device's half, where the hub agreed to
    /// half-close).
    ///
    /// Not run here (it needs a service to ask: the [crate-level example](crate) runs a
    /// full round trip). A device serving a local TCP service, as the device proxy does:
    ///
    /// ```no_run
    /// use device_streams::{splice::splice, IncomingStream};
    /// use std::time::Duration;
    ///
    /// # async fn serve(request: IncomingStream) -> anyhow::Result<()> {
    /// let target = match tokio::net::TcpStream::connect("127.0.0.1:22").await {
    ///     Ok(tcp) => tcp,
    ///     Err(e) => {
    ///         request.reject(&format!("ssh is down: {e}")).await;
    ///         return Ok(());
    ///     }
    /// };
    /// let stream = request.accept().await?;
    /// let half_close = stream.half_close();
    /// match splice(target, stream, Duration::from_secs(5), half_close).await {
    ///     Ok(moved) => println!("{} bytes in, {} out", moved.stream_to_local, moved.local_to_stream),
    ///     Err((e, _moved)) => eprintln!("stream failed: {e}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn accept(mut self) -> Result<Stream, AcceptError> {
        let name = self.request.name.clone();
        if let Some(offer) = self.standby.take() {
            let accepted = offer.accept().await;
            return accepted.map_err(|cause| AcceptError::WebSocket { name, cause });
        }
        let answers = self.answers.take();
        let sent = match answers {
            Some(tx) => tx.send(self.answer(ACCEPT, None)).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(AcceptError::ControlChannelGone { name });
        }
        // A failed pre-dial is dialed again by the WebSocket, which reports the failure.
        let reuse = match self.predial.take() {
            Some(dial) => dial.await.ok().and_then(Result::ok),
            None => None,
        };
        let (connector, req) = (&self.settings.connector, &self.request);
        let stream = websocket::connect_stream_on(connector, &req.url, &req.auth, reuse)
            .await
            .map_err(|cause| AcceptError::WebSocket { name, cause })?;
        if let Ok((host, port)) = websocket::host_and_port(&req.url) {
            connector.prepare_spare(&host, port);
        }
        Ok(stream)
    }

    /// Rejects the request; the hub tells the service the device refused the stream.
    /// `reason` (one line, e.g. "no target is mapped for stream 'x'") reaches the service
    /// when the hub supports it (ours does; Azure's does not), at most
    /// [`wire::MAX_REASON`] bytes of it: say nothing there the admin should not read. The
    /// program should log it too.
    ///
    /// ```no_run
    /// # async fn serve(mut incoming: device_streams::device::Incoming) {
    /// while let Some(request) = incoming.next().await {
    ///     if request.name() != "ssh" {
    ///         let reason = format!("no target is mapped for stream '{}'", request.name());
    ///         eprintln!("{reason}");
    ///         request.reject(&reason).await;
    ///         continue;
    ///     }
    ///     // ... accept it
    /// }
    /// # }
    /// ```
    pub async fn reject(mut self, reason: &str) {
        if let Some(offer) = self.standby.take() {
            return offer.reject(reason).await;
        }
        if let Some(tx) = self.answers.take() {
            let _ = tx.send(self.answer(REJECT, Some(reason))).await;
        }
    }

    /// Rejects without waiting: for the control loop, which must not block on its own queue.
    pub(crate) fn reject_now(mut self, reason: &str) {
        if let Some(tx) = self.answers.take() {
            let _ = tx.try_send(self.answer(REJECT, Some(reason)));
        }
    }

    fn answer(&self, status: u16, reason: Option<&str>) -> Answer {
        let reason = reason
            .filter(|_| self.request.wants_reason)
            .and_then(|r| wire::clean_reason(r.as_bytes()));
        Answer {
            status,
            rid: self.request.rid.clone(),
            reason,
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        let reason = "the device program dropped the request unanswered";
        if let Some(offer) = self.standby.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(offer.reject(reason));
            }
        }
        if let Some(tx) = self.answers.take() {
            let _ = tx.try_send(self.answer(REJECT, Some(reason)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use device_streams_protocol::{tls::provider, Secret};
    use rustls::{ClientConfig, RootCertStore};

    use super::*;
    use crate::connector::Connector;

    fn settings() -> Arc<Settings> {
        let tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(Settings {
            connection: "HostName=h;DeviceId=d;SharedAccessKey=a2V5"
                .parse()
                .unwrap(),
            connector: Connector::new(Arc::new(tls), Duration::from_secs(1)),
            transport: Default::default(),
            keep_alive: Duration::from_secs(30),
            token_ttl: Duration::from_secs(60),
            max_backoff: Duration::from_secs(1),
            predial: false,
            standby: 0,
        })
    }

    fn request(wants_reason: bool) -> StreamRequest {
        StreamRequest {
            name: "x".into(),
            rid: "7".into(),
            url: "wss://h/bridges/1".into(),
            auth: Secret::new("t"),
            wants_reason,
        }
    }

    #[tokio::test]
    async fn a_reason_travels_only_to_a_hub_that_asked_for_one() {
        let (tx, mut rx) = mpsc::channel(4);
        let incoming = IncomingStream::new(settings(), request(true), tx.clone());
        incoming.reject("no target\nis mapped").await;
        let a = rx.recv().await.unwrap();
        assert_eq!((a.status, a.rid.as_str()), (REJECT, "7"));
        assert_eq!(a.reason.as_deref(), Some("no target is mapped"));

        // Azure's hub: its answers stay empty.
        let incoming = IncomingStream::new(settings(), request(false), tx.clone());
        incoming.reject("no target is mapped").await;
        assert_eq!(rx.recv().await.unwrap().reason, None);

        drop(IncomingStream::new(settings(), request(true), tx));
        let dropped = rx.recv().await.unwrap();
        assert_eq!(dropped.status, REJECT);
        assert!(dropped.reason.unwrap().contains("unanswered"));
    }
}
