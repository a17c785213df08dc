//! Pruning one instance: list its snapshots, apply the policy to the candidates (the names
//! matching `--match`), keep the replication anchor, delete the rest oldest first.
//!
//! The anchor is the newest snapshot the instance shares with a replica (same name, same
//! creation time to the second): the one an incremental refresh starts from. When a replica
//! cannot be reached or does not exist, or incus-push failed upstream for the instance,
//! nothing is deleted: which snapshots the replica lacks is unknown. When the stream on stdin
//! says a tool before failed as a whole, or it stopped without its `end` record, nothing is
//! deleted at all. Snapshots dated in the future (a wrong clock) are never deleted and do not
//! move the `--keep-within` cutoff, as in restic.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use incus_core::api::projects::PooledSnapshots;
use incus_core::api::snapshots::{self, Snapshot};
use incus_core::api::volumes;
use incus_core::cli::usage;
use incus_core::client::Client;
use incus_core::duration::ExpiryDuration;
use incus_core::interrupt;
use incus_core::record::{
    InputRecord, InstanceRef, KeptRecord, Outcome, Output, PrunedRecord, Record,
};
use incus_core::remote::Remotes;
use incus_core::select::{Connections, Selected, gather};
use incus_prune::policy::{Candidate, Decision, Rules, decide, newest_not_after};

use crate::Args;

/// The whole run: usage checks first, then one instance per job.
pub fn run(args: &Args, output: &Output) -> Result<()> {
    let settings = Settings::from_args(args)?;
    let selection = gather(&args.targets, output)?;
    let stream = output.upstream();
    if stream.outcome() == Outcome::Failed {
        let why = stream
            .problem()
            .unwrap_or_else(|| "a tool upstream failed".to_string());
        return Err(anyhow!(
            "{why}; nothing deleted, since the replicas may lack snapshots (fix that stage, then run the pipeline again)"
        ));
    }
    if selection.instances.is_empty() {
        return Ok(());
    }
    let upstream = Upstream::from_input(&selection.input);
    let context = Context {
        args,
        settings: &settings,
        upstream: &upstream,
        connections: &selection.connections,
        output,
        pooled: Default::default(),
    };
    incus_core::parallel::map(&selection.instances, args.jobs, |selected| {
        context.prune(selected);
    });
    Ok(())
}

/// The checked command line.
struct Settings {
    /// The count rules; the `--keep-within` cutoff is computed per instance.
    rules: Rules,
    within: Option<ExpiryDuration>,
    pattern: glob::Pattern,
}

impl Settings {
    /// Every usage error, before anything is read or deleted.
    fn from_args(args: &Args) -> Result<Self> {
        if args.jobs == 0 {
            return Err(usage("--jobs must be at least 1"));
        }
        let within = match &args.keep_within {
            None => None,
            Some(text) => {
                let duration = ExpiryDuration::parse(text)
                    .map_err(|e| usage(format!("--keep-within: {e}")))?;
                if duration.is_zero() {
                    return Err(usage(format!(
                        "--keep-within \"{text}\" is zero and would keep nothing; give a duration such as 1d or 2w"
                    )));
                }
                Some(duration)
            }
        };
        let rules = Rules {
            last: args.keep_last,
            hourly: args.keep_hourly,
            daily: args.keep_daily,
            weekly: args.keep_weekly,
            monthly: args.keep_monthly,
            yearly: args.keep_yearly,
            within_cutoff: None,
        };
        let with_within = Rules {
            within_cutoff: within.map(|_| DateTime::<Utc>::MIN_UTC),
            ..rules.clone()
        };
        if with_within.is_empty() {
            return Err(usage(
                "no keep rule: give at least one --keep-* option; incus-prune never deletes everything by omission",
            ));
        }
        let pattern = glob::Pattern::new(&args.matching)
            .map_err(|e| usage(format!("--match \"{}\": {e}", args.matching)))?;
        if let Some(replica) = &args.replica {
            let remotes = Remotes::load().map_err(|e| usage(e.to_string()))?;
            remotes
                .get(replica)
                .map_err(|e| usage(format!("--replica: {e}")))?;
        }
        Ok(Settings {
            rules,
            within,
            pattern,
        })
    }
}

/// A replica of an instance: where it lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Replica {
    remote: String,
    project: String,
    instance: String,
}

/// What the records on stdin say about the instances: their replicas (from `push` records)
/// and the failed pushes (`error` records of incus-push).
#[derive(Debug, Default)]
struct Upstream {
    pushes: Vec<(Source, Replica)>,
    failed: Vec<Source>,
}

/// The instance a record names; `project: None` matches any project.
#[derive(Debug, Clone)]
struct Source {
    remote: String,
    project: Option<String>,
    instance: String,
}

impl Source {
    fn of(record: &InputRecord) -> Option<Self> {
        Some(Source {
            remote: record.str("remote")?.to_string(),
            project: record.str("project").map(str::to_string),
            instance: record.str("instance")?.to_string(),
        })
    }

    fn names(&self, of: &InstanceRef) -> bool {
        self.remote == of.remote
            && self.instance == of.instance
            && self.project.as_ref().is_none_or(|p| *p == of.project)
    }
}

impl Upstream {
    fn from_input(input: &[InputRecord]) -> Self {
        let mut upstream = Upstream::default();
        for record in input {
            match record.kind() {
                "push" => {
                    let Some(source) = Source::of(record) else {
                        continue;
                    };
                    let Some(remote) = record.str("target_remote") else {
                        continue;
                    };
                    let project = record
                        .str("target_project")
                        .or(source.project.as_deref())
                        .unwrap_or("default");
                    let instance = record.str("target_instance").unwrap_or(&source.instance);
                    let replica = Replica {
                        remote: remote.to_string(),
                        project: project.to_string(),
                        instance: instance.to_string(),
                    };
                    upstream.pushes.push((source, replica));
                }
                "error" if record.str("tool") == Some("incus-push") => {
                    if let Some(source) = Source::of(record) {
                        upstream.failed.push(source);
                    }
                }
                _ => {}
            }
        }
        upstream
    }

    fn failed(&self, of: &InstanceRef) -> bool {
        self.failed.iter().any(|s| s.names(of))
    }
}

struct Context<'a> {
    args: &'a Args,
    settings: &'a Settings,
    upstream: &'a Upstream,
    connections: &'a Connections,
    output: &'a Output,
    /// Snapshot lists read once per remote and project from the storage pools: a run where
    /// nothing is to be deleted costs a constant number of requests.
    pooled: PooledSnapshots,
}

/// Where [`Context::decide`] reads snapshot lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lists {
    /// The run's storage pool listings (a constant number of requests per run).
    Pooled,
    /// Each instance's own list, the authoritative one: every action is decided from it.
    Own,
}

/// What [`Context::decide`] found.
#[derive(Debug, PartialEq, Eq)]
enum Decided {
    /// Nothing to delete, nothing to report.
    NothingToDo,
    /// Decide again from the instances' own lists.
    LookCloser,
    /// Decided and done from the instances' own lists.
    Done,
}

/// How a replica's snapshots compare with the instance's.
enum ReplicaState {
    /// The replica does not exist: nothing of the instance is replicated there.
    Missing,
    /// Its snapshots.
    Listed(Vec<Snapshot>),
}

impl Context<'_> {
    /// Prunes one instance. Without `--explain`, the run's pool listings decide first: an
    /// instance they show with nothing to delete costs no request of its own. Anything else
    /// (a deletion, a note, an error, a list the listings lack) is decided again from the
    /// instance's and its replicas' own lists, and only that decision is acted on.
    fn prune(&self, selected: &Selected) {
        if !self.args.explain && self.decide(selected, Lists::Pooled) == Decided::NothingToDo {
            return;
        }
        self.decide(selected, Lists::Own);
    }

    /// Decides, and with [`Lists::Own`] acts. With [`Lists::Pooled`] it writes nothing and
    /// changes nothing: it says [`Decided::NothingToDo`] or [`Decided::LookCloser`].
    fn decide(&self, selected: &Selected, lists: Lists) -> Decided {
        let quick = lists == Lists::Pooled;
        let of = &selected.of;
        let output = self.output;
        let all = match self.snapshots(&selected.client, &of.instance, lists) {
            Some(Ok(list)) => list,
            Some(Err(e)) if !quick => {
                output.error(
                    Some(of),
                    &format!("listing the snapshots of {}: {e}", address(of)),
                );
                return Decided::Done;
            }
            _ => return Decided::LookCloser,
        };
        let now = Utc::now();
        let (future, candidates): (Vec<Candidate>, Vec<Candidate>) = all
            .iter()
            .filter(|s| self.settings.pattern.matches(&s.name))
            .map(|s| Candidate {
                name: s.name.clone(),
                created_at: s.created_at,
            })
            .partition(|c| c.created_at > now);
        // Dated in the future (a wrong clock when it was taken): never deleted, and not the
        // newest snapshot for --keep-within (restic's rule).
        for candidate in &future {
            self.kept(of, candidate, vec!["future-dated".to_string()]);
        }
        if candidates.is_empty() {
            return Decided::NothingToDo;
        }

        if self.upstream.failed(of) {
            if quick {
                return Decided::LookCloser;
            }
            output.note(&format!(
                "{of}: incus-push failed for it upstream; nothing deleted, so that no snapshot the replica lacks is lost (fix the push, then prune again)"
            ));
            for candidate in &candidates {
                self.kept(
                    of,
                    candidate,
                    vec!["incus-push failed upstream".to_string()],
                );
            }
            return Decided::Done;
        }

        let anchors = match self.anchors(of, &all, &candidates, lists) {
            Ok(anchors) => anchors,
            Err(decided) => return decided,
        };
        let mut rules = self.settings.rules.clone();
        if let Some(within) = &self.settings.within {
            let newest = newest_not_after(&candidates, now).unwrap_or(DateTime::<Utc>::MIN_UTC);
            rules.within_cutoff = Some(
                within
                    .subtract_from(newest)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            );
        }
        let mut decisions = decide(&candidates, &rules);
        decisions.reverse(); // oldest first
        if quick {
            let deletes = decisions
                .iter()
                .any(|d| d.reasons.is_empty() && !anchors.contains_key(&d.name));
            return if deletes {
                Decided::LookCloser
            } else {
                Decided::NothingToDo
            };
        }
        self.carry_out(selected, decisions, &anchors)
    }

    /// The replication anchors (snapshot name -> reasons): the newest snapshot each replica
    /// shares with the instance. `Err`: nothing may be deleted (decided, or look closer).
    fn anchors(
        &self,
        of: &InstanceRef,
        all: &[Snapshot],
        candidates: &[Candidate],
        lists: Lists,
    ) -> Result<BTreeMap<String, Vec<String>>, Decided> {
        let quick = lists == Lists::Pooled;
        let output = self.output;
        let mut anchors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for replica in self.replicas(of) {
            let state = match self.replica_snapshots(&replica, lists) {
                Some(state) => state,
                None => return Err(Decided::LookCloser),
            };
            match state {
                Ok(ReplicaState::Missing) | Err(_) if quick => return Err(Decided::LookCloser),
                Ok(ReplicaState::Missing) => {
                    output.note(&format!(
                        "{of}: no replica {} (wrong --replica-project, or not pushed yet?); nothing deleted, since nothing of it is replicated there",
                        replica_address(&replica)
                    ));
                    for candidate in candidates {
                        self.kept(
                            of,
                            candidate,
                            vec![format!("no-replica {}", replica.remote)],
                        );
                    }
                    return Err(Decided::Done);
                }
                Ok(ReplicaState::Listed(theirs)) => {
                    if let Some(anchor) = anchor(all, &theirs) {
                        anchors
                            .entry(anchor.name.clone())
                            .or_default()
                            .push(format!("replication-anchor {}", replica.remote));
                    }
                }
                Err(e) => {
                    output.error(
                        Some(of),
                        &format!(
                            "cannot reach the replica {}: {e}; nothing deleted, so that no snapshot the replica lacks is lost (prune again once {} answers)",
                            replica_address(&replica),
                            replica.remote
                        ),
                    );
                    return Err(Decided::Done);
                }
            }
        }

        Ok(anchors)
    }

    /// Deletes what the policy and the anchors leave, reports what is kept.
    fn carry_out(
        &self,
        selected: &Selected,
        decisions: Vec<Decision>,
        anchors: &BTreeMap<String, Vec<String>>,
    ) -> Decided {
        let of = &selected.of;
        for decision in decisions {
            if interrupt::requested() {
                return Decided::Done;
            }
            let mut reasons: Vec<String> = decision.reasons.iter().map(|r| r.to_string()).collect();
            if let Some(anchor) = anchors.get(&decision.name) {
                reasons.extend(anchor.iter().cloned());
            }
            let candidate = Candidate {
                name: decision.name,
                created_at: decision.created_at,
            };
            if reasons.is_empty() {
                self.delete(selected, &candidate);
            } else {
                self.kept(of, &candidate, reasons);
            }
        }
        Decided::Done
    }

    /// The replicas of an instance: `--replica`, then those of the `push` records.
    fn replicas(&self, of: &InstanceRef) -> Vec<Replica> {
        let mut replicas = Vec::new();
        if let Some(remote) = &self.args.replica {
            replicas.push(Replica {
                remote: remote.clone(),
                project: self
                    .args
                    .replica_project
                    .clone()
                    .unwrap_or_else(|| of.project.clone()),
                instance: of.instance.clone(),
            });
        }
        for (source, replica) in &self.upstream.pushes {
            if source.names(of) {
                replicas.push(replica.clone());
            }
        }
        replicas.sort();
        replicas.dedup();
        // An instance is not its own replica (`incus-prune standby:web --replica standby`).
        replicas.retain(|r| {
            !(r.remote == of.remote && r.project == of.project && r.instance == of.instance)
        });
        replicas
    }

    /// A replica's snapshots from `lists` (`None`: the pool listings do not know it).
    fn replica_snapshots(
        &self,
        replica: &Replica,
        lists: Lists,
    ) -> Option<incus_core::Result<ReplicaState>> {
        let client = match self
            .connections
            .client(&replica.remote, Some(&replica.project))
        {
            Ok(client) => client,
            Err(e) => return Some(Err(e)),
        };
        Some(match self.snapshots(&client, &replica.instance, lists)? {
            Ok(list) => Ok(ReplicaState::Listed(list)),
            Err(e) if e.is_not_found() => Ok(ReplicaState::Missing),
            Err(e) => Err(e),
        })
    }

    /// An instance's snapshots, oldest first, from `lists` (`None`: the pool listings do not
    /// know it).
    fn snapshots(
        &self,
        client: &Client,
        instance: &str,
        lists: Lists,
    ) -> Option<incus_core::Result<Vec<Snapshot>>> {
        match lists {
            Lists::Pooled => self.pooled.of(client, instance).map(|listed| {
                Ok(listed
                    .into_iter()
                    .map(|(name, created_at)| Snapshot::listed(name, created_at))
                    .collect())
            }),
            Lists::Own => Some(snapshots::list(client, instance)),
        }
    }

    fn kept(&self, of: &InstanceRef, candidate: &Candidate, reasons: Vec<String>) {
        if !self.args.explain {
            return;
        }
        self.output.emit(&Record::Kept(KeptRecord {
            of: of.clone(),
            name: candidate.name.clone(),
            created_at: candidate.created_at,
            reasons,
            dry_run: self.args.dry_run,
        }));
    }

    fn delete(&self, selected: &Selected, candidate: &Candidate) {
        let of = &selected.of;
        let attached = volumes::attached(&selected.instance.expanded_devices);
        let record = |volumes: Vec<String>| {
            Record::Pruned(PrunedRecord {
                of: of.clone(),
                name: candidate.name.clone(),
                created_at: candidate.created_at,
                volumes,
                dry_run: self.args.dry_run,
            })
        };
        if self.args.dry_run {
            let named = attached.iter().map(|a| a.volume.to_string()).collect();
            self.output.emit(&record(named));
            return;
        }
        // The volumes' snapshots first: a run cut after them leaves the instance's snapshot,
        // which the next run deletes with the same decision (the other way round, a volume's
        // snapshot would be left that no decision ever sees again).
        let deleted = match self.delete_volume_snapshots(selected, &attached, &candidate.name) {
            Ok(deleted) => deleted,
            Err(message) => {
                self.output.error(Some(of), &message);
                return;
            }
        };
        let record = || record(deleted.clone());
        match snapshots::delete(&selected.client, &of.instance, &candidate.name) {
            Ok(()) => self.output.emit(&record()),
            // Gone meanwhile (expired, or deleted by hand): nothing to do.
            Err(e) if e.is_not_found() => {
                self.output
                    .note(&format!("{}/{}: already gone", address(of), candidate.name))
            }
            Err(incus_core::Error::Cancelled) => {}
            Err(e) => self.output.error(
                Some(of),
                &format!(
                    "deleting snapshot {}/{}: {e}; it stays, the next run will try again",
                    address(of),
                    candidate.name
                ),
            ),
        }
    }
}

impl Context<'_> {
    /// Deletes each attached volume's snapshot `name`, unless another instance that attaches
    /// the same volume still has a snapshot of that name (its moment needs it). Returns the
    /// volumes whose snapshot was deleted, or the error line.
    fn delete_volume_snapshots(
        &self,
        selected: &Selected,
        attached: &[volumes::Attached],
        name: &str,
    ) -> Result<Vec<String>, String> {
        let client = &selected.client;
        let of = &selected.of;
        let mut deleted = Vec::new();
        for a in attached {
            let volume = &a.volume;
            let still_needed = volumes::used_by_instances(client, volume)
                .map_err(|e| format!("reading volume {volume}: {e}; nothing was deleted"))?
                .into_iter()
                .filter(|other| *other != of.instance)
                .any(|other| snapshots::get(client, &other, name).is_ok());
            if still_needed {
                continue;
            }
            match volumes::delete_snapshot(client, volume, name) {
                Ok(()) => deleted.push(volume.to_string()),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(format!(
                        "deleting snapshot {name} of volume {volume}: {e}; it and the instance's snapshot stay, the next run will try again"
                    ));
                }
            }
        }
        Ok(deleted)
    }
}

/// The newest snapshot of `ours` that `theirs` has too: same name, same creation time to
/// the second (what Incus's refresh compares). `ours` is sorted oldest first.
fn anchor<'a>(ours: &'a [Snapshot], theirs: &[Snapshot]) -> Option<&'a Snapshot> {
    ours.iter().rev().find(|mine| {
        theirs.iter().any(|other| {
            other.name == mine.name && other.created_at.timestamp() == mine.created_at.timestamp()
        })
    })
}

fn address(of: &InstanceRef) -> String {
    format!("{}:{}", of.remote, of.instance)
}

fn replica_address(replica: &Replica) -> String {
    if replica.project == "default" {
        format!("{}:{}", replica.remote, replica.instance)
    } else {
        format!(
            "{}:{} (project {})",
            replica.remote, replica.instance, replica.project
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, secs: i64, nanos: u32) -> Snapshot {
        Snapshot {
            name: name.to_string(),
            created_at: DateTime::from_timestamp(secs, nanos).unwrap_or_default(),
            expires_at: None,
            stateful: false,
            config: Default::default(),
            devices: Default::default(),
            profiles: Vec::new(),
        }
    }

    #[test]
    fn the_anchor_is_the_newest_shared_snapshot_compared_to_the_second() {
        let ours = [
            snap("a", 100, 0),
            snap("b", 200, 5),
            snap("c", 300, 0),
            snap("d", 400, 0),
        ];
        let theirs = [snap("a", 100, 0), snap("b", 200, 999), snap("c", 301, 0)];
        assert_eq!(anchor(&ours, &theirs).map(|s| s.name.as_str()), Some("b"));
        assert!(anchor(&ours, &[]).is_none());
        assert!(anchor(&ours, &[snap("d", 401, 0)]).is_none());
    }

    fn input(lines: &str) -> Vec<InputRecord> {
        let output = Output::new(
            "incus-prune",
            incus_core::record::Format::Json,
            Box::new(std::io::sink()),
        );
        incus_core::record::read_from(lines.as_bytes(), &output).unwrap_or_default()
    }

    #[test]
    fn push_records_name_replicas_and_push_errors_mark_failures() {
        let upstream = Upstream::from_input(&input(concat!(
            "{\"type\":\"push\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"web\",\"target_remote\":\"standby\",\"target_project\":\"p\",\"target_instance\":\"web\",\"status\":\"copied\"}\n",
            "{\"type\":\"error\",\"tool\":\"incus-push\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"db\",\"message\":\"x\"}\n",
            "{\"type\":\"error\",\"tool\":\"incus-snap\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"mail\",\"message\":\"x\"}\n",
        )));
        let of = |name: &str| InstanceRef {
            remote: "local".into(),
            project: "default".into(),
            instance: name.into(),
        };
        assert_eq!(upstream.pushes.len(), 1);
        assert!(upstream.pushes[0].0.names(&of("web")));
        assert_eq!(upstream.pushes[0].1.project, "p");
        assert!(upstream.failed(&of("db")));
        assert!(!upstream.failed(&of("mail")));
        assert!(!upstream.failed(&of("web")));
        let mut elsewhere = of("db");
        elsewhere.project = "other".into();
        assert!(!upstream.failed(&elsewhere));
    }
}
