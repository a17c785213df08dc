//! Copying an instance with its snapshots from one server to another through the migration
//! API, in the three modes of `incus copy --mode`: pull (the target dials the source), push
//! (the source dials the target) and relay (this process splices both servers' websockets).
//! See `../shared/docs/incus-api.md` §4 for the exchanges this reproduces.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::instances::{Device, Instance, root_disk};
use crate::client::{Client, Operation, Reply, Request, WaitOptions, escape};
use crate::error::{Error, Result};

/// Who connects to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The target server connects to the source (the source must listen on the network).
    Pull,
    /// The source server connects to the target (the target must be reachable from it).
    Push,
    /// This process connects to both and relays the data (no server dials the other).
    Relay,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Pull => "pull",
            Mode::Push => "push",
            Mode::Relay => "relay",
        })
    }
}

/// One copy or refresh of an instance (with all its snapshots) to another server.
pub struct Transfer<'a> {
    pub source: &'a Client,
    pub instance: &'a Instance,
    pub target: &'a Client,
    pub target_name: &'a str,
    /// Refresh an existing target: send only the missing snapshots and the delta.
    pub refresh: bool,
    /// Put the root disk of a new replica on this pool.
    pub pool: Option<&'a str>,
    /// Config keys to set on a new replica in the creating request (e.g. autostart off).
    pub config_overrides: &'a BTreeMap<String, Option<String>>,
    /// On a clustered target: the member (`NAME`) or cluster group (`@GROUP`) for the
    /// instance, Incus's `?target=`. A refresh must name the member that holds the replica:
    /// Incus 6.0.4 otherwise runs it wherever its scheduler places a new instance, and fails.
    pub placement: Option<&'a str>,
}

impl Transfer<'_> {
    /// The config for the target request: the source's, without `volatile.*` keys other than
    /// `volatile.base_image` (as the CLI sends), with the overrides applied.
    pub fn target_config(&self) -> BTreeMap<String, String> {
        let mut config: BTreeMap<String, String> = self
            .instance
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("volatile.") || k.as_str() == "volatile.base_image")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in self.config_overrides {
            match value {
                Some(v) => config.insert(key.clone(), v.clone()),
                None => config.remove(key),
            };
        }
        config
    }

    /// The local devices for the target, with the root disk moved to `pool` when asked.
    pub fn target_devices(&self) -> BTreeMap<String, Device> {
        let mut devices = self.instance.devices.clone();
        if let Some(pool) = self.pool {
            let root = root_disk(&devices)
                .map(|(name, device)| (name.clone(), device.clone()))
                .or_else(|| {
                    root_disk(&self.instance.expanded_devices)
                        .map(|(name, device)| (name.clone(), device.clone()))
                });
            let (name, mut device) = root.unwrap_or_else(|| {
                (
                    "root".to_string(),
                    BTreeMap::from([
                        ("type".to_string(), "disk".to_string()),
                        ("path".to_string(), "/".to_string()),
                    ]),
                )
            });
            device.insert("pool".into(), pool.to_string());
            devices.insert(name, device);
        }
        devices
    }

    /// `POST /1.0/instances` on the target; `source` is the migration source object.
    pub fn target_request(&self, source: Value) -> Value {
        json!({
            "name": self.target_name,
            "architecture": self.instance.architecture,
            "config": self.target_config(),
            "devices": self.target_devices(),
            "profiles": self.instance.profiles,
            "ephemeral": false,
            "stateful": false,
            "description": self.instance.description,
            "type": if self.instance.kind.is_empty() { "container" } else { &self.instance.kind },
            "instance_type": "",
            "start": false,
            "source": source,
        })
    }

    fn base_image(&self) -> Value {
        self.instance
            .config
            .get("volatile.base_image")
            .map(|s| json!(s))
            .unwrap_or(Value::Null)
    }

    fn source_path(&self) -> String {
        format!("/instances/{}", escape(&self.instance.name))
    }

    /// `POST /1.0/instances/NAME` on the source; stateless, never `instance_only` (with
    /// refresh that deletes every snapshot of the target).
    pub fn source_request(&self, target: Value) -> Value {
        json!({
            "name": "",
            "migration": true,
            "live": false,
            "instance_only": false,
            "target": target,
            "pool": "",
            "project": "",
            "allow_inconsistent": false,
            "Config": null,
            "Devices": null,
            "Profiles": null,
        })
    }

    /// Runs the transfer and waits until the target has it all. Returns the cluster member
    /// that received the instance (`None` on a single server).
    pub fn run(&self, mode: Mode, wait: &WaitOptions) -> Result<Option<String>> {
        run(self, mode, wait)
    }
}

impl Endpoints for Transfer<'_> {
    fn source(&self) -> &Client {
        self.source
    }

    fn target(&self) -> &Client {
        self.target
    }

    fn start_source(&self, target: Value) -> Result<Operation> {
        started(
            self.source,
            Request::post(self.source_path(), self.source_request(target)),
        )
    }

    fn start_target(&self, source: Map<String, Value>) -> Result<Operation> {
        let mut request = Request::post("/instances", self.target_request(Value::Object(source)));
        if let Some(placement) = self.placement {
            request = request.query("target", placement);
        }
        started(self.target, request)
    }

    fn migration_source(&self, mode: Mode) -> Map<String, Value> {
        let mut source = Map::new();
        source.insert("type".into(), json!("migration"));
        source.insert(
            "mode".into(),
            json!(if mode == Mode::Pull { "pull" } else { "push" }),
        );
        source.insert("base-image".into(), self.base_image());
        source.insert("allow_inconsistent".into(), json!(false));
        source.insert("certificate".into(), json!(""));
        if self.refresh {
            source.insert("refresh".into(), json!(true));
        }
        source
    }
}

/// What differs between migrating an instance and a custom volume: the servers, and the
/// requests that start each end. The exchanges of the three modes are shared.
pub trait Endpoints: Sync {
    fn source(&self) -> &Client;
    fn target(&self) -> &Client;
    /// The source's migration request, with `target` (push mode) or `null`.
    fn start_source(&self, target: Value) -> Result<Operation>;
    /// The target's creation request, with this migration source object.
    fn start_target(&self, source: Map<String, Value>) -> Result<Operation>;
    /// The migration source object for the target's request, in `mode`.
    fn migration_source(&self, mode: Mode) -> Map<String, Value>;
}

/// Runs a migration in `mode` and waits until the target has it all. Returns the cluster
/// member that received it (`None` on a single server).
pub fn run(m: &dyn Endpoints, mode: Mode, wait: &WaitOptions) -> Result<Option<String>> {
    match mode {
        Mode::Pull => pull(m, wait),
        Mode::Push => push(m, wait),
        Mode::Relay => relay(m, wait),
    }
}

/// The operation a request started.
pub(crate) fn started(client: &Client, request: Request) -> Result<Operation> {
    match client.send(&request)? {
        Reply::Async(op) => Ok(*op),
        Reply::Sync { .. } => Err(Error::protocol(
            client.remote(),
            "the migration answered without an operation",
        )),
    }
}

fn cancel(client: &Client, op: &Operation) {
    let _ = client.send(&Request::delete(format!("/operations/{}", escape(&op.id))));
}

fn secrets(op: &Operation, remote: &str) -> Result<Map<String, Value>> {
    match op.metadata.as_object() {
        Some(m) if m.contains_key("control") => Ok(m
            .iter()
            .filter(|(_, v)| v.is_string())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()),
        _ => Err(Error::protocol(
            remote,
            "the migration operation carries no websocket secrets",
        )),
    }
}

fn pull(m: &dyn Endpoints, wait: &WaitOptions) -> Result<Option<String>> {
    let urls = m.source().network_urls()?;
    if urls.is_empty() {
        return Err(not_listening(m.source(), m.target(), Mode::Pull));
    }
    let certificate = m.source().certificate_pem()?;
    let source_op = m.start_source(Value::Null)?;
    let secrets = secrets(&source_op, m.source().remote())?;
    let mut last_error = None;
    for url in &urls {
        let mut source = m.migration_source(Mode::Pull);
        source.insert(
            "operation".into(),
            json!(format!("{url}/1.0/operations/{}", escape(&source_op.id))),
        );
        source.insert("certificate".into(), json!(certificate));
        source.insert("secrets".into(), Value::Object(secrets.clone()));
        let target_op = match m.start_target(source) {
            Ok(op) => op,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let cancel_source = || cancel(m.source(), &source_op);
        let options = WaitOptions {
            limit: wait.limit,
            progress: wait.progress,
            on_interrupt: Some(&cancel_source),
        };
        match m.target().wait(&target_op, &options) {
            Ok(done) => return Ok(received_on(&done)),
            Err(e) if e.message().contains("Unable to connect to") => {
                last_error = Some(e);
                continue;
            }
            Err(e) => {
                cancel(m.source(), &source_op);
                return Err(e);
            }
        }
    }
    cancel(m.source(), &source_op);
    match last_error {
        Some(e) if e.message().contains("Unable to connect to") => Err(Error::Api {
            remote: m.target().remote().to_string(),
            status: 400,
            message: format!(
                "{}; the standby cannot reach {} at {}: use --mode push or --mode relay",
                e.message(),
                m.source().remote(),
                urls.join(", ")
            ),
        }),
        Some(e) => Err(e),
        None => Err(not_listening(m.source(), m.target(), Mode::Pull)),
    }
}

fn push(m: &dyn Endpoints, wait: &WaitOptions) -> Result<Option<String>> {
    let urls = m.target().network_urls()?;
    if urls.is_empty() {
        return Err(not_listening(m.target(), m.source(), Mode::Push));
    }
    let certificate = m.target().certificate_pem()?;
    let target_op = m.start_target(m.migration_source(Mode::Push))?;
    let secrets = secrets(&target_op, m.target().remote())?;
    let mut last_error = None;
    for url in &urls {
        let target = json!({
            "certificate": certificate,
            "operation": format!("{url}/1.0/operations/{}", escape(&target_op.id)),
            "secrets": secrets,
        });
        let source_op = match m.start_source(target) {
            Ok(op) => op,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let source_result = m.source().wait(&source_op, wait);
        // The target finishes its database work after the source: its result decides.
        let target_result = m.target().wait(&target_op, wait);
        if crate::interrupt::requested() && target_result.is_err() {
            return Err(Error::Cancelled);
        }
        return match (source_result, target_result) {
            (_, Ok(done)) => Ok(received_on(&done)),
            (Err(e), Err(_)) => Err(e),
            (Ok(_), Err(e)) => Err(e),
        };
    }
    cancel(m.target(), &target_op);
    Err(last_error.unwrap_or_else(|| not_listening(m.target(), m.source(), Mode::Push)))
}

fn relay(m: &dyn Endpoints, wait: &WaitOptions) -> Result<Option<String>> {
    let source_op = m.start_source(Value::Null)?;
    let source_secrets = secrets(&source_op, m.source().remote())?;
    let target_op = match m.start_target(m.migration_source(Mode::Relay)) {
        Ok(op) => op,
        Err(e) => {
            cancel(m.source(), &source_op);
            return Err(e);
        }
    };
    let target_secrets = secrets(&target_op, m.target().remote())?;
    let mut pairs = Vec::new();
    let mut names: Vec<&String> = target_secrets.keys().collect();
    names.sort_by_key(|n| n.as_str() != "control");
    for name in names {
        let (Some(Value::String(src)), Some(Value::String(tgt))) =
            (source_secrets.get(name), target_secrets.get(name))
        else {
            cancel(m.source(), &source_op);
            cancel(m.target(), &target_op);
            return Err(Error::protocol(
                m.source().remote(),
                format!("the source offers no \"{name}\" stream for the relay"),
            ));
        };
        pairs.push(crate::relay::Pair {
            name: name.clone(),
            source: crate::relay::End::new(m.source(), &source_op.id, src),
            target: crate::relay::End::new(m.target(), &target_op.id, tgt),
        });
    }
    let relay = crate::relay::start(pairs);
    let cancel_source = || cancel(m.source(), &source_op);
    let options = WaitOptions {
        limit: wait.limit,
        progress: wait.progress,
        on_interrupt: Some(&cancel_source),
    };
    let result = m.target().wait(&target_op, &options);
    let relay_result = relay.finish();
    match (result, relay_result) {
        (Ok(done), _) => Ok(received_on(&done)),
        (Err(e), Err(relay_error)) if !e.message().contains(&relay_error.to_string()) => {
            Err(Error::Api {
                remote: m.target().remote().to_string(),
                status: e.status().unwrap_or(400),
                message: format!("{} (relay: {relay_error})", e.message()),
            })
        }
        (Err(e), _) => Err(e),
    }
}

/// The member that ran the target's operation (the instance lives there).
fn received_on(op: &Operation) -> Option<String> {
    super::instances::member(&op.location).map(str::to_string)
}

fn not_listening(server: &Client, peer: &Client, mode: Mode) -> Error {
    let other = match mode {
        Mode::Pull => "--mode push or --mode relay",
        _ => "--mode pull or --mode relay",
    };
    Error::Config(format!(
        "{mode} mode needs {} to listen on the network (core.https_address) so that {} can connect to it; use {other}",
        server.remote(),
        peer.remote()
    ))
}
