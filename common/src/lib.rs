//! What the three binaries' `main`s share: the runner (exit codes, one-line errors,
//! completions and man page), configuration files, where a connection string comes from,
//! logging, signals and draining, systemd notifications, and the accept loop.
//!
//! Layout:
//! - [`cli`]: parsing (with [`config_file`]) and running a binary: exit codes, one-line errors.
//! - [`config_file`]: `--config FILE`, a TOML file of flag values.
//! - [`credentials`]: a connection string from a flag, a file, or a systemd credential.
//! - [`logging`]: tracing set-up (`RUST_LOG`, text or JSON), with secret-bearing targets capped.
//! - [`shutdown`]: SIGINT/SIGTERM as a `CancellationToken`, and the bounded drain of a tracker.
//! - [`sd_notify`]: telling systemd the service is ready, alive (watchdog) or stopping.
//! - [`accept`]: the accept step every listener shares: errors never end the loop.
#![forbid(unsafe_code)]

pub mod accept;
pub mod cli;
pub mod config_file;
pub mod credentials;
pub mod logging;
pub mod sd_notify;
pub mod shutdown;
