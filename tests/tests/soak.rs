//! The chaos soak (issue 20), short: rounds of the real job (`incus-standby-job`: snap | push
//! | prune with archive points) over four instances, one with a custom volume, with faults
//! injected at random (stages killed, daemons killed or stopped, a promotion and a failback),
//! and the invariants checked after every round. The harness is `incus_standby_tests::soak`;
//! a long soak is `scripts/bench.sh --only soak` (section 11 of docs/bench.md).
//!
//! `INCUS_SOAK_ROUNDS` (default 10), `INCUS_SOAK_SEED` (printed; replays the choices),
//! `INCUS_SOAK_LONG_STALLS=P:SECONDS` (a stall of SECONDS with probability P; default 0.3:20,
//! longer than the tools' request timeout, which the soak's jobs set to 15 s).
//!
//! It kills and stops the lab's daemons: the other test binaries must not run at the same time
//! (cargo runs test binaries one after the other).

use std::time::Duration;

use incus_standby_tests::soak::{self, Config};
use incus_standby_tests::{bin_dir, tool};

#[test]
fn the_job_keeps_every_promise_under_random_faults() {
    // Builds the tools once (the harness's build), then runs them from the target directory.
    let _ = tool("incus-push");
    let cfg = Config::from_env(10, bin_dir(), Some((0.3, Duration::from_secs(20))))
        .unwrap_or_else(|e| panic!("soak: {e}"));
    eprintln!(
        "soak: seed {} (INCUS_SOAK_SEED={} replays it), {} rounds",
        cfg.seed, cfg.seed, cfg.rounds
    );
    let report = soak::run(&cfg);
    eprint!("{}", report.summary());
    assert!(
        report.violations.is_empty(),
        "{} violation(s); replay with INCUS_SOAK_SEED={}\n{}",
        report.violations.len(),
        cfg.seed,
        report.summary()
    );
}
