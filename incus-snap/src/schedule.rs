//! `incus-snap schedule`: Incus's own snapshot schedule, set or removed on many instances.

use std::collections::BTreeMap;

use anyhow::Result;
use incus_core::api::instances;
use incus_core::cli::usage;
use incus_core::cron::validate_schedule;
use incus_core::duration::ExpiryDuration;
use incus_core::pattern::SnapshotPattern;
use incus_core::record::{Output, Record, ScheduleRecord};
use incus_core::select::{TargetArgs, gather};

const SCHEDULE: &str = "snapshots.schedule";
const PATTERN: &str = "snapshots.pattern";
const EXPIRY: &str = "snapshots.expiry";
const STOPPED: &str = "snapshots.schedule.stopped";

/// Options of `incus-snap schedule`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["cron", "off"])), after_help = "Examples:\n  incus-snap schedule web --cron '50 20 * * *' --expiry 1d\n  incus-snap schedule --all --cron @daily --include-stopped\n  incus-snap schedule web --off")]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// When Incus takes snapshots: 5 cron fields ("50 20 * * *") or @hourly, @daily, …
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// snapshots.pattern for the scheduled snapshots (left as it is when not given)
    #[arg(long, value_name = "PATTERN", conflicts_with = "off")]
    pub pattern: Option<String>,
    /// snapshots.expiry for the scheduled snapshots (left as it is when not given)
    #[arg(long, value_name = "DURATION", conflicts_with = "off")]
    pub expiry: Option<String>,
    /// Also snapshot stopped instances (snapshots.schedule.stopped=true)
    #[arg(long, conflicts_with = "off")]
    pub include_stopped: bool,
    /// Remove the schedule and its pattern, expiry and stopped keys
    #[arg(long)]
    pub off: bool,
}

impl ScheduleArgs {
    /// The config changes, checked before any instance is touched (`""` deletes a key).
    fn changes(&self) -> Result<BTreeMap<String, String>> {
        let mut changes = BTreeMap::new();
        if self.off {
            for key in [SCHEDULE, PATTERN, EXPIRY, STOPPED] {
                changes.insert(key.to_string(), String::new());
            }
            return Ok(changes);
        }
        let cron = self.cron.as_deref().unwrap_or_default().trim();
        // Incus reads an empty snapshots.schedule as "no schedule": an empty --cron (an unset
        // shell variable) would quietly remove the schedule and leave its pattern and expiry.
        if cron.is_empty() {
            return Err(usage(
                "--cron is empty; give 5 cron fields (\"50 20 * * *\") or @hourly, @daily, …, or use --off to remove the schedule",
            ));
        }
        validate_schedule(cron).map_err(|e| usage(e.to_string()))?;
        changes.insert(SCHEDULE.into(), cron.to_string());
        if let Some(pattern) = &self.pattern {
            SnapshotPattern::parse(pattern).map_err(|e| usage(e.to_string()))?;
            changes.insert(PATTERN.into(), pattern.clone());
        }
        if let Some(expiry) = &self.expiry {
            let parsed = ExpiryDuration::parse(expiry).map_err(|e| usage(e.to_string()))?;
            if parsed.is_zero() {
                return Err(usage(format!(
                    "--expiry \"{expiry}\" is zero; leave it out for snapshots that do not expire"
                )));
            }
            changes.insert(EXPIRY.into(), expiry.clone());
        }
        changes.insert(
            STOPPED.into(),
            if self.include_stopped {
                "true".into()
            } else {
                String::new()
            },
        );
        Ok(changes)
    }
}

/// Validates everything, then changes the chosen instances.
pub fn run(args: &ScheduleArgs, output: &Output) -> Result<()> {
    let changes = args.changes()?;
    let selection = gather(&args.targets, output)?;
    incus_core::parallel::map(
        &selection.instances,
        4,
        |selected| match instances::patch_config(
            &selected.client,
            &selected.of.instance,
            &changes,
            None,
        ) {
            Ok(()) => {
                let mut config = selected.instance.config.clone();
                for (key, value) in &changes {
                    if value.is_empty() {
                        config.remove(key);
                    } else {
                        config.insert(key.clone(), value.clone());
                    }
                }
                output.emit(&Record::Schedule(ScheduleRecord {
                    of: selected.of.clone(),
                    schedule: config.get(SCHEDULE).cloned(),
                    pattern: config.get(PATTERN).cloned(),
                    expiry: config.get(EXPIRY).cloned(),
                    stopped: config.get(STOPPED).is_some_and(|v| v == "true"),
                }))
            }
            Err(e) => output.error(Some(&selected.of), &e.to_string()),
        },
    );
    Ok(())
}
