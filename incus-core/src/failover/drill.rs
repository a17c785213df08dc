//! A drill: proof that a replica can start on the standby, without starting it. A clone of the
//! replica (its root disk and its custom volumes, copy on write where the pool allows) is made
//! under a drill name, with every NIC removed so that no MAC or IP address clashes with
//! production; it is started, optionally probed (`--probe CMD` through exec), then stopped and
//! deleted. The replica itself is never started and never changed, apart from the result kept
//! on it (`user.incus-standby.drill`), which `status` shows and `check --max-drill-age` judges.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::api::instances::{self, Device, Instance, InstanceStatus, StateAction};
use crate::api::projects::pool_driver;
use crate::api::volumes::{self, VolumeRef};
use crate::client::Client;
use crate::markers::{Drill, ReplicaMarkers, key};
use crate::record::{DrillRecord, Output, Record};
use crate::replication::address;

use super::error::Error;
use super::pairs::{Pair, PairArgs, Pairs, resolve};

/// How `incus-failover drill` runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// A command run in the clone once it runs (`sh -c`); a non-zero exit fails the drill.
    pub probe: Option<String>,
    /// The longest the start (and the probe) may take.
    pub timeout: Duration,
    /// On a pool that copies everything (`dir`), a clone is a full copy: only with this.
    pub allow_full_copy: bool,
    pub dry_run: bool,
}

/// `incus-failover drill`: one `drill` record per instance; a failed drill is an error too.
pub fn drill(args: &PairArgs, options: &DrillOptions, output: &Output) -> Result<(), Error> {
    let pairs = resolve(args, output)?;
    for pair in &pairs.pairs {
        if crate::interrupt::requested() {
            break;
        }
        match drill_one(&pairs, pair, options) {
            Ok(record) => {
                let failed = (!record.ok).then(|| {
                    format!(
                        "drill of {}: the clone of {}:{} did not {}: {}",
                        address(&pair.of),
                        record.standby,
                        record.replica_instance,
                        if record.seconds_to_running.is_some() {
                            "pass its probe"
                        } else {
                            "start"
                        },
                        record.message.clone().unwrap_or_default()
                    )
                });
                output.emit(&Record::Drill(record));
                if let Some(message) = failed {
                    output.error(Some(&pair.of), &message);
                }
            }
            Err(e) => output.error(
                Some(&pair.of),
                &format!("drill of {}: {e}", address(&pair.of)),
            ),
        }
    }
    Ok(())
}

/// The clone's name: `NAME-drill`, within Incus's 63 characters.
pub fn clone_name(name: &str) -> String {
    let mut base: String = name.chars().take(63 - "-drill".len()).collect();
    base.push_str("-drill");
    base
}

/// A drill clone of a volume: `VOLUME-drill-INSTANCE`, within 63 characters.
fn volume_clone_name(volume: &str, instance: &str) -> String {
    format!("{volume}-drill-{instance}")
        .chars()
        .take(63)
        .collect()
}

/// The clone's devices: every NIC removed (a `none` device overrides a profile's), every
/// custom volume replaced by its drill clone.
fn clone_devices(
    replica: &Instance,
    volume_clones: &BTreeMap<VolumeRef, String>,
) -> BTreeMap<String, Device> {
    let mut devices = BTreeMap::new();
    for (name, device) in &replica.expanded_devices {
        match device.get("type").map(String::as_str) {
            Some("nic") | Some("infiniband") => {
                devices.insert(
                    name.clone(),
                    BTreeMap::from([("type".to_string(), "none".to_string())]),
                );
            }
            Some("disk") => {
                let attached = device
                    .get("pool")
                    .zip(device.get("source"))
                    .map(|(pool, source)| VolumeRef::new(pool, source));
                if let Some(clone) = attached.and_then(|v| volume_clones.get(&v)) {
                    let mut device = device.clone();
                    device.insert("source".to_string(), clone.clone());
                    devices.insert(name.clone(), device);
                }
            }
            _ => {}
        }
    }
    devices
}

/// What one drill made, deleted again whatever happens.
struct Made<'a> {
    standby: &'a Client,
    clone: String,
    volumes: Vec<VolumeRef>,
}

impl Made<'_> {
    fn clean_up(&self) -> Result<(), crate::Error> {
        if let Ok((found, _)) = instances::get(self.standby, &self.clone)
            && found.config.contains_key(key::DRILL_OF)
        {
            if found.is_running() {
                instances::change_state(self.standby, &self.clone, StateAction::Stop, -1, true)?;
            }
            instances::delete(self.standby, &self.clone)?;
        }
        for volume in &self.volumes {
            if let Some((found, _)) = volumes::get(self.standby, volume)?
                && found.config.contains_key(key::DRILL_OF)
            {
                volumes::delete(self.standby, volume)?;
            }
        }
        Ok(())
    }
}

fn drill_one(pairs: &Pairs, pair: &Pair, options: &DrillOptions) -> Result<DrillRecord, Error> {
    let started = Instant::now();
    let standby = pairs.replica(pair);
    let name = pair.of.instance.as_str();
    let (replica, _) = instances::get(&standby, name).map_err(|e| {
        if e.is_not_found() {
            Error::Refused(format!(
                "{}:{name} has no replica: push it first",
                pairs.standby.remote()
            ))
        } else {
            e.into()
        }
    })?;
    let markers = ReplicaMarkers::from_config(&replica.config);
    if markers.source.is_none() || markers.synced_at.is_none() {
        return Err(Error::Refused(format!(
            "{}:{name} is not a finished replica made by incus-push: nothing to drill",
            pairs.standby.remote()
        )));
    }
    if markers.promoted.is_some() || replica.is_running() {
        return Err(Error::Refused(format!(
            "{}:{name} runs as the instance (promoted or started): a drill is for replicas",
            pairs.standby.remote()
        )));
    }
    let attached = volumes::attached(&replica.expanded_devices);
    let mut pools: Vec<String> = replica
        .root_pool()
        .map(str::to_string)
        .into_iter()
        .collect();
    pools.extend(attached.iter().map(|a| a.volume.pool.clone()));
    pools.sort();
    pools.dedup();
    let mut full_copy = false;
    for pool in &pools {
        if pool_driver(&standby, pool)? == "dir" {
            full_copy = true;
        }
    }
    if full_copy && !options.allow_full_copy {
        return Err(Error::Refused(format!(
            "{}:{name} is on a dir pool, where a drill's clone is a full copy of the replica and its volumes (time and space): rerun with --allow-full-copy",
            pairs.standby.remote()
        )));
    }
    let clone = clone_name(name);
    let volume_clones: BTreeMap<VolumeRef, String> = attached
        .iter()
        .map(|a| (a.volume.clone(), volume_clone_name(&a.volume.name, name)))
        .collect();
    let mut record = DrillRecord {
        of: pair.of.clone(),
        standby: pairs.standby.remote().to_string(),
        replica_project: pair.replica_project.clone(),
        replica_instance: name.to_string(),
        snapshot: markers.restored.clone(),
        clone: clone.clone(),
        ok: false,
        seconds_to_running: None,
        probe_exit: None,
        message: None,
        volumes: attached.iter().map(|a| a.volume.to_string()).collect(),
        full_copy,
        seconds: 0.0,
        dry_run: options.dry_run,
    };
    if options.dry_run {
        record.ok = true;
        return Ok(record);
    }
    let made = Made {
        standby: &standby,
        clone: clone.clone(),
        volumes: volume_clones
            .iter()
            .map(|(v, clone)| VolumeRef::new(&v.pool, clone))
            .collect(),
    };
    // What an earlier drill killed midway left.
    made.clean_up()
        .map_err(|e| Error::incus("removing an earlier drill's clone", e))?;
    let outcome = run_clone(
        &standby,
        &replica,
        &volume_clones,
        &made,
        options,
        &mut record,
    );
    let cleaned = crate::interrupt::without_interruption(|| made.clean_up());
    outcome?;
    cleaned.map_err(|e| {
        Error::incus(
            format!("deleting the drill's clone {clone} (delete it by hand)"),
            e,
        )
    })?;
    record.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let result = Drill {
        at: Utc::now(),
        ok: record.ok,
        seconds: record.seconds_to_running,
        message: record.message.clone(),
    };
    instances::patch_config(&standby, name, &result.to_patch().as_merge(), None)
        .map_err(|e| Error::incus("keeping the drill's result on the replica", e))?;
    Ok(record)
}

/// Makes the clone and its volumes, starts it, probes it, stops it. A clone that fails to
/// start or to pass its probe is a failed drill (the record says why), not an error.
fn run_clone(
    standby: &Client,
    replica: &Instance,
    volume_clones: &BTreeMap<VolumeRef, String>,
    made: &Made,
    options: &DrillOptions,
    record: &mut DrillRecord,
) -> Result<(), Error> {
    let drill_of = BTreeMap::from([(key::DRILL_OF.to_string(), replica.name.clone())]);
    for (volume, clone) in volume_clones {
        let Some((read, _)) = volumes::get(standby, volume)? else {
            record.message = Some(format!("the replica's volume {volume} is missing"));
            return Ok(());
        };
        let mut config: BTreeMap<String, String> = read
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("user.incus-standby.") && !k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config.extend(drill_of.clone());
        volumes::copy_local(standby, volume, clone, &config)
            .map_err(|e| Error::incus(format!("cloning volume {volume}"), e))?;
    }
    let mut config = drill_of;
    config.insert(crate::markers::AUTOSTART.to_string(), "false".to_string());
    for marker in [key::SOURCE, key::SOURCE_UUID, key::SYNCED_AT, key::DRILL] {
        config.insert(marker.to_string(), String::new());
    }
    instances::clone_local(
        standby,
        &replica.name,
        &made.clone,
        &config,
        &clone_devices(replica, volume_clones),
    )
    .map_err(|e| Error::incus("cloning the replica", e))?;
    fail::fail_point!("drill::after-clone", |arg| Err(Error::Injected(
        crate::replication::injected_error(arg)
    )));
    let start = Instant::now();
    if let Err(e) = instances::change_state(standby, &made.clone, StateAction::Start, -1, false) {
        record.message = Some(e.message());
        return Ok(());
    }
    let (running, _) = instances::get(standby, &made.clone)?;
    if running.status != InstanceStatus::Running {
        record.message = Some(format!("it is {} after its start", running.status.as_str()));
        return Ok(());
    }
    record.seconds_to_running = Some((start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    if let Some(probe) = &options.probe {
        let command = vec!["sh".to_string(), "-c".to_string(), probe.clone()];
        match instances::exec(standby, &made.clone, &command, options.timeout) {
            Ok(code) => {
                record.probe_exit = Some(code);
                if code != 0 {
                    record.message = Some(format!("the probe `{probe}` exited {code}"));
                    return Ok(());
                }
            }
            Err(e) => {
                record.message = Some(format!("the probe `{probe}` failed: {}", e.message()));
                return Ok(());
            }
        }
    }
    record.ok = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_has_no_nic_and_its_own_volumes() {
        let mut replica = Instance::default();
        let device = |pairs: &[(&str, &str)]| -> Device {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        replica.expanded_devices = BTreeMap::from([
            (
                "eth0".to_string(),
                device(&[("type", "nic"), ("network", "incusbr0")]),
            ),
            (
                "root".to_string(),
                device(&[("type", "disk"), ("path", "/"), ("pool", "default")]),
            ),
            (
                "data".to_string(),
                device(&[
                    ("type", "disk"),
                    ("path", "/data"),
                    ("pool", "default"),
                    ("source", "dbdata"),
                ]),
            ),
        ]);
        let clones = BTreeMap::from([(
            VolumeRef::new("default", "dbdata"),
            volume_clone_name("dbdata", "db1"),
        )]);
        let devices = clone_devices(&replica, &clones);
        assert_eq!(devices["eth0"], device(&[("type", "none")]));
        assert_eq!(devices["data"]["source"], "dbdata-drill-db1");
        assert!(!devices.contains_key("root"));
        assert_eq!(clone_name(&"x".repeat(70)).len(), 63);
    }
}
