//! Checking SAS tokens against the registry: devices on the control channel, services
//! on the REST API. Errors say what was wrong, never echo the token.

use device_streams_protocol::{
    sas::{unix_now, url_encode, SasError, SasToken},
    Secret,
};

use crate::registry::{Registry, RegistryError, Right};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed SAS token: {0}")]
    Malformed(SasError),
    #[error("SAS token is for resource '{0}', not this hub/device")]
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

/// Whether a token's host part names this hub: with or without the port, any case.
fn host_matches(token_host: &str, hub_host: &str) -> bool {
    let bare = |h: &str| h.split(':').next().unwrap_or_default().to_ascii_lowercase();
    token_host.eq_ignore_ascii_case(hub_host) || bare(token_host) == bare(hub_host)
}

/// Either key verifies, so keys can be rotated without downtime.
fn verify_either(token: &SasToken, primary: &Secret, secondary: &Secret) -> Result<(), AuthError> {
    let now = unix_now();
    match token.verify(primary, now) {
        Err(SasError::BadSignature) => Ok(token.verify(secondary, now)?),
        other => Ok(other?),
    }
}

/// Checks a device's CONNECT password: resource `<host>/devices/<id>`, device enabled, signature, expiry.
pub fn device(
    registry: &Registry,
    hub_host: &str,
    device_id: &str,
    token: &str,
) -> Result<(), AuthError> {
    let token = SasToken::parse(token)?;
    let expected_suffix = format!("/devices/{}", url_encode(device_id));
    let decoded_suffix = format!("/devices/{device_id}");
    let for_this_device = token
        .resource
        .strip_suffix(&decoded_suffix)
        .or_else(|| token.resource.strip_suffix(&expected_suffix))
        .is_some_and(|host| host_matches(host, hub_host));
    if !for_this_device {
        return Err(AuthError::WrongResource(token.resource.clone()));
    }
    let device = registry
        .device(device_id)?
        .ok_or_else(|| AuthError::UnknownDevice(device_id.to_string()))?;
    if !device.enabled {
        return Err(AuthError::DisabledDevice(device_id.to_string()));
    }
    verify_either(&token, &device.primary_key, &device.secondary_key)
}

/// Checks a service's `Authorization` header and that its policy has `right`; returns the policy name.
pub fn service(
    registry: &Registry,
    hub_host: &str,
    header: &str,
    right: Right,
) -> Result<String, AuthError> {
    let token = SasToken::parse(header)?;
    let resource_host = token.resource.split('/').next().unwrap_or_default();
    if !host_matches(resource_host, hub_host) {
        return Err(AuthError::WrongResource(token.resource.clone()));
    }
    let name = token.policy.clone().ok_or(AuthError::NoPolicy)?;
    let policy = registry
        .policy(&name)?
        .ok_or_else(|| AuthError::UnknownPolicy(name.clone()))?;
    verify_either(&token, &policy.primary_key, &policy.secondary_key)?;
    if !policy.allows(right) {
        return Err(AuthError::MissingRight(name, right.name()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_streams_protocol::sas::{device_resource, sign};

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
        device(&reg, "hub:8443", "dev1", good.expose()).unwrap();
        device(&reg, "hub", "dev1", good.expose()).unwrap();
        let second = sign(
            &device_resource("hub:8443", "dev1"),
            &dev.secondary_key,
            future,
            None,
        )
        .unwrap();
        device(&reg, "hub:8443", "dev1", second.expose()).unwrap();

        let other_key = crate::registry::new_key();
        let bad = sign(
            &device_resource("hub:8443", "dev1"),
            &other_key,
            future,
            None,
        )
        .unwrap();
        assert!(matches!(
            device(&reg, "hub:8443", "dev1", bad.expose()),
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
            device(&reg, "hub:8443", "dev1", old.expose()),
            Err(AuthError::Expired(_))
        ));
        assert!(matches!(
            device(&reg, "hub:8443", "dev2", good.expose()),
            Err(AuthError::WrongResource(_))
        ));
        assert!(matches!(
            device(&reg, "elsewhere", "dev1", good.expose()),
            Err(AuthError::WrongResource(_))
        ));
        reg.set_enabled("dev1", false).unwrap();
        let err = device(&reg, "hub:8443", "dev1", good.expose()).unwrap_err();
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
            service(&reg, "hub:8443", t.expose(), Right::ServiceConnect).unwrap(),
            "service"
        );
        let t = sign("hub:8443", &read.primary_key, exp, Some("reader")).unwrap();
        assert!(matches!(
            service(&reg, "hub:8443", t.expose(), Right::ServiceConnect),
            Err(AuthError::MissingRight(_, "service-connect"))
        ));
        let t = sign("hub:8443", &full.primary_key, exp, None).unwrap();
        assert!(matches!(
            service(&reg, "hub:8443", t.expose(), Right::ServiceConnect),
            Err(AuthError::NoPolicy)
        ));
        let t = sign("hub:8443", &full.primary_key, exp, Some("nobody")).unwrap();
        assert!(matches!(
            service(&reg, "hub:8443", t.expose(), Right::ServiceConnect),
            Err(AuthError::UnknownPolicy(_))
        ));
    }
}
