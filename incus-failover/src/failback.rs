//! `failback`: the way back once the old primary answers again, losing nothing on either side.
//!
//! Incus's refresh in the reverse direction (standby → old primary) deletes every snapshot
//! only the old primary has, and deletes and sends again every snapshot it made itself (their
//! creation times have sub-second precision, the copies' do not). So the old primary copy is
//! not refreshed: it is **renamed aside** (`NAME-before-failback-DATE`, with its diverged
//! state and all its snapshots, inert), and the instance comes back with the replication
//! engine in the other direction:
//!
//! 1. the old primary copy, fenced and stopped, is renamed aside;
//! 2. the promoted instance is copied to the primary while it still runs (the long part);
//! 3. it is stopped on the standby and snapshotted (`failback-DATE`);
//! 4. an incremental refresh sends that last snapshot, and the primary copy is restored to it;
//! 5. the standby copy becomes an inert replica of the primary again;
//! 6. the primary copy gets its own settings back and starts.
//!
//! Every step looks first and does nothing when it is done, so a second run finishes an
//! interrupted one; the two copies never run at once (the standby copy is stopped in step 3,
//! the primary one started in step 6).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use chrono::Utc;
use incus_core::api::instances::{self, Instance};
use incus_core::api::migration::Mode;
use incus_core::api::snapshots;
use incus_core::client::Client;
use incus_core::interrupt;
use incus_core::record::{FailedBackRecord, Output, Record};
use incus_core::replication::{
    AUTOSTART_BEFORE_KEY, FENCED_KEY, Options, PROMOTED_KEY, Placement, REPLACED_KEY, RESTORED_KEY,
    Replicator, SOURCE_KEY, SOURCE_SETTINGS_KEY, SOURCE_UUID_KEY, SYNCED_KEY, UUID_KEY, address,
    inert_overrides, source_settings,
};
use incus_core::select::Selected;

use crate::pairs::{Pair, PairArgs, resolve};
use crate::promote::Steps;
use crate::status::rfc3339;

/// Names of the last snapshot a failback takes on the standby.
const FINAL_PREFIX: &str = "failback-";

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-failover failback web --standby standby --dry-run\n  incus-failover failback --all --standby standby"
)]
pub struct FailbackArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Print every step that would be taken; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a clean stop of the standby copy before forcing it
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stop_timeout: u64,
    /// Who connects to whom for the copies (as incus-push --mode)
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    pub mode: Mode,
    /// Fail back an instance on a btrfs pool even so (refused by default: Incus 6.0.4 fails
    /// that copy)
    #[arg(long)]
    pub btrfs_anyway: bool,
}

/// `incus-failover failback`.
pub fn failback(args: &FailbackArgs, output: &Output) -> Result<()> {
    let pairs = resolve(&args.pairs, output)?;
    let standby_name = args.pairs.standby.clone();
    let steps = Steps {
        output,
        dry_run: args.dry_run,
    };
    for pair in &pairs.pairs {
        if interrupt::requested() {
            break;
        }
        let start = Instant::now();
        let primary = match pairs.primary(pair) {
            Ok(client) => client,
            Err(e) => {
                output.error(Some(&pair.of), &e.to_string());
                continue;
            }
        };
        // On a clustered primary the instance goes back to the member of the old primary copy
        // (under its name until it is renamed aside, then under its aside name).
        let placement = match instances::get(&primary, &pair.of.instance) {
            Ok((old, _)) => old
                .member()
                .map(|m| Placement::Member(m.to_string()))
                .unwrap_or_default(),
            // A resumed run: the old copy is kept aside already, under NAME-before-failback-….
            Err(e) if e.is_not_found() => instances::list(&primary, false)
                .ok()
                .and_then(|list| {
                    let aside = format!("{}-before-failback-", pair.of.instance);
                    list.iter()
                        .filter(|i| i.name.starts_with(&aside))
                        .max_by(|a, b| a.name.cmp(&b.name))
                        .and_then(|i| i.member().map(|m| Placement::Member(m.to_string())))
                })
                .unwrap_or_default(),
            Err(_) => Placement::Auto,
        };
        // The engine, the other way round: the standby's instance is the source, the primary
        // the target.
        let options = Options {
            to: pair.of.remote.clone(),
            target_project: Some(pair.of.project.clone()),
            storage: None,
            placement,
            mode: args.mode,
            live: false,
            sync_profiles: true,
            adopt: false,
            replace: false,
            dry_run: args.dry_run,
            allow_fenced: false,
            listings_once: false,
            archive: None,
            lease_holder: incus_core::replication::lease::holder("incus-failover"),
            break_lease: false,
        };
        let result = Replicator::connect(&options, &pairs.connections)
            .map_err(|e| format!("the primary {}: {e}", pair.of.remote))
            .and_then(|replicator| {
                let back = Failback {
                    pair,
                    standby: pairs.replica(pair),
                    standby_name: &standby_name,
                    primary: &primary,
                    replicator: &replicator,
                    steps: &steps,
                    stop_timeout: args.stop_timeout,
                    btrfs_anyway: args.btrfs_anyway,
                };
                back.run()
            });
        match result {
            Ok(mut record) => {
                record.seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                output.emit(&Record::FailedBack(record));
            }
            Err(message) => output.error(
                Some(&pair.of),
                &format!(
                    "failing {} back from {standby_name}: {message}",
                    address(&pair.of)
                ),
            ),
        }
    }
    Ok(())
}

struct Failback<'a> {
    pair: &'a Pair,
    standby: Client,
    standby_name: &'a str,
    primary: &'a Client,
    replicator: &'a Replicator<'a>,
    steps: &'a Steps<'a>,
    stop_timeout: u64,
    btrfs_anyway: bool,
}

impl Failback<'_> {
    fn name(&self) -> &str {
        &self.pair.of.instance
    }

    fn run(&self) -> Result<FailedBackRecord, String> {
        let name = self.name().to_string();
        let (standby_copy, _) = instances::get(&self.standby, &name).map_err(|e| {
            if e.is_not_found() {
                format!("there is no {}:{name}", self.standby_name)
            } else {
                e.to_string()
            }
        })?;
        let promoted = standby_copy.config.contains_key(PROMOTED_KEY);
        let primary_copy = match instances::get(self.primary, &name) {
            Ok((instance, _)) => Some(instance),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.to_string()),
        };
        let from_standby = match &primary_copy {
            Some(copy) => self.is_copy_from_standby(copy)?,
            None => false,
        };
        let mut record = FailedBackRecord {
            of: self.pair.of.clone(),
            standby: self.standby_name.to_string(),
            snapshot: None,
            kept_aside: None,
            already: false,
            seconds: 0.0,
            dry_run: self.steps.dry_run,
        };
        if !promoted && !from_standby {
            // Nothing to do: never promoted, or failed back by an earlier run.
            record.already = true;
            record.snapshot = standby_copy.config.get(RESTORED_KEY).cloned();
            return Ok(record);
        }
        if promoted && !from_standby && !self.btrfs_anyway {
            self.refuse_btrfs(&standby_copy)?;
        }
        if let Some(old) = &primary_copy
            && !from_standby
        {
            record.kept_aside = Some(self.keep_old_primary_aside(old)?);
        }
        record.snapshot = if promoted {
            // The long copy while the instance still runs on the standby, then the short
            // final one.
            self.sync("pre-copy")?;
            let was_running = self.stop_standby_copy()?;
            // Once the standby copy is stopped, a failure must not leave the service down:
            // start it again, and say so.
            let finish = || -> Result<String, String> {
                let snapshot = self.final_snapshot()?;
                fail::fail_point!("failback::before-final-sync", |arg| Err(
                    incus_core::replication::injected_error(arg)
                ));
                self.sync("final-sync")?;
                self.check_restored(&snapshot)?;
                Ok(snapshot)
            };
            let _ = was_running;
            let snapshot = match finish() {
                Ok(snapshot) => snapshot,
                // Whoever stopped it (this run or a cut one), the promoted copy serves again.
                Err(e) if !self.steps.dry_run => {
                    let restarted =
                        instances::change_state(&self.standby, &name, "start", 0, false);
                    return Err(match restarted {
                        Ok(()) => format!(
                            "{e}; {}:{name} was started again and still serves: nothing is lost, run failback again once the cause is fixed",
                            self.standby_name
                        ),
                        Err(start) => format!(
                            "{e}; and starting {}:{name} again failed too ({start}): start it by hand (incus start {}:{name})",
                            self.standby_name, self.standby_name
                        ),
                    });
                }
                Err(e) => return Err(e),
            };
            self.make_standby_a_replica_again(&snapshot)?;
            Some(snapshot)
        } else {
            primary_copy.and_then(|c| c.config.get(RESTORED_KEY).cloned())
        };
        // Started while still marked (inert keys included), then given its own settings: a
        // run cut between the two still finds it as the copy from the standby, and finishes.
        self.start_primary()?;
        self.primary_identity()?;
        Ok(record)
    }

    /// True when the primary's instance is the engine's copy of the standby's (its marker
    /// names the standby's instance), not the old primary copy.
    fn is_copy_from_standby(&self, copy: &Instance) -> Result<bool, String> {
        let Some(marker) = copy.config.get(SOURCE_KEY) else {
            return Ok(false);
        };
        let fingerprint = self
            .standby
            .server()
            .map_err(|e| e.to_string())?
            .environment
            .certificate_fingerprint
            .clone();
        Ok(*marker
            == format!(
                "{}/{}/{}",
                fingerprint.get(..12).unwrap_or(&fingerprint),
                self.standby.project(),
                self.name()
            ))
    }

    /// Incus 6.0.4 cannot copy back to a btrfs pool an instance whose snapshots a refresh
    /// brought (`btrfs receive` cannot find the parent subvolume; reproduced with the plain
    /// `incus copy`), and a retried copy can leave the pool's volume broken. Refuse before
    /// anything changes.
    fn refuse_btrfs(&self, standby_copy: &Instance) -> Result<(), String> {
        let Some(pool) = standby_copy.root_pool() else {
            return Ok(());
        };
        let drivers = [
            incus_core::api::projects::pool_driver(&self.standby, pool),
            incus_core::api::projects::pool_driver(self.primary, pool),
        ];
        if drivers
            .iter()
            .any(|d| d.as_deref().is_ok_and(|d| d == "btrfs"))
        {
            return Err(format!(
                "the instance is on btrfs pool {pool}: Incus 6.0 cannot copy it back (btrfs receive cannot find the parent subvolume of snapshots a refresh brought, with the plain incus CLI too), and a failed copy can damage the pool's volume; nothing was changed: keep it running on {}, or fail back by hand to another pool, or pass --btrfs-anyway on an Incus that has the fix",
                self.standby_name
            ));
        }
        Ok(())
    }

    /// Step 1: the old primary copy, with whatever it holds that the standby does not, is
    /// renamed aside, inert (it was fenced); nothing of it is deleted.
    fn keep_old_primary_aside(&self, old: &Instance) -> Result<String, String> {
        let name = self.name();
        if old.is_running() {
            return Err(format!(
                "{} runs (split brain): fence it first with incus-failover fence {} --standby {}",
                address(&self.pair.of),
                address(&self.pair.of),
                self.standby_name
            ));
        }
        let aside = aside_name(name, Utc::now());
        self.steps.report(
            &self.pair.of,
            "keep-aside",
            format!(
                "rename the old primary copy {} to {aside} (kept with its snapshots and its own data)",
                address(&self.pair.of)
            ),
        );
        if self.steps.dry_run {
            return Ok(aside);
        }
        let changes: BTreeMap<String, String> = BTreeMap::from([
            ("boot.autostart".to_string(), "false".to_string()),
            (
                REPLACED_KEY.to_string(),
                format!(
                    "{} kept aside by a failback from {}",
                    rfc3339(Utc::now()),
                    self.standby_name
                ),
            ),
        ]);
        instances::patch_config(self.primary, name, &changes, None)
            .map_err(|e| format!("marking the old primary copy: {e}"))?;
        instances::rename(self.primary, name, &aside)
            .map_err(|e| format!("renaming the old primary copy to {aside}: {e}"))?;
        fail::fail_point!("failback::after-aside", |arg| Err(
            incus_core::replication::injected_error(arg)
        ));
        Ok(aside)
    }

    /// Copies or refreshes the standby's instance onto the primary with the engine.
    fn sync(&self, what: &str) -> Result<(), String> {
        let name = self.name();
        let (instance, _) = instances::get(&self.standby, name).map_err(|e| e.to_string())?;
        let selected = Selected {
            of: incus_core::record::InstanceRef {
                remote: self.standby_name.to_string(),
                project: self.standby.project().to_string(),
                instance: name.to_string(),
            },
            client: self.standby.clone(),
            instance,
        };
        if self.steps.dry_run {
            self.steps.report(
                &self.pair.of,
                what,
                format!(
                    "copy {}:{name} to {}",
                    self.standby_name,
                    address(&self.pair.of)
                ),
            );
            return Ok(());
        }
        let pushed = self
            .replicator
            .replicate(&selected)
            .map_err(|e| format!("{what}: {e}"))?;
        self.steps.report(
            &self.pair.of,
            what,
            format!(
                "{} {}:{name} to {}",
                pushed.status,
                self.standby_name,
                address(&self.pair.of)
            ),
        );
        fail::fail_point!("failback::after-sync", |arg| Err(
            incus_core::replication::injected_error(arg)
        ));
        Ok(())
    }

    /// Step 3: the standby copy stops (cleanly, then by force). True when it was running.
    fn stop_standby_copy(&self) -> Result<bool, String> {
        let name = self.name();
        let (instance, _) = instances::get(&self.standby, name).map_err(|e| e.to_string())?;
        if !instance.is_running() {
            return Ok(false);
        }
        self.steps.report(
            &self.pair.of,
            "stop",
            format!("stop {}:{name} on the standby", self.standby_name),
        );
        if self.steps.dry_run {
            return Ok(true);
        }
        instances::stop_clean_then_force(&self.standby, name, self.stop_timeout)
            .map_err(|e| format!("stopping {}:{name}: {e}", self.standby_name))?;
        Ok(true)
    }

    /// The last snapshot of the stopped standby copy (reused by a resumed run).
    fn final_snapshot(&self) -> Result<String, String> {
        let name = self.name();
        let list = snapshots::list(&self.standby, name).map_err(|e| e.to_string())?;
        // Reused only when taken by a run of this failback: after the promotion (an older
        // `failback-` snapshot would bring back old data).
        let (copy, _) = instances::get(&self.standby, name).map_err(|e| e.to_string())?;
        let promoted_at = copy
            .config
            .get(PROMOTED_KEY)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if let (Some(newest), Some(promoted_at)) = (list.last(), promoted_at)
            && newest.name.starts_with(FINAL_PREFIX)
            && newest.created_at.timestamp() >= promoted_at.timestamp()
        {
            return Ok(newest.name.clone());
        }
        let snapshot = format!("{FINAL_PREFIX}{}", Utc::now().format("%Y%m%d-%H%M%S"));
        self.steps.report(
            &self.pair.of,
            "final-snapshot",
            format!("snapshot {}:{name}/{snapshot}", self.standby_name),
        );
        if !self.steps.dry_run {
            snapshots::create(&self.standby, name, &snapshot, false, None)
                .map_err(|e| format!("taking the final snapshot {snapshot}: {e}"))?;
        }
        Ok(snapshot)
    }

    fn check_restored(&self, snapshot: &str) -> Result<(), String> {
        if self.steps.dry_run {
            return Ok(());
        }
        let (copy, _) = instances::get(self.primary, self.name()).map_err(|e| e.to_string())?;
        if copy.config.get(RESTORED_KEY).map(String::as_str) != Some(snapshot) {
            return Err(format!(
                "after the final sync the primary copy is not restored to {snapshot}; nothing was started"
            ));
        }
        Ok(())
    }

    /// Step 5: the standby copy is an inert replica of the primary copy again: inert keys,
    /// and markers naming the primary copy (its new `volatile.uuid`).
    fn make_standby_a_replica_again(&self, snapshot: &str) -> Result<(), String> {
        let name = self.name();
        self.steps.report(
            &self.pair.of,
            "re-replica",
            format!(
                "make {}:{name} an inert replica of {} again",
                self.standby_name,
                address(&self.pair.of)
            ),
        );
        if self.steps.dry_run {
            return Ok(());
        }
        let (copy, _) = instances::get(self.primary, name).map_err(|e| e.to_string())?;
        let fingerprint = self
            .primary
            .server()
            .map_err(|e| e.to_string())?
            .environment
            .certificate_fingerprint
            .clone();
        let (standby_copy, _) = instances::get(&self.standby, name).map_err(|e| e.to_string())?;
        let mut changes: BTreeMap<String, String> = inert_overrides()
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect();
        changes.insert(
            SOURCE_KEY.into(),
            format!(
                "{}/{}/{name}",
                fingerprint.get(..12).unwrap_or(&fingerprint),
                self.pair.of.project
            ),
        );
        if let Some(uuid) = copy.config.get(UUID_KEY) {
            changes.insert(SOURCE_UUID_KEY.into(), uuid.clone());
        }
        changes.insert(
            SOURCE_SETTINGS_KEY.into(),
            source_settings(&standby_copy.config),
        );
        changes.insert(RESTORED_KEY.into(), snapshot.to_string());
        changes.insert(SYNCED_KEY.into(), rfc3339(Utc::now()));
        changes.insert(PROMOTED_KEY.into(), String::new());
        instances::patch_config(&self.standby, name, &changes, None)
            .map_err(|e| format!("making {}:{name} a replica again: {e}", self.standby_name))?;
        fail::fail_point!("failback::after-re-replica", |arg| Err(
            incus_core::replication::injected_error(arg)
        ));
        Ok(())
    }

    /// Step 6: the primary copy gets the instance's own settings back (from the promoted
    /// copy's, which the restore brought) instead of the engine's inert ones and markers.
    fn primary_identity(&self) -> Result<(), String> {
        let name = self.name();
        if self.steps.dry_run {
            self.steps.report(
                &self.pair.of,
                "identity",
                format!("give {} its own settings back", address(&self.pair.of)),
            );
            return Ok(());
        }
        let (copy, _) = instances::get(self.primary, name).map_err(|e| e.to_string())?;
        if !copy.config.contains_key(SOURCE_KEY) {
            return Ok(());
        }
        let mut changes = incus_core::replication::own_settings(&copy.config);
        for key in [
            SOURCE_KEY,
            SOURCE_UUID_KEY,
            SOURCE_SETTINGS_KEY,
            SYNCED_KEY,
            RESTORED_KEY,
            PROMOTED_KEY,
            FENCED_KEY,
            AUTOSTART_BEFORE_KEY,
        ] {
            changes.insert(key.to_string(), String::new());
        }
        self.steps.report(
            &self.pair.of,
            "identity",
            format!("give {} its own settings back", address(&self.pair.of)),
        );
        instances::patch_config(self.primary, name, &changes, None)
            .map_err(|e| format!("writing the primary copy's configuration: {e}"))
    }

    /// Last: the primary copy starts, once the standby copy is seen stopped.
    fn start_primary(&self) -> Result<(), String> {
        let name = self.name();
        if self.steps.dry_run {
            self.steps.report(
                &self.pair.of,
                "start",
                format!("start {}", address(&self.pair.of)),
            );
            return Ok(());
        }
        let (standby_copy, _) = instances::get(&self.standby, name).map_err(|e| e.to_string())?;
        if standby_copy.is_running() {
            return Err(format!(
                "{}:{name} runs again; the primary copy was not started",
                self.standby_name
            ));
        }
        let (copy, _) = instances::get(self.primary, name).map_err(|e| e.to_string())?;
        if copy.is_running() {
            return Ok(());
        }
        self.steps.report(
            &self.pair.of,
            "start",
            format!("start {}", address(&self.pair.of)),
        );
        instances::change_state(self.primary, name, "start", 0, false)
            .map_err(|e| format!("starting {}: {e}", address(&self.pair.of)))
    }
}

/// `NAME-before-failback-YYYYMMDD-HHMMSS`, cut to Incus's 63 characters.
fn aside_name(name: &str, at: chrono::DateTime<Utc>) -> String {
    let suffix = at.format("-before-failback-%Y%m%d-%H%M%S").to_string();
    let room = 63usize.saturating_sub(suffix.len());
    let base: String = name.chars().take(room).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_primary_copy_is_kept_under_a_name_that_says_so() {
        let at = chrono::DateTime::from_timestamp(1_795_899_000, 0).unwrap_or_default();
        assert_eq!(aside_name("web", at), "web-before-failback-20261128-205000");
        assert_eq!(aside_name(&"x".repeat(70), at).len(), 63);
    }
}
