//! Benchmark of the retention policy: 10,000 snapshots, one every 15 minutes
//! (about 104 days), decided with `--keep-last 10 --keep-daily 7
//! --keep-weekly 4 --keep-monthly 12 --keep-yearly 3`.
//!
//! Run with `cargo run --release -p incus-prune --example policy_bench`.
//! Prints the best of 20 runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::DateTime;
use incus_prune::policy::{Candidate, Rules, decide};

const SNAPSHOTS: i64 = 10_000;
const INTERVAL_SECS: i64 = 15 * 60;
const RUNS: usize = 20;

fn main() -> anyhow::Result<()> {
    // 2026-01-01T00:00:00Z
    let start = DateTime::from_timestamp(1_767_225_600, 0).context("start time")?;
    let candidates: Vec<Candidate> = (0..SNAPSHOTS)
        .map(|i| Candidate {
            name: format!("auto-{i:05}"),
            created_at: start + chrono::Duration::seconds(i * INTERVAL_SECS),
        })
        .collect();
    let rules = Rules {
        last: Some(10),
        daily: Some(7),
        weekly: Some(4),
        monthly: Some(12),
        yearly: Some(3),
        ..Rules::default()
    };

    let mut best = Duration::MAX;
    let mut kept = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let decisions = decide(black_box(&candidates), black_box(&rules));
        best = best.min(started.elapsed());
        kept = decisions.iter().filter(|d| d.keep()).count();
        black_box(decisions);
    }
    ensure!(kept > 0, "the policy kept nothing");

    println!(
        "policy: {} snapshots in {:.2} ms",
        candidates.len(),
        best.as_secs_f64() * 1e3
    );
    Ok(())
}
