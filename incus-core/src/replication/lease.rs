//! A lease on a replica, across hosts: `user.incus-standby.lease = "HOLDER UNTIL"` in the
//! replica's configuration, taken and released with `If-Match` (ETag), so that a push run on
//! the primary's host and a promotion run on the standby's host never act on the same replica
//! at once. The per-host lock file ([`super::lock`]) still orders runs on one host.
//!
//! A lease ends at its time (a killed holder does not block for ever), or at once when its
//! holder runs on this host and its process is gone.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::api::instances::{self, Instance};
use crate::client::Client;
use crate::markers;

/// How long a lease lasts without renewal, and how often its holder renews it: a killed
/// holder blocks others for at most [`LEASE_TTL_MINUTES`], a long transfer keeps its lease.
pub const LEASE_TTL_MINUTES: i64 = 30;
const LEASE_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it.
    #[error(
        "{remote}:{name} is leased by {holder} until {until} (another incus-push or incus-failover is working on it, maybe on another host); try again later"
    )]
    Held {
        remote: String,
        name: String,
        holder: String,
        until: String,
    },
    /// The replica's configuration changed under every attempt.
    #[error("{remote}:{name} kept changing while taking its lease; try again")]
    Contended { remote: String, name: String },
    /// Reading the replica failed.
    #[error("{0}")]
    Reading(#[source] Box<crate::Error>),
    /// Writing the lease failed.
    #[error("taking the lease on {remote}:{name}: {source}")]
    Writing {
        remote: String,
        name: String,
        #[source]
        source: Box<crate::Error>,
    },
}

/// Who holds a lease: `HOST:PID:TOOL`.
pub fn holder(tool: &str) -> String {
    format!("{}:{}:{tool}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// A lease as written in the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until: DateTime<Utc>,
}

impl Lease {
    /// Parses `HOLDER UNTIL`.
    pub fn parse(text: &str) -> Option<Lease> {
        let (holder, until) = text.rsplit_once(' ')?;
        let until = DateTime::parse_from_rfc3339(until)
            .ok()?
            .with_timezone(&Utc);
        Some(Lease {
            holder: holder.to_string(),
            until,
        })
    }

    fn text(&self) -> String {
        format!(
            "{} {}",
            self.holder,
            self.until.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// Still in force for someone other than `me` at `now`: not expired, another holder, and
    /// (on this host) a process that still exists.
    pub fn blocks(&self, me: &str, now: DateTime<Utc>, this_host: &str) -> bool {
        if self.holder == me || self.until <= now {
            return false;
        }
        let mut parts = self.holder.splitn(3, ':');
        match (
            parts.next(),
            parts.next().and_then(|p| p.parse::<u32>().ok()),
        ) {
            (Some(host), Some(pid)) if host == this_host => {
                std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
            _ => true,
        }
    }
}

/// What [`acquire`] took.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The value written, to write again after a restore (which replaces the configuration).
    pub value: String,
    /// The lease was ours already (an outer step of the same run holds it): leave its release
    /// to that step.
    pub renewed: bool,
}

/// Takes (or renews) the lease on `name` for `ttl`, unless someone else holds it; with
/// `force`, an unexpired lease of another holder is broken. `known` is the replica as just
/// read (with its ETag): the first attempt decides from it instead of reading it again.
pub fn acquire(
    client: &Client,
    name: &str,
    me: &str,
    ttl: Duration,
    force: bool,
    mut known: Option<(Instance, Option<String>)>,
) -> Result<Taken, LeaseError> {
    let this_host = host_name();
    for _ in 0..5 {
        let (instance, etag) = match known.take() {
            Some(known) => known,
            None => instances::get(client, name).map_err(|e| LeaseError::Reading(Box::new(e)))?,
        };
        let now = Utc::now();
        let current = markers::lease(&instance.config).and_then(Lease::parse);
        let renewed = current
            .as_ref()
            .is_some_and(|l| l.holder == me && l.until > now);
        if let Some(current) = current
            && current.blocks(me, now, &this_host)
            && !force
        {
            return Err(LeaseError::Held {
                remote: client.remote().to_string(),
                name: name.to_string(),
                holder: current.holder,
                until: current.until.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
        }
        let lease = Lease {
            holder: me.to_string(),
            until: now + ttl,
        }
        .text();
        let changes = markers::lease_patch(Some(lease.clone())).as_merge();
        match instances::patch_config(client, name, &changes, etag) {
            Ok(()) => {
                return Ok(Taken {
                    value: lease,
                    renewed,
                });
            }
            // Someone wrote meanwhile: look again.
            Err(e) if e.status() == Some(412) => continue,
            Err(e) => {
                return Err(LeaseError::Writing {
                    remote: client.remote().to_string(),
                    name: name.to_string(),
                    source: Box::new(e),
                });
            }
        }
    }
    Err(LeaseError::Contended {
        remote: client.remote().to_string(),
        name: name.to_string(),
    })
}

/// Releases the lease if it is still ours (a lost race or a gone instance is not an error).
pub fn release(client: &Client, name: &str, me: &str) {
    if let Ok((instance, etag)) = instances::get(client, name)
        && markers::lease(&instance.config)
            .and_then(Lease::parse)
            .is_some_and(|l| l.holder == me)
    {
        let changes = markers::lease_patch(None).as_merge();
        let _ = instances::patch_config(client, name, &changes, etag);
    }
}

/// A replica's lease, released when dropped (unless a configuration write released it).
pub struct LeaseGuard {
    client: Client,
    name: String,
    holder: String,
    /// The value written in the replica's configuration.
    pub value: String,
    /// Held already by an outer step of this run, which releases it.
    outer: bool,
    /// Released by a configuration write of this step.
    released: bool,
    /// Stops the renewing thread (dropped with the guard).
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl LeaseGuard {
    /// Takes the lease on a replica (see [`acquire`]) and renews it every ten minutes for as
    /// long as the guard lives.
    pub fn take(
        client: &Client,
        name: &str,
        holder: &str,
        force: bool,
        known: Option<(Instance, Option<String>)>,
    ) -> Result<Self, LeaseError> {
        let ttl = Duration::minutes(LEASE_TTL_MINUTES);
        let taken = acquire(client, name, holder, ttl, force, known)?;
        let stop = if taken.renewed {
            None
        } else {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let (client, name, holder) = (client.clone(), name.to_string(), holder.to_string());
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(LEASE_RENEW_EVERY)
                {
                    // A renewal that fails (the server away a moment) is tried again later.
                    let _ = acquire(&client, &name, &holder, ttl, false, None);
                }
            });
            Some(stop)
        };
        Ok(LeaseGuard {
            client: client.clone(),
            name: name.to_string(),
            holder: holder.to_string(),
            value: taken.value,
            outer: taken.renewed,
            released: false,
            stop,
        })
    }

    /// The lease's value in a write of the replica's whole state (after a restore, which
    /// replaces the configuration): kept while an outer step holds it, else released by that
    /// same write (`None`), which saves a write of its own.
    pub fn value_after_write(&self) -> Option<String> {
        self.outer.then(|| self.value.clone())
    }

    /// That write succeeded: the lease is gone (or back with its outer holder), nothing is
    /// left to release.
    pub fn released_by_write(&mut self) {
        drop(self.stop.take());
        self.released = true;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if !self.outer && !self.released {
            release(&self.client, &self.name, &self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn leases_round_trip() {
        let lease = Lease {
            holder: "standby-host:42:incus-failover".into(),
            until: at(1_795_899_000),
        };
        assert_eq!(Lease::parse(&lease.text()), Some(lease));
        assert_eq!(Lease::parse("garbage"), None);
    }

    #[test]
    fn a_lease_blocks_others_until_it_expires_or_its_local_process_is_gone() {
        let other_host = Lease {
            holder: "elsewhere:1:incus-push".into(),
            until: at(100),
        };
        assert!(other_host.blocks("me:2:incus-failover", at(50), "here"));
        assert!(!other_host.blocks("me:2:incus-failover", at(100), "here"));
        assert!(!other_host.blocks("elsewhere:1:incus-push", at(50), "here"));
        // On this host, a holder whose process is gone holds nothing.
        let dead = Lease {
            holder: format!("here:{}:incus-push", u32::MAX - 1),
            until: at(100),
        };
        assert!(!dead.blocks("me", at(50), "here"));
        let alive = Lease {
            holder: format!("here:{}:incus-push", std::process::id()),
            until: at(100),
        };
        assert!(alive.blocks("me", at(50), "here"));
    }
}
