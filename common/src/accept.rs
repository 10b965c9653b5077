//! The accept step every listener shares: errors never end the loop.

use std::{net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use device_streams_protocol::backoff::Backoff;

/// Accepts connections off one listener, pausing with backoff after errors.
pub struct Acceptor {
    listener: TcpListener,
    backoff: Backoff,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }

    /// The next connection (with `TCP_NODELAY` set), or `None` once `shutdown` is cancelled.
    /// Accept errors (usually out of file descriptors) are logged and retried after a pause.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    self.backoff.reset();
                    // Interactive sessions (ssh keystrokes) must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(self.backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
