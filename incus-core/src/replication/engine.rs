//! The replication engine, shared by incus-push and incus-failover. Replicating one instance: lock, compare, check profiles, transfer, then make the replica
//! a consistent, inert copy (restored to the newest snapshot, no autostart, no schedule).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::instances::{self, Instance, root_disk};
use crate::api::migration::{Mode, Transfer};
use crate::api::{profiles, snapshots};
use crate::client::{Client, WaitOptions};
use crate::interrupt;
use crate::record::{InstanceRef, PushRecord};
use crate::select::{Connections, Selected};

use super::lease::{self, LEASE_KEY};
use super::lock;
use super::plan::{
    Ownership, Plan, Point, Refusal, ReplicaFacts, SnapshotId, SourceFacts, archive_name,
    archive_plan, judge, moved_aside_name, plan,
};

/// Config key on a replica: which source it copies (`FINGERPRINT12/PROJECT/INSTANCE`).
pub const SOURCE_KEY: &str = "user.incus-standby.source";
/// Config key on a replica: the snapshot its root filesystem was last restored to.
pub const RESTORED_KEY: &str = "user.incus-standby.restored";
/// Config key on a replica: when its last transfer completed. A replica of ours without it
/// comes from a first copy that never finished (its snapshot records may lack their data).
pub const SYNCED_KEY: &str = "user.incus-standby.synced-at";
/// Config key on a replica: the `volatile.uuid` of the instance it copies. A source with
/// another uuid under the same name is another instance (deleted and re-created).
pub const SOURCE_UUID_KEY: &str = "user.incus-standby.source-uuid";
/// Config key on a replica moved aside by `--replace`: when, and why.
pub const REPLACED_KEY: &str = "user.incus-standby.replaced";
/// Config key on a replica promoted by incus-failover: when, and from which source. A
/// promoted replica is never refreshed, even once stopped again.
pub const PROMOTED_KEY: &str = "user.incus-standby.promoted";
/// Config key on a primary instance fenced by incus-failover (autostart off, stopped for a
/// promotion): when, and to which standby. Plain pushes leave a fenced instance alone.
pub const FENCED_KEY: &str = "user.incus-standby.fenced";
/// Config key on a fenced primary instance: its own `boot.autostart` before the fencing
/// (empty: unset), given to the promoted replica.
pub const AUTOSTART_BEFORE_KEY: &str = "user.incus-standby.autostart-before";
/// Config key on a replica: the source's own values of the keys the replica overrides to be
/// inert (`boot.autostart`, `snapshots.schedule`, `snapshots.schedule.stopped`), as JSON, so
/// that a promotion gives them back even when the primary is gone.
pub const SOURCE_SETTINGS_KEY: &str = "user.incus-standby.source-settings";
/// The value of [`AUTOSTART_BEFORE_KEY`] when `boot.autostart` was unset (an empty value would
/// delete the key).
pub const AUTOSTART_UNSET: &str = "unset";
/// An instance's identity in Incus, kept by refresh and restore, new on a plain copy.
pub const UUID_KEY: &str = "volatile.uuid";

/// What a replication does, as incus-push's flags say it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The standby remote.
    pub to: String,
    /// Project on the standby (default: the source instance's).
    pub target_project: Option<String>,
    /// Pool for the root disk of new replicas.
    pub storage: Option<String>,
    /// On a clustered standby: the member or group for new replicas.
    pub placement: super::Placement,
    pub mode: Mode,
    /// Keep the live-synced state instead of restoring to the newest snapshot.
    pub live: bool,
    /// Copy missing profiles first.
    pub sync_profiles: bool,
    /// Take over an instance incus-push did not create.
    pub adopt: bool,
    /// Move a refused replica aside and copy anew.
    pub replace: bool,
    /// Change nothing.
    pub dry_run: bool,
    /// Who takes the replica's lease ([`lease::holder`]); a promotion and its own final sync
    /// share one.
    pub lease_holder: String,
    /// Break another holder's unexpired lease.
    pub break_lease: bool,
    /// Decide "up to date" from listings read once per run (a constant number of requests):
    /// right for a push, wrong for a run that takes snapshots between two syncs of the same
    /// instance (a promotion's or a failback's final snapshot would be missed).
    pub listings_once: bool,
    /// The standby's own history: keep replica snapshots a refresh would drop as archive
    /// points, by these rules (`None`: the replica mirrors its source).
    pub archive: Option<ArchiveOptions>,
    /// Replicate a source fenced for a promotion (incus-failover's final sync); plain pushes
    /// refuse one.
    pub allow_fenced: bool,
}

/// The standby's retention for archive points.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// The project of the archive instances on the standby.
    pub project: String,
    /// The count rules (restic's, as incus-prune's).
    pub rules: crate::policy::Rules,
    /// `--archive-keep-within`: measured from the newest point.
    pub within: Option<crate::duration::ExpiryDuration>,
    /// Archive points on a `dir` pool are full copies: only with this.
    pub allow_full_copies: bool,
    /// Only for a source that has archive points already (a promotion's final sync keeps the
    /// history of a standby that keeps one, without knowing its policy).
    pub only_if_present: bool,
}

/// The default archive project.
pub const ARCHIVE_PROJECT: &str = "incus-standby-archive";
/// Config key on an archive point: `PROJECT/INSTANCE/SNAPSHOT` it was cloned from.
pub const ARCHIVE_OF_KEY: &str = "user.incus-standby.archive-of";
/// Config key on an archive point: the creation time of that snapshot.
pub const ARCHIVE_TIME_KEY: &str = "user.incus-standby.archive-time";

/// An archive instance as a point of history (`None`: not an archive point).
pub fn archive_point(instance: &Instance) -> Option<Point> {
    let of = instance.config.get(ARCHIVE_OF_KEY)?;
    let snapshot = of.rsplit('/').next()?.to_string();
    let created_at = chrono::DateTime::parse_from_rfc3339(instance.config.get(ARCHIVE_TIME_KEY)?)
        .ok()?
        .with_timezone(&chrono::Utc);
    Some(Point {
        snapshot,
        created_at,
        archive: Some(instance.name.clone()),
    })
}

/// `REMOTE:INSTANCE`, for messages.
pub fn address(of: &InstanceRef) -> String {
    format!("{}:{}", of.remote, of.instance)
}

/// Replicates instances to one standby: the comparisons, checks, transfer, restore and
/// inert configuration of one replica at a time (call [`Replicator::replicate`] from as many
/// threads as wanted; listings and profiles are cached across them).
pub struct Replicator<'a> {
    options: &'a Options,
    standby: Client,
    standby_fingerprint: String,
    /// The standby's cluster members (empty: a single server).
    standby_members: Vec<String>,
    /// The standby's instances per project, listed once (`None`: the
    /// listing failed; every instance then reads its replica itself).
    replicas: Mutex<BTreeMap<String, Option<BTreeMap<String, Instance>>>>,
    /// The snapshots the storage pools list, per remote and project, read once (where not
    /// known, the fast path is skipped).
    pooled: crate::api::projects::PooledSnapshots,
    /// Profile names per standby project, listed once.
    profiles: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Progress bars on a terminal (hidden otherwise): one per transfer under way, and the
    /// total a caller may add ([`Replicator::total_bar`]).
    bars: indicatif::MultiProgress,
}

impl<'a> Replicator<'a> {
    /// Connects to the standby (its server information is read once).
    pub fn connect(options: &'a Options, connections: &Connections) -> crate::Result<Self> {
        let standby = connections.client(&options.to, None)?;
        let standby_fingerprint = standby
            .server()?
            .environment
            .certificate_fingerprint
            .clone();
        let membership = crate::api::cluster::membership(&standby)?;
        match &options.placement {
            super::Placement::Auto => {}
            asked if !membership.is_cluster() => {
                let flag = match asked {
                    super::Placement::Group(_) => "--target-group",
                    _ => "--target",
                };
                return Err(crate::Error::Config(format!(
                    "{flag} places replicas on a cluster member, but {} is a single server: drop {flag}",
                    options.to
                )));
            }
            super::Placement::Member(member) if !membership.has_member(member) => {
                return Err(crate::Error::Config(format!(
                    "{} has no cluster member \"{member}\" (its members: {}); see incus cluster list {}:",
                    options.to,
                    membership.members.join(", "),
                    options.to
                )));
            }
            super::Placement::Member(_) => {}
            super::Placement::Group(group) => crate::api::cluster::check_group(&standby, group)?,
        }
        Ok(Replicator {
            options,
            standby,
            standby_fingerprint,
            standby_members: membership.members,
            profiles: Mutex::new(BTreeMap::new()),
            replicas: Mutex::new(BTreeMap::new()),
            pooled: Default::default(),
            bars: if std::io::stderr().is_terminal() {
                indicatif::MultiProgress::new()
            } else {
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
            },
        })
    }

    /// The standby, in its default project.
    pub fn standby(&self) -> &Client {
        &self.standby
    }

    /// Replicates one instance; the error is one line saying why and what to do.
    pub fn replicate(&self, selected: &Selected) -> Result<PushRecord, String> {
        let start = Instant::now();
        let args = self.options;
        let source = &selected.client;
        let name = &selected.of.instance;
        let target_project = args
            .target_project
            .clone()
            .unwrap_or_else(|| selected.of.project.clone());
        let target = self.standby.in_project(&target_project);
        let source_fingerprint = source
            .server()
            .map_err(|e| e.to_string())?
            .environment
            .certificate_fingerprint
            .clone();
        if source_fingerprint == self.standby_fingerprint {
            return Err(format!(
                "{} and {} are the same server; --to must name the standby",
                selected.of.remote, args.to
            ));
        }
        let marker = format!(
            "{}/{}/{}",
            prefix(&source_fingerprint),
            selected.of.project,
            name
        );
        let instance = &selected.instance;
        if let Some(fenced) = instance.config.get(FENCED_KEY)
            && !args.allow_fenced
        {
            return Err(format!(
                "{} was fenced for a promotion ({fenced}); incus-push leaves it alone: fail back with incus-failover failback, or remove {FENCED_KEY} if the promotion was abandoned",
                address(&selected.of)
            ));
        }
        let source_uuid = instance.config.get(UUID_KEY).cloned();
        let settings = source_settings(&instance.config);
        let ids = |list: &[snapshots::Snapshot]| {
            list.iter()
                .map(|s| SnapshotId::new(&s.name, s.created_at))
                .collect::<Vec<_>>()
        };
        let location = instance.member().map(str::to_string);
        let record = |plan: &Plan,
                      dry_run: bool,
                      moved_aside: Option<String>,
                      target_location: Option<String>| PushRecord {
            of: selected.of.clone(),
            location: location.clone(),
            target_remote: args.to.clone(),
            target_project: target_project.clone(),
            target_instance: name.clone(),
            target_location,
            status: plan.status().to_string(),
            snapshots: plan.sent(),
            seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            moved_aside,
            archived: Vec::new(),
            archives_deleted: Vec::new(),
            dry_run,
        };
        // Fast path, a constant number of requests per run: the standby's instance listing
        // and both sides' storage pool listings (which hold every snapshot) show the replica
        // current. Anything else reads the authoritative lists below.
        if let Some(listed) = self.listed_replica(&target, name)
            && !listed.is_running()
            && listed.config.get(SOURCE_KEY) == Some(&marker)
            && listed.config.get(SOURCE_UUID_KEY) == source_uuid.as_ref()
            && listed.config.get(SOURCE_SETTINGS_KEY) == Some(&settings)
            && !listed.config.contains_key(PROMOTED_KEY)
            && listed.config.contains_key(SYNCED_KEY)
            && args.listings_once
            && let Some(source_pooled) = self.pooled_snapshots(source, name)
            && let Some(replica_pooled) = self.pooled_snapshots(&target, name)
        {
            let restored = listed.config.get(RESTORED_KEY).map(String::as_str);
            let quick = plan(&source_pooled, Some(&replica_pooled), restored, args.live);
            if quick == Plan::UpToDate {
                let on = listed.member().map(str::to_string);
                return Ok(record(&quick, args.dry_run, None, on));
            }
        }
        let source_snapshots = snapshots::list(source, name).map_err(|e| e.to_string())?;
        let source_ids = ids(&source_snapshots);
        let lock_name =
            lock::lock_name(&[prefix(&self.standby_fingerprint), &target_project, name]);
        let _lock = match lock::try_lock(&lock::lock_dir(), &lock_name)
            .map_err(|e| e.to_string())?
        {
            Some(lock) => lock,
            None => {
                return Err(format!(
                    "another incus-push is replicating {}:{name} right now; skipped (the next run will converge)",
                    args.to
                ));
            }
        };
        let found = match instances::get(&target, name) {
            Ok((replica, _)) => Some(replica),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.to_string()),
        };
        let mut replica = None;
        let mut replica_snapshots = None;
        let mut unfinished = false;
        let mut move_aside = None;
        if let Some(found) = found {
            let listed = snapshots::list(&target, name).map_err(|e| e.to_string())?;
            let listed_ids = ids(&listed);
            let facts = ReplicaFacts {
                running: found.is_running(),
                promoted: found.config.contains_key(PROMOTED_KEY),
                marker: found.config.get(SOURCE_KEY).map(String::as_str),
                recorded_uuid: found.config.get(SOURCE_UUID_KEY).map(String::as_str),
                volatile_uuid: found.config.get(UUID_KEY).map(String::as_str),
                synced: found.config.contains_key(SYNCED_KEY),
                config_is_newest_snapshot: listed
                    .last()
                    .is_some_and(|newest| same_settings(&found.config, &newest.config)),
                snapshots: &listed_ids,
            };
            let source_facts = SourceFacts {
                marker: &marker,
                uuid: source_uuid.as_deref(),
                snapshots: &source_ids,
            };
            match judge(&facts, &source_facts, args.adopt) {
                Ok(ownership) => {
                    unfinished = ownership == Ownership::Unfinished;
                    if unfinished {
                        replica_snapshots = None;
                    } else {
                        replica_snapshots = Some(listed);
                    }
                    replica = Some(found);
                }
                Err(refusal) if args.replace && refusal.replaceable() => {
                    move_aside = Some((found, refusal));
                }
                Err(refusal) => return Err(self.refusal_message(&refusal, name)),
            }
        }
        // The replica is ours to change: hold its lease (another host may be promoting it).
        let lease = match (&replica, &move_aside) {
            (None, None) => None,
            _ if args.dry_run => None,
            _ => Some(LeaseGuard::take(
                &target,
                name,
                &args.lease_holder,
                args.break_lease,
            )?),
        };
        // Every check before anything on the standby changes: an unfinished replica is
        // deleted, or a refused one moved aside, only once the copy can go ahead.
        let replica_ids = replica_snapshots.as_deref().map(ids);
        let restored = replica
            .as_ref()
            .filter(|_| !unfinished)
            .and_then(|r| r.config.get(RESTORED_KEY).map(String::as_str));
        let plan = plan(
            &source_ids,
            if unfinished {
                None
            } else {
                replica_ids.as_deref()
            },
            restored,
            args.live,
        );
        if plan == Plan::UpToDate {
            // Nothing to send; the source's identity and own settings may still be new to the
            // replica (a replica made by an older version, a changed autostart).
            if let Some(replica) = &replica
                && !args.dry_run
            {
                let mut changes = BTreeMap::new();
                if let Some(uuid) = &source_uuid
                    && replica.config.get(SOURCE_UUID_KEY) != Some(uuid)
                {
                    changes.insert(SOURCE_UUID_KEY.to_string(), uuid.clone());
                }
                if replica.config.get(SOURCE_SETTINGS_KEY) != Some(&settings) {
                    changes.insert(SOURCE_SETTINGS_KEY.to_string(), settings.clone());
                }
                if !changes.is_empty() {
                    instances::patch_config(&target, name, &changes, None)
                        .map_err(|e| format!("updating the replica's markers: {e}"))?;
                }
            }
            let on = replica
                .as_ref()
                .and_then(|r| r.member())
                .map(str::to_string);
            return Ok(record(&plan, args.dry_run, None, on));
        }
        self.check_profiles(source, &target, instance)?;
        let keep_pool = if unfinished || move_aside.is_some() {
            None
        } else {
            replica.as_ref()
        };
        let pool = args.storage.clone().or_else(|| {
            keep_pool.and_then(|r| root_disk(&r.devices).and_then(|(_, d)| d.get("pool").cloned()))
        });
        if let Some(pool) = &pool
            && !args.live
        {
            self.check_restore_keeps_pool(&target, instance, pool)?;
        }
        let aside_name = move_aside
            .as_ref()
            .map(|_| moved_aside_name(name, chrono::Utc::now()));
        // The standby's own history: what this refresh drops that the standby's policy keeps
        // becomes an archive point first.
        let archiving = match (&args.archive, &plan, &replica_snapshots) {
            (Some(archive), Plan::Refresh { .. }, Some(listed)) if !unfinished => {
                let replica_ids = ids(listed);
                let dropping: Vec<SnapshotId> = replica_ids
                    .iter()
                    .filter(|s| !source_ids.contains(s))
                    .cloned()
                    .collect();
                let archives = self.archives(archive, &marker)?;
                if archive.only_if_present && archives.is_empty() {
                    None
                } else {
                    let decided = archive_plan(
                        &source_ids,
                        &dropping,
                        &archives,
                        &archive.rules,
                        archive.within.as_ref(),
                        chrono::Utc::now(),
                    );
                    Some((archive, decided, listed.clone()))
                }
            }
            _ => None,
        };
        let archived_names: Vec<String> = archiving
            .as_ref()
            .map(|(_, decided, _)| {
                decided
                    .archive
                    .iter()
                    .map(|s| archive_name(name, &s.name))
                    .collect()
            })
            .unwrap_or_default();
        let record = |plan: &Plan,
                      dry_run: bool,
                      aside: Option<String>,
                      on: Option<String>,
                      archived: Vec<String>,
                      deleted: Vec<String>| {
            let mut r = record(plan, dry_run, aside, on);
            r.archived = archived;
            r.archives_deleted = deleted;
            r
        };
        if args.dry_run {
            let deleted = archiving
                .as_ref()
                .map(|(_, d, _)| d.delete.clone())
                .unwrap_or_default();
            let on = replica
                .as_ref()
                .and_then(|r| r.member())
                .map(str::to_string);
            return Ok(record(&plan, true, aside_name, on, archived_names, deleted));
        }
        let mut archived = Vec::new();
        if let (Some((archive, decided, listed)), Some(found)) = (&archiving, &replica)
            && !decided.archive.is_empty()
        {
            archived = self.make_archives(
                archive,
                &target,
                found,
                listed,
                &decided.archive,
                &marker,
                source_uuid.as_deref(),
            )?;
        }
        if let (Some((old, refusal)), Some(aside)) = (&move_aside, &aside_name) {
            settle(&target, name)?;
            self.move_aside(&target, old, aside, refusal)?;
            replica = None;
        } else if unfinished {
            // A first copy that never finished: its snapshot records may lack their data.
            settle(&target, name)?;
            instances::delete(&target, name)
                .map_err(|e| format!("removing the unfinished replica {}:{name}: {e}", args.to))?;
            replica = None;
        }
        let plan = if replica.is_none() {
            Plan::Copy {
                send: source_ids.iter().map(|s| s.name.clone()).collect(),
            }
        } else {
            plan
        };
        let mut overrides: BTreeMap<String, Option<String>> = inert_overrides();
        overrides.insert(SOURCE_KEY.into(), Some(marker.clone()));
        // A snapshot taken on a promoted or fenced instance carries those markers in its
        // configuration, and a restore brings them back: a replica never keeps them.
        for key in [
            PROMOTED_KEY,
            FENCED_KEY,
            AUTOSTART_BEFORE_KEY,
            REPLACED_KEY,
            ARCHIVE_OF_KEY,
            ARCHIVE_TIME_KEY,
        ] {
            overrides.insert(key.into(), None);
        }
        overrides.insert(SOURCE_UUID_KEY.into(), source_uuid.clone());
        overrides.insert(SOURCE_SETTINGS_KEY.into(), Some(settings.clone()));
        if let Some(lease) = &lease {
            // Written again after the restore, which replaces the configuration.
            overrides.insert(LEASE_KEY.into(), Some(lease.value.clone()));
        }
        let placement = super::placement::target(
            &args.placement,
            replica.as_ref().and_then(|r| r.member()),
            instance.member(),
            &self.standby_members,
        );
        let transfer = Transfer {
            source,
            instance,
            target: &target,
            target_name: name,
            refresh: replica.is_some(),
            pool: pool.as_deref(),
            config_overrides: &overrides,
            placement: placement.as_deref(),
        };
        let bar = self.bars.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(address(&selected.of));
        bar.set_message("starting");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        // Incus reports what it sent and its rate (`rootfs: 120.00MB (55.00MB/s)`), not the
        // size to come: no percentage or ETA is possible.
        let report = |progress: &str| bar.set_message(progress.to_string());
        let wait = WaitOptions {
            limit: None,
            progress: Some(&report),
            on_interrupt: None,
        };
        settle(&target, name)?;
        let result = transfer.run(args.mode, &wait);
        bar.finish_and_clear();
        self.bars.remove(&bar);
        let received_on = result.map_err(|e| match e {
            crate::Error::Cancelled => format!(
                "interrupted: the transfer was cancelled; {}:{name} keeps its previous state",
                args.to
            ),
            other => other.to_string(),
        })?;
        fail::fail_point!("push::after-transfer", injected);
        let newest = if args.live {
            None
        } else {
            source_snapshots.last().map(|s| s.name.clone())
        };
        interrupt::without_interruption(|| {
            self.finish_replica(&transfer, &target, name, newest.as_deref(), &overrides)
        })?;
        let mut deleted = Vec::new();
        if let Some((archive, decided, _)) = &archiving {
            let client = self.standby.in_project(&archive.project);
            for old in &decided.delete {
                instances::delete(&client, old).map_err(|e| {
                    format!(
                        "the replica is current, but deleting the archive point {}:{old} (project {}) that the policy no longer keeps failed: {e}; the next refresh tries again (or delete it by hand)",
                        args.to, archive.project
                    )
                })?;
                deleted.push(old.clone());
            }
        }
        Ok(record(
            &plan,
            false,
            aside_name,
            received_on,
            archived,
            deleted,
        ))
    }

    /// The archive points of one source on the standby (none when the archive project does
    /// not exist yet).
    fn archives(&self, archive: &ArchiveOptions, marker: &str) -> Result<Vec<Point>, String> {
        let client = self.standby.in_project(&archive.project);
        let list = match instances::list(&client, false) {
            Ok(list) => list,
            Err(e) if e.is_not_found() || e.message().contains("not found") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(format!("listing the archive points: {e}")),
        };
        Ok(list
            .into_iter()
            .filter(|i| i.config.get(SOURCE_KEY).map(String::as_str) == Some(marker))
            .filter_map(|i| archive_point(&i))
            .collect())
    }

    /// Clones the replica's snapshots `which` into archive instances: inert, marked with
    /// their source and snapshot time, with the snapshot's MAC addresses.
    #[allow(clippy::too_many_arguments)]
    fn make_archives(
        &self,
        archive: &ArchiveOptions,
        target: &Client,
        replica: &Instance,
        listed: &[snapshots::Snapshot],
        which: &[SnapshotId],
        marker: &str,
        source_uuid: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let to = &self.options.to;
        let mut made = Vec::new();
        let name = &replica.name;
        if let Some(pool) = replica.root_pool() {
            let driver = crate::api::projects::pool_driver(target, pool)
                .map_err(|e| format!("reading pool {pool}: {e}"))?;
            if driver == "dir" && !archive.allow_full_copies {
                return Err(format!(
                    "the replica is on pool {pool} (dir): each archive point would be a full copy of the instance, not a copy-on-write clone; nothing was changed: pass --archive-full-copies to accept that, or keep replicas on btrfs, zfs or lvm-thin"
                ));
            }
        }
        let client = self.standby.in_project(&archive.project);
        crate::api::projects::ensure(
            &self.standby,
            &archive.project,
            "incus-standby archive points: replica snapshots kept by the standby's own retention",
        )
        .map_err(|e| format!("making the archive project {}: {e}", archive.project))?;
        for snapshot in which {
            let Some(found) = listed.iter().find(|s| {
                s.name == snapshot.name
                    && s.created_at.timestamp() == snapshot.created_at.timestamp()
            }) else {
                continue;
            };
            let mut config: BTreeMap<String, String> = inert_overrides()
                .into_iter()
                .filter_map(|(key, value)| value.map(|v| (key, v)))
                .collect();
            for (key, value) in &found.config {
                if key.starts_with("volatile.") && key.ends_with(".hwaddr") {
                    config.insert(key.clone(), value.clone());
                }
            }
            config.insert(SOURCE_KEY.into(), marker.to_string());
            if let Some(uuid) = source_uuid {
                config.insert(SOURCE_UUID_KEY.into(), uuid.to_string());
            }
            config.insert(
                ARCHIVE_OF_KEY.into(),
                format!("{}/{name}/{}", target.project(), snapshot.name),
            );
            config.insert(
                ARCHIVE_TIME_KEY.into(),
                snapshot
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            // Another source's archive (same instance name in another project, or a name cut
            // to 63 characters) may hold the readable name: then a suffix tells them apart.
            let mut archive_instance = archive_name(name, &snapshot.name);
            if instances::get(&client, &archive_instance).is_ok() {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(
                    format!(
                        "{marker}/{}@{}",
                        snapshot.name,
                        snapshot.created_at.timestamp()
                    )
                    .as_bytes(),
                );
                let suffix: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
                let base: String = archive_instance.chars().take(56).collect();
                archive_instance = format!("{}-{suffix}", base.trim_end_matches('-'));
            }
            instances::copy_local(
                &client,
                target.project(),
                &format!("{name}/{}", snapshot.name),
                &archive_instance,
                &config,
                replica.member(),
            )
            .map_err(|e| {
                format!(
                    "keeping {to}:{name}/{} as archive point {archive_instance} (project {}): {e}; nothing was refreshed",
                    snapshot.name, archive.project
                )
            })?;
            made.push(archive_instance);
            fail::fail_point!("push::after-archive", injected);
        }
        Ok(made)
    }

    /// Runs `f` with the progress bars cleared from the terminal (for lines written meanwhile).
    pub fn without_bars(&self) -> crate::record::AroundWrite {
        let bars = self.bars.clone();
        std::sync::Arc::new(move |f: &mut dyn FnMut()| bars.suspend(f))
    }

    /// A bar counting the instances done, under the transfers' bars (hidden off a terminal).
    pub fn total_bar(&self, instances: u64) -> indicatif::ProgressBar {
        let bar = self.bars.add(indicatif::ProgressBar::new(instances));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} instances [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
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

    /// One line saying why the replica is left alone and how to go on.
    fn refusal_message(&self, refusal: &Refusal, name: &str) -> String {
        let to = &self.options.to;
        let unchanged = "nothing on the standby was changed";
        match refusal {
            Refusal::Running => format!(
                "the replica {to}:{name} is running (promoted?); incus-push never touches a running replica: stop it on {to} first if it should be a replica again"
            ),
            Refusal::Promoted => format!(
                "{to}:{name} was promoted by incus-failover and holds the newest data; incus-push never overwrites it: fail back with incus-failover failback"
            ),
            Refusal::OtherSource(found) => format!(
                "{to}:{name} is a replica of another source ({found}); {unchanged}: rename one of them, or take it over with --adopt"
            ),
            Refusal::NotOurs => format!(
                "{to}:{name} exists and was not made by incus-push; {unchanged}: rename it, or take it over with --adopt (its snapshots not on the source will be deleted)"
            ),
            Refusal::IdentityChanged { recorded, now } => format!(
                "the source is another instance than the one {to}:{name} copies (volatile.uuid {now}, the replica records {recorded}: deleted and re-created?); {unchanged}, so its history stays: rerun with --replace to move the old replica aside (renamed, not deleted) and copy the new instance"
            ),
            Refusal::NothingInCommon { replica_snapshots } => format!(
                "{to}:{name} holds {replica_snapshots} snapshot(s) and the source has none of them; a refresh would delete them all, so {unchanged}: rerun with --replace to move the old replica aside (renamed, not deleted) and copy the source"
            ),
            Refusal::SourceHasNone { replica_snapshots } => format!(
                "the source has no snapshot, and a refresh would delete the {replica_snapshots} snapshot(s) of {to}:{name}; {unchanged}: take a snapshot first (incus-snap), or rerun with --replace to move the old replica aside"
            ),
            Refusal::UnfinishedWithOtherHistory { missing_on_source } => format!(
                "{to}:{name} is an unfinished first copy holding {missing_on_source} snapshot(s) the source no longer has; copying again would delete them, so {unchanged}: rerun with --replace to move it aside"
            ),
        }
    }

    /// `--replace`: renames the refused replica to `NAME-replaced-…` (never deletes it) and
    /// marks it, still inert, so that nothing of the history is lost.
    fn move_aside(
        &self,
        target: &Client,
        old: &Instance,
        aside: &str,
        refusal: &Refusal,
    ) -> Result<(), String> {
        let to = &self.options.to;
        // Marked and inert first, then renamed: a run cut in between leaves a marked replica
        // under its own name, which the next --replace moves aside.
        let mut changes: BTreeMap<String, String> = inert_overrides()
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect();
        changes.insert(LEASE_KEY.into(), String::new());
        changes.insert(
            REPLACED_KEY.into(),
            format!(
                "{} ({refusal:?})",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        instances::patch_config(target, &old.name, &changes, None).map_err(|e| {
            format!(
                "marking {to}:{} before moving it aside: {e}; nothing else was changed",
                old.name
            )
        })?;
        instances::rename(target, &old.name, aside).map_err(|e| {
            format!(
                "moving {to}:{} aside to {aside}: {e}; it keeps its name and its data",
                old.name
            )
        })?;
        fail::fail_point!("push::after-move-aside", injected);
        Ok(())
    }

    fn check_profiles(
        &self,
        source: &Client,
        target: &Client,
        instance: &Instance,
    ) -> Result<(), String> {
        let known = {
            let mut cache = self
                .profiles
                .lock()
                .map_err(|_| "profile cache poisoned".to_string())?;
            match cache.get(target.project()) {
                Some(known) => known.clone(),
                None => {
                    let names: BTreeSet<String> = profiles::names(target)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .collect();
                    cache.insert(target.project().to_string(), names.clone());
                    names
                }
            }
        };
        let missing: Vec<&String> = instance
            .profiles
            .iter()
            .filter(|p| !known.contains(*p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if !self.options.sync_profiles {
            let first = missing[0];
            return Err(format!(
                "profile(s) {list} missing on {} (project {}); nothing was sent: copy them with `incus profile copy {}:{first} {}:{first}` or rerun with --sync-profiles",
                self.options.to,
                target.project(),
                source.remote(),
                self.options.to
            ));
        }
        if self.options.dry_run {
            return Ok(());
        }
        for name in missing {
            let profile = profiles::get(source, name).map_err(|e| e.to_string())?;
            match profiles::create(target, &profile) {
                Ok(()) => {}
                // Another job copied it meanwhile.
                Err(e) if e.status() == Some(409) || e.message().contains("already exists") => {}
                Err(e) => return Err(format!("copying profile {name}: {e}")),
            }
            if let Ok(mut cache) = self.profiles.lock()
                && let Some(known) = cache.get_mut(target.project())
            {
                known.insert(name.clone());
            }
        }
        Ok(())
    }

    /// Incus 6.0 restores a snapshot's own devices: when the source's root disk comes from its
    /// profiles, a restored replica gets the root disk of the standby's profiles, whatever pool
    /// its volume is on, and can no longer start. Refuse that before sending anything.
    fn check_restore_keeps_pool(
        &self,
        target: &Client,
        instance: &Instance,
        pool: &str,
    ) -> Result<(), String> {
        let restored_pool = match root_disk(&instance.devices) {
            Some((_, device)) => device.get("pool").cloned(),
            None => {
                let mut found = None;
                for name in &instance.profiles {
                    let profile = profiles::get(target, name).map_err(|e| e.to_string())?;
                    if let Some((_, device)) = root_disk(&profile.devices) {
                        found = device.get("pool").cloned();
                    }
                }
                found
            }
        };
        match restored_pool {
            Some(restored) if restored == pool => Ok(()),
            restored => Err(format!(
                "the replica's root disk would be on pool {pool}, but restoring it to its newest snapshot gives it the root disk of {} (Incus restores a snapshot's devices), and it could not start; nothing was sent: on {} make the profile put the root disk on {pool}, or use --live (no restore)",
                restored.map_or_else(|| "no pool".to_string(), |p| format!("pool {p}")),
                self.options.to
            )),
        }
    }

    /// Restores the replica to the newest snapshot and marks it inert; with `--live`, writes
    /// the source's current config with the inert keys instead (a refresh does not update
    /// the config).
    fn finish_replica(
        &self,
        transfer: &Transfer,
        target: &Client,
        name: &str,
        newest: Option<&str>,
        overrides: &BTreeMap<String, Option<String>>,
    ) -> Result<(), String> {
        let synced_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(snapshot) = newest {
            snapshots::restore(target, name, snapshot)
                .map_err(|e| format!("restoring the replica to {snapshot}: {e}"))?;
            fail::fail_point!("push::after-restore", injected);
            // The replica is now the snapshot, configuration included: only the inert keys
            // and the markers change (a merge, no operation). Until this write it carries
            // the snapshot's own settings (autostart among them): retry a failure at once;
            // a replica left so is still recognised, and repaired, by the next run.
            let mut changes: BTreeMap<String, String> = overrides
                .iter()
                .map(|(key, value)| (key.clone(), value.clone().unwrap_or_default()))
                .collect();
            changes.insert(RESTORED_KEY.into(), snapshot.to_string());
            changes.insert(SYNCED_KEY.into(), synced_at);
            let mut attempt = 0;
            return loop {
                attempt += 1;
                let result = write_config(target, name, &changes);
                match result {
                    Ok(()) => break Ok(()),
                    Err(e) if attempt >= 3 => {
                        break Err(format!(
                            "writing the replica's configuration after restoring it to {snapshot}: {e}; the replica is recognised and made inert again by the next run"
                        ));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
                }
            };
        }
        // --live: the refresh left the configuration of the first copy; write the source's.
        let (replica, etag) = instances::get(target, name).map_err(|e| e.to_string())?;
        let mut config = transfer.target_config();
        config.remove("volatile.base_image");
        for (key, value) in &replica.config {
            if key.starts_with("volatile.") {
                config.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in overrides {
            match value {
                Some(v) => config.insert(key.clone(), v.clone()),
                None => config.remove(key),
            };
        }
        config.remove(RESTORED_KEY);
        config.insert(SYNCED_KEY.into(), synced_at);
        let mut body = replica.writable();
        body["config"] = serde_json::json!(config);
        body["devices"] = serde_json::json!(transfer.target_devices());
        body["profiles"] = serde_json::json!(transfer.instance.profiles);
        instances::put(target, name, body, etag).map_err(|e| {
            // Keep the replica recognisable and inert even so.
            let _ = instances::patch_config(target, name, &config, None);
            format!("writing the replica's configuration: {e}")
        })
    }
}

/// Waits for operations still working on the replica (a transfer whose run was killed goes on
/// on the server): a refresh started meanwhile would fail on the busy instance.
fn settle(target: &Client, name: &str) -> Result<(), String> {
    let url = format!("/1.0/instances/{name}");
    let running = crate::api::operations::running(target).map_err(|e| e.to_string())?;
    for op in running {
        let concerned = op.resources.get("instances").is_some_and(|list| {
            list.iter()
                .any(|u| u.split('?').next() == Some(url.as_str()))
        });
        if concerned {
            let options = WaitOptions {
                limit: Some(std::time::Duration::from_secs(1800)),
                ..WaitOptions::default()
            };
            // Its outcome does not matter: the comparison is made again by Incus's refresh.
            let _ = target.wait(&op, &options);
        }
    }
    Ok(())
}

/// A replica's lease, released when dropped.
pub struct LeaseGuard {
    client: Client,
    name: String,
    holder: String,
    /// The value written in the replica's configuration.
    pub value: String,
    /// Held already by an outer step of this run, which releases it.
    renewed: bool,
    /// Stops the renewing thread (dropped with the guard).
    stop: Option<std::sync::mpsc::Sender<()>>,
}

/// How long a lease lasts without renewal, and how often its holder renews it: a killed
/// holder blocks others for at most [`LEASE_TTL_MINUTES`], a long transfer keeps its lease.
pub const LEASE_TTL_MINUTES: i64 = 30;
const LEASE_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl LeaseGuard {
    /// Takes the lease on a replica (see [`lease::acquire`]) and renews it every ten minutes
    /// for as long as the guard lives.
    pub fn take(client: &Client, name: &str, holder: &str, force: bool) -> Result<Self, String> {
        let ttl = chrono::Duration::minutes(LEASE_TTL_MINUTES);
        let taken = lease::acquire(client, name, holder, ttl, force)?;
        let stop = if taken.renewed {
            None
        } else {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let (client, name, holder) = (client.clone(), name.to_string(), holder.to_string());
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(LEASE_RENEW_EVERY)
                {
                    // A renewal that fails (the server away a moment) is tried again later.
                    let _ = lease::acquire(&client, &name, &holder, ttl, false);
                }
            });
            Some(stop)
        };
        Ok(LeaseGuard {
            client: client.clone(),
            name: name.to_string(),
            holder: holder.to_string(),
            value: taken.value,
            renewed: taken.renewed,
            stop,
        })
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if !self.renewed {
            lease::release(&self.client, &self.name, &self.holder);
        }
    }
}

/// The keys that make a replica inert: no autostart, and no scheduled snapshots whatever its
/// profiles say. An empty value does not override a profile in Incus, so the schedule is
/// disabled through `snapshots.schedule.stopped=false`: Incus skips scheduled snapshots of a
/// stopped instance unless that key is true, and a replica is always stopped.
pub fn inert_overrides() -> BTreeMap<String, Option<String>> {
    BTreeMap::from([
        ("boot.autostart".to_string(), Some("false".to_string())),
        ("snapshots.schedule".to_string(), None),
        (
            "snapshots.schedule.stopped".to_string(),
            Some("false".to_string()),
        ),
    ])
}

/// Merges the replica's configuration keys (a failpoint stands in for a failing server).
fn write_config(
    target: &Client,
    name: &str,
    changes: &BTreeMap<String, String>,
) -> Result<(), String> {
    fail::fail_point!("push::write-config", |arg| Err(injected_error(arg)));
    instances::patch_config(target, name, changes, None).map_err(|e| e.to_string())
}

/// The source's own values of the keys a replica overrides, as JSON (absent keys left out).
/// A source fenced by incus-failover has `boot.autostart=false` for the fencing; its own value
/// is the one recorded before.
pub fn source_settings(config: &BTreeMap<String, String>) -> String {
    let mut kept: BTreeMap<String, String> = inert_overrides()
        .keys()
        .filter_map(|key| config.get(key).map(|value| (key.clone(), value.clone())))
        .collect();
    if let Some(before) = config.get(AUTOSTART_BEFORE_KEY) {
        if before == AUTOSTART_UNSET {
            kept.remove("boot.autostart");
        } else {
            kept.insert("boot.autostart".into(), before.clone());
        }
    }
    serde_json::to_string(&kept).unwrap_or_else(|_| "{}".to_string())
}

/// The config changes that give a replica its source's own settings back in place of the
/// inert ones (from `user.incus-standby.source-settings`; a key the source did not set is
/// removed): what a promoted or failed-back instance runs with.
pub fn own_settings(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let settings: BTreeMap<String, String> = config
        .get(SOURCE_SETTINGS_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    inert_overrides()
        .into_keys()
        .map(|key| {
            let value = settings.get(&key).cloned().unwrap_or_default();
            (key, value)
        })
        .collect()
}

/// True when two configurations hold the same settings, volatile keys and the lease (taken
/// after the restore by the run that resumes) aside.
fn same_settings(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let settings = |c: &BTreeMap<String, String>| {
        c.iter()
            .filter(|(key, _)| !key.starts_with("volatile.") && key.as_str() != LEASE_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    settings(a) == settings(b)
}

/// A failure injected by a test (`FAILPOINTS=push::after-restore=return(abort)`): `abort`
/// ends the process at once, as `kill -9` would; anything else is an error.
#[allow(dead_code)]
fn injected<T>(arg: Option<String>) -> Result<T, String> {
    Err(injected_error(arg))
}

/// The failure a test injects with a failpoint's `return(ARG)`: `abort` ends the process at
/// once, as `kill -9` would (no cleanup at all); anything else is an error message. Shared by
/// every tool's failpoints.
#[allow(dead_code)]
pub fn injected_error(arg: Option<String>) -> String {
    if arg.as_deref() == Some("abort") {
        std::process::abort();
    }
    format!("injected failure ({})", arg.unwrap_or_default())
}

fn prefix(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inert_config_has_no_autostart_and_no_schedule() {
        let o = inert_overrides();
        assert_eq!(o["boot.autostart"].as_deref(), Some("false"));
        assert_eq!(o["snapshots.schedule"], None);
        assert_eq!(o["snapshots.schedule.stopped"].as_deref(), Some("false"));
    }

    #[test]
    fn source_settings_keep_the_fenced_sources_own_autostart() {
        let config = BTreeMap::from([
            ("boot.autostart".to_string(), "false".to_string()),
            (AUTOSTART_BEFORE_KEY.to_string(), "true".to_string()),
            ("snapshots.schedule".to_string(), "@daily".to_string()),
            ("user.other".to_string(), "x".to_string()),
        ]);
        assert_eq!(
            source_settings(&config),
            r#"{"boot.autostart":"true","snapshots.schedule":"@daily"}"#
        );
        let unset = BTreeMap::from([
            ("boot.autostart".to_string(), "false".to_string()),
            (
                AUTOSTART_BEFORE_KEY.to_string(),
                AUTOSTART_UNSET.to_string(),
            ),
        ]);
        assert_eq!(source_settings(&unset), "{}");
    }

    #[test]
    fn own_settings_give_back_what_the_source_had_and_unset_the_rest() {
        let config = BTreeMap::from([(
            SOURCE_SETTINGS_KEY.to_string(),
            r#"{"boot.autostart":"true"}"#.to_string(),
        )]);
        let changes = own_settings(&config);
        assert_eq!(changes["boot.autostart"], "true");
        assert_eq!(changes["snapshots.schedule"], "");
        assert_eq!(changes["snapshots.schedule.stopped"], "");
    }

    #[test]
    fn fingerprints_are_shortened_safely() {
        assert_eq!(prefix("0123456789abcdef"), "0123456789ab");
        assert_eq!(prefix("abc"), "abc");
    }
}
