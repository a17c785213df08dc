//! Taking snapshots: the name from the pattern, never overwriting, optional expiry.

use anyhow::Result;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use incus_core::api::instances::{self, InstanceStatus, StateAction};
use incus_core::api::{snapshots, volumes};
use incus_core::cli::usage;
use incus_core::client::Client;
use incus_core::duration::ExpiryDuration;
use incus_core::interrupt;
use incus_core::pattern::{DEFAULT_PATTERN, SnapshotPattern};
use incus_core::record::{Output, Record, SnapshotRecord, VolumeSnapshotRecord};
use incus_core::select::{Selected, SelectedVolume, TargetArgs, gather};

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
    /// An attached volume's snapshot failed: the group was taken back.
    #[error(
        "snapshot \"{name}\" of volume {volume}: {message}; the instance's snapshot \"{name}\" was deleted again so that instance and volumes always show the same moment"
    )]
    Volume {
        name: String,
        volume: String,
        message: String,
    },
    /// `--freeze`: the group took longer than the freeze may last.
    #[error(
        "the snapshots took longer than --freeze-timeout ({seconds} s): the instance was unfrozen at the timeout and the group \"{name}\" deleted again (not crash-consistent); retry, or raise --freeze-timeout"
    )]
    FreezeTimeout { name: String, seconds: u64 },
    /// Freezing or unfreezing failed (Incus's message).
    #[error("{doing}: {message}")]
    Freeze {
        doing: &'static str,
        message: String,
    },
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
    /// Freeze a running container while its snapshot and its volumes' are taken, so that
    /// they are crash-consistent together (it is always unfrozen, at the latest after
    /// --freeze-timeout)
    #[arg(long)]
    pub freeze: bool,
    /// The longest a --freeze may last, in seconds
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        requires = "freeze"
    )]
    pub freeze_timeout: u64,
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
    incus_core::parallel::map(
        &selection.volumes,
        args.jobs,
        |selected| match snapshot_volume(selected, &pattern, expiry.as_ref()) {
            Ok(record) => output.emit(&Record::VolumeSnapshot(record)),
            Err(e) => output.volume_error(
                &selected.of.remote,
                &selected.of.project,
                &selected.volume.to_string(),
                &e.to_string(),
            ),
        },
    );
    incus_core::parallel::map(&selection.instances, args.jobs, |selected| {
        let freeze = args
            .freeze
            .then(|| std::time::Duration::from_secs(args.freeze_timeout));
        match snapshot(selected, &pattern, expiry.as_ref(), args.stateful, freeze) {
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
    freeze: Option<Duration>,
) -> Result<SnapshotRecord, SnapError> {
    let client = &selected.client;
    let instance = &selected.of.instance;
    let now = Utc::now();
    let name = if pattern.has_counter() {
        let existing = snapshots::list(client, instance)?;
        next_name(pattern, now, existing.iter().map(|s| s.name.as_str()))?
    } else {
        pattern.render(now)
    };
    let expires_at: Option<DateTime<Utc>> = expiry.and_then(|d| d.add_to(now));
    let group = Group {
        client,
        instance,
        name: &name,
        stateful,
        expires_at,
        volumes: volumes::attached(&selected.instance.expanded_devices),
    };
    let frozen = freeze.filter(|_| {
        selected.instance.status == InstanceStatus::Running
            && selected.instance.kind != "virtual-machine"
    });
    let (taken, frozen_ms) = match frozen {
        Some(limit) => {
            let (taken, ms) = group.take_frozen(limit)?;
            (taken, Some(ms))
        }
        None => (group.take()?.volumes, None),
    };
    let read = snapshots::get(client, instance, &name)?;
    Ok(SnapshotRecord {
        of: selected.of.clone(),
        location: selected.instance.member().map(str::to_string),
        name,
        created_at: read.created_at,
        expires_at: read.expires_at,
        stateful: read.stateful,
        volumes: taken,
        frozen_ms,
    })
}

/// The pattern's name at `now`, given the names in use (its `%d` counts up from them).
fn next_name<'a>(
    pattern: &SnapshotPattern,
    now: DateTime<Utc>,
    existing: impl Iterator<Item = &'a str>,
) -> Result<String, SnapError> {
    if !pattern.has_counter() {
        return Ok(pattern.render(now));
    }
    let names: Vec<&str> = existing.collect();
    pattern.next_name(now, &names).ok_or(SnapError::NoFreeName)
}

/// A snapshot of a volume selected by itself (`--volume`), named and expiring as an
/// instance's.
fn snapshot_volume(
    selected: &SelectedVolume,
    pattern: &SnapshotPattern,
    expiry: Option<&ExpiryDuration>,
) -> Result<VolumeSnapshotRecord, SnapError> {
    let client = &selected.client;
    let now = Utc::now();
    let existing = volumes::snapshots(client, &selected.volume)?;
    let name = next_name(pattern, now, existing.iter().map(|s| s.name.as_str()))?;
    if existing.iter().any(|s| s.name == name) {
        return Err(SnapError::Exists { name });
    }
    let expires_at: Option<DateTime<Utc>> = expiry.and_then(|d| d.add_to(now));
    volumes::create_snapshot(client, &selected.volume, &name, expires_at).map_err(|e| {
        SnapError::Create {
            name: name.clone(),
            message: e.message(),
        }
    })?;
    let taken = volumes::snapshots(client, &selected.volume)?
        .into_iter()
        .find(|s| s.name == name);
    Ok(VolumeSnapshotRecord {
        of: selected.of.clone(),
        created_at: taken.as_ref().map_or(now, |s| s.created_at),
        expires_at: taken.and_then(|s| s.expires_at),
        name,
    })
}

/// What [`Group::take`] took: the volumes snapshotted (`POOL/NAME`), and those whose
/// snapshot this call made (not one another instance of the run made first).
struct Taken {
    volumes: Vec<String>,
    made: Vec<volumes::VolumeRef>,
}

/// One instance's snapshot and its attached volumes', all under one name.
struct Group<'a> {
    client: &'a Client,
    instance: &'a str,
    name: &'a str,
    stateful: bool,
    expires_at: Option<DateTime<Utc>>,
    volumes: Vec<volumes::Attached>,
}

impl Group<'_> {
    /// Takes the instance's snapshot, then each volume's; if a volume's fails, deletes what
    /// this call took, so that no instance snapshot lacks its volumes. A volume that already
    /// has the snapshot (attached to another instance of the same run) is left as it is.
    /// Returns the volumes snapshotted (`POOL/NAME`).
    fn take(&self) -> Result<Taken, SnapError> {
        let name = self.name;
        if let Err(e) = snapshots::create(
            self.client,
            self.instance,
            name,
            self.stateful,
            self.expires_at,
        ) {
            let message = e.message();
            return Err(if message.contains("UNIQUE constraint") {
                SnapError::Exists {
                    name: name.to_string(),
                }
            } else if self.stateful && (message.contains("CRIU") || message.contains("stateful")) {
                SnapError::Stateful { message }
            } else {
                SnapError::Create {
                    name: name.to_string(),
                    message,
                }
            });
        }
        let mut taken = Vec::new();
        let mut made = Vec::new();
        for attached in &self.volumes {
            let volume = &attached.volume;
            match volumes::create_snapshot(self.client, volume, name, self.expires_at) {
                Ok(()) => made.push(volume),
                Err(e)
                    if e.message().contains("UNIQUE constraint")
                        || e.message().contains("already exists")
                        || e.message().contains("already in use") => {}
                Err(e) => {
                    self.take_back(&made);
                    return Err(SnapError::Volume {
                        name: name.to_string(),
                        volume: volume.to_string(),
                        message: e.message(),
                    });
                }
            }
            taken.push(volume.to_string());
        }
        Ok(Taken {
            volumes: taken,
            made: made.into_iter().cloned().collect(),
        })
    }

    /// Deletes what [`Group::take`] made (its own new snapshots: nothing else is lost).
    fn take_back(&self, made: &[&volumes::VolumeRef]) {
        for volume in made {
            let _ = volumes::delete_snapshot(self.client, volume, self.name);
        }
        let _ = snapshots::delete(self.client, self.instance, self.name);
    }

    /// [`Group::take`] with the container frozen; it is unfrozen when the group is taken,
    /// when it fails, on an interruption, and at the latest after `limit` (a watchdog): a
    /// group that outlasted the freeze is not crash-consistent, and is deleted again.
    fn take_frozen(&self, limit: Duration) -> Result<(Vec<String>, u64), SnapError> {
        let started = Instant::now();
        instances::change_state(self.client, self.instance, StateAction::Freeze, -1, false)
            .map_err(|e| SnapError::Freeze {
                doing: "freezing the instance",
                message: e.message(),
            })?;
        let (done, waiting) = std::sync::mpsc::channel::<()>();
        let timed_out = std::thread::scope(|scope| {
            let watchdog = scope.spawn(move || {
                if waiting.recv_timeout(limit).is_err() {
                    let _ = self.unfreeze();
                    return true;
                }
                false
            });
            let taken = interrupt::without_interruption(|| self.take());
            let _ = done.send(());
            let timed_out = watchdog.join().unwrap_or(true);
            (taken, timed_out)
        });
        let (taken, timed_out) = timed_out;
        let unfrozen = if timed_out { Ok(()) } else { self.unfreeze() };
        let frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let taken = taken?;
        if timed_out {
            self.take_back(&taken.made.iter().collect::<Vec<_>>());
            return Err(SnapError::FreezeTimeout {
                name: self.name.to_string(),
                seconds: limit.as_secs(),
            });
        }
        unfrozen?;
        Ok((taken.volumes, frozen_ms))
    }

    /// Unfreezes, retried: a frozen production instance is an outage.
    fn unfreeze(&self) -> Result<(), SnapError> {
        let mut last = None;
        for _ in 0..5 {
            match instances::change_state(
                self.client,
                self.instance,
                StateAction::Unfreeze,
                -1,
                false,
            ) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(SnapError::Freeze {
            doing: "UNFREEZING THE INSTANCE FAILED, it is still frozen: run incus start on it",
            message: last.map(|e| e.message()).unwrap_or_default(),
        })
    }
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
