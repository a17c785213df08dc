//! Whether a replica could take over: one pure check, shared by `status` (which shows every
//! problem) and promotion (which refuses on the ones that block it, before anything changes).

use std::collections::BTreeSet;

use crate::api::instances::Instance;
use crate::api::snapshots::Snapshot;
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
    /// A NIC's network or parent the standby lacks.
    MissingNetwork {
        device: String,
        key: String,
        network: String,
    },
}

impl Problem {
    /// A planned or emergency promotion refuses such a replica before anything changes.
    pub fn blocks_promotion(&self) -> bool {
        matches!(
            self,
            Problem::Running | Problem::NotOurs | Problem::Unfinished
        )
    }

    /// As a promotion's refusal says it.
    pub fn for_promotion(&self) -> String {
        match self {
            Problem::Running => "it is running".to_string(),
            Problem::NotOurs => "it was not made by incus-push".to_string(),
            Problem::Unfinished => "its first copy never finished".to_string(),
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
            } => write!(
                f,
                "NIC {device}: {key} {network} does not exist on the standby"
            ),
        }
    }
}

/// Every problem of `replica` (with its snapshots, oldest first) against a standby that has
/// `standby_networks` (`None`: not checked).
pub fn problems(
    replica: &Instance,
    snapshots: &[Snapshot],
    standby_networks: Option<&BTreeSet<String>>,
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
    let Some(networks) = standby_networks else {
        return problems;
    };
    for (device, options) in &replica.expanded_devices {
        if options.get("type").map(String::as_str) != Some("nic") {
            continue;
        }
        for key in ["network", "parent"] {
            if let Some(network) = options.get(key)
                && !networks.contains(network)
            {
                problems.push(Problem::MissingNetwork {
                    device: device.clone(),
                    key: key.to_string(),
                    network: network.clone(),
                });
            }
        }
    }
    problems
}
