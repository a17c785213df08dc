//! Projects and storage pools: the little the archive points need.

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

/// The driver of a storage pool (`dir`, `btrfs`, `zfs`, `lvm`, …).
pub fn pool_driver(client: &Client, pool: &str) -> Result<String> {
    let pool: Pool = client.get(&format!("/storage-pools/{}", escape(pool)))?;
    Ok(pool.driver)
}
