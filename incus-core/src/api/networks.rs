//! Networks: the names the server knows (managed networks and host interfaces alike).

use serde::Deserialize;

use super::last_segment;
use crate::client::{Client, Request};
use crate::error::Result;

/// Every network name `GET /1.0/networks` lists: managed networks and the host's interfaces
/// (a macvlan or physical NIC's `parent` is one of these).
pub fn names(client: &Client) -> Result<Vec<String>> {
    let urls: Vec<String> = client.fetch(&Request::get("/networks"))?.0;
    Ok(urls.iter().map(|url| last_segment(url)).collect())
}

/// One network as `GET /1.0/networks?recursion=1` lists it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// Made by Incus (`incus network create`); the host's own interfaces are listed too, not
    /// managed. A NIC's `network` must name a managed one.
    #[serde(default)]
    pub managed: bool,
    /// `bridge`, `macvlan`, `physical`, `loopback`, …
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// Every network of the client's project, managed or not (one request). On a cluster, the
/// host interfaces are those of the member that answers.
pub fn list(client: &Client) -> Result<Vec<Network>> {
    Ok(client
        .fetch(&Request::get("/networks").query("recursion", "1"))?
        .0)
}
