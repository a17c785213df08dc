//! Projects and storage pools: the archive project, pool drivers, and every snapshot of a
//! project in one call per pool.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::json;

use crate::client::{Client, Request, WaitOptions, escape};
use crate::error::Result;

/// Makes a project for archive points if it does not exist: it shares the default project's
/// profiles and images (`features.profiles=false`, `features.images=false`), so that a copy
/// of a replica's snapshot finds its profiles.
pub fn ensure(client: &Client, name: &str, description: &str) -> Result<()> {
    match client.send(&Request::get(format!("/projects/{}", escape(name))).project(None)) {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let body = json!({
        "name": name,
        "description": description,
        "config": {
            "features.images": "false",
            "features.profiles": "false",
            "features.storage.volumes": "false",
        },
    });
    match client.execute(
        &Request::post("/projects", body).project(None),
        &WaitOptions::plain(),
    ) {
        Ok(_) => Ok(()),
        // Made by another job meanwhile.
        Err(e) if e.message().contains("already exists") => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct Pool {
    #[serde(default)]
    driver: String,
}

/// Whether the server has a storage pool of that name.
pub fn pool_exists(client: &Client, pool: &str) -> Result<bool> {
    match client.get::<Pool>(&format!("/storage-pools/{}", escape(pool))) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The names of the server's storage pools.
pub fn pool_names(client: &Client) -> Result<Vec<String>> {
    let urls: Vec<String> = client.get("/storage-pools")?;
    Ok(urls.iter().map(|url| super::last_segment(url)).collect())
}

/// The driver of a storage pool (`dir`, `btrfs`, `zfs`, `lvm`, …).
pub fn pool_driver(client: &Client, pool: &str) -> Result<String> {
    let pool: Pool = client.get(&format!("/storage-pools/{}", escape(pool)))?;
    Ok(pool.driver)
}

/// Instance name -> its snapshots (name, creation time), oldest first.
pub type SnapshotsByInstance =
    std::collections::BTreeMap<String, Vec<(String, chrono::DateTime<chrono::Utc>)>>;

/// What the storage pools of a project list: instance snapshots, and custom volumes with
/// their snapshots and configuration.
#[derive(Debug, Default)]
pub struct PoolListing {
    pub instances: SnapshotsByInstance,
    pub volumes: super::volumes::Listing,
}

#[derive(Deserialize)]
struct Volume {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, deserialize_with = "super::nullable")]
    config: BTreeMap<String, String>,
    /// `recursion=2` (Incus 7.0): the volume's snapshots, embedded.
    #[serde(default, deserialize_with = "super::nullable")]
    snapshots: Vec<EmbeddedSnapshot>,
}

#[derive(Deserialize)]
struct EmbeddedSnapshot {
    #[serde(default)]
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Every instance snapshot and custom volume of the client's project as the storage pools
/// list them, from one call per pool (`GET /1.0/storage-pools/POOL/volumes?recursion=1`
/// lists volumes and their snapshots, `NAME/SNAPSHOT`). Far cheaper than a snapshot list per
/// instance, and than `instances?recursion=2`, which gathers the state of every running
/// instance. The times are the volumes' (they equal the snapshots' to the second); callers
/// use this only to see that nothing changed, and read the authoritative list before acting.
pub fn pool_listing(client: &Client) -> Result<PoolListing> {
    let recursion = if client.server()?.features().full_volume_listing {
        "2"
    } else {
        "1"
    };
    let pools: Vec<String> = client.get("/storage-pools")?;
    let mut all = PoolListing::default();
    for pool in pools {
        let pool = super::last_segment(&pool);
        let listed: Vec<Volume> = client
            .fetch(
                &Request::get(format!("/storage-pools/{}/volumes", escape(&pool)))
                    .query("recursion", recursion),
            )?
            .0;
        // Embedded snapshots (recursion=2) as the entries recursion=1 gives.
        let mut volumes = Vec::new();
        for mut volume in listed {
            for snapshot in std::mem::take(&mut volume.snapshots) {
                let name = snapshot
                    .name
                    .rsplit('/')
                    .next()
                    .unwrap_or(&snapshot.name)
                    .to_string();
                volumes.push(Volume {
                    name: format!("{}/{name}", volume.name),
                    kind: volume.kind.clone(),
                    created_at: Some(snapshot.created_at),
                    config: BTreeMap::new(),
                    snapshots: Vec::new(),
                });
            }
            volumes.push(volume);
        }
        for volume in volumes {
            let (owner, snapshot) = match volume.name.split_once('/') {
                Some((owner, snapshot)) => (owner.to_string(), Some(snapshot.to_string())),
                None => (volume.name.clone(), None),
            };
            let snapshots = match volume.kind.as_str() {
                "container" | "virtual-machine" => all.instances.entry(owner).or_default(),
                "custom" => {
                    let listed = all
                        .volumes
                        .entry(super::volumes::VolumeRef::new(&pool, &owner))
                        .or_default();
                    if snapshot.is_none() {
                        listed.config = volume.config;
                    }
                    &mut listed.snapshots
                }
                _ => continue,
            };
            if let (Some(snapshot), Some(at)) = (snapshot, volume.created_at) {
                snapshots.push((snapshot, at));
            }
        }
    }
    let by_time = |a: &(String, chrono::DateTime<chrono::Utc>),
                   b: &(String, chrono::DateTime<chrono::Utc>)| {
        a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0))
    };
    for list in all.instances.values_mut() {
        list.sort_by(by_time);
    }
    for listed in all.volumes.values_mut() {
        listed.snapshots.sort_by(by_time);
    }
    Ok(all)
}

/// The listings of [`pool_listing`], read at most once per remote and project and
/// shared between threads: what a run needs to compare snapshot lists, in a constant number
/// of requests whatever the number of instances.
#[derive(Default)]
pub struct PooledSnapshots {
    /// Per (remote, project): the listing, or `None` when it is not to be used.
    cache: Mutex<BTreeMap<(String, String), Listing>>,
}

type Listing = Option<Arc<PoolListing>>;

impl PooledSnapshots {
    /// One instance's snapshots (name, creation time), oldest first, as its project's storage
    /// pools list them. `None` when that is not known: the listing failed, holds no snapshot
    /// at all (Incus 6.0.4 lists instance snapshots among a pool's volumes; a release that
    /// leaves them out would otherwise make every instance look snapshot-less), or lacks the
    /// instance (made after the listing). Callers then read the instance's own list.
    pub fn of(
        &self,
        client: &Client,
        instance: &str,
    ) -> Option<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        self.listing(client)?.instances.get(instance).cloned()
    }

    /// One custom volume as the pools list it, `None` when the listing is not known or lacks
    /// it.
    pub fn volume(
        &self,
        client: &Client,
        volume: &super::volumes::VolumeRef,
    ) -> Option<super::volumes::ListedVolume> {
        self.listing(client)?.volumes.get(volume).cloned()
    }

    /// The whole listing of the client's remote and project (`None`: not known).
    pub fn listing(&self, client: &Client) -> Option<Arc<PoolListing>> {
        let key = (client.remote().to_string(), client.project().to_string());
        let mut cache = self.cache.lock().ok()?;
        cache
            .entry(key)
            .or_insert_with(|| {
                pool_listing(client)
                    .ok()
                    .filter(|listing| listing.instances.values().any(|list| !list.is_empty()))
                    .map(Arc::new)
            })
            .clone()
    }
}
