//! Revocation takes effect at once: disabling or deleting a device — from the CLI, which
//! writes the same database, or from the admin REST API — cuts its control connection and
//! its open streams within a second, and its reconnects are refused at CONNECT. Rotating
//! the key a control session signed in with cuts that session the same way (a session on
//! the other key stays); its open streams, authorised by their own stream tokens, go on.
//!
//! Streams are granted on a shared access policy's key: deleting the policy, or rotating
//! the key that signed a stream's request, ends those streams too.
//!
//! The same watch serves `stream-hub streams close`: see [`crate::live`].

use std::{sync::Arc, time::Duration};

use device_streams_protocol::Secret;

use crate::{
    registry::{split_identity, Device, DeviceAuth, RegistryError},
    x509::Proof,
    Hub,
};

/// How often the hub checks whether another process changed the registry.
const POLL: Duration = Duration::from_millis(250);

/// Cuts every connected or streaming device that is no longer registered and enabled,
/// every control session whose key is no longer one of its device's keys, and every
/// stream whose policy or policy key is gone.
pub fn enforce(hub: &Hub) {
    withdraw_grants(hub);
    let mut devices = hub.sessions.devices();
    devices.extend(hub.streams.devices());
    devices.sort();
    devices.dedup();
    for id in devices {
        let allowed = match allowed_credentials(hub, &id) {
            Ok(Some(credentials)) => {
                let credentials: Vec<_> = credentials.iter().collect();
                if hub.sessions.disconnect_unless_key(&id, &credentials) {
                    tracing::info!(device = %id, "control connection cut: the key, certificate thumbprint or CA it signed in with was replaced or removed");
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("cannot check device '{id}' against the registry: {e}");
                continue;
            }
        };
        if !allowed {
            let cut = hub.sessions.disconnect(&id);
            hub.streams.revoke(&id);
            tracing::info!(device = %id, control_connection_cut = cut, "device revoked: disabled or deleted");
        }
    }
}

/// Ends the streams whose policy was deleted, or whose signing key was replaced.
fn withdraw_grants(hub: &Hub) {
    for grant in hub.streams.grants() {
        let keys = match hub.registry.policy(&grant.policy) {
            Ok(Some(policy)) => [policy.primary_key, policy.secondary_key],
            Ok(None) => {
                hub.streams.withdraw(&grant);
                tracing::info!(policy = %grant.policy, "streams ended: their policy was deleted");
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot check policy '{}' against the registry: {e}",
                    grant.policy
                );
                continue;
            }
        };
        let still_valid = grant.key.is_none_or(|fp| {
            keys.iter()
                .any(|k| crate::stream::table::fingerprint(k) == fp)
        });
        if !still_valid {
            hub.streams.withdraw(&grant);
            tracing::info!(policy = %grant.policy, "streams ended: the policy key that granted them was replaced");
        }
    }
}

/// What a session of `identity` (a device, or `<device>/<module>`) may still sign in
/// with; `None` when it is no longer registered and enabled.
fn allowed_credentials(hub: &Hub, identity: &str) -> Result<Option<Vec<Secret>>, RegistryError> {
    let (device_id, module) = split_identity(identity);
    let Some(device) = hub.registry.device(device_id)?.filter(|d| d.enabled) else {
        return Ok(None);
    };
    match module {
        None => credentials(hub, &device).map(Some),
        Some(m) => Ok(hub
            .registry
            .module(device_id, m)?
            .filter(|m| m.enabled)
            .map(|m| vec![m.primary_key, m.secondary_key])),
    }
}

/// What a session of `device` may still hold: its keys, or the credentials of the X.509
/// proofs it could make now ([`Proof::credential`]).
fn credentials(hub: &Hub, device: &Device) -> Result<Vec<Secret>, RegistryError> {
    let proofs = match hub.registry.device_auth(&device.id)? {
        DeviceAuth::Sas => {
            return Ok(vec![
                device.primary_key.clone(),
                device.secondary_key.clone(),
            ])
        }
        DeviceAuth::SelfSigned { primary, secondary } => [primary, secondary]
            .into_iter()
            .flatten()
            .map(Proof::Thumbprint)
            .collect(),
        DeviceAuth::CertificateAuthority => hub
            .registry
            .cas()?
            .into_iter()
            .map(|ca| Proof::Ca(ca.name))
            .collect::<Vec<_>>(),
    };
    Ok(proofs.iter().map(|p| Secret::new(p.credential())).collect())
}

/// Watches the registry for changes made by other processes (SQLite's `data_version`).
pub async fn watch(hub: Arc<Hub>) {
    let mut seen = hub.registry.data_version().ok();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = hub.registry.data_version().ok();
        if now != seen {
            seen = now;
            enforce(&hub);
            crate::live::close_requested(&hub);
            hub.metrics.registry_changed();
        }
    }
}
