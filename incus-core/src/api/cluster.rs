//! Clusters: whether a server is one, its members and its groups.

use crate::client::{Client, escape};
use crate::error::{Error, Result};

/// What the tools need to know of a server's clustering, read once per run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The member names, sorted (empty: a single server).
    pub members: Vec<String>,
    /// Those the cluster calls `Offline` (no heartbeat for `cluster.offline_threshold`).
    pub offline: Vec<String>,
}

impl Membership {
    /// True when the server is a cluster.
    pub fn is_cluster(&self) -> bool {
        !self.members.is_empty()
    }

    /// True when the cluster has a member of that name.
    pub fn has_member(&self, name: &str) -> bool {
        self.members.iter().any(|m| m == name)
    }

    /// The members that answer: where a new instance may be placed by name (a member that
    /// is offline cannot take it; the cluster's own scheduler avoids it).
    pub fn online(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !self.offline.contains(m))
            .cloned()
            .collect()
    }
}

/// Whether the server is a cluster and, if so, its members (its server information, read
/// once per connection, and one request on a cluster).
pub fn membership(client: &Client) -> Result<Membership> {
    if !client.server()?.environment.server_clustered {
        return Ok(Membership::default());
    }
    #[derive(serde::Deserialize)]
    struct Member {
        #[serde(default)]
        server_name: String,
        #[serde(default)]
        status: String,
    }
    let listed: Vec<Member> = client
        .fetch(&crate::client::Request::get("/cluster/members").query("recursion", "1"))?
        .0;
    let mut members: Vec<String> = listed.iter().map(|m| m.server_name.clone()).collect();
    members.sort();
    let mut offline: Vec<String> = listed
        .into_iter()
        .filter(|m| m.status.eq_ignore_ascii_case("offline"))
        .map(|m| m.server_name)
        .collect();
    offline.sort();
    Ok(Membership { members, offline })
}

/// The address (`https://HOST:PORT`) of every member of the cluster (empty: a single
/// server).
pub fn member_urls(client: &Client) -> Result<Vec<String>> {
    if !client.server()?.environment.server_clustered {
        return Ok(Vec::new());
    }
    #[derive(serde::Deserialize)]
    struct Member {
        #[serde(default)]
        url: String,
    }
    let members: Vec<Member> = client
        .fetch(&crate::client::Request::get("/cluster/members").query("recursion", "1"))?
        .0;
    let mut urls: Vec<String> = members
        .into_iter()
        .map(|m| m.url)
        .filter(|u| !u.is_empty())
        .collect();
    urls.sort();
    Ok(urls)
}

/// A member's state as its cluster sees it: `Online`, `Offline` (no heartbeat for
/// `cluster.offline_threshold`), `Evacuated`, `Blocked`.
pub fn member_status(client: &Client, member: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Member {
        #[serde(default)]
        status: String,
    }
    let state: Member = client.get(&format!("/cluster/members/{}", escape(member)))?;
    Ok(state.status)
}

/// Fails with a one-line error unless the cluster has that group.
pub fn check_group(client: &Client, group: &str) -> Result<()> {
    match client.get::<serde_json::Value>(&format!("/cluster/groups/{}", escape(group))) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(Error::Config(format!(
            "{} has no cluster group \"{group}\" (see incus cluster group list {}:)",
            client.remote(),
            client.remote()
        ))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offline_member_takes_no_new_instance_by_name() {
        let membership = Membership {
            members: vec!["m1".into(), "m2".into(), "m3".into()],
            offline: vec!["m2".into()],
        };
        assert!(membership.is_cluster());
        assert!(membership.has_member("m2"));
        assert_eq!(membership.online(), ["m1", "m3"]);
        // With the same-named member offline, a new replica goes where the scheduler says.
        let placement = crate::replication::placement::target(
            &crate::replication::Placement::Auto,
            None,
            Some("m2"),
            &membership.online(),
        );
        assert_eq!(placement, None);
    }
}
