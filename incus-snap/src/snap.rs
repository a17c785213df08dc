//! Taking snapshots: the name from the pattern, never overwriting, optional expiry.

use anyhow::Result;
use chrono::{DateTime, Utc};
use incus_core::api::snapshots;
use incus_core::cli::usage;
use incus_core::duration::ExpiryDuration;
use incus_core::pattern::{DEFAULT_PATTERN, SnapshotPattern};
use incus_core::record::{Output, Record, SnapshotRecord};
use incus_core::select::{Selected, TargetArgs, gather};

/// Why one instance's snapshot was not taken: the line of its `error` record.
#[derive(Debug, thiserror::Error)]
enum SnapError {
    /// Listing the existing snapshots or reading the new one failed.
    #[error(transparent)]
    Api(#[from] incus_core::Error),
    /// Every name the pattern's counter can make is taken.
    #[error("no free snapshot name for the pattern")]
    NoFreeName,
    /// A snapshot of that name exists already.
    #[error(
        "snapshot \"{name}\" already exists; nothing was overwritten (put %d in --pattern to number snapshots)"
    )]
    Exists { name: String },
    /// A stateful snapshot failed for want of CRIU or migration.stateful (Incus's message).
    #[error(
        "{message} (stateful snapshots need CRIU on the server and migration.stateful=true on the instance)"
    )]
    Stateful { message: String },
    /// Incus refused the snapshot (its message).
    #[error("snapshot \"{name}\": {message}")]
    Create { name: String, message: String },
}

/// Options of `incus-snap [TARGET…]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Snapshot name, in the syntax of Incus's snapshots.pattern: text,
    /// {{ creation_date|date:'GO_LAYOUT' }} (UTC) and at most one %d counter
    #[arg(long, value_name = "PATTERN", default_value = DEFAULT_PATTERN)]
    pub pattern: String,
    /// Expiry in Incus's syntax (30M 2H 1d 2w 1m 1y); default: none
    #[arg(long, value_name = "DURATION")]
    pub expiry: Option<String>,
    /// Include the running state (needs CRIU and migration.stateful=true)
    #[arg(long)]
    pub stateful: bool,
    /// How many instances to snapshot at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,
}

/// Checks every value, then snapshots every chosen instance.
pub fn run(args: &SnapArgs, output: &Output) -> Result<()> {
    let pattern = SnapshotPattern::parse(&args.pattern).map_err(|e| usage(e.to_string()))?;
    let expiry = args
        .expiry
        .as_deref()
        .map(|text| {
            let duration = ExpiryDuration::parse(text).map_err(|e| usage(e.to_string()))?;
            if duration.is_zero() {
                return Err(usage(format!(
                    "--expiry \"{text}\" is zero: the snapshot would expire at once; leave --expiry out for no expiry"
                )));
            }
            if duration.add_to(Utc::now()).is_none() {
                return Err(usage(format!("--expiry \"{text}\" is too far in the future")));
            }
            Ok(duration)
        })
        .transpose()?;
    if args.jobs == 0 {
        return Err(usage("--jobs must be at least 1"));
    }
    let selection = gather(&args.targets, output)?;
    incus_core::parallel::map(&selection.instances, args.jobs, |selected| {
        match snapshot(selected, &pattern, expiry.as_ref(), args.stateful) {
            Ok(record) => output.emit(&Record::Snapshot(record)),
            Err(e) => output.error(Some(&selected.of), &e.to_string()),
        }
    });
    Ok(())
}

fn snapshot(
    selected: &Selected,
    pattern: &SnapshotPattern,
    expiry: Option<&ExpiryDuration>,
    stateful: bool,
) -> Result<SnapshotRecord, SnapError> {
    let client = &selected.client;
    let instance = &selected.of.instance;
    let now = Utc::now();
    let name = if pattern.has_counter() {
        let existing = snapshots::list(client, instance)?;
        let names: Vec<&str> = existing.iter().map(|s| s.name.as_str()).collect();
        pattern
            .next_name(now, &names)
            .ok_or(SnapError::NoFreeName)?
    } else {
        pattern.render(now)
    };
    let expires_at: Option<DateTime<Utc>> = expiry.and_then(|d| d.add_to(now));
    if let Err(e) = snapshots::create(client, instance, &name, stateful, expires_at) {
        let message = e.message();
        return Err(if message.contains("UNIQUE constraint") {
            SnapError::Exists { name }
        } else if stateful && (message.contains("CRIU") || message.contains("stateful")) {
            SnapError::Stateful { message }
        } else {
            SnapError::Create { name, message }
        });
    }
    let taken = snapshots::get(client, instance, &name)?;
    Ok(SnapshotRecord {
        of: selected.of.clone(),
        location: selected.instance.member().map(str::to_string),
        name,
        created_at: taken.created_at,
        expires_at: taken.expires_at,
        stateful: taken.stateful,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_before() {
        let api = incus_core::Error::Api {
            remote: "local".into(),
            status: 404,
            message: "Instance not found".into(),
        };
        for (error, line) in [
            (SnapError::from(api), "local: Instance not found"),
            (
                SnapError::NoFreeName,
                "no free snapshot name for the pattern",
            ),
            (
                SnapError::Exists { name: "s1".into() },
                "snapshot \"s1\" already exists; nothing was overwritten (put %d in --pattern to number snapshots)",
            ),
            (
                SnapError::Stateful {
                    message: "Unable to create a stateful snapshot. CRIU isn't installed".into(),
                },
                "Unable to create a stateful snapshot. CRIU isn't installed (stateful snapshots need CRIU on the server and migration.stateful=true on the instance)",
            ),
            (
                SnapError::Create {
                    name: "s1".into(),
                    message: "Failed creating instance snapshot record".into(),
                },
                "snapshot \"s1\": Failed creating instance snapshot record",
            ),
        ] {
            assert_eq!(error.to_string(), line);
        }
    }
}
