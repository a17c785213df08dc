//! Failover: promotion (planned, emergency, `--at`), fencing and failback, each an explicit
//! state machine whose state lives on the servers.
//!
//! Each sequence reads both servers into plain facts, computes its state from the typed
//! markers ([`crate::markers`]) and what it saw, and a pure `next_step(state)` decides the one
//! step to take next (see the tables in [`promote`], [`fence`] and [`failback`]). One
//! [`runner::Runner`] runs every sequence: it reads, decides, runs, and reads again until
//! nothing is left, so a run cut anywhere is finished by the next; it does the dry run, the
//! `step` records, the failpoints and the lease for all of them. Every step is idempotent.
//!
//! [`readiness`] says whether a replica could take over (shared with `status`).

pub mod drill;
pub mod error;
pub mod failback;
pub mod fence;
pub mod pairs;
pub mod promote;
pub mod readiness;
pub mod runner;
pub mod step;

pub use drill::{DrillOptions, drill};
pub use error::Error;
pub use failback::{FailbackOptions, failback};
pub use fence::{FenceOptions, fence};
pub use pairs::{Pair, PairArgs, Pairs, resolve};
pub use promote::{PromoteOptions, promote};
pub use step::Step;
