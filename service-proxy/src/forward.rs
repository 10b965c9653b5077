//! `--forward LOCALPORT=DEVICE:STREAM`: several tunnels from one process, each its own
//! local listener on 127.0.0.1 (or `ADDR:PORT=…`), device and stream name.

use std::{
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use anyhow::Context;
use device_streams::{
    protocol::wire::{valid_device_id, valid_stream_name},
    Route,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub device_id: String,
    pub stream_name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("'{0}' is not LOCALPORT=DEVICE:STREAM (e.g. 2222=dev1:ssh)")]
    Syntax(String),
    #[error("'{0}' is not a port or ADDRESS:PORT")]
    Listen(String),
    #[error("'{0}' is not a valid device id")]
    Device(String),
    #[error("'{0}' is not a valid stream name (letters, digits, - . _)")]
    Stream(String),
}

impl FromStr for Forward {
    type Err = ForwardError;

    fn from_str(s: &str) -> Result<Self, ForwardError> {
        let syntax = || ForwardError::Syntax(s.to_string());
        let (listen, target) = s.split_once('=').ok_or_else(syntax)?;
        // Stream names hold no ':', device ids may: split at the last one.
        let (device, stream) = target.trim().rsplit_once(':').ok_or_else(syntax)?;
        let listen = listen.trim();
        let listen = match listen.parse::<u16>() {
            Ok(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Err(_) => listen
                .parse()
                .map_err(|_| ForwardError::Listen(listen.to_string()))?,
        };
        if !valid_device_id(device) {
            return Err(ForwardError::Device(device.to_string()));
        }
        if !valid_stream_name(stream) {
            return Err(ForwardError::Stream(stream.to_string()));
        }
        Ok(Forward {
            listen,
            device_id: device.to_string(),
            stream_name: stream.to_string(),
        })
    }
}

impl Forward {
    /// Where this forward's connections go.
    pub fn route(&self) -> Route {
        Route::new(&self.device_id, &self.stream_name)
    }
}

/// Binds every forward's listener, each with its route. All are bound before any is
/// served, so a taken port fails the start rather than later.
pub async fn bind(forwards: &[Forward]) -> anyhow::Result<Vec<(TcpListener, Route)>> {
    let mut bound = Vec::with_capacity(forwards.len());
    for f in forwards {
        let listener = TcpListener::bind(f.listen).await.with_context(|| {
            format!("cannot listen on {} (for device {})", f.listen, f.device_id)
        })?;
        bound.push((listener, f.route()));
    }
    Ok(bound)
}

/// Serves already-bound listeners, each with its route, through one hub, until `shutdown`.
pub async fn serve(
    bound: Vec<(TcpListener, Route)>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, route) in bound {
        tasks.spawn(crate::run(
            listener,
            config.clone(),
            route,
            shutdown.clone(),
        ));
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let r = done.context("a forward's task failed").and_then(|r| r);
        if r.is_err() && result.is_ok() {
            // One failed listener takes the others down: a half-working set is confusing.
            shutdown.cancel();
            result = r;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwards() {
        let f: Forward = "2222=dev1:ssh".parse().unwrap();
        assert_eq!(f.listen, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(
            (f.device_id.as_str(), f.stream_name.as_str()),
            ("dev1", "ssh")
        );
        let f: Forward = "0.0.0.0:3389=dev2:rdp".parse().unwrap();
        assert_eq!(f.listen, "0.0.0.0:3389".parse().unwrap());
        assert!(matches!(
            "2222".parse::<Forward>(),
            Err(ForwardError::Syntax(_))
        ));
        assert!(matches!(
            "2222=dev1".parse::<Forward>(),
            Err(ForwardError::Syntax(_))
        ));
        assert!(matches!(
            "x=dev1:ssh".parse::<Forward>(),
            Err(ForwardError::Listen(_))
        ));
        assert!(matches!(
            "1=dev1:s/h".parse::<Forward>(),
            Err(ForwardError::Stream(_))
        ));
        assert!(matches!(
            "1=:ssh".parse::<Forward>(),
            Err(ForwardError::Device(_))
        ));
    }
}
