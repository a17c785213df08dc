//! incus-failover: not yet implemented beyond --help and --version.

use std::process::ExitCode;

use clap::Parser;

/// Part of the incus-standby toolkit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("incus-failover: not implemented yet");
    ExitCode::from(2)
}
