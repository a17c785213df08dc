//! Repairs of what a dying daemon leaves on the standby, made only where nothing can be lost.
//!
//! A daemon killed in the middle of a refresh can leave the replica with snapshot records and
//! snapshot volumes that do not match. Incus then refuses every write to the instance ("Failed
//! to write backup file: Instance snapshot record count doesn't match instance snapshot volume
//! record count"), the lease and the restore included, so the replica is stuck for good.
//!
//! - A snapshot **record without its volume** holds no data: it is deleted (as
//!   `incus snapshot delete` would), reported in the `push` record's `repaired`, and the run
//!   goes on.
//! - A snapshot **volume without its record** cannot be deleted through the API; the error
//!   says what Incus holds and what to do.

use crate::api::{projects, snapshots};
use crate::select::Selected;

use super::Replicator;
use super::error::Error;

/// Deletes the replica's snapshot records that have no storage volume; returns their names.
/// `Err` when there is none to delete (the mismatch is the other way round, or gone): the
/// original error, with what Incus holds.
pub(super) fn snapshot_records(
    replicator: &Replicator,
    selected: &Selected,
    original: &Error,
) -> Result<Vec<String>, Error> {
    let options = replicator.options;
    let project = options
        .target_project
        .clone()
        .unwrap_or_else(|| selected.of.project.clone());
    let target = replicator.standby.in_project(&project);
    let name = &selected.of.instance;
    let records: Vec<String> = snapshots::list(&target, name)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let listing = projects::pool_listing(&target)?;
    let volumes: Vec<String> = listing
        .instances
        .get(name.as_str())
        .map(|list| list.iter().map(|(snapshot, _)| snapshot.clone()).collect())
        .unwrap_or_default();
    let without_volume: Vec<String> = records
        .iter()
        .filter(|r| !volumes.contains(r))
        .cloned()
        .collect();
    if without_volume.is_empty() {
        let orphans: Vec<&String> = volumes.iter().filter(|v| !records.contains(v)).collect();
        return Err(Error::Unsafe(format!(
            "{original}; the standby holds snapshot volume(s) {} of {}:{name} without their snapshot records (left by a daemon that died mid-transfer), which Incus's API cannot delete: copy what you need from the replica, then delete it with `incus delete {}:{name}` on the standby (Incus refuses while the orphan volume is there: remove the volume's subvolume or directory under the pool, then delete) and push again",
            orphans
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            options.to,
            options.to,
        )));
    }
    for snapshot in &without_volume {
        snapshots::delete(&target, name, snapshot).map_err(|e| {
            Error::incus(
                format!("deleting the replica's snapshot record {snapshot}, which has no volume"),
                e,
            )
        })?;
    }
    Ok(without_volume)
}
