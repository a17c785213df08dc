//! incus-failover: show replication state, promote the standby, fence the old primary, fail
//! back. The sequences live in the library ([`incus_core::failover`]); this binary parses the
//! flags and maps the result to an exit code.

mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use incus_core::api::migration::Mode;
use incus_core::cli::{self, OutputArgs};
use incus_core::failover::{
    self, DrillOptions, FailbackOptions, FenceOptions, PairArgs, PromoteOptions,
};

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
    Promote(PromoteArgs),
    /// Stop the old primary's copies of promoted instances and set their autostart off
    Fence(FenceArgs),
    /// Move promoted instances back to the primary: the old primary copy is kept aside
    /// (renamed), the standby's copy is synced back and started there, and the standby holds
    /// an inert replica again
    Failback(FailbackArgs),
    /// Prove that replicas can start: start a clone of each (NICs removed, volumes cloned),
    /// probe it, delete it; the replica itself is never started
    Drill(DrillArgs),
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  incus-failover drill web --standby standby
  incus-failover drill --all --standby standby --probe 'test -s /data/db' --allow-full-copy")]
pub struct DrillArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// A command run in the clone once it runs (through `sh -c`); a non-zero exit fails the
    /// drill
    #[arg(long, value_name = "CMD")]
    pub probe: Option<String>,
    /// Seconds the start and the probe may take
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    /// On a dir pool, a clone is a full copy of the replica and its volumes: allow it
    #[arg(long)]
    pub allow_full_copy: bool,
    /// Say what would be cloned; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover promote web --standby standby --dry-run\n  incus-failover promote web db --standby standby\n  incus-failover promote --all --standby standby --emergency\n  incus-failover promote web --standby standby --at \"2026-11-24 03:00\""
)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// The primary is gone: start each replica from the newest snapshot it holds. Refused
    /// while the primary answers (a planned promotion then loses nothing)
    #[arg(long)]
    pub emergency: bool,
    /// Print every step that would be taken; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the primary copy before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
    /// Who connects to whom for the final sync (as incus-push --mode)
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    pub mode: Mode,
    /// How many instances to promote at once (started in boot.autostart.priority order)
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Go back in time: start from this point instead of the newest data (a replica snapshot
    /// or an archive point, by name; or a time: the newest point at or before it, RFC 3339
    /// or `YYYY-MM-DD[ HH:MM]` in UTC). No final sync: today's data stays on the fenced
    /// primary copy, untouched
    #[arg(long, value_name = "SNAPSHOT|TIME")]
    pub at: Option<String>,
    /// Take a replica's lease even while another run holds it (a holder on another host that
    /// died; --emergency always does)
    #[arg(long)]
    pub break_lease: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  incus-failover fence primary: --standby standby")]
pub struct FenceArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Print what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover failback web --standby standby --dry-run\n  incus-failover failback --all --standby standby"
)]
pub struct FailbackArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Print every step that would be taken; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the standby copy before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
    /// Who connects to whom for the copies (as incus-push --mode)
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    pub mode: Mode,
    /// Fail back an instance on btrfs to an Incus 6.0 primary even so (refused by default:
    /// its btrfs refresh fails the final sync; Incus 7.0 does it)
    #[arg(long)]
    pub btrfs_anyway: bool,
}

/// A library error as the runner prints it: a usage error exits 2.
fn exit(result: Result<(), failover::Error>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(failover::Error::Usage(message)) => Err(cli::usage(message)),
        Err(e) => Err(e.into()),
    }
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
        Command::Promote(a) => cli::run("incus-failover", args.output.format, |output| {
            let options = PromoteOptions {
                emergency: a.emergency,
                dry_run: a.dry_run,
                stop_timeout: a.stop_timeout,
                mode: a.mode,
                jobs: a.jobs,
                at: a.at.clone(),
                break_lease: a.break_lease,
            };
            exit(failover::promote(&a.pairs, &options, output))
        }),
        Command::Fence(a) => cli::run("incus-failover", args.output.format, |output| {
            let options = FenceOptions {
                dry_run: a.dry_run,
                stop_timeout: a.stop_timeout,
            };
            exit(failover::fence(&a.pairs, &options, output))
        }),
        Command::Failback(a) => cli::run("incus-failover", args.output.format, |output| {
            let options = FailbackOptions {
                dry_run: a.dry_run,
                stop_timeout: a.stop_timeout,
                mode: a.mode,
                btrfs_anyway: a.btrfs_anyway,
            };
            exit(failover::failback(&a.pairs, &options, output))
        }),
        Command::Drill(a) => cli::run("incus-failover", args.output.format, |output| {
            let options = DrillOptions {
                probe: a.probe.clone(),
                timeout: std::time::Duration::from_secs(a.timeout),
                allow_full_copy: a.allow_full_copy,
                dry_run: a.dry_run,
            };
            exit(failover::drill(&a.pairs, &options, output))
        }),
    }
}
