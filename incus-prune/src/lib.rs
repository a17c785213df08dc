//! `incus-prune`: deletes old snapshots of Incus instances according to a
//! retention policy with restic's `forget` semantics.
//!
//! The policy itself is a pure function, [`policy::decide`], in the library
//! (the standby's archive retention uses the same code); protections for the
//! replication anchor (and "delete nothing" when the replica cannot be
//! reached) are applied by the caller.

pub use incus_core::policy;
