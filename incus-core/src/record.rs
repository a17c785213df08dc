//! The record stream: one flat JSON object per line with a `type` field. `docs/records.md` is
//! the contract; this module is its implementation.
//!
//! Every tool forwards each input line unchanged and in order, then adds its own records. A
//! malformed input line is replaced by an `error` record naming its line number. Output is
//! flushed after every line so that pipelines stream. Every tool ends its output with one
//! `end` record, which folds in the `end` record it read: the next tool can see whether
//! everything before it finished ([`Upstream`]). A closed stdout stops the tool as an
//! interruption does: no new work, and a non-zero exit.
//!
//! Every record type reads back too (`Deserialize`): a reader ignores fields it does not
//! know, and a field the writer leaves out when empty reads as empty. Times are written to
//! the second.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// Which instance a record is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub remote: String,
    pub project: String,
    pub instance: String,
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.project == "default" {
            write!(f, "{}:{}", self.remote, self.instance)
        } else {
            write!(
                f,
                "{}:{} (project {})",
                self.remote, self.instance, self.project
            )
        }
    }
}

fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn optional_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// `snapshot`: a snapshot was taken (incus-snap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    /// The cluster member holding the instance (absent on a single server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
    pub stateful: bool,
    /// The custom volumes snapshotted with it, under the same name (`POOL/VOLUME`; absent:
    /// none attached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Milliseconds the instance was frozen for a crash-consistent group (`--freeze`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<u64>,
}

/// `schedule`: an instance's snapshot schedule after incus-snap schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub schedule: Option<String>,
    pub pattern: Option<String>,
    pub expiry: Option<String>,
    pub stopped: bool,
}

/// One custom volume of a `push` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub pool: String,
    pub volume: String,
    /// `copied`, `refreshed`, `up-to-date`, or `shared` (replicated with another instance
    /// of the run, `shared_with`).
    pub status: String,
    /// The snapshots sent.
    #[serde(default)]
    pub snapshots: Vec<String>,
    /// The snapshot the replica volume was restored to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<String>,
}

/// `push`: an instance was replicated (or found current) by incus-push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    /// The cluster member holding the source (absent on a single server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub target_remote: String,
    pub target_project: String,
    pub target_instance: String,
    /// The cluster member holding the replica (absent on a single standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_location: Option<String>,
    /// `copied`, `refreshed` or `up-to-date`.
    pub status: String,
    /// The snapshots sent (all of them for a first copy).
    pub snapshots: Vec<String>,
    pub seconds: f64,
    /// With `--replace`: the name the refused replica was moved to (renamed, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_aside: Option<String>,
    /// Archive points made before the refresh (instances in the archive project).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archived: Vec<String>,
    /// Archive points the standby's policy no longer keeps, deleted after the refresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archives_deleted: Vec<String>,
    /// First copies that Incus failed for a reason known to be transient, and that were made
    /// again (absent: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// The custom volumes the instance attaches (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRecord>,
    /// Snapshot records of the replica that had no storage volume (left by a daemon that died
    /// mid-refresh), deleted so that the replica could be written again (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `pruned`: a snapshot was deleted (or would be, with `dry_run`) by incus-prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    /// The attached volumes whose snapshot of the same name went with it (`POOL/VOLUME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `kept`: a snapshot incus-prune keeps, and why (with `--explain`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `status`: one instance's replication state, as incus-failover status sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    /// The cluster member holding the primary copy (absent on a single server, or when the
    /// primary does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub standby: String,
    pub replica_project: String,
    pub replica_instance: String,
    /// The cluster member holding the replica (absent on a single standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_location: Option<String>,
    /// `up`, `unreachable` or `missing` (the primary answers, but has no such instance).
    pub primary: PrimaryState,
    /// Why the primary is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_error: Option<String>,
    pub primary_running: Option<bool>,
    pub primary_newest: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub primary_newest_at: Option<DateTime<Utc>>,
    pub replica_newest: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub replica_newest_at: Option<DateTime<Utc>>,
    pub replica_snapshots: usize,
    /// What a promotion now would lose, in seconds: the age of the replica's newest snapshot.
    pub rpo_seconds: Option<i64>,
    #[serde(serialize_with = "optional_time")]
    pub last_sync: Option<DateTime<Utc>>,
    pub ready: bool,
    /// Why it is not ready (empty when ready).
    pub problems: Vec<String>,
    pub replica_running: bool,
    pub promoted: bool,
    /// The primary copy carries incus-failover's fencing (`None`: primary unreachable).
    pub fenced: Option<bool>,
    /// The same instance runs on both servers.
    pub split_brain: bool,
    /// Marked promoted, but it runs on neither server: the service is down.
    #[serde(default)]
    pub service_down: bool,
    /// How deep the standby's history goes: the replica's snapshots plus its archive points.
    pub history_points: usize,
    #[serde(serialize_with = "optional_time")]
    pub history_oldest: Option<DateTime<Utc>>,
    #[serde(serialize_with = "optional_time")]
    pub history_newest: Option<DateTime<Utc>>,
    /// The custom volumes the replica attaches, each with its newest snapshot and RPO.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStatus>,
    /// The last drill (`incus-failover drill`): when, and whether its clone ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_ok: Option<bool>,
}

/// One custom volume of a `status` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub pool: String,
    pub volume: String,
    /// The replica volume's newest snapshot (`null`: it has none, or it is missing).
    pub newest: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub newest_at: Option<DateTime<Utc>>,
    pub rpo_seconds: Option<i64>,
    /// The replica volume exists on the standby.
    pub present: bool,
}

/// `step`: one step of a promotion or fencing, done (or, with `dry_run`, to be done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub step: crate::failover::Step,
    pub detail: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `promoted`: a replica now runs as the instance, on the standby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotedRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub standby: String,
    pub replica_project: String,
    pub replica_instance: String,
    /// The cluster member the promoted instance runs on (absent on a single standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The snapshot the promoted instance started from.
    pub snapshot: Option<String>,
    pub emergency: bool,
    /// Data written on the primary after this time is not on the promoted instance
    /// (`null` for a planned promotion: nothing is lost).
    #[serde(serialize_with = "optional_time")]
    pub data_loss_since: Option<DateTime<Utc>>,
    /// The length of that window when the primary was last seen (its last sync), in seconds;
    /// 0 for a planned promotion.
    pub data_loss_seconds: Option<i64>,
    #[serde(serialize_with = "optional_time")]
    pub primary_last_seen: Option<DateTime<Utc>>,
    /// It was promoted by an earlier run: nothing was done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// What the primary said about an instance, as a `status` record words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryState {
    Up,
    Unreachable,
    /// The primary answers, but has no such instance.
    Missing,
}

impl PrimaryState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrimaryState::Up => "up",
            PrimaryState::Unreachable => "unreachable",
            PrimaryState::Missing => "missing",
        }
    }
}

/// `fenced`: the primary copy can no longer run by itself (autostart off, stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FencedRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub standby: String,
    /// Its `boot.autostart` before the fencing (`null`: unset).
    pub autostart_was: Option<String>,
    pub stopped: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A custom volume selected by itself (`--volume`), not through an instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolumeAddress {
    pub remote: String,
    pub project: String,
    pub pool: String,
    pub volume: String,
}

impl std::fmt::Display for VolumeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.remote, self.pool, self.volume)
    }
}

/// `volume-snapshot`: a snapshot of a volume selected by itself (incus-snap --volume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshotRecord {
    #[serde(flatten)]
    pub of: VolumeAddress,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `volume-push`: a volume selected by itself was replicated (or found current).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumePushRecord {
    #[serde(flatten)]
    pub of: VolumeAddress,
    pub target_remote: String,
    pub target_project: String,
    /// `copied`, `refreshed` or `up-to-date`.
    pub status: String,
    pub snapshots: Vec<String>,
    /// The snapshot the replica volume was restored to (its newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `drill`: a clone of the replica was started on the standby, to prove it can run there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub standby: String,
    pub replica_project: String,
    pub replica_instance: String,
    /// The snapshot the replica (and so the clone) holds.
    pub snapshot: Option<String>,
    /// The clone's name (deleted again).
    pub clone: String,
    /// The clone ran (and the probe, if any, exited 0).
    pub ok: bool,
    /// Seconds from the start request to running.
    pub seconds_to_running: Option<f64>,
    /// `--probe`'s exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_exit: Option<i64>,
    /// Why it failed (Incus's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The custom volumes cloned with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The pool copies everything (`dir`): the clone was a full copy.
    pub full_copy: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `failed-back`: the instance runs on the primary again; the standby holds an inert replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedBackRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub standby: String,
    /// The standby's last snapshot, which the primary copy started from.
    pub snapshot: Option<String>,
    /// Where the old primary copy was kept (renamed, with its own snapshots and data).
    pub kept_aside: Option<String>,
    /// Done by an earlier run: nothing was changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `token`: a trust token made (or found pending) on a server by incus-trust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub remote: String,
    /// The client name the certificate will get.
    pub name: String,
    /// The token, as `incus remote add` and `incus-trust add` take it.
    pub token: String,
    /// The server certificate the token pins.
    pub fingerprint: String,
    pub addresses: Vec<String>,
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Restricted to these projects (empty: unrestricted).
    pub projects: Vec<String>,
    /// It was pending already: the same token, not a second one.
    pub reused: bool,
}

/// `trusted`: a remote added to the CLI configuration by incus-trust add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedRecord {
    /// The new remote's name.
    pub remote: String,
    pub addr: String,
    /// The server certificate pinned in `servercerts/REMOTE.crt`.
    pub fingerprint: String,
    /// Our client certificate's fingerprint.
    pub client_fingerprint: String,
    /// `redeemed` (the token made the server trust us), `already-trusted` (the token was not
    /// used) or `pinned` (added by fingerprint).
    pub how: String,
    /// A client certificate was made for this configuration.
    pub new_client_certificate: bool,
}

/// `certificate`: a trusted certificate on a server (incus-trust list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub remote: String,
    pub name: String,
    pub fingerprint: String,
    pub kind: String,
    pub restricted: bool,
    pub projects: Vec<String>,
}

/// `pending-token`: a trust token not used yet (incus-trust list), without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTokenRecord {
    pub remote: String,
    pub name: String,
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
    pub operation: String,
}

/// `revoked` or `removed`: a pending token revoked, or a trusted certificate removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustChangeRecord {
    pub remote: String,
    pub name: String,
    /// The token's operation id, or the certificate's fingerprint.
    pub id: String,
}

/// `check`: one remote as incus-trust check finds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub remote: String,
    pub addr: String,
    pub reachable: bool,
    /// The server still presents the pinned certificate.
    pub certificate_ok: bool,
    /// The server trusts our client certificate (`auth` in `GET /1.0`).
    pub trusted: bool,
    /// API extensions the tools need that the server lacks.
    pub missing_extensions: Vec<String>,
    /// The server listens on the network (`core.https_address`): needed by the side that is
    /// dialled in pull mode.
    pub listening: Option<bool>,
    /// With --standby: the standby listens too, so that failback's pull works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_ready: Option<bool>,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// `error`: something failed; the record names the tool and, when known, the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The custom volume (`POOL/VOLUME`) a failure about a volume of its own concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub message: String,
    /// The input line number, for malformed input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl ErrorRecord {
    /// A failure that concerns no instance (the whole run, or an input line).
    pub fn run_level(tool: &str, message: &str) -> Self {
        ErrorRecord {
            tool: tool.to_string(),
            remote: None,
            project: None,
            instance: None,
            volume: None,
            message: one_line(message),
            line: None,
        }
    }
}

/// How a tool, or the pipeline up to it, ended. Ordered from best to worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything asked was done (exit status 0).
    #[default]
    Ok,
    /// Some items failed, each with an `error` record (exit status 1).
    Partial,
    /// The tool failed as a whole, was interrupted, or its stream stopped without an `end`
    /// record (exit status 2, or killed).
    Failed,
}

impl Outcome {
    /// The word in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        }
    }
}

/// `end`: the last record of every tool's output: how this tool and every tool before it
/// ended. A stream that stops without one was cut: its writer was killed or crashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub tool: String,
    /// The worst outcome of this tool and of everything upstream.
    pub status: Outcome,
    /// The tools that did not end `ok`, upstream ones first (`TOOL (no end record)` for a
    /// stream that was cut).
    pub failed: Vec<String>,
}

/// Every record type the tools write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Snapshot(SnapshotRecord),
    Schedule(ScheduleRecord),
    Push(PushRecord),
    Pruned(PrunedRecord),
    Kept(KeptRecord),
    Status(StatusRecord),
    Step(StepRecord),
    Promoted(PromotedRecord),
    Fenced(FencedRecord),
    FailedBack(FailedBackRecord),
    Drill(DrillRecord),
    VolumeSnapshot(VolumeSnapshotRecord),
    VolumePush(VolumePushRecord),
    Token(TokenRecord),
    Trusted(TrustedRecord),
    Certificate(CertificateRecord),
    PendingToken(PendingTokenRecord),
    Revoked(TrustChangeRecord),
    Removed(TrustChangeRecord),
    Check(CheckRecord),
    Error(ErrorRecord),
    End(EndRecord),
}

/// One input line: a JSON object (kept verbatim for forwarding) or a malformed line.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub line: usize,
    pub raw: String,
    pub fields: Map<String, Value>,
}

impl InputRecord {
    /// The `type` field.
    pub fn kind(&self) -> &str {
        self.str("type").unwrap_or("")
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }

    /// The instance the record names (`remote` + `instance`, `project` or the remote's
    /// default); `None` for records that name none and for `error` records (the failure was
    /// reported once already).
    pub fn instance(&self) -> Option<(String, Option<String>, String)> {
        if self.kind() == "error" {
            return None;
        }
        let remote = self.str("remote")?;
        let instance = self.str("instance")?;
        Some((
            remote.to_string(),
            self.str("project").map(str::to_string),
            instance.to_string(),
        ))
    }

    /// The volume a `volume-snapshot` or `volume-push` record names: remote, project (if
    /// given), `POOL/VOLUME`.
    pub fn volume(&self) -> Option<(String, Option<String>, String, String)> {
        if !matches!(self.kind(), "volume-snapshot" | "volume-push") {
            return None;
        }
        Some((
            self.str("remote")?.to_string(),
            self.str("project").map(str::to_string),
            self.str("pool")?.to_string(),
            self.str("volume")?.to_string(),
        ))
    }
}

/// What the stream on stdin says about the tools before this one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Lines read (records, `end` records and malformed lines; not empty lines).
    pub lines: usize,
    /// The last line read was an `end` record.
    pub ended: bool,
    /// The worst outcome the `end` records report.
    pub status: Outcome,
    /// The tools that did not end `ok`.
    pub failed: Vec<String>,
}

impl Upstream {
    /// Nothing was read: no pipeline before this tool (a terminal, `/dev/null`, or an empty
    /// pipe such as cron's stdin).
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Records were read but the stream stopped without its `end` record: the tool before
    /// this one was killed, crashed, or its records were typed without `{"type":"end"}`.
    pub fn is_cut(&self) -> bool {
        self.lines > 0 && !self.ended
    }

    /// The pipeline's outcome so far: a cut stream counts as a failure.
    pub fn outcome(&self) -> Outcome {
        if self.is_cut() {
            Outcome::Failed
        } else {
            self.status
        }
    }

    /// The failed tools, with a cut stream as `upstream (no end record)` (which tool was cut
    /// is unknown: forwarded records carry the names of earlier tools).
    pub fn failed_tools(&self) -> Vec<String> {
        let mut failed = self.failed.clone();
        if self.is_cut() {
            failed.push("upstream (no end record)".to_string());
        }
        failed
    }

    /// One line saying why the upstream is not `ok`, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if self.is_cut() {
            return Some(
                "the stream on stdin stopped without its end record: the tool before was killed or crashed (records typed by hand end with {\"type\":\"end\"})"
                    .to_string(),
            );
        }
        match self.status {
            Outcome::Ok => None,
            outcome => Some(format!(
                "{} ended {} upstream (see its error records)",
                if self.failed.is_empty() {
                    "a tool".to_string()
                } else {
                    self.failed.join(", ")
                },
                outcome.as_str()
            )),
        }
    }

    fn saw_line(&mut self) {
        self.lines += 1;
        self.ended = false;
    }

    fn saw_end(&mut self, fields: &Map<String, Value>) {
        self.saw_line();
        self.ended = true;
        let status = fields
            .get("status")
            .cloned()
            .map(serde_json::from_value::<Outcome>)
            .unwrap_or(Ok(Outcome::Ok))
            // A status this version does not know is not "ok".
            .unwrap_or(Outcome::Failed);
        self.status = self.status.max(status);
        for tool in fields
            .get("failed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !self.failed.iter().any(|t| t == tool) {
                self.failed.push(tool.to_string());
            }
        }
        if status != Outcome::Ok && self.failed.is_empty() {
            let tool = fields
                .get("tool")
                .and_then(Value::as_str)
                .unwrap_or("a tool");
            self.failed.push(tool.to_string());
        }
    }
}

/// Reads every line of stdin when it is not a terminal: good lines as records, malformed ones
/// reported through `output` (as an error record in their place).
pub fn read_stdin(output: &Output) -> io::Result<Vec<InputRecord>> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    read_from(stdin.lock(), output)
}

/// Reads records from any reader (see [`read_stdin`]).
pub fn read_from(reader: impl BufRead, output: &Output) -> io::Result<Vec<InputRecord>> {
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let raw = match line {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                output.saw_upstream(Upstream::saw_line);
                output.malformed(line_no, "not UTF-8 text");
                continue;
            }
            Err(e) => return Err(e),
        };
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(fields))
                if fields.get("type").and_then(Value::as_str) == Some("end") =>
            {
                // Folded into this tool's own end record, not forwarded.
                output.saw_upstream(|u| u.saw_end(&fields));
            }
            Ok(Value::Object(fields)) => {
                output.saw_upstream(Upstream::saw_line);
                output.forward(&raw, &fields);
                records.push(InputRecord {
                    line: line_no,
                    raw,
                    fields,
                });
            }
            Ok(_) => {
                output.saw_upstream(Upstream::saw_line);
                output.malformed(line_no, "not a JSON object");
            }
            Err(e) => {
                output.saw_upstream(Upstream::saw_line);
                output.malformed(line_no, &format!("not JSON ({e})"));
            }
        }
    }
    Ok(records)
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// One readable line per record (the default on a terminal).
    Text,
}

/// The writer of a tool's stdout (records) and stderr (error lines).
pub struct Output {
    tool: &'static str,
    format: Format,
    out: Mutex<Box<dyn Write + Send>>,
    errors: AtomicUsize,
    upstream: Mutex<Upstream>,
    /// Stdout was closed by its reader: nothing more is written.
    closed: AtomicBool,
    /// Runs each write (progress bars on the same terminal hide themselves around it).
    around_write: Mutex<Option<AroundWrite>>,
}

/// A wrapper run around each line written (see [`Output::set_around_write`]).
pub type AroundWrite = std::sync::Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

impl Output {
    /// Writes to stdout; `format: None` picks text on a terminal, JSON otherwise.
    pub fn stdout(tool: &'static str, format: Option<Format>) -> Self {
        let format = format.unwrap_or(if io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        });
        Self::new(tool, format, Box::new(io::stdout()))
    }

    /// Writes to any writer (tests).
    pub fn new(tool: &'static str, format: Format, out: Box<dyn Write + Send>) -> Self {
        Output {
            tool,
            format,
            out: Mutex::new(out),
            errors: AtomicUsize::new(0),
            upstream: Mutex::new(Upstream::default()),
            closed: AtomicBool::new(false),
            around_write: Mutex::new(None),
        }
    }

    /// The format records are written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// What the input said about the tools before this one.
    pub fn upstream(&self) -> Upstream {
        self.upstream.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn saw_upstream(&self, f: impl FnOnce(&mut Upstream)) {
        if let Ok(mut upstream) = self.upstream.lock() {
            f(&mut upstream);
        }
    }

    /// True once the reader of stdout went away.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Reports that the tool failed as a whole: one line on stderr and, in JSON, a run-level
    /// `error` record (no instance) for the tools downstream.
    pub fn fatal(&self, message: &str) {
        self.report(None, ErrorRecord::run_level(self.tool, message));
    }

    /// Writes a run-level `error` record without a stderr line (the caller printed one).
    pub fn record_only_error(&self, message: &str) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        if self.format == Format::Json {
            self.emit(&Record::Error(ErrorRecord::run_level(self.tool, message)));
        }
    }

    /// Writes the `end` record (JSON only): this tool's outcome folded into the upstream's.
    /// Returns the pipeline's outcome so far.
    pub fn finish(&self, own: Outcome) -> Outcome {
        let upstream = self.upstream();
        let mut failed = upstream.failed_tools();
        if own != Outcome::Ok {
            failed.push(self.tool.to_string());
        }
        let status = own.max(upstream.outcome());
        if self.format == Format::Json {
            self.emit(&Record::End(EndRecord {
                tool: self.tool.to_string(),
                status,
                failed,
            }));
        }
        status
    }

    /// The tool's name, for messages.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// How many failures were reported.
    pub fn error_count(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }

    /// Writes one of this tool's records.
    pub fn emit(&self, record: &Record) {
        let value = match serde_json::to_value(record) {
            Ok(Value::Object(map)) => map,
            _ => return,
        };
        let raw = Value::Object(value.clone()).to_string();
        self.write_line(&raw, &value);
    }

    /// Forwards an input record unchanged.
    pub fn forward(&self, raw: &str, fields: &Map<String, Value>) {
        self.write_line(raw, fields);
    }

    /// Reports a failure about one instance: an error record, and one line on stderr.
    pub fn error(&self, of: Option<&InstanceRef>, message: &str) {
        self.report(
            of.map(InstanceRef::to_string),
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: of.map(|o| o.remote.clone()),
                project: of.map(|o| o.project.clone()),
                instance: of.map(|o| o.instance.clone()),
                volume: None,
                message: one_line(message),
                line: None,
            },
        );
    }

    /// Reports a failure about a whole remote (listing its instances, connecting to it).
    pub fn remote_error(&self, remote: &str, project: Option<&str>, message: &str) {
        self.report(
            Some(remote.to_string()),
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: Some(remote.to_string()),
                project: project.map(str::to_string),
                instance: None,
                volume: None,
                message: one_line(message),
                line: None,
            },
        );
    }

    /// Reports a failure about a custom volume selected by itself (`--volume`).
    pub fn volume_error(&self, remote: &str, project: &str, volume: &str, message: &str) {
        self.report(
            Some(format!("{remote}:{volume}")),
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: Some(remote.to_string()),
                project: Some(project.to_string()),
                instance: None,
                volume: Some(volume.to_string()),
                message: one_line(message),
                line: None,
            },
        );
    }

    /// Reports a malformed input line.
    pub fn malformed(&self, line: usize, why: &str) {
        self.report(
            None,
            ErrorRecord {
                line: Some(line),
                ..ErrorRecord::run_level(
                    self.tool,
                    &format!("stdin line {line}: {why}; expected one JSON record per line"),
                )
            },
        );
    }

    /// Counts a failure, prints it once on stderr (`TOOL: error: SUBJECT: MESSAGE`) and, in
    /// JSON, writes its error record (on a terminal the stderr line is enough).
    fn report(&self, subject: Option<String>, record: ErrorRecord) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        let line = match subject {
            Some(subject) => format!("{}: error: {subject}: {}", self.tool, record.message),
            None => format!("{}: error: {}", self.tool, record.message),
        };
        self.around(&mut || eprintln!("{line}"));
        if self.format == Format::Json {
            self.emit(&Record::Error(record));
        }
    }

    /// A note for the person at the terminal (stderr), never part of the stream.
    pub fn note(&self, message: &str) {
        self.around(&mut || eprintln!("{}: {message}", self.tool));
    }

    /// Runs `f` through the wrapper set by [`Output::set_around_write`], if any.
    fn around(&self, f: &mut dyn FnMut()) {
        let wrapper = self.around_write.lock().ok().and_then(|w| w.clone());
        match wrapper {
            Some(wrapper) => wrapper(f),
            None => f(),
        }
    }

    /// Runs every later write through `wrapper`: progress bars drawn on the terminal use it to
    /// clear themselves around each line, so that records and bars do not mix.
    pub fn set_around_write(&self, wrapper: AroundWrite) {
        if let Ok(mut slot) = self.around_write.lock() {
            *slot = Some(wrapper);
        }
    }

    fn write_line(&self, raw: &str, fields: &Map<String, Value>) {
        self.around(&mut || self.write_line_now(raw, fields));
    }

    fn write_line_now(&self, raw: &str, fields: &Map<String, Value>) {
        let line = match self.format {
            Format::Json => raw.to_string(),
            Format::Text => text_line(fields),
        };
        if self.is_closed() {
            return;
        }
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let result = writeln!(out, "{line}").and_then(|()| out.flush());
        if let Err(e) = result {
            // The reader went away (`| head -1`, a killed next stage) or the disk is full:
            // stop as on SIGTERM (no new work; transfers under way are cancelled where Incus
            // can, or finished) and exit non-zero, since the records were not delivered.
            if !self.closed.swap(true, Ordering::SeqCst) && e.kind() != io::ErrorKind::BrokenPipe {
                let _ = writeln!(
                    io::stderr(),
                    "{}: error: writing the output: {e}",
                    self.tool
                );
            }
            crate::interrupt::request();
        }
    }
}

/// Folds a multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The readable form of a record: its type, the instance, then the other fields.
fn text_line(fields: &Map<String, Value>) -> String {
    let get = |k: &str| fields.get(k).and_then(Value::as_str);
    let mut line = get("type").unwrap_or("record").to_string();
    if let (Some(remote), Some(instance)) = (get("remote"), get("instance")) {
        line.push_str(&format!(" {remote}:{instance}"));
        if let Some(project) = get("project").filter(|p| *p != "default") {
            line.push_str(&format!(" (project {project})"));
        }
    }
    for (key, value) in fields {
        if matches!(
            key.as_str(),
            "type" | "remote" | "instance" | "project" | "tool"
        ) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        line.push_str(&format!(" {key}={text}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture() -> (Output, Shared) {
        let shared = Shared::default();
        (
            Output::new("incus-test", Format::Json, Box::new(shared.clone())),
            shared,
        )
    }

    fn text(shared: &Shared) -> String {
        String::from_utf8(shared.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    #[test]
    fn records_are_flat_with_type_first() {
        let (out, shared) = capture();
        out.emit(&Record::Snapshot(SnapshotRecord {
            of: InstanceRef {
                remote: "local".into(),
                project: "default".into(),
                instance: "web".into(),
            },
            location: None,
            name: "auto-20261128-205000".into(),
            created_at: DateTime::from_timestamp(1_795_899_000, 0).unwrap_or_default(),
            expires_at: None,
            stateful: false,
            volumes: Vec::new(),
            frozen_ms: None,
        }));
        let line = text(&shared);
        assert!(line.starts_with(r#"{"type":"snapshot","remote":"local","project":"default","instance":"web","name":"auto-20261128-205000","created_at":""#), "{line}");
        assert!(
            line.ends_with("\"expires_at\":null,\"stateful\":false}\n"),
            "{line}"
        );
    }

    #[test]
    fn input_is_forwarded_verbatim_and_malformed_lines_become_numbered_errors() {
        let (out, shared) = capture();
        let input = "{\"type\":\"x-custom\",\"b\":1,  \"a\":2}\nnot json\n\n[1]\n{\"type\":\"snapshot\",\"remote\":\"local\",\"instance\":\"web\"}\n";
        let records = read_from(input.as_bytes(), &out).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 5);
        assert_eq!(
            records[1].instance(),
            Some(("local".into(), None, "web".into()))
        );
        assert_eq!(out.error_count(), 2);
        let lines: Vec<String> = text(&shared).lines().map(str::to_string).collect();
        assert_eq!(lines[0], "{\"type\":\"x-custom\",\"b\":1,  \"a\":2}");
        assert!(lines[1].contains("\"line\":2"), "{}", lines[1]);
        assert!(lines[2].contains("\"line\":4"), "{}", lines[2]);
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn error_records_do_not_select_instances() {
        let (out, _) = capture();
        let input = "{\"type\":\"error\",\"tool\":\"incus-snap\",\"remote\":\"local\",\"instance\":\"web\",\"message\":\"x\"}\n";
        let records = read_from(input.as_bytes(), &out).unwrap_or_default();
        assert_eq!(records[0].instance(), None);
    }

    #[test]
    fn end_records_are_folded_not_forwarded_and_a_cut_stream_is_a_failure() {
        let (out, shared) = capture();
        let ended = "{\"type\":\"snapshot\",\"remote\":\"local\",\"instance\":\"web\"}\n{\"type\":\"end\",\"tool\":\"incus-push\",\"status\":\"partial\",\"failed\":[\"incus-push\"]}\n";
        let records = read_from(ended.as_bytes(), &out).unwrap_or_default();
        assert_eq!(records.len(), 1);
        assert!(!text(&shared).contains("\"end\""), "not forwarded");
        let upstream = out.upstream();
        assert!(!upstream.is_cut());
        assert_eq!(upstream.outcome(), Outcome::Partial);
        assert_eq!(out.finish(Outcome::Ok), Outcome::Partial);
        let last = text(&shared)
            .lines()
            .last()
            .map(str::to_string)
            .unwrap_or_default();
        assert_eq!(
            last,
            "{\"type\":\"end\",\"tool\":\"incus-test\",\"status\":\"partial\",\"failed\":[\"incus-push\"]}"
        );

        // Records after the last end record: cut.
        let (out, _) = capture();
        let cut = "{\"type\":\"end\"}\n{\"type\":\"snapshot\",\"tool\":\"x\"}\n";
        read_from(cut.as_bytes(), &out).unwrap_or_default();
        assert!(out.upstream().is_cut());
        assert_eq!(out.upstream().outcome(), Outcome::Failed);
        assert!(
            out.upstream()
                .problem()
                .is_some_and(|p| p.contains("end record"))
        );

        // Typed by hand: the minimal end line; nothing at all: no stream.
        let (out, _) = capture();
        read_from("{\"type\":\"x\"}\n{\"type\":\"end\"}\n".as_bytes(), &out).unwrap_or_default();
        assert_eq!(out.upstream().outcome(), Outcome::Ok);
        assert_eq!(out.upstream().problem(), None);
        let (out, _) = capture();
        read_from("".as_bytes(), &out).unwrap_or_default();
        assert!(out.upstream().is_empty() && !out.upstream().is_cut());

        // An unknown status is not ok.
        let (out, _) = capture();
        read_from("{\"type\":\"end\",\"status\":\"weird\"}\n".as_bytes(), &out).unwrap_or_default();
        assert_eq!(out.upstream().outcome(), Outcome::Failed);
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("a valid time")
    }

    fn web() -> InstanceRef {
        InstanceRef {
            remote: "local".into(),
            project: "prod".into(),
            instance: "web".into(),
        }
    }

    /// Writes `record` as a tool does, reads it back as a [`Record`] and, from the same
    /// line with a field added by some later version, as its own type `T`; both equal the
    /// original, and writing again gives the same line.
    fn round_trip<T>(record: Record, inner: &T)
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let line = serde_json::to_string(&record).expect("serialize");
        let back: Record = serde_json::from_str(&line).expect("deserialize as Record");
        assert_eq!(back, record, "{line}");
        assert_eq!(serde_json::to_string(&back).expect("serialize"), line);
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&line) else {
            panic!("not an object: {line}")
        };
        fields.insert("x-later-field".into(), Value::from(1));
        let typed: T = serde_json::from_value(Value::Object(fields)).expect("deserialize");
        assert_eq!(&typed, inner, "{line}");
    }

    macro_rules! round_trips {
        ($($variant:ident($value:expr)),+ $(,)?) => {
            $(
                let value = $value;
                round_trip(Record::$variant(value.clone()), &value);
            )+
        };
    }

    #[test]
    fn every_record_reads_back_as_written() {
        round_trips![
            Snapshot(SnapshotRecord {
                of: web(),
                location: Some("m1".into()),
                name: "auto-1".into(),
                created_at: at(1_795_899_000),
                expires_at: Some(at(1_796_000_000)),
                stateful: true,
                volumes: Vec::new(),
                frozen_ms: None,
            }),
            Snapshot(SnapshotRecord {
                of: web(),
                location: None,
                name: "auto-1".into(),
                created_at: at(1_795_899_000),
                expires_at: None,
                stateful: false,
                volumes: Vec::new(),
                frozen_ms: None,
            }),
            Schedule(ScheduleRecord {
                of: web(),
                schedule: Some("@daily".into()),
                pattern: Some("auto-%d".into()),
                expiry: Some("1w".into()),
                stopped: true,
            }),
            Schedule(ScheduleRecord {
                of: web(),
                schedule: None,
                pattern: None,
                expiry: None,
                stopped: false,
            }),
            Push(PushRecord {
                of: web(),
                location: Some("m1".into()),
                target_remote: "standby".into(),
                target_project: "prod".into(),
                target_instance: "web".into(),
                target_location: Some("s2".into()),
                status: "refreshed".into(),
                snapshots: vec!["auto-1".into(), "auto-2".into()],
                seconds: 1.25,
                moved_aside: Some("web-aside".into()),
                archived: vec!["a1".into()],
                archives_deleted: vec!["a0".into()],
                retries: 1,
                volumes: Vec::new(),
                repaired: Vec::new(),
                dry_run: true,
            }),
            Push(PushRecord {
                of: web(),
                location: None,
                target_remote: "standby".into(),
                target_project: "prod".into(),
                target_instance: "web".into(),
                target_location: None,
                status: "up-to-date".into(),
                snapshots: vec![],
                seconds: 0.0,
                moved_aside: None,
                archived: vec![],
                archives_deleted: vec![],
                retries: 0,
                volumes: Vec::new(),
                repaired: Vec::new(),
                dry_run: false,
            }),
            Pruned(PrunedRecord {
                of: web(),
                name: "auto-1".into(),
                created_at: at(1_795_899_000),
                volumes: Vec::new(),
                dry_run: true,
            }),
            Pruned(PrunedRecord {
                of: web(),
                name: "auto-1".into(),
                created_at: at(1_795_899_000),
                volumes: vec!["default/data".into()],
                dry_run: false,
            }),
            Kept(KeptRecord {
                of: web(),
                name: "auto-1".into(),
                created_at: at(1_795_899_000),
                reasons: vec!["daily snapshot".into()],
                dry_run: true,
            }),
            Status(StatusRecord {
                of: web(),
                location: Some("m1".into()),
                standby: "standby".into(),
                replica_project: "prod".into(),
                replica_instance: "web".into(),
                replica_location: Some("s1".into()),
                primary: PrimaryState::Unreachable,
                primary_error: Some("refused".into()),
                primary_running: Some(true),
                primary_newest: Some("auto-2".into()),
                primary_newest_at: Some(at(1_795_899_100)),
                replica_newest: Some("auto-1".into()),
                replica_newest_at: Some(at(1_795_899_000)),
                replica_snapshots: 3,
                rpo_seconds: Some(100),
                last_sync: Some(at(1_795_899_050)),
                ready: false,
                problems: vec!["stale".into()],
                replica_running: false,
                promoted: false,
                fenced: Some(false),
                split_brain: false,
                service_down: false,
                history_points: 5,
                history_oldest: Some(at(1_795_000_000)),
                history_newest: Some(at(1_795_899_000)),
                volumes: Vec::new(),
                drill_at: None,
                drill_ok: None,
            }),
            Status(StatusRecord {
                of: web(),
                location: None,
                standby: "standby".into(),
                replica_project: "prod".into(),
                replica_instance: "web".into(),
                replica_location: None,
                primary: PrimaryState::Up,
                primary_error: None,
                primary_running: None,
                primary_newest: None,
                primary_newest_at: None,
                replica_newest: None,
                replica_newest_at: None,
                replica_snapshots: 0,
                rpo_seconds: None,
                last_sync: None,
                ready: true,
                problems: vec![],
                replica_running: true,
                promoted: true,
                fenced: None,
                split_brain: true,
                service_down: false,
                history_points: 0,
                history_oldest: None,
                history_newest: None,
                volumes: vec![VolumeStatus {
                    pool: "default".into(),
                    volume: "dbdata".into(),
                    newest: Some("auto-1".into()),
                    newest_at: Some(at(1_795_899_000)),
                    rpo_seconds: Some(60),
                    present: true,
                }],
                drill_at: Some(at(1_795_899_100)),
                drill_ok: Some(true),
            }),
            Step(StepRecord {
                of: web(),
                step: crate::failover::Step::Stop,
                detail: "stopped the primary".into(),
                dry_run: true,
            }),
            Promoted(PromotedRecord {
                of: web(),
                standby: "standby".into(),
                replica_project: "prod".into(),
                replica_instance: "web".into(),
                location: Some("s1".into()),
                snapshot: Some("auto-1".into()),
                emergency: true,
                data_loss_since: Some(at(1_795_899_000)),
                data_loss_seconds: Some(60),
                primary_last_seen: Some(at(1_795_899_060)),
                already: true,
                seconds: 3.5,
                dry_run: true,
            }),
            Promoted(PromotedRecord {
                of: web(),
                standby: "standby".into(),
                replica_project: "prod".into(),
                replica_instance: "web".into(),
                location: None,
                snapshot: None,
                emergency: false,
                data_loss_since: None,
                data_loss_seconds: Some(0),
                primary_last_seen: None,
                already: false,
                seconds: 0.5,
                dry_run: false,
            }),
            Fenced(FencedRecord {
                of: web(),
                standby: "standby".into(),
                autostart_was: Some("true".into()),
                stopped: true,
                dry_run: true,
            }),
            Fenced(FencedRecord {
                of: web(),
                standby: "standby".into(),
                autostart_was: None,
                stopped: false,
                dry_run: false,
            }),
            FailedBack(FailedBackRecord {
                of: web(),
                standby: "standby".into(),
                snapshot: Some("auto-1".into()),
                kept_aside: Some("web-old".into()),
                already: true,
                seconds: 2.0,
                dry_run: false,
            }),
            Token(TokenRecord {
                remote: "standby".into(),
                name: "primary".into(),
                token: "eyJ0b2tlbiI6MX0=".into(),
                fingerprint: "ab12".into(),
                addresses: vec!["10.0.0.2:8443".into()],
                expires_at: Some(at(1_795_999_000)),
                projects: vec!["prod".into()],
                reused: true,
            }),
            Trusted(TrustedRecord {
                remote: "standby".into(),
                addr: "https://10.0.0.2:8443".into(),
                fingerprint: "ab12".into(),
                client_fingerprint: "cd34".into(),
                how: "redeemed".into(),
                new_client_certificate: true,
            }),
            Certificate(CertificateRecord {
                remote: "standby".into(),
                name: "primary".into(),
                fingerprint: "cd34".into(),
                kind: "client".into(),
                restricted: true,
                projects: vec!["prod".into()],
            }),
            PendingToken(PendingTokenRecord {
                remote: "standby".into(),
                name: "primary".into(),
                expires_at: None,
                operation: "0f1e".into(),
            }),
            Revoked(TrustChangeRecord {
                remote: "standby".into(),
                name: "primary".into(),
                id: "0f1e".into(),
            }),
            Removed(TrustChangeRecord {
                remote: "standby".into(),
                name: "primary".into(),
                id: "cd34".into(),
            }),
            Check(CheckRecord {
                remote: "standby".into(),
                addr: "https://10.0.0.2:8443".into(),
                reachable: true,
                certificate_ok: true,
                trusted: false,
                missing_extensions: vec!["instance_refresh".into()],
                listening: Some(true),
                failback_ready: Some(false),
                ok: false,
                problems: vec!["not trusted".into()],
            }),
            Check(CheckRecord {
                remote: "local".into(),
                addr: "unix://".into(),
                reachable: true,
                certificate_ok: true,
                trusted: true,
                missing_extensions: vec![],
                listening: None,
                failback_ready: None,
                ok: true,
                problems: vec![],
            }),
            Error(ErrorRecord {
                tool: "incus-push".into(),
                remote: Some("local".into()),
                project: Some("prod".into()),
                instance: Some("web".into()),
                volume: None,
                message: "failed".into(),
                line: Some(3),
            }),
            Error(ErrorRecord::run_level("incus-push", "failed")),
            End(EndRecord {
                tool: "incus-prune".into(),
                status: Outcome::Partial,
                failed: vec!["incus-push".into()],
            }),
        ];
    }

    #[test]
    fn records_read_with_the_names_and_layout_docs_records_md_gives() {
        // Flat, `type` first, the instance's fields at the top level, empty optional fields
        // left out: what other programs write and what the tools wrote before.
        let line = r#"{"type":"push","remote":"local","project":"default","instance":"web","target_remote":"standby","target_project":"default","target_instance":"web","status":"copied","snapshots":["s1"],"seconds":1.5}"#;
        let Ok(Record::Push(push)) = serde_json::from_str::<Record>(line) else {
            panic!("{line}")
        };
        assert_eq!(push.of.instance, "web");
        assert!(push.archived.is_empty() && !push.dry_run && push.moved_aside.is_none());
        assert_eq!(
            serde_json::to_string(&Record::Push(push)).ok().as_deref(),
            Some(line)
        );
        let line = r#"{"type":"failed-back","remote":"local","project":"default","instance":"web","standby":"standby","snapshot":null,"kept_aside":null,"seconds":0.25}"#;
        assert!(matches!(
            serde_json::from_str::<Record>(line),
            Ok(Record::FailedBack(FailedBackRecord { already: false, .. }))
        ));
        let line = r#"{"type":"pending-token","remote":"s","name":"n","expires_at":"2026-11-28T20:50:00+00:00","operation":"o"}"#;
        let Ok(Record::PendingToken(token)) = serde_json::from_str::<Record>(line) else {
            panic!("{line}")
        };
        assert_eq!(token.expires_at, Some(at(1_795_899_000)));
    }

    #[test]
    fn multi_line_messages_are_folded() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
