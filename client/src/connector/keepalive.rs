//! TCP keepalive on every connection a proxy makes to the hub.
//!
//! A link can die without a FIN or RST reaching us (a NAT forgets the mapping, a cellular
//! modem drops off). Our hub pings its streams and the MQTT control channel has its own
//! keepalive, but a stream to another hub (Azure's) would otherwise hold its socket, its
//! local connection and its stream slot until the kernel gives up on it — never, for an
//! idle one. So the kernel probes an idle connection after [`IDLE`] and gives up after
//! [`PROBES`] unanswered probes [`INTERVAL`] apart, and data left unacknowledged for
//! [`USER_TIMEOUT`] fails the connection (Linux): about two minutes either way, long
//! enough for a flaky link's short outages.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first probe.
pub const IDLE: Duration = Duration::from_secs(60);
/// Time between probes.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered probes before the connection is declared dead.
pub const PROBES: u32 = 4;
/// Longest time sent data may stay unacknowledged (`TCP_USER_TIMEOUT`, Linux).
pub const USER_TIMEOUT: Duration = Duration::from_secs(120);

/// Turns keepalive on for `tcp`; a socket that refuses it still works without it.
pub fn apply(tcp: &TcpStream) {
    let sock = SockRef::from(tcp);
    let params = TcpKeepalive::new()
        .with_time(IDLE)
        .with_interval(INTERVAL)
        .with_retries(PROBES);
    if let Err(e) = sock.set_tcp_keepalive(&params) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = sock.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_to_the_hub_are_probed_when_idle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        apply(&tcp);
        let sock = SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), PROBES);
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
