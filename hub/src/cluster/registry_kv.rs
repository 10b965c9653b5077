//! The registry in a JetStream KV bucket: one key per device (`d.<id>`), policy (`p.<name>`),
//! setting (`s.<name>`), X.509 device authentication (`x.<id>`, none for SAS), CA
//! (`c.<name>`) and module (`m.<device>/<module>`), names base64url-encoded (KV keys allow fewer characters than
//! device ids), values JSON. They hold keys: never log a value.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use async_nats::{
    connection::State,
    jetstream::kv::{self, Operation},
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use bytes::Bytes;
use device_streams_protocol::Secret;
use futures_util::{StreamExt, TryStreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use tokio::sync::watch;

use super::{
    block,
    link::{keep_following, Started},
    Connection, Node, OP_TIMEOUT,
};
use crate::{
    registry::{CaCert, Change, Device, DeviceAuth, Mirror, Module, Policy, Present, Registry},
    Hub,
};

#[derive(Serialize, Deserialize)]
struct DeviceValue {
    id: String,
    primary_key: String,
    secondary_key: String,
    enabled: bool,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct PolicyValue {
    name: String,
    primary_key: String,
    secondary_key: String,
    rights: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct AuthValue {
    /// Azure's name for the kind (`selfSigned`, `certificateAuthority`).
    kind: String,
    primary: Option<String>,
    secondary: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CaValue {
    name: String,
    /// The certificate, DER, base64.
    der: String,
    added_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ModuleValue {
    device_id: String,
    module_id: String,
    primary_key: String,
    secondary_key: String,
    enabled: bool,
    created_at: u64,
}

impl From<&Device> for DeviceValue {
    fn from(d: &Device) -> Self {
        DeviceValue {
            id: d.id.clone(),
            primary_key: d.primary_key.expose().to_string(),
            secondary_key: d.secondary_key.expose().to_string(),
            enabled: d.enabled,
            created_at: d.created_at,
        }
    }
}

impl From<DeviceValue> for Device {
    /// When it last connected is each node's own, never the bucket's.
    fn from(v: DeviceValue) -> Self {
        Device {
            id: v.id,
            primary_key: Secret::new(v.primary_key),
            secondary_key: Secret::new(v.secondary_key),
            enabled: v.enabled,
            created_at: v.created_at,
            last_connected_at: None,
        }
    }
}

impl From<&Policy> for PolicyValue {
    fn from(p: &Policy) -> Self {
        PolicyValue {
            name: p.name.clone(),
            primary_key: p.primary_key.expose().to_string(),
            secondary_key: p.secondary_key.expose().to_string(),
            rights: p.rights.clone(),
        }
    }
}

impl From<PolicyValue> for Policy {
    fn from(v: PolicyValue) -> Self {
        Policy {
            name: v.name,
            primary_key: Secret::new(v.primary_key),
            secondary_key: Secret::new(v.secondary_key),
            rights: v.rights,
        }
    }
}

impl From<&DeviceAuth> for AuthValue {
    fn from(auth: &DeviceAuth) -> Self {
        let (primary, secondary) = match auth {
            DeviceAuth::SelfSigned { primary, secondary } => (primary.clone(), secondary.clone()),
            _ => (None, None),
        };
        AuthValue {
            kind: auth.kind().to_string(),
            primary,
            secondary,
        }
    }
}

impl From<AuthValue> for DeviceAuth {
    fn from(v: AuthValue) -> Self {
        match v.kind.as_str() {
            "selfSigned" => DeviceAuth::SelfSigned {
                primary: v.primary,
                secondary: v.secondary,
            },
            // Never SAS by accident: an unknown kind accepts no thumbprint at all.
            _ => DeviceAuth::CertificateAuthority,
        }
    }
}

impl From<&CaCert> for CaValue {
    fn from(ca: &CaCert) -> Self {
        CaValue {
            name: ca.name.clone(),
            der: STANDARD.encode(&ca.der),
            added_at: ca.added_at,
        }
    }
}

impl TryFrom<CaValue> for CaCert {
    type Error = anyhow::Error;

    fn try_from(v: CaValue) -> anyhow::Result<Self> {
        Ok(CaCert {
            name: v.name,
            der: STANDARD.decode(v.der).context("a CA's certificate")?,
            added_at: v.added_at,
        })
    }
}

impl From<&Module> for ModuleValue {
    fn from(m: &Module) -> Self {
        ModuleValue {
            device_id: m.device_id.clone(),
            module_id: m.module_id.clone(),
            primary_key: m.primary_key.expose().to_string(),
            secondary_key: m.secondary_key.expose().to_string(),
            enabled: m.enabled,
            created_at: m.created_at,
        }
    }
}

impl From<ModuleValue> for Module {
    /// When it last connected is each node's own, never the bucket's.
    fn from(v: ModuleValue) -> Self {
        Module {
            device_id: v.device_id,
            module_id: v.module_id,
            primary_key: Secret::new(v.primary_key),
            secondary_key: Secret::new(v.secondary_key),
            enabled: v.enabled,
            created_at: v.created_at,
            last_connected_at: None,
        }
    }
}

fn key(kind: char, name: &str) -> String {
    format!("{kind}.{}", URL_SAFE_NO_PAD.encode(name))
}

/// The bucket's key for a change, and the value to put (`None`: delete the key).
fn encode(change: &Change) -> anyhow::Result<(String, Option<Bytes>)> {
    Ok(match change {
        Change::Device(d) => (key('d', &d.id), json(&DeviceValue::from(d))?),
        Change::DeviceGone(id) => (key('d', id), None),
        Change::Policy(p) => (key('p', &p.name), json(&PolicyValue::from(p))?),
        Change::PolicyGone(name) => (key('p', name), None),
        Change::Setting(name, value) => (key('s', name), json(value)?),
        Change::Auth(id, DeviceAuth::Sas) => (key('x', id), None),
        Change::Auth(id, auth) => (key('x', id), json(&AuthValue::from(auth))?),
        Change::Ca(ca) => (key('c', &ca.name), json(&CaValue::from(ca))?),
        Change::CaGone(name) => (key('c', name), None),
        Change::Module(m) => (key('m', &m.identity()), json(&ModuleValue::from(m))?),
        Change::ModuleGone(device, module) => (key('m', &format!("{device}/{module}")), None),
    })
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<Option<Bytes>> {
    Ok(Some(Bytes::from(serde_json::to_vec(value)?)))
}

/// An entry's JSON value; `what` names the entry in the error.
fn parse<T: DeserializeOwned>(value: &[u8], what: &'static str) -> anyhow::Result<T> {
    serde_json::from_slice(value).context(what)
}

/// The change a bucket entry stands for; `None` for a key that is not the registry's.
fn decode(key: &str, value: Option<&[u8]>) -> anyhow::Result<Option<Change>> {
    let Some((kind, name)) = key.split_once('.') else {
        return Ok(None);
    };
    let name = String::from_utf8(URL_SAFE_NO_PAD.decode(name)?)?;
    Ok(Some(match (kind, value) {
        ("d", None) => Change::DeviceGone(name),
        ("d", Some(v)) => Change::Device(parse::<DeviceValue>(v, "a device's entry")?.into()),
        ("p", None) => Change::PolicyGone(name),
        ("p", Some(v)) => Change::Policy(parse::<PolicyValue>(v, "a policy's entry")?.into()),
        ("s", Some(v)) => Change::Setting(name, serde_json::from_slice(v)?),
        ("x", None) => Change::Auth(name, DeviceAuth::Sas),
        ("x", Some(v)) => {
            let auth: AuthValue = parse(v, "a device's X.509 entry")?;
            Change::Auth(name, auth.into())
        }
        ("c", None) => Change::CaGone(name),
        ("c", Some(v)) => Change::Ca(parse::<CaValue>(v, "a CA's entry")?.try_into()?),
        ("m", None) => match name.split_once('/') {
            Some((device, module)) => Change::ModuleGone(device.into(), module.into()),
            None => return Ok(None),
        },
        ("m", Some(v)) => Change::Module(parse::<ModuleValue>(v, "a module's entry")?.into()),
        _ => return Ok(None),
    }))
}

/// Writes the registry's changes to the bucket, waiting for the cluster to take each;
/// while the cluster is unreachable, refuses them at once (they would not reach the
/// other nodes, and the next load from the bucket would undo them here).
pub struct KvMirror {
    conn: watch::Receiver<Option<Connection>>,
}

impl KvMirror {
    /// Through a connection that is open already (the CLI's).
    pub fn new(conn: Connection) -> Self {
        KvMirror {
            conn: watch::channel(Some(conn)).1,
        }
    }

    /// Through a node's connection, once it has one.
    pub(crate) fn following(conn: watch::Receiver<Option<Connection>>) -> Self {
        KvMirror { conn }
    }
}

impl Mirror for KvMirror {
    fn write(&self, change: &Change) -> Result<(), String> {
        const AWAY: &str = "the cluster is unreachable: registry changes wait until it is back";
        let (key, value) = encode(change).map_err(|e| format!("{e:#}"))?;
        let conn = self.conn.borrow().clone().ok_or(AWAY)?;
        if conn.client.connection_state() != State::Connected {
            return Err(AWAY.to_string());
        }
        let store = conn.registry;
        let put = async move {
            let op = async {
                match value {
                    Some(value) => store
                        .put(key, value)
                        .await
                        .map(drop)
                        .map_err(|e| anyhow!(e)),
                    None => store.delete(key).await.map_err(|e| anyhow!(e)),
                }
            };
            tokio::time::timeout(OP_TIMEOUT, op)
                .await
                .map_err(|_| anyhow!("no answer within {OP_TIMEOUT:?}"))?
        };
        block(put).map_err(|e| format!("{e:#}"))
    }
}

/// Brings `registry` up to the bucket's contents: every entry applied, and what the
/// bucket no longer has removed.
pub async fn load(store: &kv::Store, registry: &Registry) -> anyhow::Result<()> {
    let list = async {
        let keys: Vec<String> = store.keys().await?.try_collect().await?;
        anyhow::Ok(keys)
    };
    let keys = tokio::time::timeout(OP_TIMEOUT, list)
        .await
        .map_err(|_| anyhow!("listing the cluster's registry took over {OP_TIMEOUT:?}"))??;
    let mut present = Present::default();
    for key in keys {
        let value = tokio::time::timeout(OP_TIMEOUT, store.get(key.as_str()))
            .await
            .map_err(|_| anyhow!("reading the cluster's registry took over {OP_TIMEOUT:?}"))??;
        let change = decode(&key, value.as_deref());
        match change.with_context(|| format!("cluster registry entry {key}"))? {
            Some(change) => {
                note(&mut present, &change);
                registry.apply(&change)?;
            }
            None => continue,
        }
    }
    registry.retain(&present)?;
    Ok(())
}

/// Notes an entry the bucket holds, so that [`Registry::retain`] keeps it.
fn note(present: &mut Present, change: &Change) {
    match change {
        Change::Device(d) => {
            present.devices.insert(d.id.clone());
        }
        Change::Policy(p) => {
            present.policies.insert(p.name.clone());
        }
        Change::Auth(id, auth) if auth.is_x509() => {
            present.auths.insert(id.clone());
        }
        Change::Ca(ca) => {
            present.cas.insert(ca.name.clone());
        }
        Change::Module(m) => {
            present
                .modules
                .insert((m.device_id.clone(), m.module_id.clone()));
        }
        _ => {}
    }
}

/// Keeps the hub's registry copy following the bucket, and enforces each change at once
/// (a device disabled on any node is cut here too). Whenever NATS comes back, and on any
/// failure, it loads the whole bucket again; meanwhile the hub goes on with what it has.
pub(crate) async fn follow(hub: Arc<Hub>, node: Arc<Node>) {
    let Some(conn) = node.opened(&hub.shutdown).await else {
        return;
    };
    keep_following(
        &node.link,
        &node.client,
        &hub.shutdown,
        "cluster registry",
        |started| follow_once(&hub, &conn.registry, started),
    )
    .await
}

async fn follow_once(hub: &Arc<Hub>, store: &kv::Store, started: Started) -> anyhow::Result<()> {
    // Watch first, then load: a change made between the two comes through the watch.
    let mut watch = tokio::time::timeout(OP_TIMEOUT, store.watch_all())
        .await
        .map_err(|_| anyhow!("no watch within {OP_TIMEOUT:?}"))??;
    load(store, &hub.registry).await?;
    changed(hub);
    started.now();
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let value = match entry.operation {
            Operation::Put => Some(&entry.value[..]),
            Operation::Delete | Operation::Purge => None,
        };
        match decode(&entry.key, value) {
            Ok(Some(change)) => hub.registry.apply(&change)?,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(key = %entry.key, "cluster registry entry ignored: {e:#}");
                continue;
            }
        }
        changed(hub);
    }
    anyhow::bail!("the watch ended")
}

fn changed(hub: &Hub) {
    crate::revocation::enforce(hub);
    hub.metrics.registry_changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_bucket() {
        let device = Device {
            id: "dev:1@site".into(),
            primary_key: Secret::new("k1"),
            secondary_key: Secret::new("k2"),
            enabled: false,
            created_at: 7,
            last_connected_at: Some(9),
        };
        let (key, value) = encode(&Change::Device(device)).unwrap();
        assert!(key.starts_with("d.") && !key.contains(':') && !key.contains('@'));
        match decode(&key, value.as_deref()).unwrap() {
            Some(Change::Device(d)) => {
                assert_eq!((d.id.as_str(), d.enabled), ("dev:1@site", false));
                assert_eq!(d.primary_key, Secret::new("k1"));
            }
            other => panic!("{other:?}"),
        }
        let (key, value) = encode(&Change::Setting("hostname".into(), "h:1".into())).unwrap();
        assert!(matches!(
            decode(&key, value.as_deref()).unwrap(),
            Some(Change::Setting(n, v)) if n == "hostname" && v == "h:1"
        ));
        let (key, value) = encode(&Change::PolicyGone("svc".into())).unwrap();
        assert!(value.is_none());
        assert!(matches!(decode(&key, None).unwrap(), Some(Change::PolicyGone(n)) if n == "svc"));
        assert!(decode("junk", None).unwrap().is_none());

        let auth = DeviceAuth::SelfSigned {
            primary: Some("ab".repeat(32)),
            secondary: None,
        };
        let (key, value) = encode(&Change::Auth("cam".into(), auth.clone())).unwrap();
        assert!(matches!(
            decode(&key, value.as_deref()).unwrap(),
            Some(Change::Auth(id, a)) if id == "cam" && a == auth
        ));
        let (key, value) = encode(&Change::Auth("cam".into(), DeviceAuth::Sas)).unwrap();
        assert!(value.is_none());
        assert!(matches!(
            decode(&key, None).unwrap(),
            Some(Change::Auth(_, DeviceAuth::Sas))
        ));
        let ca = CaCert {
            name: "root".into(),
            der: vec![0, 1, 255],
            added_at: 3,
        };
        let (key, value) = encode(&Change::Ca(ca)).unwrap();
        assert!(matches!(
            decode(&key, value.as_deref()).unwrap(),
            Some(Change::Ca(c)) if c.der == [0, 1, 255] && c.name == "root"
        ));
        let module = Module {
            device_id: "dev1".into(),
            module_id: "m:1".into(),
            primary_key: Secret::new("mk1"),
            secondary_key: Secret::new("mk2"),
            enabled: false,
            created_at: 5,
            last_connected_at: None,
        };
        let (key, value) = encode(&Change::Module(module)).unwrap();
        assert!(matches!(
            decode(&key, value.as_deref()).unwrap(),
            Some(Change::Module(m)) if m.identity() == "dev1/m:1" && !m.enabled
        ));
        let (key, _) = encode(&Change::ModuleGone("dev1".into(), "m:1".into())).unwrap();
        assert!(matches!(
            decode(&key, None).unwrap(),
            Some(Change::ModuleGone(d, m)) if d == "dev1" && m == "m:1"
        ));
    }
}
