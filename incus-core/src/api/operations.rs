//! Listing operations (to find work still running on an instance).

use std::collections::BTreeMap;

use crate::client::{Client, Operation, Request};
use crate::error::Result;

/// The operations of the client's project that are not finished.
pub fn running(client: &Client) -> Result<Vec<Operation>> {
    let (by_status, _): (BTreeMap<String, Vec<Operation>>, _) =
        client.fetch(&Request::get("/operations").query("recursion", "1"))?;
    Ok(by_status
        .into_values()
        .flatten()
        .filter(|op| !op.is_final())
        .collect())
}
