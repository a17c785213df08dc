//! The last of replication's three steps: carry a [`Decision`] out. Every check was made by
//! then; the standby changes in this order, each step safe to cut:
//!
//! 1. the replica's lease (another host may be promoting it);
//! 2. missing profiles, archive points of what the refresh will drop;
//! 3. an unfinished replica deleted, or a refused one moved aside (renamed, kept);
//! 4. the transfer;
//! 5. the restore to the newest snapshot, then **one** write: inert keys, markers, and the
//!    lease's release;
//! 6. archive points the policy no longer keeps.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::api::instances::{self, Instance};
use crate::api::migration::Transfer;
use crate::api::{profiles, snapshots};
use crate::client::{Client, WaitOptions};
use crate::interrupt;
use crate::markers::{ConfigPatch, ReplaceReason, Replaced, ReplicaMarkers, lease_patch};
use crate::record::PushRecord;
use crate::select::Selected;

use super::Replicator;
use super::archive::{self, Making};
use super::engine::{Report, address};
use super::error::Error;
use super::lease::LeaseGuard;
use super::observe::Observed;
use super::plan::{Decision, Plan, Refusal, Start};

impl Replicator<'_> {
    /// Carries the decision out (a dry run reports it and changes nothing).
    pub(super) fn apply(
        &self,
        selected: &Selected,
        observed: &Observed,
        decision: Decision,
        started: Instant,
    ) -> Result<PushRecord, Error> {
        let mut report = Report::new(selected, self.options, started);
        report.volumes = decision.volumes.iter().map(|v| v.record()).collect();
        let volumes_to_send = decision.volumes.iter().any(|v| v.needs_work());
        if decision.plan == Plan::UpToDate {
            if self.options.dry_run {
                return Ok(report.record(&decision.plan, decision.replica_location));
            }
            let lease = if volumes_to_send {
                let lease = self.take_lease(observed)?;
                self.send_volumes(selected, observed, &decision)?;
                interrupt::without_interruption(|| {
                    self.finish_volumes(
                        &self.target(observed),
                        &observed.volumes,
                        &decision.volumes,
                    )
                })?;
                lease
            } else {
                None
            };
            self.update_markers(observed, &decision, lease)?;
            self.clear_expiry(observed, &selected.of.instance, &decision.clear_expiry)?;
            return Ok(report.record(&decision.plan, decision.replica_location));
        }
        if let Start::MoveAside { aside, .. } = &decision.start {
            report.moved_aside = Some(aside.clone());
        }
        if let Some(archive) = &decision.archive {
            report.archived = archive
                .plan
                .archive
                .iter()
                .map(|s| super::plan::archive_name(&selected.of.instance, &s.name))
                .collect();
        }
        if self.options.dry_run {
            report.archives_deleted = decision
                .archive
                .as_ref()
                .map(|a| a.plan.delete.clone())
                .unwrap_or_default();
            // Where the copy would go: the replica's member for a refresh; for a new copy
            // (also one replacing an unfinished or moved-aside replica) the member placement
            // names, absent when the cluster's scheduler or a group will choose.
            let location = match decision.start {
                Start::Refresh => decision.replica_location.clone(),
                _ => decision
                    .placement
                    .clone()
                    .filter(|target| !target.starts_with('@')),
            };
            return Ok(report.record(&decision.plan, location));
        }
        // An unfinished first copy is deleted without its lease: it cannot be promoted (not
        // ready), and one that a dying standby left without its storage volume (Incus 7.0)
        // refuses every configuration write, the lease's too.
        let mut lease = if decision.start == Start::ReplaceUnfinished {
            None
        } else {
            self.take_lease(observed)?
        };
        self.copy_profiles(selected, observed, &decision.copy_profiles)?;
        report.archived = self.make_archives(observed, &decision)?;
        self.clear_the_way(observed, &decision.start)?;
        self.send_volumes(selected, observed, &decision)?;
        let received_on = self.transfer(selected, observed, &decision, lease.as_ref())?;
        fail::fail_point!("push::after-transfer", super::error::injected);
        self.clear_expiry(observed, &selected.of.instance, &decision.clear_expiry)?;
        interrupt::without_interruption(|| {
            let target = self.target(observed);
            self.finish_volumes(&target, &observed.volumes, &decision.volumes)?;
            self.finish(selected, observed, &decision, lease.as_mut())
        })?;
        if let Some(archive) = &decision.archive {
            report.archives_deleted =
                archive::delete_old(&self.standby, &self.options.to, archive)?;
        }
        Ok(report.record(&decision.plan, received_on))
    }

    /// A current replica: only markers it lacks are written, under its lease, which the same
    /// write releases; none at all costs no write. `held`: the lease taken for its volumes,
    /// released by this write.
    fn update_markers(
        &self,
        observed: &Observed,
        decision: &Decision,
        held: Option<LeaseGuard>,
    ) -> Result<(), Error> {
        let Some(replica) = &observed.replica else {
            return Ok(());
        };
        if decision.marker_updates.0.is_empty() && held.is_none() {
            return Ok(());
        }
        let mut lease = match held {
            Some(lease) => Some(lease),
            None => self.take_lease(observed)?,
        };
        let mut changes = decision.marker_updates.clone();
        if let Some(lease) = &lease {
            changes.merge(lease_patch(lease.value_after_write()));
        }
        instances::patch_config(
            &self.target(observed),
            &replica.instance.name,
            &changes.as_merge(),
            None,
        )
        .map_err(|e| Error::incus("updating the replica's markers", e))?;
        if let Some(lease) = lease.as_mut() {
            lease.released_by_write();
        }
        Ok(())
    }

    /// Removes the expiry of replica snapshots: a replica snapshot never expires by itself
    /// (the standby's daemon would delete it, whatever the standby's retention keeps).
    fn clear_expiry(&self, observed: &Observed, name: &str, which: &[String]) -> Result<(), Error> {
        let target = self.target(observed);
        for snapshot in which {
            snapshots::set_expiry(&target, name, snapshot, None).map_err(|e| {
                Error::incus(
                    format!("keeping the replica's snapshot {snapshot} from expiring"),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// The replica's lease, when there is a replica (none for a first copy).
    fn take_lease(&self, observed: &Observed) -> Result<Option<LeaseGuard>, Error> {
        let Some(replica) = &observed.replica else {
            return Ok(None);
        };
        let guard = LeaseGuard::take(
            &self.target(observed),
            &replica.instance.name,
            &self.options.lease_holder,
            self.options.break_lease,
            Some((replica.instance.clone(), replica.etag.clone())),
        )?;
        Ok(Some(guard))
    }

    /// `--sync-profiles` (and a failback): copies the profiles the standby lacks.
    fn copy_profiles(
        &self,
        selected: &Selected,
        observed: &Observed,
        missing: &[String],
    ) -> Result<(), Error> {
        let target = &self.target(observed);
        for name in missing {
            let profile = profiles::get(&selected.client, name)?;
            match profiles::create(target, &profile) {
                Ok(()) => {}
                // Another job copied it meanwhile.
                Err(e) if e.status() == Some(409) || e.message().contains("already exists") => {}
                Err(e) => return Err(Error::incus(format!("copying profile {name}"), e)),
            }
            if let Ok(mut cache) = self.profiles.lock()
                && let Some(known) = cache.get_mut(target.project())
            {
                known.insert(name.clone());
            }
        }
        Ok(())
    }

    fn make_archives(
        &self,
        observed: &Observed,
        decision: &Decision,
    ) -> Result<Vec<String>, Error> {
        let (Some(archive), Some(replica)) = (&decision.archive, &observed.replica) else {
            return Ok(Vec::new());
        };
        if !matches!(decision.start, Start::Refresh) {
            return Ok(Vec::new());
        }
        archive::make(
            &Making {
                standby: &self.standby,
                to: &self.options.to,
                target: &self.target(observed),
                replica: &replica.instance,
                listed: &replica.snapshots,
                source: &observed.source_id,
                source_uuid: observed.source_uuid.as_deref(),
            },
            archive,
        )
    }

    /// Makes room for a new copy: an unfinished replica is deleted, a refused one moved aside.
    fn clear_the_way(&self, observed: &Observed, start: &Start) -> Result<(), Error> {
        let Some(replica) = &observed.replica else {
            return Ok(());
        };
        let target = &self.target(observed);
        let name = &replica.instance.name;
        match start {
            Start::MoveAside { aside, refusal } => {
                self.settle(target, name)?;
                self.move_aside(target, &replica.instance, aside, refusal)
            }
            Start::ReplaceUnfinished => {
                // A first copy that never finished: its snapshot records may lack their data.
                self.settle(target, name)?;
                match instances::delete(target, name) {
                    // Incus removed it itself: a migration that failed once the standby
                    // answered again deletes the instance it was creating.
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other.map_err(|e| {
                        Error::incus(
                            format!("removing the unfinished replica {}:{name}", self.options.to),
                            e,
                        )
                    }),
                }
            }
            Start::FreshCopy | Start::Refresh => Ok(()),
        }
    }

    /// `--replace`: renames the refused replica to `NAME-replaced-…` (never deletes it) and
    /// marks it, still inert, so that nothing of the history is lost.
    fn move_aside(
        &self,
        target: &Client,
        old: &Instance,
        aside: &str,
        refusal: &Refusal,
    ) -> Result<(), Error> {
        let to = &self.options.to;
        // Marked and inert first, then renamed: a run cut in between leaves a marked replica
        // under its own name, which the next --replace moves aside.
        let mut changes = ConfigPatch::inert();
        changes.merge(lease_patch(None));
        changes.merge(Replaced::now(ReplaceReason::Refused(refusal.kind().to_string())).to_patch());
        instances::patch_config(target, &old.name, &changes.as_merge(), None).map_err(|e| {
            Error::incus_left(
                format!("marking {to}:{} before moving it aside", old.name),
                e,
                "; nothing else was changed",
            )
        })?;
        instances::rename(target, &old.name, aside).map_err(|e| {
            Error::incus_left(
                format!("moving {to}:{} aside to {aside}", old.name),
                e,
                "; it keeps its name and its data",
            )
        })?;
        fail::fail_point!("push::after-move-aside", super::error::injected);
        Ok(())
    }

    /// The configuration changes a replica is sent with: inert, marked as this source's (not
    /// yet synced: a cut first copy is known unfinished), the lease kept.
    fn transfer_overrides(decision: &Decision, lease: Option<&LeaseGuard>) -> ConfigPatch {
        let mut overrides = ConfigPatch::inert();
        overrides.merge(decision.markers.to_transfer_patch());
        if let Some(lease) = lease {
            overrides.merge(lease_patch(Some(lease.value.clone())));
        }
        overrides
    }

    /// Sends the instance with its snapshots, a progress bar on a terminal. Returns the member
    /// that received it.
    fn transfer(
        &self,
        selected: &Selected,
        observed: &Observed,
        decision: &Decision,
        lease: Option<&LeaseGuard>,
    ) -> Result<Option<String>, Error> {
        let target = &self.target(observed);
        let name = &selected.of.instance;
        let overrides = Self::transfer_overrides(decision, lease);
        let transfer = transfer_of(selected, target, decision, &overrides);
        let bar = self.bars.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(address(&selected.of));
        bar.set_message("starting");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        // Incus reports what it sent and its rate (`rootfs: 120.00MB (55.00MB/s)`), not the
        // size to come: no percentage or ETA is possible.
        let report = |progress: &str| bar.set_message(progress.to_string());
        let wait = WaitOptions {
            limit: None,
            progress: Some(&report),
            on_interrupt: None,
        };
        self.settle(target, name)?;
        let result = injected_transient().and_then(|()| transfer.run(self.options.mode, &wait));
        bar.finish_and_clear();
        self.bars.remove(&bar);
        let first_copy = decision.start != Start::Refresh;
        result.map_err(|e| match e {
            crate::Error::Cancelled => Error::Interrupted {
                standby: self.options.to.clone(),
                instance: name.clone(),
            },
            other if first_copy && super::error::transient_message(&other.message()) => {
                Error::TransientCopy(Box::new(crate::error::StepFailed::new("", other, "")))
            }
            other => Error::incus("", other),
        })
    }

    /// Restores the replica to the newest snapshot and writes, in one request, its inert keys,
    /// its markers and the lease's release; with `--live`, writes the source's current config
    /// with the same keys instead (a refresh does not update the config).
    fn finish(
        &self,
        selected: &Selected,
        observed: &Observed,
        decision: &Decision,
        lease: Option<&mut LeaseGuard>,
    ) -> Result<(), Error> {
        let target = &self.target(observed);
        let name = &selected.of.instance;
        let mut changes = ConfigPatch::inert();
        let markers = ReplicaMarkers {
            restored: decision.restore_to.clone(),
            synced_at: Some(chrono::Utc::now()),
            ..decision.markers.clone()
        };
        changes.merge(markers.to_patch());
        if let Some(replica) = &observed.replica {
            // A restore drops the drill's result; it stays the replica's.
            changes.merge(crate::markers::Drill::kept(&replica.instance.config));
        }
        changes.merge(lease_patch(
            lease.as_ref().and_then(|l| l.value_after_write()),
        ));
        let disk_only = target.server()?.features().disk_only_restore;
        let written = match &decision.restore_to {
            // The configuration stays inert and marked throughout; the snapshot's own settings,
            // devices and profiles are then written with the markers in one request.
            Some(snapshot) if disk_only => {
                snapshots::restore_disk_only(target, name, snapshot)
                    .map_err(|e| Error::incus(format!("restoring the replica to {snapshot}"), e))?;
                fail::fail_point!("push::after-restore", super::error::injected);
                write_snapshot_settings(target, name, snapshot, &changes)
            }
            Some(snapshot) => {
                snapshots::restore(target, name, snapshot)
                    .map_err(|e| Error::incus(format!("restoring the replica to {snapshot}"), e))?;
                fail::fail_point!("push::after-restore", super::error::injected);
                write_after_restore(target, name, snapshot, &changes)
            }
            None => self.write_live_config(selected, observed, decision, &changes),
        };
        written?;
        if let Some(lease) = lease {
            lease.released_by_write();
        }
        Ok(())
    }

    /// `--live`: the refresh left the configuration of the first copy; write the source's.
    fn write_live_config(
        &self,
        selected: &Selected,
        observed: &Observed,
        decision: &Decision,
        changes: &ConfigPatch,
    ) -> Result<(), Error> {
        let target = &self.target(observed);
        let name = &selected.of.instance;
        let (replica, etag) = instances::get(target, name)?;
        let overrides = Self::transfer_overrides(decision, None);
        let transfer = transfer_of(selected, target, decision, &overrides);
        let mut config = transfer.target_config();
        config.remove("volatile.base_image");
        for (key, value) in &replica.config {
            if key.starts_with("volatile.") {
                config.insert(key.clone(), value.clone());
            }
        }
        changes.apply_to(&mut config);
        let mut body = replica.writable();
        body["config"] = serde_json::json!(config);
        body["devices"] = serde_json::json!(transfer.target_devices());
        body["profiles"] = serde_json::json!(selected.instance.profiles);
        instances::put(target, name, body, etag).map_err(|e| {
            // Keep the replica recognisable and inert even so.
            let _ = instances::patch_config(target, name, &config, None);
            Error::incus("writing the replica's configuration", e)
        })
    }
}

/// A transfer that fails as Incus's do now and then under load (a test's failpoint,
/// `push::transfer-transient`; `1*return` fails the first attempt only).
fn injected_transient() -> crate::Result<()> {
    fail::fail_point!("push::transfer-transient", |_| {
        Err(crate::Error::Api {
        remote: "standby".into(),
        status: 500,
        message: "Error transferring instance data: Rsync send failed: connection unexpectedly closed (injected)".into(),
    })
    });
    Ok(())
}

/// The transfer the decision asks for, with these configuration overrides.
fn transfer_of<'a>(
    selected: &'a Selected,
    target: &'a Client,
    decision: &'a Decision,
    overrides: &'a ConfigPatch,
) -> Transfer<'a> {
    Transfer {
        source: &selected.client,
        instance: &selected.instance,
        target,
        target_name: &selected.of.instance,
        refresh: decision.start == Start::Refresh,
        pool: decision.pool.as_deref(),
        config_overrides: &overrides.0,
        placement: decision.placement.as_deref(),
    }
}

/// The replica is now the snapshot, configuration included: only the inert keys, the markers
/// and the lease change (a merge, no operation). Until this write it carries the snapshot's
/// own settings (autostart among them): a failure is retried at once; a replica left so is
/// still recognised, and repaired, by the next run.
fn write_after_restore(
    target: &Client,
    name: &str,
    snapshot: &str,
    changes: &ConfigPatch,
) -> Result<(), Error> {
    let changes: BTreeMap<String, String> = changes.as_merge();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_config(target, name, &changes) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 3 => {
                return Err(Error::incus_left(
                    format!("writing the replica's configuration after restoring it to {snapshot}"),
                    e,
                    "; the replica is recognised and made inert again by the next run",
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// After a disk-only restore: the replica gets its snapshot's configuration, devices and
/// profiles (what a full restore gives) with the inert keys, the markers and the lease, in
/// one guarded request. Its own volatile keys stay, but its last power state, which would
/// start it at the standby's next boot. Retried as [`write_after_restore`]; a replica left
/// with its previous configuration is still inert and marked, and refreshed by the next run.
fn write_snapshot_settings(
    target: &Client,
    name: &str,
    snapshot: &str,
    changes: &ConfigPatch,
) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let written = snapshots::get(target, name, snapshot).and_then(|taken| {
            let (replica, etag) = instances::get(target, name)?;
            let mut config = taken.config.clone();
            for (key, value) in &replica.config {
                if key.starts_with("volatile.") && !config.contains_key(key) {
                    config.insert(key.clone(), value.clone());
                }
            }
            config.remove("volatile.last_state.power");
            changes.apply_to(&mut config);
            let mut body = replica.writable();
            body["config"] = serde_json::json!(config);
            body["devices"] = serde_json::json!(taken.devices);
            body["profiles"] = serde_json::json!(taken.profiles);
            fail::fail_point!("push::write-config", |arg| Err(crate::Error::Config(
                super::error::injected_error(arg)
            )));
            instances::put(target, name, body, etag)
        });
        match written {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 3 => {
                return Err(Error::incus_left(
                    format!("writing the replica's configuration after restoring it to {snapshot}"),
                    e,
                    "; the replica is still inert and marked, and the next run restores it again",
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// Merges the replica's configuration keys (a failpoint stands in for a failing server).
fn write_config(
    target: &Client,
    name: &str,
    changes: &BTreeMap<String, String>,
) -> crate::Result<()> {
    fail::fail_point!("push::write-config", |arg| Err(crate::Error::Config(
        super::error::injected_error(arg)
    )));
    instances::patch_config(target, name, changes, None)
}

impl Replicator<'_> {
    /// Waits for operations still working on the replica (a transfer whose run was killed
    /// goes on on the server): a refresh started meanwhile would fail on the busy instance.
    /// A push reads the standby's operations once per run and project: what a killed run
    /// left is in that listing, and a run elsewhere cannot reach the replica without its
    /// lease.
    fn settle(&self, target: &Client, name: &str) -> Result<(), Error> {
        let running = if self.options.listings_once() {
            self.operations_once(target)?
        } else {
            crate::api::operations::running(target)?
        };
        settle_on(target, name, running);
        Ok(())
    }

    fn operations_once(&self, target: &Client) -> Result<Vec<crate::client::Operation>, Error> {
        let mut cache = self
            .operations
            .lock()
            .map_err(|_| Error::Unsafe("operation cache poisoned".to_string()))?;
        if let Some(known) = cache.get(target.project()) {
            return Ok(known.clone());
        }
        let running = crate::api::operations::running(target)?;
        cache.insert(target.project().to_string(), running.clone());
        Ok(running)
    }
}

fn settle_on(target: &Client, name: &str, running: Vec<crate::client::Operation>) {
    let url = format!("/1.0/instances/{name}");
    for op in running {
        let concerned = op.resources.get("instances").is_some_and(|list| {
            list.iter()
                .any(|u| u.split('?').next() == Some(url.as_str()))
        });
        if concerned {
            let options = WaitOptions {
                limit: Some(std::time::Duration::from_secs(1800)),
                ..WaitOptions::default()
            };
            // Its outcome does not matter: the comparison is made again by Incus's refresh.
            let _ = target.wait(&op, &options);
        }
    }
}
