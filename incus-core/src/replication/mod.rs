//! Replication to a standby: what must be sent and whether it may be ([`plan`]), the lock per
//! replica on one host ([`lock`]) and across hosts ([`lease`]), and the engine that does it
//! ([`engine`]).

pub mod engine;
pub mod lease;
pub mod lock;
pub mod placement;
pub mod plan;

pub use engine::{
    ARCHIVE_OF_KEY, ARCHIVE_PROJECT, ARCHIVE_TIME_KEY, AUTOSTART_BEFORE_KEY, AUTOSTART_UNSET,
    ArchiveOptions, FENCED_KEY, LeaseGuard, Options, PROMOTED_KEY, REPLACED_KEY, RESTORED_KEY,
    Replicator, SOURCE_KEY, SOURCE_SETTINGS_KEY, SOURCE_UUID_KEY, SYNCED_KEY, UUID_KEY, address,
    archive_point, inert_overrides, injected_error, own_settings, source_settings,
};
pub use placement::Placement;
