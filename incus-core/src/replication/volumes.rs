//! The custom volumes an instance attaches travel with it: each is copied (or refreshed)
//! with its snapshots before the instance (Incus validates a new instance's devices, so the
//! volume must exist first), and restored with it to the same moment: the snapshot of the
//! same name as the instance's, else the newest one taken before it.
//!
//! A replica volume is marked like a replica (`user.incus-standby.source`, `restored`,
//! `synced-at`), carries no schedule or expiry of its own, and its snapshots never expire by
//! themselves. A volume attached to several instances is replicated once per run, by the
//! first of them. A volume goes to the pool of the same name on the standby; a standby
//! without that pool is an error (the instance's `--storage` moves its root disk only).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::volumes::{self, Attached, Volume, VolumeRef, VolumeSnapshot, VolumeTransfer};
use crate::client::{Client, WaitOptions};
use crate::markers::{SourceId, VolumeMarkers, volume_source};
use crate::record::{VolumePushRecord, VolumeRecord};

use super::Replicator;
use super::error::Error;
use super::plan::{SnapshotId, plan};

/// One attached volume, both sides as read.
#[derive(Debug, Clone)]
pub struct VolumeSide {
    pub volume: VolumeRef,
    pub source_id: SourceId,
    pub source: Volume,
    /// Oldest first.
    pub source_snapshots: Vec<VolumeSnapshot>,
    pub replica: Option<VolumeReplica>,
    /// Replicated this run already for another instance that attaches it.
    pub shared_with: Option<String>,
}

/// The replica volume as read.
#[derive(Debug, Clone)]
pub struct VolumeReplica {
    pub volume: Volume,
    pub markers: VolumeMarkers,
    pub snapshots: Vec<VolumeSnapshot>,
}

/// How a replica volume is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeStart {
    /// Nothing to send, nothing to restore.
    Current,
    FreshCopy,
    /// A first copy that never finished: deleted, then copied anew.
    CopyAgain,
    Refresh,
}

/// What replicating one volume does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDecision {
    pub volume: VolumeRef,
    pub start: VolumeStart,
    /// The snapshots sent.
    pub send: Vec<String>,
    /// The snapshot the replica volume is restored to (`None`: left as copied).
    pub restore_to: Option<String>,
    /// Snapshots whose expiry is removed after the transfer.
    pub clear_expiry: Vec<String>,
    /// The replica volume's configuration after the transfer (markers included).
    pub config: BTreeMap<String, String>,
    pub shared_with: Option<String>,
}

impl VolumeDecision {
    pub fn record(&self) -> VolumeRecord {
        VolumeRecord {
            pool: self.volume.pool.clone(),
            volume: self.volume.name.clone(),
            status: match (&self.shared_with, &self.start) {
                (Some(_), _) => "shared".to_string(),
                (None, VolumeStart::Current) => "up-to-date".to_string(),
                (None, VolumeStart::Refresh) => "refreshed".to_string(),
                (None, _) => "copied".to_string(),
            },
            snapshots: self.send.clone(),
            restored: self.restore_to.clone(),
            shared_with: self.shared_with.clone(),
        }
    }

    pub fn needs_work(&self) -> bool {
        self.start != VolumeStart::Current && self.shared_with.is_none()
    }
}

fn ids(list: &[VolumeSnapshot]) -> Vec<SnapshotId> {
    list.iter()
        .map(|s| SnapshotId::new(&s.name, s.created_at))
        .collect()
}

/// The snapshot a volume is restored to with its instance restored to `instance_point`
/// (name, time): the one of the same name, else the newest taken at or before it.
pub fn matching_point(
    snapshots: &[SnapshotId],
    instance_point: Option<(&str, DateTime<Utc>)>,
) -> Option<String> {
    let (name, at) = instance_point?;
    if snapshots.iter().any(|s| s.name == name) {
        return Some(name.to_string());
    }
    snapshots
        .iter()
        .rfind(|s| s.created_at <= at)
        .map(|s| s.name.clone())
}

/// Decides one volume, pure. Refuses a standby volume that is not this source's, and a
/// refresh that would drop history the source cannot send again (nothing in common).
pub fn decide(
    side: &VolumeSide,
    instance_point: Option<(&str, DateTime<Utc>)>,
    to: &str,
    now: DateTime<Utc>,
) -> Result<VolumeDecision, Error> {
    let source_ids = ids(&side.source_snapshots);
    let restore_to = matching_point(&source_ids, instance_point);
    let mut decision = VolumeDecision {
        volume: side.volume.clone(),
        start: VolumeStart::FreshCopy,
        send: source_ids.iter().map(|s| s.name.clone()).collect(),
        restore_to: restore_to.clone(),
        clear_expiry: Vec::new(),
        config: BTreeMap::new(),
        shared_with: side.shared_with.clone(),
    };
    if side.shared_with.is_some() {
        decision.start = VolumeStart::Current;
        decision.send.clear();
        return Ok(decision);
    }
    let replica_ids = side.replica.as_ref().map(|r| ids(&r.snapshots));
    if let Some(replica) = &side.replica {
        let replica_ids = replica_ids.as_deref().unwrap_or_default();
        let refuse = |why: &str| {
            Err(Error::Unsafe(format!(
                "the standby's volume {to}:{} {why}; nothing was sent: move it aside (incus storage volume rename {to}:{} {} {}-old) or delete it if it holds nothing you need",
                side.volume, side.volume.pool, side.volume.name, side.volume.name
            )))
        };
        match &replica.markers.source {
            None => return refuse("was not made by incus-push"),
            Some(source) if *source != side.source_id => {
                return refuse(&format!("is a replica of another volume ({source})"));
            }
            Some(_) => {}
        }
        let lost: Vec<&SnapshotId> = replica_ids
            .iter()
            .filter(|r| !source_ids.iter().any(|s| s.name == r.name))
            .collect();
        let common = replica_ids.iter().any(|r| source_ids.contains(r));
        if replica.markers.synced_at.is_none() {
            if !lost.is_empty() {
                return refuse(
                    "is an unfinished copy that holds snapshots the source no longer has",
                );
            }
            decision.start = VolumeStart::CopyAgain;
        } else if !replica_ids.is_empty() && !common {
            return refuse("shares no snapshot with its source (re-created volume?)");
        } else {
            let compared = plan(
                &source_ids,
                Some(replica_ids),
                replica.markers.restored.as_deref(),
                false,
            );
            decision.send = compared.sent();
            let restored = replica.markers.restored.as_deref();
            // A schedule of its own (a volume promoted, then failed back) is written away.
            let inert = !replica
                .volume
                .config
                .keys()
                .any(|k| crate::markers::is_volume_schedule_key(k));
            decision.start = if decision.send.is_empty()
                && lost.is_empty()
                && inert
                && restored == restore_to.as_deref()
            {
                VolumeStart::Current
            } else {
                VolumeStart::Refresh
            };
        }
    }
    // A copy takes its source's expiry: the standby's retention decides instead.
    decision.clear_expiry = side
        .source_snapshots
        .iter()
        .filter(|s| s.expires_at.is_some() && decision.send.contains(&s.name))
        .map(|s| s.name.clone())
        .chain(side.replica.iter().flat_map(|r| {
            r.snapshots
                .iter()
                .filter(|s| s.expires_at.is_some())
                .map(|s| s.name.clone())
        }))
        .collect();
    decision.clear_expiry.sort();
    decision.clear_expiry.dedup();
    if !decision.clear_expiry.is_empty() && decision.start == VolumeStart::Current {
        decision.start = VolumeStart::Refresh;
    }
    let markers = VolumeMarkers {
        source: Some(side.source_id.clone()),
        restored: restore_to,
        synced_at: Some(now),
        ..VolumeMarkers::default()
    };
    decision.config = markers.replica_config(&side.source.config);
    Ok(decision)
}

/// Whether the run's pool listings show every volume of the instance current (the fast
/// path); `None` when they cannot tell.
pub fn current_by_listing(
    source: &volumes::Listing,
    standby: &volumes::Listing,
    attached: &[Attached],
    source_id: impl Fn(&VolumeRef) -> SourceId,
    instance_point: Option<(&str, DateTime<Utc>)>,
) -> bool {
    attached.iter().all(|a| {
        let (Some(src), Some(replica)) = (source.get(&a.volume), standby.get(&a.volume)) else {
            return false;
        };
        let markers = VolumeMarkers::from_config(&replica.config);
        let as_ids = |list: &[(String, DateTime<Utc>)]| -> Vec<SnapshotId> {
            list.iter().map(|(n, at)| SnapshotId::new(n, *at)).collect()
        };
        let source_ids = as_ids(&src.snapshots);
        markers.source == Some(source_id(&a.volume))
            && markers.synced_at.is_some()
            && source_ids == as_ids(&replica.snapshots)
            && markers.restored == matching_point(&source_ids, instance_point)
    })
}

/// Gives every volume the instance attaches on `client` its own configuration back (no
/// marker, its source's schedule and expiry): after a promotion, and on the primary after a
/// failback. Returns the volumes changed.
pub fn give_own_settings(client: &Client, instance: &str) -> crate::Result<Vec<String>> {
    let (read, _) = crate::api::instances::get(client, instance)?;
    let mut changed = Vec::new();
    for a in volumes::attached(&read.expanded_devices) {
        let Some((volume, etag)) = volumes::get(client, &a.volume)? else {
            continue;
        };
        if VolumeMarkers::from_config(&volume.config).source.is_none() {
            continue;
        }
        let own = VolumeMarkers::own_config(&volume.config);
        volumes::put(client, &a.volume, &own, &volume.description, None, etag)?;
        changed.push(a.volume.to_string());
    }
    Ok(changed)
}

/// Makes every volume the instance attaches on the standby an inert replica of the primary's
/// volume of the same name again (after a failback), restored to `restored`.
pub fn mark_as_replicas(
    standby: &Client,
    instance: &str,
    primary_fingerprint: &str,
    primary_project: &str,
    restored: Option<&str>,
) -> crate::Result<()> {
    let (read, _) = crate::api::instances::get(standby, instance)?;
    for a in volumes::attached(&read.expanded_devices) {
        let Some((volume, etag)) = volumes::get(standby, &a.volume)? else {
            continue;
        };
        let markers = VolumeMarkers {
            source: Some(volume_source(
                primary_fingerprint,
                primary_project,
                &a.volume.pool,
                &a.volume.name,
            )),
            restored: restored.map(str::to_string),
            synced_at: Some(Utc::now()),
            ..VolumeMarkers::default()
        };
        let config = crate::markers::with_volatile_of(
            markers.replica_config(&volume.config),
            &volume.config,
        );
        volumes::put(standby, &a.volume, &config, &volume.description, None, etag)?;
    }
    Ok(())
}

/// Restores every volume the replica attaches to the moment of its snapshot `snapshot` (the
/// snapshot of the same name, else the newest before it), keeping the volume's markers.
pub fn restore_to_point(standby: &Client, instance: &str, snapshot: &str) -> crate::Result<()> {
    let (read, _) = crate::api::instances::get(standby, instance)?;
    let attached = volumes::attached(&read.expanded_devices);
    if attached.is_empty() {
        return Ok(());
    }
    let at = crate::api::snapshots::get(standby, instance, snapshot)?.created_at;
    for a in attached {
        let Some((volume, etag)) = volumes::get(standby, &a.volume)? else {
            continue;
        };
        let listed = ids(&volumes::snapshots(standby, &a.volume)?);
        let point = SnapshotId::new(snapshot, at);
        let Some(to) = matching_point(&listed, Some((snapshot, point.created_at))) else {
            continue;
        };
        let mut config = volume.config.clone();
        config.insert(crate::markers::key::RESTORED.to_string(), to.clone());
        volumes::put(
            standby,
            &a.volume,
            &config,
            &volume.description,
            Some(&to),
            etag,
        )?;
    }
    Ok(())
}

/// The volume records of an instance the listings showed current.
pub fn listed_current(instance: &crate::api::instances::Instance) -> Vec<VolumeRecord> {
    volumes::attached(&instance.expanded_devices)
        .into_iter()
        .map(|a| VolumeRecord {
            pool: a.volume.pool,
            volume: a.volume.name,
            status: "up-to-date".to_string(),
            snapshots: Vec::new(),
            restored: None,
            shared_with: None,
        })
        .collect()
}

impl Replicator<'_> {
    /// Reads every volume the instance attaches, on both sides. A volume another instance
    /// of this run claimed first is marked shared and not read.
    pub(super) fn observe_volumes(
        &self,
        source: &Client,
        target: &Client,
        instance: &str,
        attached: &[Attached],
        fingerprint: &str,
    ) -> Result<Vec<VolumeSide>, Error> {
        let mut sides = Vec::new();
        for a in attached {
            let volume = &a.volume;
            let key = (target.project().to_string(), volume.clone());
            let shared_with = {
                let mut claimed = self
                    .volumes_claimed
                    .lock()
                    .map_err(|_| Error::Unsafe("volume claims poisoned".to_string()))?;
                let first = claimed
                    .entry(key)
                    .or_insert_with(|| instance.to_string())
                    .clone();
                (first != instance).then_some(first)
            };
            let Some((read, _)) = volumes::get(source, volume)? else {
                return Err(Error::Unsafe(format!(
                    "{}:{instance} attaches volume {volume}, which {} does not have; nothing was sent",
                    source.remote(),
                    source.remote()
                )));
            };
            if shared_with.is_some() {
                sides.push(VolumeSide {
                    volume: volume.clone(),
                    source_id: volume_source(
                        fingerprint,
                        source.project(),
                        &volume.pool,
                        &volume.name,
                    ),
                    source: read,
                    source_snapshots: Vec::new(),
                    replica: None,
                    shared_with,
                });
                continue;
            }
            if !crate::api::projects::pool_exists(target, &volume.pool)? {
                return Err(Error::Unsafe(format!(
                    "{}:{instance} attaches volume {volume}, but {} has no storage pool {}; nothing was sent: create it (incus storage create {}:{} DRIVER)",
                    source.remote(),
                    self.options.to,
                    volume.pool,
                    self.options.to,
                    volume.pool
                )));
            }
            let replica = match volumes::get(target, volume)? {
                Some((found, _)) => Some(VolumeReplica {
                    markers: VolumeMarkers::from_config(&found.config),
                    snapshots: volumes::snapshots(target, volume)?,
                    volume: found,
                }),
                None => None,
            };
            sides.push(VolumeSide {
                volume: volume.clone(),
                source_id: volume_source(fingerprint, source.project(), &volume.pool, &volume.name),
                source: read,
                source_snapshots: volumes::snapshots(source, volume)?,
                replica,
                shared_with: None,
            });
        }
        Ok(sides)
    }

    /// Sends each volume that needs it (before the instance).
    pub(super) fn send_volumes(
        &self,
        selected: &crate::select::Selected,
        observed: &super::observe::Observed,
        decided: &super::plan::Decision,
    ) -> Result<(), Error> {
        let target = &self.target(observed);
        // On a clustered standby, a volume of a local pool must be on its instance's member.
        let placement = decided
            .replica_location
            .as_deref()
            .or(decided.placement.as_deref().filter(|p| !p.starts_with('@')));
        for (side, decision) in observed.volumes.iter().zip(&decided.volumes) {
            self.send_volume(&selected.client, target, side, decision, placement)?;
        }
        Ok(())
    }

    /// Sends one volume, when it needs it.
    fn send_volume(
        &self,
        source: &Client,
        target: &Client,
        side: &VolumeSide,
        decision: &VolumeDecision,
        placement: Option<&str>,
    ) -> Result<(), Error> {
        if !decision.needs_work() {
            return Ok(());
        }
        let volume = &decision.volume;
        if decision.start == VolumeStart::CopyAgain {
            volumes::delete(target, volume)
                .or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })
                .map_err(|e| {
                    Error::incus(
                        format!(
                            "removing the unfinished volume copy {}:{volume}",
                            self.options.to
                        ),
                        e,
                    )
                })?;
        }
        // Marked as this source's, not synced: a cut first copy is known unfinished.
        let mut config = decision.config.clone();
        config.remove(crate::markers::key::SYNCED_AT);
        config.remove(crate::markers::key::RESTORED);
        let transfer = VolumeTransfer {
            source,
            volume,
            read: &side.source,
            target,
            config: &config,
            refresh: decision.start == VolumeStart::Refresh,
            placement,
        };
        transfer
            .run(self.options.mode, &WaitOptions::plain())
            .map_err(|e| match e {
                crate::Error::Cancelled => Error::Interrupted {
                    standby: self.options.to.clone(),
                    instance: format!("volume {volume}"),
                },
                other => Error::incus(format!("sending volume {volume}"), other),
            })?;
        fail::fail_point!("push::after-volume-transfer", super::error::injected);
        Ok(())
    }

    /// Replicates a volume selected by itself (`--volume`): copied or refreshed with its
    /// snapshots, restored to its newest snapshot, inert and marked, as an attached volume
    /// is. One that an instance of this run attaches was replicated with it.
    pub fn replicate_volume(
        &self,
        selected: &crate::select::SelectedVolume,
    ) -> Result<VolumePushRecord, Error> {
        self.check_not_gone(&[&self.options.to, &selected.of.remote])?;
        self.replicate_volume_once(selected)
            .inspect_err(|e| self.remember_gone(e))
    }

    fn replicate_volume_once(
        &self,
        selected: &crate::select::SelectedVolume,
    ) -> Result<VolumePushRecord, Error> {
        let started = std::time::Instant::now();
        let options = self.options;
        let source = &selected.client;
        let target_project = options
            .target_project
            .clone()
            .unwrap_or_else(|| selected.of.project.clone());
        let target = self.standby.in_project(&target_project);
        let fingerprint = source.server()?.environment.certificate_fingerprint.clone();
        if fingerprint == self.standby_fingerprint {
            return Err(Error::Unsafe(format!(
                "{} and {} are the same server; --to must name the standby",
                selected.of.remote, options.to
            )));
        }
        let lock_name = super::lock::lock_name(&[
            super::short_fingerprint(&self.standby_fingerprint),
            &target_project,
            &format!("volume-{}-{}", selected.volume.pool, selected.volume.name),
        ]);
        let _lock = super::lock::try_lock(&super::lock::lock_dir(), &lock_name)
            .map_err(|e| Error::Unsafe(e.to_string()))?
            .ok_or_else(|| {
                Error::Busy(format!(
                    "another incus-push is replicating volume {} right now; skipped (the next run will converge)",
                    selected.volume
                ))
            })?;
        let attached = [Attached {
            device: String::new(),
            volume: selected.volume.clone(),
            path: None,
        }];
        let sides = self.observe_volumes(source, &target, "", &attached, &fingerprint)?;
        let Some(side) = sides.first() else {
            return Err(Error::Unsafe(format!(
                "volume {} was not read",
                selected.volume
            )));
        };
        let newest = ids(&side.source_snapshots).pop();
        let point = newest.as_ref().map(|s| (s.name.as_str(), s.created_at));
        let decision = decide(side, point, &options.to, Utc::now())?;
        if !options.dry_run && decision.needs_work() {
            self.send_volume(source, &target, side, &decision, None)?;
            crate::interrupt::without_interruption(|| {
                self.finish_volumes(
                    &target,
                    std::slice::from_ref(side),
                    std::slice::from_ref(&decision),
                )
            })?;
        }
        let record = decision.record();
        Ok(VolumePushRecord {
            of: selected.of.clone(),
            target_remote: options.to.clone(),
            target_project,
            status: record.status,
            snapshots: record.snapshots,
            restored: record.restored,
            seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            dry_run: options.dry_run,
        })
    }

    /// Restores each replica volume to its instance's moment and writes its configuration
    /// (markers, no schedule or expiry) in the same request; removes its snapshots' expiry.
    pub(super) fn finish_volumes(
        &self,
        target: &Client,
        sides: &[VolumeSide],
        decisions: &[VolumeDecision],
    ) -> Result<(), Error> {
        for (side, decision) in sides.iter().zip(decisions) {
            if !decision.needs_work() {
                continue;
            }
            let volume = &decision.volume;
            for snapshot in &decision.clear_expiry {
                volumes::set_snapshot_expiry(target, volume, snapshot, None).map_err(|e| {
                    Error::incus(
                        format!("keeping the snapshot {snapshot} of volume {volume} from expiring"),
                        e,
                    )
                })?;
            }
            // After a refresh, the replica's own volatile keys stay (a new copy has none).
            let config = match (&decision.start, &side.replica) {
                (VolumeStart::Refresh, Some(replica)) => crate::markers::with_volatile_of(
                    decision.config.clone(),
                    &replica.volume.config,
                ),
                _ => decision.config.clone(),
            };
            volumes::put(
                target,
                volume,
                &config,
                &side.source.description,
                decision.restore_to.as_deref(),
                None,
            )
            .map_err(|e| {
                Error::incus(
                    format!(
                        "restoring volume {volume} to {}",
                        decision.restore_to.as_deref().unwrap_or("its copy")
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn snaps(list: &[(&str, i64)]) -> Vec<VolumeSnapshot> {
        list.iter()
            .map(|(name, secs)| VolumeSnapshot {
                name: name.to_string(),
                created_at: at(*secs),
                expires_at: None,
            })
            .collect()
    }

    type Listed<'a> = &'a [(&'a str, i64)];

    fn side(source: Listed, replica: Option<(Listed, Option<&str>)>) -> VolumeSide {
        let source_id = volume_source("abcdef0123456789", "default", "default", "data");
        VolumeSide {
            volume: VolumeRef::new("default", "data"),
            source_id: source_id.clone(),
            source: Volume {
                name: "data".into(),
                config: BTreeMap::from([
                    ("size".to_string(), "10MiB".to_string()),
                    ("snapshots.schedule".to_string(), "@daily".to_string()),
                    ("snapshots.expiry".to_string(), "2w".to_string()),
                ]),
                ..Volume::default()
            },
            source_snapshots: snaps(source),
            replica: replica.map(|(list, restored)| VolumeReplica {
                volume: Volume::default(),
                markers: VolumeMarkers {
                    source: Some(source_id),
                    restored: restored.map(str::to_string),
                    synced_at: Some(at(0)),
                    ..VolumeMarkers::default()
                },
                snapshots: snaps(list),
            }),
            shared_with: None,
        }
    }

    #[test]
    fn a_volume_is_restored_to_its_instance_moment() {
        let side = side(&[("s1", 1), ("s2", 2), ("extra", 3)], None);
        let decision = decide(&side, Some(("s2", at(2))), "standby", at(9)).expect("decided");
        assert_eq!(decision.start, VolumeStart::FreshCopy);
        assert_eq!(decision.send, vec!["s1", "s2", "extra"]);
        assert_eq!(decision.restore_to.as_deref(), Some("s2"));
        // Taken by hand, without an instance snapshot of that name: the newest before.
        let decision = decide(&side, Some(("i9", at(2))), "standby", at(9)).expect("decided");
        assert_eq!(decision.restore_to.as_deref(), Some("s2"));
        assert!(!decision.config.contains_key("snapshots.schedule"));
        assert!(!decision.config.contains_key("snapshots.expiry"));
        assert_eq!(
            decision.config.get("size").map(String::as_str),
            Some("10MiB")
        );
        assert!(decision.config.contains_key(crate::markers::key::SYNCED_AT));
    }

    #[test]
    fn a_current_volume_costs_nothing_and_a_new_snapshot_refreshes() {
        let current = side(
            &[("s1", 1), ("s2", 2)],
            Some((&[("s1", 1), ("s2", 2)], Some("s2"))),
        );
        let decision = decide(&current, Some(("s2", at(2))), "standby", at(9)).expect("decided");
        assert_eq!(decision.start, VolumeStart::Current);
        assert!(!decision.needs_work());
        let behind = side(&[("s1", 1), ("s2", 2)], Some((&[("s1", 1)], Some("s1"))));
        let decision = decide(&behind, Some(("s2", at(2))), "standby", at(9)).expect("decided");
        assert_eq!(decision.start, VolumeStart::Refresh);
        assert_eq!(decision.send, vec!["s2"]);
    }

    #[test]
    fn foreign_and_recreated_volumes_are_refused_and_unfinished_ones_copied_again() {
        let mut foreign = side(&[("s1", 1)], Some((&[("s1", 1)], Some("s1"))));
        if let Some(replica) = foreign.replica.as_mut() {
            replica.markers.source = None;
        }
        let refused = decide(&foreign, Some(("s1", at(1))), "standby", at(9));
        assert!(refused.is_err_and(|e| e.to_string().contains("not made by incus-push")));
        let recreated = side(&[("s1", 5)], Some((&[("s1", 1)], Some("s1"))));
        let refused = decide(&recreated, Some(("s1", at(5))), "standby", at(9));
        assert!(refused.is_err_and(|e| e.to_string().contains("shares no snapshot")));
        let mut unfinished = side(&[("s1", 1)], Some((&[("s1", 1)], None)));
        if let Some(replica) = unfinished.replica.as_mut() {
            replica.markers.synced_at = None;
        }
        let decision = decide(&unfinished, Some(("s1", at(1))), "standby", at(9)).expect("ok");
        assert_eq!(decision.start, VolumeStart::CopyAgain);
    }

    #[test]
    fn a_shared_volume_is_replicated_once() {
        let mut shared = side(&[("s1", 1)], None);
        shared.shared_with = Some("web".into());
        let decision = decide(&shared, Some(("s1", at(1))), "standby", at(9)).expect("ok");
        assert!(!decision.needs_work());
        assert_eq!(decision.record().status, "shared");
    }
}
