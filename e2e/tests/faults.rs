//! Faults: restarts, kills, silent links, slow readers, signals, token renewal.
//! Each party that survives must notice, free what it held, and keep serving.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use device_streams::Stream;
use e2e::open_stream;
use e2e::{
    bin, device_config, expose,
    fault::{self, eventually, open_fds, retry, Forwarder, HubProcess, Peer},
    round_trip, spawn_device, System,
};
use stream_hub::Limits;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::TcpStream,
};

/// Kill cycles per test (`FAULT_CYCLES` overrides): each costs a process start and a stream.
fn cycles() -> usize {
    std::env::var("FAULT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

const NOTICE: Duration = Duration::from_secs(5);

/// Reads until end of file or error; fails the test if neither comes within `NOTICE`.
async fn ends<S: AsyncRead + Unpin>(s: &mut S, what: &str) {
    let mut sink = Vec::new();
    let r = tokio::time::timeout(NOTICE, s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "{what} did not notice within {NOTICE:?}");
}

async fn stream(sys: &System, name: &str) -> Stream {
    open_stream(&sys.service_config("dev1", name))
        .await
        .expect("stream opens")
}

/// File descriptors after the first cycle, against which later cycles are compared.
#[derive(Default)]
struct FdWatch(Option<usize>);

impl FdWatch {
    fn after_cycle(&mut self) {
        self.0.get_or_insert_with(open_fds);
    }
    async fn assert_no_growth(&self) {
        let baseline = self.0.expect("at least one cycle");
        assert!(
            eventually(NOTICE, || open_fds() <= baseline + 4).await,
            "file descriptors grew from {baseline} to {} over {} cycles",
            open_fds(),
            cycles()
        );
    }
}

fn quick_limits() -> Limits {
    Limits {
        shutdown_grace: Duration::from_millis(500),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reconnects_after_a_hub_restart_on_the_same_port() {
    let (mut sys, echo, _device) = fault::echo_system(quick_limits()).await;
    let mut s = stream(&sys, "echo").await;
    round_trip(&mut s, b"before").await;

    sys.restart().await;
    // The open stream went down with the old hub; the device proxy noticed and let go.
    ends(&mut s, "the service side of the old stream").await;
    assert!(eventually(NOTICE, || echo.open.load(Ordering::SeqCst) == 0).await);
    // Backoff starts at 0.5 s and the device proxy's cap is 2 s: back within seconds.
    sys.wait_connected("dev1").await;
    let mut s = stream(&sys, "echo").await;
    round_trip(&mut s, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_outage_is_logged_once_per_change_not_once_per_retry() {
    use tokio::io::AsyncBufReadExt;
    let mut sys = System::start_with(quick_limits()).await;
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let mut child = tokio::process::Command::new(bin("device-local-proxy"))
        .args([
            "--ca-file",
            &ca,
            "--map",
            "s=127.0.0.1:1",
            "--max-backoff",
            "300ms",
        ])
        .env("DEVICE_CONNECTION_STRING", &cs)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    sys.wait_connected("dev1").await;
    // Down for 3 s: with backoff capped at 300 ms the proxy retries at least ten times.
    sys.restart_after(Duration::from_secs(3)).await;
    sys.wait_connected("dev1").await;
    fault::signal(&child, "TERM");
    let mut log = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    let warnings = log
        .iter()
        .filter(|l| l.contains("; retrying in ") && l.contains(" s"))
        .count();
    let connects = log
        .iter()
        .filter(|l| l.contains("connected to hub"))
        .count();
    // One line for losing the hub, one for the first failed reconnect; the retries after
    // it fail the same way and say nothing new.
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for one outage:\n{}",
        log.join("\n")
    );
    assert_eq!(connects, 2, "{}", log.join("\n"));
}

fn device_args(sys: &System, target: std::net::SocketAddr) -> Vec<String> {
    let ca = sys.ca_file().display().to_string();
    let map = format!("echo={target}");
    ["--ca-file", &ca, "--map", &map, "--keep-alive", "2s"]
        .map(String::from)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_device_proxy_is_noticed_and_nothing_leaks() {
    let sys = System::start_with(quick_limits()).await;
    let echo = Peer::echo().await;
    let cs = expose(&sys.add_device("dev1").to_secret_string());
    let args = device_args(&sys, echo.addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fds = FdWatch::default();
    for i in 0..cycles() {
        let mut child = fault::spawn(
            &bin("device-local-proxy"),
            &args,
            &[("DEVICE_CONNECTION_STRING", cs.clone())],
        );
        sys.wait_connected("dev1").await;
        let mut s = stream(&sys, "echo").await;
        round_trip(&mut s, format!("cycle {i}").as_bytes()).await;
        fault::signal(&child, "KILL");
        let _ = child.wait().await;
        ends(&mut s, "the service side").await;
        assert!(
            eventually(NOTICE, || sys.hub.open_streams() == 0
                && sys.hub.connected_devices() == 0)
            .await,
            "the hub still holds the killed device's stream or session"
        );
        drop(s);
        fds.after_cycle();
    }
    fds.assert_no_growth().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_proxy_is_noticed_and_nothing_leaks() {
    let (sys, echo, _device) = fault::echo_system(quick_limits()).await;
    let cs = expose(&sys.service_connection().to_secret_string());
    let ca = sys.ca_file().display().to_string();
    let args = [
        "--stdio",
        "--device-id",
        "dev1",
        "--stream-name",
        "echo",
        "--ca-file",
        &ca,
    ];
    let mut fds = FdWatch::default();
    for i in 0..cycles() {
        let mut child = tokio::process::Command::new(bin("service-local-proxy"))
            .args(args)
            .env("SERVICE_CONNECTION_STRING", &cs)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        round_trip(&mut io, format!("cycle {i}").as_bytes()).await;
        assert_eq!(echo.open.load(Ordering::SeqCst), 1);
        fault::signal(&child, "KILL");
        let _ = child.wait().await;
        assert!(
            eventually(NOTICE, || echo.open.load(Ordering::SeqCst) == 0
                && sys.hub.open_streams() == 0)
            .await,
            "the device proxy or the hub still holds the killed service's stream"
        );
        fds.after_cycle();
    }
    fds.assert_no_growth().await;
    assert_eq!(sys.hub.connected_devices(), 1, "the device stays connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_hub_is_noticed_and_proxies_recover_when_it_returns() {
    let hub = HubProcess::init();
    let config = hub.service_config("echo");
    let echo = Peer::echo().await;
    let mut dev_config = device_config(
        hub.device_cs.parse().unwrap(),
        hub.connector(),
        &[&format!("echo={}", echo.addr)],
    );
    dev_config.max_backoff = Duration::from_millis(500);
    let _device = spawn_device(dev_config);
    let mut fds = FdWatch::default();
    for i in 0..5 {
        let mut process = hub.serve("3s");
        let mut s = retry("a stream through the new hub", || open_stream(&config)).await;
        round_trip(&mut s, format!("cycle {i}").as_bytes()).await;
        fds.after_cycle();
        fault::signal(&process, "KILL");
        let _ = process.wait().await;
        ends(&mut s, "the service side").await;
        assert!(
            eventually(NOTICE, || echo.open.load(Ordering::SeqCst) == 0).await,
            "the device proxy kept the target connection of a stream whose hub died"
        );
    }
    fds.assert_no_growth().await;
}

#[tokio::test]
async fn hub_cuts_a_control_session_that_falls_silent() {
    use device_streams_protocol::sas;
    use rumqttc::mqttbytes::v4::{Connect, Packet};
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let host = sys.hostname();
    let mut io = e2e::raw::open(&sys.connector(), &host).await;
    let token = sas::sign_for(
        &sas::device_resource(&host, "dev1"),
        &dev.key,
        Duration::from_secs(60),
        None,
    )
    .unwrap();
    let mut connect = Connect::new("dev1");
    connect.keep_alive = 1; // the hub allows 1.5 keep-alive periods of silence
    connect.set_login(
        device_streams_protocol::wire::mqtt_username(&host, "dev1"),
        token.expose(),
    );
    io.write(Packet::Connect(connect)).await.unwrap();
    assert!(matches!(io.read().await, Ok(Some(Packet::ConnAck(_)))));
    assert!(sys.hub.is_connected("dev1"));
    // The device now says nothing, and keeps its connection open.
    assert!(
        eventually(Duration::from_secs(4), || !sys.hub.is_connected("dev1")).await,
        "the hub kept a silent device's session past its keep-alive"
    );
    drop(io);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_proxy_detects_a_hub_that_stops_answering() {
    let (sys, fwd) = System::start_behind_forwarder().await;
    let mut dev = sys.add_device("dev1");
    dev.host = format!("localhost:{}", fwd.addr.port()).parse().unwrap();
    let mut config = device_config(dev, sys.connector(), &["ssh=127.0.0.1:22"]);
    config.keep_alive = Duration::from_secs(1);
    config.max_backoff = Duration::from_millis(500);
    // Only the control link: the forwarder counts its connections.
    config.standby = 0;
    let _device = spawn_device(config);
    sys.wait_connected("dev1").await;
    assert_eq!(fwd.accepted.load(Ordering::SeqCst), 1);
    fwd.freeze();
    // An unanswered ping (1 s keep-alive) ends the session; the proxy dials again.
    assert!(
        fwd.wait_accepted(2, Duration::from_secs(6)).await,
        "the device proxy did not notice its control link went silent"
    );
    sys.wait_connected("dev1").await;
}

/// A stream to dev1's `echo` whose service side is to reach the hub through a forwarder:
/// the forwarder, the service config, the rewritten stream URL and the service's token.
async fn stream_via_forwarder(
    sys: &System,
) -> (
    Forwarder,
    e2e::ServiceConfig,
    String,
    device_streams_protocol::Secret,
) {
    let fwd = Forwarder::start(sys.addr).await;
    let config = sys.service_config("dev1", "echo");
    let granted = e2e::request_stream(&config).await.unwrap();
    let url = granted.url.replace(
        &format!(":{}/", sys.addr.port()),
        &format!(":{}/", fwd.addr.port()),
    );
    (fwd, config, url, granted.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_cuts_a_stream_whose_peer_stops_answering_pings() {
    let sys = System::start_with(Limits {
        stream_ping_interval: Duration::from_millis(200),
        ..quick_limits()
    })
    .await;
    let echo = Peer::echo().await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("echo={}", echo.addr)])
        .await;
    // The service side reaches the streaming endpoint through a forwarder we can silence.
    let (fwd, config, url, token) = stream_via_forwarder(&sys).await;
    let ws = device_streams::websocket::connect(&config.connector, &url, Some(&token), None)
        .await
        .unwrap();
    let mut s = device_streams_protocol::ws::WsStream::new(ws);
    round_trip(&mut s, b"alive").await;
    // Idle but alive (reading, so answering pings): the stream outlives several intervals.
    let mut buf = [0u8; 16];
    let idle = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
    assert!(idle.is_err(), "nothing should arrive on an idle stream");
    round_trip(&mut s, b"still alive").await;
    fwd.freeze();
    assert!(
        eventually(Duration::from_secs(3), || sys.hub.open_streams() == 0
            && echo.open.load(Ordering::SeqCst) == 0)
        .await,
        "the hub kept a stream whose service side went silent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_notices_its_stream_link_to_the_hub_went_silent() {
    let (sys, _echo, _device) = fault::echo_system(Limits {
        stream_ping_interval: Duration::from_millis(200),
        ..quick_limits()
    })
    .await;
    let (fwd, config, url, token) = stream_via_forwarder(&sys).await;
    // What the proxies use: the hub announces its ping interval in the 101 reply.
    let mut s = device_streams::websocket::connect_stream(&config.connector, &url, &token)
        .await
        .unwrap();
    round_trip(&mut s, b"alive").await;
    let mut buf = [0u8; 16];
    let idle = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
    assert!(
        idle.is_err(),
        "an idle stream with a live hub must stay open"
    );
    fwd.freeze();
    let r = tokio::time::timeout(NOTICE, s.read(&mut buf))
        .await
        .expect("the proxy side noticed the silence");
    let e = r.expect_err("a silent link is an error, not an end of file");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
}

/// Reads at 100 KiB/s for 3 s (10 KiB every 10 ms); returns the bytes read.
async fn read_slowly(client: &mut TcpStream) -> usize {
    let mut read = 0usize;
    let mut buf = vec![0u8; 10 * 1024];
    let start = tokio::time::Instant::now();
    for tick in 1..=300u32 {
        read += client.read(&mut buf).await.unwrap();
        tokio::time::sleep_until(start + Duration::from_millis(10) * tick).await;
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_backpressured_end_to_end() {
    let sys = System::start_with(quick_limits()).await;
    let written = Arc::new(AtomicUsize::new(0));
    let hose = Peer::firehose(written.clone()).await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("hose={}", hose.addr)])
        .await;
    let (addr, _service) = sys.start_service("dev1", "hose").await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let before = fault::rss_kib(std::process::id());
    let read = read_slowly(&mut client).await;
    let in_flight = written.load(Ordering::Relaxed).saturating_sub(read);
    let grown = fault::rss_kib(std::process::id()).saturating_sub(before);
    // Hub and both proxies run in this process; every hop holds at most a socket buffer
    // and a capped WebSocket write buffer, so what is in flight stays a few MiB.
    assert!(
        in_flight < 48 << 20,
        "{in_flight} bytes written but not read: something buffers without bound"
    );
    assert!(
        grown < 64 << 10,
        "memory grew by {grown} KiB while the reader was slow"
    );
    assert!(read >= 100 << 10, "the slow reader got only {read} bytes");
}

/// The same with every party a real process: the hub, both proxies (each its own
/// allocator and buffers), a firehose behind the device and a client reading 100 KiB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_keeps_every_process_s_memory_bounded() {
    let hub = HubProcess::init();
    let hub_child = hub.serve("1s");
    let written = Arc::new(AtomicUsize::new(0));
    let hose = Peer::firehose(written.clone()).await;
    let ca = hub.dir.join("ca.pem").display().to_string();
    let map = format!("hose={}", hose.addr);
    let device = fault::spawn(
        &bin("device-local-proxy"),
        &["--ca-file", &ca, "--map", &map],
        &[("DEVICE_CONNECTION_STRING", hub.device_cs.clone())],
    );
    let listen = format!("127.0.0.1:{}", fault::free_port());
    let args = [
        "--ca-file",
        &ca,
        "--device-id",
        "dev1",
        "--stream-name",
        "hose",
    ];
    let service = fault::spawn(
        &bin("service-local-proxy"),
        &[&args[..], &["--listen", &listen]].concat(),
        &[("SERVICE_CONNECTION_STRING", hub.service_cs.clone())],
    );
    // Until the device is connected the service proxy closes each connection at once.
    let mut client = retry("a stream through three processes", || async {
        let mut tcp = TcpStream::connect(&listen).await?;
        let mut first = [0u8; 1];
        tcp.read_exact(&mut first).await?;
        Ok::<_, std::io::Error>(tcp)
    })
    .await;

    let pids = [
        ("hub", hub_child.id().unwrap()),
        ("device proxy", device.id().unwrap()),
        ("service proxy", service.id().unwrap()),
    ];
    let before = pids.map(|(_, pid)| fault::rss_kib(pid));
    let read = read_slowly(&mut client).await;
    let in_flight = written.load(Ordering::Relaxed).saturating_sub(read);
    assert!(
        in_flight < 48 << 20,
        "{in_flight} bytes written but not read: something buffers without bound"
    );
    for (i, (name, pid)) in pids.into_iter().enumerate() {
        let grown = fault::rss_kib(pid).saturating_sub(before[i]);
        assert!(
            grown < 16 << 10,
            "the {name}'s memory grew by {grown} KiB while the reader was slow"
        );
    }
    assert!(read >= 100 << 10, "the slow reader got only {read} bytes");
}
