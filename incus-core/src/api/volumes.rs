//! Custom storage volumes: the ones an instance's disk devices attach, their snapshots, and
//! copying them with their snapshots to another server (the migration API of
//! `incus storage volume copy`, in the three modes).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::instances::Device;
use super::migration::{self, Endpoints, Mode};
use super::{nullable, optional_time};
use crate::client::{Client, Operation, Request, WaitOptions, escape};
use crate::error::Result;

/// A custom volume, named by its pool and its name (in the client's project).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeRef {
    pub pool: String,
    pub name: String,
}

impl std::fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.name)
    }
}

impl VolumeRef {
    pub fn new(pool: &str, name: &str) -> Self {
        VolumeRef {
            pool: pool.to_string(),
            name: name.to_string(),
        }
    }

    /// `POOL/NAME`, as `--volume` takes it.
    pub fn parse(text: &str) -> Option<Self> {
        let (pool, name) = text.split_once('/')?;
        (!pool.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| VolumeRef::new(pool, name))
    }

    fn path(&self) -> String {
        format!(
            "/storage-pools/{}/volumes/custom/{}",
            escape(&self.pool),
            escape(&self.name)
        )
    }

    fn snapshots_path(&self) -> String {
        format!("{}/snapshots", self.path())
    }
}

/// A custom volume attached by a disk device: the device, the volume and where it is mounted
/// (`None` for a block volume given to a VM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub device: String,
    pub volume: VolumeRef,
    pub path: Option<String>,
}

/// The custom volumes an instance's (expanded) devices attach, sorted by volume: disk
/// devices with a `pool` and a `source` that names a volume, the root disk aside. A volume
/// attached twice is listed once.
pub fn attached(devices: &BTreeMap<String, Device>) -> Vec<Attached> {
    let mut found: Vec<Attached> = devices
        .iter()
        .filter(|(_, d)| d.get("type").map(String::as_str) == Some("disk"))
        .filter(|(_, d)| d.get("path").map(String::as_str) != Some("/"))
        .filter_map(|(device, d)| {
            let pool = d.get("pool").filter(|p| !p.is_empty())?;
            let source = d.get("source").filter(|s| !s.is_empty())?;
            // A host path, or a volume of another type (`image/…`, `virtual-machine/…`).
            if source.starts_with('/') || source.contains('/') {
                return None;
            }
            Some(Attached {
                device: device.clone(),
                volume: VolumeRef::new(pool, source),
                path: d.get("path").cloned(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.volume.cmp(&b.volume).then(a.device.cmp(&b.device)));
    found.dedup_by(|a, b| a.volume == b.volume);
    found
}

/// A custom volume as `GET /1.0/storage-pools/POOL/volumes/custom/NAME` describes it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Volume {
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// `filesystem` or `block`.
    #[serde(default)]
    pub content_type: String,
    /// The cluster member that holds it (`none` or empty on a single server, or on a
    /// shared pool).
    #[serde(default)]
    pub location: String,
}

/// One snapshot of a custom volume.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeSnapshot {
    /// The snapshot's own name (Incus lists `VOLUME/NAME`; the volume part is dropped).
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The volume and its ETag, `None` when the server has no such volume.
pub fn get(client: &Client, volume: &VolumeRef) -> Result<Option<(Volume, Option<String>)>> {
    match client.get_with_etag::<Volume>(&volume.path()) {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The volume's snapshots, oldest first (by creation time, then name).
pub fn snapshots(client: &Client, volume: &VolumeRef) -> Result<Vec<VolumeSnapshot>> {
    let mut list: Vec<VolumeSnapshot> = client
        .fetch(&Request::get(volume.snapshots_path()).query("recursion", "1"))?
        .0;
    for snapshot in &mut list {
        if let Some((_, name)) = snapshot.name.split_once('/') {
            snapshot.name = name.to_string();
        }
    }
    list.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(list)
}

/// Takes a snapshot of the volume, with an expiry or none.
pub fn create_snapshot(
    client: &Client,
    volume: &VolumeRef,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let mut body = json!({ "name": name });
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    client.execute(
        &Request::post(volume.snapshots_path(), body),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Snapshots, under `name`, every custom volume the instance attaches (read now), before a
/// final snapshot of the stopped instance: the instance's snapshot, taken after them, then
/// means the group is whole. A volume that has the snapshot already is left as it is.
/// Returns the volumes (`POOL/NAME`).
pub fn snapshot_attached(client: &Client, instance: &str, name: &str) -> Result<Vec<String>> {
    let (read, _) = super::instances::get(client, instance)?;
    let mut taken = Vec::new();
    for a in attached(&read.expanded_devices) {
        match create_snapshot(client, &a.volume, name, None) {
            Ok(()) => {}
            Err(e)
                if e.message().contains("UNIQUE constraint")
                    || e.message().contains("already exists")
                    || e.message().contains("already in use") => {}
            Err(e) => return Err(e),
        }
        taken.push(a.volume.to_string());
    }
    Ok(taken)
}

/// Deletes one snapshot of the volume.
pub fn delete_snapshot(client: &Client, volume: &VolumeRef, name: &str) -> Result<()> {
    client.execute(
        &Request::delete(format!("{}/{}", volume.snapshots_path(), escape(name))),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Sets or removes (`None`) a volume snapshot's expiry.
pub fn set_snapshot_expiry(
    client: &Client,
    volume: &VolumeRef,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let at = match expires_at {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => super::snapshots::NO_EXPIRY.to_string(),
    };
    client.execute(
        &Request::patch(
            format!("{}/{}", volume.snapshots_path(), escape(name)),
            json!({ "expires_at": at }),
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Replaces the volume's configuration; with `restore`, first restores the volume to that
/// snapshot (one request: Incus restores, then applies the configuration).
pub fn put(
    client: &Client,
    volume: &VolumeRef,
    config: &BTreeMap<String, String>,
    description: &str,
    restore: Option<&str>,
    etag: Option<String>,
) -> Result<()> {
    let mut body = json!({ "config": config, "description": description });
    if let Some(snapshot) = restore {
        body["restore"] = json!(snapshot);
    }
    client.execute(
        &Request::put(volume.path(), body).if_match(etag),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Copies, on the same server and pool, the volume's current state (no snapshots) to a new
/// volume `name` with this configuration (copy on write where the pool can).
pub fn copy_local(
    client: &Client,
    volume: &VolumeRef,
    name: &str,
    config: &BTreeMap<String, String>,
) -> Result<()> {
    let body = json!({
        "name": name,
        "type": "custom",
        "config": config,
        "source": {
            "type": "copy",
            "name": volume.name,
            "pool": volume.pool,
            "volume_only": true,
        },
    });
    client.execute(
        &Request::post(
            format!("/storage-pools/{}/volumes/custom", escape(&volume.pool)),
            body,
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Renames the volume (Incus points the devices that attach it to the new name).
pub fn rename(client: &Client, volume: &VolumeRef, new_name: &str) -> Result<()> {
    client.execute(
        &Request::post(volume.path(), json!({ "name": new_name })),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Deletes the volume (and its snapshots).
pub fn delete(client: &Client, volume: &VolumeRef) -> Result<()> {
    client.execute(&Request::delete(volume.path()), &WaitOptions::plain())?;
    Ok(())
}

/// The instances (of the client's project) that use the volume, by name.
pub fn used_by_instances(client: &Client, volume: &VolumeRef) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct UsedBy {
        #[serde(default, deserialize_with = "nullable")]
        used_by: Vec<String>,
    }
    let read: UsedBy = client.get(&volume.path())?;
    Ok(read
        .used_by
        .iter()
        .filter(|url| url.starts_with("/1.0/instances/"))
        .filter(|url| !url.contains("/snapshots/"))
        .map(|url| super::last_segment(url))
        .collect())
}

/// Every custom volume of the client's project with its snapshots (name, creation time),
/// oldest first, and its configuration, from one call per pool.
pub type Listing = BTreeMap<VolumeRef, ListedVolume>;

/// One volume of a [`Listing`].
#[derive(Debug, Clone, Default)]
pub struct ListedVolume {
    pub config: BTreeMap<String, String>,
    pub snapshots: Vec<(String, DateTime<Utc>)>,
}

/// One copy or refresh of a custom volume (with its snapshots) to another server.
pub struct VolumeTransfer<'a> {
    pub source: &'a Client,
    pub volume: &'a VolumeRef,
    /// The source volume as read (its description and content type go with it).
    pub read: &'a Volume,
    pub target: &'a Client,
    /// The configuration of the new volume (a refresh keeps the target's).
    pub config: &'a BTreeMap<String, String>,
    pub refresh: bool,
    /// On a clustered target: the member for a new volume (`?target=`).
    pub placement: Option<&'a str>,
}

impl VolumeTransfer<'_> {
    /// Runs the transfer and waits until the target has it all.
    pub fn run(&self, mode: Mode, wait: &WaitOptions) -> Result<Option<String>> {
        migration::run(self, mode, wait)
    }
}

impl Endpoints for VolumeTransfer<'_> {
    fn source(&self) -> &Client {
        self.source
    }

    fn target(&self) -> &Client {
        self.target
    }

    fn start_source(&self, target: Value) -> Result<Operation> {
        migration::started(
            self.source,
            Request::post(
                self.volume.path(),
                json!({
                    "name": self.volume.name,
                    "pool": self.volume.pool,
                    "migration": true,
                    "volume_only": false,
                    "target": target,
                }),
            ),
        )
    }

    fn start_target(&self, source: Map<String, Value>) -> Result<Operation> {
        let body = json!({
            "name": self.volume.name,
            "type": "custom",
            "config": self.config,
            "description": self.read.description,
            "content_type": self.read.content_type,
            "source": Value::Object(source),
        });
        let mut request = Request::post(
            format!(
                "/storage-pools/{}/volumes/custom",
                escape(&self.volume.pool)
            ),
            body,
        );
        if let Some(member) = self.placement {
            request = request.query("target", member);
        }
        migration::started(self.target, request)
    }

    fn migration_source(&self, mode: Mode) -> Map<String, Value> {
        let mut source = Map::new();
        source.insert("type".into(), json!("migration"));
        source.insert(
            "mode".into(),
            json!(if mode == Mode::Pull { "pull" } else { "push" }),
        );
        source.insert("name".into(), json!(self.volume.name));
        source.insert("pool".into(), json!(self.volume.pool));
        source.insert("certificate".into(), json!(""));
        source.insert("volume_only".into(), json!(false));
        source.insert("refresh".into(), json!(self.refresh));
        source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(pairs: &[(&str, &str)]) -> Device {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("type".to_string(), "disk".to_string())])
            .collect()
    }

    #[test]
    fn attached_volumes_are_disks_naming_a_volume_of_a_pool() {
        let devices = BTreeMap::from([
            (
                "root".to_string(),
                disk(&[("path", "/"), ("pool", "default")]),
            ),
            (
                "data".to_string(),
                disk(&[("path", "/data"), ("pool", "fast"), ("source", "dbdata")]),
            ),
            (
                "again".to_string(),
                disk(&[("path", "/again"), ("pool", "fast"), ("source", "dbdata")]),
            ),
            (
                "blk".to_string(),
                disk(&[("pool", "default"), ("source", "raw1")]),
            ),
            (
                "host".to_string(),
                disk(&[("path", "/mnt"), ("source", "/srv/share")]),
            ),
        ]);
        let found = attached(&devices);
        let names: Vec<String> = found.iter().map(|a| a.volume.to_string()).collect();
        assert_eq!(names, vec!["default/raw1", "fast/dbdata"]);
        assert_eq!(found[0].path, None);
        assert_eq!(found[1].device, "again");
    }

    #[test]
    fn volume_addresses_need_a_pool_and_a_name() {
        assert_eq!(
            VolumeRef::parse("fast/dbdata"),
            Some(VolumeRef::new("fast", "dbdata"))
        );
        assert_eq!(VolumeRef::parse("dbdata"), None);
        assert_eq!(VolumeRef::parse("/dbdata"), None);
        assert_eq!(VolumeRef::parse("a/b/c"), None);
    }
}
