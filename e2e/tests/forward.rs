//! `service-local-proxy --forward`: one process, several local ports, each a tunnel to
//! its own device and stream.

use e2e::System;
use service_local_proxy::forward::{self, Forward};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// A target that greets with `banner`, then echoes.
async fn banner_echo(banner: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                tcp.write_all(banner.as_bytes()).await?;
                let (mut r, mut w) = tcp.split();
                tokio::io::copy(&mut r, &mut w).await
            });
        }
    });
    addr
}

async fn exchange(addr: std::net::SocketAddr, banner_len: usize, msg: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(msg).await.unwrap();
    let mut got = vec![0u8; banner_len + msg.len()];
    tcp.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forward_reaches_its_own_device_and_stream() {
    let sys = System::start().await;
    let ssh1 = banner_echo("dev1-ssh:").await;
    let ssh2 = banner_echo("dev2-ssh:").await;
    let rdp2 = banner_echo("dev2-rdp:").await;
    let d1 = sys.add_device("dev1");
    let d2 = sys.add_device("dev2");
    let _dev1 = sys.start_device(d1, &[&format!("ssh={ssh1}")]).await;
    let _dev2 = sys
        .start_device(d2, &[&format!("ssh={ssh2}"), &format!("rdp={rdp2}")])
        .await;

    let forwards: Vec<Forward> = ["0=dev1:ssh", "0=dev2:ssh", "127.0.0.1:0=dev2:rdp"]
        .iter()
        .map(|f| f.parse().unwrap())
        .collect();
    let hub = std::sync::Arc::new(sys.service_config("unused", "ssh").proxy());
    let bound = forward::bind(&forwards).await.unwrap();
    let addrs: Vec<_> = bound.iter().map(|(l, _)| l.local_addr().unwrap()).collect();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(forward::serve(bound, hub, shutdown.clone()));

    for (addr, banner) in addrs.iter().zip(["dev1-ssh:", "dev2-ssh:", "dev2-rdp:"]) {
        let got = exchange(*addr, banner.len(), b"ping").await;
        assert_eq!(got, format!("{banner}ping").into_bytes());
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_taken_port_fails_the_start_naming_the_device() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let forwards: Vec<Forward> = vec![format!("{port}=dev9:ssh").parse().unwrap()];
    let e = forward::bind(&forwards).await.expect_err("bind must fail");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("dev9") && msg.contains(&port.to_string()),
        "{msg}"
    );
}
