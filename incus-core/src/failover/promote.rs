//! Promotion: the seed's last steps ("stop the primary, start the copy on the snapshot
//! server") as one resumable sequence per instance, whose state is read from the servers.
//!
//! Planned (the primary answers): fence the primary copy, stop it, take a final snapshot,
//! sync it with the replication engine (the replica is restored to it), give the replica the
//! source's own settings, start it. Nothing is lost. With `--at`, the replica goes back to a
//! point of its history instead of the final sync.
//!
//! Emergency (the primary does not answer): the replica starts from the newest snapshot it
//! holds (or `--at`'s point); the record gives the data-loss window.
//!
//! | state | planned | emergency |
//! |---|---|---|
//! | `Running`: promoted and running | done | done |
//! | `NotReady`: nothing done, the replica could not take over | refused | refused |
//! | `Serving`: the primary copy is not fenced | `fence` | — |
//! | `FencedRunning` | `stop` | — |
//! | `NoFinalSnapshot`: stopped, no final snapshot since the fencing | `final-snapshot` | — |
//! | `NotSynced`: the replica is not restored to the final snapshot | `sync` | — |
//! | `AwayFromSnapshot`: not restored to the point (`--at`, emergency) | `restore` | `restore` |
//! | `AwayFromArchive`: not the archive point (`--at`) | `archive` | `archive` |
//! | `AtPoint`: holds the data, not marked promoted | `identity` | `identity` |
//! | `Marked`: promoted, stopped | `start` | `start` |
//!
//! The replica starts only once the primary copy is fenced and seen stopped (checked again
//! right before the start), so both never run together.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::api::instances::{self, InstanceStatus, StateAction};
use crate::api::migration::Mode;
use crate::api::snapshots;
use crate::client::Client;
use crate::markers::{
    ConfigPatch, Promoted, PromotionKind, ReplaceReason, Replaced, ReplicaMarkers, inert_overrides,
    timestamp,
};
use crate::record::{Output, PromotedRecord, Record};
use crate::replication::plan::{Point, moved_aside_name};
use crate::replication::{Options, Replicator, address, archive_point};
use crate::select::Selected;

use super::error::Error;
use super::fence::{PrimaryFacts, describe_fence, describe_stop, fence_primary, read_replica};
use super::pairs::{Pair, PairArgs, Pairs, resolve};
use super::readiness::{self, Problem, StandbyFacts};
use super::runner::{LeaseSpec, Runner, Sequence};
use super::step::{Flow, Step};

/// Names of the final snapshots a planned promotion takes.
const FINAL_PREFIX: &str = "failover-";

/// `incus-failover promote`'s choices.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// The primary is gone: start each replica from the newest snapshot it holds.
    pub emergency: bool,
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the primary copy before forcing it.
    pub stop_timeout: u64,
    /// Who connects to whom for the final sync.
    pub mode: Mode,
    /// How many instances at once.
    pub jobs: usize,
    /// Go back to this point of the replica's history (a snapshot or archive point, or a time).
    pub at: Option<String>,
    /// Take the replica's lease even while another run holds it.
    pub break_lease: bool,
}

/// Where the replica is taken before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Planned: the final snapshot of the stopped primary copy.
    FinalSnapshot,
    /// Emergency: the newest snapshot the replica holds.
    Newest,
    /// `--at`: a point of the replica's history.
    Point(Point),
}

/// What a promotion reads of both servers.
#[derive(Debug, Clone)]
pub struct PromotionFacts {
    pub replica_running: bool,
    pub replica: ReplicaMarkers,
    /// The replica's newest snapshot.
    pub replica_newest: Option<snapshots::Snapshot>,
    /// Problems that keep the replica from taking over (see [`readiness`]). What the
    /// replica needs of the standby is checked once, on the run's first reading: before
    /// anything changes.
    pub blocking: Vec<Problem>,
    /// The primary copy (planned); `None` in an emergency.
    pub primary: Option<PrimaryFacts>,
}

/// Where a promotion stands (see the module's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionState {
    Running,
    NotReady(Vec<Problem>),
    Serving,
    FencedRunning,
    NoFinalSnapshot,
    NotSynced,
    AwayFromSnapshot,
    AwayFromArchive,
    AtPoint,
    Marked,
}

impl PromotionState {
    /// The state, from what was read and where the replica is to be taken.
    pub fn of(facts: &PromotionFacts, target: &Target) -> Self {
        let promoted = facts.replica.promoted.is_some();
        if promoted && facts.replica_running {
            return PromotionState::Running;
        }
        let fenced = facts.primary.as_ref().map(|p| p.fenced.is_some());
        if !promoted && fenced != Some(true) && !facts.blocking.is_empty() {
            return PromotionState::NotReady(facts.blocking.clone());
        }
        if let Some(primary) = &facts.primary {
            if primary.fenced.is_none() {
                return PromotionState::Serving;
            }
            if primary.running {
                return PromotionState::FencedRunning;
            }
        }
        if !promoted {
            let restored = facts.replica.restored.as_deref();
            match target {
                Target::FinalSnapshot => {
                    let last = facts
                        .primary
                        .as_ref()
                        .and_then(|p| p.final_snapshot.as_deref());
                    match last {
                        None => return PromotionState::NoFinalSnapshot,
                        Some(last) if restored != Some(last) => return PromotionState::NotSynced,
                        Some(_) => {}
                    }
                }
                Target::Newest => {
                    let newest = facts.replica_newest.as_ref().map(|s| s.name.as_str());
                    if newest.is_some() && restored != newest {
                        return PromotionState::AwayFromSnapshot;
                    }
                }
                Target::Point(point) => match &point.archive {
                    None if restored != Some(point.snapshot.as_str()) => {
                        return PromotionState::AwayFromSnapshot;
                    }
                    Some(_)
                        if facts
                            .replica
                            .archive
                            .as_ref()
                            .map(|a| a.created_at.timestamp())
                            != Some(point.created_at.timestamp()) =>
                    {
                        return PromotionState::AwayFromArchive;
                    }
                    _ => {}
                },
            }
            return PromotionState::AtPoint;
        }
        PromotionState::Marked
    }
}

/// The next step of a promotion (`None`: done or refused; [`PromotionState::NotReady`] is a
/// refusal the caller reports).
pub fn next_step(state: &PromotionState) -> Option<Step> {
    match state {
        PromotionState::Running | PromotionState::NotReady(_) => None,
        PromotionState::Serving => Some(Step::Fence),
        PromotionState::FencedRunning => Some(Step::Stop),
        PromotionState::NoFinalSnapshot => Some(Step::FinalSnapshot),
        PromotionState::NotSynced => Some(Step::Sync),
        PromotionState::AwayFromSnapshot => Some(Step::Restore),
        PromotionState::AwayFromArchive => Some(Step::Archive),
        PromotionState::AtPoint => Some(Step::Identity),
        PromotionState::Marked => Some(Step::Start),
    }
}

/// `incus-failover promote`.
pub fn promote(args: &PairArgs, options: &PromoteOptions, output: &Output) -> Result<(), Error> {
    if options.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let pairs = resolve(args, output)?;
    if pairs.pairs.is_empty() {
        return Ok(());
    }
    let mut sync = Options::final_sync(
        &args.standby,
        &args.archive_project,
        &crate::replication::lease::holder("incus-failover"),
    );
    sync.target_project = args.target_project.clone();
    sync.mode = options.mode;
    sync.dry_run = options.dry_run;
    sync.break_lease = options.emergency || options.break_lease;
    let run = Promotions {
        pairs,
        archive_project: &args.archive_project,
        options,
        sync,
        output,
    };
    run.run()
}

/// One `promote` run over its pairs.
struct Promotions<'a> {
    pairs: Pairs,
    archive_project: &'a str,
    options: &'a PromoteOptions,
    /// The final syncs' replication.
    sync: Options,
    output: &'a Output,
}

impl Promotions<'_> {
    /// Checks the standby (and that an emergency is one), orders the pairs, promotes each
    /// (`--jobs` at a time), and after an emergency says how to fence the old primary.
    fn run(mut self) -> Result<(), Error> {
        let standby_name = self.sync.to.clone();
        self.pairs.standby.server().map_err(|e| {
            Error::incus_left(
                format!("the standby {standby_name}"),
                e,
                "; nothing was changed",
            )
        })?;
        let emergency = if self.options.emergency {
            emergency_allowed(&self.pairs, &standby_name)?
        } else {
            Emergency::default()
        };
        // What every replica needs of the standby, read once, before anything changes.
        let standby_facts = StandbyFacts::read(&self.pairs.standby, self.pairs.replica_projects())
            .map_err(|e| {
                Error::incus_left(
                    format!("reading what the standby {standby_name} has"),
                    e,
                    "; nothing was changed",
                )
            })?;
        order_by_priority(&mut self.pairs, self.output);
        let replicator = if self.options.emergency {
            None
        } else {
            Some(
                Replicator::connect(&self.sync, &self.pairs.connections)
                    .map_err(|e| Error::incus(format!("the standby {standby_name}"), e))?,
            )
        };
        let emergencies = self.promote_each(replicator.as_ref(), &standby_facts);
        if emergencies > 0 && !self.options.dry_run {
            for note in &emergency.fence_by_hand {
                self.output.note(note);
            }
        }
        Ok(())
    }

    /// Promotes every pair; returns how many emergency promotions started a replica.
    fn promote_each(&self, replicator: Option<&Replicator>, standby_facts: &StandbyFacts) -> usize {
        let runner = Runner {
            output: self.output,
            dry_run: self.options.dry_run,
        };
        let standby_name = &self.sync.to;
        let emergencies = AtomicUsize::new(0);
        crate::parallel::map(&self.pairs.pairs, self.options.jobs, |pair| {
            let promotion = Promotion {
                pair,
                pairs: &self.pairs,
                standby_name,
                archive_project: self.archive_project,
                options: self.options,
                sync: &self.sync,
                replicator,
                standby_facts,
                final_name: format!("{FINAL_PREFIX}{}", Utc::now().format("%Y%m%d-%H%M%S")),
                taken: std::sync::Mutex::new(None),
            };
            match promotion.run(&runner) {
                Ok(mut record) => {
                    if record.emergency && !record.already {
                        emergencies.fetch_add(1, Ordering::SeqCst);
                    }
                    record.location = promotion.runs_on();
                    self.output.emit(&Record::Promoted(record));
                }
                Err(e) => self.output.error(
                    Some(&pair.of),
                    &format!("promoting {} on {standby_name}: {e}", address(&pair.of)),
                ),
            }
        });
        emergencies.into_inner()
    }
}

/// The primaries of an emergency promotion: each remote, with the members of a clustered
/// one that are dead while the cluster answers.
#[derive(Debug, Default)]
struct Emergency {
    dead_members: BTreeMap<String, BTreeSet<String>>,
    /// After an emergency promotion: the old primaries still hold their copies; how to keep
    /// them off.
    fence_by_hand: Vec<String>,
}

/// `--emergency` is refused while a primary answers and has the instance (fencing it loses
/// nothing).
fn emergency_allowed(pairs: &Pairs, standby_name: &str) -> Result<Emergency, Error> {
    let mut emergency = Emergency::default();
    let mut remotes: Vec<&str> = pairs.pairs.iter().map(|p| p.of.remote.as_str()).collect();
    remotes.sort_unstable();
    remotes.dedup();
    for remote in remotes {
        emergency
            .dead_members
            .insert(remote.to_string(), BTreeSet::new());
        let client = pairs.connections.client(remote, None)?;
        let answering = match client.server() {
            Ok(_) => client,
            // The remote's own address is dead; when the primary is a cluster (its replicas
            // say so), another member may answer for it.
            Err(crate::Error::Unreachable { .. }) => match another_member(pairs, remote, &client) {
                Some(member) => member,
                None => continue,
            },
            Err(e) => {
                return Err(Error::Refused(format!(
                    "--emergency refused: the primary {remote} cannot be judged unreachable ({e})"
                )));
            }
        };
        // It answers: only instances it no longer has may be promoted so.
        for pair in pairs.pairs.iter().filter(|p| p.of.remote == remote) {
            let primary = answering.in_project(&pair.of.project);
            match instances::get(&primary, &pair.of.instance) {
                Err(e) if e.is_not_found() => {}
                // A cluster that answers, but not the member holding the instance: the
                // cluster lists it in the `Error` state there and calls that member
                // `Offline` (after its `cluster.offline_threshold`). A member that is merely
                // slow, or cut off for a moment, is not offline: its copy may still run.
                Err(_)
                    if let Some(member) = instances::list(&primary, false)
                        .ok()
                        .and_then(|list| {
                            list.into_iter().find(|i| {
                                i.name == pair.of.instance && i.status == InstanceStatus::Error
                            })
                        })
                        .and_then(|i| i.member().map(str::to_string))
                        && crate::api::cluster::member_status(&primary, &member)
                            .is_ok_and(|status| status == "Offline") =>
                {
                    if let Some(dead) = emergency.dead_members.get_mut(remote) {
                        dead.insert(member);
                    }
                }
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "--emergency refused: the cluster {remote} answers, but reading {} failed ({e}); if the member holding it is dead, wait until incus cluster list {remote}: shows it OFFLINE (cluster.offline_threshold), then run this again",
                        pair.of.instance
                    )));
                }
                Ok(_) => {
                    return Err(Error::Usage(format!(
                        "--emergency refused: the primary {remote} answers and has {}; promote without --emergency (it fences the primary copy and loses nothing)",
                        pair.of.instance
                    )));
                }
            }
        }
    }
    for (remote, members) in &emergency.dead_members {
        let note = if members.is_empty() {
            format!(
                "FENCE THE OLD PRIMARY BY HAND: {remote} still holds its copies, with their autostart as it was; after a crash Incus starts them again when the daemon comes back (their last state was running). Keep {remote} powered off or off the network; as soon as it answers, run: incus-failover fence {remote}: --standby {standby_name}"
            )
        } else {
            let members = members.iter().cloned().collect::<Vec<_>>().join(", ");
            format!(
                "FENCE THE OLD PRIMARY BY HAND: member(s) {members} of the cluster {remote} still hold their copies, with their autostart as it was; Incus starts them again when the member comes back (their last state was running). Keep {members} powered off or off the network (not the rest of the cluster); as soon as it is back, run: incus-failover fence {remote}:INSTANCE --standby {standby_name} for each instance promoted"
            )
        };
        emergency.fence_by_hand.push(note);
    }
    Ok(emergency)
}

/// Another member of a clustered primary whose remote address does not answer: the member
/// addresses its replicas recorded (`user.incus-standby.source-members`), tried in turn with
/// the remote's certificates (the members share the cluster's). `None`: a single server, or
/// no member answers.
fn another_member(pairs: &Pairs, remote: &str, client: &Client) -> Option<Client> {
    let mut urls: Vec<String> = Vec::new();
    for pair in pairs.pairs.iter().filter(|p| p.of.remote == remote) {
        if let Ok((replica, _)) = instances::get(&pairs.replica(pair), &pair.of.instance) {
            for url in ReplicaMarkers::from_config(&replica.config).source_members {
                if !urls.contains(&url) && Some(url.as_str()) != client.url() {
                    urls.push(url);
                }
            }
        }
    }
    urls.into_iter()
        .map(|url| client.at_url(&url))
        .find(|member| member.server().is_ok())
}

/// Starts the instances that should come up first first: `boot.autostart.priority`, highest
/// first, as Incus does at boot (ties by name).
fn order_by_priority(pairs: &mut Pairs, output: &Output) {
    let mut priorities: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut projects: Vec<String> = pairs
        .pairs
        .iter()
        .map(|p| p.replica_project.clone())
        .collect();
    projects.sort();
    projects.dedup();
    for project in projects {
        match instances::list(&pairs.standby.in_project(&project), false) {
            Ok(list) => {
                for instance in list {
                    let priority = instance
                        .config
                        .get("boot.autostart.priority")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    priorities.insert((project.clone(), instance.name), priority);
                }
            }
            Err(e) => output.note(&format!("cannot read priorities in project {project}: {e}")),
        }
    }
    pairs.pairs.sort_by(|a, b| {
        let priority = |p: &Pair| {
            priorities
                .get(&(p.replica_project.clone(), p.of.instance.clone()))
                .copied()
                .unwrap_or(0)
        };
        priority(b)
            .cmp(&priority(a))
            .then_with(|| a.of.instance.cmp(&b.of.instance))
    });
}

/// The promotion of one instance.
struct Promotion<'a> {
    pair: &'a Pair,
    pairs: &'a Pairs,
    standby_name: &'a str,
    archive_project: &'a str,
    options: &'a PromoteOptions,
    sync: &'a Options,
    replicator: Option<&'a Replicator<'a>>,
    /// What the standby has (networks, pools, profiles, volumes, CPUs, memory).
    standby_facts: &'a StandbyFacts,
    /// The name of the final snapshot this run takes, if it takes one.
    final_name: String,
    /// The final snapshot once this run took it.
    taken: std::sync::Mutex<Option<String>>,
}

impl Promotion<'_> {
    fn name(&self) -> &str {
        &self.pair.of.instance
    }

    fn standby(&self) -> Client {
        self.pairs.replica(self.pair)
    }

    /// Resolves `--at`, runs the steps, and says what was done.
    fn run(&self, runner: &Runner) -> Result<PromotedRecord, Error> {
        let start = Instant::now();
        // Read as the final sync needs it (its final snapshot); --at and an emergency ignore
        // that part.
        let (mut before, replica) = self.observe_replica_and_facts(if self.options.emergency {
            &Target::Newest
        } else {
            &Target::FinalSnapshot
        })?;
        let already = matches!(
            PromotionState::of(&before, &Target::Newest),
            PromotionState::Running
        );
        // --at is resolved before anything changes: a wrong point changes nothing.
        let target = match (&self.options.at, before.replica.promoted.is_some()) {
            (Some(at), false) => Target::Point(self.find_point(&before.replica, at)?),
            _ if self.options.emergency => Target::Newest,
            _ => Target::FinalSnapshot,
        };
        // Nothing done yet: the replica must be able to start on the standby, from the point
        // it is taken to.
        let untouched = before.replica.promoted.is_none()
            && before.primary.as_ref().is_none_or(|p| p.fenced.is_none());
        if untouched {
            let point = match &target {
                Target::FinalSnapshot => before.replica.restored.clone(),
                Target::Newest => before.replica_newest.as_ref().map(|s| s.name.clone()),
                Target::Point(point) => Some(point.snapshot.clone()),
            };
            before.blocking.extend(
                readiness::dependencies(&replica, self.standby_facts, point.as_deref())
                    .into_iter()
                    .filter(Problem::blocks_promotion),
            );
        }
        let sequence = PromotionSequence {
            promotion: self,
            target: target.clone(),
            aside: moved_aside_name(self.name(), Utc::now()),
        };
        let after = runner.drive_from(&sequence, &self.pair.of, before.clone())?;
        Ok(self.record(start, &before, &after, &target, already))
    }

    fn record(
        &self,
        start: Instant,
        before: &PromotionFacts,
        after: &PromotionFacts,
        target: &Target,
        already: bool,
    ) -> PromotedRecord {
        let mut record = PromotedRecord {
            of: self.pair.of.clone(),
            standby: self.standby_name.to_string(),
            replica_project: self.pair.replica_project.clone(),
            replica_instance: self.name().to_string(),
            location: None,
            snapshot: after.replica.restored.clone(),
            emergency: self.options.emergency,
            data_loss_since: None,
            data_loss_seconds: Some(0),
            primary_last_seen: None,
            already,
            seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            dry_run: self.options.dry_run,
        };
        if self.options.emergency {
            let newest = before.replica_newest.as_ref();
            let last_seen = before.replica.synced_at;
            record.snapshot = newest.map(|s| s.name.clone());
            record.data_loss_since = newest.map(|s| s.created_at);
            record.primary_last_seen = last_seen;
            record.data_loss_seconds = match (newest, last_seen) {
                (Some(newest), Some(seen)) => Some((seen - newest.created_at).num_seconds().max(0)),
                _ => None,
            };
        } else if already {
            record.snapshot = before.replica.restored.clone();
        }
        if let Target::Point(point) = target {
            // Gone back on purpose: what came after that point stays on the primary copy.
            record.snapshot = Some(point.snapshot.clone());
            record.data_loss_since = Some(point.created_at);
            record.data_loss_seconds = None;
        }
        record
    }

    /// Reads the replica, and the primary copy for a planned promotion.
    fn observe_facts(&self, target: &Target) -> Result<PromotionFacts, Error> {
        Ok(self.observe_replica_and_facts(target)?.0)
    }

    /// [`Self::observe_facts`], with the replica as read.
    fn observe_replica_and_facts(
        &self,
        target: &Target,
    ) -> Result<(PromotionFacts, crate::api::instances::Instance), Error> {
        let standby = self.standby();
        let (replica, _) = read_replica(&standby, self.standby_name, self.name())?;
        // Only an emergency starts from what the replica's snapshots say; what blocks a
        // promotion does not depend on them.
        let snapshots = if self.options.emergency {
            snapshots::list(&standby, self.name())?
        } else {
            Vec::new()
        };
        let mut blocking: Vec<Problem> = readiness::problems(&replica, &snapshots, None)
            .into_iter()
            .filter(Problem::blocks_promotion)
            .collect();
        if self.options.emergency && snapshots.is_empty() {
            blocking.push(Problem::NoSnapshot);
        }
        let markers = ReplicaMarkers::from_config(&replica.config);
        // Promoted and serving: done, whatever became of the primary.
        let done = markers.promoted.is_some() && replica.is_running();
        let primary = if self.options.emergency || done {
            None
        } else {
            Some(self.observe_primary(target)?)
        };
        let facts = PromotionFacts {
            replica_running: replica.is_running(),
            replica: markers,
            replica_newest: snapshots.last().cloned(),
            blocking,
            primary,
        };
        Ok((facts, replica))
    }

    fn observe_primary(&self, target: &Target) -> Result<PrimaryFacts, Error> {
        let name = self.name();
        let primary = self.pairs.primary(self.pair)?;
        let (instance, etag) = instances::get(&primary, name).map_err(|e| match e {
            e @ crate::Error::Unreachable { .. } => Error::incus_left(
                "",
                e,
                "; if the primary is gone, promote with --emergency (from the newest snapshot the replica holds)",
            ),
            e if e.is_not_found() => Error::Refused(format!(
                "the primary has no instance {name} (any more); promote with --emergency to start the replica as it is"
            )),
            e => Error::from(e),
        })?;
        let mut facts = PrimaryFacts::of(&instance, etag);
        // The final snapshot: the one this run took, or one an earlier run took since the
        // fencing, as long as the copy has not run since (it would lack what it did then).
        if *target == Target::FinalSnapshot && facts.fenced.is_some() && !facts.running {
            let fenced_at = facts.fenced.as_ref().and_then(|f| f.at);
            let taken = self.taken.lock().ok().and_then(|t| t.clone());
            let list = snapshots::list(&primary, name)?;
            facts.final_snapshot = list
                .last()
                .filter(|newest| {
                    Some(&newest.name) == taken.as_ref()
                        || (newest.name.starts_with(FINAL_PREFIX)
                            && fenced_at
                                .is_some_and(|at| newest.created_at.timestamp() >= at.timestamp())
                            && !instance.ran_since(newest.created_at))
                })
                .map(|s| s.name.clone());
        }
        Ok(facts)
    }

    /// `--at`: the point of the replica's history it names (its snapshots and archive
    /// points), found before anything changes.
    fn find_point(&self, replica: &ReplicaMarkers, at: &str) -> Result<Point, Error> {
        let standby = self.standby();
        let name = self.name();
        let archive_client = standby.in_project(self.archive_project);
        let mut points: Vec<Point> = snapshots::list(&standby, name)?
            .into_iter()
            .map(|s| Point {
                snapshot: s.name,
                created_at: s.created_at,
                archive: None,
            })
            .collect();
        if let (Ok(list), Some(source)) = (instances::list(&archive_client, false), &replica.source)
        {
            points.extend(
                list.iter()
                    .filter(|i| {
                        ReplicaMarkers::from_config(&i.config).source.as_ref() == Some(source)
                    })
                    .filter_map(archive_point),
            );
        }
        let chosen = choose_point(&points, at);
        if let Some(point) = &chosen
            && let Some(archive) = &point.archive
        {
            let (replica, _) = instances::get(&standby, name)?;
            let attached = crate::api::volumes::attached(&replica.expanded_devices);
            if let Some(first) = attached.first() {
                return Err(Error::Usage(format!(
                    "{archive} is an archive point, which holds the root disk of {name} only, not its volume {}: promoting it would pair an old root disk with today's volume; nothing was changed: choose one of the replica's snapshots with --at",
                    first.volume
                )));
            }
        }
        chosen.ok_or_else(|| {
            Error::Usage(format!(
                "no point of {}:{name}'s history matches \"{at}\" (its snapshots and archive points: {}); nothing was changed",
                self.standby_name,
                points
                    .iter()
                    .map(|p| p.snapshot.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Why a replica that cannot take over is refused, one line naming each problem and
    /// what to do.
    fn refusal(&self, problems: &[Problem]) -> String {
        let list = problems
            .iter()
            .map(Problem::for_promotion)
            .collect::<Vec<_>>()
            .join("; ");
        let (standby, name) = (self.standby_name, self.name());
        let own_state = problems.iter().any(|p| {
            matches!(
                p,
                Problem::Running | Problem::NotOurs | Problem::Unfinished | Problem::NoSnapshot
            )
        });
        if self.options.emergency {
            let by_hand = if own_state {
                " (start it by hand if it is what you want)"
            } else {
                ""
            };
            format!(
                "{standby}:{name} is not a replica that can take over ({list}); nothing was changed{by_hand}"
            )
        } else if problems.iter().any(Problem::fixed_by_a_push) {
            format!(
                "the replica is not ready ({list}); nothing was changed: run incus-push --to {standby} {} first",
                address(&self.pair.of)
            )
        } else {
            format!("the replica {standby}:{name} cannot take over ({list}); nothing was changed")
        }
    }

    /// On a clustered standby, the member the promoted instance runs on.
    fn runs_on(&self) -> Option<String> {
        let standby = self.standby();
        if self.options.dry_run || !standby.server().ok()?.environment.server_clustered {
            return None;
        }
        let (instance, _) = instances::get(&standby, self.name()).ok()?;
        instance.member().map(str::to_string)
    }
}

/// One promotion as a sequence of steps.
struct PromotionSequence<'a> {
    promotion: &'a Promotion<'a>,
    target: Target,
    /// Where `--at` an archive point keeps the replica.
    aside: String,
}

impl Sequence for PromotionSequence<'_> {
    type Facts = PromotionFacts;
    const FLOW: Flow = Flow::Promotion;

    fn observe(&self) -> Result<PromotionFacts, Error> {
        self.promotion.observe_facts(&self.target)
    }

    fn next_step(&self, facts: &PromotionFacts) -> Result<Option<Step>, Error> {
        let state = PromotionState::of(facts, &self.target);
        if let PromotionState::NotReady(problems) = &state {
            return Err(Error::Refused(self.promotion.refusal(problems)));
        }
        Ok(next_step(&state))
    }

    fn describe(&self, step: Step, facts: &PromotionFacts) -> String {
        let p = self.promotion;
        let (of, standby, name) = (&p.pair.of, p.standby_name, p.name());
        match step {
            Step::Fence => describe_fence(
                of,
                facts.primary.as_ref().unwrap_or(&PrimaryFacts::default()),
            ),
            Step::Stop => describe_stop(of, p.options.stop_timeout),
            Step::FinalSnapshot => format!(
                "snapshot {}/{} of the stopped primary",
                address(of),
                p.final_name
            ),
            Step::Sync => format!(
                "send {} to {standby}:{name} and restore the replica to it",
                self.final_snapshot(facts)
            ),
            Step::Restore => match &self.target {
                Target::Point(point) => format!(
                    "restore {standby}:{name} to {} ({})",
                    point.snapshot,
                    timestamp(point.created_at)
                ),
                _ => format!(
                    "restore {standby}:{name} to {}",
                    self.point_snapshot(facts).unwrap_or_default()
                ),
            },
            Step::Archive => match &self.target {
                Target::Point(point) => format!(
                    "clone archive point {} ({}) as {standby}:{name}; the replica is kept as {}",
                    point.archive.as_deref().unwrap_or_default(),
                    timestamp(point.created_at),
                    self.aside
                ),
                _ => String::new(),
            },
            Step::Identity => format!(
                "give {standby}:{name} the source's settings: {}",
                shown(&self.identity_changes(facts))
            ),
            Step::Rollback => format!(
                "give the service back: {} unfenced and started again, {standby}:{name} left an inert replica",
                address(of)
            ),
            _ => format!("start {standby}:{name}"),
        }
    }

    fn run(&self, step: Step, facts: &PromotionFacts, runner: &Runner) -> Result<(), Error> {
        let p = self.promotion;
        let of = &p.pair.of;
        let primary_facts = facts.primary.clone().unwrap_or_default();
        match step {
            Step::Fence => fence_primary(
                &p.pairs.primary(p.pair)?,
                of,
                &primary_facts,
                p.standby_name,
            ),
            Step::Stop => super::fence::stop_copy(
                runner,
                of,
                &p.pairs.primary(p.pair)?,
                p.name(),
                &address(of),
                p.options.stop_timeout,
            ),
            Step::FinalSnapshot => {
                let primary = p.pairs.primary(p.pair)?;
                crate::api::volumes::snapshot_attached(&primary, p.name(), &p.final_name)
                    .and_then(|_| snapshots::create(&primary, p.name(), &p.final_name, false, None))
                    .map(drop)
                    .map_err(|e| {
                        Error::incus(format!("taking the final snapshot {}", p.final_name), e)
                    })
            }
            Step::Sync => self.final_sync(facts),
            Step::Restore => {
                let snapshot = self.point_snapshot(facts).unwrap_or_default();
                restore_keeping_markers(&p.standby(), p.name(), &snapshot, &facts.replica)
            }
            Step::Archive => self.clone_archive(facts),
            Step::Rollback => self.roll_back(),
            // The volumes first: the instance's identity, written last, ends the step.
            Step::Identity => {
                crate::replication::volumes::give_own_settings(&p.standby(), p.name())
                    .and_then(|_| {
                        instances::patch_config(
                            &p.standby(),
                            p.name(),
                            &self.identity_changes(facts).as_merge(),
                            None,
                        )
                    })
                    .map_err(|e| Error::incus("writing the promoted replica's configuration", e))
            }
            _ => self.start(facts),
        }
    }

    fn assume(&self, mut facts: PromotionFacts, step: Step) -> PromotionFacts {
        let p = self.promotion;
        if let Some(primary) = facts.primary.as_mut() {
            match step {
                Step::Fence => {
                    primary.fenced = Some(crate::markers::Fenced {
                        at: Some(Utc::now()),
                        standby: p.standby_name.to_string(),
                        autostart_before: primary.autostart.clone(),
                    });
                }
                Step::Stop => primary.running = false,
                Step::FinalSnapshot => primary.final_snapshot = Some(p.final_name.clone()),
                _ => {}
            }
        }
        match step {
            Step::Sync => facts.replica.restored = Some(self.final_snapshot(&facts)),
            Step::Restore => facts.replica.restored = self.point_snapshot(&facts),
            Step::Archive => {
                if let Target::Point(point) = &self.target {
                    facts.replica.archive = Some(crate::markers::ArchiveOf::new(
                        "",
                        "",
                        &point.snapshot,
                        point.created_at,
                    ));
                }
            }
            Step::Identity => facts.replica.promoted = Some(self.promoted_marker(&facts)),
            Step::Start => facts.replica_running = true,
            _ => {}
        }
        facts
    }

    /// A planned promotion that fails once the primary copy was stopped gives the service
    /// back (an emergency cannot: its primary is gone).
    fn compensation(&self, failed: Step, facts: &PromotionFacts) -> Option<Step> {
        rollback_needed(failed, facts).then_some(Step::Rollback)
    }

    fn compensated(&self, _step: Step, result: &Result<(), Error>) -> String {
        let p = self.promotion;
        let at = address(&p.pair.of);
        match result {
            Ok(()) => format!(
                "the service was given back: {at} runs again, unfenced, and {}:{} is still an inert replica; nothing was lost: fix the cause, then promote again",
                p.standby_name,
                p.name()
            ),
            Err(e) => format!(
                "and giving the service back failed too ({e}): THE SERVICE RUNS NOWHERE; start {at} by hand (incus start {at})"
            ),
        }
    }

    fn lease(&self) -> Option<LeaseSpec> {
        let p = self.promotion;
        Some(LeaseSpec {
            client: p.standby(),
            name: p.name().to_string(),
            holder: p.sync.lease_holder.clone(),
            force: p.sync.break_lease,
        })
    }
}

impl PromotionSequence<'_> {
    fn final_snapshot(&self, facts: &PromotionFacts) -> String {
        facts
            .primary
            .as_ref()
            .and_then(|p| p.final_snapshot.clone())
            .unwrap_or_else(|| self.promotion.final_name.clone())
    }

    /// The snapshot the replica is restored to (emergency: its newest; `--at`: the point's).
    fn point_snapshot(&self, facts: &PromotionFacts) -> Option<String> {
        match &self.target {
            Target::Point(point) => Some(point.snapshot.clone()),
            _ => facts.replica_newest.as_ref().map(|s| s.name.clone()),
        }
    }

    fn promoted_marker(&self, facts: &PromotionFacts) -> Promoted {
        Promoted {
            at: Some(Utc::now()),
            kind: if self.promotion.options.emergency {
                PromotionKind::Emergency
            } else {
                PromotionKind::Planned
            },
            from: facts.replica.source.clone(),
        }
    }

    /// The source's own settings in place of the inert ones (its own autostart from the
    /// fencing), the promotion marked, the old primary's markers (brought by the final
    /// snapshot) cleared.
    fn identity_changes(&self, facts: &PromotionFacts) -> ConfigPatch {
        let settings = facts.replica.source_settings.clone().unwrap_or_default();
        let mut changes = ConfigPatch::default();
        for (key, value) in settings.as_changes() {
            changes.set(&key, value);
        }
        if let Some(primary) = &facts.primary
            && primary.fenced.is_some()
        {
            changes.set(
                crate::markers::AUTOSTART,
                primary.own_autostart().unwrap_or_default(),
            );
        }
        let mut markers = facts.replica.clone();
        markers.promoted = Some(self.promoted_marker(facts));
        changes.merge(markers.to_patch());
        changes
    }

    /// The final snapshot sent by the replication engine; the replica ends restored to it.
    fn final_sync(&self, facts: &PromotionFacts) -> Result<(), Error> {
        let p = self.promotion;
        let snapshot = self.final_snapshot(facts);
        let Some(replicator) = p.replicator else {
            return Err(Error::Refused(
                "no replication engine for a planned promotion".into(),
            ));
        };
        let primary = p.pairs.primary(p.pair)?;
        let (instance, _) = instances::get(&primary, p.name())?;
        let selected = Selected {
            of: p.pair.of.clone(),
            client: primary,
            instance,
        };
        replicator
            .replicate(&selected)
            .map_err(|source| Error::Transfer {
                what: "the final sync",
                source: Box::new(source),
            })?;
        let (replica, _) = instances::get(&p.standby(), p.name())?;
        if ReplicaMarkers::from_config(&replica.config)
            .restored
            .as_deref()
            != Some(&snapshot)
        {
            return Err(Error::NoEffect(format!(
                "after the final sync the replica is not restored to {snapshot}; it was not started"
            )));
        }
        Ok(())
    }

    /// `--at` an archive point: it is cloned under a temporary name, then the replica is
    /// renamed aside (kept) and the clone takes its name.
    fn clone_archive(&self, facts: &PromotionFacts) -> Result<(), Error> {
        let p = self.promotion;
        let Target::Point(point) = &self.target else {
            return Ok(());
        };
        let Some(archive) = &point.archive else {
            return Ok(());
        };
        let standby = p.standby();
        let name = p.name();
        let temporary: String = format!("{name}-at-point").chars().take(63).collect();
        let aside = &self.aside;
        let archive_client = standby.in_project(p.archive_project);
        if instances::get(&standby, &temporary).is_err() {
            let (source, _) = instances::get(&archive_client, archive)
                .map_err(|e| Error::incus(format!("reading archive point {archive}"), e))?;
            let mut config: BTreeMap<String, String> = source
                .config
                .iter()
                .filter(|(key, _)| key.starts_with("volatile.") && key.ends_with(".hwaddr"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let markers = ReplicaMarkers {
                source: facts.replica.source.clone(),
                source_settings: facts.replica.source_settings.clone(),
                source_uuid: facts.replica.source_uuid.clone(),
                synced_at: facts.replica.synced_at,
                restored: Some(point.snapshot.clone()),
                ..ReplicaMarkers::default()
            };
            let mut patch = ConfigPatch::inert();
            patch.merge(markers.to_patch());
            // Keep what the archive point says of itself (its time tells the state).
            patch.0.retain(|key, value| {
                value.is_some() || !key.starts_with("user.incus-standby.archive")
            });
            patch.apply_to(&mut config);
            instances::copy_local(
                &standby,
                p.archive_project,
                archive,
                &temporary,
                &config,
                source.member(),
            )
            .map_err(|e| {
                Error::incus_left(
                    format!("cloning archive point {archive}"),
                    e,
                    "; the replica is unchanged",
                )
            })?;
        }
        instances::rename(&standby, name, aside).map_err(|e| {
            Error::incus_left(
                format!("moving the replica aside to {aside}"),
                e,
                &format!("; the clone waits as {temporary}"),
            )
        })?;
        let marked = Replaced::now(ReplaceReason::At(point.snapshot.clone())).to_patch();
        let _ = instances::patch_config(&standby, aside, &marked.as_merge(), None);
        instances::rename(&standby, &temporary, name).map_err(|e| {
            Error::incus_left(
                format!("renaming the clone {temporary} to {name}"),
                e,
                &format!("; the replica is kept as {aside}"),
            )
        })
    }

    /// Gives the service back after a failed planned promotion: the replica inert and unmarked
    /// first (it must never start by itself), then the primary copy unfenced (its own
    /// autostart back) and started.
    fn roll_back(&self) -> Result<(), Error> {
        let p = self.promotion;
        let standby = p.standby();
        let (replica, _) = instances::get(&standby, p.name())?;
        let mut inert = ConfigPatch::inert();
        let markers = ReplicaMarkers {
            promoted: None,
            ..ReplicaMarkers::from_config(&replica.config)
        };
        inert.merge(markers.to_patch());
        instances::patch_config(&standby, p.name(), &inert.as_merge(), None)
            .map_err(|e| Error::incus("making the replica inert again", e))?;
        // A run killed here leaves the primary fenced and stopped: the next run of the same
        // promotion starts the replica or, failing again, gives the service back.
        fail::fail_point!("failover::mid-rollback", |arg| Err(Error::Injected(
            crate::replication::injected_error(arg)
        )));
        let primary = p.pairs.primary(p.pair)?;
        let (instance, _) = instances::get(&primary, p.name())?;
        let own = super::fence::PrimaryFacts::of(&instance, None).own_autostart();
        let mut unfence = crate::markers::PrimaryMarkers::default().to_patch();
        unfence.put(crate::markers::AUTOSTART, own.or(Some(String::new())));
        instances::patch_config(&primary, p.name(), &unfence.as_merge(), None)
            .map_err(|e| Error::incus(format!("unfencing {}", address(&p.pair.of)), e))?;
        if instance.is_running() {
            return Ok(());
        }
        instances::change_state(&primary, p.name(), StateAction::Start, 0, false)
            .map_err(|e| Error::incus(format!("starting {} again", address(&p.pair.of)), e))
    }

    /// Starts the replica, once the primary copy is seen stopped (never both).
    fn start(&self, facts: &PromotionFacts) -> Result<(), Error> {
        let p = self.promotion;
        if facts.primary.is_some() {
            let (instance, _) = instances::get(&p.pairs.primary(p.pair)?, p.name())?;
            if instance.is_running() {
                return Err(Error::Refused(format!(
                    "{} runs again (started by hand?); the replica was not started: stop it and run the promotion again",
                    address(&p.pair.of)
                )));
            }
        }
        instances::change_state(&p.standby(), p.name(), StateAction::Start, 0, false).map_err(
            |e| {
                let left = if p.options.emergency {
                    "; THE SERVICE RUNS NOWHERE: the primary is gone and the replica did not start (it is marked promoted): fix the cause on the standby, then run this promotion again"
                } else {
                    ""
                };
                Error::incus_left(format!("starting {}:{}", p.standby_name, p.name()), e, left)
            },
        )
    }
}

/// A planned promotion gives the service back when a step fails once the primary copy was
/// fenced and stopped, and the replica does not serve.
pub fn rollback_needed(failed: Step, facts: &PromotionFacts) -> bool {
    let Some(primary) = &facts.primary else {
        return false;
    };
    let stopped = primary.fenced.is_some() && (!primary.running || failed == Step::Stop);
    let after_the_stop = matches!(
        failed,
        Step::Stop
            | Step::FinalSnapshot
            | Step::Sync
            | Step::Restore
            | Step::Archive
            | Step::Identity
            | Step::Start
    );
    stopped && after_the_stop && !facts.replica_running
}

/// The inert keys of `changes`, as the `identity` step shows them.
fn shown(changes: &ConfigPatch) -> String {
    changes
        .as_merge()
        .iter()
        .filter(|(key, _)| crate::markers::is_inert_key(key))
        .map(|(key, value)| {
            if value.is_empty() {
                format!("{key} unset")
            } else {
                format!("{key}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Restores the replica to a snapshot and writes back what makes it ours (the restore
/// replaces the whole configuration): a run cut after the restore still finds a finished
/// replica of ours, with the source's own settings.
fn restore_keeping_markers(
    standby: &Client,
    name: &str,
    snapshot: &str,
    markers: &ReplicaMarkers,
) -> Result<(), Error> {
    // The volumes first, to the same moment: the instance's restore, last, ends the step.
    crate::replication::volumes::restore_to_point(standby, name, snapshot)
        .map_err(|e| Error::incus(format!("restoring the replica's volumes to {snapshot}"), e))?;
    snapshots::restore(standby, name, snapshot)
        .map_err(|e| Error::incus(format!("restoring the replica to {snapshot}"), e))?;
    let kept = ReplicaMarkers {
        source: markers.source.clone(),
        source_settings: markers.source_settings.clone(),
        source_uuid: markers.source_uuid.clone(),
        synced_at: markers.synced_at,
        restored: Some(snapshot.to_string()),
        ..ReplicaMarkers::default()
    };
    let mut keep = ConfigPatch(
        inert_overrides()
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .collect(),
    );
    keep.merge(kept.to_patch());
    // Only what is set: a restore keeps nothing else of ours to clear.
    keep.0.retain(|_, value| value.is_some());
    instances::patch_config(standby, name, &keep.as_merge(), None)
        .map_err(|e| Error::incus("marking the restored replica", e))
}

/// The point `at` names: a snapshot or archive point by name, else a time (the newest point at
/// or before it).
pub fn choose_point(points: &[Point], at: &str) -> Option<Point> {
    if let Some(point) = points
        .iter()
        .find(|p| p.snapshot == at || p.archive.as_deref() == Some(at))
    {
        return Some(point.clone());
    }
    let time = parse_time(at)?;
    points
        .iter()
        .filter(|p| p.created_at <= time)
        .max_by_key(|p| p.created_at)
        .cloned()
}

/// RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD` (the end of that day) in UTC.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(23, 59, 59)
        .map(|t| t.and_utc())
}

/// The source's own settings, for callers that give them back (failback).
pub(super) fn own_settings(markers: &ReplicaMarkers) -> BTreeMap<String, String> {
    markers
        .source_settings
        .clone()
        .unwrap_or_default()
        .as_changes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::{Fenced, SourceId};

    fn point(name: &str, secs: i64, archive: Option<&str>) -> Point {
        Point {
            snapshot: name.into(),
            created_at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
            archive: archive.map(str::to_string),
        }
    }

    #[test]
    fn a_point_is_chosen_by_name_or_by_time() {
        let points = [
            point("r3", 1_796_000_000, Some("web--r3")),
            point("r4", 1_796_003_600, None),
            point("r5", 1_796_007_200, None),
        ];
        assert_eq!(
            choose_point(&points, "r4").map(|p| p.snapshot),
            Some("r4".into())
        );
        assert_eq!(
            choose_point(&points, "web--r3").map(|p| p.snapshot),
            Some("r3".into())
        );
        let t = DateTime::from_timestamp(1_796_005_000, 0).unwrap_or_default();
        assert_eq!(
            choose_point(&points, &t.to_rfc3339()).map(|p| p.snapshot),
            Some("r4".into())
        );
        assert_eq!(choose_point(&points, "2000-01-01"), None);
        assert_eq!(choose_point(&points, "nonsense"), None);
    }

    fn replica() -> PromotionFacts {
        PromotionFacts {
            replica_running: false,
            replica: ReplicaMarkers {
                source: Some(SourceId::from_marker("fp/default/web")),
                restored: Some("s1".into()),
                synced_at: Some(Utc::now()),
                ..ReplicaMarkers::default()
            },
            replica_newest: Some(snapshots::Snapshot::listed("s1".into(), Utc::now())),
            blocking: Vec::new(),
            primary: Some(PrimaryFacts {
                running: true,
                ..PrimaryFacts::default()
            }),
        }
    }

    fn fenced(facts: &mut PromotionFacts) {
        if let Some(p) = facts.primary.as_mut() {
            p.fenced = Some(Fenced {
                at: None,
                standby: "standby".into(),
                autostart_before: None,
            });
        }
    }

    /// Every state of a planned promotion, in the order a run goes through them.
    #[test]
    fn a_planned_promotion_goes_fence_stop_snapshot_sync_identity_start() {
        let t = Target::FinalSnapshot;
        let mut f = replica();
        let step = |f: &PromotionFacts| next_step(&PromotionState::of(f, &t));
        assert_eq!(PromotionState::of(&f, &t), PromotionState::Serving);
        assert_eq!(step(&f), Some(Step::Fence));
        fenced(&mut f);
        assert_eq!(step(&f), Some(Step::Stop));
        if let Some(p) = f.primary.as_mut() {
            p.running = false;
        }
        assert_eq!(step(&f), Some(Step::FinalSnapshot));
        if let Some(p) = f.primary.as_mut() {
            p.final_snapshot = Some("failover-1".into());
        }
        assert_eq!(step(&f), Some(Step::Sync));
        f.replica.restored = Some("failover-1".into());
        assert_eq!(step(&f), Some(Step::Identity));
        f.replica.promoted = Some(Promoted {
            at: None,
            kind: PromotionKind::Planned,
            from: None,
        });
        assert_eq!(step(&f), Some(Step::Start));
        f.replica_running = true;
        assert_eq!(PromotionState::of(&f, &t), PromotionState::Running);
        assert_eq!(step(&f), None);
    }

    /// Every state has its step, and the two final ones have none.
    #[test]
    fn every_promotion_state_has_one_next_step() {
        let table = [
            (PromotionState::Running, None),
            (PromotionState::NotReady(vec![Problem::Running]), None),
            (PromotionState::Serving, Some(Step::Fence)),
            (PromotionState::FencedRunning, Some(Step::Stop)),
            (PromotionState::NoFinalSnapshot, Some(Step::FinalSnapshot)),
            (PromotionState::NotSynced, Some(Step::Sync)),
            (PromotionState::AwayFromSnapshot, Some(Step::Restore)),
            (PromotionState::AwayFromArchive, Some(Step::Archive)),
            (PromotionState::AtPoint, Some(Step::Identity)),
            (PromotionState::Marked, Some(Step::Start)),
        ];
        for (state, step) in table {
            assert_eq!(next_step(&state), step, "{state:?}");
        }
    }

    #[test]
    fn a_failure_after_the_stop_gives_the_service_back_and_an_emergency_cannot() {
        let mut f = replica();
        // Serving: nothing to give back.
        assert!(!rollback_needed(Step::Fence, &f));
        fenced(&mut f);
        if let Some(p) = f.primary.as_mut() {
            p.running = false;
        }
        for step in [Step::FinalSnapshot, Step::Sync, Step::Identity, Step::Start] {
            assert!(rollback_needed(step, &f), "{step}");
        }
        // A stop that failed may have stopped it.
        if let Some(p) = f.primary.as_mut() {
            p.running = true;
        }
        assert!(rollback_needed(Step::Stop, &f));
        assert!(!rollback_needed(Step::Sync, &f));
        // The replica serves: the promotion is done, nothing to give back.
        if let Some(p) = f.primary.as_mut() {
            p.running = false;
        }
        f.replica_running = true;
        assert!(!rollback_needed(Step::Start, &f));
        f.replica_running = false;
        f.primary = None;
        assert!(!rollback_needed(Step::Start, &f));
    }

    #[test]
    fn a_replica_that_cannot_take_over_is_refused_before_the_fence_only() {
        let t = Target::FinalSnapshot;
        let mut f = replica();
        f.blocking = vec![Problem::Unfinished];
        assert!(matches!(
            PromotionState::of(&f, &t),
            PromotionState::NotReady(_)
        ));
        assert_eq!(next_step(&PromotionState::of(&f, &t)), None);
        // Once fenced (a resumed run), it goes on.
        fenced(&mut f);
        assert_eq!(PromotionState::of(&f, &t), PromotionState::FencedRunning);
    }

    #[test]
    fn a_promoted_replica_that_stopped_is_started_once_the_primary_is_stopped() {
        let t = Target::FinalSnapshot;
        let mut f = replica();
        f.replica.promoted = Some(Promoted {
            at: None,
            kind: PromotionKind::Planned,
            from: None,
        });
        fenced(&mut f);
        assert_eq!(PromotionState::of(&f, &t), PromotionState::FencedRunning);
        if let Some(p) = f.primary.as_mut() {
            p.running = false;
        }
        assert_eq!(PromotionState::of(&f, &t), PromotionState::Marked);
    }

    #[test]
    fn an_emergency_restores_the_newest_snapshot_or_the_point_asked() {
        let mut f = replica();
        f.primary = None;
        f.replica_newest = Some(snapshots::Snapshot::listed("s2".into(), Utc::now()));
        assert_eq!(
            PromotionState::of(&f, &Target::Newest),
            PromotionState::AwayFromSnapshot
        );
        f.replica.restored = Some("s2".into());
        assert_eq!(
            PromotionState::of(&f, &Target::Newest),
            PromotionState::AtPoint
        );
        let archived = Target::Point(point("s0", 1_796_000_000, Some("web--s0")));
        assert_eq!(
            PromotionState::of(&f, &archived),
            PromotionState::AwayFromArchive
        );
        assert_eq!(
            next_step(&PromotionState::of(&f, &archived)),
            Some(Step::Archive)
        );
        f.replica.archive = Some(crate::markers::ArchiveOf::new(
            "p",
            "web",
            "s0",
            DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default(),
        ));
        assert_eq!(PromotionState::of(&f, &archived), PromotionState::AtPoint);
    }
}
