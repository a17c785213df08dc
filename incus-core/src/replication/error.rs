//! Why replicating one instance failed, as a caller can tell the cases apart: a refusal
//! (nothing changed, the history is safe), another run at work, an interruption, or a step
//! Incus failed. Each prints as one line saying why and what to do.

use super::plan::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The replica may not be refreshed from this source; nothing on the standby changed.
    #[error("{}", refusal_message(.refusal, .standby, .instance))]
    Refused {
        refusal: Refusal,
        standby: String,
        instance: String,
    },
    /// A check made before anything changed failed (the message says what to do).
    #[error("{0}")]
    Unsafe(String),
    /// Another run works on this replica, on this host (the lock) or any (the lease).
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Lease(Box<super::lease::LeaseError>),
    /// The user interrupted the transfer; the replica keeps its previous state.
    #[error(
        "interrupted: the transfer was cancelled; {standby}:{instance} keeps its previous state"
    )]
    Interrupted { standby: String, instance: String },
    /// Incus failed a step: what was being done, its error, and what that left.
    #[error(transparent)]
    Incus(Box<crate::error::StepFailed>),
    /// A first copy that Incus failed for a reason known to be transient (its migration
    /// connection dropped): what it left is an unfinished copy, safe to copy again.
    #[error(transparent)]
    TransientCopy(Box<crate::error::StepFailed>),
    /// A failure injected by a test's failpoint.
    #[error("{0}")]
    Injected(String),
}

impl Error {
    /// The remote that did not answer at all (unreachable, or no answer in time), and why:
    /// the run then stops sending it work.
    pub fn unreachable(&self) -> Option<(String, String)> {
        let source = match self {
            Error::Incus(step) | Error::TransientCopy(step) => &step.source,
            _ => return None,
        };
        match source.as_ref() {
            crate::Error::Unreachable { remote, reason, .. } => {
                Some((remote.clone(), reason.clone()))
            }
            _ => None,
        }
    }

    /// Incus failed while doing `doing` (empty: its message alone).
    pub fn incus(doing: impl Into<String>, source: crate::Error) -> Self {
        Error::incus_left(doing, source, "")
    }

    /// As [`Error::incus`], with what the failure left (`; …`).
    pub fn incus_left(doing: impl Into<String>, source: crate::Error, left: &str) -> Self {
        Error::Incus(Box::new(crate::error::StepFailed::new(doing, source, left)))
    }

    /// A failure worth one more attempt at once.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::TransientCopy(_))
    }

    /// True when the user interrupted the run.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted { .. })
    }
}

impl From<super::lease::LeaseError> for Error {
    fn from(e: super::lease::LeaseError) -> Self {
        Error::Lease(Box::new(e))
    }
}

impl From<crate::Error> for Error {
    fn from(source: crate::Error) -> Self {
        Error::incus("", source)
    }
}

/// What Incus says when a migration's connection drops under load (seen at `--jobs 4`, about
/// one transfer in 300): nothing about the instance or the servers is wrong.
const TRANSIENT: [&str; 2] = ["Rsync send failed", "connection unexpectedly closed"];

/// True when Incus's message says the transfer's connection dropped.
pub fn transient_message(message: &str) -> bool {
    TRANSIENT.iter().any(|t| message.contains(t))
}

/// One line saying why the replica is left alone and how to go on.
pub fn refusal_message(refusal: &Refusal, to: &str, name: &str) -> String {
    let unchanged = "nothing on the standby was changed";
    match refusal {
        Refusal::Running => format!(
            "the replica {to}:{name} is running (promoted?); incus-push never touches a running replica: stop it on {to} first if it should be a replica again"
        ),
        Refusal::Promoted => format!(
            "{to}:{name} was promoted by incus-failover and holds the newest data; incus-push never overwrites it: fail back with incus-failover failback"
        ),
        Refusal::OtherSource(found) => format!(
            "{to}:{name} is a replica of another source ({found}); {unchanged}: rename one of them, or take it over with --adopt"
        ),
        Refusal::NotOurs => format!(
            "{to}:{name} exists and was not made by incus-push; {unchanged}: rename it, or take it over with --adopt (its snapshots not on the source will be deleted)"
        ),
        Refusal::IdentityChanged { recorded, now } => format!(
            "the source is another instance than the one {to}:{name} copies (volatile.uuid {now}, the replica records {recorded}: deleted and re-created?); {unchanged}, so its history stays: rerun with --replace to move the old replica aside (renamed, not deleted) and copy the new instance"
        ),
        Refusal::NothingInCommon { replica_snapshots } => format!(
            "{to}:{name} holds {replica_snapshots} snapshot(s) and the source has none of them; a refresh would delete them all, so {unchanged}: rerun with --replace to move the old replica aside (renamed, not deleted) and copy the source"
        ),
        Refusal::SourceHasNone { replica_snapshots } => format!(
            "the source has no snapshot, and a refresh would delete the {replica_snapshots} snapshot(s) of {to}:{name}; {unchanged}: take a snapshot first (incus-snap), or rerun with --replace to move the old replica aside"
        ),
        Refusal::UnfinishedWithOtherHistory { missing_on_source } => format!(
            "{to}:{name} is an unfinished first copy holding {missing_on_source} snapshot(s) the source no longer has; copying again would delete them, so {unchanged}: rerun with --replace to move it aside"
        ),
    }
}

/// The failure a test injects with a failpoint's `return(ARG)`: `abort` ends the process at
/// once, as `kill -9` would (no cleanup at all); anything else is an error message. Shared by
/// every tool's failpoints.
#[allow(dead_code)]
pub fn injected_error(arg: Option<String>) -> String {
    if arg.as_deref() == Some("abort") {
        std::process::abort();
    }
    format!("injected failure ({})", arg.unwrap_or_default())
}

/// [`injected_error`] as this module's error.
#[allow(dead_code)]
pub(super) fn injected<T>(arg: Option<String>) -> Result<T, Error> {
    Err(Error::Injected(injected_error(arg)))
}
