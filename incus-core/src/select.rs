//! Choosing instances, the same way in every tool: `[REMOTE:]INSTANCE`, `REMOTE:`, `--all`,
//! and every instance named by a stdin record, in that order, without duplicates; then
//! `--exclude` and `--running`/`--stopped`. One list call per remote and project.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crate::address::Target;
use crate::api::instances::{self, Instance};
use crate::client::Client;
use crate::record::{InputRecord, InstanceRef, Output, read_stdin};
use crate::remote::Remotes;

/// The target flags every tool has.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Instances to work on: INSTANCE or REMOTE:INSTANCE, or REMOTE: for every instance there
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Every instance on the default remote
    #[arg(long)]
    pub all: bool,
    /// Project to work in (default: the remote's project in the incus configuration)
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// With REMOTE: or --all, instances of every project
    #[arg(long, conflicts_with = "project")]
    pub all_projects: bool,
    /// Leave out instances whose name matches this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only instances that are running
    #[arg(long, conflicts_with = "stopped")]
    pub running: bool,
    /// Only instances that are stopped
    #[arg(long)]
    pub stopped: bool,
    /// A custom volume that no instance attaches: [REMOTE:]POOL/VOLUME (repeatable). Volumes
    /// an instance attaches travel with it already
    #[arg(long = "volume", value_name = "[REMOTE:]POOL/VOLUME")]
    pub volumes: Vec<String>,
}

/// Clients per remote and project, made once.
pub struct Connections {
    remotes: Remotes,
    cache: Mutex<BTreeMap<String, Client>>,
}

impl Connections {
    /// Reads the CLI configuration.
    pub fn load() -> crate::Result<Self> {
        Ok(Self::new(Remotes::load()?))
    }

    pub fn new(remotes: Remotes) -> Self {
        Connections {
            remotes,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn remotes(&self) -> &Remotes {
        &self.remotes
    }

    /// A client for `remote` in `project` (the remote's own project when `None`). One
    /// connection per remote; a project is a cheap view of it.
    pub fn client(&self, remote: &str, project: Option<&str>) -> crate::Result<Client> {
        let project = project
            .map(str::to_string)
            .unwrap_or_else(|| self.remotes.project(remote));
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let base = match cache.get(remote) {
            Some(client) => client.clone(),
            None => {
                let client = Client::connect(&self.remotes, remote)?;
                cache.insert(remote.to_string(), client.clone());
                client
            }
        };
        Ok(base.in_project(&project))
    }
}

/// One chosen instance.
#[derive(Debug, Clone)]
pub struct Selected {
    pub of: InstanceRef,
    pub client: Client,
    pub instance: Instance,
}

/// One chosen volume (selected by itself, not through an instance).
#[derive(Debug, Clone)]
pub struct SelectedVolume {
    pub of: crate::record::VolumeAddress,
    pub volume: crate::api::volumes::VolumeRef,
    pub client: Client,
    pub read: crate::api::volumes::Volume,
}

/// What a tool works on: the input records (already forwarded) and the instances and
/// volumes chosen.
pub struct Selection {
    pub input: Vec<InputRecord>,
    pub instances: Vec<Selected>,
    pub volumes: Vec<SelectedVolume>,
    pub connections: Connections,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Instance {
        remote: String,
        project: Option<String>,
        name: String,
    },
    Remote(String),
}

/// Why no selection could be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in the command line (exit 2), before anything was read.
    #[error("{0}")]
    Usage(String),
    #[error("reading stdin: {0}")]
    Stdin(#[source] std::io::Error),
}

fn usage(message: impl std::fmt::Display) -> Error {
    Error::Usage(message.to_string())
}

/// Checks the flags (usage errors before anything else), reads and forwards stdin, then
/// resolves the targets. Instances that cannot be found or reached are reported through
/// `output` and left out.
pub fn gather(args: &TargetArgs, output: &Output) -> Result<Selection, Error> {
    let excludes = args
        .exclude
        .iter()
        .map(|g| glob::Pattern::new(g).map_err(|e| usage(format!("--exclude \"{g}\": {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let connections = Connections::load().map_err(usage)?;
    let mut wants = named(args, &connections)?;
    let mut volume_wants = named_volumes(args, &connections)?;
    let piped = stdin_has_data_source();
    if wants.is_empty() && volume_wants.is_empty() && !piped {
        return Err(usage(
            "no instances named: give [REMOTE:]INSTANCE, REMOTE:, --all, --volume POOL/VOLUME, or pipe records from another incus tool",
        ));
    }
    let input = if piped {
        read_stdin(output).map_err(Error::Stdin)?
    } else {
        Vec::new()
    };
    for record in &input {
        if let Some((remote, project, pool, name)) = record.volume() {
            volume_wants.push((
                remote,
                project,
                crate::api::volumes::VolumeRef::new(&pool, &name),
            ));
            continue;
        }
        if let Some((remote, project, name)) = record.instance() {
            wants.push(Want::Instance {
                remote,
                project,
                name,
            });
        }
    }
    let mut chooser = Chooser {
        args,
        excludes,
        connections: &connections,
        output,
        lists: BTreeMap::new(),
        seen: HashSet::new(),
        chosen: Vec::new(),
    };
    for want in wants {
        match want {
            Want::Remote(remote) => chooser.remote(&remote),
            Want::Instance {
                remote,
                project,
                name,
            } => chooser.instance(&remote, project, &name),
        }
    }
    let instances = chooser.chosen;
    let volumes = choose_volumes(volume_wants, &connections, output);
    Ok(Selection {
        input,
        instances,
        volumes,
        connections,
    })
}

type VolumeWant = (String, Option<String>, crate::api::volumes::VolumeRef);

/// `--volume [REMOTE:]POOL/VOLUME`, their remotes checked.
fn named_volumes(args: &TargetArgs, connections: &Connections) -> Result<Vec<VolumeWant>, Error> {
    let default_remote = connections.remotes().default_remote().to_string();
    let mut wants = Vec::new();
    for text in &args.volumes {
        let (remote, path) = match text.split_once(':') {
            Some((remote, path)) => (remote.to_string(), path),
            None => (default_remote.clone(), text.as_str()),
        };
        let volume = crate::api::volumes::VolumeRef::parse(path).ok_or_else(|| {
            usage(format!(
                "--volume \"{text}\": expected [REMOTE:]POOL/VOLUME, e.g. default/share"
            ))
        })?;
        connections.remotes().get(&remote).map_err(usage)?;
        wants.push((remote, args.project.clone(), volume));
    }
    Ok(wants)
}

/// The volumes wanted, each once, read on their server; what cannot be found is reported.
fn choose_volumes(
    wants: Vec<VolumeWant>,
    connections: &Connections,
    output: &Output,
) -> Vec<SelectedVolume> {
    let mut chosen: Vec<SelectedVolume> = Vec::new();
    for (remote, project, volume) in wants {
        let client = match connections.client(&remote, project.as_deref()) {
            Ok(client) => client,
            Err(e) => {
                let project = project.unwrap_or_else(|| "default".to_string());
                output.volume_error(&remote, &project, &volume.to_string(), &e.to_string());
                continue;
            }
        };
        let of = crate::record::VolumeAddress {
            remote: remote.clone(),
            project: client.project().to_string(),
            pool: volume.pool.clone(),
            volume: volume.name.clone(),
        };
        if chosen.iter().any(|c| c.of == of) {
            continue;
        }
        match crate::api::volumes::get(&client, &volume) {
            Ok(Some((read, _))) => chosen.push(SelectedVolume {
                of,
                volume,
                client,
                read,
            }),
            Ok(None) => output.volume_error(
                &remote,
                client.project(),
                &volume.to_string(),
                &format!(
                    "no custom volume \"{}\" on pool \"{}\" of remote \"{remote}\"; check with `incus storage volume list {remote}:{}`",
                    volume.name, volume.pool, volume.pool
                ),
            ),
            Err(e) => output.volume_error(&remote, client.project(), &volume.to_string(), &e.to_string()),
        }
    }
    chosen
}

/// The instances named on the command line (not yet stdin's), their remotes checked.
fn named(args: &TargetArgs, connections: &Connections) -> Result<Vec<Want>, Error> {
    let default_remote = connections.remotes().default_remote().to_string();
    let mut wants = Vec::new();
    for text in &args.targets {
        match Target::parse(text).map_err(usage)? {
            Target::Remote(remote) => wants.push(Want::Remote(remote)),
            Target::Instance(address) => {
                if address.snapshot.is_some() {
                    return Err(usage(format!(
                        "\"{text}\" names a snapshot; name the instance (without /SNAPSHOT)"
                    )));
                }
                wants.push(Want::Instance {
                    remote: address.remote.unwrap_or_else(|| default_remote.clone()),
                    project: args.project.clone(),
                    name: address.instance,
                });
            }
        }
    }
    for want in &wants {
        let remote = match want {
            Want::Remote(r) => r,
            Want::Instance { remote, .. } => remote,
        };
        connections.remotes().get(remote).map_err(usage)?;
    }
    if args.all {
        wants.push(Want::Remote(default_remote));
    }
    Ok(wants)
}

/// Collects the chosen instances, each once, filtered by the flags; what cannot be found is
/// reported and left out.
struct Chooser<'a> {
    args: &'a TargetArgs,
    excludes: Vec<glob::Pattern>,
    connections: &'a Connections,
    output: &'a Output,
    /// Instance listings per (remote, project), read once.
    lists: BTreeMap<(String, String), crate::Result<Vec<Instance>>>,
    seen: HashSet<InstanceRef>,
    chosen: Vec<Selected>,
}

impl Chooser<'_> {
    fn push(&mut self, selected: Selected) {
        let name = &selected.of.instance;
        if self.excludes.iter().any(|g| g.matches(name))
            || (self.args.running && !selected.instance.is_running())
            || (self.args.stopped && selected.instance.is_running())
        {
            return;
        }
        if self.seen.insert(selected.of.clone()) {
            self.chosen.push(selected);
        }
    }

    /// `REMOTE:` and `--all`: every instance of the remote's project (or all projects).
    fn remote(&mut self, remote: &str) {
        let project = self.args.project.as_deref();
        let client = match self.connections.client(remote, project) {
            Ok(c) => c,
            Err(e) => {
                self.output.remote_error(remote, project, &e.to_string());
                return;
            }
        };
        match instances::list(&client, self.args.all_projects) {
            Ok(list) => {
                for instance in list {
                    let client = client.in_project(&instance.project);
                    let of = InstanceRef {
                        remote: remote.to_string(),
                        project: instance.project.clone(),
                        instance: instance.name.clone(),
                    };
                    self.push(Selected {
                        of,
                        client,
                        instance,
                    });
                }
            }
            Err(e) => self.output.remote_error(
                remote,
                Some(client.project()),
                &format!("listing instances: {e}"),
            ),
        }
    }

    /// `[REMOTE:]INSTANCE`, or an input record: found in its project's listing.
    fn instance(&mut self, remote: &str, project: Option<String>, name: &str) {
        let client = match self.connections.client(remote, project.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                let of = InstanceRef {
                    remote: remote.to_string(),
                    project: project.unwrap_or_else(|| "default".into()),
                    instance: name.to_string(),
                };
                self.output.error(Some(&of), &e.to_string());
                return;
            }
        };
        let of = InstanceRef {
            remote: remote.to_string(),
            project: client.project().to_string(),
            instance: name.to_string(),
        };
        let key = (remote.to_string(), client.project().to_string());
        let found = match self
            .lists
            .entry(key)
            .or_insert_with(|| instances::list(&client, false))
        {
            Ok(list) => list.iter().find(|i| i.name == name).cloned(),
            Err(e) => {
                self.output.error(Some(&of), &e.to_string());
                return;
            }
        };
        match found {
            Some(instance) => self.push(Selected {
                of,
                client: client.clone(),
                instance,
            }),
            None => self.output.error(
                Some(&of),
                &format!(
                    "no instance \"{name}\" in project \"{project}\" on remote \"{remote}\"; check the name with `incus list {remote}:{flag}`",
                    project = client.project(),
                    flag = if client.project() == "default" {
                        String::new()
                    } else {
                        format!(" --project {}", client.project())
                    }
                ),
            ),
        }
    }
}

/// True when stdin is a pipe, a file or a socket: something another program feeds. A
/// terminal or `/dev/null` (a character device) is not.
pub fn stdin_has_data_source() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    let file = std::fs::File::from(fd);
    match file.metadata() {
        Ok(meta) => {
            let kind = meta.file_type();
            kind.is_fifo() || kind.is_file() || kind.is_socket()
        }
        Err(_) => false,
    }
}
