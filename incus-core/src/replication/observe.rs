//! The first of replication's three steps: read both sides, changing nothing. A replica the
//! run-wide listings show current costs no request of its own (the fast path); anything else
//! reads the authoritative lists, and only what the decision will need.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::instances::{self, Instance, root_disk};
use crate::api::{profiles, snapshots};
use crate::client::Client;
use crate::markers::{self, ReplicaMarkers, SourceId, SourceSettings};
use crate::select::Selected;

use super::Replicator;
use super::archive;
use super::error::Error;
use super::lock;
use super::plan::{self, Plan, Point, SnapshotId};

/// What [`Replicator::observe`] found.
pub(super) enum Observation {
    /// The run's listings show the replica current; nothing else was read. The replica's
    /// cluster member, if any.
    CurrentByListing { location: Option<String> },
    /// Both sides as they are; the replica stays locked on this host while the lock lives.
    Read(Box<Observed>, lock::ReplicaLock),
}

/// Both sides of one replication, as read: plain data, which [`super::plan::decide`] takes.
pub struct Observed {
    /// The replica's project on the standby.
    pub target_project: String,
    /// The remote the source is on (for messages).
    pub source_remote: String,
    pub source_id: SourceId,
    pub source_uuid: Option<String>,
    pub settings: SourceSettings,
    /// The source's snapshots, oldest first.
    pub source_snapshots: Vec<snapshots::Snapshot>,
    pub source_ids: Vec<SnapshotId>,
    pub replica: Option<ReplicaSide>,
    /// The source's archive points, read where the standby's retention may act.
    pub archives: Option<Vec<Point>>,
    /// The profiles the standby's project has.
    pub standby_profiles: BTreeSet<String>,
    /// The pool a restore gives the replica's root disk (Incus restores a snapshot's
    /// devices): the source's own root disk, else its profiles' (the standby's copy of each,
    /// the source's for one the standby lacks). Read only where something will be sent.
    pub restore_pool: Option<String>,
    /// The source's cluster members' addresses (empty: a single server).
    pub source_members: Vec<String>,
    /// The custom volumes the source attaches, both sides.
    pub volumes: Vec<super::volumes::VolumeSide>,
}

/// The replica as read.
pub struct ReplicaSide {
    pub instance: Instance,
    pub etag: Option<String>,
    pub markers: ReplicaMarkers,
    pub snapshots: Vec<snapshots::Snapshot>,
    pub ids: Vec<SnapshotId>,
    /// Its configuration is its newest snapshot's, volatile keys and the lease aside: a
    /// restore whose configuration write never happened.
    pub config_is_newest_snapshot: bool,
}

/// Snapshot lists as compared.
pub(super) fn ids(list: &[snapshots::Snapshot]) -> Vec<SnapshotId> {
    list.iter()
        .map(|s| SnapshotId::new(&s.name, s.created_at))
        .collect()
}

/// What a current replica's markers must say.
struct Wanted<'a> {
    source_id: &'a SourceId,
    source_uuid: &'a Option<String>,
    settings: &'a SourceSettings,
    source_members: &'a [String],
}

impl Replicator<'_> {
    /// The member addresses of a clustered source, read once per remote and run.
    fn source_members(&self, source: &Client) -> Result<Vec<String>, Error> {
        if let Ok(cache) = self.source_members.lock()
            && let Some(known) = cache.get(source.remote())
        {
            return Ok(known.clone());
        }
        let members = crate::api::cluster::member_urls(source)?;
        if let Ok(mut cache) = self.source_members.lock() {
            cache.insert(source.remote().to_string(), members.clone());
        }
        Ok(members)
    }

    /// Reads what replicating `selected` needs; refuses, before reading more, a source that
    /// is the standby itself or is fenced for a promotion.
    pub(super) fn observe(&self, selected: &Selected) -> Result<Observation, Error> {
        let options = self.options;
        let source = &selected.client;
        let name = &selected.of.instance;
        let target_project = options
            .target_project
            .clone()
            .unwrap_or_else(|| selected.of.project.clone());
        let target = self.standby.in_project(&target_project);
        let server = source.server()?;
        server
            .check_supported(source.remote())
            .map_err(Error::Unsafe)?;
        let source_fingerprint = server.environment.certificate_fingerprint.clone();
        plan::check_source(
            &source_fingerprint,
            &self.standby_fingerprint,
            selected,
            options,
        )?;
        let source_id = SourceId::new(&source_fingerprint, &selected.of.project, name);
        let instance = &selected.instance;
        let source_uuid = markers::instance_uuid(&instance.config).cloned();
        let settings = SourceSettings::of_source(&instance.config);
        let source_members = self.source_members(source)?;
        let wanted = Wanted {
            source_id: &source_id,
            source_uuid: &source_uuid,
            settings: &settings,
            source_members: &source_members,
        };
        if let Some(location) = self.current_by_listing(source, &target, instance, &wanted) {
            return Ok(Observation::CurrentByListing { location });
        }
        let source_snapshots = snapshots::list(source, name)?;
        let source_ids = ids(&source_snapshots);
        let lock_name = lock::lock_name(&[
            super::short_fingerprint(&self.standby_fingerprint),
            &target_project,
            name,
        ]);
        let lock = match lock::try_lock(&lock::lock_dir(), &lock_name)
            .map_err(|e| Error::Unsafe(e.to_string()))?
        {
            Some(lock) => lock,
            None => {
                return Err(Error::Busy(format!(
                    "another incus-push is replicating {}:{name} right now; skipped (the next run will converge)",
                    options.to
                )));
            }
        };
        let replica = self.read_replica(&target, name)?;
        let mut observed = Observed {
            target_project: target.project().to_string(),
            source_remote: source.remote().to_string(),
            source_id,
            source_uuid,
            settings,
            source_snapshots,
            source_ids,
            replica,
            archives: None,
            standby_profiles: BTreeSet::new(),
            restore_pool: None,
            source_members,
            volumes: Vec::new(),
        };
        observed.volumes = self.observe_volumes(
            source,
            &target,
            name,
            &crate::api::volumes::attached(&instance.expanded_devices),
            &source_fingerprint,
        )?;
        // What a transfer needs to be decided, read unless the replica is plainly current.
        if !observed.plainly_current(options.live()) {
            self.read_for_transfer(&mut observed, &target, source, instance)?;
        }
        Ok(Observation::Read(Box::new(observed), lock))
    }

    /// The fast path, a constant number of requests per run: the standby's instance listing
    /// and both sides' storage pool listings (which hold every snapshot) show the replica
    /// current. `Some(its member)` when they do.
    fn current_by_listing(
        &self,
        source: &Client,
        target: &Client,
        instance: &Instance,
        wanted: &Wanted,
    ) -> Option<Option<String>> {
        let source_id = wanted.source_id;
        let name = instance.name.as_str();
        if !self.options.listings_once() {
            return None;
        }
        let listed = self.listed_replica(target, name)?;
        let found = ReplicaMarkers::from_config(&listed.config);
        let current = !listed.is_running()
            && found.source.as_ref() == Some(source_id)
            && found.source_uuid == *wanted.source_uuid
            && found.source_settings.as_ref() == Some(wanted.settings)
            && found.source_members == *wanted.source_members
            && found.promoted.is_none()
            && found.synced_at.is_some();
        if !current {
            return None;
        }
        let source_pooled = self.pooled_snapshots(source, name)?;
        let replica_pooled = self.pooled_snapshots(target, name)?;
        let quick = plan::plan(
            &source_pooled,
            Some(&replica_pooled),
            found.restored.as_deref(),
            self.options.live(),
        );
        if quick != Plan::UpToDate {
            return None;
        }
        let attached = crate::api::volumes::attached(&instance.expanded_devices);
        if !attached.is_empty() {
            let source_listing = self.pooled.listing(source)?;
            let standby_listing = self.pooled.listing(target)?;
            let point = source_pooled
                .last()
                .map(|s| (s.name.as_str(), s.created_at));
            let fingerprint = source_id.as_str().split('/').next().unwrap_or_default();
            let current = super::volumes::current_by_listing(
                &source_listing.volumes,
                &standby_listing.volumes,
                &attached,
                |v| markers::volume_source(fingerprint, source.project(), &v.pool, &v.name),
                point,
            );
            if !current {
                return None;
            }
        }
        Some(listed.member().map(str::to_string))
    }

    fn read_replica(&self, target: &Client, name: &str) -> Result<Option<ReplicaSide>, Error> {
        let (instance, etag) = match instances::get(target, name) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let snapshots = snapshots::list(target, name)?;
        let config_is_newest_snapshot = snapshots
            .last()
            .is_some_and(|newest| same_settings(&instance.config, &newest.config));
        Ok(Some(ReplicaSide {
            markers: ReplicaMarkers::from_config(&instance.config),
            ids: ids(&snapshots),
            instance,
            etag,
            snapshots,
            config_is_newest_snapshot,
        }))
    }

    /// The standby's profiles, the pool a restore would give, and the archive points.
    fn read_for_transfer(
        &self,
        observed: &mut Observed,
        target: &Client,
        source: &Client,
        instance: &Instance,
    ) -> Result<(), Error> {
        observed.standby_profiles = self.standby_profiles(target)?;
        observed.restore_pool = match root_disk(&instance.devices) {
            Some((_, device)) => device.get("pool").cloned(),
            None => {
                let mut found = None;
                for name in &instance.profiles {
                    let on = if observed.standby_profiles.contains(name) {
                        target
                    } else {
                        source
                    };
                    if let Some(pool) = self.profile_root_pool(on, name)? {
                        found = Some(pool);
                    }
                }
                found
            }
        };
        if let Some(archive) = self.options.archive()
            && observed.replica.is_some()
        {
            observed.archives = Some(archive::points(
                &self.standby,
                &archive.project,
                &observed.source_id,
            )?);
        }
        Ok(())
    }

    /// Profile names per standby project, listed once per run.
    pub(super) fn standby_profiles(&self, target: &Client) -> Result<BTreeSet<String>, Error> {
        let mut cache = self
            .profiles
            .lock()
            .map_err(|_| Error::Unsafe("profile cache poisoned".to_string()))?;
        if let Some(known) = cache.get(target.project()) {
            return Ok(known.clone());
        }
        let names: BTreeSet<String> = profiles::names(target)?.into_iter().collect();
        cache.insert(target.project().to_string(), names.clone());
        Ok(names)
    }

    /// The pool of a profile's root disk, read once per run per server, project and profile.
    fn profile_root_pool(&self, on: &Client, name: &str) -> Result<Option<String>, Error> {
        let key = (
            on.remote().to_string(),
            on.project().to_string(),
            name.to_string(),
        );
        if let Ok(cache) = self.profile_pools.lock()
            && let Some(pool) = cache.get(&key)
        {
            return Ok(pool.clone());
        }
        let profile = profiles::get(on, name)?;
        let pool = root_disk(&profile.devices).and_then(|(_, d)| d.get("pool").cloned());
        if let Ok(mut cache) = self.profile_pools.lock() {
            cache.insert(key, pool.clone());
        }
        Ok(pool)
    }

    /// One instance's snapshots as its project's storage pools list them (read once per
    /// remote and project; `None`: not known, read the instance's own list).
    fn pooled_snapshots(&self, client: &Client, name: &str) -> Option<Vec<SnapshotId>> {
        let list = self.pooled.of(client, name)?;
        Some(
            list.iter()
                .map(|(snapshot, at)| SnapshotId::new(snapshot, *at))
                .collect(),
        )
    }

    /// The replica as the standby's one-call listing shows it.
    fn listed_replica(&self, target: &Client, name: &str) -> Option<Instance> {
        let mut cache = self.replicas.lock().ok()?;
        let listing = cache
            .entry(target.project().to_string())
            .or_insert_with(|| {
                instances::list(target, false).ok().map(|list| {
                    list.into_iter()
                        .map(|instance| (instance.name.clone(), instance))
                        .collect()
                })
            });
        listing.as_ref()?.get(name).cloned()
    }
}

impl Observed {
    /// A finished replica of this very source whose lists say it is current: nothing will be
    /// sent, whatever the rest of the decision.
    fn plainly_current(&self, live: bool) -> bool {
        let Some(replica) = &self.replica else {
            return false;
        };
        replica.markers.source.as_ref() == Some(&self.source_id)
            && replica.markers.source_uuid == self.source_uuid
            && replica.markers.synced_at.is_some()
            && plan::plan(
                &self.source_ids,
                Some(&replica.ids),
                replica.markers.restored.as_deref(),
                live,
            ) == Plan::UpToDate
    }
}

/// True when two configurations hold the same settings, volatile keys and the lease (taken
/// after the restore by the run that resumes) aside.
fn same_settings(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let settings = |c: &BTreeMap<String, String>| {
        c.iter()
            .filter(|(key, _)| !key.starts_with("volatile.") && !markers::is_lease_key(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    settings(a) == settings(b)
}
