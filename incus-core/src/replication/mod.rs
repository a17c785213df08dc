//! Replication to a standby, in three steps: [`observe`] reads both sides, [`plan`] decides
//! everything (pure: refusals, move-aside, placement, archive points, restore target),
//! [`apply`] carries it out; [`archive`] makes and deletes archive points. The lock per
//! replica on one host ([`lock`]) and across hosts ([`lease`]); what each caller replicates
//! for ([`options::Purpose`]).

pub mod apply;
pub mod archive;
pub mod engine;
pub mod error;
pub mod lease;
pub mod lock;
pub mod observe;
pub mod options;
pub mod placement;
pub mod plan;
pub mod repair;
pub mod volumes;

pub use archive::archive_point;
pub use engine::{Replicator, address};
pub use error::{Error, injected_error};
pub use lease::LeaseGuard;
pub use options::{ARCHIVE_PROJECT, ArchiveOptions, Options, Purpose, PushChoices};
pub use placement::Placement;

/// The first 12 characters of a certificate fingerprint, as markers and lock names use it.
pub(crate) fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_shortened_safely() {
        assert_eq!(super::short_fingerprint("0123456789abcdef"), "0123456789ab");
        assert_eq!(super::short_fingerprint("abc"), "abc");
    }
}
