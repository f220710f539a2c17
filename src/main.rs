//! The `deployer` binary: parse → run → classify the error → exit code. Nothing else.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = deployer::cli::Cli::parse();
    deployer::cli::run(cli).into()
}
