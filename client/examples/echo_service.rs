//! Azure's device-streams echo sample, service side: open a stream named `TestStream` (or
//! `--stream NAME`) to a device, send each line (the arguments, else stdin) and print
//! what comes back.
//!
//! ```sh
//! SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…' \
//!     cargo run -p device-streams --example echo_service -- \
//!     --device DEVICE [--ca-file hub-ca.pem] [--stream NAME] [LINE...]
//! ```
//!
//! `DEVICE_ID` in the environment works instead of `--device`. The exit status says
//! whether every line came back unchanged; an error says why the stream did not open
//! (device offline, rejected and why, unauthorised, limited, timed out).

use std::path::PathBuf;

use anyhow::{bail, ensure, Context};
use device_streams::{protocol::connection_string::ServiceConnectionString, Route, ServiceClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The stream name Azure's echo samples use.
const DEFAULT_STREAM: &str = "TestStream";

struct Args {
    ca_file: Option<PathBuf>,
    device: Option<String>,
    stream: String,
    lines: Vec<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        ca_file: None,
        device: std::env::var("DEVICE_ID").ok(),
        stream: DEFAULT_STREAM.into(),
        lines: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ca-file" => parsed.ca_file = Some(value()?.into()),
            "--device" => parsed.device = Some(value()?),
            "--stream" => parsed.stream = value()?,
            "--" => parsed.lines.extend(args.by_ref()),
            flag if flag.starts_with("--") => bail!("unknown option '{flag}'"),
            _ => parsed.lines.push(arg),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let connection: ServiceConnectionString = std::env::var("SERVICE_CONNECTION_STRING")
        .context("set SERVICE_CONNECTION_STRING to a service policy's connection string")?
        .parse()
        .context("SERVICE_CONNECTION_STRING")?;
    let device = args
        .device
        .context("name the device with --device or DEVICE_ID")?;

    let mut builder = ServiceClient::builder(connection);
    if let Some(ca_file) = &args.ca_file {
        builder = builder.ca_file(ca_file);
    }
    let client = builder.build()?;
    // A typed error: `StreamError::Rejected` carries the device's reason, `Refused` the
    // hub's status (404 offline, 401 unauthorised, 429 limited), `Timeout` the wait.
    let stream = client.open(&Route::new(&device, &args.stream)).await?;
    let (from_device, mut to_device) = tokio::io::split(stream);
    let mut from_device = BufReader::new(from_device);

    let mut lines = args.lines;
    if lines.is_empty() {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = stdin.next_line().await? {
            lines.push(line);
        }
    }
    for line in lines {
        let sent = format!("{line}\n");
        to_device.write_all(sent.as_bytes()).await?;
        // A stream batches writes until a flush: this line must go now.
        to_device.flush().await?;
        let mut echoed = vec![0; sent.len()];
        from_device
            .read_exact(&mut echoed)
            .await
            .context("the stream ended before the echo came back")?;
        let echoed = String::from_utf8_lossy(&echoed);
        print!("{echoed}");
        ensure!(echoed == sent, "the device sent back something else");
    }
    // Ends the stream (or, where the hub agreed to half-close, our side of it).
    to_device.shutdown().await?;
    Ok(())
}
