//! One transfer per replica at a time, across runs: an advisory lock file per replica. The
//! kernel releases it when the process dies, so a killed run never blocks the next one.
//!
//! The directory is `/run/incus-push`: `/run` is root's alone, so no other user can create it
//! first (as anyone can under the world-writable `/run/lock`) or plant a symlink there. It is
//! writable only by its owner and the Incus admin group; a symlinked directory or lock file is
//! refused. Users who cannot write `/run` use `$XDG_RUNTIME_DIR/incus-push`;
//! `INCUS_PUSH_LOCK_DIR` overrides both.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The group that may administer Incus, and so may take the locks too.
const ADMIN_GROUP: &str = "incus-admin";

/// The shared lock directory for root and the Incus admin group.
const SHARED_DIR: &str = "/run/incus-push";

/// Where the locks live: `INCUS_PUSH_LOCK_DIR`, else `/run/incus-push` when it exists or this
/// user may create it, else `$XDG_RUNTIME_DIR/incus-push`, else the temporary directory.
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INCUS_PUSH_LOCK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shared = Path::new(SHARED_DIR);
    if shared.exists() || current_uid() == Some(0) {
        return shared.to_path_buf();
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&runtime).join("incus-push");
    }
    std::env::temp_dir().join(format!("incus-push-{}", current_uid().unwrap_or(0)))
}

/// The user this process runs as (the owner of `/proc/self`).
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// Why a lock could not be taken (another run holding it is not an error: see [`try_lock`]).
/// One line naming the path and what to do; the underlying I/O error is part of that line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock file cannot be opened or created (a symlink there is refused).
    #[error(
        "cannot open the lock {}: {error} (a symlink there is refused; remove it)",
        .path.display()
    )]
    Open { path: PathBuf, error: io::Error },
    /// `flock` itself failed (not: someone else holds it).
    #[error("cannot lock {}: {error}", .path.display())]
    Lock { path: PathBuf, error: io::Error },
    /// The lock directory or its parent cannot be created.
    #[error("cannot create {}: {error}", .path.display())]
    Create { path: PathBuf, error: io::Error },
    /// The lock directory cannot be examined.
    #[error("cannot read {}: {error}", .path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The lock directory is a symlink.
    #[error(
        "the lock directory {} is a symlink; refusing it: remove it (incus-push makes it again)",
        .dir.display()
    )]
    Symlink { dir: PathBuf },
    /// The lock directory's path is something other than a directory.
    #[error("the lock directory {} is not a directory; remove it", .dir.display())]
    NotADirectory { dir: PathBuf },
    /// The lock directory belongs to another user than root or this one.
    #[error(
        "the lock directory {} belongs to uid {uid}, not to root or to this user; remove it, or set INCUS_PUSH_LOCK_DIR",
        .dir.display()
    )]
    Owner { dir: PathBuf, uid: u32 },
    /// Our own lock directory with a loose mode could not be tightened.
    #[error("cannot tighten {}: {error}", .dir.display())]
    Tighten { dir: PathBuf, error: io::Error },
    /// Someone else's lock directory that other users may write.
    #[error(
        "the lock directory {} is writable by other users (mode {mode:o}); make it `chmod 0770` owned by root:{ADMIN_GROUP}",
        .dir.display()
    )]
    Writable { dir: PathBuf, mode: u32 },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct ReplicaLock {
    _file: File,
}

/// Makes a lock name from its parts, keeping only safe characters.
pub fn lock_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("--")
}

/// Takes the lock named `name`, or says that another run holds it.
pub fn try_lock(dir: &Path, name: &str) -> Result<Option<ReplicaLock>, LockError> {
    prepare_dir(dir)?;
    let path = dir.join(format!("{name}.lock"));
    let refused = |error: io::Error| LockError::Open {
        path: path.clone(),
        error,
    };
    // Read-only is enough for flock, so members of the admin group share root's lock files.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o660)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(refused)?;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o660));
            file
        }
        Err(e) => return Err(refused(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(ReplicaLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(LockError::Lock { path, error }),
    }
}

/// Creates the lock directory (mode 0770, group incus-admin when it exists), or checks the
/// existing one: a real directory, owned by root or by us, writable by nobody else but the
/// admin group. A directory of ours with a looser mode (older versions made it 1777) is
/// tightened.
fn prepare_dir(dir: &Path) -> Result<(), LockError> {
    let me = current_uid();
    let admin_gid = admin_group_id();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|error| LockError::Create {
                    path: parent.to_path_buf(),
                    error,
                })?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {
                    // Ours since this very mkdir: only now is changing it safe (an existing
                    // path could be a symlink planted meanwhile).
                    if let Some(gid) = admin_gid {
                        let _ = std::os::unix::fs::chown(dir, None, Some(gid));
                    }
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(LockError::Create {
                        path: dir.to_path_buf(),
                        error,
                    });
                }
            }
            std::fs::symlink_metadata(dir).map_err(|error| LockError::Read {
                path: dir.to_path_buf(),
                error,
            })?
        }
        Err(error) => {
            return Err(LockError::Read {
                path: dir.to_path_buf(),
                error,
            });
        }
    };
    check_dir(dir, &meta, me, admin_gid)
}

fn check_dir(
    dir: &Path,
    meta: &std::fs::Metadata,
    me: Option<u32>,
    admin_gid: Option<u32>,
) -> Result<(), LockError> {
    if meta.file_type().is_symlink() {
        return Err(LockError::Symlink {
            dir: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(LockError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let owner_ok = meta.uid() == 0 || Some(meta.uid()) == me;
    if !owner_ok {
        return Err(LockError::Owner {
            dir: dir.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    let group_ok = mode & 0o020 == 0 || meta.gid() == 0 || Some(meta.gid()) == admin_gid;
    if mode & 0o002 == 0 && group_ok {
        return Ok(());
    }
    if Some(meta.uid()) == me {
        // Checked above to be a real directory of ours: hand it to the admin group, 0770.
        if let Some(gid) = admin_gid {
            let _ = std::os::unix::fs::chown(dir, None, Some(gid));
        }
        let group_now = std::fs::symlink_metadata(dir).map(|m| m.gid()).ok();
        let private = group_now == Some(0) || group_now == admin_gid;
        let mode = if private { 0o770 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|error| {
            LockError::Tighten {
                dir: dir.to_path_buf(),
                error,
            }
        })?;
        return Ok(());
    }
    Err(LockError::Writable {
        dir: dir.to_path_buf(),
        mode,
    })
}

/// The gid of the Incus admin group, from /etc/group.
fn admin_group_id() -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == ADMIN_GROUP)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = try_lock(dir.path(), "x").expect("lock");
        assert!(first.is_some());
        assert!(try_lock(dir.path(), "x").expect("lock").is_none());
        drop(first);
        assert!(try_lock(dir.path(), "x").expect("lock").is_some());
    }

    #[test]
    fn the_directory_is_private_and_symlinks_are_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("locks");
        assert!(try_lock(&dir, "x").expect("lock").is_some());
        let mode = std::fs::metadata(&dir).expect("meta").mode() & 0o7777;
        assert_eq!(mode & 0o007, 0, "mode {mode:o}");

        // A world-writable directory of ours (as older versions made it) is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(try_lock(&dir, "y").expect("lock").is_some());
        let mode = std::fs::metadata(&dir).expect("meta").mode() & 0o7777;
        assert_eq!(mode & 0o002, 0, "mode {mode:o}");

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let err = try_lock(&link, "x").expect_err("a symlinked directory is refused");
        assert!(matches!(err, LockError::Symlink { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the lock directory {} is a symlink; refusing it: remove it (incus-push makes it again)",
                link.display()
            )
        );

        let target = base.path().join("elsewhere");
        std::fs::write(&target, "").expect("write");
        std::os::unix::fs::symlink(&target, dir.join("z.lock")).expect("symlink");
        let err = try_lock(&dir, "z").expect_err("a symlinked lock file is refused");
        assert!(matches!(err, LockError::Open { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot open the lock {}: ",
                dir.join("z.lock").display()
            )) && message.ends_with(" (a symlink there is refused; remove it)"),
            "{message}"
        );
    }

    #[test]
    fn names_are_path_safe() {
        assert_eq!(
            lock_name(&["ab12", "my proj", "web/1"]),
            "ab12--my_proj--web_1"
        );
    }
}
