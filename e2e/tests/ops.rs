//! What an admin sees of a running hub from the CLI, another process: which devices are
//! online and when they were last seen, the open streams with their bytes so far, and
//! closing one of them.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{bin, eventually, fault::echo_system, hub_cli, open_stream, round_trip, System};
use stream_hub::Limits;
use tokio::io::AsyncReadExt;

/// The line of `device list` for `id`.
fn row(list: &str, id: &str) -> Option<String> {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(str::to_string)
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&hub_cli(dir, args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_shows_who_is_online_and_when_the_others_were_last_seen() {
    let sys = System::start().await;
    let dir = sys.data().path;
    let dev = sys.add_device("dev1");
    sys.add_device("dev2");
    let device = sys.start_device(dev, &["echo=127.0.0.1:1"]).await;

    let mut list = String::new();
    let online = eventually(Duration::from_secs(5), || {
        list = hub_cli(&dir, &["device", "list"]);
        row(&list, "dev1").is_some_and(|l| l.contains(" online ") && l.contains("connected now"))
    });
    assert!(online.await, "{list}");
    assert!(list.starts_with("DEVICE"), "{list}");
    let never = row(&list, "dev2").unwrap();
    for word in ["enabled", "offline", "never", "sas"] {
        assert!(never.contains(word), "{word} in {never}");
    }
    let show = json(&dir, &["device", "show", "dev1", "--json"]);
    assert_eq!(show["connectionState"], "Connected", "{show}");
    // Azure's shape (thumbprints null for a SAS device), without the keys.
    let thumbprints = serde_json::json!({ "primaryThumbprint": null, "secondaryThumbprint": null });
    let auth = serde_json::json!({ "type": "sas", "x509Thumbprint": thumbprints });
    assert_eq!(show["authentication"], auth);
    assert!(show["lastActivityTime"].as_u64().is_some(), "{show}");

    device.stop().await.unwrap();
    let offline = eventually(Duration::from_secs(5), || {
        list = hub_cli(&dir, &["device", "list"]);
        row(&list, "dev1").is_some_and(|l| l.contains(" offline ") && l.contains("Z "))
    });
    assert!(offline.await, "{list}");
    let show = hub_cli(&dir, &["device", "show", "dev1"]);
    let line = |key: &str| {
        let found = show.lines().find(|l| l.starts_with(key));
        found
            .unwrap_or_else(|| panic!("no {key} in {show}"))
            .to_string()
    };
    assert!(line("connection:").ends_with(" offline"), "{show}");
    assert!(line("last seen:").ends_with("s ago)"), "{show}");
    // The values start in one column.
    let column = |l: String| l.len() - l[l.find(':').unwrap() + 1..].trim_start().len();
    assert_eq!(column(line("status:")), column(line("authentication:")));
    let show = json(&dir, &["device", "show", "dev1", "--json"]);
    assert_eq!(show["connectionState"], "Disconnected", "{show}");
    assert!(show["lastActivityTime"].as_u64().is_some(), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_list_shows_bytes_so_far_and_an_admin_can_close_a_stream() {
    let (sys, _echo, _device) = echo_system(Limits::default()).await;
    let dir = sys.data().path;
    let mut stream = open_stream(&sys.service_config("dev1", "echo"))
        .await
        .unwrap();
    round_trip(&mut stream, &[1u8; 1000]).await;

    let mut rows = serde_json::Value::Null;
    let mut listed = |want: u64| {
        rows = json(&dir, &["streams", "list", "--device", "dev1", "--json"]);
        rows[0]["bytesToDevice"] == want && rows[0]["bytesFromDevice"] == want
    };
    // Counts are refreshed every 2 s while bytes move.
    assert!(eventually(Duration::from_secs(6), || listed(1000)).await);
    round_trip(&mut stream, &[2u8; 5000]).await;
    assert!(eventually(Duration::from_secs(6), || listed(6000)).await);
    let s = &rows[0];
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(
        (&s["deviceId"], &s["streamName"]),
        (&"dev1".into(), &"echo".into())
    );
    assert_eq!(s["policy"], "service");
    let id = s["streamId"].as_str().unwrap().to_string();
    let text = hub_cli(&dir, &["streams", "list"]);
    assert!(text.starts_with("STREAM"), "{text}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let line = text.lines().map(words).find(|w| w[0] == id);
    let want = [id.as_str(), "dev1", "echo", "service"];
    assert!(
        line.as_ref()
            .is_some_and(|w| w[..4] == want && w[5..] == ["6000", "6000"]),
        "{text}"
    );
    assert!(
        hub_cli(&dir, &["streams", "list", "--device", "dev2"])
            .lines()
            .count()
            == 1
    );
    let devices = json(&dir, &["device", "list", "--json"]);
    assert_eq!(devices[0]["openStreams"], 1, "{devices}");

    let asked = Instant::now();
    let close = {
        let (dir, id) = (dir.clone(), id.clone());
        tokio::task::spawn_blocking(move || hub_cli(&dir, &["streams", "close", &id]))
    };
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the stream stayed open: {read:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        asked.elapsed()
    );
    assert!(close
        .await
        .unwrap()
        .contains(&format!("closed stream {id}")));

    let mut entries = serde_json::Value::Null;
    let logged = eventually(Duration::from_secs(5), || {
        entries = json(&dir, &["logs", "--device", "dev1", "--json"]);
        entries[0]["detail"] == "closed by an admin"
    });
    assert!(logged.await, "{entries}");
    assert!(hub_cli(&dir, &["logs"]).contains(" closed by an admin"));
    assert_eq!(
        json(&dir, &["streams", "list", "--json"]),
        serde_json::json!([])
    );

    let again = std::process::Command::new(bin("stream-hub"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["streams", "close", &id])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(&format!("no open stream '{id}'")), "{err}");
}
