//! RDP through the tunnel: FreeRDP's client completes the RDP connection sequence with a
//! real xrdp behind a device proxy mapping `rdp` to it, via hub and service proxy.

use std::time::Duration;

use e2e::{
    xrdp::{auth_only, Xrdp},
    System,
};

async fn run(mut cmd: std::process::Command) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("xvfb-run runs"));
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("xfreerdp finished")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfreerdp_connects_to_xrdp_through_the_tunnel() {
    let xrdp = tokio::task::spawn_blocking(Xrdp::start).await.unwrap();
    let sys = System::start().await;
    let dev = sys.add_device("dev1");
    let _device = sys
        .start_device(dev, &[&format!("rdp=127.0.0.1:{}", xrdp.port)])
        .await;
    let (addr, _service) = sys.start_service("dev1", "rdp").await;

    let out = run(auth_only(addr.port())).await;
    assert!(
        out.status.success(),
        "xfreerdp through the tunnel: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );

    // The same client against a device whose rdp target is down fails: the check can fail.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dev2 = sys.add_device("dev2");
    let _device2 = sys
        .start_device(dev2, &[&format!("rdp=127.0.0.1:{closed}")])
        .await;
    let (addr2, _service2) = sys.start_service("dev2", "rdp").await;
    let out = run(auth_only(addr2.port())).await;
    assert!(!out.status.success(), "xfreerdp must fail without a server");
}
