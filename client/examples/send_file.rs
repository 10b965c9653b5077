//! Streams a file to a device, with a progress bar: both sides in one program.
//!
//! On the device (its connection string in `DEVICE_CONNECTION_STRING`), save every file
//! sent on stream `file` into a directory:
//!
//! ```sh
//! cargo run -p device-streams --example send_file -- receive [--ca-file hub-ca.pem] DIR
//! ```
//!
//! On the service side (`SERVICE_CONNECTION_STRING`), send one:
//!
//! ```sh
//! cargo run -p device-streams --example send_file -- send [--ca-file hub-ca.pem] DEVICE FILE
//! ```
//!
//! What travels: the file's name (one line), its length (8 bytes, big-endian), its
//! bytes; the device answers `ok` once the file is on its disk. Framing the length rather
//! than relying on end-of-file keeps it working on Azure's hub, where the sender's
//! shutdown closes the whole stream.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use device_streams::protocol::connection_string::{
    DeviceConnectionString, ServiceConnectionString,
};
use device_streams::{DeviceClient, IncomingStream, Route, ServiceClient, Stream};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const STREAM: &str = "file";
/// Longest file name line accepted from the service.
const MAX_NAME: usize = 255;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let ca_file = match args.iter().position(|a| a == "--ca-file") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            Some(PathBuf::from(path))
        }
        Some(_) => bail!("--ca-file needs a value"),
        None => None,
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["send", device, file] => send(ca_file, device, Path::new(file)).await,
        ["receive", dir] => receive(ca_file, PathBuf::from(dir)).await,
        _ => bail!("usage: send_file [--ca-file F] send DEVICE FILE | receive DIR"),
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name}"))
}

async fn send(ca_file: Option<PathBuf>, device: &str, path: &Path) -> anyhow::Result<()> {
    let connection: ServiceConnectionString = env("SERVICE_CONNECTION_STRING")?.parse()?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file needs a UTF-8 name")?;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().await?.len();

    let mut builder = ServiceClient::builder(connection);
    if let Some(ca) = ca_file {
        builder = builder.ca_file(ca);
    }
    let mut stream = builder.build()?.open(&Route::new(device, STREAM)).await?;
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    stream.write_all(&len.to_be_bytes()).await?;

    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    let mut buf = vec![0; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = file.read(&mut buf).await?;
        ensure!(n > 0, "{} shrank while being sent", path.display());
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
        bar.set_position(sent);
    }
    stream.flush().await?;
    bar.finish();

    let mut answer = [0; 2];
    stream
        .read_exact(&mut answer)
        .await
        .context("the device did not confirm the file")?;
    ensure!(&answer == b"ok", "the device could not save the file");
    stream.shutdown().await?;
    println!("{name}: {len} bytes sent to {device}");
    Ok(())
}

async fn receive(ca_file: Option<PathBuf>, dir: PathBuf) -> anyhow::Result<()> {
    let connection: DeviceConnectionString = env("DEVICE_CONNECTION_STRING")?.parse()?;
    let mut builder = DeviceClient::builder(connection);
    if let Some(ca) = ca_file {
        builder = builder.ca_file(ca);
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    let mut incoming = builder.build()?.start(shutdown);
    println!("receiving files into {}", dir.display());
    while let Some(request) = incoming.next().await {
        if request.name() != STREAM {
            request.reject("this device only receives files").await;
            continue;
        }
        let dir = dir.clone();
        tokio::spawn(async move {
            match save(request, &dir).await {
                Ok((name, len)) => println!("{name}: {len} bytes received"),
                Err(e) => eprintln!("receiving a file failed: {e:#}"),
            }
        });
    }
    incoming.stopped().await;
    Ok(())
}

/// Saves one file from an accepted stream; returns its name and length.
async fn save(request: IncomingStream, dir: &Path) -> anyhow::Result<(String, u64)> {
    let mut stream = BufReader::new(request.accept().await?);
    let mut name = String::new();
    (&mut stream)
        .take(MAX_NAME as u64 + 1)
        .read_line(&mut name)
        .await?;
    let name = name.trim_end_matches('\n').to_string();
    // The name comes from the network: only a plain file name inside `dir` is accepted.
    let plain = Path::new(&name).file_name().and_then(|n| n.to_str()) == Some(name.as_str());
    ensure!(plain && !name.is_empty(), "refusing file name {name:?}");
    let len = stream.read_u64().await?;

    let path = dir.join(&name);
    let mut file = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let copied = tokio::io::copy(&mut (&mut stream).take(len), &mut file).await?;
    ensure!(
        copied == len,
        "the stream ended after {copied} of {len} bytes"
    );
    file.sync_all().await?;

    let stream: &mut Stream = stream.get_mut();
    stream.write_all(b"ok").await?;
    stream.flush().await?;
    // The sender ends the stream once it has read the answer; closing first could cut
    // the answer off on a hub without half-close.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut [0; 1])).await;
    let _ = stream.shutdown().await;
    Ok((name, len))
}
