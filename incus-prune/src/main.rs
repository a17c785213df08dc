//! incus-prune: delete old snapshots by a retention policy, never the one a replica needs.

mod prune;

use std::process::ExitCode;

use clap::Parser;
use incus_core::cli::{self, OutputArgs};
use incus_core::select::TargetArgs;

const EXAMPLES: &str = "Examples:\n  incus-prune --all --keep-daily 7 --keep-weekly 4\n  incus-prune --all --replica standby --keep-hourly 24 --dry-run --explain\n  incus-snap --all | incus-push --to standby | incus-prune --keep-daily 7";

/// Delete old snapshots of Incus instances by a retention policy (restic's `forget` rules).
///
/// Only snapshots whose names match --match (default `auto-*`, the names incus-snap makes)
/// are candidates; the others are never touched. A snapshot is kept if any --keep-* rule
/// keeps it; at least one rule is required. The newest snapshot an instance shares with its
/// replica (--replica, or the `push` records on stdin) is always kept, so that the next
/// incus-push stays incremental. Reads records from stdin (`incus-snap --all | incus-push
/// --to standby | incus-prune --keep-daily 7`), forwards them, and adds one `pruned` record
/// per deleted snapshot.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within DURATION of the newest one (Incus syntax: 30M 2H 1d
    /// 2w 1m 1y)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Only snapshots whose names match this glob are candidates
    #[arg(long = "match", value_name = "GLOB", default_value_t = default_match())]
    pub matching: String,
    /// The remote holding each instance's replica (same instance name); its newest snapshot
    /// in common is kept. `push` records on stdin name replicas too
    #[arg(long, value_name = "REMOTE")]
    pub replica: Option<String>,
    /// Project of the replica on --replica (default: the instance's project)
    #[arg(long, value_name = "PROJECT", requires = "replica")]
    pub replica_project: Option<String>,
    /// Show what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also write one `kept` record per kept snapshot, with the rules that keep it
    #[arg(long)]
    pub explain: bool,
    /// How many instances to prune at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn default_match() -> String {
    format!("{}*", incus_core::pattern::MANAGED_PREFIX)
}

fn main() -> ExitCode {
    let args = match cli::parse::<Args>("incus-prune") {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::run("incus-prune", args.output.format, |output| {
        prune::run(&args, output)
    })
}
