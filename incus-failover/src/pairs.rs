//! Which instances and which replicas: the primary's instances named on the command line, each
//! paired with the instance of the same name on the standby. Naming an instance needs no
//! server, so a dead primary does not stop the bad day's commands; `REMOTE:` and `--all` list
//! the primary, or, when it does not answer, the replicas the standby holds.

use anyhow::Result;
use incus_core::address::Target;
use incus_core::api::instances;
use incus_core::cli::usage;
use incus_core::client::Client;
use incus_core::record::{InstanceRef, Output};
use incus_core::replication::SOURCE_KEY;
use incus_core::select::Connections;

/// The flags every subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct PairArgs {
    /// The primary's instances: INSTANCE or REMOTE:INSTANCE, or REMOTE: for every instance
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Every instance on the default remote
    #[arg(long)]
    pub all: bool,
    /// Project on the primary (default: the remote's project in the incus configuration)
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// The standby remote that holds the replicas
    #[arg(long, value_name = "REMOTE")]
    pub standby: String,
    /// Project of the replicas on the standby (default: the instance's project)
    #[arg(long, value_name = "PROJECT")]
    pub target_project: Option<String>,
    /// The standby project of the archive points (incus-push --archive-*)
    #[arg(long, value_name = "PROJECT", default_value = incus_core::replication::ARCHIVE_PROJECT)]
    pub archive_project: String,
}

/// An instance of the primary and where its replica is.
#[derive(Debug, Clone)]
pub struct Pair {
    pub of: InstanceRef,
    pub replica_project: String,
}

/// What a subcommand works on.
pub struct Pairs {
    pub pairs: Vec<Pair>,
    pub connections: Connections,
    /// The standby in its default project.
    pub standby: Client,
}

impl Pairs {
    /// A client for the primary side of a pair.
    pub fn primary(&self, pair: &Pair) -> incus_core::Result<Client> {
        self.connections
            .client(&pair.of.remote, Some(&pair.of.project))
    }

    /// A client for the replica side of a pair.
    pub fn replica(&self, pair: &Pair) -> Client {
        self.standby.in_project(&pair.replica_project)
    }
}

/// Resolves the targets; instances that cannot be found are reported through `output`.
pub fn resolve(args: &PairArgs, output: &Output) -> Result<Pairs> {
    let connections = Connections::load().map_err(|e| usage(e.to_string()))?;
    connections
        .remotes()
        .get(&args.standby)
        .map_err(|e| usage(format!("--standby: {e}")))?;
    let default_remote = connections.remotes().default_remote().to_string();
    let mut wanted: Vec<Target> = Vec::new();
    for text in &args.targets {
        let target = Target::parse(text).map_err(usage)?;
        let remote = match &target {
            Target::Remote(remote) => remote.clone(),
            Target::Instance(address) => {
                if address.snapshot.is_some() {
                    return Err(usage(format!(
                        "\"{text}\" names a snapshot; name the instance"
                    )));
                }
                address
                    .remote
                    .clone()
                    .unwrap_or_else(|| default_remote.clone())
            }
        };
        connections
            .remotes()
            .get(&remote)
            .map_err(|e| usage(e.to_string()))?;
        if remote == args.standby {
            return Err(usage(format!(
                "\"{text}\" is on the standby {remote}; name the primary's instances"
            )));
        }
        wanted.push(target);
    }
    if args.all {
        wanted.push(Target::Remote(default_remote.clone()));
    }
    if wanted.is_empty() {
        return Err(usage(
            "no instances named: give [REMOTE:]INSTANCE, REMOTE: or --all (the primary's instances)",
        ));
    }
    let standby = connections.client(&args.standby, None)?;
    let mut pairs: Vec<Pair> = Vec::new();
    let mut add = |pair: Pair| {
        if !pairs.iter().any(|p| p.of == pair.of) {
            pairs.push(pair);
        }
    };
    for target in wanted {
        match target {
            Target::Instance(address) => {
                let remote = address.remote.unwrap_or_else(|| default_remote.clone());
                let project = args
                    .project
                    .clone()
                    .unwrap_or_else(|| connections.remotes().project(&remote));
                add(pair(args, remote, project, address.instance));
            }
            Target::Remote(remote) => {
                let project = args
                    .project
                    .clone()
                    .unwrap_or_else(|| connections.remotes().project(&remote));
                let client = connections.client(&remote, Some(&project))?;
                match instances::list(&client, false) {
                    Ok(list) => {
                        for instance in list {
                            add(pair(args, remote.clone(), project.clone(), instance.name));
                        }
                    }
                    Err(e @ incus_core::Error::Unreachable { .. }) => {
                        // The bad day: the replicas the standby holds stand for the instances.
                        let replica_project = args
                            .target_project
                            .clone()
                            .unwrap_or_else(|| project.clone());
                        output.note(&format!(
                            "{remote} does not answer ({}); using the replicas on {} instead",
                            e.message(),
                            args.standby
                        ));
                        let replicas =
                            instances::list(&standby.in_project(&replica_project), false)
                                .map_err(|e| anyhow::anyhow!("listing the replicas: {e}"))?;
                        // Only this primary's own replicas under their own names: not the
                        // ones moved aside (`--replace`, `--at`), nor another primary's.
                        let pinned = connections
                            .remotes()
                            .server_cert_path(&remote)
                            .and_then(|path| std::fs::read(path).ok())
                            .and_then(|pem| incus_core::client::tls::pem_fingerprint(&pem));
                        for replica in replicas {
                            if is_replica_of(&replica, &project, pinned.as_deref()) {
                                add(pair(args, remote.clone(), project.clone(), replica.name));
                            }
                        }
                    }
                    Err(e) => output.remote_error(
                        &remote,
                        Some(&project),
                        &format!("listing instances: {e}"),
                    ),
                }
            }
        }
    }
    Ok(Pairs {
        pairs,
        connections,
        standby,
    })
}

/// True when `replica` is a replica (made by incus-push) of the instance of the same name in
/// `project` on the primary whose certificate fingerprint is `pinned` (when known): its
/// marker is `FINGERPRINT12/PROJECT/NAME`, and it was not moved aside.
pub fn is_replica_of(
    replica: &incus_core::api::instances::Instance,
    project: &str,
    pinned: Option<&str>,
) -> bool {
    let Some(marker) = replica.config.get(SOURCE_KEY) else {
        return false;
    };
    if replica
        .config
        .contains_key(incus_core::replication::REPLACED_KEY)
    {
        return false;
    }
    let mut parts = marker.splitn(3, '/');
    let (Some(fingerprint), Some(source_project), Some(name)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    source_project == project
        && name == replica.name
        && pinned.is_none_or(|p| p.starts_with(fingerprint))
}

fn pair(args: &PairArgs, remote: String, project: String, instance: String) -> Pair {
    let replica_project = args
        .target_project
        .clone()
        .unwrap_or_else(|| project.clone());
    Pair {
        of: InstanceRef {
            remote,
            project,
            instance,
        },
        replica_project,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use incus_core::api::instances::Instance;

    fn replica(name: &str, marker: &str, replaced: bool) -> Instance {
        let mut config =
            std::collections::BTreeMap::from([(SOURCE_KEY.to_string(), marker.to_string())]);
        if replaced {
            config.insert(
                incus_core::replication::REPLACED_KEY.to_string(),
                "x".to_string(),
            );
        }
        Instance {
            name: name.into(),
            config,
            ..Instance::default()
        }
    }

    #[test]
    fn only_this_primarys_own_replicas_stand_for_its_instances() {
        let fp = "0123456789abcdef";
        assert!(is_replica_of(
            &replica("web", "0123456789ab/default/web", false),
            "default",
            Some(fp)
        ));
        // Moved aside by --replace, or renamed: not the instance's replica.
        assert!(!is_replica_of(
            &replica(
                "web-replaced-20261130-120000",
                "0123456789ab/default/web",
                true
            ),
            "default",
            Some(fp)
        ));
        assert!(!is_replica_of(
            &replica("web-old", "0123456789ab/default/web", false),
            "default",
            Some(fp)
        ));
        // Another primary's, or another project's.
        assert!(!is_replica_of(
            &replica("web", "ffffffffffff/default/web", false),
            "default",
            Some(fp)
        ));
        assert!(!is_replica_of(
            &replica("web", "0123456789ab/other/web", false),
            "default",
            Some(fp)
        ));
        assert!(is_replica_of(
            &replica("web", "ffffffffffff/default/web", false),
            "default",
            None
        ));
    }
}
