//! `incus-prune`: deletes old snapshots of Incus instances according to a
//! retention policy with restic's `forget` semantics.
//!
//! The policy itself is a pure function, [`policy::decide`]; protections for
//! the replication anchor and for snapshots not yet replicated are applied by
//! the caller.

pub mod policy;
