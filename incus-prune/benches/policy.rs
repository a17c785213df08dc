//! Benchmark of the retention policy: 10,000 snapshots, one every 15 minutes
//! (about 104 days), decided with `--keep-last 10 --keep-daily 7
//! --keep-weekly 4 --keep-monthly 12 --keep-yearly 3`.
//!
//! Run with `cargo bench -p incus-prune --bench policy` (divan). Section 6 of docs/bench.md
//! times the same decision inside the benchmark harness (`tests/benches/bench`), which
//! builds the same snapshots and rules.

use chrono::DateTime;
use incus_prune::policy::{Candidate, Rules, decide};

const SNAPSHOTS: i64 = 10_000;
const INTERVAL_SECS: i64 = 15 * 60;

fn main() {
    divan::main();
}

/// The snapshots `auto-00000` … one every 15 minutes from 2026-01-01T00:00:00Z.
fn candidates() -> Vec<Candidate> {
    let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    (0..SNAPSHOTS)
        .map(|i| Candidate {
            name: format!("auto-{i:05}"),
            created_at: start + chrono::Duration::seconds(i * INTERVAL_SECS),
        })
        .collect()
}

fn rules() -> Rules {
    Rules {
        last: Some(10),
        daily: Some(7),
        weekly: Some(4),
        monthly: Some(12),
        yearly: Some(3),
        ..Rules::default()
    }
}

/// One decision over the 10,000 snapshots.
#[divan::bench(sample_count = 20)]
fn decide_10000(bencher: divan::Bencher) {
    let candidates = candidates();
    let rules = rules();
    let kept = decide(&candidates, &rules)
        .iter()
        .filter(|d| d.keep())
        .count();
    assert!(kept > 0, "the policy kept nothing");
    bencher.bench(|| decide(divan::black_box(&candidates), divan::black_box(&rules)));
}
