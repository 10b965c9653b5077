//! The dashboard of a cluster node shows the whole cluster: with a real `nats-server -js`
//! and two hub nodes as processes, a device connected to node A and a stream to it, the
//! dashboard on node B (`serve --dashboard`) shows the device online on A, lists A's
//! stream, closes it from B (the stream ends at A), and shows its record from A's log.
//! The charts page says its history is the node's own.

use std::time::Duration;

use device_streams::protocol::connection_string::{
    DeviceConnectionString, ServiceConnectionString,
};
use e2e::{
    connector, device_config, eventually_async,
    fault::retry,
    hub_cli, nats, open_stream, round_trip, spawn_device,
    web::{cookie_pair, form, hidden, key_of, sign_in, Site},
    ServiceConfig,
};

/// dev1 connected to the node on `port` through a device proxy mapping `echo`, and a
/// stream to it asked of that node.
async fn stream_on(
    port: u16,
    data: &std::path::Path,
    (device, service): (DeviceConnectionString, ServiceConnectionString),
    echo: &e2e::fault::Peer,
) -> (e2e::Running, device_streams::Stream) {
    let ca = data.join("ca.pem");
    let host: device_streams::protocol::connection_string::HostName =
        format!("localhost:{port}").parse().unwrap();
    let device = DeviceConnectionString {
        host: host.clone(),
        ..device
    };
    let map = format!("echo={}", echo.addr);
    let running = spawn_device(device_config(device, connector(&ca), &[&map]));
    let service = ServiceConnectionString { host, ..service };
    let config = ServiceConfig::new(service, connector(&ca), "dev1", "echo");
    let mut stream = retry("a stream to dev1", || open_stream(&config)).await;
    round_trip(&mut stream, b"on one node").await;
    (running, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_on_any_node_shows_and_closes_another_nodes_stream() {
    e2e::trace();
    let tmp = tempfile::tempdir().unwrap();
    let nats = nats::start_nats(tmp.path());
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let data = tmp.path().join("data");
    let (device, service) = nats::init_cluster(&data, &url);
    let rights = [
        "policy",
        "add",
        "admin",
        "--rights",
        "registry-read,registry-write",
    ];
    let admin_key = key_of(&hub_cli(&data, &rights));
    let (a_log, b_log) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = nats::start_node(&data, &url, &a_log, &[]);
    let b = nats::start_node_with(&data, &url, &b_log, &[], &["--dashboard"]);
    let node_a = format!("localhost_{}", a.port);

    let echo = e2e::fault::Peer::echo().await;
    let (_device, mut stream) = stream_on(a.port, &data, (device, service), &echo).await;

    // Node B's dashboard, over its TLS port.
    let site = Site::Tls {
        connector: connector(&data.join("ca.pem")),
        hostname: format!("localhost:{}", b.port),
    };
    let set_cookie = sign_in(&site, "/dashboard", "admin", &admin_key).await;
    let cookie = cookie_pair(&set_cookie.expect("admin signs in on B"));
    let on_a = format!("on {node_a}");
    let online = eventually_async(Duration::from_secs(5), || async {
        let page = site.get("/dashboard/?q=dev1", Some(&cookie)).await.body;
        page.contains(">online<") && page.contains(&on_a)
    });
    assert!(
        online.await,
        "B does not show dev1 online on A: {}",
        nats::log(&b_log)
    );

    // A's stream, listed by B (with its node), and closed from B.
    let listed = |page: &str| page.contains("data-stream=") && page.contains(&node_a);
    let shown = eventually_async(Duration::from_secs(5), || async {
        listed(&site.get("/dashboard/streams", Some(&cookie)).await.body)
    });
    assert!(shown.await, "B does not list A's stream");
    let streams = site.get("/dashboard/streams", Some(&cookie)).await.body;
    let csrf = hidden(&streams, "csrf");
    let id = hidden(
        &streams[streams.find("/dashboard/streams/close").unwrap()..],
        "id",
    );
    let close = form(&[("id", &id), ("csrf", &csrf)]);
    let closed = site
        .post("/dashboard/streams/close", Some(&cookie), &close)
        .await;
    assert_eq!(closed.status, 303, "{}", closed.body);
    let mut rest = Vec::new();
    let ended = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest);
    let ended = tokio::time::timeout(Duration::from_secs(5), ended).await;
    assert!(ended.is_ok(), "closing from B did not end A's stream");

    // Its record, written by A, in B's activity page.
    let logged = eventually_async(Duration::from_secs(5), || async {
        let page = site
            .get("/dashboard/activity?device=dev1", Some(&cookie))
            .await;
        page.body.contains("closed by an admin")
    });
    assert!(logged.await, "B's activity page lacks A's record");
    let charts = site.get("/dashboard/charts", Some(&cookie)).await.body;
    let own = format!("node <strong>localhost_{}</strong>", b.port);
    assert!(charts.contains("this node's own metrics") && charts.contains(&own));
}
