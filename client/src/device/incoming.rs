//! One stream request as the device program sees it: its name, and the choice to accept
//! it (getting the stream) or reject it. A request dropped unanswered is rejected, so the
//! hub never waits for an answer that will not come.
//!
//! The TLS connection the stream's WebSocket will use is dialed as soon as the request
//! arrives, while the program decides (and, typically, dials its own target): the hub
//! pairs the stream when the device's side arrives, so that handshake is on the set-up's
//! critical path. A rejection drops (aborts) the dial.

use std::sync::Arc;

use device_streams_protocol::wire::{StreamRequest, ACCEPT, REJECT};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{control::Answer, Settings};
use crate::{
    connector::Reusable,
    stream::Stream,
    websocket::{self, WsError},
};

/// Why an accepted stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    #[error("stream '{name}': the control channel to the hub is gone, so the answer was not sent")]
    ControlChannelGone { name: String },
    #[error("stream '{name}' accepted but its WebSocket failed: {cause}")]
    WebSocket { name: String, cause: WsError },
}

/// A stream request from the hub, waiting for the program's answer.
pub struct IncomingStream {
    settings: Arc<Settings>,
    request: StreamRequest,
    /// `None` once answered.
    answers: Option<mpsc::Sender<Answer>>,
    predial: Option<AbortOnDropHandle<Result<Reusable, WsError>>>,
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

    /// Accepts the request and opens the stream's WebSocket with its one-time token.
    pub async fn accept(mut self) -> Result<Stream, AcceptError> {
        let name = self.request.name.clone();
        let answers = self.answers.take();
        let sent = match answers {
            Some(tx) => tx.send((ACCEPT, self.request.rid.clone())).await.is_ok(),
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
    /// `reason` is for the device's side: the program should log it.
    pub async fn reject(mut self, reason: &str) {
        let _ = reason;
        if let Some(tx) = self.answers.take() {
            let _ = tx.send((REJECT, self.request.rid.clone())).await;
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if let Some(tx) = self.answers.take() {
            let _ = tx.try_send((REJECT, self.request.rid.clone()));
        }
    }
}
