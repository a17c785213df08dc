//! Snapshots: list, create, delete, update expiry, restore.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::optional_time;
use crate::client::{Client, Operation, Request, WaitOptions, escape};
use crate::error::Result;

/// "No expiry" as Incus writes it.
pub const NO_EXPIRY: &str = "0001-01-01T00:00:00Z";

/// A snapshot as `GET /1.0/instances/NAME/snapshots?recursion=1` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stateful: bool,
    /// The instance's own configuration when the snapshot was taken.
    #[serde(default, deserialize_with = "super::nullable")]
    pub config: BTreeMap<String, String>,
    /// Its own devices and profiles then (what a full restore gives back).
    #[serde(default, deserialize_with = "super::nullable")]
    pub devices: BTreeMap<String, super::instances::Device>,
    #[serde(default, deserialize_with = "super::nullable")]
    pub profiles: Vec<String>,
}

impl Snapshot {
    /// A snapshot known by its name and creation time only (from a pool's volume listing).
    pub fn listed(name: String, created_at: DateTime<Utc>) -> Snapshot {
        Snapshot {
            name,
            created_at,
            expires_at: None,
            stateful: false,
            config: BTreeMap::new(),
            devices: BTreeMap::new(),
            profiles: Vec::new(),
        }
    }
}

/// `expires_at` as Incus takes it: RFC 3339, or the zero time for "never".
fn expiry_text(expires_at: Option<DateTime<Utc>>) -> String {
    match expires_at {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => NO_EXPIRY.to_string(),
    }
}

fn path(instance: &str) -> String {
    format!("/instances/{}/snapshots", escape(instance))
}

/// Every snapshot of an instance, oldest first (by creation time, then name).
pub fn list(client: &Client, instance: &str) -> Result<Vec<Snapshot>> {
    let mut snapshots: Vec<Snapshot> = client
        .fetch(&Request::get(path(instance)).query("recursion", "1"))?
        .0;
    snapshots.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(snapshots)
}

/// Takes a snapshot and waits for it. `expires_at: None` means no expiry.
pub fn create(
    client: &Client,
    instance: &str,
    name: &str,
    stateful: bool,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Option<Operation>> {
    let expires = expiry_text(expires_at);
    client.execute(
        &Request::post(
            path(instance),
            json!({ "name": name, "stateful": stateful, "expires_at": expires }),
        ),
        &WaitOptions::plain(),
    )
}

/// Reads one snapshot.
pub fn get(client: &Client, instance: &str, name: &str) -> Result<Snapshot> {
    client.get(&format!("{}/{}", path(instance), escape(name)))
}

/// Deletes a snapshot and waits for it.
pub fn delete(client: &Client, instance: &str, name: &str) -> Result<()> {
    client.execute(
        &Request::delete(format!("{}/{}", path(instance), escape(name))),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Restores the instance's root filesystem, configuration and devices to a snapshot (as
/// `incus snapshot restore`: a PUT that carries only `restore`).
pub fn restore(client: &Client, instance: &str, name: &str) -> Result<()> {
    super::instances::put(
        client,
        instance,
        json!({ "restore": name, "stateful": false }),
        None,
    )
}

/// Restores the instance's disk only to the snapshot (`instance_snapshot_disk_only_restore`):
/// its configuration stays as it is.
pub fn restore_disk_only(client: &Client, instance: &str, name: &str) -> Result<()> {
    super::instances::put(
        client,
        instance,
        json!({ "restore": name, "disk_only": true, "stateful": false }),
        None,
    )
}

/// Changes a snapshot's expiry (`None`: never expires).
pub fn set_expiry(
    client: &Client,
    instance: &str,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let expires = expiry_text(expires_at);
    client.execute(
        &Request::patch(
            format!("{}/{}", path(instance), escape(name)),
            json!({ "expires_at": expires }),
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}
