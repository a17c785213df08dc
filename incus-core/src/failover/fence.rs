//! Fencing the old primary copy of a promoted instance: autostart off (its old value kept on
//! it), then stopped, cleanly and then by force. Promotion fences the same way before its
//! final sync; `incus-failover fence` does it alone, once a primary that was away answers.
//!
//! | state | next step |
//! |---|---|
//! | replica not promoted | refused: fencing would stop production |
//! | primary serving (not fenced) | `fence` |
//! | fenced, running | `stop` |
//! | fenced, stopped | done |

use chrono::Utc;

use crate::api::instances::{self, Instance};
use crate::client::Client;
use crate::markers::{AUTOSTART, ConfigPatch, Fenced, PrimaryMarkers, ReplicaMarkers};
use crate::record::{FencedRecord, InstanceRef, Output, Record};
use crate::replication::address;

use super::error::Error;
use super::pairs::{Pair, PairArgs, Pairs, resolve};
use super::runner::{Runner, Sequence};
use super::step::{Flow, Step};

/// The primary copy as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimaryFacts {
    pub running: bool,
    /// Its `boot.autostart` now (`None`: unset).
    pub autostart: Option<String>,
    pub fenced: Option<Fenced>,
    pub etag: Option<String>,
    /// A promotion's final snapshot taken since the fencing.
    pub final_snapshot: Option<String>,
}

impl PrimaryFacts {
    pub fn of(instance: &Instance, etag: Option<String>) -> Self {
        PrimaryFacts {
            running: instance.is_running(),
            autostart: instance.config.get(AUTOSTART).cloned(),
            fenced: PrimaryMarkers::from_config(&instance.config).fenced,
            etag,
            final_snapshot: None,
        }
    }

    /// Its own autostart: the one recorded by the fencing, else the current one.
    pub fn own_autostart(&self) -> Option<String> {
        match &self.fenced {
            Some(fenced) => fenced.autostart_before.clone(),
            None => self.autostart.clone(),
        }
    }
}

/// Where fencing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceState {
    Serving,
    FencedRunning,
    Fenced,
}

impl FenceState {
    pub fn of(primary: &PrimaryFacts) -> Self {
        match (&primary.fenced, primary.running) {
            (None, _) => FenceState::Serving,
            (Some(_), true) => FenceState::FencedRunning,
            (Some(_), false) => FenceState::Fenced,
        }
    }
}

/// The next fencing step.
pub fn next_step(state: FenceState) -> Option<Step> {
    match state {
        FenceState::Serving => Some(Step::Fence),
        FenceState::FencedRunning => Some(Step::Stop),
        FenceState::Fenced => None,
    }
}

/// "set boot.autostart=false on …".
pub(super) fn describe_fence(of: &InstanceRef, primary: &PrimaryFacts) -> String {
    format!(
        "set boot.autostart=false on {} (was {})",
        address(of),
        primary.autostart.as_deref().unwrap_or("unset")
    )
}

pub(super) fn describe_stop(of: &InstanceRef, timeout: u64) -> String {
    format!(
        "stop {} (clean within {timeout} s, then forced)",
        address(of)
    )
}

/// Fences the primary copy: `boot.autostart=false`, its old value and the fencing recorded on
/// it, in one write guarded by the ETag read.
pub(super) fn fence_primary(
    primary: &Client,
    of: &InstanceRef,
    facts: &PrimaryFacts,
    standby_name: &str,
) -> Result<(), Error> {
    let mut changes = ConfigPatch::default();
    changes.set(AUTOSTART, "false");
    changes.merge(
        PrimaryMarkers {
            fenced: Some(Fenced {
                at: Some(Utc::now()),
                standby: standby_name.to_string(),
                autostart_before: facts.autostart.clone(),
            }),
        }
        .to_patch(),
    );
    instances::patch_config(
        primary,
        &of.instance,
        &changes.as_merge(),
        facts.etag.clone(),
    )
    .map_err(|e| {
        Error::incus_left(
            format!("fencing {}", address(of)),
            e,
            "; nothing else was changed",
        )
    })
}

/// Stops a copy cleanly within `timeout` seconds, then by force (a `force-stop` step record
/// says so).
pub(super) fn stop_copy(
    runner: &Runner,
    of: &InstanceRef,
    client: &Client,
    name: &str,
    what: &str,
    timeout: u64,
) -> Result<(), Error> {
    let forced = instances::stop_clean_then_force(client, name, timeout)
        .map_err(|e| Error::incus(format!("stopping {what}"), e))?;
    if let Some(clean) = forced {
        runner.report(
            of,
            Step::ForceStop,
            format!("the clean stop failed ({}); it was forced", clean.message()),
        );
    }
    Ok(())
}

/// Reads the replica of a pair; one line when there is none.
pub(super) fn read_replica(
    standby: &Client,
    standby_name: &str,
    name: &str,
) -> Result<(Instance, Option<String>), Error> {
    match instances::get(standby, name) {
        Ok(found) => Ok(found),
        Err(e) if e.is_not_found() => Err(Error::Refused(format!(
            "there is no replica {standby_name}:{name} (project {}); nothing was changed: replicate it first with incus-push --to {standby_name}",
            standby.project()
        ))),
        Err(e) => Err(Error::incus("reading the replica", e)),
    }
}

/// `incus-failover fence`'s choices.
#[derive(Debug, Clone)]
pub struct FenceOptions {
    pub dry_run: bool,
    pub stop_timeout: u64,
}

/// Fencing one primary copy.
struct Fencing<'a> {
    pair: &'a Pair,
    pairs: &'a Pairs,
    standby_name: &'a str,
    options: &'a FenceOptions,
}

impl Sequence for Fencing<'_> {
    type Facts = PrimaryFacts;
    const FLOW: Flow = Flow::Promotion;

    fn observe(&self) -> Result<PrimaryFacts, Error> {
        let name = &self.pair.of.instance;
        let (replica, _) = read_replica(&self.pairs.replica(self.pair), self.standby_name, name)?;
        if ReplicaMarkers::from_config(&replica.config)
            .promoted
            .is_none()
        {
            return Err(Error::Refused(format!(
                "{}:{name} was not promoted; fencing would stop the production copy, so nothing was done",
                self.standby_name
            )));
        }
        let primary = self.pairs.primary(self.pair)?;
        let (instance, etag) = instances::get(&primary, name).map_err(|e| match e {
            e @ crate::Error::Unreachable { .. } => Error::incus_left(
                "",
                e,
                "; keep it off the network and run fence again once it answers",
            ),
            e => Error::from(e),
        })?;
        Ok(PrimaryFacts::of(&instance, etag))
    }

    fn next_step(&self, facts: &PrimaryFacts) -> Result<Option<Step>, Error> {
        Ok(next_step(FenceState::of(facts)))
    }

    fn describe(&self, step: Step, facts: &PrimaryFacts) -> String {
        match step {
            Step::Fence => describe_fence(&self.pair.of, facts),
            _ => describe_stop(&self.pair.of, self.options.stop_timeout),
        }
    }

    fn run(&self, step: Step, facts: &PrimaryFacts, runner: &Runner) -> Result<(), Error> {
        let primary = self.pairs.primary(self.pair)?;
        let of = &self.pair.of;
        match step {
            Step::Fence => fence_primary(&primary, of, facts, self.standby_name),
            _ => stop_copy(
                runner,
                of,
                &primary,
                &of.instance,
                &address(of),
                self.options.stop_timeout,
            ),
        }
    }

    fn assume(&self, mut facts: PrimaryFacts, step: Step) -> PrimaryFacts {
        match step {
            Step::Fence => {
                facts.fenced = Some(Fenced {
                    at: Some(Utc::now()),
                    standby: self.standby_name.to_string(),
                    autostart_before: facts.autostart.clone(),
                });
            }
            _ => facts.running = false,
        }
        facts
    }
}

/// `incus-failover fence`: stops the old primary's copies of promoted instances and sets their
/// autostart off; one `fenced` record per instance.
pub fn fence(args: &PairArgs, options: &FenceOptions, output: &Output) -> Result<(), Error> {
    let pairs = resolve(args, output)?;
    let runner = Runner {
        output,
        dry_run: options.dry_run,
    };
    for pair in &pairs.pairs {
        if crate::interrupt::requested() {
            break;
        }
        let fencing = Fencing {
            pair,
            pairs: &pairs,
            standby_name: &args.standby,
            options,
        };
        let result = fencing.observe().and_then(|before| {
            runner
                .drive(&fencing, &pair.of)
                .map(|after| (before, after))
        });
        match result {
            Ok((before, _)) => output.emit(&Record::Fenced(FencedRecord {
                of: pair.of.clone(),
                standby: args.standby.clone(),
                autostart_was: before.own_autostart(),
                stopped: before.running,
                dry_run: options.dry_run,
            })),
            // `REMOTE:` or `--all`: the instances that were not promoted are not fenced, and
            // that is no failure.
            Err(Error::Refused(why)) if !pair.named => {
                output.note(&format!("{}: skipped: {why}", address(&pair.of)));
            }
            Err(e) => output.error(
                Some(&pair.of),
                &format!("fencing {}: {e}", address(&pair.of)),
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(fenced: bool, running: bool) -> PrimaryFacts {
        PrimaryFacts {
            running,
            fenced: fenced.then(|| Fenced {
                at: None,
                standby: "standby".into(),
                autostart_before: None,
            }),
            ..PrimaryFacts::default()
        }
    }

    #[test]
    fn fencing_sets_autostart_off_then_stops_then_is_done() {
        assert_eq!(
            next_step(FenceState::of(&primary(false, true))),
            Some(Step::Fence)
        );
        assert_eq!(
            next_step(FenceState::of(&primary(false, false))),
            Some(Step::Fence)
        );
        assert_eq!(
            next_step(FenceState::of(&primary(true, true))),
            Some(Step::Stop)
        );
        assert_eq!(next_step(FenceState::of(&primary(true, false))), None);
    }

    #[test]
    fn the_own_autostart_is_the_one_before_the_fencing() {
        let mut p = primary(true, false);
        p.autostart = Some("false".into());
        assert_eq!(p.own_autostart(), None);
        p.fenced = None;
        assert_eq!(p.own_autostart(), Some("false".into()));
    }
}
