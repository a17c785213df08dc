//! incus-push: replicate instances and their snapshots to a standby server, incrementally.

mod push;

use std::process::ExitCode;

use clap::Parser;
use incus_core::api::migration::Mode;
use incus_core::cli::{self, OutputArgs};
use incus_core::duration::ExpiryDuration;
use incus_core::policy::Rules;
use incus_core::replication::{ArchiveOptions, Options, Placement, PushChoices};
use incus_core::select::TargetArgs;

const EXAMPLES: &str = "Examples:\n  incus-push --to standby web              # first time a full copy, then incremental\n  incus-push --to standby --all --jobs 4\n  incus-snap --all | incus-push --to standby\n  incus-push --to standby --all --dry-run\n  incus-push --to standby web --replace    # the source was re-created: keep the old replica aside\n  incus-push --to standby --all --archive-keep-daily 30 --archive-keep-monthly 12\n  incus-push --to standby-cluster --all --target-group dr   # new replicas on a member of group dr";

/// Replicate instances and their snapshots to a standby server, incrementally.
///
/// Afterwards the standby holds, for each instance, a stopped replica with the same name and
/// every snapshot the source has, restored to the newest snapshot, with boot.autostart=false
/// and no snapshot schedule. Reads records from stdin (`incus-snap --all | incus-push --to
/// standby`), forwards them, and adds one `push` record per instance.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// The standby remote (as in `incus remote list`)
    #[arg(long, value_name = "REMOTE")]
    pub to: String,
    /// Project on the standby (default: the source instance's project)
    #[arg(long, value_name = "PROJECT")]
    pub target_project: Option<String>,
    /// Storage pool for the root disk of new replicas (default: the standby's profile decides)
    #[arg(long, value_name = "POOL")]
    pub storage: Option<String>,
    /// Clustered standby: put new replicas on this member (default: the member with the
    /// source's own member name, else the cluster's choice). A replica is always refreshed on
    /// the member that holds it
    #[arg(long, value_name = "MEMBER", conflicts_with = "target_group")]
    pub target: Option<String>,
    /// Clustered standby: put new replicas on a member of this cluster group
    #[arg(long, value_name = "GROUP")]
    pub target_group: Option<String>,
    /// Who connects to whom: pull (the standby connects to the source), push (the source
    /// connects to the standby) or relay (this process relays; the servers need not see each
    /// other)
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    pub mode: Mode,
    /// Keep the replica's live-synced state instead of restoring it to the newest snapshot
    #[arg(long)]
    pub live: bool,
    /// Copy profiles the standby lacks before transferring (as `incus profile copy`)
    #[arg(long)]
    pub sync_profiles: bool,
    /// Take over an existing instance on the standby that incus-push did not create (refused
    /// when it holds snapshots the source does not have at all: see --replace)
    #[arg(long)]
    pub adopt: bool,
    /// When the replica cannot be refreshed without losing history (the source was
    /// re-created, shares no snapshot with it, or has none), or is not ours: rename it to
    /// NAME-replaced-DATE (never delete it) and copy the source anew
    #[arg(long)]
    pub replace: bool,
    /// Standby history: before a refresh drops a replica snapshot (the primary pruned it),
    /// keep it as an archive point if the standby's policy keeps it (restic's rules, as
    /// incus-prune; points = the replica's snapshots plus its archive points)
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_last: Option<u32>,
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_hourly: Option<u32>,
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_daily: Option<u32>,
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_weekly: Option<u32>,
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_monthly: Option<u32>,
    #[arg(long, value_name = "N", help_heading = "Standby history")]
    pub archive_keep_yearly: Option<u32>,
    /// Keep every point within DURATION of the newest one
    #[arg(long, value_name = "DURATION", help_heading = "Standby history")]
    pub archive_keep_within: Option<String>,
    /// The standby project of the archive points
    #[arg(long, value_name = "PROJECT", default_value = incus_core::replication::ARCHIVE_PROJECT, help_heading = "Standby history")]
    pub archive_project: String,
    /// Accept archive points on a dir pool, where each is a full copy of the instance
    #[arg(long, help_heading = "Standby history")]
    pub archive_full_copies: bool,
    /// Show what would be sent; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How many instances to replicate at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl Args {
    /// The standby's retention, if any --archive-keep-* rule is given.
    fn archive(&self) -> anyhow::Result<Option<ArchiveOptions>> {
        let rules = Rules {
            last: self.archive_keep_last,
            hourly: self.archive_keep_hourly,
            daily: self.archive_keep_daily,
            weekly: self.archive_keep_weekly,
            monthly: self.archive_keep_monthly,
            yearly: self.archive_keep_yearly,
            within_cutoff: None,
        };
        let within = match &self.archive_keep_within {
            None => None,
            Some(text) => Some(
                ExpiryDuration::parse(text)
                    .map_err(|e| cli::usage(format!("--archive-keep-within: {e}")))?,
            ),
        };
        if rules.is_empty() && within.is_none() {
            return Ok(None);
        }
        Ok(Some(ArchiveOptions {
            project: self.archive_project.clone(),
            rules,
            within,
            allow_full_copies: self.archive_full_copies,
            only_if_present: false,
        }))
    }

    /// What the engine needs of the flags.
    pub fn options(&self) -> anyhow::Result<Options> {
        let mut options = Options::push(
            &self.to,
            PushChoices {
                storage: self.storage.clone(),
                live: self.live,
                sync_profiles: self.sync_profiles,
                adopt: self.adopt,
                replace: self.replace,
                archive: self.archive()?,
            },
        );
        options.target_project = self.target_project.clone();
        options.placement = match (&self.target, &self.target_group) {
            (Some(member), _) => Placement::Member(member.clone()),
            (None, Some(group)) => Placement::Group(group.clone()),
            (None, None) => Placement::Auto,
        };
        options.mode = self.mode;
        options.dry_run = self.dry_run;
        Ok(options)
    }
}

fn main() -> ExitCode {
    let args = match cli::parse::<Args>("incus-push") {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::run("incus-push", args.output.format, |output| {
        push::run(&args, output)
    })
}
