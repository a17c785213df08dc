//! Typed errors. Every error that comes from a server says which remote it was.

use std::fmt;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Incus, with enough context to print one useful line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CLI configuration (`$INCUS_CONF`) or an argument is unusable.
    #[error("{0}")]
    Config(String),
    /// A remote name that is not in `config.yml`.
    #[error(
        "unknown remote \"{remote}\": not in {config}; add it with `incus-trust add {remote} - < token-file` (a token made on that server with `incus-trust token`)"
    )]
    UnknownRemote { remote: String, config: String },
    /// The server could not be reached at all.
    #[error("remote \"{remote}\" ({addr}) is unreachable: {reason}")]
    Unreachable {
        remote: String,
        addr: String,
        reason: String,
    },
    /// The server presented a certificate other than the pinned one.
    #[error(
        "remote \"{remote}\" presented certificate {presented}, but {pinned_path} pins {pinned}; if the server was reinstalled on purpose, add it again with `incus-trust add {remote} https://HOST:PORT --fingerprint NEW --force` (or a new token), otherwise something is intercepting the connection"
    )]
    CertificateMismatch {
        remote: String,
        presented: String,
        pinned: String,
        pinned_path: String,
    },
    /// Incus answered with an error (its status and its own message).
    #[error("{remote}: {message}")]
    Api {
        remote: String,
        status: u16,
        message: String,
    },
    /// An operation did not finish within the time limit.
    #[error("{remote}: {what} did not finish within {seconds} s")]
    Timeout {
        remote: String,
        what: String,
        seconds: u64,
    },
    /// The user interrupted the run (SIGINT, SIGTERM, SIGHUP).
    #[error("interrupted")]
    Cancelled,
    /// The server said something this client cannot understand.
    #[error("{remote}: unexpected answer from Incus: {detail}")]
    Protocol { remote: String, detail: String },
}

/// Incus failed a step of a longer sequence: what was being done, its error, and what that
/// left (`; …`, or empty). Replication and failover errors carry it.
#[derive(Debug, thiserror::Error)]
#[error("{doing}{}{source}{left}", if .doing.is_empty() { "" } else { ": " })]
pub struct StepFailed {
    pub doing: String,
    #[source]
    pub source: Box<Error>,
    pub left: String,
}

impl StepFailed {
    pub fn new(doing: impl Into<String>, source: Error, left: &str) -> Self {
        StepFailed {
            doing: doing.into(),
            source: Box::new(source),
            left: left.to_string(),
        }
    }
}

impl Error {
    /// The HTTP status Incus gave, if this is an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for "not found" answers.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Incus's own message for API errors, the display text otherwise.
    pub fn message(&self) -> String {
        match self {
            Error::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn protocol(remote: &str, detail: impl fmt::Display) -> Self {
        Error::Protocol {
            remote: remote.to_string(),
            detail: detail.to_string(),
        }
    }
}
