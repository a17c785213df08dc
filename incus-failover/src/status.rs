//! `status` and `check`: what each replica holds, what a promotion now would lose, whether it
//! could be promoted, and whether the instance runs on both servers. [`assess`] is a pure
//! function of what the two servers said and the time; the rest reads the servers and
//! prints.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use incus_core::api::instances::{self, Instance};
use incus_core::api::snapshots::{self, Snapshot};
use incus_core::api::volumes;
use incus_core::duration::ExpiryDuration;
use incus_core::failover::readiness::{self, StandbyFacts};
use incus_core::failover::{Pair, PairArgs, Pairs, resolve};
use incus_core::markers::{PrimaryMarkers, ReplicaMarkers};
use incus_core::record::{Format, Output, PrimaryState, Record, StatusRecord, VolumeStatus};

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover status --all --standby standby\n  incus-failover status web --standby standby --prometheus /var/lib/node_exporter/incus-standby.prom"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Also write a node_exporter textfile (written to a temporary file, then renamed)
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover check --all --standby standby --max-rpo 2H --warn-rpo 90M"
)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// CRITICAL when a replica's RPO exceeds this (Incus duration syntax: 30M 2H 1d)
    #[arg(long, value_name = "DURATION")]
    pub max_rpo: String,
    /// WARNING when a replica's RPO exceeds this
    #[arg(long, value_name = "DURATION")]
    pub warn_rpo: Option<String>,
    /// WARNING when a replica's last drill (incus-failover drill) failed, is older than this,
    /// or never happened
    #[arg(long, value_name = "DURATION")]
    pub max_drill_age: Option<String>,
    /// Also write a node_exporter textfile
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<std::path::PathBuf>,
}

/// What the primary said about the instance.
#[derive(Debug, Clone)]
pub enum PrimaryView {
    Up {
        instance: Box<Instance>,
        snapshots: Vec<Snapshot>,
    },
    /// The primary does not answer (the case status exists for).
    Unreachable(String),
    /// The primary answers but has no such instance.
    Missing,
}

/// What the standby said about the replica (`None`: there is none).
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub instance: Instance,
    pub snapshots: Vec<Snapshot>,
    /// Its archive points' times (incus-push --archive-*).
    pub archives: Vec<DateTime<Utc>>,
    /// The custom volumes it attaches: each with its snapshots (`None`: the volume is
    /// missing on the standby).
    pub volumes: Vec<(volumes::VolumeRef, Option<Vec<volumes::VolumeSnapshot>>)>,
}

/// Reads both sides of a pair. Errors other than "unreachable primary" and "no such
/// instance" are returned (they are the pair's error).
pub fn observe(
    all: &Pairs,
    pair: &Pair,
) -> Result<(PrimaryView, Option<ReplicaView>), incus_core::failover::Error> {
    use incus_core::failover::Error;
    let name = &pair.of.instance;
    let primary = match all.primary(pair) {
        Err(e @ incus_core::Error::Unreachable { .. }) => PrimaryView::Unreachable(e.message()),
        Err(e) => return Err(e.into()),
        Ok(client) => match instances::get(&client, name) {
            Ok((instance, _)) => match snapshots::list(&client, name) {
                Ok(snapshots) => PrimaryView::Up {
                    instance: Box::new(instance),
                    snapshots,
                },
                Err(e @ incus_core::Error::Unreachable { .. }) => {
                    PrimaryView::Unreachable(e.message())
                }
                Err(e) => return Err(e.into()),
            },
            Err(e @ incus_core::Error::Unreachable { .. }) => PrimaryView::Unreachable(e.message()),
            Err(e) if e.is_not_found() => PrimaryView::Missing,
            Err(e) => return Err(e.into()),
        },
    };
    let standby = all.replica(pair);
    let replica = match instances::get(&standby, name) {
        Ok((instance, _)) => {
            let mut read = Vec::new();
            for a in volumes::attached(&instance.expanded_devices) {
                let list = match volumes::snapshots(&standby, &a.volume) {
                    Ok(list) => Some(list),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(Error::incus(format!("reading volume {}", a.volume), e)),
                };
                read.push((a.volume, list));
            }
            Some(ReplicaView {
                snapshots: snapshots::list(&standby, name)?,
                archives: Vec::new(),
                instance,
                volumes: read,
            })
        }
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(Error::incus("reading the replica", e)),
    };
    Ok((primary, replica))
}

/// The state of one pair, from what both servers said, at `now`.
pub fn assess(
    pair: &Pair,
    standby: &str,
    primary: &PrimaryView,
    replica: Option<&ReplicaView>,
    standby_facts: &StandbyFacts,
    now: DateTime<Utc>,
) -> StatusRecord {
    let mut record = primary_status(pair, standby, primary);
    record.replica_location = replica
        .and_then(|r| r.instance.member())
        .map(str::to_string);
    let Some(replica) = replica else {
        record.problems = vec!["no replica on the standby".to_string()];
        return record;
    };
    let markers = ReplicaMarkers::from_config(&replica.instance.config);
    let newest = replica.snapshots.last();
    record.replica_newest = newest.map(|s| s.name.clone());
    record.replica_newest_at = newest.map(|s| s.created_at);
    record.replica_snapshots = replica.snapshots.len();
    record.rpo_seconds = newest.map(|s| (now - s.created_at).num_seconds().max(0));
    record.last_sync = markers.synced_at;
    let times: Vec<DateTime<Utc>> = replica
        .snapshots
        .iter()
        .map(|s| s.created_at)
        .chain(replica.archives.iter().copied())
        .collect();
    record.history_points = times.len();
    record.history_oldest = times.iter().min().copied();
    record.history_newest = times.iter().max().copied();
    record.volumes = replica
        .volumes
        .iter()
        .map(|(volume, list)| {
            let newest = list.as_ref().and_then(|l| l.last());
            VolumeStatus {
                pool: volume.pool.clone(),
                volume: volume.name.clone(),
                newest: newest.map(|s| s.name.clone()),
                newest_at: newest.map(|s| s.created_at),
                rpo_seconds: newest.map(|s| (now - s.created_at).num_seconds().max(0)),
                present: list.is_some(),
            }
        })
        .collect();
    if let Some(drill) = incus_core::markers::Drill::of_config(&replica.instance.config) {
        record.drill_at = Some(drill.at);
        record.drill_ok = Some(drill.ok);
    }
    record.replica_running = replica.instance.is_running();
    record.promoted = markers.promoted.is_some();
    record.split_brain = record.replica_running && record.primary_running == Some(true);
    // Promoted, yet running nowhere (a start that failed, a replica stopped by hand).
    record.service_down =
        record.promoted && !record.replica_running && record.primary_running != Some(true);
    record.problems =
        readiness::problems(&replica.instance, &replica.snapshots, Some(standby_facts))
            .iter()
            .map(ToString::to_string)
            .collect();
    if record.service_down {
        record.problems.insert(
            0,
            "service down: promoted, but it runs on neither server".to_string(),
        );
    }
    record.ready = record.problems.is_empty();
    record
}

/// A pair's status record with what the primary said, the replica not yet looked at.
fn primary_status(pair: &Pair, standby: &str, primary: &PrimaryView) -> StatusRecord {
    let (state, running, newest, fenced, location) = match primary {
        PrimaryView::Up {
            instance,
            snapshots,
        } => (
            PrimaryState::Up,
            Some(instance.is_running()),
            snapshots.last(),
            Some(
                PrimaryMarkers::from_config(&instance.config)
                    .fenced
                    .is_some(),
            ),
            instance.member().map(str::to_string),
        ),
        PrimaryView::Unreachable(_) => (PrimaryState::Unreachable, None, None, None, None),
        PrimaryView::Missing => (PrimaryState::Missing, None, None, None, None),
    };
    StatusRecord {
        of: pair.of.clone(),
        location,
        standby: standby.to_string(),
        replica_project: pair.replica_project.clone(),
        replica_instance: pair.of.instance.clone(),
        replica_location: None,
        primary: state,
        primary_error: match primary {
            PrimaryView::Unreachable(why) => Some(why.clone()),
            _ => None,
        },
        primary_running: running,
        primary_newest: newest.map(|s| s.name.clone()),
        primary_newest_at: newest.map(|s| s.created_at),
        replica_newest: None,
        replica_newest_at: None,
        replica_snapshots: 0,
        rpo_seconds: None,
        last_sync: None,
        ready: false,
        problems: Vec::new(),
        replica_running: false,
        promoted: false,
        fenced,
        split_brain: false,
        service_down: false,
        history_points: 0,
        history_oldest: None,
        history_newest: None,
        volumes: Vec::new(),
        drill_at: None,
        drill_ok: None,
    }
}

/// The statuses of every pair, in order; a pair that could not be read is reported and left
/// out.
fn gather(
    pairs: &Pairs,
    standby: &str,
    archive_project: &str,
    output: &Output,
) -> Result<Vec<StatusRecord>, incus_core::failover::Error> {
    // Archive points by source marker (none when the project does not exist).
    let mut archives: std::collections::BTreeMap<
        incus_core::markers::SourceId,
        Vec<DateTime<Utc>>,
    > = std::collections::BTreeMap::new();
    if let Ok(list) = instances::list(&pairs.standby.in_project(archive_project), false) {
        for instance in list {
            if let (Some(marker), Some(point)) = (
                ReplicaMarkers::from_config(&instance.config).source,
                incus_core::replication::archive_point(&instance),
            ) {
                archives.entry(marker).or_default().push(point.created_at);
            }
        }
    }
    // What every replica needs of the standby (networks, pools, profiles, volumes, CPUs,
    // memory), read once.
    let standby_facts = StandbyFacts::read(&pairs.standby, pairs.replica_projects())
        .map_err(|e| incus_core::failover::Error::incus(format!("the standby {standby}"), e))?;
    let now = Utc::now();
    let mut records = Vec::new();
    for pair in &pairs.pairs {
        match observe(pairs, pair) {
            Ok((primary, mut replica)) => records.push(assess(
                pair,
                standby,
                &primary,
                {
                    if let Some(view) = replica.as_mut()
                        && let Some(marker) =
                            ReplicaMarkers::from_config(&view.instance.config).source
                    {
                        view.archives = archives.get(&marker).cloned().unwrap_or_default();
                    }
                    replica.as_ref()
                },
                &standby_facts,
                now,
            )),
            Err(e) => output.error(Some(&pair.of), &e.to_string()),
        }
    }
    Ok(records)
}

/// `incus-failover status`.
pub fn run(args: &StatusArgs, output: &Output) -> Result<()> {
    let records = resolve(&args.pairs, output)
        .and_then(|pairs| {
            gather(
                &pairs,
                &args.pairs.standby,
                &args.pairs.archive_project,
                output,
            )
        })
        .map_err(|e| match e {
            incus_core::failover::Error::Usage(message) => incus_core::cli::usage(message),
            e => e.into(),
        })?;
    if let Some(path) = &args.prometheus {
        write_prometheus(path, &records)?;
    }
    if output.format() == Format::Text {
        print!("{}", table(&records, Utc::now()));
    } else {
        for record in records {
            output.emit(&Record::Status(record));
        }
    }
    Ok(())
}

/// A Nagios state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nagios {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

/// The check's verdict on the statuses: the state and one line per problem.
pub fn verdict(
    records: &[StatusRecord],
    max_rpo_seconds: i64,
    warn_rpo_seconds: Option<i64>,
) -> (Nagios, Vec<String>) {
    let mut state = Nagios::Ok;
    let mut lines = Vec::new();
    let mut raise = |to: Nagios, line: String, lines: &mut Vec<String>| {
        state = state.max(to);
        lines.push(line);
    };
    if records.is_empty() {
        raise(Nagios::Unknown, "no instance to check".into(), &mut lines);
    }
    for r in records {
        let name = format!("{}:{}", r.of.remote, r.of.instance);
        if r.split_brain {
            raise(
                Nagios::Critical,
                format!("{name}: split brain, it runs on both servers"),
                &mut lines,
            );
        }
        if r.service_down {
            raise(
                Nagios::Critical,
                format!(
                    "{name}: service down: promoted on {}, but it runs on neither server",
                    r.standby
                ),
                &mut lines,
            );
            continue;
        }
        if r.promoted {
            raise(
                Nagios::Warning,
                format!("{name}: promoted, it runs on {}", r.standby),
                &mut lines,
            );
            continue;
        }
        if !r.ready {
            raise(
                Nagios::Critical,
                format!("{name}: not ready ({})", r.problems.join("; ")),
                &mut lines,
            );
        }
        match r.rpo_seconds {
            Some(rpo) if rpo > max_rpo_seconds => raise(
                Nagios::Critical,
                format!("{name}: RPO {} > {}", human(rpo), human(max_rpo_seconds)),
                &mut lines,
            ),
            Some(rpo) if warn_rpo_seconds.is_some_and(|w| rpo > w) => raise(
                Nagios::Warning,
                format!("{name}: RPO {}", human(rpo)),
                &mut lines,
            ),
            _ => {}
        }
        if r.primary == PrimaryState::Unreachable {
            raise(
                Nagios::Warning,
                format!("{name}: the primary does not answer"),
                &mut lines,
            );
        }
    }
    (state, lines)
}

/// The replicas whose last drill failed, is older than `max_age_seconds`, or never happened
/// (promoted ones aside): one line each, a WARNING.
pub fn drills_due(
    records: &[StatusRecord],
    max_age_seconds: i64,
    now: DateTime<Utc>,
) -> Vec<String> {
    records
        .iter()
        .filter(|r| !r.promoted)
        .filter_map(|r| {
            let name = format!("{}:{}", r.of.remote, r.of.instance);
            match (r.drill_at, r.drill_ok) {
                (None, _) => Some(format!("{name}: never drilled")),
                (Some(_), Some(false)) => Some(format!("{name}: its last drill failed")),
                (Some(at), _) if (now - at).num_seconds() > max_age_seconds => Some(format!(
                    "{name}: last drill {} ago",
                    human((now - at).num_seconds())
                )),
                _ => None,
            }
        })
        .collect()
}

/// `incus-failover check`: one line for the monitoring system and its exit code.
pub fn check(args: &CheckArgs) -> ExitCode {
    let unknown = |why: String| {
        println!("INCUS-STANDBY UNKNOWN - {why}");
        ExitCode::from(Nagios::Unknown as u8)
    };
    let seconds_of = |text: &str, flag: &str| -> Result<i64> {
        let duration = ExpiryDuration::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        let now = Utc::now();
        duration
            .add_to(now)
            .map(|t| (t - now).num_seconds())
            .ok_or_else(|| anyhow::anyhow!("{flag}: \"{text}\" is too long"))
    };
    let max = match seconds_of(&args.max_rpo, "--max-rpo") {
        Ok(max) => max,
        Err(e) => return unknown(e.to_string()),
    };
    let warn = match args
        .warn_rpo
        .as_deref()
        .map(|w| seconds_of(w, "--warn-rpo"))
    {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return unknown(e.to_string()),
    };
    let output = Output::new("incus-failover", Format::Json, Box::new(std::io::sink()));
    let records = match resolve(&args.pairs, &output).and_then(|pairs| {
        gather(
            &pairs,
            &args.pairs.standby,
            &args.pairs.archive_project,
            &output,
        )
    }) {
        Ok(records) => records,
        Err(e) => return unknown(incus_core::record::one_line(&format!("{e:#}"))),
    };
    if let Some(path) = &args.prometheus
        && let Err(e) = write_prometheus(path, &records)
    {
        return unknown(format!("{e:#}"));
    }
    let max_drill_age = match args
        .max_drill_age
        .as_deref()
        .map(|w| seconds_of(w, "--max-drill-age"))
    {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return unknown(e.to_string()),
    };
    let (mut state, mut lines) = verdict(&records, max, warn);
    if let Some(max_age) = max_drill_age {
        let old = drills_due(&records, max_age, Utc::now());
        if !old.is_empty() {
            state = state.max(Nagios::Warning);
            lines.extend(old);
        }
    }
    if output.error_count() > 0 {
        // An instance that cannot be read is UNKNOWN, but never hides a CRITICAL.
        if state != Nagios::Critical {
            state = Nagios::Unknown;
        }
        lines.push(format!(
            "{} instance(s) could not be read",
            output.error_count()
        ));
    }
    let word = match state {
        Nagios::Ok => "OK",
        Nagios::Warning => "WARNING",
        Nagios::Critical => "CRITICAL",
        Nagios::Unknown => "UNKNOWN",
    };
    let worst = records.iter().filter_map(|r| r.rpo_seconds).max();
    let summary = if lines.is_empty() {
        format!(
            "{} replica(s) ready, worst RPO {}",
            records.len(),
            worst.map_or_else(|| "-".to_string(), human)
        )
    } else {
        lines.join("; ")
    };
    println!(
        "INCUS-STANDBY {word} - {summary} | worst_rpo={}s;{};{}",
        worst.unwrap_or(0),
        warn.map(|w| w.to_string()).unwrap_or_default(),
        max
    );
    ExitCode::from(state as u8)
}

/// Writes the node_exporter textfile: a temporary file in the same directory, then a rename,
/// so that the collector never reads half a file.
pub fn write_prometheus(path: &std::path::Path, records: &[StatusRecord]) -> Result<()> {
    let text = prometheus_text(records);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("--prometheus: cannot write in {}: {e}", dir.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| anyhow::anyhow!("--prometheus: writing {}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644));
    }
    file.persist(path)
        .map_err(|e| anyhow::anyhow!("--prometheus: renaming to {}: {e}", path.display()))?;
    Ok(())
}

/// The textfile's content.
pub fn prometheus_text(records: &[StatusRecord]) -> String {
    let mut text = String::new();
    type Metric = (&'static str, &'static str, fn(&StatusRecord) -> Option<f64>);
    let metrics: [Metric; 5] = [
        (
            "incus_standby_rpo_seconds",
            "Age of the replica's newest snapshot: what a promotion now would lose.",
            |r| r.rpo_seconds.map(|s| s as f64),
        ),
        (
            "incus_standby_ready",
            "1 when the replica could be promoted now.",
            |r| Some(f64::from(u8::from(r.ready))),
        ),
        (
            "incus_standby_last_sync_timestamp_seconds",
            "When the replica's last transfer completed (Unix time).",
            |r| r.last_sync.map(|t| t.timestamp() as f64),
        ),
        (
            "incus_standby_split_brain",
            "1 when the instance runs on both servers.",
            |r| Some(f64::from(u8::from(r.split_brain))),
        ),
        (
            "incus_standby_primary_up",
            "1 when the primary answered.",
            |r| Some(f64::from(u8::from(r.primary != PrimaryState::Unreachable))),
        ),
    ];
    for (name, help, value) in metrics {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        for r in records {
            if let Some(v) = value(r) {
                let _ = writeln!(
                    text,
                    "{name}{{remote=\"{}\",project=\"{}\",instance=\"{}\",standby=\"{}\"}} {v}",
                    label(&r.of.remote),
                    label(&r.of.project),
                    label(&r.of.instance),
                    label(&r.standby)
                );
            }
        }
    }
    text
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `1d4h`, `12m`, `40s`.
pub fn human(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3_600,
        seconds % 3_600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The table shown on a terminal.
pub fn table(records: &[StatusRecord], now: DateTime<Utc>) -> String {
    let when = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_string(),
            |t| format!("{} ago", human((now - t).num_seconds().max(0))),
        )
    };
    let mut rows = vec![[
        "INSTANCE".to_string(),
        "PRIMARY".to_string(),
        "PRIMARY NEWEST".to_string(),
        "REPLICA NEWEST".to_string(),
        "RPO".to_string(),
        "LAST SYNC".to_string(),
        "READY".to_string(),
        "SPLIT BRAIN".to_string(),
    ]];
    for r in records {
        let primary = match (r.primary, r.primary_running, r.fenced) {
            (PrimaryState::Up, Some(running), fenced) => format!(
                "{}{}",
                if running { "running" } else { "stopped" },
                if fenced == Some(true) { ", fenced" } else { "" }
            ),
            (word, _, _) => word.as_str().to_string(),
        };
        rows.push([
            format!("{}:{}", r.of.remote, r.of.instance),
            primary,
            r.primary_newest.clone().unwrap_or_else(|| "-".into()),
            r.replica_newest.clone().unwrap_or_else(|| "-".into()),
            r.rpo_seconds.map_or_else(|| "-".into(), human),
            when(r.last_sync),
            if r.ready {
                "yes".into()
            } else if r.service_down {
                "SERVICE DOWN: promoted, runs nowhere".into()
            } else if r.promoted {
                "promoted".into()
            } else {
                format!("no: {}", r.problems.join("; "))
            },
            if r.split_brain { "YES" } else { "no" }.into(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(text, "{}", line.trim_end());
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use incus_core::markers::{ReplicaMarkers, SourceId, inert_overrides, key};
    use incus_core::record::InstanceRef;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn snap(name: &str, secs: i64) -> Snapshot {
        Snapshot::listed(name.into(), at(secs))
    }

    fn pair() -> Pair {
        Pair {
            of: InstanceRef {
                remote: "primary".into(),
                project: "default".into(),
                instance: "web".into(),
            },
            replica_project: "default".into(),
            named: true,
        }
    }

    fn ready_replica() -> ReplicaView {
        let mut config: BTreeMap<String, String> = BTreeMap::new();
        ReplicaMarkers {
            source: Some(SourceId::from_marker("fp/default/web")),
            synced_at: Some(at(1_796_032_800)),
            restored: Some("s2".into()),
            ..ReplicaMarkers::default()
        }
        .to_patch()
        .apply_to(&mut config);
        for (key, value) in inert_overrides() {
            if let Some(value) = value {
                config.insert(key, value);
            }
        }
        ReplicaView {
            instance: Instance {
                name: "web".into(),
                status: "Stopped".into(),
                config,
                ..Instance::default()
            },
            snapshots: vec![snap("s1", 1000), snap("s2", 2000)],
            archives: vec![at(500)],
            volumes: Vec::new(),
        }
    }

    fn up(running: bool, snaps: Vec<Snapshot>) -> PrimaryView {
        PrimaryView::Up {
            instance: Box::new(Instance {
                name: "web".into(),
                status: if running { "Running" } else { "Stopped" }.into(),
                ..Instance::default()
            }),
            snapshots: snaps,
        }
    }

    #[test]
    fn a_current_inert_replica_is_ready_and_its_rpo_is_the_age_of_its_newest_snapshot() {
        let replica = ready_replica();
        let r = assess(
            &pair(),
            "standby",
            &up(true, vec![snap("s2", 2000)]),
            Some(&replica),
            &StandbyFacts::default(),
            at(2600),
        );
        assert!(r.ready, "{:?}", r.problems);
        assert_eq!(r.rpo_seconds, Some(600));
        assert_eq!(r.replica_newest.as_deref(), Some("s2"));
        assert!(!r.split_brain);
        assert_eq!(r.fenced, Some(false));
        assert_eq!(r.last_sync.map(|t| t.timestamp()), Some(1_796_032_800));
        assert_eq!(r.history_points, 3);
        assert_eq!(r.history_oldest, Some(at(500)));
        assert_eq!(r.history_newest, Some(at(2000)));
    }

    #[test]
    fn an_unreachable_primary_is_a_state_not_an_error() {
        let replica = ready_replica();
        let r = assess(
            &pair(),
            "standby",
            &PrimaryView::Unreachable("refused".into()),
            Some(&replica),
            &StandbyFacts::default(),
            at(2600),
        );
        assert_eq!(r.primary, PrimaryState::Unreachable);
        assert!(r.ready);
        assert_eq!(r.fenced, None);
    }

    #[test]
    fn problems_make_it_not_ready() {
        let mut replica = ready_replica();
        replica
            .instance
            .config
            .insert("boot.autostart".into(), "true".into());
        replica.instance.config.remove(key::SYNCED_AT);
        replica
            .instance
            .config
            .insert(key::RESTORED.into(), "s1".into());
        replica.instance.expanded_devices.insert(
            "eth0".into(),
            BTreeMap::from([
                ("type".to_string(), "nic".to_string()),
                ("network".to_string(), "lan".to_string()),
            ]),
        );
        let r = assess(
            &pair(),
            "standby",
            &PrimaryView::Missing,
            Some(&replica),
            &StandbyFacts::default(),
            at(1),
        );
        assert!(!r.ready);
        let all = r.problems.join("\n");
        assert!(all.contains("boot.autostart"), "{all}");
        assert!(all.contains("never finished"), "{all}");
        assert!(all.contains("not to its newest"), "{all}");
        assert!(all.contains("lan does not exist"), "{all}");
        let none = assess(
            &pair(),
            "standby",
            &PrimaryView::Missing,
            None,
            &StandbyFacts::default(),
            at(1),
        );
        assert!(!none.ready);
        assert_eq!(none.rpo_seconds, None);
    }

    #[test]
    fn a_promoted_replica_that_runs_nowhere_is_a_service_down_and_critical() {
        let mut replica = ready_replica();
        replica
            .instance
            .config
            .insert(key::PROMOTED.into(), "x".into());
        let r = assess(
            &pair(),
            "standby",
            &up(false, vec![]),
            Some(&replica),
            &StandbyFacts::default(),
            at(3000),
        );
        assert!(r.service_down && r.promoted && !r.ready);
        assert!(r.problems[0].contains("service down"), "{:?}", r.problems);
        let (state, lines) = verdict(&[r], 3600, None);
        assert_eq!(state, Nagios::Critical);
        assert!(lines[0].contains("service down"), "{lines:?}");
        // Running on the standby: promoted, not down.
        replica.instance.status = "Running".into();
        let r = assess(
            &pair(),
            "standby",
            &up(false, vec![]),
            Some(&replica),
            &StandbyFacts::default(),
            at(3000),
        );
        assert!(!r.service_down);
    }

    #[test]
    fn running_on_both_sides_is_split_brain_and_critical() {
        let mut replica = ready_replica();
        replica.instance.status = "Running".into();
        replica
            .instance
            .config
            .insert(key::PROMOTED.into(), "x".into());
        let r = assess(
            &pair(),
            "standby",
            &up(true, vec![]),
            Some(&replica),
            &StandbyFacts::default(),
            at(3000),
        );
        assert!(r.split_brain && r.promoted);
        let (state, lines) = verdict(&[r], 3600, None);
        assert_eq!(state, Nagios::Critical);
        assert!(lines[0].contains("split brain"), "{lines:?}");
    }

    #[test]
    fn the_check_grades_rpo_against_its_thresholds() {
        let replica = ready_replica();
        let r = |now| {
            assess(
                &pair(),
                "standby",
                &up(true, vec![]),
                Some(&replica),
                &StandbyFacts::default(),
                at(now),
            )
        };
        assert_eq!(verdict(&[r(2100)], 3600, Some(600)).0, Nagios::Ok);
        assert_eq!(verdict(&[r(3000)], 3600, Some(600)).0, Nagios::Warning);
        assert_eq!(verdict(&[r(9000)], 3600, Some(600)).0, Nagios::Critical);
        assert_eq!(verdict(&[], 3600, None).0, Nagios::Unknown);
    }

    #[test]
    fn the_textfile_has_one_gauge_per_metric_and_escaped_labels() {
        let replica = ready_replica();
        let mut r = assess(
            &pair(),
            "standby",
            &up(false, vec![]),
            Some(&replica),
            &StandbyFacts::default(),
            at(2600),
        );
        r.of.instance = "we\"b".into();
        let text = prometheus_text(&[r]);
        assert!(
            text.contains("# TYPE incus_standby_rpo_seconds gauge"),
            "{text}"
        );
        assert!(text.contains("incus_standby_rpo_seconds{remote=\"primary\",project=\"default\",instance=\"we\\\"b\",standby=\"standby\"} 600"), "{text}");
        assert!(
            text.contains("incus_standby_ready{") && text.contains("} 1\n"),
            "{text}"
        );
        assert!(text.contains("incus_standby_split_brain{"), "{text}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(40), "40s");
        assert_eq!(human(600), "10m");
        assert_eq!(human(3_720), "1h02m");
        assert_eq!(human(90_000), "1d1h");
    }

    #[test]
    fn drills_that_failed_are_old_or_never_happened_are_due() {
        let mut fresh = assess(
            &pair(),
            "standby",
            &up(true, vec![snap("s1", 1000), snap("s2", 2000)]),
            Some(&ready_replica()),
            &StandbyFacts::default(),
            at(2100),
        );
        assert_eq!(
            drills_due(std::slice::from_ref(&fresh), 3600, at(2100)).len(),
            1
        );
        fresh.drill_at = Some(at(2000));
        fresh.drill_ok = Some(true);
        assert!(drills_due(std::slice::from_ref(&fresh), 3600, at(2100)).is_empty());
        assert_eq!(
            drills_due(std::slice::from_ref(&fresh), 3600, at(9000)),
            ["primary:web: last drill 1h56m ago"]
        );
        fresh.drill_ok = Some(false);
        assert_eq!(
            drills_due(&[fresh], 3600, at(2100)),
            ["primary:web: its last drill failed"]
        );
    }
}
