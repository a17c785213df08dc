//! The soak part: section 12, a long chaos soak (issue 20) with the harness of the test
//! target `tests/tests/soak.rs` (`incus_standby_tests::soak`), the release build of the tools,
//! 500 rounds (`INCUS_SOAK_ROUNDS` overrides; 20 with `--quick`).

use std::time::Duration;

use anyhow::{Result, bail};
use incus_standby_tests::soak::{self, ARCHIVE_KEEP_LAST, Config, KEEP_LAST};

use crate::{Bench, Section, loadavg, log, utc_now};

pub fn run(b: &mut Bench) -> Result<Section> {
    let default_rounds = if b.cfg.quick { 20 } else { 500 };
    // Three stalls in ten outlast the tools' request timeout (15 s in the soak's jobs).
    let long = Some((0.3, Duration::from_secs(soak::TOOL_TIMEOUT_SECS + 5)));
    let cfg = match Config::from_env(default_rounds, b.bin.clone(), long) {
        Ok(c) => c,
        Err(e) => bail!("{e}"),
    };
    let (date, load_start) = (utc_now(), loadavg());
    log(format!(
        "section 12: soak of {} rounds, seed {} (INCUS_SOAK_SEED={} replays it)",
        cfg.rounds, cfg.seed, cfg.seed
    ));
    let report = soak::run(&cfg);
    eprint!("{}", report.summary());
    let mut s = String::new();
    w!(s, "## 12. Chaos soak");
    w!(s);
    w!(
        s,
        "Measured {date} with `scripts/bench.sh --only soak` (a run without `--only` does not run this part: it keeps this section); load average (1, 5, 15 min) {load_start} when it started, {} when it ended; Incus {}.",
        loadavg(),
        report.incus_version
    );
    w!(s);
    w!(
        s,
        "The harness is `tests/src/soak.rs`, the same as the short soak that `cargo test` runs (`tests/tests/soak.rs`, 10 rounds); its module documentation lists every invariant. Each round writes a counter into four instances (three running, one stopped; one on the `btrfs` pool; one with a custom volume), runs the packaged job `incus-standby-job` (`incus-snap | incus-push --jobs 2 --archive-keep-last {ARCHIVE_KEEP_LAST} --archive-full-copies | incus-prune --replica standby --keep-last {KEEP_LAST}`) with perhaps a fault at a random moment, and checks the invariants on both servers. The last {} rounds have no fault; after them every replica must be current and hold its source's last counter, volume included.",
        report.clean_tail
    );
    w!(s);
    w!(
        s,
        "Seed **{}** (`INCUS_SOAK_SEED={} scripts/bench.sh --only soak` replays the choices; the moments are relative to each job's start, so a replay meets the same faults, not the same timings). {} rounds in {}, {} jobs ended 0, {} did not.",
        report.seed,
        report.seed,
        report.rounds,
        crate::stats::fmt_s(report.wall.as_secs_f64()),
        report.jobs_ok,
        report.jobs_failed
    );
    w!(s);
    w!(
        s,
        "| Fault | Injected | Of which after its target had ended |"
    );
    w!(s, "|---|---|---|");
    for (kind, n) in &report.faults {
        w!(
            s,
            "| {kind} | {n} | {} |",
            report.missed.get(kind).copied().unwrap_or(0)
        );
    }
    w!(s);
    w!(
        s,
        "Half-done replica states repaired by the next successful round: {}. Transfers Incus failed by itself in a round without a fault: {}.",
        report.repaired.len(),
        report.incus_transient.len()
    );
    w!(s);
    let list = |s: &mut String, title: &str, v: &[soak::Violation]| {
        w!(s, "{title}: **{}**.", v.len());
        if !v.is_empty() {
            w!(s);
            for x in v.iter().take(40) {
                w!(s, "- round {} ({}): {}", x.round, x.fault, x.detail);
            }
            if v.len() > 40 {
                w!(s, "- … and {} more", v.len() - 40);
            }
        }
        w!(s);
    };
    list(&mut s, "Violations", &report.violations);
    list(
        &mut s,
        "Findings of the known bug (issue 20 item 5: a replica whose snapshot records and volumes disagree after a daemon died in the middle of a refresh, which incus-push does not repair yet)",
        &report.known,
    );
    let mut sum = String::new();
    w!(
        sum,
        "| 12. chaos soak, {} rounds, seed {} | {} faults, {} violations, {} of the known bug | 500 rounds, 0 violations | {} |",
        report.rounds,
        report.seed,
        report.faults.values().sum::<usize>(),
        report.violations.len(),
        report.known.len(),
        if report.rounds >= 500 && report.violations.is_empty() && report.known.is_empty() {
            "**met**"
        } else {
            "**not met**"
        }
    );
    Ok(Section {
        text: s,
        summary: sum,
    })
}
