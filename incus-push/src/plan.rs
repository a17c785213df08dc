//! What must be sent: a pure comparison of the source's and the replica's snapshot lists.
//!
//! Incus's refresh compares snapshots by name and creation time to the second; so do we. A
//! replica is current when it has exactly the source's snapshots and its last transfer ended
//! with the restore to the newest of them.

use chrono::{DateTime, Utc};

/// A snapshot as both sides are compared: its name and its creation time in whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotId {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl SnapshotId {
    pub fn new(name: &str, created_at: DateTime<Utc>) -> Self {
        SnapshotId {
            name: name.to_string(),
            created_at: DateTime::from_timestamp(created_at.timestamp(), 0).unwrap_or(created_at),
        }
    }
}

/// The decision for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No replica yet: a full copy of the instance and every snapshot.
    Copy { send: Vec<String> },
    /// A refresh: these snapshots are sent, these are dropped from the replica.
    Refresh {
        send: Vec<String>,
        drop: Vec<String>,
    },
    /// Nothing to do.
    UpToDate,
}

impl Plan {
    /// The record's `status` word.
    pub fn status(&self) -> &'static str {
        match self {
            Plan::Copy { .. } => "copied",
            Plan::Refresh { .. } => "refreshed",
            Plan::UpToDate => "up-to-date",
        }
    }

    /// The snapshots that will be sent.
    pub fn sent(&self) -> Vec<String> {
        match self {
            Plan::Copy { send } | Plan::Refresh { send, .. } => send.clone(),
            Plan::UpToDate => Vec::new(),
        }
    }
}

/// Compares the lists (both oldest first). `replica` is `None` when there is no replica;
/// `restored` is the snapshot the replica was last restored to; `live` asks for the live
/// state, which cannot be compared, so it always refreshes.
pub fn plan(
    source: &[SnapshotId],
    replica: Option<&[SnapshotId]>,
    restored: Option<&str>,
    live: bool,
) -> Plan {
    let Some(replica) = replica else {
        return Plan::Copy {
            send: source.iter().map(|s| s.name.clone()).collect(),
        };
    };
    let send: Vec<String> = source
        .iter()
        .filter(|s| !replica.contains(s))
        .map(|s| s.name.clone())
        .collect();
    let drop: Vec<String> = replica
        .iter()
        .filter(|r| !source.contains(r))
        .map(|r| r.name.clone())
        .collect();
    let newest = source.last().map(|s| s.name.as_str());
    let restored_to_newest = newest.is_some() && newest == restored;
    if send.is_empty() && drop.is_empty() && !live && restored_to_newest {
        Plan::UpToDate
    } else {
        Plan::Refresh { send, drop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, secs: i64) -> SnapshotId {
        SnapshotId::new(name, DateTime::from_timestamp(secs, 0).unwrap_or_default())
    }

    #[test]
    fn no_replica_means_a_full_copy_of_every_snapshot() {
        let source = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, None, None, false),
            Plan::Copy {
                send: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn identical_lists_restored_to_the_newest_are_up_to_date() {
        let source = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, Some(&source), Some("b"), false),
            Plan::UpToDate
        );
    }

    #[test]
    fn matching_snapshots_without_a_finished_restore_are_refreshed() {
        let source = [id("a", 1), id("b", 2)];
        assert!(matches!(
            plan(&source, Some(&source), Some("a"), false),
            Plan::Refresh { .. }
        ));
        assert!(matches!(
            plan(&source, Some(&source), None, false),
            Plan::Refresh { .. }
        ));
    }

    #[test]
    fn new_snapshots_are_sent_and_stale_ones_dropped() {
        let source = [id("a", 1), id("c", 3)];
        let replica = [id("a", 1), id("b", 2)];
        assert_eq!(
            plan(&source, Some(&replica), Some("b"), false),
            Plan::Refresh {
                send: vec!["c".into()],
                drop: vec!["b".into()]
            }
        );
    }

    #[test]
    fn same_name_with_another_time_is_a_different_snapshot() {
        let source = [id("a", 5)];
        let replica = [id("a", 1)];
        assert_eq!(
            plan(&source, Some(&replica), Some("a"), false),
            Plan::Refresh {
                send: vec!["a".into()],
                drop: vec!["a".into()]
            }
        );
    }

    #[test]
    fn sub_second_differences_do_not_count() {
        let precise = DateTime::from_timestamp(10, 400_000_000).unwrap_or_default();
        assert_eq!(SnapshotId::new("a", precise), id("a", 10));
    }

    #[test]
    fn live_always_refreshes_and_no_snapshots_is_never_current() {
        let source = [id("a", 1)];
        assert!(matches!(
            plan(&source, Some(&source), Some("a"), true),
            Plan::Refresh { .. }
        ));
        assert!(matches!(
            plan(&[], Some(&[]), None, false),
            Plan::Refresh { .. }
        ));
    }
}
