//! Dashboard sign-in: an admin names a shared access policy and gives one of its keys;
//! the hub checks the key as it checks a SAS token's signer (either key, constant-time)
//! and hands out a session cookie. Sessions live in memory only: a restart signs
//! everyone out, which is cheaper than keeping session secrets on disk.
//!
//! Every request re-checks the session's policy against the registry, so deleting the
//! policy, taking a right away or rotating the key it signed in with ends the session at
//! once, as it would end a service's SAS tokens.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use device_streams_protocol::Secret;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::registry::{Registry, Right};

/// The cookie's name; `__Host-` would demand `Secure`, which the plain-HTTP admin
/// listener cannot give, so a plain name it is.
pub const COOKIE: &str = "stream_hub_session";

/// How long a session lasts from sign-in: a working day, not forever.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions held at most: a flood of sign-ins (each needs a valid key) cannot grow
/// memory without bound; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

/// How long a flash waits for the page that shows it: that page is the redirect's
/// target, fetched at once; a flash nobody fetched is dropped rather than kept.
const FLASH_LIFETIME: Duration = Duration::from_secs(60);

/// The rights that let a policy look at the dashboard. registry-list reads the devices
/// without their keys — and the pages show no key anyway; registry-write alone lets a
/// session look at what it acts on.
const VIEW_RIGHTS: [Right; 3] = [
    Right::RegistryRead,
    Right::RegistryList,
    Right::RegistryWrite,
];

/// A signed-in admin.
#[derive(Clone)]
pub struct Session {
    pub policy: String,
    /// Sent in every form and checked on every action.
    pub csrf: String,
    /// The key it signed in with, so rotating that key ends the session.
    key: Secret,
    expires: Instant,
    /// What an action left for the page its redirect leads to (Post/Redirect/Get).
    flash: Option<(Flash, Instant)>,
}

/// A device's new connection string, after a key rotation, for the one page that shows it.
#[derive(Clone)]
pub struct Flash {
    pub device: String,
    pub connection_string: Secret,
}

impl Session {
    /// Whether the session may still look at the pages: its policy still has its key and
    /// one of [`VIEW_RIGHTS`].
    pub fn may_view(&self, registry: &Registry) -> bool {
        VIEW_RIGHTS.iter().any(|&r| self.allows(registry, r))
    }

    /// Whether the session's policy still exists, still has `right`, and still has the
    /// key the session signed in with.
    pub fn allows(&self, registry: &Registry, right: Right) -> bool {
        let Ok(Some(policy)) = registry.policy(&self.policy) else {
            return false;
        };
        policy.allows(right)
            && (same(&policy.primary_key, &self.key) || same(&policy.secondary_key, &self.key))
    }
}

/// Why a sign-in failed. The page says the same for a wrong name and a wrong key, so it
/// does not tell which policy names exist.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInError {
    WrongCredentials,
    /// The policy and key are right but it may not even read the registry.
    NoRight,
}

fn same(a: &Secret, b: &Secret) -> bool {
    bool::from(a.expose().as_bytes().ct_eq(b.expose().as_bytes()))
}

/// A fresh 256-bit random value, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two tokens (a session id, a CSRF token).
pub fn token_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The hub's dashboard sessions, by id.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Checks `policy`/`key` against the registry and opens a session; returns its id.
    pub fn sign_in(
        &self,
        registry: &Registry,
        policy: &str,
        key: &str,
    ) -> Result<(String, Session), SignInError> {
        let found = registry.policy(policy).ok().flatten();
        let Some(found) = found else {
            return Err(SignInError::WrongCredentials);
        };
        let given = Secret::new(key.trim().to_string());
        // Both compared every time, so the timing does not say which key matched.
        let primary = same(&found.primary_key, &given);
        let secondary = same(&found.secondary_key, &given);
        if !(primary | secondary) {
            return Err(SignInError::WrongCredentials);
        }
        if !VIEW_RIGHTS.iter().any(|&r| found.allows(r)) {
            return Err(SignInError::NoRight);
        }
        let session = Session {
            policy: found.name,
            csrf: random_token(),
            key: given,
            expires: Instant::now() + LIFETIME,
            flash: None,
        };
        let id = random_token();
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Leaves `flash` for session `id`'s next [`Sessions::take_flash`].
    pub fn set_flash(&self, id: &str, flash: Flash) {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(id) {
            s.flash = Some((flash, Instant::now() + FLASH_LIFETIME));
        }
    }

    /// Session `id`'s flash, once: a second call (a reload) gets nothing.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let (flash, until) = map.get_mut(id)?.flash.take()?;
        (until > Instant::now()).then_some(flash)
    }

    pub fn sign_out(&self, id: &str) {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// The session id a request's `Cookie` headers carry, if any.
pub fn cookie_session(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value for a new session: script cannot read it, other sites'
/// requests do not carry it, over TLS it is never sent in the clear, and on the TLS port
/// it goes only with the dashboard's own paths (`base`), not with REST calls.
pub fn set_cookie(id: &str, secure: bool, base: &str) -> String {
    cookie(id, secure, base, LIFETIME.as_secs())
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool, base: &str) -> String {
    cookie("", secure, base, 0)
}

fn cookie(value: &str, secure: bool, base: &str, max_age: u64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let path = if base.is_empty() { "/" } else { base };
    format!("{COOKIE}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_needs_the_right_key_and_a_registry_right_and_ends_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        let admin = reg.add_policy("admin", &[Right::RegistryRead, Right::RegistryWrite]);
        let admin = admin.unwrap();
        let svc = reg.add_policy("svc", &[Right::ServiceConnect]).unwrap();
        let sessions = Sessions::default();
        let wrong = sessions.sign_in(&reg, "admin", "not-the-key");
        assert_eq!(wrong.err(), Some(SignInError::WrongCredentials));
        let nobody = sessions.sign_in(&reg, "nobody", admin.primary_key.expose());
        assert_eq!(nobody.err(), Some(SignInError::WrongCredentials));
        let svc_in = sessions.sign_in(&reg, "svc", svc.primary_key.expose());
        assert_eq!(svc_in.err(), Some(SignInError::NoRight));
        let lister = reg.add_policy("lister", &[Right::RegistryList]).unwrap();
        let (_, listing) = sessions
            .sign_in(&reg, "lister", lister.primary_key.expose())
            .unwrap();
        assert!(listing.may_view(&reg) && !listing.allows(&reg, Right::RegistryWrite));

        let (id, s) = sessions
            .sign_in(&reg, "admin", admin.secondary_key.expose())
            .unwrap();
        assert_eq!((id.len(), s.csrf.len()), (64, 64));
        let s = sessions.get(&id).unwrap();
        assert!(s.allows(&reg, Right::RegistryWrite));
        assert!(!s.allows(&reg, Right::ServiceConnect));
        reg.delete_policy("admin").unwrap();
        assert!(!s.allows(&reg, Right::RegistryRead));
        let flash = Flash {
            device: "d".into(),
            connection_string: Secret::new("cs".to_string()),
        };
        sessions.set_flash(&id, flash);
        assert_eq!(sessions.take_flash(&id).unwrap().device, "d");
        assert!(sessions.take_flash(&id).is_none(), "a flash is shown once");
        sessions.sign_out(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_on_tls() {
        let c = set_cookie("abc", true, "/dashboard");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(c.contains("Path=/dashboard;"), "{c}");
        let plain = set_cookie("abc", false, "");
        assert!(
            !plain.contains("Secure") && plain.contains("Path=/;"),
            "{plain}"
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; stream_hub_session=xyz".parse().unwrap(),
        );
        assert_eq!(cookie_session(&h).as_deref(), Some("xyz"));
    }
}
