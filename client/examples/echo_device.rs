//! Azure's device-streams echo sample, device side: accept every stream request named
//! `TestStream` (or `--stream NAME`) and send back whatever arrives on it.
//!
//! ```sh
//! DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…' \
//!     cargo run -p device-streams --example echo_device -- [--ca-file hub-ca.pem] [--stream NAME]
//! ```
//!
//! It stays connected (reconnecting and renewing its token as needed, through
//! `HTTPS_PROXY` if set) until Ctrl-C.

use std::path::PathBuf;

use anyhow::{bail, Context};
use device_streams::{device::Status, protocol::connection_string::DeviceConnectionString};
use device_streams::{DeviceClient, IncomingStream};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The stream name Azure's echo samples use.
const DEFAULT_STREAM: &str = "TestStream";

struct Args {
    ca_file: Option<PathBuf>,
    stream: String,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        ca_file: None,
        stream: DEFAULT_STREAM.into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ca-file" => parsed.ca_file = Some(value()?.into()),
            "--stream" => parsed.stream = value()?,
            other => bail!("unknown argument '{other}' (expected --ca-file FILE, --stream NAME)"),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let connection: DeviceConnectionString = std::env::var("DEVICE_CONNECTION_STRING")
        .context("set DEVICE_CONNECTION_STRING to the device's connection string")?
        .parse()
        .context("DEVICE_CONNECTION_STRING")?;

    let mut builder = DeviceClient::builder(connection);
    if let Some(ca_file) = &args.ca_file {
        builder = builder.ca_file(ca_file);
    }
    let client = builder.build()?;
    let device = client.device_id().to_string();

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });

    let mut incoming = client.start(shutdown.clone());
    // Say once when the device is reachable, so a script (or a test) knows when to start
    // the service side.
    let mut status = incoming.status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            if *status.borrow() == Status::Connected {
                println!("device {device} connected; waiting for streams");
            }
        }
    });

    while let Some(request) = incoming.next().await {
        if request.name() != args.stream {
            let reason = format!("this device echoes only stream '{}'", args.stream);
            eprintln!("rejected stream '{}': {reason}", request.name());
            request.reject(&reason).await;
            continue;
        }
        tokio::spawn(echo(request));
    }
    incoming.stopped().await;
    Ok(())
}

/// Accepts `request` and writes back everything it reads until the service is done.
async fn echo(request: IncomingStream) {
    let name = request.name().to_string();
    let stream = match request.accept().await {
        Ok(stream) => stream,
        Err(e) => return eprintln!("{e}"),
    };
    println!("stream '{name}' accepted");
    let (mut from_service, mut to_service) = tokio::io::split(stream);
    // `copy` flushes whenever the service pauses, so each line goes back at once.
    match tokio::io::copy(&mut from_service, &mut to_service).await {
        Ok(n) => println!("stream '{name}' ended after echoing {n} bytes"),
        Err(e) => eprintln!("stream '{name}' failed: {e}"),
    }
    let _ = to_service.shutdown().await;
}
