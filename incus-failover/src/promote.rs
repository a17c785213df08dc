//! `promote` and `fence`: the seed's last steps ("stop the primary, start the copy on the
//! snapshot server") as one resumable sequence per instance.
//!
//! Every step first looks at the servers and does nothing if it is done already, so a run
//! killed at any point is finished by the next one; and the replica is started only once the
//! primary copy is fenced (autostart off) and seen stopped, so both never run together.
//!
//! Planned: fence the primary copy (`boot.autostart=false`, with its old value kept on it),
//! stop it (cleanly, then by force), take a final snapshot, sync it with the replication
//! engine (the replica is restored to it), give the replica the source's own settings back,
//! start it. Nothing is lost.
//!
//! Emergency (the primary does not answer): the replica starts from the newest snapshot it
//! holds; the record gives the data-loss window, and the operator is told how to keep the old
//! primary from starting its copies again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use incus_core::api::instances::{self, Instance};
use incus_core::api::migration::Mode;
use incus_core::api::snapshots;
use incus_core::cli::usage;
use incus_core::client::Client;
use incus_core::interrupt;
use incus_core::record::{FencedRecord, InstanceRef, Output, PromotedRecord, Record, StepRecord};
use incus_core::replication::plan::{Point, moved_aside_name};
use incus_core::replication::{ARCHIVE_TIME_KEY, archive_point};
use incus_core::replication::{
    AUTOSTART_BEFORE_KEY, AUTOSTART_UNSET as UNSET, FENCED_KEY, LeaseGuard, Options, PROMOTED_KEY,
    Placement, RESTORED_KEY, Replicator, SOURCE_KEY, SOURCE_SETTINGS_KEY, SOURCE_UUID_KEY,
    SYNCED_KEY, address, inert_overrides,
};
use incus_core::select::Selected;

use crate::pairs::{Pair, PairArgs, Pairs, resolve};
use crate::status::rfc3339;

/// Names of the final snapshots a planned promotion takes.
const FINAL_PREFIX: &str = "failover-";

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover promote web --standby standby --dry-run\n  incus-failover promote web db --standby standby\n  incus-failover promote --all --standby standby --emergency\n  incus-failover promote web --standby standby --at \"2026-11-24 03:00\""
)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// The primary is gone: start each replica from the newest snapshot it holds. Refused
    /// while the primary answers (a planned promotion then loses nothing)
    #[arg(long)]
    pub emergency: bool,
    /// Print every step that would be taken; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the primary copy before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
    /// Who connects to whom for the final sync (as incus-push --mode)
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    pub mode: Mode,
    /// How many instances to promote at once (started in boot.autostart.priority order)
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Go back in time: start from this point instead of the newest data (a replica snapshot
    /// or an archive point, by name; or a time: the newest point at or before it, RFC 3339
    /// or `YYYY-MM-DD[ HH:MM]` in UTC). No final sync: today's data stays on the fenced
    /// primary copy, untouched
    #[arg(long, value_name = "SNAPSHOT|TIME")]
    pub at: Option<String>,
    /// Take a replica's lease even while another run holds it (a holder on another host that
    /// died; --emergency always does)
    #[arg(long)]
    pub break_lease: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  incus-failover fence primary: --standby standby")]
pub struct FenceArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Print what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
}

/// Reports each step as a `step` record.
pub struct Steps<'a> {
    pub output: &'a Output,
    pub dry_run: bool,
}

impl Steps<'_> {
    pub fn report(&self, of: &InstanceRef, step: &str, detail: String) {
        self.output.emit(&Record::Step(StepRecord {
            of: of.clone(),
            step: step.to_string(),
            detail,
            dry_run: self.dry_run,
        }));
    }
}

/// `incus-failover promote`.
pub fn promote(args: &PromoteArgs, output: &Output) -> Result<()> {
    if args.jobs == 0 {
        return Err(usage("--jobs must be at least 1"));
    }
    let mut pairs = resolve(&args.pairs, output)?;
    if pairs.pairs.is_empty() {
        return Ok(());
    }
    let standby_name = &args.pairs.standby;
    pairs
        .standby
        .server()
        .map_err(|e| anyhow!("the standby {standby_name}: {e}; nothing was changed"))?;
    // Clustered primaries that answer, with the members that do not (remote, member).
    let mut dead_members: BTreeSet<(String, String)> = BTreeSet::new();
    if args.emergency {
        // Refused while any primary answers: fencing it loses nothing.
        let mut remotes: Vec<&str> = pairs.pairs.iter().map(|p| p.of.remote.as_str()).collect();
        remotes.sort_unstable();
        remotes.dedup();
        for remote in remotes {
            let client = pairs.connections.client(remote, None)?;
            match client.server() {
                Ok(_) => {
                    // It answers: only instances it no longer has may be promoted so.
                    for pair in pairs.pairs.iter().filter(|p| p.of.remote == remote) {
                        let primary = pairs.primary(pair)?;
                        match instances::get(&primary, &pair.of.instance) {
                            Err(e) if e.is_not_found() => {}
                            // A cluster that answers, but not the member holding the instance.
                            Err(_)
                                if let Some(member) =
                                    on_a_dead_member(&primary, &pair.of.instance) =>
                            {
                                dead_members.insert((remote.to_string(), member));
                            }
                            Err(e) => {
                                return Err(usage(format!(
                                    "--emergency refused: the cluster {remote} answers, but reading {} failed ({e}); if the member holding it is dead, wait until incus cluster list {remote}: shows it OFFLINE (cluster.offline_threshold), then run this again",
                                    pair.of.instance
                                )));
                            }
                            Ok(_) => {
                                return Err(usage(format!(
                                    "--emergency refused: the primary {remote} answers and has {}; promote without --emergency (it fences the primary copy and loses nothing)",
                                    pair.of.instance
                                )));
                            }
                        }
                    }
                }
                Err(incus_core::Error::Unreachable { .. }) => {}
                Err(e) => {
                    return Err(anyhow!(
                        "--emergency refused: the primary {remote} cannot be judged unreachable ({e})"
                    ));
                }
            }
        }
    }
    order_by_priority(&mut pairs, output);
    let options = Options {
        to: standby_name.clone(),
        target_project: args.pairs.target_project.clone(),
        storage: None,
        // The final sync refreshes the replica where it lives.
        placement: Placement::Auto,
        mode: args.mode,
        live: false,
        sync_profiles: false,
        adopt: false,
        replace: false,
        dry_run: args.dry_run,
        allow_fenced: true,
        listings_once: false,
        // The final sync drops the replica snapshots the primary pruned since the last push:
        // a standby that keeps its own history (it has archive points) keeps them all.
        archive: Some(incus_core::replication::ArchiveOptions {
            project: args.pairs.archive_project.clone(),
            rules: incus_core::policy::Rules {
                last: Some(u32::MAX),
                ..incus_core::policy::Rules::default()
            },
            within: None,
            allow_full_copies: true,
            only_if_present: true,
        }),
        lease_holder: incus_core::replication::lease::holder("incus-failover"),
        break_lease: args.emergency || args.break_lease,
    };
    let replicator = if args.emergency {
        None
    } else {
        Some(
            Replicator::connect(&options, &pairs.connections)
                .map_err(|e| anyhow!("the standby {standby_name}: {e}"))?,
        )
    };
    let promotion = Promotion {
        args,
        options: &options,
        pairs: &pairs,
        steps: Steps {
            output,
            dry_run: args.dry_run,
        },
        replicator: replicator.as_ref(),
    };
    let emergencies = std::sync::atomic::AtomicUsize::new(0);
    incus_core::parallel::map(&pairs.pairs, args.jobs, |pair| {
        let result = if args.emergency {
            promotion.emergency(pair)
        } else {
            promotion.planned(pair)
        };
        match result {
            Ok(mut record) => {
                if record.emergency && !record.already {
                    emergencies.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                record.location = promotion.runs_on(pair);
                output.emit(&Record::Promoted(record));
            }
            Err(message) => output.error(
                Some(&pair.of),
                &format!(
                    "promoting {} on {standby_name}: {message}",
                    address(&pair.of)
                ),
            ),
        }
    });
    if emergencies.into_inner() > 0 && !args.dry_run {
        let mut remotes: Vec<&str> = pairs.pairs.iter().map(|p| p.of.remote.as_str()).collect();
        remotes.sort_unstable();
        remotes.dedup();
        for remote in remotes {
            let members: Vec<&str> = dead_members
                .iter()
                .filter(|(r, _)| r == remote)
                .map(|(_, m)| m.as_str())
                .collect();
            if !members.is_empty() {
                let members = members.join(", ");
                output.note(&format!(
                    "FENCE THE OLD PRIMARY BY HAND: member(s) {members} of the cluster {remote} still hold their copies, with their autostart as it was; Incus starts them again when the member comes back (their last state was running). Keep {members} powered off or off the network (not the rest of the cluster); as soon as it is back, run: incus-failover fence {remote}:INSTANCE --standby {standby_name} for each instance promoted"
                ));
                continue;
            }
            output.note(&format!(
                "FENCE THE OLD PRIMARY BY HAND: {remote} still holds its copies, with their autostart as it was; after a crash Incus starts them again when the daemon comes back (their last state was running). Keep {remote} powered off or off the network; as soon as it answers, run: incus-failover fence {remote}: --standby {standby_name}"
            ));
        }
    }
    Ok(())
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

struct Promotion<'a> {
    args: &'a PromoteArgs,
    options: &'a Options,
    pairs: &'a Pairs,
    steps: Steps<'a>,
    replicator: Option<&'a Replicator<'a>>,
}

impl Promotion<'_> {
    fn standby_name(&self) -> &str {
        &self.args.pairs.standby
    }

    /// On a clustered standby, the member the promoted instance runs on: the one holding its
    /// replica (Incus starts an instance where it lives).
    fn runs_on(&self, pair: &Pair) -> Option<String> {
        let standby = self.pairs.replica(pair);
        if self.steps.dry_run || !standby.server().ok()?.environment.server_clustered {
            return None;
        }
        let (instance, _) = instances::get(&standby, &pair.of.instance).ok()?;
        instance.member().map(str::to_string)
    }

    fn record(
        &self,
        pair: &Pair,
        start: Instant,
        snapshot: Option<String>,
        already: bool,
    ) -> PromotedRecord {
        PromotedRecord {
            of: pair.of.clone(),
            standby: self.standby_name().to_string(),
            replica_project: pair.replica_project.clone(),
            replica_instance: pair.of.instance.clone(),
            location: None,
            snapshot,
            emergency: self.args.emergency,
            data_loss_since: None,
            data_loss_seconds: Some(0),
            primary_last_seen: None,
            already,
            seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            dry_run: self.steps.dry_run,
        }
    }

    /// The planned promotion of one instance.
    fn planned(&self, pair: &Pair) -> Result<PromotedRecord, String> {
        let start = Instant::now();
        let name = &pair.of.instance;
        let of = &pair.of;
        let standby = self.pairs.replica(pair);
        let replica = read_replica(&standby, self.standby_name(), name)?;
        let promoted_before = replica.config.contains_key(PROMOTED_KEY);
        if promoted_before && replica.is_running() {
            return Ok(self.record(pair, start, replica.config.get(RESTORED_KEY).cloned(), true));
        }
        let primary = self.pairs.primary(pair).map_err(|e| e.to_string())?;
        let (instance, etag) = instances::get(&primary, name).map_err(|e| match e {
            incus_core::Error::Unreachable { .. } => format!(
                "{e}; if the primary is gone, promote with --emergency (from the newest snapshot the replica holds)"
            ),
            e if e.is_not_found() => format!(
                "the primary has no instance {name} (any more); promote with --emergency to start the replica as it is"
            ),
            e => e.to_string(),
        })?;
        let resuming = instance.config.contains_key(FENCED_KEY);
        let _lease = self.lease(&standby, name)?;
        if !promoted_before && !resuming {
            self.check_ready(pair, &replica)?;
        }
        // --at is resolved before the primary is fenced: a wrong point changes nothing.
        let chosen = match (&self.args.at, promoted_before) {
            (Some(at), false) => Some(self.find_point(pair, &standby, &replica, at)?),
            _ => None,
        };
        if interrupt::requested() {
            return Err("interrupted before anything was changed".into());
        }
        fence_primary(
            &self.steps,
            of,
            &primary,
            &instance,
            etag,
            self.standby_name(),
        )?;
        stop_primary(&self.steps, of, &primary, name, self.args.stop_timeout)?;
        let mut went_back = None;
        let snapshot = if promoted_before {
            replica.config.get(RESTORED_KEY).cloned()
        } else if let Some(point) = &chosen {
            self.apply_point(pair, &standby, &replica, point)?;
            went_back = Some(point.created_at);
            Some(point.snapshot.clone())
        } else {
            let snapshot = self.final_snapshot(pair, &primary, &instance)?;
            self.sync(pair, &primary, &snapshot)?;
            Some(snapshot)
        };
        let (replica, _) = instances::get(&standby, name).map_err(|e| e.to_string())?;
        let (instance, _) = instances::get(&primary, name).map_err(|e| e.to_string())?;
        let autostart = instance.config.get(AUTOSTART_BEFORE_KEY).cloned();
        give_identity(&self.steps, pair, &standby, &replica, autostart, false)?;
        // Never both: the primary copy must still be stopped now.
        let (instance, _) = instances::get(&primary, name).map_err(|e| e.to_string())?;
        if instance.is_running() && !self.steps.dry_run {
            return Err(format!(
                "{} runs again (started by hand?); the replica was not started: stop it and run the promotion again",
                address(of)
            ));
        }
        start_replica(&self.steps, pair, &standby, self.standby_name())?;
        let mut record = self.record(pair, start, snapshot, false);
        if let Some(at) = went_back {
            // Gone back on purpose: what came after that point stays on the primary copy.
            record.data_loss_since = Some(at);
            record.data_loss_seconds = None;
        }
        Ok(record)
    }

    /// `--at`: the point of the replica's history it names (its snapshots and archive
    /// points), found before anything changes.
    fn find_point(
        &self,
        pair: &Pair,
        standby: &Client,
        replica: &Instance,
        at: &str,
    ) -> Result<Point, String> {
        let name = &pair.of.instance;
        let marker = replica.config.get(SOURCE_KEY).cloned().unwrap_or_default();
        let archive_client = standby.in_project(&self.args.pairs.archive_project);
        let mut points: Vec<Point> = snapshots::list(standby, name)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| Point {
                snapshot: s.name,
                created_at: s.created_at,
                archive: None,
            })
            .collect();
        if let Ok(list) = instances::list(&archive_client, false) {
            points.extend(
                list.iter()
                    .filter(|i| !marker.is_empty() && i.config.get(SOURCE_KEY) == Some(&marker))
                    .filter_map(archive_point),
            );
        }
        choose_point(&points, at).ok_or_else(|| {
            format!(
                "no point of {}:{name}'s history matches \"{at}\" (its snapshots and archive points: {}); nothing was changed",
                self.standby_name(),
                points
                    .iter()
                    .map(|p| p.snapshot.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// `--at`: the replica becomes `point`. A replica snapshot: the replica is restored to it
    /// (its markers kept). An archive point: it is cloned under a temporary name, then the
    /// replica is renamed aside (kept) and the clone takes its name.
    fn apply_point(
        &self,
        pair: &Pair,
        standby: &Client,
        replica: &Instance,
        point: &Point,
    ) -> Result<(), String> {
        let name = &pair.of.instance;
        let Some(archive) = &point.archive else {
            self.steps.report(
                &pair.of,
                "restore",
                format!(
                    "restore {}:{name} to {} ({})",
                    self.standby_name(),
                    point.snapshot,
                    rfc3339(point.created_at)
                ),
            );
            if !self.steps.dry_run {
                restore_keeping_markers(standby, name, &point.snapshot, replica)?;
            }
            return Ok(());
        };
        if replica.config.get(ARCHIVE_TIME_KEY).map(String::as_str)
            == Some(rfc3339(point.created_at).as_str())
        {
            return Ok(()); // cloned in place by an earlier run
        }
        let temporary: String = format!("{name}-at-point").chars().take(63).collect();
        let aside = moved_aside_name(name, Utc::now());
        self.steps.report(
            &pair.of,
            "archive",
            format!(
                "clone archive point {archive} ({}) as {}:{name}; the replica is kept as {aside}",
                rfc3339(point.created_at),
                self.standby_name()
            ),
        );
        if self.steps.dry_run {
            return Ok(());
        }
        let archive_client = standby.in_project(&self.args.pairs.archive_project);
        let exists = |n: &str| instances::get(standby, n).is_ok();
        if !exists(&temporary) {
            let (source, _) = instances::get(&archive_client, archive)
                .map_err(|e| format!("reading archive point {archive}: {e}"))?;
            let mut config: BTreeMap<String, String> = source
                .config
                .iter()
                .filter(|(key, _)| key.starts_with("volatile.") && key.ends_with(".hwaddr"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for key in [SOURCE_KEY, SOURCE_SETTINGS_KEY, SOURCE_UUID_KEY, SYNCED_KEY] {
                if let Some(value) = replica.config.get(key) {
                    config.insert(key.to_string(), value.clone());
                }
            }
            for (key, value) in inert_overrides() {
                if let Some(value) = value {
                    config.insert(key, value);
                }
            }
            config.insert(RESTORED_KEY.to_string(), point.snapshot.clone());
            instances::copy_local(
                standby,
                &self.args.pairs.archive_project,
                archive,
                &temporary,
                &config,
                source.member(),
            )
            .map_err(|e| {
                format!("cloning archive point {archive}: {e}; the replica is unchanged")
            })?;
        }
        instances::rename(standby, name, &aside).map_err(|e| {
            format!("moving the replica aside to {aside}: {e}; the clone waits as {temporary}")
        })?;
        let marked = BTreeMap::from([(
            incus_core::replication::REPLACED_KEY.to_string(),
            format!(
                "{} replaced by --at {}",
                rfc3339(Utc::now()),
                point.snapshot
            ),
        )]);
        let _ = instances::patch_config(standby, &aside, &marked, None);
        instances::rename(standby, &temporary, name).map_err(|e| {
            format!("renaming the clone {temporary} to {name}: {e}; the replica is kept as {aside}")
        })
    }

    /// The replica's lease for the whole promotion (none in a dry run).
    fn lease(&self, standby: &Client, name: &str) -> Result<Option<LeaseGuard>, String> {
        if self.steps.dry_run {
            return Ok(None);
        }
        LeaseGuard::take(
            standby,
            name,
            &self.options.lease_holder,
            self.options.break_lease,
        )
        .map(Some)
    }

    /// Refuses a replica that could not take over, before anything changes.
    fn check_ready(&self, pair: &Pair, replica: &Instance) -> Result<(), String> {
        let mut problems = Vec::new();
        if replica.is_running() {
            problems.push("it is running".to_string());
        }
        if !replica.config.contains_key(SOURCE_KEY) {
            problems.push("it was not made by incus-push".to_string());
        } else if !replica.config.contains_key(SYNCED_KEY) {
            problems.push("its first copy never finished".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the replica is not ready ({}); nothing was changed: run incus-push --to {} {} first",
                problems.join("; "),
                self.standby_name(),
                address(&pair.of)
            ))
        }
    }

    /// The final snapshot of the stopped primary: one taken since the fencing is reused (a
    /// resumed run), else a new `failover-DATE`.
    fn final_snapshot(
        &self,
        pair: &Pair,
        primary: &Client,
        instance: &Instance,
    ) -> Result<String, String> {
        let name = &pair.of.instance;
        let fenced_at = instance
            .config
            .get(FENCED_KEY)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let list = snapshots::list(primary, name).map_err(|e| e.to_string())?;
        if let (Some(newest), Some(fenced_at)) = (list.last(), fenced_at)
            && newest.name.starts_with(FINAL_PREFIX)
            && newest.created_at.timestamp() >= fenced_at.timestamp()
        {
            return Ok(newest.name.clone());
        }
        let snapshot = format!("{FINAL_PREFIX}{}", Utc::now().format("%Y%m%d-%H%M%S"));
        self.steps.report(
            &pair.of,
            "final-snapshot",
            format!(
                "snapshot {}/{snapshot} of the stopped primary",
                address(&pair.of)
            ),
        );
        if !self.steps.dry_run {
            snapshots::create(primary, name, &snapshot, false, None)
                .map_err(|e| format!("taking the final snapshot {snapshot}: {e}"))?;
        }
        Ok(snapshot)
    }

    /// Sends the final snapshot with the replication engine (the replica ends restored to it,
    /// inert, marked).
    fn sync(&self, pair: &Pair, primary: &Client, snapshot: &str) -> Result<(), String> {
        let name = &pair.of.instance;
        let Some(replicator) = self.replicator else {
            return Err("no replication engine for a planned promotion".into());
        };
        if self.steps.dry_run {
            self.steps.report(
                &pair.of,
                "sync",
                format!(
                    "send {snapshot} to {}:{name} and restore the replica to it",
                    self.standby_name()
                ),
            );
            return Ok(());
        }
        let (instance, _) = instances::get(primary, name).map_err(|e| e.to_string())?;
        let selected = Selected {
            of: pair.of.clone(),
            client: primary.clone(),
            instance,
        };
        let pushed = replicator
            .replicate(&selected)
            .map_err(|e| format!("the final sync: {e}"))?;
        self.steps.report(
            &pair.of,
            "sync",
            format!(
                "{} ({}) to {}:{name}",
                pushed.status,
                if pushed.snapshots.is_empty() {
                    "nothing new".to_string()
                } else {
                    pushed.snapshots.join(", ")
                },
                self.standby_name()
            ),
        );
        let (replica, _) =
            instances::get(&self.pairs.replica(pair), name).map_err(|e| e.to_string())?;
        if replica.config.get(RESTORED_KEY).map(String::as_str) != Some(snapshot) {
            return Err(format!(
                "after the final sync the replica is not restored to {snapshot}; it was not started"
            ));
        }
        Ok(())
    }

    /// The emergency promotion of one instance: its primary does not answer.
    fn emergency(&self, pair: &Pair) -> Result<PromotedRecord, String> {
        let start = Instant::now();
        let name = &pair.of.instance;
        let standby = self.pairs.replica(pair);
        let replica = read_replica(&standby, self.standby_name(), name)?;
        let promoted_before = replica.config.contains_key(PROMOTED_KEY);
        let list = snapshots::list(&standby, name).map_err(|e| e.to_string())?;
        let newest = list.last().cloned();
        let last_seen = replica
            .config
            .get(SYNCED_KEY)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut record = self.record(
            pair,
            start,
            newest.as_ref().map(|s| s.name.clone()),
            promoted_before && replica.is_running(),
        );
        record.data_loss_since = newest.as_ref().map(|s| s.created_at);
        record.primary_last_seen = last_seen;
        record.data_loss_seconds = match (&newest, last_seen) {
            (Some(newest), Some(seen)) => Some((seen - newest.created_at).num_seconds().max(0)),
            _ => None,
        };
        if record.already {
            return Ok(record);
        }
        let _lease = self.lease(&standby, name)?;
        if !promoted_before {
            if replica.is_running() {
                return Err(
                    "the replica is running already (started by hand?); nothing was changed".into(),
                );
            }
            if !replica.config.contains_key(SOURCE_KEY) || last_seen.is_none() {
                return Err(format!(
                    "{}:{name} is not a finished replica made by incus-push; nothing was changed (start it by hand if it is what you want)",
                    self.standby_name()
                ));
            }
            let Some(newest) = &newest else {
                return Err("the replica holds no snapshot; nothing was changed".into());
            };
            if let Some(at) = &self.args.at {
                let point = self.find_point(pair, &standby, &replica, at)?;
                self.apply_point(pair, &standby, &replica, &point)?;
                record.snapshot = Some(point.snapshot.clone());
                record.data_loss_since = Some(point.created_at);
                record.data_loss_seconds = None;
            } else if replica.config.get(RESTORED_KEY) != Some(&newest.name) {
                self.steps.report(
                    &pair.of,
                    "restore",
                    format!("restore {}:{name} to {}", self.standby_name(), newest.name),
                );
                if !self.steps.dry_run {
                    restore_keeping_markers(&standby, name, &newest.name, &replica)?;
                }
            }
        }
        let (replica, _) = instances::get(&standby, name).map_err(|e| e.to_string())?;
        give_identity(&self.steps, pair, &standby, &replica, None, true)?;
        start_replica(&self.steps, pair, &standby, self.standby_name())?;
        Ok(record)
    }
}

/// Restores the replica to a snapshot and writes back what makes it ours (the restore
/// replaces the whole configuration): a run cut after the restore still finds a finished
/// replica of ours, with the source's own settings.
fn restore_keeping_markers(
    standby: &Client,
    name: &str,
    snapshot: &str,
    replica: &Instance,
) -> Result<(), String> {
    snapshots::restore(standby, name, snapshot)
        .map_err(|e| format!("restoring the replica to {snapshot}: {e}"))?;
    let mut keep: BTreeMap<String, String> = inert_overrides()
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect();
    for key in [SOURCE_KEY, SOURCE_SETTINGS_KEY, SOURCE_UUID_KEY, SYNCED_KEY] {
        if let Some(value) = replica.config.get(key) {
            keep.insert(key.to_string(), value.clone());
        }
    }
    keep.insert(RESTORED_KEY.to_string(), snapshot.to_string());
    instances::patch_config(standby, name, &keep, None)
        .map_err(|e| format!("marking the restored replica: {e}"))
}

fn read_replica(standby: &Client, standby_name: &str, name: &str) -> Result<Instance, String> {
    match instances::get(standby, name) {
        Ok((replica, _)) => Ok(replica),
        Err(e) if e.is_not_found() => Err(format!(
            "there is no replica {standby_name}:{name} (project {}); nothing was changed: replicate it first with incus-push --to {standby_name}",
            standby.project()
        )),
        Err(e) => Err(format!("reading the replica: {e}")),
    }
}

/// Fences the primary copy: `boot.autostart=false`, its old value and the fencing recorded on
/// it, in one write guarded by the ETag. Returns the old value (`None`: unset).
fn fence_primary(
    steps: &Steps,
    of: &InstanceRef,
    primary: &Client,
    instance: &Instance,
    etag: Option<String>,
    standby_name: &str,
) -> Result<Option<String>, String> {
    let before = instance.config.get("boot.autostart").cloned();
    if instance.config.contains_key(FENCED_KEY) {
        return Ok(instance
            .config
            .get(AUTOSTART_BEFORE_KEY)
            .filter(|v| *v != UNSET)
            .cloned());
    }
    steps.report(
        of,
        "fence",
        format!(
            "set boot.autostart=false on {} (was {})",
            address(of),
            before.as_deref().unwrap_or(UNSET)
        ),
    );
    if steps.dry_run {
        return Ok(before);
    }
    let changes = BTreeMap::from([
        ("boot.autostart".to_string(), "false".to_string()),
        (
            FENCED_KEY.to_string(),
            format!("{} for {standby_name}", rfc3339(Utc::now())),
        ),
        (
            AUTOSTART_BEFORE_KEY.to_string(),
            before.clone().unwrap_or_else(|| UNSET.to_string()),
        ),
    ]);
    instances::patch_config(primary, &of.instance, &changes, etag)
        .map_err(|e| format!("fencing {}: {e}; nothing else was changed", address(of)))?;
    fail::fail_point!("failover::after-fence", |arg| Err(
        incus_core::replication::injected_error(arg)
    ));
    Ok(before)
}

/// Stops the primary copy: cleanly within `timeout` seconds, then by force (a clean stop
/// that times out leaves the instance running).
fn stop_primary(
    steps: &Steps,
    of: &InstanceRef,
    primary: &Client,
    name: &str,
    timeout: u64,
) -> Result<bool, String> {
    let (instance, _) = instances::get(primary, name).map_err(|e| e.to_string())?;
    if !instance.is_running() {
        return Ok(false);
    }
    steps.report(
        of,
        "stop",
        format!(
            "stop {} (clean within {timeout} s, then forced)",
            address(of)
        ),
    );
    if steps.dry_run {
        return Ok(true);
    }
    let forced = instances::stop_clean_then_force(primary, name, timeout)
        .map_err(|e| format!("stopping {}: {e}", address(of)))?;
    if let Some(clean) = forced {
        steps.report(
            of,
            "force-stop",
            format!("the clean stop failed ({}); it was forced", clean.message()),
        );
    }
    fail::fail_point!("failover::after-stop", |arg| Err(
        incus_core::replication::injected_error(arg)
    ));
    Ok(true)
}

/// Gives the replica the source's own settings back (autostart, snapshot schedule) in place
/// of the inert ones, and marks it promoted.
fn give_identity(
    steps: &Steps,
    pair: &Pair,
    standby: &Client,
    replica: &Instance,
    autostart_before: Option<String>,
    emergency: bool,
) -> Result<(), String> {
    let name = &pair.of.instance;
    if replica.config.contains_key(PROMOTED_KEY) {
        return Ok(());
    }
    let mut changes = incus_core::replication::own_settings(&replica.config);
    if let Some(before) = autostart_before {
        changes.insert(
            "boot.autostart".into(),
            if before == UNSET {
                String::new()
            } else {
                before
            },
        );
    }
    // The final snapshot was taken after the fencing: its markers are the old primary's.
    changes.insert(FENCED_KEY.into(), String::new());
    changes.insert(AUTOSTART_BEFORE_KEY.into(), String::new());
    changes.insert(
        PROMOTED_KEY.into(),
        format!(
            "{} {} from {}",
            rfc3339(Utc::now()),
            if emergency { "emergency" } else { "planned" },
            replica.config.get(SOURCE_KEY).cloned().unwrap_or_default()
        ),
    );
    let shown: Vec<String> = changes
        .iter()
        .filter(|(key, _)| inert_overrides().contains_key(*key))
        .map(|(key, value)| {
            if value.is_empty() {
                format!("{key} unset")
            } else {
                format!("{key}={value}")
            }
        })
        .collect();
    steps.report(
        &pair.of,
        "identity",
        format!(
            "give {}:{name} the source's settings: {}",
            standby.remote(),
            shown.join(", ")
        ),
    );
    if steps.dry_run {
        return Ok(());
    }
    instances::patch_config(standby, name, &changes, None)
        .map_err(|e| format!("writing the promoted replica's configuration: {e}"))?;
    fail::fail_point!("failover::after-identity", |arg| Err(
        incus_core::replication::injected_error(arg)
    ));
    Ok(())
}

/// True when a clustered primary lists the instance in the `Error` state on a member: the
/// member that holds it does not answer (Incus lists such instances from its database).
/// The member holding the instance, when a clustered primary lists the instance in the
/// `Error` state there and the cluster itself calls that member `Offline` (after its
/// `cluster.offline_threshold`). A member that is merely slow, or cut off for a moment, is
/// not offline: its copy may still run, and the emergency is refused.
fn on_a_dead_member(primary: &Client, name: &str) -> Option<String> {
    let list = instances::list(primary, false).ok()?;
    let member = list
        .iter()
        .find(|i| i.name == name && i.status == "Error")?
        .member()?
        .to_string();
    let status = incus_core::api::cluster::member_status(primary, &member).ok()?;
    (status == "Offline").then_some(member)
}

fn start_replica(
    steps: &Steps,
    pair: &Pair,
    standby: &Client,
    standby_name: &str,
) -> Result<(), String> {
    let name = &pair.of.instance;
    let (replica, _) = instances::get(standby, name).map_err(|e| e.to_string())?;
    if replica.is_running() {
        return Ok(());
    }
    steps.report(&pair.of, "start", format!("start {standby_name}:{name}"));
    if steps.dry_run {
        return Ok(());
    }
    instances::change_state(standby, name, "start", 0, false)
        .map_err(|e| format!("starting {standby_name}:{name}: {e}"))
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

/// `incus-failover fence`.
pub fn fence(args: &FenceArgs, output: &Output) -> Result<()> {
    let pairs = resolve(&args.pairs, output)?;
    let steps = Steps {
        output,
        dry_run: args.dry_run,
    };
    let standby_name = &args.pairs.standby;
    for pair in &pairs.pairs {
        if interrupt::requested() {
            break;
        }
        match fence_one(&pairs, &steps, pair, standby_name, args.stop_timeout) {
            Ok(record) => output.emit(&Record::Fenced(record)),
            Err(message) => output.error(
                Some(&pair.of),
                &format!("fencing {}: {message}", address(&pair.of)),
            ),
        }
    }
    Ok(())
}

fn fence_one(
    pairs: &Pairs,
    steps: &Steps,
    pair: &Pair,
    standby_name: &str,
    stop_timeout: u64,
) -> Result<FencedRecord, String> {
    let name = &pair.of.instance;
    let replica = read_replica(&pairs.replica(pair), standby_name, name)?;
    if !replica.config.contains_key(PROMOTED_KEY) {
        return Err(format!(
            "{standby_name}:{name} was not promoted; fencing would stop the production copy, so nothing was done"
        ));
    }
    let primary = pairs.primary(pair).map_err(|e| e.to_string())?;
    let (instance, etag) = instances::get(&primary, name).map_err(|e| match e {
        incus_core::Error::Unreachable { .. } => {
            format!("{e}; keep it off the network and run fence again once it answers")
        }
        e => e.to_string(),
    })?;
    let autostart_was = fence_primary(steps, &pair.of, &primary, &instance, etag, standby_name)?;
    let stopped = stop_primary(steps, &pair.of, &primary, name, stop_timeout)?;
    Ok(FencedRecord {
        of: pair.of.clone(),
        standby: standby_name.to_string(),
        autostart_was,
        stopped,
        dry_run: steps.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // 2026-11-30T01:00:00Z is between r4 and r5.
        let t = DateTime::from_timestamp(1_796_005_000, 0).unwrap_or_default();
        assert_eq!(
            choose_point(&points, &t.to_rfc3339()).map(|p| p.snapshot),
            Some("r4".into())
        );
        assert_eq!(choose_point(&points, "2000-01-01"), None);
        assert_eq!(choose_point(&points, "nonsense"), None);
    }
}
