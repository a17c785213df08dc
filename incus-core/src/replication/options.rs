//! What a replication is for, and the choices that go with it: one [`Purpose`] per caller
//! instead of flags that only one caller sets.

use crate::api::migration::Mode;

use super::Placement;

/// Why the engine replicates: each caller's mode, with the choices only it makes.
#[derive(Debug, Clone)]
pub enum Purpose {
    /// incus-push: the user's choices. A source fenced for a promotion is refused, and "up to
    /// date" may be decided from listings read once per run.
    Push(Box<PushChoices>),
    /// A planned promotion's final sync: the source is fenced (on purpose), listings are read
    /// fresh (the final snapshot was just taken), and a standby that keeps its own history
    /// (it has archive points in `archive_project`) keeps every snapshot the sync drops.
    FinalSync { archive_project: String },
    /// A failback's copies, standby to primary: listings read fresh (the failback's last
    /// snapshot is taken between two syncs), profiles the primary lacks are copied.
    Failback,
}

/// incus-push's own choices.
#[derive(Debug, Clone, Default)]
pub struct PushChoices {
    /// Pool for the root disk of new replicas.
    pub storage: Option<String>,
    /// Keep the live-synced state instead of restoring to the newest snapshot.
    pub live: bool,
    /// Copy missing profiles first.
    pub sync_profiles: bool,
    /// Take over an instance incus-push did not create.
    pub adopt: bool,
    /// Move a refused replica aside and copy anew.
    pub replace: bool,
    /// The standby's own history: keep replica snapshots a refresh would drop as archive
    /// points, by these rules (`None`: the replica mirrors its source).
    pub archive: Option<ArchiveOptions>,
}

/// The standby's retention for archive points.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// The project of the archive instances on the standby.
    pub project: String,
    /// The count rules (restic's, as incus-prune's).
    pub rules: crate::policy::Rules,
    /// `--archive-keep-within`: measured from the newest point.
    pub within: Option<crate::duration::ExpiryDuration>,
    /// Archive points on a `dir` pool are full copies: only with this.
    pub allow_full_copies: bool,
    /// Only for a source that has archive points already.
    pub only_if_present: bool,
}

/// The default archive project.
pub const ARCHIVE_PROJECT: &str = "incus-standby-archive";

/// One replication run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The standby remote (for a failback: the primary).
    pub to: String,
    /// Project on the standby (default: the source instance's).
    pub target_project: Option<String>,
    /// On a clustered standby: the member or group for new replicas.
    pub placement: Placement,
    pub mode: Mode,
    /// Change nothing.
    pub dry_run: bool,
    /// Who takes the replica's lease ([`super::lease::holder`]); a promotion and its own
    /// final sync share one.
    pub lease_holder: String,
    /// Break another holder's unexpired lease.
    pub break_lease: bool,
    pub purpose: Purpose,
}

impl Options {
    /// incus-push's replication to `to`.
    pub fn push(to: &str, choices: PushChoices) -> Self {
        Options::new(to, Purpose::Push(Box::new(choices)), "incus-push")
    }

    /// A promotion's final sync to the standby `to`, under the promotion's own lease.
    pub fn final_sync(to: &str, archive_project: &str, lease_holder: &str) -> Self {
        let mut options = Options::new(
            to,
            Purpose::FinalSync {
                archive_project: archive_project.to_string(),
            },
            "incus-failover",
        );
        options.lease_holder = lease_holder.to_string();
        options
    }

    /// A failback's copy back to the primary `to`, into `project`.
    pub fn failback(to: &str, project: &str) -> Self {
        let mut options = Options::new(to, Purpose::Failback, "incus-failover");
        options.target_project = Some(project.to_string());
        options
    }

    fn new(to: &str, purpose: Purpose, tool: &str) -> Self {
        Options {
            to: to.to_string(),
            target_project: None,
            placement: Placement::Auto,
            mode: Mode::Pull,
            dry_run: false,
            lease_holder: super::lease::holder(tool),
            break_lease: false,
            purpose,
        }
    }

    fn choices(&self) -> Option<&PushChoices> {
        match &self.purpose {
            Purpose::Push(choices) => Some(choices),
            _ => None,
        }
    }

    pub fn storage(&self) -> Option<&str> {
        self.choices().and_then(|c| c.storage.as_deref())
    }

    pub fn live(&self) -> bool {
        self.choices().is_some_and(|c| c.live)
    }

    pub fn adopt(&self) -> bool {
        self.choices().is_some_and(|c| c.adopt)
    }

    pub fn replace(&self) -> bool {
        self.choices().is_some_and(|c| c.replace)
    }

    pub fn sync_profiles(&self) -> bool {
        match &self.purpose {
            Purpose::Push(choices) => choices.sync_profiles,
            Purpose::FinalSync { .. } => false,
            Purpose::Failback => true,
        }
    }

    /// The standby's retention around a refresh, if any. A final sync keeps every dropped
    /// snapshot, and only where the standby keeps a history already.
    pub fn archive(&self) -> Option<ArchiveOptions> {
        match &self.purpose {
            Purpose::Push(choices) => choices.archive.clone(),
            Purpose::FinalSync { archive_project } => Some(ArchiveOptions {
                project: archive_project.clone(),
                rules: crate::policy::Rules {
                    last: Some(u32::MAX),
                    ..crate::policy::Rules::default()
                },
                within: None,
                allow_full_copies: true,
                only_if_present: true,
            }),
            Purpose::Failback => None,
        }
    }

    /// A replica's snapshots do not expire by themselves: the standby's retention decides.
    /// A failback's copy is the instance again, and keeps its snapshots' own expiry.
    pub fn replicas_never_expire(&self) -> bool {
        !matches!(self.purpose, Purpose::Failback)
    }

    /// A source fenced for a promotion is replicated only by that promotion.
    pub fn allows_fenced_source(&self) -> bool {
        matches!(self.purpose, Purpose::FinalSync { .. })
    }

    /// "Up to date" may be decided from listings read once per run (a constant number of
    /// requests): right for a push, wrong for a run that takes snapshots between two syncs of
    /// the same instance.
    pub fn listings_once(&self) -> bool {
        matches!(self.purpose, Purpose::Push(_))
    }
}
