//! What programs reading the logs get: with `--log-format json` every line is one JSON
//! object a parser reads without losing anything, and a stream's lines name the stream.

use std::{collections::BTreeMap, fmt, process::Stdio, time::Duration};

use e2e::{bin, expose, fault, open_stream, round_trip, System};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON value whose objects must not repeat a key: `serde_json::Value` keeps the last of
/// two and says nothing, as most parsers do, so the first is lost to every reader.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value without duplicate keys")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Unique(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut object = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if object.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key '{key}'")));
            }
        }
        Ok(Unique(Value::Object(object.into_iter().collect())))
    }
}

#[test]
fn duplicate_keys_are_caught() {
    let parse = |s: &str| serde_json::from_str::<Unique>(s).map(|u| u.0);
    assert!(parse(r#"{"span":{"name":"stream","name":"ssh"}}"#).is_err());
    assert!(parse(r#"{"a":[{"b":1,"b":2}]}"#).is_err());
    let ok = parse(r#"{"span":{"name":"stream","stream":"ssh"},"n":[1,-2,0.5,null,true]}"#);
    assert_eq!(ok.unwrap()["span"]["stream"], "ssh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_proxy_json_logs_keep_every_key_and_name_the_stream() {
    let sys = System::start().await;
    let echo = fault::Peer::echo().await;
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let map = format!("echo={}", echo.addr);
    let child = tokio::process::Command::new(bin("device-local-proxy"))
        .args(["--ca-file", &ca, "--map", &map, "--log-format", "json"])
        .env("DEVICE_CONNECTION_STRING", &cs)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    sys.wait_connected("dev1").await;
    // A stream that opens, carries bytes and closes; and one the device rejects.
    let mut open = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    round_trip(&mut open, b"logged").await;
    drop(open);
    assert!(open_stream(&sys.service_config("dev1", "nope"))
        .await
        .is_err());
    let closed = || echo.open.load(std::sync::atomic::Ordering::SeqCst) == 0;
    assert!(fault::eventually(Duration::from_secs(5), closed).await);
    // The "stream closed" line follows the target's close; SIGTERM then ends the process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fault::signal(&child, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let stderr = String::from_utf8(out.stderr).unwrap();
    let mut in_stream_span = Vec::new();
    let mut rejected = false;
    for line in stderr.lines() {
        let Unique(entry) = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object without duplicates ({e}): {line}"));
        if entry["span"]["name"] == "stream" {
            assert_eq!(entry["span"]["stream"], "echo", "{line}");
            in_stream_span.push(entry["fields"]["message"].clone());
        }
        rejected |= entry["fields"]["stream"] == "nope";
    }
    assert!(
        in_stream_span.iter().any(|m| m == "stream open"),
        "no 'stream open' line in the stream's span: {stderr}"
    );
    // "stream closed" or "stream ended: <why>", by which side closes first.
    let ended = |m: &Value| {
        m.as_str()
            .is_some_and(|m| m == "stream closed" || m.starts_with("stream ended"))
    };
    assert!(
        in_stream_span.iter().any(ended),
        "no line of the stream's end in its span: {stderr}"
    );
    assert!(rejected, "the rejection names no stream: {stderr}");
}
