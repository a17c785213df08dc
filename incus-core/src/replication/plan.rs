//! What must be sent, and whether it may be: pure comparisons of the source and its replica.
//!
//! Incus's refresh compares snapshots by name and creation time to the second; so do we. A
//! replica is current when it has exactly the source's snapshots and its last transfer ended
//! with the restore to the newest of them.
//!
//! A refresh makes the replica a mirror: it deletes every replica snapshot the source does not
//! have. [`judge`] refuses the cases where that would destroy history the source can never send
//! again (another instance under the same name, nothing in common, a source without
//! snapshots), so that the standby, often the only other copy, is never emptied silently.

use chrono::{DateTime, Utc};

/// A snapshot as both sides are compared: its name and its creation time in whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotId {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl SnapshotId {
    pub fn new(name: &str, created_at: DateTime<Utc>) -> Self {
        SnapshotId {
            name: name.to_string(),
            created_at: DateTime::from_timestamp(created_at.timestamp(), 0).unwrap_or(created_at),
        }
    }
}

/// The decision for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No replica yet: a full copy of the instance and every snapshot.
    Copy { send: Vec<String> },
    /// A refresh: these snapshots are sent, these are dropped from the replica.
    Refresh {
        send: Vec<String>,
        drop: Vec<String>,
    },
    /// Nothing to do.
    UpToDate,
}

impl Plan {
    /// The record's `status` word.
    pub fn status(&self) -> &'static str {
        match self {
            Plan::Copy { .. } => "copied",
            Plan::Refresh { .. } => "refreshed",
            Plan::UpToDate => "up-to-date",
        }
    }

    /// The snapshots that will be sent.
    pub fn sent(&self) -> Vec<String> {
        match self {
            Plan::Copy { send } | Plan::Refresh { send, .. } => send.clone(),
            Plan::UpToDate => Vec::new(),
        }
    }
}

/// Compares the lists (both oldest first). `replica` is `None` when there is no replica;
/// `restored` is the snapshot the replica was last restored to; `live` asks for the live
/// state, which cannot be compared, so it always refreshes.
pub fn plan(
    source: &[SnapshotId],
    replica: Option<&[SnapshotId]>,
    restored: Option<&str>,
    live: bool,
) -> Plan {
    let Some(replica) = replica else {
        return Plan::Copy {
            send: source.iter().map(|s| s.name.clone()).collect(),
        };
    };
    let send: Vec<String> = source
        .iter()
        .filter(|s| !replica.contains(s))
        .map(|s| s.name.clone())
        .collect();
    let drop: Vec<String> = replica
        .iter()
        .filter(|r| !source.contains(r))
        .map(|r| r.name.clone())
        .collect();
    let newest = source.last().map(|s| s.name.as_str());
    let restored_to_newest = newest.is_some() && newest == restored;
    if send.is_empty() && drop.is_empty() && !live && restored_to_newest {
        Plan::UpToDate
    } else {
        Plan::Refresh { send, drop }
    }
}

/// A point of an instance's history on the standby: a snapshot of the replica, or an archive
/// point (an instance cloned from a replica snapshot before a refresh dropped it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The snapshot's name (for an archive, the snapshot it was cloned from).
    pub snapshot: String,
    pub created_at: DateTime<Utc>,
    /// The archive instance's name; `None` for a replica snapshot.
    pub archive: Option<String>,
}

/// What the standby's retention decides around one refresh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchivePlan {
    /// Replica snapshots the refresh drops and the policy keeps: clone them first.
    pub archive: Vec<SnapshotId>,
    /// Archive instances the policy no longer keeps: delete them after the refresh.
    pub delete: Vec<String>,
}

/// The standby's retention around a refresh: the policy sees every point the standby will
/// hold (the replica after the refresh, the snapshots it drops, the archives), as
/// incus-prune's rules would; a dropped snapshot it keeps becomes an archive point, an
/// archive it does not keep goes. Points dated in the future are kept, as in incus-prune.
pub fn archive_plan(
    after: &[SnapshotId],
    dropping: &[SnapshotId],
    archives: &[Point],
    rules: &crate::policy::Rules,
    within: Option<&crate::duration::ExpiryDuration>,
    now: DateTime<Utc>,
) -> ArchivePlan {
    use crate::policy::{Candidate, decide, newest_not_after};
    let candidate = |name: &str, created_at: DateTime<Utc>| Candidate {
        name: name.to_string(),
        created_at,
    };
    let mut candidates: Vec<Candidate> = after
        .iter()
        .chain(dropping)
        .map(|s| candidate(&s.name, s.created_at))
        .chain(
            archives
                .iter()
                .map(|a| candidate(&a.snapshot, a.created_at)),
        )
        .filter(|c| c.created_at <= now)
        .collect();
    candidates.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    candidates.dedup();
    let mut rules = rules.clone();
    if let Some(within) = within {
        let newest = newest_not_after(&candidates, now).unwrap_or(DateTime::<Utc>::MIN_UTC);
        rules.within_cutoff = Some(
            within
                .subtract_from(newest)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        );
    }
    let kept: Vec<Candidate> = decide(&candidates, &rules)
        .into_iter()
        .filter(|d| d.keep())
        .map(|d| candidate(&d.name, d.created_at))
        .collect();
    let keeps = |name: &str, at: DateTime<Utc>| {
        at > now
            || kept
                .iter()
                .any(|k| k.name == name && k.created_at.timestamp() == at.timestamp())
    };
    let archived = |s: &SnapshotId| {
        archives
            .iter()
            .any(|a| a.snapshot == s.name && a.created_at.timestamp() == s.created_at.timestamp())
    };
    ArchivePlan {
        archive: dropping
            .iter()
            .filter(|s| keeps(&s.name, s.created_at) && !archived(s))
            .cloned()
            .collect(),
        delete: archives
            .iter()
            .filter(|a| !keeps(&a.snapshot, a.created_at))
            .filter_map(|a| a.archive.clone())
            .collect(),
    }
}

/// The archive instance's name: `INSTANCE--SNAPSHOT`, with what Incus does not take in an
/// instance name replaced by `-`, cut to 63 characters.
pub fn archive_name(instance: &str, snapshot: &str) -> String {
    let clean: String = format!("{instance}--{snapshot}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = clean.chars().take(63).collect();
    cut.trim_end_matches('-').to_string()
}

/// What the replica on the standby says about itself.
#[derive(Debug, Clone, Default)]
pub struct ReplicaFacts<'a> {
    pub running: bool,
    /// Promoted by incus-failover (`user.incus-standby.promoted`).
    pub promoted: bool,
    /// Its `user.incus-standby.source` marker.
    pub marker: Option<&'a str>,
    /// Its `user.incus-standby.source-uuid`: the `volatile.uuid` of the instance it copies.
    pub recorded_uuid: Option<&'a str>,
    /// Its own `volatile.uuid` (after a restore: the source's, from the snapshot).
    pub volatile_uuid: Option<&'a str>,
    /// Its last transfer completed (`user.incus-standby.synced-at`).
    pub synced: bool,
    /// Its configuration is its newest snapshot's, volatile keys aside: a restore whose
    /// configuration write never happened.
    pub config_is_newest_snapshot: bool,
    pub snapshots: &'a [SnapshotId],
}

/// What the source is.
#[derive(Debug, Clone)]
pub struct SourceFacts<'a> {
    /// The marker its replica carries (`FINGERPRINT12/PROJECT/INSTANCE`).
    pub marker: &'a str,
    /// Its `volatile.uuid`.
    pub uuid: Option<&'a str>,
    pub snapshots: &'a [SnapshotId],
}

/// Why the replica is ours to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Marked as a replica of this source.
    Ours,
    /// Marked, but its first copy never finished: copied again from scratch.
    Unfinished,
    /// Its markers were lost because a restore was interrupted before the configuration was
    /// written again; everything else says it is this source's replica, and a refresh would
    /// delete nothing the source lacks.
    InterruptedRestore,
    /// Not ours, taken over with `--adopt`.
    Adopted,
}

/// Why the replica may not be refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It runs (promoted, or started by hand).
    Running,
    /// incus-failover promoted it: it holds the newest data.
    Promoted,
    /// A replica of another source.
    OtherSource(String),
    /// Not made by incus-push.
    NotOurs,
    /// The source is another instance than the one the replica copies (deleted and
    /// re-created under the same name).
    IdentityChanged { recorded: String, now: String },
    /// The replica has snapshots and the source shares none of them.
    NothingInCommon { replica_snapshots: usize },
    /// The source has no snapshot: a refresh would delete all of the replica's.
    SourceHasNone { replica_snapshots: usize },
    /// A first copy that never finished holds snapshots the source no longer has: copying
    /// again would delete them.
    UnfinishedWithOtherHistory { missing_on_source: usize },
}

impl Refusal {
    /// A short name for the kind of refusal, as a moved-aside copy records it.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Running => "running",
            Refusal::Promoted => "promoted",
            Refusal::OtherSource(_) => "other-source",
            Refusal::NotOurs => "not-ours",
            Refusal::IdentityChanged { .. } => "identity-changed",
            Refusal::NothingInCommon { .. } => "nothing-in-common",
            Refusal::SourceHasNone { .. } => "source-has-none",
            Refusal::UnfinishedWithOtherHistory { .. } => "unfinished-with-other-history",
        }
    }

    /// `--replace` may move such a replica aside: one of ours whose history a refresh would
    /// destroy. Never a running or promoted one, nor an instance that is not ours (`--adopt`
    /// or a rename are for those).
    pub fn replaceable(&self) -> bool {
        matches!(
            self,
            Refusal::IdentityChanged { .. }
                | Refusal::NothingInCommon { .. }
                | Refusal::SourceHasNone { .. }
                | Refusal::UnfinishedWithOtherHistory { .. }
        )
    }
}

/// Decides whether the replica may be refreshed from this source, before anything changes.
pub fn judge(
    replica: &ReplicaFacts,
    source: &SourceFacts,
    adopt: bool,
) -> Result<Ownership, Refusal> {
    if replica.running {
        return Err(Refusal::Running);
    }
    if replica.promoted {
        return Err(Refusal::Promoted);
    }
    if let (Some(recorded), Some(now)) = (replica.recorded_uuid, source.uuid)
        && recorded != now
    {
        return Err(Refusal::IdentityChanged {
            recorded: recorded.to_string(),
            now: now.to_string(),
        });
    }
    let ownership = match replica.marker {
        Some(marker) if marker == source.marker && !replica.synced => Ownership::Unfinished,
        Some(marker) if marker == source.marker => Ownership::Ours,
        None if replica.config_is_newest_snapshot
            && replica.volatile_uuid.is_some()
            && replica.volatile_uuid == source.uuid
            && replica
                .snapshots
                .iter()
                .all(|snapshot| source.snapshots.contains(snapshot)) =>
        {
            Ownership::InterruptedRestore
        }
        _ if adopt => Ownership::Adopted,
        Some(other) => return Err(Refusal::OtherSource(other.to_string())),
        None => return Err(Refusal::NotOurs),
    };
    // An unfinished first copy holds nothing but what this source sent, unless the source
    // has lost snapshots since.
    if ownership == Ownership::Unfinished {
        let missing = replica
            .snapshots
            .iter()
            .filter(|snapshot| !source.snapshots.contains(snapshot))
            .count();
        if missing > 0 {
            return Err(Refusal::UnfinishedWithOtherHistory {
                missing_on_source: missing,
            });
        }
    } else if !replica.snapshots.is_empty() {
        if source.snapshots.is_empty() {
            return Err(Refusal::SourceHasNone {
                replica_snapshots: replica.snapshots.len(),
            });
        }
        if !replica
            .snapshots
            .iter()
            .any(|snapshot| source.snapshots.contains(snapshot))
        {
            return Err(Refusal::NothingInCommon {
                replica_snapshots: replica.snapshots.len(),
            });
        }
    }
    Ok(ownership)
}

/// The name a replaced replica is moved to: `NAME-replaced-YYYYMMDD-HHMMSS`, shortened to
/// Incus's 63 characters by cutting the instance name.
pub fn moved_aside_name(name: &str, at: DateTime<Utc>) -> String {
    let suffix = at.format("-replaced-%Y%m%d-%H%M%S").to_string();
    let room = 63usize.saturating_sub(suffix.len());
    let base: String = name.chars().take(room).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// How the replica is reached before the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// No replica: a first copy.
    FreshCopy,
    /// The replica is ours (or adopted): a refresh.
    Refresh,
    /// A first copy that never finished: deleted, then copied anew (its snapshot records may
    /// lack their data).
    ReplaceUnfinished,
    /// `--replace`: the refused replica is renamed to `aside` (kept), then copied anew.
    MoveAside { aside: String, refusal: Refusal },
}

/// What the standby's retention does around this refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDecision {
    /// The standby project of the archive points.
    pub project: String,
    /// Archive points on a `dir` pool are full copies: only with this.
    pub allow_full_copies: bool,
    pub plan: ArchivePlan,
}

/// Everything replicating one instance will do, decided before anything changes.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What is sent (the record's status and snapshots).
    pub plan: Plan,
    pub start: Start,
    /// Profiles the standby lacks, to copy first.
    pub copy_profiles: Vec<String>,
    /// The pool for the root disk of a new replica.
    pub pool: Option<String>,
    /// Incus's `?target=` on a clustered standby.
    pub placement: Option<String>,
    pub archive: Option<ArchiveDecision>,
    /// The snapshot the replica is restored to after the transfer (`None`: `--live`).
    pub restore_to: Option<String>,
    /// What the replica is marked with (during the transfer: no restore, not synced).
    pub markers: crate::markers::ReplicaMarkers,
    /// For a replica that is current: markers it lacks (identity, own settings), else empty.
    pub marker_updates: crate::markers::ConfigPatch,
    /// The existing replica's cluster member.
    pub replica_location: Option<String>,
    /// Replica snapshots that would expire by themselves (a copy takes its source's
    /// `expires_at`): the standby's own retention decides instead, so their expiry is
    /// removed.
    pub clear_expiry: Vec<String>,
    /// The custom volumes the instance attaches.
    pub volumes: Vec<super::volumes::VolumeDecision>,
}

/// What [`decide`] is given besides what was observed.
pub struct DecideInput<'a> {
    pub options: &'a super::Options,
    pub standby_members: &'a [String],
    pub source: &'a crate::api::instances::Instance,
    pub now: DateTime<Utc>,
}

/// Refuses, before anything is read, a source that is the standby itself, or one fenced for a
/// promotion (only that promotion's final sync replicates it).
pub fn check_source(
    source_fingerprint: &str,
    standby_fingerprint: &str,
    selected: &crate::select::Selected,
    options: &super::Options,
) -> Result<(), super::Error> {
    if source_fingerprint == standby_fingerprint {
        return Err(super::Error::Unsafe(format!(
            "{} and {} are the same server; --to must name the standby",
            selected.of.remote, options.to
        )));
    }
    let fenced = crate::markers::PrimaryMarkers::from_config(&selected.instance.config).fenced;
    if let Some(fenced) = fenced
        && !options.allows_fenced_source()
    {
        return Err(super::Error::Unsafe(format!(
            "{}:{} was fenced for a promotion ({}); incus-push leaves it alone: fail back with incus-failover failback, or remove {} if the promotion was abandoned",
            selected.of.remote,
            selected.of.instance,
            fenced,
            crate::markers::key::FENCED
        )));
    }
    Ok(())
}

/// Decides the whole replication of one instance from what was observed: whether the replica
/// may be touched at all, how it is reached, what is sent, where, what the standby's history
/// keeps, and what the replica is marked with.
pub fn decide(
    observed: &super::observe::Observed,
    input: &DecideInput,
) -> Result<Decision, super::Error> {
    use crate::markers::{ConfigPatch, ReplicaMarkers};
    let options = input.options;
    let (start, ours) = judge_replica(observed, input)?;
    let point = if options.live() {
        None
    } else {
        observed
            .source_ids
            .last()
            .map(|s| (s.name.as_str(), s.created_at))
    };
    let volumes = observed
        .volumes
        .iter()
        .map(|side| super::volumes::decide(side, point, &options.to, input.now))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan(
        &observed.source_ids,
        ours.map(|r| r.ids.as_slice()),
        ours.and_then(|r| r.markers.restored.as_deref()),
        options.live(),
    );
    let markers = ReplicaMarkers {
        source: Some(observed.source_id.clone()),
        source_uuid: observed.source_uuid.clone(),
        source_settings: Some(observed.settings.clone()),
        source_members: observed.source_members.clone(),
        ..ReplicaMarkers::default()
    };
    let replica_location = match start {
        Start::MoveAside { .. } => None,
        _ => observed.replica.as_ref().and_then(|r| r.instance.member()),
    }
    .map(str::to_string);
    let mut decision = Decision {
        plan,
        start,
        copy_profiles: Vec::new(),
        pool: None,
        placement: None,
        archive: None,
        restore_to: None,
        markers,
        marker_updates: ConfigPatch::default(),
        replica_location,
        clear_expiry: Vec::new(),
        volumes,
    };
    if options.replicas_never_expire() {
        decision.clear_expiry = expiring(observed, ours, &decision.plan);
    }
    if decision.plan == Plan::UpToDate {
        if let Some(replica) = ours {
            decision.marker_updates = marker_updates(observed, replica);
        }
        return Ok(decision);
    }
    decision.copy_profiles = missing_profiles(observed, input)?;
    decision.pool = options.storage().map(str::to_string).or_else(|| {
        ours.and_then(|r| {
            crate::api::instances::root_disk(&r.instance.devices)
                .and_then(|(_, d)| d.get("pool").cloned())
        })
    });
    if let Some(pool) = &decision.pool
        && !options.live()
    {
        check_restore_keeps_pool(observed, pool, &options.to)?;
    }
    decision.archive = archive_decision(observed, ours, &decision.plan, input);
    if ours.is_none() {
        decision.plan = Plan::Copy {
            send: observed.source_ids.iter().map(|s| s.name.clone()).collect(),
        };
    }
    decision.placement = super::placement::target(
        &options.placement,
        ours.and_then(|r| r.instance.member()),
        input.source.member(),
        input.standby_members,
    );
    decision.restore_to = if options.live() {
        None
    } else {
        observed.source_snapshots.last().map(|s| s.name.clone())
    };
    Ok(decision)
}

/// Judges the existing replica: ours to refresh (returned), a first copy to start again, one
/// to move aside (`--replace`), or refused.
fn judge_replica<'o>(
    observed: &'o super::observe::Observed,
    input: &DecideInput,
) -> Result<(Start, Option<&'o super::observe::ReplicaSide>), super::Error> {
    let Some(replica) = &observed.replica else {
        return Ok((Start::FreshCopy, None));
    };
    let options = input.options;
    let facts = ReplicaFacts {
        running: replica.instance.is_running(),
        promoted: replica.markers.promoted.is_some(),
        marker: replica.markers.source.as_ref().map(|s| s.as_str()),
        recorded_uuid: replica.markers.source_uuid.as_deref(),
        volatile_uuid: crate::markers::instance_uuid(&replica.instance.config).map(String::as_str),
        synced: replica.markers.synced_at.is_some(),
        config_is_newest_snapshot: replica.config_is_newest_snapshot,
        snapshots: &replica.ids,
    };
    let source = SourceFacts {
        marker: observed.source_id.as_str(),
        uuid: observed.source_uuid.as_deref(),
        snapshots: &observed.source_ids,
    };
    match judge(&facts, &source, options.adopt()) {
        Ok(Ownership::Unfinished) => Ok((Start::ReplaceUnfinished, None)),
        Ok(_) => Ok((Start::Refresh, Some(replica))),
        Err(refusal) if options.replace() && refusal.replaceable() => Ok((
            Start::MoveAside {
                aside: moved_aside_name(&input.source.name, input.now),
                refusal,
            },
            None,
        )),
        Err(refusal) => Err(super::Error::Refused {
            refusal,
            standby: options.to.clone(),
            instance: input.source.name.clone(),
        }),
    }
}

/// The snapshots the replica will hold with an expiry of their own: those sent from a source
/// snapshot that expires, and those it holds already with one (made by an earlier release).
fn expiring(
    observed: &super::observe::Observed,
    ours: Option<&super::observe::ReplicaSide>,
    plan: &Plan,
) -> Vec<String> {
    let sent = plan.sent();
    let mut names: Vec<String> = observed
        .source_snapshots
        .iter()
        .filter(|s| s.expires_at.is_some() && sent.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    if let Some(replica) = ours {
        let kept = replica
            .snapshots
            .iter()
            .filter(|s| s.expires_at.is_some())
            .filter(|s| observed.source_ids.iter().any(|id| id.name == s.name))
            .map(|s| s.name.clone());
        names.extend(kept);
    }
    names.sort();
    names.dedup();
    names
}

/// Nothing to send; the source's identity and own settings may still be new to the replica
/// (a replica made by an older version, a changed autostart).
fn marker_updates(
    observed: &super::observe::Observed,
    replica: &super::observe::ReplicaSide,
) -> crate::markers::ConfigPatch {
    let mut wanted = replica.markers.clone();
    if observed.source_uuid.is_some() {
        wanted.source_uuid = observed.source_uuid.clone();
    }
    wanted.source_settings = Some(observed.settings.clone());
    wanted.source_members = observed.source_members.clone();
    replica.markers.changes_to(&wanted)
}

/// The profiles the standby lacks: to copy (`--sync-profiles`), else a refusal.
fn missing_profiles(
    observed: &super::observe::Observed,
    input: &DecideInput,
) -> Result<Vec<String>, super::Error> {
    let missing: Vec<String> = input
        .source
        .profiles
        .iter()
        .filter(|p| !observed.standby_profiles.contains(*p))
        .cloned()
        .collect();
    let Some(first) = missing.first() else {
        return Ok(missing);
    };
    if !input.options.sync_profiles() {
        let to = &input.options.to;
        return Err(super::Error::Unsafe(format!(
            "profile(s) {} missing on {to} (project {}); nothing was sent: copy them with `incus profile copy {}:{first} {to}:{first}` or rerun with --sync-profiles",
            missing.join(", "),
            observed.target_project,
            observed.source_remote,
        )));
    }
    Ok(missing)
}

/// Incus 6.0 restores a snapshot's own devices: when the source's root disk comes from its
/// profiles, a restored replica gets the root disk of the standby's profiles, whatever pool
/// its volume is on, and can no longer start. Refused before anything is sent.
fn check_restore_keeps_pool(
    observed: &super::observe::Observed,
    pool: &str,
    to: &str,
) -> Result<(), super::Error> {
    match &observed.restore_pool {
        Some(restored) if restored == pool => Ok(()),
        restored => Err(super::Error::Unsafe(format!(
            "the replica's root disk would be on pool {pool}, but restoring it to its newest snapshot gives it the root disk of {} (Incus restores a snapshot's devices), and it could not start; nothing was sent: on {to} make the profile put the root disk on {pool}, or use --live (no restore)",
            restored
                .as_ref()
                .map_or_else(|| "no pool".to_string(), |p| format!("pool {p}")),
        ))),
    }
}

/// The standby's own history: what this refresh drops that the standby's policy keeps
/// becomes an archive point first; archive points it no longer keeps go after.
fn archive_decision(
    observed: &super::observe::Observed,
    ours: Option<&super::observe::ReplicaSide>,
    plan: &Plan,
    input: &DecideInput,
) -> Option<ArchiveDecision> {
    let archive = input.options.archive()?;
    let (Plan::Refresh { .. }, Some(replica), Some(archives)) = (plan, ours, &observed.archives)
    else {
        return None;
    };
    if archive.only_if_present && archives.is_empty() {
        return None;
    }
    let dropping: Vec<SnapshotId> = replica
        .ids
        .iter()
        .filter(|s| !observed.source_ids.contains(s))
        .cloned()
        .collect();
    Some(ArchiveDecision {
        project: archive.project.clone(),
        allow_full_copies: archive.allow_full_copies,
        plan: archive_plan(
            &observed.source_ids,
            &dropping,
            archives,
            &archive.rules,
            archive.within.as_ref(),
            input.now,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(marker: Option<&'a str>, snapshots: &'a [SnapshotId]) -> ReplicaFacts<'a> {
        ReplicaFacts {
            marker,
            recorded_uuid: Some("u1"),
            volatile_uuid: Some("u1"),
            synced: true,
            snapshots,
            ..ReplicaFacts::default()
        }
    }

    fn source<'a>(snapshots: &'a [SnapshotId]) -> SourceFacts<'a> {
        SourceFacts {
            marker: "fp/default/web",
            uuid: Some("u1"),
            snapshots,
        }
    }

    #[test]
    fn a_marked_replica_with_history_in_common_is_ours() {
        let both = [id("a", 1), id("b", 2)];
        let newer = [id("b", 2), id("c", 3)];
        assert_eq!(
            judge(
                &facts(Some("fp/default/web"), &both),
                &source(&newer),
                false
            ),
            Ok(Ownership::Ours)
        );
    }

    #[test]
    fn a_recreated_source_is_refused_even_with_the_same_snapshot_names() {
        let snaps = [id("a", 1)];
        let mut replica = facts(Some("fp/default/web"), &snaps);
        replica.recorded_uuid = Some("old");
        assert_eq!(
            judge(&replica, &source(&snaps), true),
            Err(Refusal::IdentityChanged {
                recorded: "old".into(),
                now: "u1".into()
            })
        );
    }

    #[test]
    fn history_the_source_cannot_send_again_is_never_refreshed_away() {
        let old = [id("a", 1), id("b", 2), id("c", 3)];
        let new = [id("a", 50)];
        let marked = facts(Some("fp/default/web"), &old);
        assert_eq!(
            judge(&marked, &source(&new), false),
            Err(Refusal::NothingInCommon {
                replica_snapshots: 3
            })
        );
        assert_eq!(
            judge(&marked, &source(&[]), false),
            Err(Refusal::SourceHasNone {
                replica_snapshots: 3
            })
        );
        // Adopting does not lift it either.
        assert!(judge(&facts(None, &old), &source(&new), true).is_err());
        // A replica without snapshots has nothing to lose.
        assert_eq!(
            judge(&facts(Some("fp/default/web"), &[]), &source(&[]), false),
            Ok(Ownership::Ours)
        );
    }

    #[test]
    fn an_unfinished_first_copy_is_copied_again_unless_it_holds_what_the_source_lost() {
        let partial = [id("a", 1)];
        let mut replica = facts(Some("fp/default/web"), &partial);
        replica.synced = false;
        assert_eq!(
            judge(&replica, &source(&[id("a", 1), id("b", 2)]), false),
            Ok(Ownership::Unfinished)
        );
        let lost = [id("x", 9)];
        replica.snapshots = &lost;
        assert_eq!(
            judge(&replica, &source(&[id("a", 1)]), false),
            Err(Refusal::UnfinishedWithOtherHistory {
                missing_on_source: 1
            })
        );
    }

    #[test]
    fn a_restore_cut_before_its_configuration_is_still_recognised() {
        let snaps = [id("a", 1), id("b", 2)];
        let mut replica = facts(None, &snaps[..1]);
        replica.recorded_uuid = None;
        replica.synced = false;
        replica.config_is_newest_snapshot = true;
        assert_eq!(
            judge(&replica, &source(&snaps), false),
            Ok(Ownership::InterruptedRestore)
        );
        // Another instance's uuid, or a snapshot the source lacks: not ours.
        replica.volatile_uuid = Some("other");
        assert_eq!(
            judge(&replica, &source(&snaps), false),
            Err(Refusal::NotOurs)
        );
        replica.volatile_uuid = Some("u1");
        let extra = [id("a", 1), id("z", 7)];
        replica.snapshots = &extra;
        assert_eq!(
            judge(&replica, &source(&snaps), false),
            Err(Refusal::NotOurs)
        );
    }

    #[test]
    fn other_replicas_and_foreign_instances_need_adopt_and_running_ones_are_never_touched() {
        let snaps = [id("a", 1)];
        assert_eq!(
            judge(
                &facts(Some("zz/default/web"), &snaps),
                &source(&snaps),
                false
            ),
            Err(Refusal::OtherSource("zz/default/web".into()))
        );
        assert_eq!(
            judge(&facts(None, &snaps), &source(&snaps), true),
            Ok(Ownership::Adopted)
        );
        let mut running = facts(Some("fp/default/web"), &snaps);
        running.running = true;
        assert_eq!(
            judge(&running, &source(&snaps), true),
            Err(Refusal::Running)
        );
        assert!(!Refusal::Running.replaceable());
        assert!(!Refusal::NotOurs.replaceable());
        let mut promoted = facts(Some("fp/default/web"), &snaps);
        promoted.promoted = true;
        assert_eq!(
            judge(&promoted, &source(&snaps), true),
            Err(Refusal::Promoted)
        );
        assert!(!Refusal::Promoted.replaceable());
    }

    #[test]
    fn the_standby_keeps_what_its_policy_wants_when_the_primary_prunes() {
        use crate::policy::Rules;
        let keep3 = Rules {
            last: Some(3),
            ..Rules::default()
        };
        let now = DateTime::from_timestamp(10_000, 0).unwrap_or_default();
        // The primary kept only s4 and took s5; the replica holds s3, s4 and archive a2.
        let after = [id("s4", 4), id("s5", 5)];
        let dropping = [id("s3", 3)];
        let archives = [
            Point {
                snapshot: "s2".into(),
                created_at: id("s2", 2).created_at,
                archive: Some("web--s2".into()),
            },
            Point {
                snapshot: "s1".into(),
                created_at: id("s1", 1).created_at,
                archive: Some("web--s1".into()),
            },
        ];
        let plan = archive_plan(&after, &dropping, &archives, &keep3, None, now);
        assert_eq!(plan.archive, vec![id("s3", 3)]);
        let mut deleted = plan.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["web--s1", "web--s2"]);
        // Already archived (a run cut after the clone): not again.
        let done = [Point {
            snapshot: "s3".into(),
            created_at: id("s3", 3).created_at,
            archive: Some("web--s3".into()),
        }];
        let plan = archive_plan(&after, &dropping, &done, &keep3, None, now);
        assert!(
            plan.archive.is_empty() && plan.delete.is_empty(),
            "{plan:?}"
        );
    }

    #[test]
    fn archive_names_are_readable_and_valid() {
        assert_eq!(
            archive_name("web", "auto-20261130-130000"),
            "web--auto-20261130-130000"
        );
        assert_eq!(archive_name("web", "snap_1.x"), "web--snap-1-x");
        assert!(archive_name(&"a".repeat(60), "snap").len() <= 63);
    }

    #[test]
    fn moved_aside_names_say_so_and_fit_incus() {
        let at = DateTime::from_timestamp(1_795_899_000, 0).unwrap_or_default();
        assert_eq!(moved_aside_name("web", at), "web-replaced-20261128-205000");
        let long = "a".repeat(80);
        let name = moved_aside_name(&long, at);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-replaced-20261128-205000"));
    }

    /// [`decide`] on plain data: what was observed of both sides.
    mod deciding {
        use std::collections::BTreeSet;

        use super::super::*;
        use crate::api::instances::Instance;
        use crate::api::snapshots::Snapshot;
        use crate::markers::{ReplicaMarkers, SourceId, SourceSettings};
        use crate::replication::observe::{Observed, ReplicaSide};
        use crate::replication::{Error, Options, PushChoices};

        fn at(secs: i64) -> DateTime<Utc> {
            DateTime::from_timestamp(secs, 0).unwrap_or_default()
        }

        fn snapshots(names: &[(&str, i64)]) -> Vec<Snapshot> {
            names
                .iter()
                .map(|(n, t)| Snapshot::listed(n.to_string(), at(*t)))
                .collect()
        }

        fn source() -> Instance {
            Instance {
                name: "web".into(),
                profiles: vec!["default".into()],
                ..Instance::default()
            }
        }

        fn observed(source: &[(&str, i64)], replica: Option<(&[(&str, i64)], &str)>) -> Observed {
            let source_snapshots = snapshots(source);
            let id = SourceId::new("0123456789abcdef", "default", "web");
            Observed {
                target_project: "default".into(),
                source_remote: "local".into(),
                source_id: id.clone(),
                source_uuid: Some("u1".into()),
                settings: SourceSettings::default(),
                source_ids: super::super::super::observe::ids(&source_snapshots),
                source_snapshots,
                replica: replica.map(|(list, restored)| {
                    let list = snapshots(list);
                    ReplicaSide {
                        instance: Instance {
                            name: "web".into(),
                            ..Instance::default()
                        },
                        etag: None,
                        markers: ReplicaMarkers {
                            source: Some(id.clone()),
                            source_uuid: Some("u1".into()),
                            source_settings: Some(SourceSettings::default()),
                            restored: Some(restored.into()),
                            synced_at: Some(at(100)),
                            ..ReplicaMarkers::default()
                        },
                        ids: super::super::super::observe::ids(&list),
                        snapshots: list,
                        config_is_newest_snapshot: false,
                    }
                }),
                archives: None,
                standby_profiles: BTreeSet::from(["default".to_string()]),
                restore_pool: None,
                source_members: Vec::new(),
                volumes: Vec::new(),
            }
        }

        fn decided(observed: &Observed, options: &Options) -> Result<Decision, Error> {
            decide(
                observed,
                &DecideInput {
                    options,
                    standby_members: &[],
                    source: &source(),
                    now: at(1_000),
                },
            )
        }

        #[test]
        fn a_first_copy_sends_everything_and_restores_the_newest() {
            let options = Options::push("standby", PushChoices::default());
            let d = decided(&observed(&[("s1", 1), ("s2", 2)], None), &options);
            let d = d.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.start, Start::FreshCopy);
            assert_eq!(
                d.plan,
                Plan::Copy {
                    send: vec!["s1".into(), "s2".into()]
                }
            );
            assert_eq!(d.restore_to.as_deref(), Some("s2"));
            assert_eq!(
                d.markers.source.as_ref().map(SourceId::as_str),
                Some("0123456789ab/default/web")
            );
        }

        #[test]
        fn a_current_replica_is_left_alone_and_costs_no_write() {
            let options = Options::push("standby", PushChoices::default());
            let o = observed(&[("s1", 1)], Some((&[("s1", 1)], "s1")));
            let d = decided(&o, &options).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.plan, Plan::UpToDate);
            assert!(d.marker_updates.0.is_empty());
        }

        #[test]
        fn a_new_snapshot_is_sent_by_a_refresh() {
            let options = Options::push("standby", PushChoices::default());
            let o = observed(&[("s1", 1), ("s2", 2)], Some((&[("s1", 1)], "s1")));
            let d = decided(&o, &options).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.start, Start::Refresh);
            assert_eq!(
                d.plan,
                Plan::Refresh {
                    send: vec!["s2".into()],
                    drop: vec![]
                }
            );
            assert_eq!(d.restore_to.as_deref(), Some("s2"));
        }

        #[test]
        fn a_running_replica_is_refused_and_a_lost_history_is_moved_aside_only_when_asked() {
            let options = Options::push("standby", PushChoices::default());
            let mut o = observed(&[("s1", 1)], Some((&[("s1", 1)], "s1")));
            if let Some(r) = o.replica.as_mut() {
                r.instance.status = "Running".into();
            }
            assert!(matches!(
                decided(&o, &options),
                Err(Error::Refused {
                    refusal: Refusal::Running,
                    ..
                })
            ));
            let o = observed(&[("n1", 5)], Some((&[("s1", 1)], "s1")));
            assert!(matches!(
                decided(&o, &options),
                Err(Error::Refused {
                    refusal: Refusal::NothingInCommon { .. },
                    ..
                })
            ));
            let replace = Options::push(
                "standby",
                PushChoices {
                    replace: true,
                    ..PushChoices::default()
                },
            );
            let d = decided(&o, &replace).unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(d.start, Start::MoveAside { .. }), "{:?}", d.start);
            assert_eq!(
                d.plan,
                Plan::Copy {
                    send: vec!["n1".into()]
                }
            );
        }

        #[test]
        fn replica_snapshots_never_expire_by_themselves() {
            let mut o = observed(&[("s1", 1), ("s2", 2)], Some((&[("s1", 1)], "s1")));
            o.source_snapshots[1].expires_at = Some(at(10_000));
            if let Some(r) = o.replica.as_mut() {
                r.snapshots[0].expires_at = Some(at(9_000));
            }
            let push = Options::push("standby", PushChoices::default());
            let d = decided(&o, &push).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.clear_expiry, vec!["s1".to_string(), "s2".to_string()]);
            // A failback gives the primary its own snapshots back, expiry included.
            let back = Options::failback("primary", "default");
            let d = decided(&o, &back).unwrap_or_else(|e| panic!("{e}"));
            assert!(d.clear_expiry.is_empty());
        }

        #[test]
        fn missing_profiles_are_refused_unless_copied() {
            let mut o = observed(&[("s1", 1)], None);
            o.standby_profiles.clear();
            let push = Options::push("standby", PushChoices::default());
            assert!(matches!(decided(&o, &push), Err(Error::Unsafe(_))));
            let back = Options::failback("primary", "default");
            let d = decided(&o, &back).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.copy_profiles, vec!["default".to_string()]);
        }
    }

    fn id(name: &str, secs: i64) -> SnapshotId {
        SnapshotId::new(name, DateTime::from_timestamp(secs, 0).unwrap_or_default())
    }

    #[test]
    fn no_replica_means_a_full_copy_of_every_snapshot() {
        let source = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, None, None, false),
            Plan::Copy {
                send: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn identical_lists_restored_to_the_newest_are_up_to_date() {
        let source = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, Some(&source), Some("b"), false),
            Plan::UpToDate
        );
    }

    #[test]
    fn matching_snapshots_without_a_finished_restore_are_refreshed() {
        let source = [id("a", 1), id("b", 2)];
        assert!(matches!(
            plan(&source, Some(&source), Some("a"), false),
            Plan::Refresh { .. }
        ));
        assert!(matches!(
            plan(&source, Some(&source), None, false),
            Plan::Refresh { .. }
        ));
    }

    #[test]
    fn new_snapshots_are_sent_and_stale_ones_dropped() {
        let source = [id("a", 1), id("c", 3)];
        let replica = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, Some(&replica), Some("b"), false),
            Plan::Refresh {
                send: vec!["c".into()],
                drop: vec!["b".into()]
            }
        );
    }

    #[test]
    fn same_name_with_another_time_is_a_different_snapshot() {
        let source = [id("a", 5)];
        let replica = [id("a", 1)];
        assert_eq!(
            plan(&source, Some(&replica), Some("a"), false),
            Plan::Refresh {
                send: vec!["a".into()],
                drop: vec!["a".into()]
            }
        );
    }

    #[test]
    fn sub_second_differences_do_not_count() {
        let precise = DateTime::from_timestamp(10, 400_000_000).unwrap_or_default();
        assert_eq!(SnapshotId::new("a", precise), id("a", 10));
    }

    #[test]
    fn live_always_refreshes_and_no_snapshots_is_never_current() {
        let source = [id("a", 1)];
        assert!(matches!(
            plan(&source, Some(&source), Some("a"), true),
            Plan::Refresh { .. }
        ));
        assert!(matches!(
            plan(&[], Some(&[]), None, false),
            Plan::Refresh { .. }
        ));
    }
}
