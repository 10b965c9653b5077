//! What the three `main`s share: exit codes, one-line errors, the runtime, signals.

use std::{future::Future, process::ExitCode};

use tokio_util::sync::CancellationToken;

/// Exit code for bad arguments or configuration, as clap uses.
pub const USAGE: u8 = 2;

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
    let result = runtime.block_on(async { run(config, crate::shutdown::on_signal()).await });
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
