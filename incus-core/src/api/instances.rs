//! Instances: list, get (with ETag), PATCH, PUT, state changes, delete.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::nullable;
use crate::client::{Client, Request, WaitOptions, escape};
use crate::error::Result;

/// A device: its type and options, all strings.
pub type Device = BTreeMap<String, String>;

/// An instance as `GET /1.0/instances?recursion=1` describes it.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Instance {
    pub name: String,
    #[serde(default)]
    pub status: InstanceStatus,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    /// Its configuration with its profiles' applied (`limits.cpu` may come from a profile).
    #[serde(default, deserialize_with = "nullable")]
    pub expanded_config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub devices: BTreeMap<String, Device>,
    #[serde(default, deserialize_with = "nullable")]
    pub expanded_devices: BTreeMap<String, Device>,
    #[serde(default, deserialize_with = "nullable")]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub stateful: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last started (Incus's zero time when never).
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The cluster member that holds the instance (`none` or empty on a single server).
    #[serde(default)]
    pub location: String,
}

impl Instance {
    /// True when the instance runs (or is frozen: its processes exist).
    pub fn is_running(&self) -> bool {
        matches!(
            self.status,
            InstanceStatus::Running | InstanceStatus::Frozen
        )
    }

    /// The writable fields, as `PUT /1.0/instances/NAME` takes them.
    pub fn writable(&self) -> Value {
        json!({
            "architecture": self.architecture,
            "config": self.config,
            "devices": self.devices,
            "profiles": self.profiles,
            "ephemeral": self.ephemeral,
            "stateful": self.stateful,
            "description": self.description,
        })
    }

    /// True when it was started after `at` (a snapshot taken before no longer holds what
    /// it ran with since).
    pub fn ran_since(&self, at: DateTime<Utc>) -> bool {
        // To the nanosecond: a copy started again within the second of the snapshot ran
        // after it all the same.
        self.last_used_at.is_some_and(|used| used > at)
    }

    /// The cluster member that holds the instance (`None` on a single server).
    pub fn member(&self) -> Option<&str> {
        member(&self.location)
    }

    /// The storage pool of the root disk (`path: /`), from the expanded devices.
    pub fn root_pool(&self) -> Option<&str> {
        root_disk(&self.expanded_devices).and_then(|(_, d)| d.get("pool").map(String::as_str))
    }
}

/// An instance's `status`, as Incus words it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum InstanceStatus {
    Running,
    Frozen,
    #[default]
    Stopped,
    /// Listed from the database while the member holding it does not answer (clusters).
    Error,
    /// Any other word (`Starting`, `Stopping`, …), kept as Incus said it.
    Other(String),
}

impl InstanceStatus {
    pub fn as_str(&self) -> &str {
        match self {
            InstanceStatus::Running => "Running",
            InstanceStatus::Frozen => "Frozen",
            InstanceStatus::Stopped => "Stopped",
            InstanceStatus::Error => "Error",
            InstanceStatus::Other(word) => word,
        }
    }
}

impl From<String> for InstanceStatus {
    fn from(word: String) -> Self {
        match word.as_str() {
            "Running" => InstanceStatus::Running,
            "Frozen" => InstanceStatus::Frozen,
            "Stopped" => InstanceStatus::Stopped,
            "Error" => InstanceStatus::Error,
            _ => InstanceStatus::Other(word),
        }
    }
}

impl From<&str> for InstanceStatus {
    fn from(word: &str) -> Self {
        InstanceStatus::from(word.to_string())
    }
}

impl From<InstanceStatus> for String {
    fn from(status: InstanceStatus) -> Self {
        status.as_str().to_string()
    }
}

impl std::fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for InstanceStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What `PUT /1.0/instances/NAME/state` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    Start,
    Stop,
    Restart,
    Freeze,
    Unfreeze,
}

impl StateAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StateAction::Start => "start",
            StateAction::Stop => "stop",
            StateAction::Restart => "restart",
            StateAction::Freeze => "freeze",
            StateAction::Unfreeze => "unfreeze",
        }
    }
}

/// A `location` as Incus reports it: a member name, or `none`/empty on a single server.
pub fn member(location: &str) -> Option<&str> {
    match location {
        "" | "none" => None,
        member => Some(member),
    }
}

/// The disk device mounted at `/`, if any.
pub fn root_disk(devices: &BTreeMap<String, Device>) -> Option<(&String, &Device)> {
    devices.iter().find(|(_, d)| {
        d.get("type").map(String::as_str) == Some("disk")
            && d.get("path").map(String::as_str) == Some("/")
    })
}

/// Every instance of the client's project, or of all projects.
pub fn list(client: &Client, all_projects: bool) -> Result<Vec<Instance>> {
    let mut request = Request::get("/instances").query("recursion", "1");
    if all_projects {
        request = request.all_projects();
    }
    let mut instances: Vec<Instance> = client.fetch(&request)?.0;
    for instance in &mut instances {
        if instance.project.is_empty() {
            instance.project = client.project().to_string();
        }
    }
    Ok(instances)
}

/// One instance and its ETag.
pub fn get(client: &Client, name: &str) -> Result<(Instance, Option<String>)> {
    let (mut instance, etag): (Instance, _) =
        client.get_with_etag(&format!("/instances/{}", escape(name)))?;
    if instance.project.is_empty() {
        instance.project = client.project().to_string();
    }
    Ok((instance, etag))
}

/// Merges config keys (`""` deletes a key). Synchronous.
pub fn patch_config(
    client: &Client,
    name: &str,
    config: &BTreeMap<String, String>,
    etag: Option<String>,
) -> Result<()> {
    client.execute(
        &Request::patch(
            format!("/instances/{}", escape(name)),
            json!({ "config": config }),
        )
        .if_match(etag),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Replaces the writable fields (`PUT`), optionally guarded by an ETag.
pub fn put(client: &Client, name: &str, body: Value, etag: Option<String>) -> Result<()> {
    client.execute(
        &Request::put(format!("/instances/{}", escape(name)), body).if_match(etag),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Starts or stops an instance. `timeout` in seconds for stop (-1: the server's default).
pub fn change_state(
    client: &Client,
    name: &str,
    action: StateAction,
    timeout: i64,
    force: bool,
) -> Result<()> {
    client.execute(
        &Request::put(
            format!("/instances/{}/state", escape(name)),
            json!({ "action": action.as_str(), "timeout": timeout, "force": force, "stateful": false }),
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Copies, on the same server, `source` of `source_project` (an instance with its
/// snapshots, or one snapshot as `INSTANCE/SNAPSHOT`) into a new instance `name` of the
/// client's project (copy on write where the pool can), with `config` keys overriding the
/// source's. On a cluster, `member` names the member for the copy (the source's: a copy to
/// another member of a local pool is a full transfer).
pub fn copy_local(
    client: &Client,
    source_project: &str,
    source: &str,
    name: &str,
    config: &BTreeMap<String, String>,
    member: Option<&str>,
) -> Result<()> {
    let body = json!({
        "name": name,
        "source": {
            "type": "copy",
            "source": source,
            "project": source_project,
            "instance_only": source.contains('/'),
        },
        "config": config,
    });
    let mut request = Request::post("/instances", body);
    if let Some(member) = member {
        request = request.query("target", member);
    }
    client.execute(&request, &WaitOptions::plain())?;
    Ok(())
}

/// Runs `command` in the instance (no terminal, output not kept) and returns its exit code,
/// waiting at most `limit`.
pub fn exec(
    client: &Client,
    name: &str,
    command: &[String],
    limit: std::time::Duration,
) -> Result<i64> {
    let done = client.execute(
        &Request::post(
            format!("/instances/{}/exec", escape(name)),
            json!({
                "command": command,
                "environment": {},
                "interactive": false,
                "wait-for-websocket": false,
                "record-output": false,
            }),
        ),
        &WaitOptions {
            limit: Some(limit),
            ..WaitOptions::default()
        },
    )?;
    Ok(done
        .as_ref()
        .and_then(|op| op.metadata.get("return"))
        .and_then(Value::as_i64)
        .unwrap_or(-1))
}

/// Copies, on the same server, the instance `source` without its snapshots to a new
/// instance `name`, with these config keys and devices overriding the source's (copy on
/// write where the pool can).
pub fn clone_local(
    client: &Client,
    source: &str,
    name: &str,
    config: &BTreeMap<String, String>,
    devices: &BTreeMap<String, Device>,
) -> Result<()> {
    let body = json!({
        "name": name,
        "source": { "type": "copy", "source": source, "instance_only": true },
        "config": config,
        "devices": devices,
    });
    client.execute(&Request::post("/instances", body), &WaitOptions::plain())?;
    Ok(())
}

/// Renames a stopped instance (its snapshots go with it).
pub fn rename(client: &Client, name: &str, new_name: &str) -> Result<()> {
    client.execute(
        &Request::post(
            format!("/instances/{}", escape(name)),
            json!({ "name": new_name }),
        ),
        &WaitOptions::plain(),
    )?;
    Ok(())
}

/// Stops an instance cleanly within `timeout` seconds, then by force: on a clean stop that
/// times out Incus leaves the instance running. Returns the clean stop's error when force was
/// needed.
pub fn stop_clean_then_force(
    client: &Client,
    name: &str,
    timeout: u64,
) -> Result<Option<crate::Error>> {
    let seconds = i64::try_from(timeout).unwrap_or(i64::MAX).max(1);
    match change_state(client, name, StateAction::Stop, seconds, false) {
        Ok(()) => Ok(None),
        Err(clean) => {
            if get(client, name)?.0.is_running() {
                change_state(client, name, StateAction::Stop, 0, true)?;
                Ok(Some(clean))
            } else {
                Ok(None)
            }
        }
    }
}

/// Deletes a (stopped) instance and its snapshots.
pub fn delete(client: &Client, name: &str) -> Result<()> {
    client.execute(
        &Request::delete(format!("/instances/{}", escape(name))),
        &WaitOptions::plain(),
    )?;
    Ok(())
}
