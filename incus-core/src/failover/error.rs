//! Why a promotion, fencing or failback of one instance stopped, as a caller can tell the
//! cases apart. Each prints as one line: what happened, what it left, what to do.

use super::step::Step;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line cannot be carried out (exit 2); nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// Refused before anything changed (not ready, not promoted, split brain, …).
    #[error("{0}")]
    Refused(String),
    /// Another run holds the replica's lease.
    #[error(transparent)]
    Busy(Box<crate::replication::lease::LeaseError>),
    /// The user interrupted the run between two steps; the next run finishes it.
    #[error("interrupted before the step {step}; run the same command again to finish")]
    Interrupted { step: Step },
    /// A sync by the replication engine failed.
    #[error("{what}: {source}")]
    Transfer {
        what: &'static str,
        #[source]
        source: Box<crate::replication::Error>,
    },
    /// Incus failed a step: what was being done, its error, and what that left.
    #[error(transparent)]
    Incus(Box<crate::error::StepFailed>),
    /// A step ran without the effect it should have had (the state it leaves is named).
    #[error("{0}")]
    NoEffect(String),
    /// A step failed once the serving copy was stopped, and it was started again (or not).
    #[error("{cause}; {outcome}")]
    Compensated { cause: Box<Error>, outcome: String },
    /// A failure injected by a test's failpoint.
    #[error("{0}")]
    Injected(String),
}

impl Error {
    pub fn incus(doing: impl Into<String>, source: crate::Error) -> Self {
        Error::incus_left(doing, source, "")
    }

    pub fn incus_left(doing: impl Into<String>, source: crate::Error, left: &str) -> Self {
        Error::Incus(Box::new(crate::error::StepFailed::new(doing, source, left)))
    }
}

impl From<crate::replication::lease::LeaseError> for Error {
    fn from(e: crate::replication::lease::LeaseError) -> Self {
        Error::Busy(Box::new(e))
    }
}

impl From<crate::Error> for Error {
    fn from(source: crate::Error) -> Self {
        Error::incus("", source)
    }
}
