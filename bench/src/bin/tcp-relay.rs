//! `tcp-relay LISTEN TO`: a plain TCP relay, no TLS, no framing: every connection accepted
//! on LISTEN is joined to a new connection to TO with `copy_bidirectional`.
//!
//! The benchmark chains three of these between its client and the target: the same three
//! processes and four loopback hops as a stream (service proxy → hub → device proxy), with
//! none of the work. Whatever the chain reaches is a ceiling for any tunnel shaped like ours
//! on this machine, and shows how much of each figure is the shape and how much our code.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};

/// Buffer per direction: as large as a stream's data message, so neither side of the
/// comparison is held back by a smaller copy.
const BUF: usize = 64 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(to)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: tcp-relay LISTEN_ADDR TO_ADDR");
    };
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    loop {
        let inbound = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("accept on {listen}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let to = to.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(inbound, &to).await {
                eprintln!("relay to {to}: {e:#}");
            }
        });
    }
}

async fn relay(mut inbound: TcpStream, to: &str) -> anyhow::Result<()> {
    let mut outbound = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(to))
        .await
        .with_context(|| format!("connecting to {to} timed out"))?
        .with_context(|| format!("cannot connect to {to}"))?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, BUF, BUF).await?;
    Ok(())
}
