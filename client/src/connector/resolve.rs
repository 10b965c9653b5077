//! Name resolution for dialing the hub, remembered for a short while.
//!
//! Resolving a name goes through the system resolver on tokio's blocking pool: a thread
//! hand-off and a read of `/etc/hosts` (or a DNS query) per connection. A stream's set-up
//! dials the hub from both proxies on its critical path, so the answer is kept for
//! [`TTL`] — short enough that a hub moving to another address is followed within it —
//! and forgotten at once when connecting to it fails or times out.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a resolved address is used without asking again.
pub const TTL: Duration = Duration::from_secs(30);

/// Few names are ever dialed (the hub, its streaming endpoint, a proxy); this bounds a
/// misuse anyway.
const MAX_NAMES: usize = 64;

type Entries = HashMap<(String, u16), (Vec<SocketAddr>, Instant)>;

/// A cache of resolved addresses, shared by a connector's clones.
#[derive(Clone, Default)]
pub struct Resolver {
    cache: Arc<Mutex<Entries>>,
}

impl Resolver {
    /// The addresses of `host:port`: an IP literal as is, else from the cache or the system.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_ascii_lowercase(), port);
        if let Some(addrs) = self.cached(&key) {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ));
        }
        let mut cache = self.lock();
        if cache.len() >= MAX_NAMES {
            cache.clear();
        }
        cache.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }

    /// Tries `addr` first next time: connecting to it worked (e.g. `localhost` resolves to
    /// `::1` and `127.0.0.1` but the hub listens only on the latter).
    pub fn prefer(&self, host: &str, port: u16, addr: SocketAddr) {
        if let Some((addrs, _)) = self.lock().get_mut(&(host.to_ascii_lowercase(), port)) {
            if let Some(i) = addrs.iter().position(|a| *a == addr) {
                addrs[..=i].rotate_right(1);
            }
        }
    }

    /// Forgets `host:port`: connecting to what it resolved to failed.
    pub fn forget(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_ascii_lowercase(), port));
    }

    fn cached(&self, key: &(String, u16)) -> Option<Vec<SocketAddr>> {
        let cache = self.lock();
        let (addrs, at) = cache.get(key)?;
        (at.elapsed() < TTL).then(|| addrs.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_pass_through_and_names_are_remembered_until_forgotten() {
        let r = Resolver::default();
        let v6 = r.resolve("[::1]", 8443).await.unwrap();
        assert_eq!(v6, vec!["[::1]:8443".parse().unwrap()]);
        assert!(r.lock().is_empty(), "literals are not cached");

        let addrs = r.resolve("localhost", 8443).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8443));
        assert_eq!(r.cached(&("localhost".into(), 8443)), Some(addrs));
        assert!(r.cached(&("localhost".into(), 443)).is_none());
        let mut both: Vec<SocketAddr> =
            vec!["[::1]:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()];
        r.lock()
            .insert(("two".into(), 1), (both.clone(), Instant::now()));
        r.prefer("two", 1, both[1]);
        both.reverse();
        assert_eq!(r.cached(&("two".into(), 1)), Some(both));
        r.forget("LOCALHOST", 8443);
        assert!(r.cached(&("localhost".into(), 8443)).is_none());
    }
}
