//! incus-failover: show replication state, promote the standby, fence the old primary.

mod failback;
mod pairs;
mod promote;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use incus_core::cli::{self, OutputArgs};

const EXAMPLES: &str = "Examples:\n  incus-failover status --all --standby standby\n  incus-failover check --all --standby standby --max-rpo 2H\n  incus-failover promote web --standby standby\n  incus-failover promote --all --standby standby --emergency\n  incus-failover fence primary: --standby standby\n  incus-failover failback web --standby standby";

/// Show the standby's replication state, promote it when the primary must stop or is gone,
/// fence the old primary, and fail back.
///
/// The instances are the primary's (`[REMOTE:]INSTANCE`, `REMOTE:`, `--all`); their replicas
/// are the instances of the same name on --standby, made by incus-push.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One `status` record per instance (a table on a terminal): newest snapshots, RPO, last
    /// sync, readiness, split brain
    Status(status::StatusArgs),
    /// A monitoring check with Nagios exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)
    Check(status::CheckArgs),
    /// Promote the replicas: fence the primary copy, final snapshot and sync, start on the
    /// standby (planned); or, with --emergency, start from the newest snapshot the replica has
    Promote(promote::PromoteArgs),
    /// Stop the old primary's copies of promoted instances and set their autostart off
    Fence(promote::FenceArgs),
    /// Move promoted instances back to the primary: the old primary copy is kept aside
    /// (renamed), the standby's copy is synced back and started there, and the standby holds
    /// an inert replica again
    Failback(failback::FailbackArgs),
}

fn main() -> ExitCode {
    let args = match cli::parse::<Args>("incus-failover") {
        Ok(args) => args,
        Err(code) => return code,
    };
    match &args.command {
        // Nagios exit codes, not the tools' usual ones.
        Command::Check(check) => status::check(check),
        Command::Status(status) => cli::run("incus-failover", args.output.format, |output| {
            status::run(status, output)
        }),
        Command::Promote(promote) => cli::run("incus-failover", args.output.format, |output| {
            promote::promote(promote, output)
        }),
        Command::Fence(fence) => cli::run("incus-failover", args.output.format, |output| {
            promote::fence(fence, output)
        }),
        Command::Failback(back) => cli::run("incus-failover", args.output.format, |output| {
            failback::failback(back, output)
        }),
    }
}
