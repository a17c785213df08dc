//! A lease on a replica, across hosts: `user.incus-standby.lease = "HOLDER UNTIL"` in the
//! replica's configuration, taken and released with `If-Match` (ETag), so that a push run on
//! the primary's host and a promotion run on the standby's host never act on the same replica
//! at once. The per-host lock file ([`super::lock`]) still orders runs on one host.
//!
//! A lease ends at its time (a killed holder does not block for ever), or at once when its
//! holder runs on this host and its process is gone.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::api::instances;
use crate::client::Client;

/// The configuration key holding the lease.
pub const LEASE_KEY: &str = "user.incus-standby.lease";

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
/// `force`, an unexpired lease of another holder is broken.
pub fn acquire(
    client: &Client,
    name: &str,
    me: &str,
    ttl: Duration,
    force: bool,
) -> Result<Taken, String> {
    let this_host = host_name();
    for _ in 0..5 {
        let (instance, etag) = instances::get(client, name).map_err(|e| e.to_string())?;
        let now = Utc::now();
        let current = instance.config.get(LEASE_KEY).and_then(|t| Lease::parse(t));
        let renewed = current
            .as_ref()
            .is_some_and(|l| l.holder == me && l.until > now);
        if let Some(current) = current
            && current.blocks(me, now, &this_host)
            && !force
        {
            return Err(format!(
                "{}:{name} is leased by {} until {} (another incus-push or incus-failover is working on it, maybe on another host); try again later",
                client.remote(),
                current.holder,
                current.until.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        let lease = Lease {
            holder: me.to_string(),
            until: now + ttl,
        }
        .text();
        let changes = BTreeMap::from([(LEASE_KEY.to_string(), lease.clone())]);
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
                return Err(format!(
                    "taking the lease on {}:{name}: {e}",
                    client.remote()
                ));
            }
        }
    }
    Err(format!(
        "{}:{name} kept changing while taking its lease; try again",
        client.remote()
    ))
}

/// Releases the lease if it is still ours (a lost race or a gone instance is not an error).
pub fn release(client: &Client, name: &str, me: &str) {
    if let Ok((instance, etag)) = instances::get(client, name)
        && instance
            .config
            .get(LEASE_KEY)
            .and_then(|t| Lease::parse(t))
            .is_some_and(|l| l.holder == me)
    {
        let changes = BTreeMap::from([(LEASE_KEY.to_string(), String::new())]);
        let _ = instances::patch_config(client, name, &changes, etag);
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
