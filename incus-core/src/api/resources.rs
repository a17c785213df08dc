//! `GET /1.0/resources`: the host's CPUs and memory (what an instance's limits may ask).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::nullable;
use crate::client::{Client, Request};
use crate::error::Result;

/// What a host offers an instance's `limits.cpu` and `limits.memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The ids of its online CPU threads (what `limits.cpu` pins).
    pub cpus: BTreeSet<u64>,
    /// Its memory, in bytes.
    pub memory: u64,
}

#[derive(Deserialize, Default)]
struct Resources {
    #[serde(default)]
    cpu: Cpu,
    #[serde(default)]
    memory: Memory,
}

#[derive(Deserialize, Default)]
struct Cpu {
    #[serde(default, deserialize_with = "nullable")]
    sockets: Vec<Socket>,
    #[serde(default)]
    total: u64,
}

#[derive(Deserialize, Default)]
struct Socket {
    #[serde(default, deserialize_with = "nullable")]
    cores: Vec<Core>,
}

#[derive(Deserialize, Default)]
struct Core {
    #[serde(default, deserialize_with = "nullable")]
    threads: Vec<Thread>,
}

#[derive(Deserialize, Default)]
struct Thread {
    id: u64,
    #[serde(default = "online")]
    online: bool,
}

fn online() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct Memory {
    #[serde(default)]
    total: u64,
}

/// The host's CPUs and memory; on a cluster, those of `member` (`None`: the member that
/// answers).
pub fn host(client: &Client, member: Option<&str>) -> Result<Host> {
    let mut request = Request::get("/resources");
    if let Some(member) = member {
        request = request.query("target", member);
    }
    let resources: Resources = client.fetch(&request)?.0;
    Ok(host_of(resources))
}

fn host_of(resources: Resources) -> Host {
    let mut cpus: BTreeSet<u64> = resources
        .cpu
        .sockets
        .iter()
        .flat_map(|s| &s.cores)
        .flat_map(|c| &c.threads)
        .filter(|t| t.online)
        .map(|t| t.id)
        .collect();
    // A host that does not detail its threads: ids 0 to total - 1.
    if cpus.is_empty() {
        cpus = (0..resources.cpu.total).collect();
    }
    Host {
        cpus,
        memory: resources.memory.total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_cpus_are_its_online_threads() {
        let resources: Resources = serde_json::from_str(
            r#"{"cpu":{"total":3,"sockets":[{"cores":[
                {"threads":[{"id":0,"online":true},{"id":1,"online":false}]},
                {"threads":[{"id":2,"online":true}]}]}]},
               "memory":{"total":2048}}"#,
        )
        .unwrap_or_default();
        let host = host_of(resources);
        assert_eq!(host.cpus, BTreeSet::from([0, 2]));
        assert_eq!(host.memory, 2048);
        let bare: Resources =
            serde_json::from_str(r#"{"cpu":{"total":2,"sockets":null}}"#).unwrap_or_default();
        assert_eq!(host_of(bare).cpus, BTreeSet::from([0, 1]));
    }
}
