//! Archive points: replica snapshots the standby's own retention keeps after a refresh drops
//! them, cloned into inert instances of the archive project (copy-on-write where the pool
//! allows), marked with their source and snapshot time.

use std::collections::BTreeMap;

use crate::api::instances::{self, Instance};
use crate::api::snapshots;
use crate::client::Client;
use crate::markers::{ArchiveOf, ReplicaMarkers, SourceId, inert_overrides};

use super::error::Error;
use super::plan::{ArchiveDecision, Point, SnapshotId, archive_name};

/// An archive instance as a point of history (`None`: not an archive point).
pub fn archive_point(instance: &Instance) -> Option<Point> {
    let archive = ReplicaMarkers::from_config(&instance.config).archive?;
    Some(Point {
        snapshot: archive.snapshot().to_string(),
        created_at: archive.created_at,
        archive: Some(instance.name.clone()),
    })
}

/// The archive points of one source on the standby (none when the archive project does not
/// exist yet).
pub fn points(standby: &Client, project: &str, source: &SourceId) -> Result<Vec<Point>, Error> {
    let client = standby.in_project(project);
    let list = match instances::list(&client, false) {
        Ok(list) => list,
        Err(e) if e.is_not_found() || e.message().contains("not found") => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(Error::incus("listing the archive points", e)),
    };
    Ok(list
        .iter()
        .filter(|i| ReplicaMarkers::from_config(&i.config).source.as_ref() == Some(source))
        .filter_map(archive_point)
        .collect())
}

/// What one archive point is made from.
pub(super) struct Making<'a> {
    /// The standby, in its default project.
    pub standby: &'a Client,
    /// The standby remote's name, for messages.
    pub to: &'a str,
    /// The replica, in its project.
    pub target: &'a Client,
    pub replica: &'a Instance,
    /// The replica's snapshots as listed.
    pub listed: &'a [snapshots::Snapshot],
    pub source: &'a SourceId,
    pub source_uuid: Option<&'a str>,
}

/// Clones the replica's snapshots the decision keeps into archive instances: inert, marked
/// with their source and snapshot time, with the snapshot's MAC addresses. Refused on a `dir`
/// pool (each point a full copy) unless allowed.
pub(super) fn make(making: &Making, decision: &ArchiveDecision) -> Result<Vec<String>, Error> {
    let Making {
        standby,
        to,
        target,
        replica,
        ..
    } = making;
    let name = &replica.name;
    if decision.plan.archive.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(pool) = replica.root_pool() {
        let driver = crate::api::projects::pool_driver(target, pool)
            .map_err(|e| Error::incus(format!("reading pool {pool}"), e))?;
        if driver == "dir" && !decision.allow_full_copies {
            return Err(Error::Unsafe(format!(
                "the replica is on pool {pool} (dir): each archive point would be a full copy of the instance, not a copy-on-write clone; nothing was changed: pass --archive-full-copies to accept that, or keep replicas on btrfs, zfs or lvm-thin"
            )));
        }
    }
    let client = standby.in_project(&decision.project);
    crate::api::projects::ensure(
        standby,
        &decision.project,
        "incus-standby archive points: replica snapshots kept by the standby's own retention",
    )
    .map_err(|e| {
        Error::incus(
            format!("making the archive project {}", decision.project),
            e,
        )
    })?;
    let mut made = Vec::new();
    for snapshot in &decision.plan.archive {
        let Some(found) = making.listed.iter().find(|s| {
            s.name == snapshot.name && s.created_at.timestamp() == snapshot.created_at.timestamp()
        }) else {
            continue;
        };
        let archive_instance = free_name(&client, making.source, name, snapshot);
        instances::copy_local(
            &client,
            target.project(),
            &format!("{name}/{}", snapshot.name),
            &archive_instance,
            &config(making, found, snapshot),
            replica.member(),
        )
        .map_err(|e| {
            Error::incus_left(
                format!(
                    "keeping {to}:{name}/{} as archive point {archive_instance} (project {})",
                    snapshot.name, decision.project
                ),
                e,
                "; nothing was refreshed",
            )
        })?;
        made.push(archive_instance);
        fail::fail_point!("push::after-archive", super::error::injected);
    }
    Ok(made)
}

/// An archive point's configuration: inert, marked, with the snapshot's MAC addresses.
fn config(
    making: &Making,
    found: &snapshots::Snapshot,
    snapshot: &SnapshotId,
) -> BTreeMap<String, String> {
    let mut config: BTreeMap<String, String> = inert_overrides()
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect();
    for (key, value) in &found.config {
        if key.starts_with("volatile.") && key.ends_with(".hwaddr") {
            config.insert(key.clone(), value.clone());
        }
    }
    let markers = ReplicaMarkers {
        source: Some(making.source.clone()),
        source_uuid: making.source_uuid.map(str::to_string),
        archive: Some(ArchiveOf::new(
            making.target.project(),
            &making.replica.name,
            &snapshot.name,
            snapshot.created_at,
        )),
        ..ReplicaMarkers::default()
    };
    config.extend(
        markers
            .to_patch()
            .0
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key, v))),
    );
    config
}

/// `INSTANCE--SNAPSHOT`; another source's archive (same instance name in another project, or
/// a name cut to 63 characters) may hold the readable name: then a suffix tells them apart.
fn free_name(client: &Client, source: &SourceId, name: &str, snapshot: &SnapshotId) -> String {
    let readable = archive_name(name, &snapshot.name);
    if instances::get(client, &readable).is_err() {
        return readable;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(
        format!(
            "{source}/{}@{}",
            snapshot.name,
            snapshot.created_at.timestamp()
        )
        .as_bytes(),
    );
    let suffix: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let base: String = readable.chars().take(56).collect();
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// Deletes the archive points the policy no longer keeps (after the refresh).
pub(super) fn delete_old(
    standby: &Client,
    to: &str,
    decision: &ArchiveDecision,
) -> Result<Vec<String>, Error> {
    let client = standby.in_project(&decision.project);
    let mut deleted = Vec::new();
    for old in &decision.plan.delete {
        instances::delete(&client, old).map_err(|e| {
            Error::incus_left(
                format!(
                    "the replica is current, but deleting the archive point {to}:{old} (project {}) that the policy no longer keeps failed",
                    decision.project
                ),
                e,
                "; the next refresh tries again (or delete it by hand)",
            )
        })?;
        deleted.push(old.clone());
    }
    Ok(deleted)
}
