//! Whether a replica could take over: one pure check, shared by `status` (which shows every
//! problem) and promotion (which refuses on the ones that block it, before anything changes).
//!
//! "Ready" means "can start there": besides the replica's own state (ours, finished, inert,
//! stopped), every device and limit of the replica is checked against what the standby has,
//! read once per run into [`StandbyFacts`]:
//!
//! - a disk's storage pool exists;
//! - a custom volume a disk attaches exists in the replica's project, and holds the snapshot
//!   the replica is restored to (instance and volumes show the same moment);
//! - a NIC's `network` is a managed network; a NIC's `parent` (macvlan, physical, …) is one
//!   of the host's interfaces or networks;
//! - the replica's profiles exist in its project;
//! - `limits.cpu` pins no CPU the host lacks and asks no more CPUs than it has;
//!   `limits.memory` is not more than its memory.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::instances::Instance;
use crate::api::resources::Host;
use crate::api::snapshots::Snapshot;
use crate::api::volumes::{self, VolumeRef};
use crate::api::{cluster, networks, profiles, projects, resources};
use crate::client::Client;
use crate::markers::{ReplicaMarkers, inert_overrides};

/// One reason a replica is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Promoted: it is the instance now.
    Promoted,
    Running,
    /// No source marker: not made by incus-push.
    NotOurs,
    /// Its first copy never finished.
    Unfinished,
    /// An inert key is not at its inert value.
    NotInert {
        key: String,
        value: String,
    },
    NoSnapshot,
    NotRestoredToNewest {
        restored: String,
        newest: String,
    },
    /// A NIC's network (`key` = `network`: a managed network) or parent interface (`key` =
    /// `parent`) the standby lacks.
    MissingNetwork {
        device: String,
        key: String,
        network: String,
    },
    /// A profile of the replica its project on the standby lacks.
    MissingProfile {
        profile: String,
    },
    /// A disk on a storage pool the standby lacks.
    MissingPool {
        device: String,
        pool: String,
    },
    /// A disk attaching a custom volume the standby lacks.
    MissingVolume {
        device: String,
        volume: VolumeRef,
    },
    /// A custom volume without the snapshot the replica is restored to.
    VolumeLacksSnapshot {
        device: String,
        volume: VolumeRef,
        snapshot: String,
    },
    /// `limits.cpu` pins CPUs the host lacks, or asks more than it has.
    CpuLimit {
        limit: String,
        host_cpus: usize,
    },
    /// `limits.memory` is more than the host's memory (bytes).
    MemoryLimit {
        limit: String,
        host_memory: u64,
    },
}

impl Problem {
    /// A planned or emergency promotion refuses such a replica before anything changes.
    pub fn blocks_promotion(&self) -> bool {
        matches!(
            self,
            Problem::Running
                | Problem::NotOurs
                | Problem::Unfinished
                | Problem::MissingNetwork { .. }
                | Problem::MissingProfile { .. }
                | Problem::MissingPool { .. }
                | Problem::MissingVolume { .. }
                | Problem::VolumeLacksSnapshot { .. }
                | Problem::CpuLimit { .. }
                | Problem::MemoryLimit { .. }
        )
    }

    /// A problem the next incus-push may fix.
    pub fn fixed_by_a_push(&self) -> bool {
        matches!(
            self,
            Problem::Unfinished | Problem::NoSnapshot | Problem::NotRestoredToNewest { .. }
        )
    }

    /// As a promotion's refusal says it: what is missing and what to do.
    pub fn for_promotion(&self) -> String {
        match self {
            Problem::Running => "it is running".to_string(),
            Problem::NotOurs => "it was not made by incus-push".to_string(),
            Problem::Unfinished => "its first copy never finished".to_string(),
            Problem::NoSnapshot => "it holds no snapshot".to_string(),
            Problem::MissingNetwork {
                device,
                key,
                network,
            } if key == "network" => format!(
                "NIC {device} uses the network {network}, which the standby lacks: create it there (incus network create), or change the NIC"
            ),
            Problem::MissingNetwork {
                device, network, ..
            } => format!(
                "NIC {device}'s parent interface {network} does not exist on the standby: create it there, or give the NIC a parent the standby has"
            ),
            Problem::MissingProfile { profile } => format!(
                "its profile {profile} does not exist in its project on the standby: copy it there (incus-push --sync-profiles)"
            ),
            Problem::MissingPool { device, pool } => format!(
                "disk {device} is on the storage pool {pool}, which the standby lacks: create it there"
            ),
            Problem::MissingVolume { device, volume } => format!(
                "disk {device} attaches the custom volume {volume}, which the standby lacks: copy it there"
            ),
            Problem::VolumeLacksSnapshot {
                device,
                volume,
                snapshot,
            } => format!(
                "disk {device}'s custom volume {volume} on the standby lacks the snapshot {snapshot} the replica is at: refresh the volume there"
            ),
            Problem::CpuLimit { limit, host_cpus } => format!(
                "limits.cpu {limit} asks for CPUs the standby lacks (it has {host_cpus}): lower it on the instance or its profile, then push again"
            ),
            Problem::MemoryLimit { limit, host_memory } => format!(
                "limits.memory {limit} is more than the standby's memory ({}): lower it on the instance or its profile, then push again",
                bytes(*host_memory)
            ),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Promoted => f.write_str("promoted: it is the instance now"),
            Problem::Running => f.write_str("the replica is running"),
            Problem::NotOurs => f.write_str("not made by incus-push (no source marker)"),
            Problem::Unfinished => f.write_str("its first copy never finished"),
            Problem::NotInert { key, value } => write!(f, "not inert: {key} is not \"{value}\""),
            Problem::NoSnapshot => f.write_str("the replica has no snapshot"),
            Problem::NotRestoredToNewest { restored, newest } => write!(
                f,
                "restored to {restored}, not to its newest snapshot {newest}"
            ),
            Problem::MissingNetwork {
                device,
                key,
                network,
            } => {
                let what = if key == "network" {
                    "managed network"
                } else {
                    "parent interface"
                };
                write!(
                    f,
                    "NIC {device}: {what} {network} does not exist on the standby"
                )
            }
            Problem::MissingProfile { profile } => {
                write!(f, "profile {profile} does not exist on the standby")
            }
            Problem::MissingPool { device, pool } => write!(
                f,
                "disk {device}: storage pool {pool} does not exist on the standby"
            ),
            Problem::MissingVolume { device, volume } => write!(
                f,
                "disk {device}: custom volume {volume} does not exist on the standby"
            ),
            Problem::VolumeLacksSnapshot {
                device,
                volume,
                snapshot,
            } => write!(
                f,
                "disk {device}: custom volume {volume} lacks the snapshot {snapshot} the replica is at"
            ),
            Problem::CpuLimit { limit, host_cpus } => write!(
                f,
                "limits.cpu {limit} asks for CPUs the standby lacks (it has {host_cpus})"
            ),
            Problem::MemoryLimit { limit, host_memory } => write!(
                f,
                "limits.memory {limit} is more than the standby's memory ({})",
                bytes(*host_memory)
            ),
        }
    }
}

/// What the standby has that a replica needs to start there: read once per run
/// ([`StandbyFacts::read`]), checked by the pure [`problems`] and [`dependencies`].
#[derive(Debug, Clone, Default)]
pub struct StandbyFacts {
    /// Managed networks (what a NIC's `network` names).
    pub managed_networks: BTreeSet<String>,
    /// Every name `GET /1.0/networks` lists, managed networks and the host's interfaces
    /// (what a NIC's `parent` names).
    pub interfaces: BTreeSet<String>,
    pub pools: BTreeSet<String>,
    /// Per replica project: its profiles and custom volumes. A project not here is not
    /// checked.
    pub projects: BTreeMap<String, ProjectFacts>,
    /// The host's CPUs and memory, per cluster member (`""` on a single server). A member not
    /// here (its resources could not be read) is not checked.
    pub hosts: BTreeMap<String, Host>,
}

/// What one project of the standby holds.
#[derive(Debug, Clone, Default)]
pub struct ProjectFacts {
    pub profiles: BTreeSet<String>,
    /// Its custom volumes, with their snapshots' names.
    pub volumes: BTreeMap<VolumeRef, BTreeSet<String>>,
}

impl StandbyFacts {
    /// Reads the standby's networks, storage pools and host resources, and the profiles and
    /// custom volumes of each project: a constant number of requests per run (one per
    /// storage pool and project for the volumes). A project the standby lacks, and host
    /// resources a restricted client cannot read, are left out (not checked).
    pub fn read<'a>(
        standby: &Client,
        replica_projects: impl IntoIterator<Item = &'a str>,
    ) -> crate::error::Result<StandbyFacts> {
        let mut facts = StandbyFacts::default();
        for network in networks::list(standby)? {
            if network.managed {
                facts.managed_networks.insert(network.name.clone());
            }
            facts.interfaces.insert(network.name);
        }
        facts.pools = projects::pool_names(standby)?.into_iter().collect();
        for project in replica_projects {
            if facts.projects.contains_key(project) {
                continue;
            }
            let client = standby.in_project(project);
            // A project the standby lacks holds no replica: nothing to check there.
            let profiles = match profiles::names(&client) {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            let listing = projects::pool_listing(&client)?;
            facts.projects.insert(
                project.to_string(),
                ProjectFacts {
                    profiles: profiles.into_iter().collect(),
                    volumes: listing
                        .volumes
                        .into_iter()
                        .map(|(volume, listed)| {
                            (volume, listed.snapshots.into_iter().map(|s| s.0).collect())
                        })
                        .collect(),
                },
            );
        }
        let members = cluster::membership(standby)?.members;
        if members.is_empty() {
            if let Ok(host) = resources::host(standby, None) {
                facts.hosts.insert(String::new(), host);
            }
        } else {
            for member in members {
                if let Ok(host) = resources::host(standby, Some(&member)) {
                    facts.hosts.insert(member, host);
                }
            }
        }
        Ok(facts)
    }
}

/// Every problem of `replica` (with its snapshots, oldest first) against the standby
/// (`None`: its devices and limits are not checked).
pub fn problems(
    replica: &Instance,
    snapshots: &[Snapshot],
    standby: Option<&StandbyFacts>,
) -> Vec<Problem> {
    let config = &replica.config;
    let markers = ReplicaMarkers::from_config(config);
    let mut problems = Vec::new();
    if markers.promoted.is_some() {
        problems.push(Problem::Promoted);
    } else {
        if replica.is_running() {
            problems.push(Problem::Running);
        }
        if markers.source.is_none() {
            problems.push(Problem::NotOurs);
        } else if markers.synced_at.is_none() {
            problems.push(Problem::Unfinished);
        }
        for (key, value) in inert_overrides() {
            let value = value.unwrap_or_default();
            if config.get(&key).cloned().unwrap_or_default() != value {
                problems.push(Problem::NotInert { key, value });
            }
        }
        match (snapshots.last(), &markers.restored) {
            (None, _) => problems.push(Problem::NoSnapshot),
            (Some(newest), Some(restored)) if *restored != newest.name => {
                problems.push(Problem::NotRestoredToNewest {
                    restored: restored.clone(),
                    newest: newest.name.clone(),
                });
            }
            _ => {}
        }
    }
    if let Some(standby) = standby {
        problems.extend(dependencies(replica, standby, markers.restored.as_deref()));
    }
    problems
}

/// What `replica` needs that the standby lacks: its profiles, and each device (expanded, in
/// name order) and limit. `point` is the snapshot the replica starts from (its attached
/// custom volumes must hold a snapshot of that name; `None`: not checked).
pub fn dependencies(
    replica: &Instance,
    standby: &StandbyFacts,
    point: Option<&str>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let project_name = if replica.project.is_empty() {
        "default"
    } else {
        replica.project.as_str()
    };
    let project = standby.projects.get(project_name);
    if let Some(project) = project {
        for profile in &replica.profiles {
            if !project.profiles.contains(profile) {
                problems.push(Problem::MissingProfile {
                    profile: profile.clone(),
                });
            }
        }
    }
    let attached: BTreeMap<String, VolumeRef> = volumes::attached(&replica.expanded_devices)
        .into_iter()
        .map(|a| (a.device, a.volume))
        .collect();
    for (device, options) in &replica.expanded_devices {
        match options.get("type").map(String::as_str) {
            Some("nic") => {
                if let Some(network) = options.get("network").filter(|n| !n.is_empty()) {
                    if !standby.managed_networks.contains(network) {
                        problems.push(Problem::MissingNetwork {
                            device: device.clone(),
                            key: "network".to_string(),
                            network: network.clone(),
                        });
                    }
                } else if let Some(parent) = options.get("parent").filter(|p| !p.is_empty())
                    && !standby.interfaces.contains(parent)
                {
                    problems.push(Problem::MissingNetwork {
                        device: device.clone(),
                        key: "parent".to_string(),
                        network: parent.clone(),
                    });
                }
            }
            Some("disk") => {
                if let Some(pool) = options.get("pool").filter(|p| !p.is_empty())
                    && !standby.pools.contains(pool)
                {
                    problems.push(Problem::MissingPool {
                        device: device.clone(),
                        pool: pool.clone(),
                    });
                    continue;
                }
                let (Some(volume), Some(project)) = (attached.get(device), project) else {
                    continue;
                };
                match project.volumes.get(volume) {
                    None => problems.push(Problem::MissingVolume {
                        device: device.clone(),
                        volume: volume.clone(),
                    }),
                    Some(snapshots) => {
                        if let Some(point) = point
                            && !snapshots.contains(point)
                        {
                            problems.push(Problem::VolumeLacksSnapshot {
                                device: device.clone(),
                                volume: volume.clone(),
                                snapshot: point.to_string(),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(host) = standby.hosts.get(replica.member().unwrap_or_default()) {
        problems.extend(limits(&replica.expanded_config, host));
    }
    problems
}

/// The limits of `config` (expanded) that `host` cannot meet.
fn limits(config: &BTreeMap<String, String>, host: &Host) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(limit) = config.get("limits.cpu").filter(|l| !l.is_empty()) {
        let unmet = match parse_cpus(limit) {
            Some(Cpus::Count(n)) => n > host.cpus.len() as u64,
            Some(Cpus::Pinned(ids)) => !ids.is_subset(&host.cpus),
            None => false,
        };
        if unmet {
            problems.push(Problem::CpuLimit {
                limit: limit.clone(),
                host_cpus: host.cpus.len(),
            });
        }
    }
    if let Some(limit) = config.get("limits.memory").filter(|l| !l.is_empty())
        && let Some(wanted) = parse_bytes(limit)
        && host.memory > 0
        && wanted > host.memory
    {
        problems.push(Problem::MemoryLimit {
            limit: limit.clone(),
            host_memory: host.memory,
        });
    }
    problems
}

/// `limits.cpu` as Incus reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cpus {
    /// A number: that many CPUs, wherever.
    Count(u64),
    /// A set (`0-3,7`): pinned to those CPU ids.
    Pinned(BTreeSet<u64>),
}

/// `None` for what Incus would not accept (not checked here).
fn parse_cpus(text: &str) -> Option<Cpus> {
    let text = text.trim();
    if let Ok(n) = text.parse() {
        return Some(Cpus::Count(n));
    }
    let mut ids = BTreeSet::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u64, u64) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
                if from > to || to - from > 65_536 {
                    return None;
                }
                ids.extend(from..=to);
            }
            None => {
                ids.insert(part.parse().ok()?);
            }
        }
    }
    Some(Cpus::Pinned(ids))
}

/// A byte size as Incus writes it (`512MiB`, `2GB`, `1073741824`); `None` for a percentage or
/// what it would not accept.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        "EB" => 1_000_000_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        "EiB" => 1 << 60,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `24.0 GiB`.
fn bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / GIB)
    } else {
        format!("{:.0} MiB", n as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::{ReplicaMarkers, SourceId};
    use chrono::Utc;

    fn device(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A finished, inert, stopped replica in project `default`, restored to `s1`, with a
    /// root disk on `default`, a NIC on the managed network `lan` and profile `default`.
    fn replica() -> Instance {
        let mut config = BTreeMap::new();
        ReplicaMarkers {
            source: Some(SourceId::from_marker("fp/default/web")),
            synced_at: Some(Utc::now()),
            restored: Some("s1".into()),
            ..ReplicaMarkers::default()
        }
        .to_patch()
        .apply_to(&mut config);
        for (key, value) in inert_overrides() {
            if let Some(value) = value {
                config.insert(key, value);
            }
        }
        Instance {
            name: "web".into(),
            project: "default".into(),
            config,
            profiles: vec!["default".into()],
            expanded_devices: BTreeMap::from([
                (
                    "root".to_string(),
                    device(&[("type", "disk"), ("path", "/"), ("pool", "default")]),
                ),
                (
                    "eth0".to_string(),
                    device(&[("type", "nic"), ("network", "lan")]),
                ),
            ]),
            ..Instance::default()
        }
    }

    fn snapshots() -> Vec<Snapshot> {
        vec![Snapshot::listed("s1".into(), Utc::now())]
    }

    /// A standby with everything `replica()` needs, a 2-CPU host with 4 GiB, the volume
    /// `default/data` holding `s1`, and the host interface `eth9`.
    fn standby() -> StandbyFacts {
        StandbyFacts {
            managed_networks: BTreeSet::from(["lan".to_string()]),
            interfaces: BTreeSet::from(["lan".to_string(), "eth9".to_string()]),
            pools: BTreeSet::from(["default".to_string()]),
            projects: BTreeMap::from([(
                "default".to_string(),
                ProjectFacts {
                    profiles: BTreeSet::from(["default".to_string()]),
                    volumes: BTreeMap::from([(
                        VolumeRef::new("default", "data"),
                        BTreeSet::from(["s1".to_string()]),
                    )]),
                },
            )]),
            hosts: BTreeMap::from([(
                String::new(),
                Host {
                    cpus: BTreeSet::from([0, 1]),
                    memory: 4 << 30,
                },
            )]),
        }
    }

    fn with_device(mut r: Instance, name: &str, options: &[(&str, &str)]) -> Instance {
        r.expanded_devices.insert(name.into(), device(options));
        r
    }

    fn found(r: &Instance, standby: &StandbyFacts) -> Vec<Problem> {
        problems(r, &snapshots(), Some(standby))
    }

    #[test]
    fn a_replica_whose_dependencies_all_exist_is_ready() {
        let r = with_device(
            replica(),
            "data",
            &[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "data"),
                ("path", "/data"),
            ],
        );
        let r = with_device(
            r,
            "mv",
            &[("type", "nic"), ("nictype", "macvlan"), ("parent", "eth9")],
        );
        assert_eq!(found(&r, &standby()), vec![]);
    }

    #[test]
    fn a_nic_on_a_network_the_standby_lacks_blocks_the_promotion() {
        let mut s = standby();
        s.managed_networks.clear();
        let p = found(&replica(), &s);
        assert_eq!(
            p,
            vec![Problem::MissingNetwork {
                device: "eth0".into(),
                key: "network".into(),
                network: "lan".into()
            }]
        );
        assert!(p[0].blocks_promotion());
        assert!(
            p[0].to_string()
                .contains("managed network lan does not exist")
        );
        assert!(p[0].for_promotion().contains("NIC eth0"));
        // A host interface of that name is not a managed network.
        assert!(s.interfaces.contains("lan"));
    }

    #[test]
    fn a_parent_interface_the_standby_lacks_is_a_problem() {
        let r = with_device(
            replica(),
            "mv",
            &[
                ("type", "nic"),
                ("nictype", "macvlan"),
                ("parent", "enp9s0"),
            ],
        );
        let p = found(&r, &standby());
        assert_eq!(
            p,
            vec![Problem::MissingNetwork {
                device: "mv".into(),
                key: "parent".into(),
                network: "enp9s0".into()
            }]
        );
        assert!(p[0].to_string().contains("parent interface enp9s0"));
        assert!(p[0].blocks_promotion());
    }

    #[test]
    fn a_profile_the_project_lacks_is_a_problem() {
        let mut r = replica();
        r.profiles.push("gpu".into());
        let p = found(&r, &standby());
        assert_eq!(
            p,
            vec![Problem::MissingProfile {
                profile: "gpu".into()
            }]
        );
        assert!(p[0].blocks_promotion());
        assert!(p[0].for_promotion().contains("--sync-profiles"));
        // A project that was not read is not checked.
        r.project = "other".into();
        assert_eq!(found(&r, &standby()), vec![]);
    }

    #[test]
    fn a_disk_on_a_pool_the_standby_lacks_is_a_problem() {
        let r = with_device(
            replica(),
            "data",
            &[
                ("type", "disk"),
                ("pool", "fast"),
                ("source", "db"),
                ("path", "/db"),
            ],
        );
        let p = found(&r, &standby());
        assert_eq!(
            p,
            vec![Problem::MissingPool {
                device: "data".into(),
                pool: "fast".into()
            }]
        );
        assert!(p[0].blocks_promotion());
    }

    #[test]
    fn a_custom_volume_the_standby_lacks_is_a_problem() {
        let r = with_device(
            replica(),
            "db",
            &[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "dbdata"),
                ("path", "/db"),
            ],
        );
        let p = found(&r, &standby());
        assert_eq!(
            p,
            vec![Problem::MissingVolume {
                device: "db".into(),
                volume: VolumeRef::new("default", "dbdata")
            }]
        );
        assert!(p[0].blocks_promotion());
        assert!(p[0].to_string().contains("default/dbdata"));
    }

    #[test]
    fn a_custom_volume_without_the_replicas_snapshot_is_a_problem() {
        let r = with_device(
            replica(),
            "data",
            &[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "data"),
                ("path", "/data"),
            ],
        );
        let mut s = standby();
        if let Some(project) = s.projects.get_mut("default") {
            project.volumes.insert(
                VolumeRef::new("default", "data"),
                BTreeSet::from(["s0".into()]),
            );
        }
        let p = found(&r, &s);
        assert_eq!(
            p,
            vec![Problem::VolumeLacksSnapshot {
                device: "data".into(),
                volume: VolumeRef::new("default", "data"),
                snapshot: "s1".into()
            }]
        );
        assert!(p[0].blocks_promotion());
        // A promotion checks the point it starts from.
        assert_eq!(dependencies(&r, &s, Some("s0")), vec![]);
        assert_eq!(dependencies(&r, &s, None), vec![]);
    }

    #[test]
    fn pinned_cpus_the_standby_lacks_are_a_problem() {
        let s = standby();
        for (limit, unmet) in [
            ("0-7", true),
            ("5", true),
            ("1,3", true),
            ("0-1", false),
            ("1", false),
            ("2", false),
            ("", false),
            ("nonsense", false),
        ] {
            let mut r = replica();
            r.expanded_config.insert("limits.cpu".into(), limit.into());
            let p = found(&r, &s);
            assert_eq!(!p.is_empty(), unmet, "{limit}: {p:?}");
            if unmet {
                assert_eq!(
                    p,
                    vec![Problem::CpuLimit {
                        limit: limit.into(),
                        host_cpus: 2
                    }]
                );
                assert!(p[0].blocks_promotion());
            }
        }
        // The limits are the member's where the replica is.
        let mut r = replica();
        r.expanded_config.insert("limits.cpu".into(), "0-7".into());
        r.location = "m2".into();
        assert_eq!(found(&r, &s), vec![]);
    }

    #[test]
    fn memory_larger_than_the_standby_is_a_problem() {
        let s = standby();
        for (limit, unmet) in [
            ("8GiB", true),
            ("5GB", true),
            ("4GiB", false),
            ("512MiB", false),
            ("50%", false),
            ("1073741824", false),
        ] {
            let mut r = replica();
            r.expanded_config
                .insert("limits.memory".into(), limit.into());
            let p = found(&r, &s);
            assert_eq!(!p.is_empty(), unmet, "{limit}: {p:?}");
            if unmet {
                assert!(p[0].blocks_promotion());
                assert!(p[0].to_string().contains("4.0 GiB"), "{}", p[0]);
            }
        }
    }

    #[test]
    fn the_replicas_own_state_is_checked_without_the_standby() {
        let mut r = replica();
        r.status = crate::api::instances::InstanceStatus::Running;
        let p = problems(&r, &snapshots(), None);
        assert_eq!(p, vec![Problem::Running]);
        assert!(p[0].blocks_promotion());
        let p = problems(&replica(), &[], None);
        assert_eq!(p, vec![Problem::NoSnapshot]);
        assert!(!p[0].blocks_promotion() && p[0].fixed_by_a_push());
    }

    #[test]
    fn cpu_sets_and_byte_sizes_read_as_incus_writes_them() {
        assert_eq!(parse_cpus("4"), Some(Cpus::Count(4)));
        assert_eq!(
            parse_cpus("0-2,5"),
            Some(Cpus::Pinned(BTreeSet::from([0, 1, 2, 5])))
        );
        assert_eq!(parse_cpus("3-1"), None);
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1kB"), Some(1000));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("20%"), None);
        assert_eq!(parse_bytes("99999999999EiB"), None);
    }
}
