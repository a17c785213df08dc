//! The steps of promotion, fencing and failback: each carries the name its `step` record
//! gives it and the failpoints a test can stop it at.

use serde::{Deserialize, Serialize};

/// Which sequence a step belongs to (it names the failpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Promotion (planned, emergency, `--at`) and fencing.
    Promotion,
    Failback,
}

/// One step, as its `step` record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The primary copy's autostart off, the fencing recorded on it.
    Fence,
    /// A copy stopped: cleanly, then by force (the primary's in a promotion, the standby's
    /// in a failback).
    Stop,
    /// Reported when the clean stop failed and the stop was forced.
    ForceStop,
    /// The last snapshot of the stopped copy.
    FinalSnapshot,
    /// A promotion's final sync: the final snapshot sent, the replica restored to it.
    Sync,
    /// The replica restored to one of its snapshots (emergency, `--at`).
    Restore,
    /// `--at` an archive point: cloned in the replica's place (the replica kept aside).
    Archive,
    /// The copy that takes over gets the instance's own settings back, and its markers.
    Identity,
    /// The copy that takes over starts.
    Start,
    /// Failback: the old primary copy renamed aside, kept.
    KeepAside,
    /// Failback: the long copy to the primary while the standby copy still serves.
    PreCopy,
    /// Failback: the short incremental copy of the final snapshot.
    FinalSync,
    /// Failback: the standby copy becomes an inert replica again.
    ReReplica,
    /// A step failed once the serving copy was stopped: it is started again (the service is
    /// never left down).
    Restart,
    /// A planned promotion failed once the primary copy was stopped (the standby could not
    /// start it, say): the primary copy is unfenced and started again, the replica left an
    /// inert replica.
    Rollback,
}

impl Step {
    /// The name in `step` records.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Fence => "fence",
            Step::Stop => "stop",
            Step::ForceStop => "force-stop",
            Step::FinalSnapshot => "final-snapshot",
            Step::Sync => "sync",
            Step::Restore => "restore",
            Step::Archive => "archive",
            Step::Identity => "identity",
            Step::Start => "start",
            Step::KeepAside => "keep-aside",
            Step::PreCopy => "pre-copy",
            Step::FinalSync => "final-sync",
            Step::ReReplica => "re-replica",
            Step::Restart => "restart",
            Step::Rollback => "rollback",
        }
    }

    /// The failpoint evaluated right after the step (`FAILPOINTS=NAME=return(abort)`).
    pub fn failpoint_after(self, flow: Flow) -> String {
        match (flow, self) {
            (Flow::Failback, Step::KeepAside) => "failback::after-aside".to_string(),
            (Flow::Failback, Step::PreCopy | Step::FinalSync) => "failback::after-sync".to_string(),
            (flow, step) => format!("{}::after-{}", flow.prefix(), step.as_str()),
        }
    }

    /// The failpoint evaluated right before the step.
    pub fn failpoint_before(self, flow: Flow) -> String {
        format!("{}::before-{}", flow.prefix(), self.as_str())
    }
}

impl Flow {
    fn prefix(self) -> &'static str {
        match self {
            Flow::Promotion => "failover",
            Flow::Failback => "failback",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_record_names_and_failpoints_of_earlier_releases() {
        assert_eq!(Step::FinalSnapshot.as_str(), "final-snapshot");
        assert_eq!(
            serde_json::to_string(&Step::ReReplica).unwrap_or_default(),
            "\"re-replica\""
        );
        assert_eq!(
            serde_json::from_str::<Step>("\"keep-aside\"").ok(),
            Some(Step::KeepAside)
        );
        assert_eq!(
            Step::Fence.failpoint_after(Flow::Promotion),
            "failover::after-fence"
        );
        assert_eq!(
            Step::Stop.failpoint_after(Flow::Promotion),
            "failover::after-stop"
        );
        assert_eq!(
            Step::Identity.failpoint_after(Flow::Promotion),
            "failover::after-identity"
        );
        assert_eq!(
            Step::KeepAside.failpoint_after(Flow::Failback),
            "failback::after-aside"
        );
        assert_eq!(
            Step::PreCopy.failpoint_after(Flow::Failback),
            "failback::after-sync"
        );
        assert_eq!(
            Step::ReReplica.failpoint_after(Flow::Failback),
            "failback::after-re-replica"
        );
        assert_eq!(
            Step::FinalSync.failpoint_before(Flow::Failback),
            "failback::before-final-sync"
        );
    }
}
