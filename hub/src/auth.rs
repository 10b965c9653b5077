//! Checking credentials against the registry: devices' SAS tokens and X.509 certificates
//! (on the control channel and the fast path's standby connections), services' SAS
//! tokens on the REST API. Errors say what was wrong, never echo the token.

use std::time::Duration;

use device_streams_protocol::{
    sas::{unix_now, url_decode, SasError, SasToken},
    wire::valid_device_id,
    Secret,
};

use rustls::pki_types::UnixTime;
use tokio::time::Instant;

use crate::{
    registry::{DeviceAuth, Registry, RegistryError, Right},
    x509::{self, PeerCerts, X509Error},
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed SAS token: {0}")]
    Malformed(SasError),
    /// Debug-quoted: the resource is the sender's text, and error messages reach logs.
    #[error("SAS token is for resource {0:?}, not this hub/device")]
    WrongResource(String),
    #[error("device '{0}' is not registered")]
    UnknownDevice(String),
    #[error("device '{0}' is disabled")]
    DisabledDevice(String),
    #[error("SAS token names no policy (skn)")]
    NoPolicy,
    #[error("shared access policy '{0}' does not exist")]
    UnknownPolicy(String),
    #[error("shared access policy '{0}' lacks the {1} right")]
    MissingRight(String, &'static str),
    #[error("SAS token signature does not match the key")]
    BadSignature,
    #[error("SAS token expired {0}s ago")]
    Expired(u64),
    /// Lifetimes as humantime text; the token's expiry itself is not secret, but the
    /// message needs no more than the two lengths.
    #[error("SAS token lifetime of {0} exceeds the hub's maximum of {1} (--max-token-lifetime)")]
    LifetimeTooLong(String, String),
    /// The device's kind of X.509 authentication, and why its certificate was refused.
    #[error("X.509 ({0}): {1}")]
    X509(&'static str, X509Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<SasError> for AuthError {
    fn from(e: SasError) -> Self {
        match e {
            SasError::BadSignature => AuthError::BadSignature,
            SasError::Expired(s) => AuthError::Expired(s),
            other => AuthError::Malformed(other),
        }
    }
}

/// Whether a token's host names this hub: exactly one of its names — the `host[:port]` it
/// was initialised with (what its connection strings carry as `HostName`, and so what SDKs
/// sign) or an alias it serves under (`serve --alias`) — host in any case. Another port, a
/// missing or extra port, or anything after the name is another hub.
fn is_this_hub(token_host: &str, hub_names: &[impl AsRef<str>]) -> bool {
    hub_names
        .iter()
        .any(|name| token_host.eq_ignore_ascii_case(name.as_ref()))
}

/// Which of a device's or policy's two keys verified a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    Primary,
    Secondary,
}

/// What a device's token proved: a session holds the device to both, ending when the
/// token expires or when the key that signed it stops being one of the device's keys.
/// `Debug` is safe: a `Secret` prints as a mask.
#[derive(Debug)]
pub struct DeviceLogin {
    /// The token's `se`, in Unix seconds.
    pub expiry: u64,
    pub slot: KeySlot,
    /// The key's value at CONNECT (a rotation replaces the value, not the slot).
    pub key: Secret,
}

/// What a device's credentials proved, whichever kind they were: the credential its
/// sessions are held to (the SAS key, or an X.509 [`x509::Proof`]'s), and when the token
/// or certificate expires (Unix seconds; `None`: never).
pub struct Login {
    pub credential: Secret,
    pub expiry: Option<u64>,
}

impl Login {
    /// When the session must end: it lasts no longer than the token or certificate that
    /// opened it (past a token's `se` the device must sign a new one; our device proxy
    /// reconnects at 80% of its token's life). `None`: never, or beyond what the clock
    /// can hold.
    pub fn ends_at(&self) -> Option<Instant> {
        let left = Duration::from_secs(self.expiry?.saturating_sub(unix_now()));
        Instant::now().checked_add(left)
    }
}

impl From<DeviceLogin> for Login {
    fn from(l: DeviceLogin) -> Self {
        Login {
            credential: l.key,
            expiry: Some(l.expiry),
        }
    }
}

/// An X.509 device: enabled, and its TLS client certificate checked against its
/// registration `kind` (no token: Azure's X.509 devices send none).
pub fn device_x509(
    registry: &Registry,
    device_id: &str,
    kind: &DeviceAuth,
    certs: &PeerCerts,
) -> Result<Login, AuthError> {
    match registry.device(device_id)? {
        None => return Err(AuthError::UnknownDevice(device_id.to_string())),
        Some(d) if !d.enabled => return Err(AuthError::DisabledDevice(device_id.to_string())),
        Some(_) => {}
    }
    let cas = match kind {
        DeviceAuth::CertificateAuthority => registry.cas()?,
        _ => Vec::new(),
    };
    let proof = x509::check(&certs.0, device_id, kind, &cas, UnixTime::now())
        .map_err(|e| AuthError::X509(kind.kind(), e))?;
    tracing::debug!(?proof, "X.509 certificate accepted");
    Ok(Login {
        credential: Secret::new(proof.credential()),
        // Valid through its notAfter second (as webpki reads it): ends after it.
        expiry: certs
            .0
            .first()
            .and_then(|leaf| x509::not_after(leaf))
            .map(|t| t + 1),
    })
}

/// Either key verifies, so keys can be rotated without downtime. A token valid for longer
/// than `max_lifetime` is refused: a stolen one would otherwise open sessions for as long
/// as its signer chose (`se=2^64-1`: forever), rotation being the only way to stop it.
fn verify_either(
    token: &SasToken,
    primary: &Secret,
    secondary: &Secret,
    max_lifetime: Duration,
) -> Result<KeySlot, AuthError> {
    let now = unix_now();
    let slot = match token.verify(primary, now) {
        Err(SasError::BadSignature) => token.verify(secondary, now).map(|()| KeySlot::Secondary),
        other => other.map(|()| KeySlot::Primary),
    }?;
    // Checked only once the signature holds, so that a forger learns nothing from it.
    let lifetime = token.expiry.saturating_sub(now);
    if lifetime > max_lifetime.as_secs() {
        return Err(AuthError::LifetimeTooLong(
            humantime::format_duration(Duration::from_secs(lifetime)).to_string(),
            humantime::format_duration(max_lifetime).to_string(),
        ));
    }
    Ok(slot)
}

/// Checks a device's CONNECT password: resource `<host>/devices/<id>`, device enabled,
/// signature, expiry and lifetime at most `max_lifetime`.
pub fn device(
    registry: &Registry,
    hub_names: &[impl AsRef<str>],
    max_lifetime: Duration,
    device_id: &str,
    token: &str,
) -> Result<DeviceLogin, AuthError> {
    let token = SasToken::parse(token)?;
    // A path the hub would read differently from a normalising reader (`x/../devices/d`,
    // `devices/d/more`, an id of `..`) could stretch a token to another device; only the
    // one exact shape counts.
    let for_this_device = valid_device_id(device_id)
        && token.resource.split_once('/').is_some_and(|(host, path)| {
            is_this_hub(host, hub_names)
                && path
                    .strip_prefix("devices/")
                    .filter(|id| !id.contains('/'))
                    // SDKs put the id url-encoded in the resource (`device_resource`); a
                    // literal id decodes to itself, so either spelling of this id counts.
                    .is_some_and(|id| url_decode(id).is_ok_and(|id| id == device_id))
        });
    if !for_this_device {
        return Err(AuthError::WrongResource(token.resource.clone()));
    }
    let device = registry
        .device(device_id)?
        .ok_or_else(|| AuthError::UnknownDevice(device_id.to_string()))?;
    if !device.enabled {
        return Err(AuthError::DisabledDevice(device_id.to_string()));
    }
    let slot = verify_either(
        &token,
        &device.primary_key,
        &device.secondary_key,
        max_lifetime,
    )?;
    let key = match slot {
        KeySlot::Primary => device.primary_key,
        KeySlot::Secondary => device.secondary_key,
    };
    Ok(DeviceLogin {
        expiry: token.expiry,
        slot,
        key,
    })
}

/// Checks a module identity's CONNECT password as [`device`] does a device's: resource
/// exactly `<host>/devices/<device>/modules/<module>`, device and module registered and
/// enabled, signed with one of the module's keys.
pub fn module(
    registry: &Registry,
    hub_names: &[impl AsRef<str>],
    max_lifetime: Duration,
    (device_id, module_id): (&str, &str),
    token: &str,
) -> Result<DeviceLogin, AuthError> {
    let token = SasToken::parse(token)?;
    let same = |encoded: &str, id: &str| {
        !encoded.contains('/') && url_decode(encoded).is_ok_and(|e| e == id)
    };
    let for_this_module = valid_device_id(device_id)
        && valid_device_id(module_id)
        && token.resource.split_once('/').is_some_and(|(host, path)| {
            is_this_hub(host, hub_names)
                && path
                    .strip_prefix("devices/")
                    .and_then(|p| p.split_once("/modules/"))
                    .is_some_and(|(d, m)| same(d, device_id) && same(m, module_id))
        });
    if !for_this_module {
        return Err(AuthError::WrongResource(token.resource.clone()));
    }
    let identity = format!("{device_id}/{module_id}");
    let device = registry
        .device(device_id)?
        .ok_or_else(|| AuthError::UnknownDevice(device_id.to_string()))?;
    if !device.enabled {
        return Err(AuthError::DisabledDevice(device_id.to_string()));
    }
    let module = registry
        .module(device_id, module_id)?
        .ok_or_else(|| AuthError::UnknownDevice(identity.clone()))?;
    if !module.enabled {
        return Err(AuthError::DisabledDevice(identity));
    }
    let slot = verify_either(
        &token,
        &module.primary_key,
        &module.secondary_key,
        max_lifetime,
    )?;
    let key = match slot {
        KeySlot::Primary => module.primary_key,
        KeySlot::Secondary => module.secondary_key,
    };
    Ok(DeviceLogin {
        expiry: token.expiry,
        slot,
        key,
    })
}

/// Who a service's token proved to be: a policy, and the key of it that signed the token.
pub struct ServiceLogin {
    pub policy: String,
    pub key: Secret,
}

/// Checks a service's `Authorization` header (lifetime at most `max_lifetime`) and that
/// its policy has `right`; returns the policy name.
pub fn service(
    registry: &Registry,
    hub_names: &[impl AsRef<str>],
    max_lifetime: Duration,
    header: &str,
    right: Right,
) -> Result<String, AuthError> {
    service_login(registry, hub_names, max_lifetime, header, right).map(|l| l.policy)
}

/// [`service`], also saying which key signed the token: streams end when it is replaced.
pub fn service_login(
    registry: &Registry,
    hub_names: &[impl AsRef<str>],
    max_lifetime: Duration,
    header: &str,
    right: Right,
) -> Result<ServiceLogin, AuthError> {
    let token = SasToken::parse(header)?;
    // The hub's name alone: a service token scoped to a path (Azure's `<host>/devices/x`
    // prefixes) is refused rather than read as the whole hub.
    if !is_this_hub(&token.resource, hub_names) {
        return Err(AuthError::WrongResource(token.resource.clone()));
    }
    let name = token.policy.clone().ok_or(AuthError::NoPolicy)?;
    let policy = registry
        .policy(&name)?
        .ok_or_else(|| AuthError::UnknownPolicy(name.clone()))?;
    let slot = verify_either(
        &token,
        &policy.primary_key,
        &policy.secondary_key,
        max_lifetime,
    )?;
    if !policy.allows(right) {
        return Err(AuthError::MissingRight(name, right.name()));
    }
    let key = match slot {
        KeySlot::Primary => policy.primary_key,
        KeySlot::Secondary => policy.secondary_key,
    };
    Ok(ServiceLogin { policy: name, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_streams_protocol::sas::{device_resource, sign};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        (dir, reg)
    }

    #[test]
    fn device_tokens_are_checked_for_key_resource_expiry_and_status() {
        let (_dir, reg) = registry();
        let dev = reg.add_device("dev1").unwrap();
        let future = unix_now() + 3600;
        let good = sign(
            &device_resource("hub:8443", "dev1"),
            &dev.primary_key,
            future,
            None,
        )
        .unwrap();
        let login = device(&reg, &["hub:8443"], DAY, "dev1", good.expose()).unwrap();
        assert_eq!((login.slot, login.expiry), (KeySlot::Primary, future));
        device(&reg, &["HUB:8443"], DAY, "dev1", good.expose()).unwrap();
        assert!(matches!(
            device(&reg, &["hub"], DAY, "dev1", good.expose()),
            Err(AuthError::WrongResource(_))
        ));
        let second = sign(
            &device_resource("hub:8443", "dev1"),
            &dev.secondary_key,
            future,
            None,
        )
        .unwrap();
        device(&reg, &["hub:8443"], DAY, "dev1", second.expose()).unwrap();

        let other_key = crate::registry::new_key();
        let bad = sign(
            &device_resource("hub:8443", "dev1"),
            &other_key,
            future,
            None,
        )
        .unwrap();
        assert!(matches!(
            device(&reg, &["hub:8443"], DAY, "dev1", bad.expose()),
            Err(AuthError::BadSignature)
        ));
        let old = sign(
            &device_resource("hub:8443", "dev1"),
            &dev.primary_key,
            unix_now() - 10,
            None,
        )
        .unwrap();
        assert!(matches!(
            device(&reg, &["hub:8443"], DAY, "dev1", old.expose()),
            Err(AuthError::Expired(_))
        ));
        assert!(matches!(
            device(&reg, &["hub:8443"], DAY, "dev2", good.expose()),
            Err(AuthError::WrongResource(_))
        ));
        assert!(matches!(
            device(&reg, &["elsewhere"], DAY, "dev1", good.expose()),
            Err(AuthError::WrongResource(_))
        ));
        reg.set_enabled("dev1", false).unwrap();
        let err = device(&reg, &["hub:8443"], DAY, "dev1", good.expose()).unwrap_err();
        assert!(matches!(err, AuthError::DisabledDevice(_)));
        assert!(!err.to_string().contains(good.expose()));
    }

    #[test]
    fn service_tokens_need_a_policy_with_the_right() {
        let (_dir, reg) = registry();
        let full = reg.add_policy("service", &[Right::ServiceConnect]).unwrap();
        let read = reg.add_policy("reader", &[Right::RegistryRead]).unwrap();
        let exp = unix_now() + 60;
        let t = sign("hub:8443", &full.primary_key, exp, Some("service")).unwrap();
        assert_eq!(
            service(&reg, &["hub:8443"], DAY, t.expose(), Right::ServiceConnect).unwrap(),
            "service"
        );
        let t = sign("hub:8443", &read.primary_key, exp, Some("reader")).unwrap();
        assert!(matches!(
            service(&reg, &["hub:8443"], DAY, t.expose(), Right::ServiceConnect),
            Err(AuthError::MissingRight(_, "service-connect"))
        ));
        let t = sign("hub:8443", &full.primary_key, exp, None).unwrap();
        assert!(matches!(
            service(&reg, &["hub:8443"], DAY, t.expose(), Right::ServiceConnect),
            Err(AuthError::NoPolicy)
        ));
        let t = sign("hub:8443", &full.primary_key, exp, Some("nobody")).unwrap();
        assert!(matches!(
            service(&reg, &["hub:8443"], DAY, t.expose(), Right::ServiceConnect),
            Err(AuthError::UnknownPolicy(_))
        ));
    }

    #[test]
    fn module_tokens_name_exactly_this_module() {
        use device_streams_protocol::sas::module_resource;
        let (_dir, reg) = registry();
        reg.add_device("dev1").unwrap();
        let m = reg.add_module("dev1", "m1").unwrap();
        let exp = unix_now() + 60;
        let hub = "hub:8443";
        let check = |ids: (&str, &str), key: &Secret, resource: &str| {
            let t = sign(resource, key, exp, None).unwrap();
            module(&reg, &[hub], DAY, ids, t.expose())
        };
        let good = module_resource(hub, "dev1", "m1");
        let login = check(("dev1", "m1"), &m.primary_key, &good).unwrap();
        assert_eq!(login.slot, KeySlot::Primary);
        check(("dev1", "m1"), &m.secondary_key, &good).unwrap();
        for resource in [
            "hub:8443/devices/dev1",
            "hub:8443/devices/dev1/modules/m1/",
            "hub:8443/devices/dev1/modules/m2",
            "hub:8443/devices/dev1/modules/m1%2Fx",
            "hub:8443/devices/x/../dev1/modules/m1",
            "other:8443/devices/dev1/modules/m1",
        ] {
            let err = check(("dev1", "m1"), &m.primary_key, resource).unwrap_err();
            assert!(
                matches!(err, AuthError::WrongResource(_)),
                "{resource}: {err}"
            );
        }
        let dev_key = reg.device("dev1").unwrap().unwrap().primary_key;
        assert!(matches!(
            check(("dev1", "m1"), &dev_key, &good),
            Err(AuthError::BadSignature)
        ));
        reg.set_module_enabled("dev1", "m1", false).unwrap();
        assert!(matches!(
            check(("dev1", "m1"), &m.primary_key, &good),
            Err(AuthError::DisabledDevice(_))
        ));
        assert!(matches!(
            check(
                ("dev1", "m9"),
                &m.primary_key,
                &module_resource(hub, "dev1", "m9")
            ),
            Err(AuthError::UnknownDevice(_))
        ));
    }

    /// Tokens the hub once took because it compared the host only up to its first `:`
    /// and did not look at the path.
    #[test]
    fn service_tokens_name_exactly_this_hub() {
        let (_dir, reg) = registry();
        let p = reg.add_policy("service", &[Right::ServiceConnect]).unwrap();
        let exp = unix_now() + 60;
        let check = |hub: &str, sr: &str| {
            let t = sign(sr, &p.primary_key, exp, Some("service")).unwrap();
            service(&reg, &[hub], DAY, t.expose(), Right::ServiceConnect)
        };
        check("localhost:8443", "localhost:8443").unwrap();
        check("localhost:8443", "LocalHost:8443").unwrap();
        check("hub.example.com", "hub.example.com").unwrap();
        for (hub, sr) in [
            ("localhost:8443", "localhost:1"),
            ("localhost:8443", "localhost:evil"),
            ("localhost:8443", "localhost"),
            ("localhost:8443", "localhost:8443/"),
            ("localhost:8443", "localhost:8443/devices/dev3"),
            ("localhost:8443", "localhost:8443/devices"),
            ("localhost:8443", "localhost:84430"),
            ("localhost:8443", "evil.localhost:8443"),
            ("hub.example.com", "hub.example.com:443"),
            ("hub.example.com", "hub.example.com.evil"),
        ] {
            let err = check(hub, sr).unwrap_err();
            assert!(matches!(err, AuthError::WrongResource(_)), "{sr}: {err}");
        }
    }

    #[test]
    fn device_tokens_name_exactly_this_hub_and_device() {
        let (_dir, reg) = registry();
        let dev1 = reg.add_device("dev1").unwrap();
        let dev2 = reg.add_device("dev2").unwrap();
        let odd = reg.add_device("a:b@c").unwrap();
        let exp = unix_now() + 60;
        let hub = "localhost:8443";
        let check = |id: &str, key: &Secret, resource: &str| {
            let t = sign(resource, key, exp, None).unwrap();
            device(&reg, &[hub], DAY, id, t.expose())
        };
        for (id, key, resource) in [
            (
                "dev2",
                &dev2.primary_key,
                "localhost:8443/x/../devices/dev2",
            ),
            ("dev2", &dev2.primary_key, "localhost:8443/devices/./dev2"),
            ("dev2", &dev2.primary_key, "localhost:8443/devices/dev2/"),
            (
                "dev2",
                &dev2.primary_key,
                "localhost:8443/devices/dev2/modules/m",
            ),
            ("dev2", &dev2.primary_key, "localhost:8443//devices/dev2"),
            ("dev2", &dev2.primary_key, "localhost:8443/Devices/dev2"),
            ("dev2", &dev2.primary_key, "localhost:8443/devices/DEV2"),
            ("dev2", &dev2.primary_key, "localhost:1/devices/dev2"),
            ("dev2", &dev2.primary_key, "localhost:evil/devices/dev2"),
            ("dev2", &dev2.primary_key, "localhost/devices/dev2"),
            ("dev2", &dev2.primary_key, "localhost:8443"),
            (
                "dev1",
                &dev1.primary_key,
                "localhost:8443/devices/dev2/../dev1",
            ),
            (
                "dev1",
                &dev1.primary_key,
                "localhost:8443/devices/dev1%2F..%2Fdev2",
            ),
            ("dev1", &dev2.primary_key, "localhost:8443/devices/dev2"),
            ("..", &dev1.primary_key, "localhost:8443/devices/.."),
            (".", &dev1.primary_key, "localhost:8443/devices/."),
            ("..", &dev1.primary_key, "localhost:8443/devices/%2E%2E"),
        ] {
            let err = check(id, key, resource).unwrap_err();
            assert!(
                matches!(err, AuthError::WrongResource(_)),
                "{id} {resource}: {err}"
            );
        }

        check("dev2", &dev2.primary_key, "localhost:8443/devices/dev2").unwrap();
        check("dev2", &dev2.primary_key, "LOCALHOST:8443/devices/dev2").unwrap();
        // The id percent-encoded (as `device_resource` writes it) or literal: the same id.
        check("a:b@c", &odd.primary_key, &device_resource(hub, "a:b@c")).unwrap();
        check("a:b@c", &odd.primary_key, "localhost:8443/devices/a:b@c").unwrap();
        check("a:b@c", &odd.primary_key, "localhost:8443/devices/a%3Ab@c").unwrap();
    }

    /// `se` far ahead once made a token good forever; now its lifetime is capped, for
    /// devices and services alike, and the error names lengths, not the token.
    #[test]
    fn tokens_living_longer_than_the_maximum_are_refused() {
        let (_dir, reg) = registry();
        let dev = reg.add_device("dev1").unwrap();
        let pol = reg.add_policy("service", &[Right::ServiceConnect]).unwrap();
        let resource = device_resource("hub:8443", "dev1");
        let hour = Duration::from_secs(3600);
        for se in [u64::MAX, unix_now() + 2 * 3600] {
            let t = sign(&resource, &dev.primary_key, se, None).unwrap();
            let err = device(&reg, &["hub:8443"], hour, "dev1", t.expose()).unwrap_err();
            assert!(matches!(err, AuthError::LifetimeTooLong(..)), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("exceeds the hub's maximum of 1h"), "{msg}");
            assert!(!msg.contains(&se.to_string()), "{msg}");

            let t = sign("hub:8443", &pol.primary_key, se, Some("service")).unwrap();
            let err =
                service(&reg, &["hub:8443"], hour, t.expose(), Right::ServiceConnect).unwrap_err();
            assert!(matches!(err, AuthError::LifetimeTooLong(..)), "{err}");
        }
        // Within the limit: taken, and the login says when it ends and which key signed it.
        let se = unix_now() + 3000;
        let t = sign(&resource, &dev.secondary_key, se, None).unwrap();
        let login = device(&reg, &["hub:8443"], hour, "dev1", t.expose()).unwrap();
        assert_eq!(login.expiry, se);
        assert_eq!(login.slot, KeySlot::Secondary);
        assert_eq!(login.key, dev.secondary_key);
        let t = sign("hub:8443", &pol.primary_key, se, Some("service")).unwrap();
        service(&reg, &["hub:8443"], hour, t.expose(), Right::ServiceConnect).unwrap();
        // A forged token hears about its signature, not its lifetime.
        let forged = sign(&resource, &crate::registry::new_key(), u64::MAX, None).unwrap();
        assert!(matches!(
            device(&reg, &["hub:8443"], hour, "dev1", forged.expose()),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn wrong_resource_errors_quote_the_senders_text() {
        let err = AuthError::WrongResource("h/devices/x\n\u{1b}[2J".into()).to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
    }
}
