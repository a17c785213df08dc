//! Profiles: which exist, and copying one to another server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::instances::Device;
use super::{last_segment, nullable};
use crate::client::{Client, Request, WaitOptions, escape};
use crate::error::Result;

/// A profile's definition.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub devices: BTreeMap<String, Device>,
}

/// The names of the profiles of the client's project.
pub fn names(client: &Client) -> Result<Vec<String>> {
    let urls: Vec<String> = client.get("/profiles")?;
    Ok(urls.iter().map(|u| last_segment(u)).collect())
}

/// One profile.
pub fn get(client: &Client, name: &str) -> Result<Profile> {
    client.get(&format!("/profiles/{}", escape(name)))
}

/// Creates a profile (as `incus profile copy` does).
pub fn create(client: &Client, profile: &Profile) -> Result<()> {
    client.execute(
        &Request::post(
            "/profiles",
            json!({
                "name": profile.name,
                "description": profile.description,
                "config": profile.config,
                "devices": profile.devices,
            }),
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}
