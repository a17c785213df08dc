//! Incus's operation model: `/wait` in short slices (it answers HTTP 200 even on failure or
//! timeout), every error body confirmed with `GET /1.0/operations/ID`, progress from the
//! operation's metadata, cancellation on interruption when Incus allows it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::{Client, Reply, Request};
use crate::error::{Error, Result};
use crate::interrupt;

/// A background operation as Incus describes it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Operation {
    pub id: String,
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub metadata: Value,
    #[serde(default, deserialize_with = "crate::api::nullable")]
    pub resources: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub may_cancel: bool,
    #[serde(default)]
    pub err: String,
    /// The cluster member running the operation (`none` or empty on a single server).
    #[serde(default)]
    pub location: String,
}

impl Operation {
    /// Final states have a status code of 200 or more.
    pub fn is_final(&self) -> bool {
        self.status_code >= 200
    }

    /// The first `*_progress` string in the metadata, as the CLI shows it.
    pub fn progress(&self) -> Option<&str> {
        self.metadata
            .as_object()?
            .iter()
            .find(|(k, _)| k.ends_with("_progress"))
            .and_then(|(_, v)| v.as_str())
    }

    /// A string field of the metadata (the migration secrets, for instance).
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)?.as_str()
    }
}

/// How long to wait and whom to tell about progress.
#[derive(Default)]
pub struct WaitOptions<'a> {
    /// Give up after this long (the operation goes on on the server). `None`: no limit.
    pub limit: Option<Duration>,
    /// Called with each new progress string.
    pub progress: Option<&'a (dyn Fn(&str) + Sync)>,
    /// Called once when the run is interrupted while waiting (e.g. to cancel the other end
    /// of a migration, when this operation itself cannot be cancelled).
    pub on_interrupt: Option<&'a (dyn Fn() + Sync)>,
}

impl WaitOptions<'_> {
    /// No limit, no progress.
    pub fn plain() -> Self {
        WaitOptions::default()
    }
}

impl Client {
    /// Waits until the operation is final. Success gives the final operation; failure gives
    /// Incus's own message as [`Error::Api`].
    pub fn wait(&self, op: &Operation, options: &WaitOptions) -> Result<Operation> {
        let start = Instant::now();
        let path = format!("/operations/{}", super::escape(&op.id));
        let mut last_progress = String::new();
        let mut cancel_sent = false;
        let mut last_known = op.clone();
        loop {
            if interrupt::requested() && !cancel_sent {
                cancel_sent = true;
                if let Some(hook) = options.on_interrupt {
                    hook();
                }
                if last_known.may_cancel {
                    let _ = self.send(&Request::delete(path.clone()));
                }
                // Otherwise Incus cannot cancel it: it runs to its end.
            }
            if let Some(limit) = options.limit
                && start.elapsed() > limit
            {
                return Err(Error::Timeout {
                    remote: self.remote.clone(),
                    what: format!("operation \"{}\" ({})", op.description, op.id),
                    seconds: limit.as_secs(),
                });
            }
            let current = match self
                .send(&Request::get(format!("{path}/wait")).query("timeout", "1"))
            {
                Ok(Reply::Sync { metadata, .. }) => {
                    serde_json::from_str::<Operation>(metadata.get())
                        .map_err(|e| Error::protocol(&self.remote, format!("operation: {e}")))?
                }
                Ok(Reply::Async(op)) => *op,
                Err(Error::Api { message, .. }) => {
                    match self.fetch::<Operation>(&Request::get(path.clone())) {
                        Ok((op, _)) => op,
                        Err(e) if e.is_not_found() => {
                            if message.contains("context deadline exceeded") {
                                return Err(Error::protocol(
                                    &self.remote,
                                    format!(
                                        "operation \"{}\" ({}) ended and vanished before its result could be read; check the result with the incus CLI",
                                        op.description, op.id
                                    ),
                                ));
                            }
                            return Err(Error::Api {
                                remote: self.remote.clone(),
                                status: 400,
                                message,
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if let (Some(report), Some(progress)) = (options.progress, current.progress())
                && progress != last_progress
            {
                report(progress);
                last_progress = progress.to_string();
            }
            if current.is_final() {
                return match current.status_code {
                    200 => Ok(current),
                    _ if cancel_sent => Err(Error::Cancelled),
                    status => Err(Error::Api {
                        remote: self.remote.clone(),
                        status: if status == 401 { 499 } else { 400 },
                        message: if current.err.is_empty() {
                            format!(
                                "operation \"{}\" ended: {}",
                                current.description, current.status
                            )
                        } else {
                            current.err.clone()
                        },
                    }),
                };
            }
            last_known = current;
        }
    }
}
