//! Every `user.incus-standby.*` key the tools keep in an instance's configuration, and the
//! typed values behind them. No other file names a key: they read [`ReplicaMarkers`] and
//! [`PrimaryMarkers`] from a configuration and write them back as a [`ConfigPatch`].
//!
//! | key | on | value (as written) | written by | read by |
//! |---|---|---|---|---|
//! | `source` | replica, archive point | [`SourceId`]: `FP12/PROJECT/NAME` | replication apply, failback | plan, status, pairs, failover |
//! | `source-uuid` | replica, archive point | the source's `volatile.uuid` | replication apply | plan |
//! | `source-settings` | replica | JSON: the source's own autostart and schedule | replication apply | promote, failback |
//! | `restored` | replica | the snapshot it was last restored to | replication apply, `--at` | plan, status, promote |
//! | `synced-at` | replica | RFC 3339: its last transfer completed | replication apply | plan, status, emergency |
//! | `promoted` | promoted replica | [`Promoted`]: `AT KIND from SOURCE` | promote | plan, status, fence, failback |
//! | `fenced` | fenced primary | [`Fenced`]: `AT for STANDBY` | fence | push, promote, status |
//! | `autostart-before` | fenced primary | its `boot.autostart` before (`unset`) | fence | promote, push |
//! | `replaced` | moved-aside copy | [`Replaced`]: `AT REASON` | `--replace`, `--at`, failback | pairs |
//! | `archive-of` | archive point | `PROJECT/INSTANCE/SNAPSHOT` | archive | archive, `--at` |
//! | `archive-time` | archive point | RFC 3339: that snapshot's creation time | archive | archive, `--at` |
//! | `lease` | replica | `HOLDER UNTIL` ([`crate::replication::lease`]) | lease | lease |
//!
//! Every time is written as RFC 3339 in UTC to the second. Values written by earlier releases
//! (the same keys, with a `Debug` print as a `replaced` reason) are read as well: a replica,
//! fence or promotion made by them is recognised.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

/// The keys, for the one place that reads and writes them (and tests that check a server).
pub mod key {
    pub const SOURCE: &str = "user.incus-standby.source";
    pub const SOURCE_UUID: &str = "user.incus-standby.source-uuid";
    pub const SOURCE_SETTINGS: &str = "user.incus-standby.source-settings";
    pub const RESTORED: &str = "user.incus-standby.restored";
    pub const SYNCED_AT: &str = "user.incus-standby.synced-at";
    pub const PROMOTED: &str = "user.incus-standby.promoted";
    pub const FENCED: &str = "user.incus-standby.fenced";
    pub const AUTOSTART_BEFORE: &str = "user.incus-standby.autostart-before";
    pub const REPLACED: &str = "user.incus-standby.replaced";
    pub const ARCHIVE_OF: &str = "user.incus-standby.archive-of";
    pub const ARCHIVE_TIME: &str = "user.incus-standby.archive-time";
    pub const LEASE: &str = "user.incus-standby.lease";
    pub const DRILL: &str = "user.incus-standby.drill";
    /// On a replica of a clustered primary: every member's address, so that an emergency
    /// can ask the others when the remote's own address is the dead member.
    pub const SOURCE_MEMBERS: &str = "user.incus-standby.source-members";
    /// On a drill's clone (instance and volumes): the replica it was made from.
    pub const DRILL_OF: &str = "user.incus-standby.drill-of";
    /// An instance's identity in Incus (not ours): kept by refresh and restore, new on a
    /// plain copy.
    pub const UUID: &str = "volatile.uuid";
}

/// The value of `autostart-before` when `boot.autostart` was unset (an empty value would
/// delete the key).
const AUTOSTART_UNSET: &str = "unset";

/// The configuration keys that make a replica inert.
pub const AUTOSTART: &str = "boot.autostart";
const SCHEDULE: &str = "snapshots.schedule";
const SCHEDULE_STOPPED: &str = "snapshots.schedule.stopped";

/// A time as every marker writes it.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Which instance a replica copies: `FP12/PROJECT/NAME` (the first 12 characters of the
/// source server's certificate fingerprint, the source's project and name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(String);

impl SourceId {
    pub fn new(fingerprint: &str, project: &str, instance: &str) -> Self {
        let short = fingerprint.get(..12).unwrap_or(fingerprint);
        SourceId(format!("{short}/{project}/{instance}"))
    }

    /// A marker as found on a server (kept whole, even when it does not have three parts).
    pub fn from_marker(text: &str) -> Self {
        SourceId(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(FP12, PROJECT, NAME)`, when the marker has that shape.
    pub fn parts(&self) -> Option<(&str, &str, &str)> {
        let mut parts = self.0.splitn(3, '/');
        Some((parts.next()?, parts.next()?, parts.next()?))
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a replica was promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionKind {
    /// The primary copy was fenced, stopped and synced first: nothing lost.
    Planned,
    /// The primary was gone: started from the newest snapshot the replica held.
    Emergency,
}

impl PromotionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionKind::Planned => "planned",
            PromotionKind::Emergency => "emergency",
        }
    }
}

/// `promoted`: the replica was promoted, and runs the service. Never refreshed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// `None` for a value that does not start with a time (it still counts as promoted).
    pub at: Option<DateTime<Utc>>,
    pub kind: PromotionKind,
    pub from: Option<SourceId>,
}

impl Promoted {
    /// `AT KIND from SOURCE`.
    fn text(&self) -> String {
        format!(
            "{} {} from {}",
            self.at.map(timestamp).unwrap_or_default(),
            self.kind.as_str(),
            self.from.as_ref().map(SourceId::as_str).unwrap_or_default()
        )
    }

    fn parse(text: &str) -> Self {
        let mut words = text.splitn(2, ' ');
        let at = words.next().and_then(parse_time);
        let rest = words.next().unwrap_or_default();
        let (kind, from) = rest.split_once(" from ").unwrap_or((rest, ""));
        Promoted {
            at,
            kind: if kind.trim() == "emergency" {
                PromotionKind::Emergency
            } else {
                PromotionKind::Planned
            },
            from: Some(from.trim())
                .filter(|f| !f.is_empty())
                .map(SourceId::from_marker),
        }
    }
}

/// `fenced` and `autostart-before`: a primary copy stopped, autostart off, for a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub at: Option<DateTime<Utc>>,
    /// The standby remote it was fenced for.
    pub standby: String,
    /// Its own `boot.autostart` before the fencing (`None`: unset).
    pub autostart_before: Option<String>,
}

impl Fenced {
    fn text(&self) -> String {
        format!(
            "{} for {}",
            self.at.map(timestamp).unwrap_or_default(),
            self.standby
        )
    }

    fn parse(text: &str, autostart_before: Option<&String>) -> Self {
        let (at, standby) = text.split_once(" for ").unwrap_or((text, ""));
        Fenced {
            at: parse_time(at.trim()),
            standby: standby.trim().to_string(),
            autostart_before: autostart_before
                .filter(|v| v.as_str() != AUTOSTART_UNSET && !v.is_empty())
                .cloned(),
        }
    }
}

impl fmt::Display for Fenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Why a copy was moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceReason {
    /// `--replace`: the replica's history could not be refreshed (the refusal's kind).
    Refused(String),
    /// `promote --at` put an archive point in its place.
    At(String),
    /// A failback kept the old primary copy aside.
    Failback { standby: String },
    /// Written by an earlier release, or by hand.
    Other(String),
}

/// `replaced`: a copy moved aside (renamed, kept); it stands for no instance any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub at: Option<DateTime<Utc>>,
    pub reason: ReplaceReason,
}

impl Replaced {
    pub fn now(reason: ReplaceReason) -> Self {
        Replaced {
            at: Some(Utc::now()),
            reason,
        }
    }

    /// The change that marks a copy moved aside (nothing else of it changes).
    pub fn to_patch(&self) -> ConfigPatch {
        let mut patch = ConfigPatch::default();
        patch.set(key::REPLACED, self.text());
        patch
    }

    fn text(&self) -> String {
        let reason = match &self.reason {
            ReplaceReason::Refused(kind) => format!("refused: {kind}"),
            ReplaceReason::At(point) => format!("replaced by --at {point}"),
            ReplaceReason::Failback { standby } => {
                format!("kept aside by a failback from {standby}")
            }
            ReplaceReason::Other(text) => text.clone(),
        };
        format!("{} {reason}", self.at.map(timestamp).unwrap_or_default())
    }

    fn parse(text: &str) -> Self {
        let (at, rest) = text.split_once(' ').unwrap_or((text, ""));
        let reason = if let Some(kind) = rest.strip_prefix("refused: ") {
            ReplaceReason::Refused(kind.to_string())
        } else if let Some(point) = rest.strip_prefix("replaced by --at ") {
            ReplaceReason::At(point.to_string())
        } else if let Some(standby) = rest.strip_prefix("kept aside by a failback from ") {
            ReplaceReason::Failback {
                standby: standby.to_string(),
            }
        } else {
            ReplaceReason::Other(rest.to_string())
        };
        Replaced {
            at: parse_time(at),
            reason,
        }
    }
}

/// `archive-of` and `archive-time`: an archive instance cloned from a replica snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOf {
    /// `PROJECT/INSTANCE/SNAPSHOT` it was cloned from.
    pub of: String,
    /// That snapshot's creation time.
    pub created_at: DateTime<Utc>,
}

impl ArchiveOf {
    pub fn new(project: &str, instance: &str, snapshot: &str, created_at: DateTime<Utc>) -> Self {
        ArchiveOf {
            of: format!("{project}/{instance}/{snapshot}"),
            created_at,
        }
    }

    /// The snapshot it was cloned from.
    pub fn snapshot(&self) -> &str {
        self.of.rsplit('/').next().unwrap_or(&self.of)
    }
}

/// The source's own values of the keys a replica overrides to be inert, so that a promotion
/// gives them back even when the primary is gone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSettings(BTreeMap<String, String>);

impl SourceSettings {
    /// Taken from a source's configuration. A source fenced by incus-failover has
    /// `boot.autostart=false` for the fencing; its own value is the one recorded before.
    pub fn of_source(config: &BTreeMap<String, String>) -> Self {
        let mut kept: BTreeMap<String, String> = inert_overrides()
            .keys()
            .filter_map(|key| config.get(key).map(|value| (key.clone(), value.clone())))
            .collect();
        if let Some(fenced) = PrimaryMarkers::from_config(config).fenced {
            match fenced.autostart_before {
                None => kept.remove(AUTOSTART),
                Some(before) => kept.insert(AUTOSTART.into(), before),
            };
        }
        SourceSettings(kept)
    }

    /// As written: a JSON object of the keys the source sets.
    pub fn text(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_string())
    }

    fn parse(text: &str) -> Self {
        SourceSettings(serde_json::from_str(text).unwrap_or_default())
    }

    /// The config changes that give an instance these settings in place of the inert ones (a
    /// key the source did not set is removed): what a promoted or failed-back instance runs
    /// with.
    pub fn as_changes(&self) -> BTreeMap<String, String> {
        inert_overrides()
            .into_keys()
            .map(|key| {
                let value = self.0.get(&key).cloned().unwrap_or_default();
                (key, value)
            })
            .collect()
    }
}

/// The keys that make a replica inert: no autostart, and no scheduled snapshots whatever its
/// profiles say. An empty value does not override a profile in Incus, so the schedule is
/// disabled through `snapshots.schedule.stopped=false`: Incus skips scheduled snapshots of a
/// stopped instance unless that key is true, and a replica is always stopped.
pub fn inert_overrides() -> BTreeMap<String, Option<String>> {
    BTreeMap::from([
        (AUTOSTART.to_string(), Some("false".to_string())),
        (SCHEDULE.to_string(), None),
        (SCHEDULE_STOPPED.to_string(), Some("false".to_string())),
    ])
}

/// True for a key that [`inert_overrides`] sets.
pub fn is_inert_key(key: &str) -> bool {
    matches!(key, AUTOSTART | SCHEDULE | SCHEDULE_STOPPED)
}

/// Which custom volume a replica volume copies: `FP12/PROJECT/volume/POOL/NAME`.
pub fn volume_source(fingerprint: &str, project: &str, pool: &str, name: &str) -> SourceId {
    let short = fingerprint.get(..12).unwrap_or(fingerprint);
    SourceId(format!("{short}/{project}/volume/{pool}/{name}"))
}

/// The volume keys a replica volume must not carry: its own schedule would take snapshots
/// of the standby's copy, its own expiry would delete them.
pub fn is_volume_schedule_key(key: &str) -> bool {
    matches!(key, "snapshots.schedule" | "snapshots.expiry")
}

/// `config` with the `volatile.*` keys of a volume's `existing` configuration: Incus's own
/// state of that volume (how its files are shifted), which a full write must keep.
pub fn with_volatile_of(
    mut config: BTreeMap<String, String>,
    existing: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    config.retain(|k, _| !k.starts_with("volatile."));
    config.extend(
        existing
            .iter()
            .filter(|(k, _)| k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    config
}

/// What the tools keep on a replica custom volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeMarkers {
    pub source: Option<SourceId>,
    /// The snapshot the volume was last restored to (the one matching its instance's).
    pub restored: Option<String>,
    /// When its last transfer completed; a marked volume without it is an unfinished copy.
    pub synced_at: Option<DateTime<Utc>>,
    /// The source's own schedule and expiry, which the replica does not carry: a promotion
    /// gives them back.
    pub source_settings: BTreeMap<String, String>,
}

impl VolumeMarkers {
    pub fn from_config(config: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| config.get(key).filter(|v| !v.is_empty());
        VolumeMarkers {
            source: get(key::SOURCE).map(|s| SourceId::from_marker(s)),
            restored: get(key::RESTORED).cloned(),
            synced_at: get(key::SYNCED_AT)
                .map(|t| parse_time(t).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)),
            source_settings: get(key::SOURCE_SETTINGS)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
        }
    }

    /// A volume's own configuration from a replica volume's: no marker, its source's schedule
    /// and expiry back (what a promoted or failed-back volume runs with).
    pub fn own_config(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let settings = VolumeMarkers::from_config(config).source_settings;
        let mut own: BTreeMap<String, String> = config
            .iter()
            .filter(|(k, _)| !k.starts_with("user.incus-standby."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        own.extend(settings);
        own
    }

    /// The replica volume's configuration: the source's, without its schedule and expiry
    /// and volatile keys, with these markers.
    pub fn replica_config(&self, source: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let own = VolumeMarkers::own_config(source);
        let settings: BTreeMap<String, String> = own
            .iter()
            .filter(|(k, _)| is_volume_schedule_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut config: BTreeMap<String, String> = own
            .into_iter()
            .filter(|(k, _)| !is_volume_schedule_key(k) && !k.starts_with("volatile."))
            .collect();
        if !settings.is_empty() {
            config.insert(
                key::SOURCE_SETTINGS.to_string(),
                serde_json::to_string(&settings).unwrap_or_default(),
            );
        }
        if let Some(source) = &self.source {
            config.insert(key::SOURCE.to_string(), source.to_string());
        }
        if let Some(restored) = &self.restored {
            config.insert(key::RESTORED.to_string(), restored.clone());
        }
        if let Some(at) = self.synced_at {
            config.insert(key::SYNCED_AT.to_string(), timestamp(at));
        }
        config
    }
}

/// What the tools keep on a replica (and on an archive point or a moved-aside copy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaMarkers {
    pub source: Option<SourceId>,
    pub source_uuid: Option<String>,
    pub source_settings: Option<SourceSettings>,
    /// The snapshot its root filesystem was last restored to.
    pub restored: Option<String>,
    /// When its last transfer completed. A replica of ours without it comes from a first copy
    /// that never finished. A value that is not a time counts as synced long ago.
    pub synced_at: Option<DateTime<Utc>>,
    pub promoted: Option<Promoted>,
    pub replaced: Option<Replaced>,
    pub archive: Option<ArchiveOf>,
    /// The primary is a cluster: its members' addresses (empty: a single server).
    pub source_members: Vec<String>,
}

impl ReplicaMarkers {
    pub fn from_config(config: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| config.get(key).filter(|v| !v.is_empty());
        ReplicaMarkers {
            source: get(key::SOURCE).map(|s| SourceId::from_marker(s)),
            source_uuid: get(key::SOURCE_UUID).cloned(),
            source_settings: get(key::SOURCE_SETTINGS).map(|s| SourceSettings::parse(s)),
            restored: get(key::RESTORED).cloned(),
            synced_at: get(key::SYNCED_AT)
                .map(|t| parse_time(t).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)),
            promoted: get(key::PROMOTED).map(|p| Promoted::parse(p)),
            replaced: get(key::REPLACED).map(|r| Replaced::parse(r)),
            archive: match (get(key::ARCHIVE_OF), get(key::ARCHIVE_TIME)) {
                (Some(of), Some(at)) => parse_time(at).map(|created_at| ArchiveOf {
                    of: of.clone(),
                    created_at,
                }),
                _ => None,
            },
            source_members: get(key::SOURCE_MEMBERS)
                .map(|m| m.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// The changes that make a configuration hold exactly these markers: every key it has set,
    /// every other replica key and every primary key removed (a restore brings back the
    /// markers a snapshot was taken with). The lease is not touched.
    pub fn to_patch(&self) -> ConfigPatch {
        let mut patch = ConfigPatch::default();
        patch.put(key::SOURCE, self.source.as_ref().map(|s| s.0.clone()));
        patch.put(key::SOURCE_UUID, self.source_uuid.clone());
        patch.put(
            key::SOURCE_SETTINGS,
            self.source_settings.as_ref().map(SourceSettings::text),
        );
        patch.put(key::RESTORED, self.restored.clone());
        patch.put(key::SYNCED_AT, self.synced_at.map(timestamp));
        patch.put(key::PROMOTED, self.promoted.as_ref().map(Promoted::text));
        patch.put(key::REPLACED, self.replaced.as_ref().map(Replaced::text));
        patch.put(key::ARCHIVE_OF, self.archive.as_ref().map(|a| a.of.clone()));
        patch.put(
            key::ARCHIVE_TIME,
            self.archive.as_ref().map(|a| timestamp(a.created_at)),
        );
        patch.put(
            key::SOURCE_MEMBERS,
            (!self.source_members.is_empty()).then(|| self.source_members.join(" ")),
        );
        patch.merge(PrimaryMarkers::default().to_patch());
        patch
    }

    /// The changes that take a configuration holding these markers to `wanted`: only the
    /// keys whose value differs (none: no write at all).
    pub fn changes_to(&self, wanted: &ReplicaMarkers) -> ConfigPatch {
        let now = self.to_patch();
        ConfigPatch(
            wanted
                .to_patch()
                .0
                .into_iter()
                .filter(|(key, value)| now.0.get(key) != Some(value))
                .collect(),
        )
    }

    /// The markers a replica is sent with: not yet restored nor synced (a first copy cut
    /// during the transfer is known unfinished). A refresh keeps the replica's own until the
    /// restore, which writes them all again.
    pub fn to_transfer_patch(&self) -> ConfigPatch {
        let mut patch = self.to_patch();
        patch.0.remove(key::RESTORED);
        patch.0.remove(key::SYNCED_AT);
        patch
    }
}

/// The last drill of a replica: a clone of it was started on the standby (or not).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Drill {
    pub at: DateTime<Utc>,
    pub ok: bool,
    /// Seconds from the start request to running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Drill {
    /// Read from a replica's configuration. Kept apart from [`ReplicaMarkers`]: incus-push
    /// carries it across the restore that would drop it, nothing else writes it.
    pub fn of_config(config: &BTreeMap<String, String>) -> Option<Drill> {
        serde_json::from_str(config.get(key::DRILL)?).ok()
    }

    pub fn to_patch(&self) -> ConfigPatch {
        let mut patch = ConfigPatch::default();
        patch.put(key::DRILL, serde_json::to_string(self).ok());
        patch
    }

    /// `incus-push`'s write after a restore keeps the drill the replica had.
    pub fn kept(config: &BTreeMap<String, String>) -> ConfigPatch {
        let mut patch = ConfigPatch::default();
        if let Some(text) = config.get(key::DRILL).filter(|v| !v.is_empty()) {
            patch.set(key::DRILL, text.clone());
        }
        patch
    }
}

/// What the tools keep on a primary instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrimaryMarkers {
    pub fenced: Option<Fenced>,
}

impl PrimaryMarkers {
    pub fn from_config(config: &BTreeMap<String, String>) -> Self {
        PrimaryMarkers {
            fenced: config
                .get(key::FENCED)
                .filter(|v| !v.is_empty())
                .map(|f| Fenced::parse(f, config.get(key::AUTOSTART_BEFORE))),
        }
    }

    /// The changes that make a configuration hold exactly these markers.
    pub fn to_patch(&self) -> ConfigPatch {
        let mut patch = ConfigPatch::default();
        patch.put(key::FENCED, self.fenced.as_ref().map(Fenced::text));
        patch.put(
            key::AUTOSTART_BEFORE,
            self.fenced.as_ref().map(|f| {
                f.autostart_before
                    .clone()
                    .unwrap_or_else(|| AUTOSTART_UNSET.to_string())
            }),
        );
        patch
    }
}

/// Configuration changes: a value to set, or `None` to remove the key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigPatch(pub BTreeMap<String, Option<String>>);

impl ConfigPatch {
    pub fn put(&mut self, key: &str, value: Option<String>) {
        self.0.insert(key.to_string(), value);
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.put(key, Some(value.into()));
    }

    pub fn merge(&mut self, other: ConfigPatch) {
        self.0.extend(other.0);
    }

    /// The inert keys of a replica.
    pub fn inert() -> Self {
        ConfigPatch(inert_overrides())
    }

    /// As `PATCH /1.0/instances/NAME` takes it: an empty value removes a key.
    pub fn as_merge(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().unwrap_or_default()))
            .collect()
    }

    /// Applied to a whole configuration (for a `PUT`).
    pub fn apply_to(&self, config: &mut BTreeMap<String, String>) {
        for (key, value) in &self.0 {
            match value {
                Some(v) => config.insert(key.clone(), v.clone()),
                None => config.remove(key),
            };
        }
    }
}

/// The lease a replica's configuration holds, as written (`HOLDER UNTIL`).
pub fn lease(config: &BTreeMap<String, String>) -> Option<&str> {
    config
        .get(key::LEASE)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The change that writes (`Some`) or releases (`None`) a lease.
pub fn lease_patch(value: Option<String>) -> ConfigPatch {
    let mut patch = ConfigPatch::default();
    patch.put(key::LEASE, value);
    patch
}

/// True for a key the tools own (for comparisons that must leave the lease aside).
pub fn is_lease_key(key: &str) -> bool {
    key == key::LEASE
}

/// An instance's `volatile.uuid`.
pub fn instance_uuid(config: &BTreeMap<String, String>) -> Option<&String> {
    config.get(key::UUID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap_or_default()
    }

    /// Markers exactly as the release before this module wrote them.
    #[test]
    fn markers_written_by_the_previous_release_are_recognised() {
        let replica = config(&[
            ("user.incus-standby.source", "0123456789ab/default/web"),
            ("user.incus-standby.source-uuid", "u-1"),
            (
                "user.incus-standby.source-settings",
                r#"{"boot.autostart":"true"}"#,
            ),
            ("user.incus-standby.restored", "snap2"),
            ("user.incus-standby.synced-at", "2026-11-30T10:00:00Z"),
            (
                "user.incus-standby.promoted",
                "2026-12-01T08:00:00Z emergency from 0123456789ab/default/web",
            ),
            (
                "user.incus-standby.replaced",
                r#"2026-11-29T07:00:00Z (IdentityChanged { recorded: "a", now: "b" })"#,
            ),
            (
                "user.incus-standby.lease",
                "host:12:incus-push 2026-12-01T09:00:00Z",
            ),
        ]);
        let m = ReplicaMarkers::from_config(&replica);
        assert_eq!(
            m.source,
            Some(SourceId::new("0123456789abcdef", "default", "web"))
        );
        assert_eq!(m.source_uuid.as_deref(), Some("u-1"));
        assert_eq!(m.restored.as_deref(), Some("snap2"));
        assert_eq!(m.synced_at, Some(at("2026-11-30T10:00:00Z")));
        assert_eq!(
            m.promoted,
            Some(Promoted {
                at: Some(at("2026-12-01T08:00:00Z")),
                kind: PromotionKind::Emergency,
                from: Some(SourceId::from_marker("0123456789ab/default/web")),
            })
        );
        let replaced = m
            .replaced
            .clone()
            .unwrap_or_else(|| Replaced::now(ReplaceReason::Other(String::new())));
        assert_eq!(replaced.at, Some(at("2026-11-29T07:00:00Z")));
        assert!(matches!(replaced.reason, ReplaceReason::Other(_)));
        assert_eq!(
            m.source_settings
                .map(|s| s.as_changes()["boot.autostart"].clone()),
            Some("true".to_string())
        );
        assert_eq!(
            lease(&replica),
            Some("host:12:incus-push 2026-12-01T09:00:00Z")
        );
        // The older wordings of `replaced`.
        for (text, reason) in [
            (
                "2026-11-29T07:00:00Z replaced by --at s3",
                ReplaceReason::At("s3".into()),
            ),
            (
                "2026-11-29T07:00:00Z kept aside by a failback from standby",
                ReplaceReason::Failback {
                    standby: "standby".into(),
                },
            ),
        ] {
            assert_eq!(Replaced::parse(text).reason, reason);
        }
        let planned = Promoted::parse("2026-12-01T08:00:00Z planned from fp/p/i");
        assert_eq!(planned.kind, PromotionKind::Planned);

        let primary = config(&[
            (
                "user.incus-standby.fenced",
                "2026-12-01T07:59:00Z for standby",
            ),
            ("user.incus-standby.autostart-before", "unset"),
            ("boot.autostart", "false"),
        ]);
        let fenced = PrimaryMarkers::from_config(&primary).fenced;
        assert_eq!(
            fenced,
            Some(Fenced {
                at: Some(at("2026-12-01T07:59:00Z")),
                standby: "standby".into(),
                autostart_before: None,
            })
        );
        let archive = config(&[
            ("user.incus-standby.archive-of", "default/web/snap1"),
            ("user.incus-standby.archive-time", "2026-11-28T00:00:00Z"),
        ]);
        let a = ReplicaMarkers::from_config(&archive).archive;
        assert_eq!(a.as_ref().map(ArchiveOf::snapshot), Some("snap1"));
    }

    #[test]
    fn markers_round_trip_through_their_patch() {
        let markers = ReplicaMarkers {
            source: Some(SourceId::new("fedcba9876543210", "prod", "db")),
            source_uuid: Some("u".into()),
            source_settings: Some(SourceSettings::of_source(&config(&[(
                "snapshots.schedule",
                "@daily",
            )]))),
            restored: Some("s1".into()),
            synced_at: Some(at("2026-12-01T00:00:00Z")),
            promoted: Some(Promoted {
                at: Some(at("2026-12-02T00:00:00Z")),
                kind: PromotionKind::Planned,
                from: Some(SourceId::from_marker("fedcba987654/prod/db")),
            }),
            replaced: Some(Replaced {
                at: Some(at("2026-12-03T00:00:00Z")),
                reason: ReplaceReason::Refused("nothing-in-common".into()),
            }),
            archive: Some(ArchiveOf::new(
                "prod",
                "db",
                "s0",
                at("2026-11-01T00:00:00Z"),
            )),
            source_members: vec![
                "https://10.0.0.1:8443".into(),
                "https://10.0.0.2:8443".into(),
            ],
        };
        let mut written = BTreeMap::new();
        markers.to_patch().apply_to(&mut written);
        assert_eq!(ReplicaMarkers::from_config(&written), markers);
        // Primary markers are cleared from a replica.
        assert_eq!(markers.to_patch().0[key::FENCED], None);

        let fenced = PrimaryMarkers {
            fenced: Some(Fenced {
                at: Some(at("2026-12-01T00:00:00Z")),
                standby: "backup".into(),
                autostart_before: Some("true".into()),
            }),
        };
        let mut primary = BTreeMap::new();
        fenced.to_patch().apply_to(&mut primary);
        assert_eq!(PrimaryMarkers::from_config(&primary), fenced);
        let mut merged = BTreeMap::from([(key::FENCED.to_string(), "x".to_string())]);
        PrimaryMarkers::default().to_patch().apply_to(&mut merged);
        assert!(merged.is_empty());
    }

    #[test]
    fn only_markers_that_differ_are_written() {
        let now = ReplicaMarkers {
            source: Some(SourceId::from_marker("fp/p/i")),
            source_uuid: Some("u".into()),
            ..ReplicaMarkers::default()
        };
        assert!(now.changes_to(&now).0.is_empty());
        let wanted = ReplicaMarkers {
            source_uuid: Some("v".into()),
            ..now.clone()
        };
        assert_eq!(
            now.changes_to(&wanted).0,
            BTreeMap::from([(key::SOURCE_UUID.to_string(), Some("v".to_string()))])
        );
    }

    #[test]
    fn source_settings_keep_the_fenced_sources_own_autostart() {
        let fenced = config(&[
            ("boot.autostart", "false"),
            (key::FENCED, "2026-12-01T00:00:00Z for s"),
            (key::AUTOSTART_BEFORE, "true"),
            ("snapshots.schedule", "@daily"),
            ("user.other", "x"),
        ]);
        assert_eq!(
            SourceSettings::of_source(&fenced).text(),
            r#"{"boot.autostart":"true","snapshots.schedule":"@daily"}"#
        );
        let unset = config(&[
            ("boot.autostart", "false"),
            (key::FENCED, "2026-12-01T00:00:00Z for s"),
            (key::AUTOSTART_BEFORE, "unset"),
        ]);
        assert_eq!(SourceSettings::of_source(&unset).text(), "{}");
    }

    #[test]
    fn own_settings_give_back_what_the_source_had_and_unset_the_rest() {
        let settings = SourceSettings::parse(r#"{"boot.autostart":"true"}"#);
        let changes = settings.as_changes();
        assert_eq!(changes["boot.autostart"], "true");
        assert_eq!(changes["snapshots.schedule"], "");
        assert_eq!(changes["snapshots.schedule.stopped"], "");
    }

    #[test]
    fn inert_config_has_no_autostart_and_no_schedule() {
        let o = inert_overrides();
        assert_eq!(o["boot.autostart"].as_deref(), Some("false"));
        assert_eq!(o["snapshots.schedule"], None);
        assert_eq!(o["snapshots.schedule.stopped"].as_deref(), Some("false"));
        assert!(o.keys().all(|k| is_inert_key(k)));
    }

    #[test]
    fn source_ids_are_shortened_and_split() {
        let id = SourceId::new("0123456789abcdef", "default", "web");
        assert_eq!(id.as_str(), "0123456789ab/default/web");
        assert_eq!(id.parts(), Some(("0123456789ab", "default", "web")));
        assert_eq!(SourceId::new("abc", "p", "i").as_str(), "abc/p/i");
    }
}
