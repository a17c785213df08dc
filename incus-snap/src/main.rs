//! incus-snap: take snapshots, and configure Incus's own snapshot schedule.

mod schedule;
mod snap;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use incus_core::cli::{self, OutputArgs};

const EXAMPLES: &str = "Examples:\n  incus-snap web db                        # one snapshot each (auto-YYYYMMDD-HHMMSS)\n  incus-snap --all --expiry 2w             # every instance of the default remote\n  incus-snap standby:                      # every instance of a remote\n  incus-snap schedule --all --cron @daily --expiry 1w\n  incus-snap --all | incus-push --to standby | incus-prune --keep-daily 7";

/// Take snapshots of instances, or configure Incus's own snapshot schedule.
///
/// Reads records from stdin when it is not a terminal (every instance they name is
/// snapshotted), forwards them, and adds one `snapshot` record per snapshot taken.
#[derive(Debug, Parser)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub snap: snap::SnapArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set (or with --off remove) snapshots.schedule, .pattern, .expiry and .schedule.stopped
    Schedule(schedule::ScheduleArgs),
}

fn main() -> ExitCode {
    let args = match cli::parse::<Args>("incus-snap") {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::run("incus-snap", args.output.format, |output| {
        match &args.command {
            Some(Command::Schedule(schedule)) => schedule::run(schedule, output),
            None => snap::run(&args.snap, output),
        }
    })
}
