//! What a connection may cost before it has shown a credential.
//!
//! Anyone can open a connection; until it has authenticated — a valid SAS token on a REST
//! request, a CONNECT the registry accepts, a stream token that claims its stream — it
//! holds a place in a pool of its own: at most `--max-unauthenticated-connections` on the
//! hub, and `--max-unauthenticated-per-address` from one IP address. So one flooding host
//! cannot take the places that legitimate devices and services (from other addresses)
//! need to get in, and authenticated connections never compete with a flood at all. A
//! connection over either cap is closed at accept; one that authenticates gives its place
//! back at once ([`Place::authenticated`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The pool of places for connections not yet authenticated.
#[derive(Clone, Default)]
pub struct Gate {
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was turned away at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Hub,
    Address,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`, within `max` and `per_address`.
    pub fn admit(&self, ip: IpAddr, max: usize, per_address: usize) -> Result<Place, Full> {
        let mut c = self.lock();
        if c.total >= max {
            return Err(Full::Hub);
        }
        let n = c.per_address.entry(ip).or_default();
        if *n >= per_address {
            return Err(Full::Address);
        }
        *n += 1;
        c.total += 1;
        Ok(Place {
            held: Arc::new(Mutex::new(Some(Held {
                gate: self.clone(),
                ip,
            }))),
        })
    }

    /// Connections holding a place now.
    pub fn unauthenticated(&self) -> usize {
        self.lock().total
    }
}

struct Held {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut c = self.gate.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.ip);
            }
        }
    }
}

/// One connection's place while it is unauthenticated; clones share it (a connection's
/// requests carry it), and it is given back on authentication or when the last clone goes.
#[derive(Clone)]
pub struct Place {
    held: Arc<Mutex<Option<Held>>>,
}

impl Place {
    /// The connection has shown a valid credential: its place goes back to the pool.
    pub fn authenticated(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_address_and_in_all_and_come_back() {
        let gate = Gate::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = gate.admit(a, 3, 2).unwrap();
        let a2 = gate.admit(a, 3, 2).unwrap();
        assert_eq!(gate.admit(a, 3, 2).err(), Some(Full::Address));
        let b1 = gate.admit(b, 3, 2).unwrap();
        assert_eq!(gate.admit(b, 3, 2).err(), Some(Full::Hub));
        // Authenticating gives the place back (once, whatever the clones do).
        let a1_clone = a1.clone();
        a1.authenticated();
        a1_clone.authenticated();
        assert_eq!(gate.unauthenticated(), 2);
        assert!(gate.admit(a, 3, 2).is_ok());
        drop((a2, b1));
        assert_eq!(gate.unauthenticated(), 0);
    }
}
