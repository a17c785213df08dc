//! Networks: the names the server knows (managed networks and host interfaces alike).

use super::last_segment;
use crate::client::{Client, Request};
use crate::error::Result;

/// Every network name `GET /1.0/networks` lists: managed networks and the host's interfaces
/// (a macvlan or physical NIC's `parent` is one of these).
pub fn names(client: &Client) -> Result<Vec<String>> {
    let urls: Vec<String> = client.fetch(&Request::get("/networks"))?.0;
    Ok(urls.iter().map(|url| last_segment(url)).collect())
}
