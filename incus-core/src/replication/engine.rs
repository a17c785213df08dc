//! The replication engine, shared by incus-push and incus-failover. Replicating one
//! instance is three steps: [`Replicator::observe`] reads both sides (changing nothing),
//! [`super::plan::decide`] decides everything from that (pure), and [`Replicator::apply`]
//! carries the decision out. The replica ends a consistent, inert copy: restored to the
//! newest snapshot, no autostart, no schedule, marked as this source's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::instances::Instance;
use crate::client::Client;
use crate::record::{InstanceRef, PushRecord};
use crate::select::{Connections, Selected};

use super::error::Error;
use super::observe::Observation;
use super::options::Options;
use super::plan::{self, DecideInput, Plan};

/// How many times a first copy that failed for a transient reason is made again.
pub const TRANSIENT_RETRIES: u32 = 2;

/// `REMOTE:INSTANCE`, for messages.
pub fn address(of: &InstanceRef) -> String {
    format!("{}:{}", of.remote, of.instance)
}

/// Replicates instances to one standby: the comparisons, checks, transfer, restore and
/// inert configuration of one replica at a time (call [`Replicator::replicate`] from as many
/// threads as wanted; listings and profiles are cached across them).
pub struct Replicator<'a> {
    pub(super) options: &'a Options,
    pub(super) standby: Client,
    pub(super) standby_fingerprint: String,
    /// The standby's cluster members (empty: a single server).
    pub(super) standby_members: Vec<String>,
    /// The standby's instances per project, listed once (`None`: the
    /// listing failed; every instance then reads its replica itself).
    pub(super) replicas: Mutex<BTreeMap<String, Option<BTreeMap<String, Instance>>>>,
    /// The snapshots the storage pools list, per remote and project, read once (where not
    /// known, the fast path is skipped).
    pub(super) pooled: crate::api::projects::PooledSnapshots,
    /// Profile names per standby project, listed once.
    pub(super) profiles: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// The standby's unfinished operations per project, read once by a push.
    pub(super) operations: Mutex<BTreeMap<String, Vec<crate::client::Operation>>>,
    /// The pool of each profile's root disk per (remote, project, profile), read once.
    pub(super) profile_pools: Mutex<BTreeMap<(String, String, String), Option<String>>>,
    /// The custom volumes claimed in this run, per (standby project, volume): the instance
    /// that replicates a shared volume (the first to reach it).
    /// The member addresses of each clustered source remote, read once (empty: a single
    /// server).
    pub(super) source_members: Mutex<BTreeMap<String, Vec<String>>>,
    /// Remotes that did not answer at all in this run, and why: later instances that need
    /// them fail at once instead of each waiting for its own timeout.
    pub(super) gone: Mutex<BTreeMap<String, String>>,
    pub(super) volumes_claimed: Mutex<BTreeMap<(String, crate::api::volumes::VolumeRef), String>>,
    /// Progress bars on a terminal (hidden otherwise): one per transfer under way, and the
    /// total a caller may add ([`Replicator::total_bar`]).
    pub(super) bars: indicatif::MultiProgress,
}

impl<'a> Replicator<'a> {
    /// Connects to the standby (its server information is read once).
    pub fn connect(options: &'a Options, connections: &Connections) -> crate::Result<Self> {
        let standby = connections.client(&options.to, None)?;
        let server = standby.server()?;
        server
            .check_supported(&options.to)
            .map_err(crate::Error::Config)?;
        let standby_fingerprint = server.environment.certificate_fingerprint.clone();
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
            // A new replica is placed by name on a member that answers only.
            standby_members: membership.online(),
            profiles: Mutex::new(BTreeMap::new()),
            profile_pools: Mutex::new(BTreeMap::new()),
            operations: Mutex::new(BTreeMap::new()),
            replicas: Mutex::new(BTreeMap::new()),
            pooled: Default::default(),
            volumes_claimed: Mutex::new(BTreeMap::new()),
            gone: Mutex::new(BTreeMap::new()),
            source_members: Mutex::new(BTreeMap::new()),
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

    /// The standby, in the project of the replica observed.
    pub(super) fn target(&self, observed: &super::observe::Observed) -> Client {
        self.standby.in_project(&observed.target_project)
    }

    /// Replicates one instance. A first copy that Incus failed for a reason known to be
    /// transient is made again, up to [`TRANSIENT_RETRIES`] times with a growing pause: what
    /// the failed attempt left is an unfinished copy, which the next attempt deletes and
    /// copies anew (as the next run would). The record counts the retries.
    pub fn replicate(&self, selected: &Selected) -> Result<PushRecord, Error> {
        self.check_not_gone(&[&self.options.to, &selected.of.remote])?;
        let mut retries = 0;
        let mut repaired: Vec<String> = Vec::new();
        loop {
            match self
                .replicate_once(selected)
                .inspect_err(|e| self.remember_gone(e))
            {
                Ok(mut record) => {
                    record.retries = retries;
                    record.repaired = repaired;
                    return Ok(record);
                }
                // A daemon that died in the middle of a refresh can leave snapshot records
                // without their volumes: Incus then refuses every write to the replica. Such
                // a record holds no data; deleted, the replica can be written again.
                Err(e)
                    if repaired.is_empty()
                        && !self.options.dry_run
                        && e.to_string()
                            .contains("snapshot record count doesn't match") =>
                {
                    repaired = super::repair::snapshot_records(self, selected, &e)?;
                }
                Err(e)
                    if e.is_transient()
                        && retries < TRANSIENT_RETRIES
                        && !crate::interrupt::requested() =>
                {
                    retries += 1;
                    std::thread::sleep(std::time::Duration::from_secs(2u64 << retries));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fails at once when one of `remotes` stopped answering earlier in this run.
    pub(super) fn check_not_gone(&self, remotes: &[&str]) -> Result<(), Error> {
        let gone = self
            .gone
            .lock()
            .map_err(|_| Error::Unsafe("remote states poisoned".to_string()))?;
        for remote in remotes {
            if let Some(reason) = gone.get(*remote) {
                return Err(Error::Unsafe(format!(
                    "skipped: {remote} stopped answering earlier in this run ({reason}); the next run will try again"
                )));
            }
        }
        Ok(())
    }

    /// Remembers a remote that did not answer at all.
    pub(super) fn remember_gone(&self, error: &Error) {
        if let Some((remote, reason)) = error.unreachable()
            && let Ok(mut gone) = self.gone.lock()
        {
            gone.entry(remote).or_insert(reason);
        }
    }

    /// Replicates one instance: observe, decide, apply. The error says why, and what to do.
    fn replicate_once(&self, selected: &Selected) -> Result<PushRecord, Error> {
        let started = Instant::now();
        let (observed, _lock) = match self.observe(selected)? {
            Observation::CurrentByListing { location } => {
                let mut report = Report::new(selected, self.options, started);
                report.volumes = super::volumes::listed_current(&selected.instance);
                return Ok(report.record(&Plan::UpToDate, location));
            }
            Observation::Read(observed, lock) => (observed, lock),
        };
        let decision = plan::decide(
            &observed,
            &DecideInput {
                options: self.options,
                standby_members: &self.standby_members,
                source: &selected.instance,
                now: chrono::Utc::now(),
            },
        )?;
        self.apply(selected, &observed, decision, started)
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
}

/// The `push` record of one replication.
pub(super) struct Report<'a> {
    selected: &'a Selected,
    options: &'a Options,
    started: Instant,
    pub moved_aside: Option<String>,
    pub archived: Vec<String>,
    pub archives_deleted: Vec<String>,
    pub volumes: Vec<crate::record::VolumeRecord>,
}

impl<'a> Report<'a> {
    pub(super) fn new(selected: &'a Selected, options: &'a Options, started: Instant) -> Self {
        Report {
            selected,
            options,
            started,
            moved_aside: None,
            archived: Vec::new(),
            archives_deleted: Vec::new(),
            volumes: Vec::new(),
        }
    }

    pub(super) fn record(self, plan: &Plan, target_location: Option<String>) -> PushRecord {
        let of = &self.selected.of;
        PushRecord {
            of: of.clone(),
            location: self.selected.instance.member().map(str::to_string),
            target_remote: self.options.to.clone(),
            target_project: self
                .options
                .target_project
                .clone()
                .unwrap_or_else(|| of.project.clone()),
            target_instance: of.instance.clone(),
            target_location,
            status: plan.status().to_string(),
            snapshots: plan.sent(),
            seconds: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            moved_aside: self.moved_aside,
            archived: self.archived,
            archives_deleted: self.archives_deleted,
            retries: 0,
            volumes: self.volumes,
            repaired: Vec::new(),
            dry_run: self.options.dry_run,
        }
    }
}
