//! What the three `main`s share: parsing (config file, completions, man page), exit codes,
//! one-line errors, the runtime, signals, and telling systemd how the service is doing.

use std::{ffi::OsString, future::Future, path::Path, process::ExitCode, str::FromStr};

use anyhow::Context;
use clap::Parser;

use tokio_util::sync::CancellationToken;

/// The `--version` text of a binary whose package uses `build-version.rs`:
/// `0.1.0 (git 1a2b3c4)`. A macro so `env!` reads the calling package's build.
#[macro_export]
macro_rules! version {
    () => {
        concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("GIT_HASH"), ")")
    };
}

/// Exit code for bad arguments or configuration, as clap uses.
pub const USAGE: u8 = 2;

/// Parses the command line after applying `--config FILE` (see [`crate::config_file`]).
/// `NAME completions SHELL` and `NAME man` print shell completions or a man page
/// generated from the same definitions and exit, for packaging.
pub fn parse<A: Parser>(name: &str) -> A {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = A::command();
    if let Some(code) = generate(&mut cmd, &args) {
        std::process::exit(code);
    }
    let cmd = match crate::config_file::apply(cmd, &args) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(i32::from(USAGE));
        }
    };
    let matches = cmd.get_matches_from(args);
    A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Handles the hidden `completions SHELL` and `man` first arguments; `Some(exit code)` if it did.
fn generate(cmd: &mut clap::Command, args: &[OsString]) -> Option<i32> {
    let first = args.get(1)?.to_str()?;
    let mut out = std::io::stdout();
    match first {
        "completions" => {
            let shell = args.get(2).and_then(|s| s.to_str()?.parse().ok());
            let Some(shell) = shell else {
                eprintln!(
                    "usage: {} completions bash|zsh|fish|elvish|powershell",
                    cmd.get_name()
                );
                return Some(i32::from(USAGE));
            };
            let name = cmd.get_name().to_string();
            clap_complete::generate::<clap_complete::Shell, _>(shell, cmd, name, &mut out);
            Some(0)
        }
        "man" => match clap_mangen::Man::new(cmd.clone()).render(&mut out) {
            Ok(()) => Some(0),
            Err(e) => {
                eprintln!("{}: cannot write the man page: {e}", cmd.get_name());
                Some(1)
            }
        },
        _ => None,
    }
}

/// A proxy's connection string — `--connection-string`, else its file, else the systemd
/// credential `credential` ([`crate::credentials`]) — parsed.
pub fn connection_string<T>(
    value: Option<device_streams_protocol::Secret>,
    file: Option<&Path>,
    credential: &str,
) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    crate::credentials::connection_string(value, file, credential)?
        .expose()
        .parse()
        .context("--connection-string")
}

/// Runs a binary: a configuration error exits 2, a runtime error exits 1, each printed as
/// one line `name: cause: detail`. `run` gets a token cancelled by SIGINT/SIGTERM.
pub fn main<C, F>(
    name: &str,
    config: anyhow::Result<C>,
    run: impl FnOnce(C, CancellationToken) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = crate::shutdown::on_signal();
        crate::sd_notify::supervise(&shutdown);
        run(config, shutdown).await
    });
    // A blocking read of stdin (--stdio) would otherwise hold the runtime open.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
