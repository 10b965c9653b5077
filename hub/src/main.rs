//! `stream-hub`: command line. Everything but argument parsing lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use device_streams_common::{cli, logging};
use stream_hub::{
    cli::{Cli, Command},
    init::DataDir,
};

fn main() -> ExitCode {
    let cli: Cli = cli::parse("stream-hub");
    // async-nats says "connected" at info on every connection, which the CLI makes per command.
    logging::init(cli.log_format, "info,async_nats=warn");
    let dir = DataDir::new(&cli.data_dir);
    match cli.command {
        Command::Serve(args) => cli::main("stream-hub", Ok(args), |args, shutdown| async move {
            stream_hub::cli::serve(&dir, *args, shutdown).await
        }),
        command => match stream_hub::commands::run(&dir, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stream-hub: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
