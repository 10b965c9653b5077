//! The device's own map of stream names to local targets (`--map ssh=127.0.0.1:22`).
//! A stream request can only ever reach an address in this map.

use std::{collections::BTreeMap, str::FromStr};

use device_streams::protocol::wire::valid_stream_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `host:port`, dialed as given.
    pub addr: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("'{0}' is not NAME=HOST:PORT (e.g. ssh=127.0.0.1:22)")]
    Syntax(String),
    #[error("'{0}' is not a valid stream name (letters, digits, - . _)")]
    Name(String),
    #[error("'{0}' is not HOST:PORT with a port from 1 to 65535")]
    Addr(String),
    #[error("stream name '{0}' is mapped twice")]
    Duplicate(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        let (name, addr) = s
            .split_once('=')
            .ok_or_else(|| TargetError::Syntax(s.to_string()))?;
        let (name, addr) = (name.trim(), addr.trim());
        if !valid_stream_name(name) {
            return Err(TargetError::Name(name.to_string()));
        }
        let valid_addr = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_addr {
            return Err(TargetError::Addr(addr.to_string()));
        }
        Ok(Target {
            name: name.to_string(),
            addr: addr.to_string(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Targets(BTreeMap<String, String>);

impl Targets {
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Result<Self, TargetError> {
        let mut map = BTreeMap::new();
        for t in targets {
            if map.insert(t.name.clone(), t.addr).is_some() {
                return Err(TargetError::Duplicate(t.name));
            }
        }
        Ok(Targets(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_map_entries() {
        let t: Target = "ssh=127.0.0.1:22".parse().unwrap();
        assert_eq!((t.name.as_str(), t.addr.as_str()), ("ssh", "127.0.0.1:22"));
        assert!("rdp=[::1]:3389".parse::<Target>().is_ok());
        assert_eq!(
            "ssh".parse::<Target>(),
            Err(TargetError::Syntax("ssh".into()))
        );
        assert_eq!(
            "s/h=a:1".parse::<Target>(),
            Err(TargetError::Name("s/h".into()))
        );
        assert_eq!(
            "ssh=localhost".parse::<Target>(),
            Err(TargetError::Addr("localhost".into()))
        );
        assert_eq!(
            "ssh=h:0".parse::<Target>(),
            Err(TargetError::Addr("h:0".into()))
        );
        let dup = Targets::new(["a=h:1".parse().unwrap(), "a=h:2".parse().unwrap()]);
        assert_eq!(dup.err(), Some(TargetError::Duplicate("a".into())));
        let map = Targets::new(["ssh=h:22".parse().unwrap()]).unwrap();
        assert_eq!(map.get("ssh"), Some("h:22"));
        assert_eq!(map.get("rdp"), None);
    }
}
