//! The run's interruption flag: set by SIGINT/SIGTERM/SIGHUP (see [`crate::cli`]), read by
//! operation waits and worker pools so they stop starting new work and cancel what Incus can
//! cancel.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

thread_local! {
    static SHIELDED: Cell<u32> = const { Cell::new(0) };
}

/// The shared flag (registered with the signal handlers by the CLI runner).
pub fn flag() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Asks every wait and worker to stop.
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

/// True when the run was interrupted, unless this thread is inside
/// [`without_interruption`].
pub fn requested() -> bool {
    SHIELDED.with(|s| s.get() == 0) && flag().load(Ordering::SeqCst)
}

/// Runs `f` to the end even if an interruption arrives meanwhile: for short steps that must not
/// be left half done (a restore followed by its config rewrite).
pub fn without_interruption<T>(f: impl FnOnce() -> T) -> T {
    SHIELDED.with(|s| s.set(s.get() + 1));
    struct Unshield;
    impl Drop for Unshield {
        fn drop(&mut self) {
            SHIELDED.with(|s| s.set(s.get().saturating_sub(1)));
        }
    }
    let _unshield = Unshield;
    f()
}
