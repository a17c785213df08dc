//! One transfer per replica at a time, across runs: an advisory lock file per replica. The
//! kernel releases it when the process dies, so a killed run never blocks the next one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Where the locks live (`INCUS_PUSH_LOCK_DIR` overrides, for tests and unprivileged users).
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INCUS_PUSH_LOCK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    for base in ["/run/lock", "/var/lock"] {
        if Path::new(base).is_dir() {
            return Path::new(base).join("incus-push");
        }
    }
    std::env::temp_dir().join("incus-push")
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
pub fn try_lock(dir: &Path, name: &str) -> Result<Option<ReplicaLock>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ReplicaLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
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
    fn names_are_path_safe() {
        assert_eq!(
            lock_name(&["ab12", "my proj", "web/1"]),
            "ab12--my_proj--web_1"
        );
    }
}
