//! Which instances and which replicas: the primary's instances named on the command line, each
//! paired with the instance of the same name on the standby. Naming an instance needs no
//! server, so a dead primary does not stop the bad day's commands; `REMOTE:` and `--all` list
//! the primary, or, when it does not answer, the replicas the standby holds.

use crate::address::Target;
use crate::api::instances;
use crate::client::Client;
use crate::markers::ReplicaMarkers;
use crate::record::{InstanceRef, Output};
use crate::select::Connections;

use super::Error;

fn usage(message: impl std::fmt::Display) -> Error {
    Error::Usage(message.to_string())
}

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
    #[arg(long, value_name = "PROJECT", default_value = crate::replication::ARCHIVE_PROJECT)]
    pub archive_project: String,
}

/// An instance of the primary and where its replica is.
#[derive(Debug, Clone)]
pub struct Pair {
    pub of: InstanceRef,
    pub replica_project: String,
    /// Named on the command line (not found by listing `REMOTE:` or `--all`).
    pub named: bool,
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
    pub fn primary(&self, pair: &Pair) -> crate::Result<Client> {
        self.connections
            .client(&pair.of.remote, Some(&pair.of.project))
    }

    /// The standby projects the replicas are in, each once, sorted.
    pub fn replica_projects(&self) -> Vec<&str> {
        let mut projects: Vec<&str> = self
            .pairs
            .iter()
            .map(|p| p.replica_project.as_str())
            .collect();
        projects.sort_unstable();
        projects.dedup();
        projects
    }

    /// A client for the replica side of a pair.
    pub fn replica(&self, pair: &Pair) -> Client {
        self.standby.in_project(&pair.replica_project)
    }
}

/// Resolves the targets; instances that cannot be found are reported through `output`.
pub fn resolve(args: &PairArgs, output: &Output) -> Result<Pairs, Error> {
    let connections = Connections::load().map_err(|e| usage(e.to_string()))?;
    let standby = connections
        .client(&args.standby, None)
        .map_err(|e| match e {
            e @ crate::Error::UnknownRemote { .. } => usage(format!("--standby: {e}")),
            e => e.into(),
        })?;
    let wanted = wanted(args, connections.remotes())?;
    let mut finder = Finder {
        standby,
        standby_name: args.standby.clone(),
        project: args.project.clone(),
        target_project: args.target_project.clone(),
        output,
        pairs: Vec::new(),
        connections,
    };
    for target in wanted {
        finder.add_target(target)?;
    }
    Ok(Pairs {
        pairs: finder.pairs,
        connections: finder.connections,
        standby: finder.standby,
    })
}

/// The targets named, checked against the remotes (`--all`: the default remote). Usage
/// errors only; nothing is read from a server.
fn wanted(args: &PairArgs, remotes: &crate::remote::Remotes) -> Result<Vec<Target>, Error> {
    let default_remote = remotes.default_remote().to_string();
    let mut wanted: Vec<Target> = Vec::new();
    for text in &args.targets {
        let target = match Target::parse(text).map_err(usage)? {
            Target::Instance(address) if address.snapshot.is_some() => {
                return Err(usage(format!(
                    "\"{text}\" names a snapshot; name the instance"
                )));
            }
            Target::Instance(mut address) => {
                address.remote = Some(address.remote.unwrap_or_else(|| default_remote.clone()));
                Target::Instance(address)
            }
            remote => remote,
        };
        let remote = match &target {
            Target::Remote(remote) => remote.as_str(),
            Target::Instance(address) => address.remote.as_deref().unwrap_or_default(),
        };
        remotes.get(remote).map_err(|e| usage(e.to_string()))?;
        if remote == args.standby {
            return Err(usage(format!(
                "\"{text}\" is on the standby {remote}; name the primary's instances"
            )));
        }
        wanted.push(target);
    }
    if args.all {
        wanted.push(Target::Remote(default_remote));
    }
    if wanted.is_empty() {
        return Err(usage(
            "no instances named: give [REMOTE:]INSTANCE, REMOTE: or --all (the primary's instances)",
        ));
    }
    Ok(wanted)
}

/// Finds the pairs the targets name, each once.
struct Finder<'a> {
    connections: Connections,
    standby: Client,
    standby_name: String,
    /// `--project`, `--target-project`.
    project: Option<String>,
    target_project: Option<String>,
    output: &'a Output,
    pairs: Vec<Pair>,
}

impl Finder<'_> {
    fn add(&mut self, remote: &str, project: &str, instance: String, named: bool) {
        let pair = Pair {
            named,
            of: InstanceRef {
                remote: remote.to_string(),
                project: project.to_string(),
                instance,
            },
            replica_project: self
                .target_project
                .clone()
                .unwrap_or_else(|| project.to_string()),
        };
        if !self.pairs.iter().any(|p| p.of == pair.of) {
            self.pairs.push(pair);
        }
    }

    fn add_target(&mut self, target: Target) -> Result<(), Error> {
        let (remote, instance) = match target {
            Target::Instance(address) => {
                (address.remote.unwrap_or_default(), Some(address.instance))
            }
            Target::Remote(remote) => (remote, None),
        };
        let project = self
            .project
            .clone()
            .unwrap_or_else(|| self.connections.remotes().project(&remote));
        if let Some(instance) = instance {
            self.add(&remote, &project, instance, true);
            return Ok(());
        }
        let client = self.connections.client(&remote, Some(&project))?;
        match instances::list(&client, false) {
            Ok(list) => {
                for instance in list {
                    self.add(&remote, &project, instance.name, false);
                }
            }
            Err(e @ crate::Error::Unreachable { .. }) => {
                self.output.note(&format!(
                    "{remote} does not answer ({}); using the replicas on {} instead",
                    e.message(),
                    self.standby_name
                ));
                self.add_replicas_of(&remote, &project)?;
            }
            Err(e) => self.output.remote_error(
                &remote,
                Some(&project),
                &format!("listing instances: {e}"),
            ),
        }
        Ok(())
    }

    /// The bad day: the replicas the standby holds stand for the instances. Only this
    /// primary's own replicas under their own names: not the ones moved aside (`--replace`,
    /// `--at`), nor another primary's.
    fn add_replicas_of(&mut self, remote: &str, project: &str) -> Result<(), Error> {
        let replica_project = self
            .target_project
            .clone()
            .unwrap_or_else(|| project.to_string());
        let replicas = instances::list(&self.standby.in_project(&replica_project), false)
            .map_err(|e| Error::incus("listing the replicas", e))?;
        let pinned = self
            .connections
            .remotes()
            .server_cert_path(remote)
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|pem| crate::client::tls::pem_fingerprint(&pem));
        for replica in replicas {
            if is_replica_of(&replica, project, pinned.as_deref()) {
                self.add(remote, project, replica.name, false);
            }
        }
        Ok(())
    }
}

/// True when `replica` is a replica (made by incus-push) of the instance of the same name in
/// `project` on the primary whose certificate fingerprint is `pinned` (when known): its
/// marker is `FINGERPRINT12/PROJECT/NAME`, and it was not moved aside.
pub fn is_replica_of(
    replica: &crate::api::instances::Instance,
    project: &str,
    pinned: Option<&str>,
) -> bool {
    let markers = ReplicaMarkers::from_config(&replica.config);
    let Some(source) = markers.source else {
        return false;
    };
    if markers.replaced.is_some() {
        return false;
    }
    let Some((fingerprint, source_project, name)) = source.parts() else {
        return false;
    };
    source_project == project
        && name == replica.name
        && pinned.is_none_or(|p| p.starts_with(fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instances::Instance;
    use crate::markers::{ReplaceReason, Replaced, SourceId};

    fn replica(name: &str, marker: &str, replaced: bool) -> Instance {
        let markers = ReplicaMarkers {
            source: Some(SourceId::from_marker(marker)),
            replaced: replaced.then(|| Replaced::now(ReplaceReason::Other("x".into()))),
            ..ReplicaMarkers::default()
        };
        let mut config = std::collections::BTreeMap::new();
        markers.to_patch().apply_to(&mut config);
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
