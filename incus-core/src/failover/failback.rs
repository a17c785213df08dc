//! Failback: the way back once the old primary answers again, losing nothing on either side.
//!
//! Incus's refresh in the reverse direction (standby → old primary) deletes every snapshot
//! only the old primary has, and deletes and sends again every snapshot it made itself (their
//! creation times have sub-second precision, the copies' do not). So the old primary copy is
//! not refreshed: it is **renamed aside** (`NAME-before-failback-DATE`, with its diverged
//! state and all its snapshots, inert), and the instance comes back with the replication
//! engine in the other direction.
//!
//! | state | next step |
//! |---|---|
//! | `Done`: not promoted, no copy from the standby on the primary | done (`already`) |
//! | `SplitBrain`: the old primary copy runs | refused: fence it first |
//! | `OldCopyInPlace`: the old primary copy holds the name | `keep-aside` |
//! | `NotCopied`: no finished copy from the standby on the primary | `pre-copy` (long, while the standby serves) |
//! | `StandbyRunning` | `stop` |
//! | `NoFinalSnapshot`: none since the promotion | `final-snapshot` |
//! | `NotSynced`: the primary copy is not restored to it | `final-sync` |
//! | `StandbyPromoted`: the primary copy holds it all | `re-replica` (the standby copy inert again) |
//! | `PrimaryStopped`: the copy from the standby, stopped | `start` |
//! | `PrimaryMarked`: running, still marked as a copy | `identity` (its own settings back) |
//!
//! A `final-snapshot` or `final-sync` that fails, once the standby copy was stopped, starts
//! it again (`restart`): the service is never left down. The two copies never run at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;

use crate::api::instances::{self, Instance, StateAction};
use crate::api::migration::Mode;
use crate::api::snapshots;
use crate::client::Client;
use crate::markers::{
    AUTOSTART, ConfigPatch, ReplaceReason, Replaced, ReplicaMarkers, SourceId, SourceSettings,
};
use crate::record::{FailedBackRecord, InstanceRef, Output, Record};
use crate::replication::{Options, Placement, Replicator, address};
use crate::select::Selected;

use super::error::Error;
use super::pairs::{Pair, PairArgs, Pairs, resolve};
use super::runner::{Runner, Sequence};
use super::step::{Flow, Step};

/// Names of the last snapshot a failback takes on the standby.
const FINAL_PREFIX: &str = "failback-";

/// `incus-failover failback`'s choices.
#[derive(Debug, Clone)]
pub struct FailbackOptions {
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the standby copy before forcing it.
    pub stop_timeout: u64,
    /// Who connects to whom for the copies.
    pub mode: Mode,
    /// Fail back an instance on btrfs to an Incus 6.0 primary even so.
    pub btrfs_anyway: bool,
}

/// The primary's instance of that name, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryCopy {
    pub running: bool,
    /// It is the engine's copy of the standby's instance (its marker names it), not the old
    /// primary copy.
    pub from_standby: bool,
    pub markers: ReplicaMarkers,
}

/// What a failback reads of both servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailbackFacts {
    pub standby_running: bool,
    pub standby: ReplicaMarkers,
    pub primary: Option<PrimaryCopy>,
    /// The standby's `failback-` snapshot taken since the promotion (and since the copy
    /// last ran).
    pub final_snapshot: Option<String>,
    /// This run made the long copy already (a resumed run copies again while the standby
    /// still serves, so that the downtime stays short).
    pub pre_copied: bool,
}

/// Where a failback stands (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailbackState {
    Done,
    SplitBrain,
    /// The copy from the standby runs while the standby copy is still promoted (started by
    /// hand): refused.
    BothCopies,
    OldCopyInPlace,
    NotCopied,
    StandbyRunning,
    NoFinalSnapshot,
    NotSynced,
    StandbyPromoted,
    PrimaryStopped,
    PrimaryMarked,
}

impl FailbackState {
    pub fn of(facts: &FailbackFacts) -> Self {
        let promoted = facts.standby.promoted.is_some();
        let copy = facts.primary.as_ref().filter(|p| p.from_standby);
        if !promoted {
            return match copy {
                None => FailbackState::Done,
                Some(copy) if !copy.running => FailbackState::PrimaryStopped,
                Some(_) => FailbackState::PrimaryMarked,
            };
        }
        match (&facts.primary, copy) {
            (Some(old), None) if old.running => return FailbackState::SplitBrain,
            (Some(_), None) => return FailbackState::OldCopyInPlace,
            _ => {}
        }
        if copy.is_some_and(|c| c.running) {
            return FailbackState::BothCopies;
        }
        let Some(copy) = copy.filter(|c| c.markers.synced_at.is_some()) else {
            return FailbackState::NotCopied;
        };
        if facts.standby_running {
            return if facts.pre_copied {
                FailbackState::StandbyRunning
            } else {
                FailbackState::NotCopied
            };
        }
        match &facts.final_snapshot {
            None => FailbackState::NoFinalSnapshot,
            Some(last) if copy.markers.restored.as_ref() != Some(last) => FailbackState::NotSynced,
            Some(_) => FailbackState::StandbyPromoted,
        }
    }
}

/// The next step of a failback (`None`: done, or refused for a split brain).
pub fn next_step(state: FailbackState) -> Option<Step> {
    match state {
        FailbackState::Done | FailbackState::SplitBrain | FailbackState::BothCopies => None,
        FailbackState::OldCopyInPlace => Some(Step::KeepAside),
        FailbackState::NotCopied => Some(Step::PreCopy),
        FailbackState::StandbyRunning => Some(Step::Stop),
        FailbackState::NoFinalSnapshot => Some(Step::FinalSnapshot),
        FailbackState::NotSynced => Some(Step::FinalSync),
        FailbackState::StandbyPromoted => Some(Step::ReReplica),
        FailbackState::PrimaryStopped => Some(Step::Start),
        FailbackState::PrimaryMarked => Some(Step::Identity),
    }
}

/// `incus-failover failback`: one `failed-back` record per instance.
pub fn failback(args: &PairArgs, options: &FailbackOptions, output: &Output) -> Result<(), Error> {
    let pairs = resolve(args, output)?;
    let runner = Runner {
        output,
        dry_run: options.dry_run,
    };
    for pair in &pairs.pairs {
        if crate::interrupt::requested() {
            break;
        }
        let start = Instant::now();
        match failback_one(&pairs, pair, args, options, &runner) {
            Ok(mut record) => {
                record.seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                output.emit(&Record::FailedBack(record));
            }
            Err(e) => output.error(
                Some(&pair.of),
                &format!(
                    "failing {} back from {}: {e}",
                    address(&pair.of),
                    args.standby
                ),
            ),
        }
    }
    Ok(())
}

fn failback_one(
    pairs: &Pairs,
    pair: &Pair,
    args: &PairArgs,
    options: &FailbackOptions,
    runner: &Runner,
) -> Result<FailedBackRecord, Error> {
    let primary = pairs.primary(pair)?;
    // The engine, the other way round: the standby's instance is the source, the primary
    // the target, on the member of the old primary copy (clusters).
    let mut back = Options::failback(&pair.of.remote, &pair.of.project);
    back.placement = placement(&primary, &pair.of.instance);
    back.mode = options.mode;
    let replicator = Replicator::connect(&back, &pairs.connections)
        .map_err(|e| Error::incus(format!("the primary {}", pair.of.remote), e))?;
    let sequence = Failback {
        pair,
        standby: pairs.replica(pair),
        standby_name: &args.standby,
        primary: &primary,
        replicator: &replicator,
        options,
        aside: aside_name(&pair.of.instance, Utc::now()),
        final_name: format!("{FINAL_PREFIX}{}", Utc::now().format("%Y%m%d-%H%M%S")),
        snapshot: Mutex::new(None),
        taken: Mutex::new(None),
        pre_copied: std::sync::atomic::AtomicBool::new(false),
    };
    let before = sequence.observe()?;
    let state = FailbackState::of(&before);
    let mut record = FailedBackRecord {
        of: pair.of.clone(),
        standby: args.standby.clone(),
        snapshot: None,
        kept_aside: None,
        already: state == FailbackState::Done,
        seconds: 0.0,
        dry_run: options.dry_run,
    };
    if record.already {
        // Never promoted, or failed back by an earlier run.
        record.snapshot = before.standby.restored.clone();
        return Ok(record);
    }
    if matches!(
        state,
        FailbackState::OldCopyInPlace | FailbackState::NotCopied
    ) && !options.btrfs_anyway
    {
        sequence.refuse_btrfs_on_6_0()?;
    }
    if state == FailbackState::OldCopyInPlace {
        record.kept_aside = Some(sequence.aside.clone());
    }
    if matches!(
        state,
        FailbackState::PrimaryStopped | FailbackState::PrimaryMarked
    ) {
        record.snapshot = before
            .primary
            .as_ref()
            .and_then(|p| p.markers.restored.clone());
    }
    runner.drive(&sequence, &pair.of)?;
    if record.snapshot.is_none() {
        record.snapshot = sequence.snapshot.lock().ok().and_then(|s| s.clone());
    }
    Ok(record)
}

/// On a clustered primary the instance goes back to the member of the old primary copy
/// (under its name until it is renamed aside, then under its aside name).
fn placement(primary: &Client, name: &str) -> Placement {
    match instances::get(primary, name) {
        Ok((old, _)) => old
            .member()
            .map(|m| Placement::Member(m.to_string()))
            .unwrap_or_default(),
        // A resumed run: the old copy is kept aside already, under NAME-before-failback-….
        Err(e) if e.is_not_found() => instances::list(primary, false)
            .ok()
            .and_then(|list| {
                let aside = format!("{name}-before-failback-");
                list.iter()
                    .filter(|i| i.name.starts_with(&aside))
                    .max_by(|a, b| a.name.cmp(&b.name))
                    .and_then(|i| i.member().map(|m| Placement::Member(m.to_string())))
            })
            .unwrap_or_default(),
        Err(_) => Placement::Auto,
    }
}

/// The failback of one instance.
struct Failback<'a> {
    pair: &'a Pair,
    standby: Client,
    standby_name: &'a str,
    primary: &'a Client,
    replicator: &'a Replicator<'a>,
    options: &'a FailbackOptions,
    /// The name the old primary copy is kept under.
    aside: String,
    /// The name of the final snapshot this run takes, if it takes one.
    final_name: String,
    /// The snapshot the primary copy ends restored to, once known.
    snapshot: Mutex<Option<String>>,
    /// The final snapshot once this run took it.
    taken: Mutex<Option<String>>,
    /// This run made the long copy.
    pre_copied: std::sync::atomic::AtomicBool,
}

impl Sequence for Failback<'_> {
    type Facts = FailbackFacts;
    const FLOW: Flow = Flow::Failback;

    fn observe(&self) -> Result<FailbackFacts, Error> {
        let name = self.name();
        let (standby_copy, _) = instances::get(&self.standby, name).map_err(|e| {
            if e.is_not_found() {
                Error::Refused(format!("there is no {}:{name}", self.standby_name))
            } else {
                Error::from(e)
            }
        })?;
        let standby = ReplicaMarkers::from_config(&standby_copy.config);
        let primary = match instances::get(self.primary, name) {
            Ok((copy, _)) => Some(self.primary_copy(&copy)?),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let final_snapshot = match standby.promoted.as_ref() {
            Some(promoted) => self.final_snapshot_since(promoted.at, &standby_copy)?,
            None => None,
        };
        if let Some(last) = &final_snapshot
            && let Ok(mut seen) = self.snapshot.lock()
        {
            *seen = Some(last.clone());
        }
        Ok(FailbackFacts {
            standby_running: standby_copy.is_running(),
            standby,
            primary,
            final_snapshot,
            pre_copied: self.pre_copied.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    fn next_step(&self, facts: &FailbackFacts) -> Result<Option<Step>, Error> {
        let state = FailbackState::of(facts);
        let at = address(&self.pair.of);
        if state == FailbackState::SplitBrain {
            return Err(Error::Refused(format!(
                "{at} runs (split brain): fence it first with incus-failover fence {at} --standby {}",
                self.standby_name
            )));
        }
        if state == FailbackState::BothCopies {
            return Err(Error::Refused(format!(
                "{at}, the copy from the standby, runs while {}:{} still serves (started by hand?); stop one of them, then run failback again",
                self.standby_name,
                self.name()
            )));
        }
        Ok(next_step(state))
    }

    fn describe(&self, step: Step, _facts: &FailbackFacts) -> String {
        let (at, standby, name) = (address(&self.pair.of), self.standby_name, self.name());
        match step {
            Step::KeepAside => format!(
                "rename the old primary copy {at} to {} (kept with its snapshots and its own data)",
                self.aside
            ),
            Step::PreCopy | Step::FinalSync => format!("copy {standby}:{name} to {at}"),
            Step::Stop => format!("stop {standby}:{name} on the standby"),
            Step::FinalSnapshot => format!("snapshot {standby}:{name}/{}", self.final_name),
            Step::ReReplica => {
                format!("make {standby}:{name} an inert replica of {at} again")
            }
            Step::Start => format!("start {at}"),
            Step::Restart => format!("start {standby}:{name} again"),
            _ => format!("give {at} its own settings back"),
        }
    }

    fn run(&self, step: Step, facts: &FailbackFacts, runner: &Runner) -> Result<(), Error> {
        let name = self.name();
        match step {
            Step::KeepAside => self.keep_old_primary_aside(),
            Step::PreCopy => {
                if self.btrfs_both_ways()? {
                    clear_received_uuids(
                        &self.standby,
                        self.standby_name,
                        name,
                        self.options.mode,
                    )?;
                }
                self.sync("pre-copy")?;
                self.pre_copied
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Step::Stop => super::fence::stop_copy(
                runner,
                &self.pair.of,
                &self.standby,
                name,
                &format!("{}:{name}", self.standby_name),
                self.options.stop_timeout,
            ),
            Step::FinalSnapshot => {
                crate::api::volumes::snapshot_attached(&self.standby, name, &self.final_name)
                    .and_then(|_| {
                        snapshots::create(&self.standby, name, &self.final_name, false, None)
                    })
                    .map_err(|e| {
                        Error::incus(format!("taking the final snapshot {}", self.final_name), e)
                    })?;
                if let Ok(mut taken) = self.taken.lock() {
                    *taken = Some(self.final_name.clone());
                }
                Ok(())
            }
            Step::FinalSync => self.final_sync(facts),
            Step::ReReplica => self.make_standby_a_replica_again(facts),
            Step::Start => self.start_primary(),
            Step::Restart => {
                let (copy, _) = instances::get(&self.standby, name)?;
                if copy.is_running() {
                    return Ok(());
                }
                instances::change_state(&self.standby, name, StateAction::Start, 0, false)
                    .map_err(Error::from)
            }
            _ => self.primary_identity(),
        }
    }

    fn assume(&self, mut facts: FailbackFacts, step: Step) -> FailbackFacts {
        match step {
            Step::KeepAside => facts.primary = None,
            Step::PreCopy => {
                facts.pre_copied = true;
                facts.primary = Some(PrimaryCopy {
                    running: false,
                    from_standby: true,
                    markers: ReplicaMarkers {
                        synced_at: Some(Utc::now()),
                        ..ReplicaMarkers::default()
                    },
                });
            }
            Step::Stop => facts.standby_running = false,
            Step::FinalSnapshot => {
                facts.final_snapshot = Some(self.final_name.clone());
                if let Ok(mut seen) = self.snapshot.lock() {
                    *seen = Some(self.final_name.clone());
                }
            }
            Step::FinalSync => {
                if let Some(copy) = facts.primary.as_mut() {
                    copy.markers.restored = facts.final_snapshot.clone();
                }
            }
            Step::ReReplica => facts.standby.promoted = None,
            Step::Start => {
                if let Some(copy) = facts.primary.as_mut() {
                    copy.running = true;
                }
            }
            _ => {
                if let Some(copy) = facts.primary.as_mut() {
                    copy.from_standby = false;
                }
            }
        }
        facts
    }

    /// Once the standby copy is stopped, a failure must not leave the service down: whoever
    /// stopped it (this run or a cut one), it serves again, as long as it is still the
    /// promoted copy (after `re-replica` the primary copy is the instance).
    fn compensation(&self, failed: Step, facts: &FailbackFacts) -> Option<Step> {
        let stopped = failed == Step::Stop || !facts.standby_running;
        (facts.standby.promoted.is_some() && stopped).then_some(Step::Restart)
    }

    fn compensated(&self, _step: Step, result: &Result<(), Error>) -> String {
        let (standby, name) = (self.standby_name, self.name());
        match result {
            Ok(()) => format!(
                "{standby}:{name} was started again and still serves: nothing is lost, run failback again once the cause is fixed"
            ),
            Err(start) => format!(
                "and starting {standby}:{name} again failed too ({start}): start it by hand (incus start {standby}:{name})"
            ),
        }
    }
}

impl Failback<'_> {
    fn name(&self) -> &str {
        &self.pair.of.instance
    }

    fn primary_copy(&self, copy: &Instance) -> Result<PrimaryCopy, Error> {
        let markers = ReplicaMarkers::from_config(&copy.config);
        let from_standby = match &markers.source {
            None => false,
            Some(source) => {
                let fingerprint = self
                    .standby
                    .server()?
                    .environment
                    .certificate_fingerprint
                    .clone();
                *source == SourceId::new(&fingerprint, self.standby.project(), self.name())
            }
        };
        Ok(PrimaryCopy {
            running: copy.is_running(),
            from_standby,
            markers,
        })
    }

    /// The standby's newest snapshot when this run took it, or when an earlier run of this
    /// failback did: after the promotion (an older `failback-` snapshot would bring back old
    /// data), and the copy has not run since (it would lack what was written then).
    fn final_snapshot_since(
        &self,
        promoted_at: Option<chrono::DateTime<Utc>>,
        copy: &Instance,
    ) -> Result<Option<String>, Error> {
        let taken = self.taken.lock().ok().and_then(|t| t.clone());
        let list = snapshots::list(&self.standby, self.name())?;
        Ok(list
            .last()
            .filter(|newest| {
                Some(&newest.name) == taken.as_ref()
                    || (newest.name.starts_with(FINAL_PREFIX)
                        && promoted_at
                            .is_some_and(|at| newest.created_at.timestamp() >= at.timestamp())
                        && !copy.ran_since(newest.created_at))
            })
            .map(|s| s.name.clone()))
    }

    /// A primary whose btrfs refresh cannot receive a snapshot again (Incus 6.0.4, see
    /// [`crate::api::server::Features::btrfs_refresh_receives_again`]) would fail the final
    /// sync; refused before anything changes.
    fn refuse_btrfs_on_6_0(&self) -> Result<(), Error> {
        let server = self.primary.server()?;
        if server.features().btrfs_refresh_receives_again || !self.btrfs_both_ways()? {
            return Ok(());
        }
        let version = match server.server_version() {
            "" => "an Incus that does not say its version".to_string(),
            v => format!("Incus {v}"),
        };
        Err(Error::Refused(format!(
            "the instance is on btrfs and the primary runs {version}, whose btrfs refresh cannot receive again a snapshot it has (\"file exists\"), which the final sync of a failback needs; nothing was changed: keep it running on {}, or upgrade the primary to Incus 7.0 LTS (--btrfs-anyway tries even so)",
            self.standby_name
        )))
    }

    /// Both copies of the instance are on btrfs pools (then Incus sends btrfs streams between
    /// them, see [`clear_received_uuids`]).
    fn btrfs_both_ways(&self) -> Result<bool, Error> {
        let (standby_copy, _) = instances::get(&self.standby, self.name())?;
        let Some(pool) = standby_copy.root_pool() else {
            return Ok(false);
        };
        let btrfs = |client: &Client| {
            crate::api::projects::pool_driver(client, pool).map(|driver| driver == "btrfs")
        };
        Ok(btrfs(&self.standby)? && btrfs(self.primary)?)
    }

    /// The old primary copy, with whatever it holds that the standby does not, is renamed
    /// aside, inert (it was fenced); nothing of it is deleted.
    fn keep_old_primary_aside(&self) -> Result<(), Error> {
        let name = self.name();
        self.keep_old_volumes_aside()?;
        let mut changes = ConfigPatch::default();
        changes.set(AUTOSTART, "false");
        changes.merge(
            Replaced::now(ReplaceReason::Failback {
                standby: self.standby_name.to_string(),
            })
            .to_patch(),
        );
        instances::patch_config(self.primary, name, &changes.as_merge(), None)
            .map_err(|e| Error::incus("marking the old primary copy", e))?;
        instances::rename(self.primary, name, &self.aside).map_err(|e| {
            Error::incus(
                format!("renaming the old primary copy to {}", self.aside),
                e,
            )
        })
    }

    /// The old primary's own custom volumes that the standby's copy attaches under the same
    /// names are renamed with the instance's suffix before the instance is: kept with their
    /// snapshots and their own data, and out of the way of the copies coming back (Incus
    /// points the old copy's devices to the new names). Volumes the failback's own copy made
    /// are left. A volume other instances use too is refused, before anything changes.
    fn keep_old_volumes_aside(&self) -> Result<(), Error> {
        use crate::api::volumes;
        let name = self.name();
        let suffix = self.aside.strip_prefix(name).unwrap_or("-before-failback");
        let (standby_copy, _) = instances::get(&self.standby, name)?;
        for a in volumes::attached(&standby_copy.expanded_devices) {
            let volume = &a.volume;
            let Some((old, _)) = volumes::get(self.primary, volume)? else {
                continue;
            };
            if crate::markers::VolumeMarkers::from_config(&old.config)
                .source
                .is_some()
            {
                continue;
            }
            let users: Vec<String> = volumes::used_by_instances(self.primary, volume)?
                .into_iter()
                .filter(|user| user != name)
                .collect();
            if !users.is_empty() {
                return Err(Error::Refused(format!(
                    "volume {volume} on the primary is used by {} too: failing {name} back would take it from them; detach it from them, or fail them back together",
                    users.join(", ")
                )));
            }
            let aside = format!("{}{suffix}", volume.name);
            volumes::rename(self.primary, volume, &aside).map_err(|e| {
                Error::incus(
                    format!("renaming the old primary's volume {volume} to {aside}"),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Copies or refreshes the standby's instance onto the primary with the engine.
    fn sync(&self, what: &'static str) -> Result<(), Error> {
        let name = self.name();
        let (instance, _) = instances::get(&self.standby, name)?;
        let selected = Selected {
            of: InstanceRef {
                remote: self.standby_name.to_string(),
                project: self.standby.project().to_string(),
                instance: name.to_string(),
            },
            client: self.standby.clone(),
            instance,
        };
        self.replicator
            .replicate(&selected)
            .map_err(|source| Error::Transfer {
                what,
                source: Box::new(source),
            })?;
        Ok(())
    }

    fn final_sync(&self, facts: &FailbackFacts) -> Result<(), Error> {
        self.sync("final-sync")?;
        let snapshot = facts.final_snapshot.clone().unwrap_or_default();
        let (copy, _) = instances::get(self.primary, self.name())?;
        if ReplicaMarkers::from_config(&copy.config).restored.as_ref() != Some(&snapshot) {
            return Err(Error::NoEffect(format!(
                "after the final sync the primary copy is not restored to {snapshot}; nothing was started"
            )));
        }
        Ok(())
    }

    /// The standby copy is an inert replica of the primary copy again: inert keys, and
    /// markers naming the primary copy (its new `volatile.uuid`).
    fn make_standby_a_replica_again(&self, facts: &FailbackFacts) -> Result<(), Error> {
        let name = self.name();
        let (copy, _) = instances::get(self.primary, name)?;
        let fingerprint = self
            .primary
            .server()?
            .environment
            .certificate_fingerprint
            .clone();
        let (standby_copy, _) = instances::get(&self.standby, name)?;
        let markers = ReplicaMarkers {
            source: Some(SourceId::new(&fingerprint, &self.pair.of.project, name)),
            source_uuid: crate::markers::instance_uuid(&copy.config).cloned(),
            source_settings: Some(SourceSettings::of_source(&standby_copy.config)),
            restored: facts.final_snapshot.clone(),
            synced_at: Some(Utc::now()),
            ..ReplicaMarkers::default()
        };
        crate::replication::volumes::mark_as_replicas(
            &self.standby,
            name,
            &fingerprint,
            &self.pair.of.project,
            facts.final_snapshot.as_deref(),
        )
        .map_err(|e| {
            Error::incus(
                format!(
                    "making the volumes of {}:{name} replicas again",
                    self.standby_name
                ),
                e,
            )
        })?;
        let mut changes = ConfigPatch::inert();
        changes.merge(markers.to_patch());
        instances::patch_config(&self.standby, name, &changes.as_merge(), None).map_err(|e| {
            Error::incus(
                format!("making {}:{name} a replica again", self.standby_name),
                e,
            )
        })
    }

    /// The primary copy gets the instance's own settings back (from the promoted copy's, which
    /// the restore brought) instead of the engine's inert ones and markers.
    fn primary_identity(&self) -> Result<(), Error> {
        let name = self.name();
        let (copy, _) = instances::get(self.primary, name)?;
        let markers = ReplicaMarkers::from_config(&copy.config);
        if markers.source.is_none() {
            return Ok(());
        }
        // Before the instance's identity ends the step (a failure is retried by the next run):
        // the next push sends this copy's snapshots, which the failback's refresh received.
        if self.btrfs_both_ways()? {
            clear_received_uuids(self.primary, &self.pair.of.remote, name, self.options.mode)?;
        }
        // The volumes first: the instance's identity, written last, ends the step.
        crate::replication::volumes::give_own_settings(self.primary, name)
            .map_err(|e| Error::incus("giving the primary's volumes their own settings", e))?;
        let mut changes = ConfigPatch::default();
        for (key, value) in super::promote::own_settings(&markers) {
            changes.set(&key, value);
        }
        changes.merge(ReplicaMarkers::default().to_patch());
        instances::patch_config(self.primary, name, &changes.as_merge(), None)
            .map_err(|e| Error::incus("writing the primary copy's configuration", e))
    }

    /// The primary copy starts, once the standby copy is seen stopped.
    fn start_primary(&self) -> Result<(), Error> {
        let name = self.name();
        let (standby_copy, _) = instances::get(&self.standby, name)?;
        if standby_copy.is_running() {
            return Err(Error::Refused(format!(
                "{}:{name} runs again; the primary copy was not started",
                self.standby_name
            )));
        }
        instances::change_state(self.primary, name, StateAction::Start, 0, false)
            .map_err(|e| Error::incus(format!("starting {}", address(&self.pair.of)), e))
    }
}

/// Marks the throwaway copy [`clear_received_uuids`] makes, so that a cut run's is recognised
/// and deleted (and nothing else ever is).
const SEND_PASS_KEY: &str = "user.incus-standby.btrfs-send-pass";

/// Makes the instance's btrfs snapshots safe to send to another server, by sending them all
/// once on their own server: a copy of the instance under a throwaway name on the same pool,
/// deleted at once.
///
/// Why (Incus 6.0.4 and 7.0.2 alike; the code is unchanged in Incus main as of 7.3): a btrfs
/// snapshot that an optimized *refresh* brought stays read-write, with its received UUID set
/// again by Incus (the refresh path leaves out the subvolume's read-only flag). To send such a
/// snapshot, Incus sets it read-only, sends it (the stream names it by its received UUID), then
/// sets it read-write again with `btrfs property set -f`, which clears the received UUID. The
/// next stream of the same transfer then names that snapshot as its parent by its own UUID,
/// which the receiving server does not know: `btrfs receive … cannot find parent subvolume`,
/// and the partly received subvolumes stay on the target's pool. A transfer that failed so
/// has cleared those UUIDs, which is why a second `incus copy` succeeds. A replica's snapshots
/// after its first copy, and a promoted replica's `failover-` snapshot, all came by a refresh,
/// so copying a promoted instance back always met this. A pass on the same server clears them
/// without a failure (there the parent is found by its own UUID) and leaves nothing behind.
/// It costs one full copy of the instance on its pool while it runs.
fn clear_received_uuids(
    client: &Client,
    remote: &str,
    name: &str,
    mode: Mode,
) -> Result<(), Error> {
    use crate::client::WaitOptions;
    let context = |e| {
        Error::incus(
            format!("sending the btrfs snapshots of {remote}:{name} once on their own server"),
            e,
        )
    };
    let (instance, _) = instances::get(client, name)?;
    let Some(pool) = instance.root_pool().map(str::to_string) else {
        return Ok(());
    };
    let temp = send_pass_name(name);
    // A cut run's copy (marked, never anything else).
    match instances::get(client, &temp) {
        Ok((left, _)) if left.config.contains_key(SEND_PASS_KEY) => {
            instances::delete(client, &temp).map_err(context)?
        }
        Ok(_) => {
            return Err(Error::Refused(format!(
                "{remote}:{temp} exists and is not a copy failback made: rename it"
            )));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    // Only the root disk: no NIC, profile or custom volume of the instance's.
    let mut trimmed = instance.clone();
    trimmed.devices = crate::api::instances::root_disk(&instance.expanded_devices)
        .map(|(device, config)| BTreeMap::from([(device.clone(), config.clone())]))
        .unwrap_or_default();
    trimmed.profiles = Vec::new();
    let overrides = BTreeMap::from([
        (AUTOSTART.to_string(), Some("false".to_string())),
        (SEND_PASS_KEY.to_string(), Some("true".to_string())),
    ]);
    let transfer = crate::api::migration::Transfer {
        source: client,
        instance: &trimmed,
        target: client,
        target_name: &temp,
        refresh: false,
        pool: Some(&pool),
        config_overrides: &overrides,
        placement: instance.member(),
    };
    let sent = transfer.run(mode, &WaitOptions::default());
    // Whatever the transfer did, the throwaway copy goes.
    let deleted = match instances::delete(client, &temp) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    };
    sent.map_err(context)?;
    deleted.map_err(context)
}

/// `NAME-btrfs-send-pass`, cut to Incus's 63 characters.
fn send_pass_name(name: &str) -> String {
    let suffix = "-btrfs-send-pass";
    let base: String = name.chars().take(63 - suffix.len()).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// `NAME-before-failback-YYYYMMDD-HHMMSS`, cut to Incus's 63 characters.
fn aside_name(name: &str, at: chrono::DateTime<Utc>) -> String {
    let suffix = at.format("-before-failback-%Y%m%d-%H%M%S").to_string();
    let room = 63usize.saturating_sub(suffix.len());
    let base: String = name.chars().take(room).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::{Promoted, PromotionKind};

    #[test]
    fn the_old_primary_copy_is_kept_under_a_name_that_says_so() {
        let at = chrono::DateTime::from_timestamp(1_795_899_000, 0).unwrap_or_default();
        assert_eq!(aside_name("web", at), "web-before-failback-20261128-205000");
        assert_eq!(aside_name(&"x".repeat(70), at).len(), 63);
        assert_eq!(send_pass_name("web"), "web-btrfs-send-pass");
        assert_eq!(send_pass_name(&"x".repeat(70)).len(), 63);
    }

    fn promoted() -> FailbackFacts {
        FailbackFacts {
            standby_running: true,
            standby: ReplicaMarkers {
                promoted: Some(Promoted {
                    at: None,
                    kind: PromotionKind::Planned,
                    from: None,
                }),
                ..ReplicaMarkers::default()
            },
            primary: Some(PrimaryCopy {
                running: false,
                from_standby: false,
                markers: ReplicaMarkers::default(),
            }),
            final_snapshot: None,
            pre_copied: false,
        }
    }

    /// Every state of a failback, in the order a run goes through them.
    #[test]
    fn a_failback_goes_aside_precopy_stop_snapshot_sync_rereplica_start_identity() {
        let step = |f: &FailbackFacts| next_step(FailbackState::of(f));
        let mut f = promoted();
        assert_eq!(step(&f), Some(Step::KeepAside));
        if let Some(p) = f.primary.as_mut() {
            p.running = true;
        }
        assert_eq!(FailbackState::of(&f), FailbackState::SplitBrain);
        assert_eq!(step(&f), None);
        f.primary = None;
        assert_eq!(step(&f), Some(Step::PreCopy));
        // An unfinished copy from the standby is copied again.
        f.primary = Some(PrimaryCopy {
            running: false,
            from_standby: true,
            markers: ReplicaMarkers::default(),
        });
        assert_eq!(step(&f), Some(Step::PreCopy));
        if let Some(p) = f.primary.as_mut() {
            p.markers.synced_at = Some(Utc::now());
        }
        // A finished copy from an earlier run is copied again while the standby serves.
        assert_eq!(step(&f), Some(Step::PreCopy));
        f.pre_copied = true;
        assert_eq!(step(&f), Some(Step::Stop));
        // The copy from the standby started by hand while the standby still serves.
        if let Some(p) = f.primary.as_mut() {
            p.running = true;
        }
        assert_eq!(FailbackState::of(&f), FailbackState::BothCopies);
        assert_eq!(step(&f), None);
        if let Some(p) = f.primary.as_mut() {
            p.running = false;
        }
        f.standby_running = false;
        assert_eq!(step(&f), Some(Step::FinalSnapshot));
        f.final_snapshot = Some("failback-1".into());
        assert_eq!(step(&f), Some(Step::FinalSync));
        if let Some(p) = f.primary.as_mut() {
            p.markers.restored = Some("failback-1".into());
        }
        assert_eq!(step(&f), Some(Step::ReReplica));
        f.standby.promoted = None;
        assert_eq!(step(&f), Some(Step::Start));
        if let Some(p) = f.primary.as_mut() {
            p.running = true;
        }
        assert_eq!(step(&f), Some(Step::Identity));
        if let Some(p) = f.primary.as_mut() {
            p.from_standby = false;
        }
        assert_eq!(FailbackState::of(&f), FailbackState::Done);
        assert_eq!(step(&f), None);
    }
}
