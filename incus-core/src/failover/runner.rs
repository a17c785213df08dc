//! The one runner of every failover sequence (promotion, emergency, `--at`, fence,
//! failback). A sequence says how to read the servers ([`Sequence::observe`]), what state that
//! is and which step comes next (pure, in each sequence's module), and how to run one step.
//! The runner does the rest, the same way for all of them:
//!
//! - it reads, decides one step, runs it, and reads again, until no step is left: a run cut
//!   anywhere is finished by the next one, since the state lives on the servers;
//! - `--dry-run`: each step is reported, not run, and the state assumed done;
//! - a `step` record per step; a failpoint before and after each (tests);
//! - the replica's lease, taken before the first step and renewed while the steps run;
//! - an interruption stops it between two steps;
//! - a step that fails once the serving copy was stopped is undone by the sequence's
//!   compensation (the service is never left down).

use crate::interrupt;
use crate::record::{InstanceRef, Output, Record, StepRecord};
use crate::replication::LeaseGuard;

use super::error::Error;
use super::step::{Flow, Step};

/// At most this many steps in one run: a sequence that has not converged by then stops.
const MAX_STEPS: usize = 16;

/// What takes a replica's lease for a sequence.
pub struct LeaseSpec {
    pub client: crate::client::Client,
    pub name: String,
    pub holder: String,
    pub force: bool,
}

/// One sequence of steps on one instance.
pub trait Sequence {
    /// What was read of the servers.
    type Facts: Clone;
    const FLOW: Flow;

    /// Reads the servers (changes nothing).
    fn observe(&self) -> Result<Self::Facts, Error>;
    /// The next step from what was read, `None` when done; a refusal when the sequence may
    /// not go on. Pure.
    fn next_step(&self, facts: &Self::Facts) -> Result<Option<Step>, Error>;
    /// One line saying what the step does.
    fn describe(&self, step: Step, facts: &Self::Facts) -> String;
    /// Runs one step.
    fn run(&self, step: Step, facts: &Self::Facts, runner: &Runner) -> Result<(), Error>;
    /// `--dry-run`: what would be read after the step.
    fn assume(&self, facts: Self::Facts, step: Step) -> Self::Facts;
    /// The step that gives the service back when `failed` failed (none by default).
    fn compensation(&self, _failed: Step, _facts: &Self::Facts) -> Option<Step> {
        None
    }
    /// What the compensation left, for the error line.
    fn compensated(&self, _step: Step, _result: &Result<(), Error>) -> String {
        String::new()
    }
    /// The lease held for the whole sequence (none by default).
    fn lease(&self) -> Option<LeaseSpec> {
        None
    }
}

/// Runs sequences, reporting each step to `output`.
pub struct Runner<'a> {
    pub output: &'a Output,
    pub dry_run: bool,
}

impl Runner<'_> {
    /// A `step` record.
    pub fn report(&self, of: &InstanceRef, step: Step, detail: String) {
        self.output.emit(&Record::Step(StepRecord {
            of: of.clone(),
            step,
            detail,
            dry_run: self.dry_run,
        }));
    }

    /// Runs the sequence to its end. Returns the facts as last read (or assumed).
    pub fn drive<S: Sequence>(&self, sequence: &S, of: &InstanceRef) -> Result<S::Facts, Error> {
        self.drive_from(sequence, of, sequence.observe()?)
    }

    /// [`Runner::drive`] from facts just read.
    pub fn drive_from<S: Sequence>(
        &self,
        sequence: &S,
        of: &InstanceRef,
        mut facts: S::Facts,
    ) -> Result<S::Facts, Error> {
        let mut lease: Option<LeaseGuard> = None;
        let mut last = None;
        let mut count = 0;
        while let Some(step) = sequence.next_step(&facts)? {
            count += 1;
            if count > MAX_STEPS || (last == Some(step) && !self.dry_run) {
                let stuck = Error::NoEffect(format!(
                    "the step {step} did not take effect; nothing more was done: look at both servers, then run the same command again"
                ));
                return Err(self.compensate(sequence, step, &facts, of, stuck));
            }
            if lease.is_none()
                && !self.dry_run
                && let Some(spec) = sequence.lease()
            {
                lease = Some(LeaseGuard::take(
                    &spec.client,
                    &spec.name,
                    &spec.holder,
                    spec.force,
                    None,
                )?);
            }
            let result = if interrupt::requested() {
                Err(Error::Interrupted { step })
            } else {
                self.one(sequence, step, &facts, of)
            };
            match result {
                Ok(next) => facts = next,
                Err(cause) => return Err(self.compensate(sequence, step, &facts, of, cause)),
            }
            last = Some(step);
        }
        Ok(facts)
    }

    fn one<S: Sequence>(
        &self,
        sequence: &S,
        step: Step,
        facts: &S::Facts,
        of: &InstanceRef,
    ) -> Result<S::Facts, Error> {
        failpoint(&step.failpoint_before(S::FLOW))?;
        self.report(of, step, sequence.describe(step, facts));
        if self.dry_run {
            return Ok(sequence.assume(facts.clone(), step));
        }
        sequence.run(step, facts, self)?;
        failpoint(&step.failpoint_after(S::FLOW))?;
        sequence.observe()
    }

    fn compensate<S: Sequence>(
        &self,
        sequence: &S,
        failed: Step,
        facts: &S::Facts,
        of: &InstanceRef,
        cause: Error,
    ) -> Error {
        let Some(step) = sequence.compensation(failed, facts) else {
            return cause;
        };
        if self.dry_run {
            return cause;
        }
        self.report(of, step, sequence.describe(step, facts));
        let result = sequence.run(step, facts, self);
        Error::Compensated {
            outcome: sequence.compensated(step, &result),
            cause: Box::new(cause),
        }
    }
}

/// A failure a test injects at `name` (`FAILPOINTS=NAME=return(abort)` ends the process at
/// once, as `kill -9` would; any other argument is an error). Nothing without the
/// `failpoints` feature.
fn failpoint(name: &str) -> Result<(), Error> {
    #[cfg(feature = "failpoints")]
    if let Some(result) = fail::eval(name, |arg| {
        Err(Error::Injected(crate::replication::injected_error(arg)))
    }) {
        return result;
    }
    let _ = name;
    Ok(())
}
