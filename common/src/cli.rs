//! What the three `main`s share: parsing (config file, completions, man page), exit codes,
//! one-line errors, the runtime, signals, and telling systemd how the service is doing.

use std::{
    ffi::OsString,
    future::Future,
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
};

use anyhow::Context;
use clap::{parser::ValueSource, Arg, ArgMatches, Command, Parser};
use clap_complete::Shell;
use device_streams_protocol::Secret;

use crate::credentials::Source;

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
    parse_with_matches(name).0
}

/// [`parse`], also returning clap's matches: they know where each value came from (flag,
/// variable or config file), which the parsed struct forgets.
pub fn parse_with_matches<A: Parser>(name: &str) -> (A, ArgMatches) {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = with_generators(A::command());
    // Before clap parses: a proxy's required flags must not be needed to print its man page.
    if let Some(code) = generate_from_args(&mut cmd, &args) {
        std::process::exit(code);
    }
    let mut cmd = match crate::config_file::apply(cmd, &args) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(i32::from(USAGE));
        }
    };
    let matches = cmd.clone().get_matches_from(args);
    // After flags (`NAME --config F man`) a generator is only seen here; the program must
    // not run with it ignored.
    if let Some((sub, sub_matches)) = matches.subcommand() {
        let shell = sub_matches
            .try_get_one::<Shell>(SHELL)
            .ok()
            .flatten()
            .copied();
        if let Some(code) = generate(&mut cmd, sub, shell) {
            std::process::exit(code);
        }
    }
    match A::from_arg_matches(&matches) {
        Ok(parsed) => (parsed, matches),
        Err(e) => e.exit(),
    }
}

/// Parses the command line and `--config FILE` again, for a reload (SIGHUP): the file may
/// have changed since the start; the command line and environment have not. Errors are
/// returned, never exit the running process.
pub fn reparse<A: Parser>() -> anyhow::Result<A> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cmd = crate::config_file::apply(with_generators(A::command()), &args)?;
    let matches = cmd.try_get_matches_from(args)?;
    Ok(A::from_arg_matches(&matches)?)
}

const MAN: &str = "man";
const COMPLETIONS: &str = "completions";
const SHELL: &str = "shell";

/// `cmd` with `man` and `completions SHELL` as sub-commands, so `--help`, the man page and
/// the completions show them like any other.
fn with_generators(cmd: Command) -> Command {
    let had_subcommands = cmd.has_subcommands();
    let cmd = cmd
        .subcommand(Command::new(MAN).about("Print this program's man page (roff) on stdout"))
        .subcommand(
            Command::new(COMPLETIONS)
                .about("Print shell completions for this program on stdout")
                .arg(
                    Arg::new(SHELL)
                        .required(true)
                        .value_parser(clap::value_parser!(Shell)),
                ),
        );
    if had_subcommands {
        return cmd;
    }
    // A proxy's own flags are not needed to print its page, and a `help` sub-command
    // would only repeat `--help`.
    cmd.subcommand_negates_reqs(true)
        .disable_help_subcommand(true)
}

/// Handles `completions SHELL` and `man` as the first arguments; `Some(exit code)` if it did.
fn generate_from_args(cmd: &mut Command, args: &[OsString]) -> Option<i32> {
    let first = args.get(1)?.to_str()?;
    let shell = args.get(2).and_then(|s| s.to_str()?.parse().ok());
    generate(cmd, first, shell)
}

/// Prints the man page or `shell`'s completions if `sub` asks for one; `Some(exit code)` if so.
fn generate(cmd: &mut Command, sub: &str, shell: Option<Shell>) -> Option<i32> {
    let mut out = std::io::stdout();
    match sub {
        COMPLETIONS => {
            let Some(shell) = shell else {
                eprintln!(
                    "usage: {} completions bash|zsh|fish|elvish|powershell",
                    cmd.get_name()
                );
                return Some(i32::from(USAGE));
            };
            let name = cmd.get_name().to_string();
            clap_complete::generate(shell, cmd, name, &mut out);
            Some(0)
        }
        MAN => match clap_mangen::Man::new(cmd.clone()).render(&mut out) {
            Ok(()) => Some(0),
            Err(e) => {
                eprintln!("{}: cannot write the man page: {e}", cmd.get_name());
                Some(1)
            }
        },
        _ => None,
    }
}

/// The ids (field names) of the two arguments every proxy declares for its connection string.
const CONNECTION_STRING: &str = "connection_string";
const CONNECTION_STRING_FILE: &str = "connection_string_file";

/// A proxy's connection string — `--connection-string` (or its variable, or the config
/// file's key), else `--connection-string-file`, else the systemd credential `credential`
/// ([`crate::credentials`]) — parsed. `cmd` and `matches` (from [`parse_with_matches`])
/// name the variables and tell where the value came from, which an error names; it never
/// shows the value.
pub fn connection_string<T>(
    cmd: &Command,
    matches: &ArgMatches,
    value: Option<Secret>,
    file: Option<&Path>,
    credential: &str,
) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let env = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .and_then(|e| e.to_str())
    };
    let names = crate::credentials::Names {
        env: env(CONNECTION_STRING),
        file_env: env(CONNECTION_STRING_FILE),
        credential,
    };
    let value = value.map(|v| (v, value_source(matches, env(CONNECTION_STRING))));
    let (secret, source) = crate::credentials::connection_string(value, file, names)?;
    secret
        .expose()
        .parse()
        .with_context(|| format!("the connection string from {source} is not valid"))
}

/// Where clap found `--connection-string`'s value, `env` being its variable.
fn value_source(matches: &ArgMatches, env: Option<&str>) -> Source {
    let flag = || Source::Flag(format!("--{}", CONNECTION_STRING.replace('_', "-")));
    match matches.value_source(CONNECTION_STRING) {
        Some(ValueSource::EnvVariable) => env.map_or_else(flag, |e| Source::Env(e.into())),
        // The config file's values are clap's defaults (see `config_file`).
        Some(ValueSource::DefaultValue) => {
            match matches.try_get_one::<PathBuf>(crate::config_file::ARG) {
                Ok(Some(path)) => Source::ConfigFile(path.clone()),
                _ => flag(),
            }
        }
        _ => flag(),
    }
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
