//! Sections 1 to 6: incus-snap, incus-push and incus-prune's policy against the CLI.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::DateTime;
use incus_core::policy::{Candidate, Rules, decide};

use crate::Run as _;
use crate::stats::{self, mb, met, ratio};
use crate::{
    Bench, JOBS, Section, count, expect_statuses, is_snapshot, log, next_second, ok, records,
};

pub fn run(b: &mut Bench) -> Result<Section> {
    let reps = b.cfg.reps;
    let p = b.project.clone();
    let jobs = JOBS.to_string();

    // -----------------------------------------------------------------------------------
    // case 1: incus-snap --all vs a loop of `incus snapshot create`

    let n_snap = b.cfg.n_snap;
    log(format!("case 1: creating {n_snap} stopped instances"));
    b.create_instances("s", n_snap)?;
    let snap_set = b.instances_named("s")?;
    ensure!(
        snap_set.len() == n_snap,
        "expected {n_snap} instances, found {}",
        snap_set.len()
    );
    for rep in 1..=reps {
        log(format!("case 1, run {rep}/{reps}"));
        next_second();
        let out = b.timed("c1.tool", |b| {
            Ok(b.rss("snap", "incus-snap", &["--project", &p, "--all"], &[]))
        })?;
        let recs = records(&out)?;
        ensure!(
            out.code == 0 && count(&recs, is_snapshot) == n_snap,
            "incus-snap did not take {n_snap} snapshots: {}",
            out.stderr.trim()
        );
        b.timed("c1.cli", |b| {
            for i in &snap_set {
                ok(b.bi(&["snapshot", "create", i]))?;
            }
            Ok(())
        })?;
    }
    // Every instance now has 2 × REPS snapshots.
    let listing = ok(b.bi(&["list", "local:", "-f", "csv", "-c", "nS"]))?;
    let bad: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("s-"))
        .filter(|l| l.split(',').nth(1) != Some(&(2 * reps).to_string()))
        .take(3)
        .collect();
    ensure!(
        bad.is_empty(),
        "case 1: unexpected snapshot counts: {bad:?}"
    );
    log("case 1: deleting its instances");
    ok(b.bi(&["delete", "--force"]).args(&snap_set))?;

    // -----------------------------------------------------------------------------------
    // cases 2 and 3: incus-push vs a loop of `incus copy --refresh`

    let n_push = b.cfg.n_push;
    log(format!(
        "cases 2-3: creating {n_push} instances with one snapshot each, replicated"
    ));
    b.create_instances("p", n_push)?;
    let push_set = b.instances_named("p")?;
    ensure!(
        push_set.len() == n_push,
        "expected {n_push} instances, found {}",
        push_set.len()
    );
    ok(b.tool("incus-snap").args(["--project", &p, "--all"]))?;
    let setup = b
        .tool("incus-push")
        .args(["--project", &p, "--all", "--to", "standby", "--jobs", &jobs])
        .out();
    expect_statuses(&setup, n_push, &["copied"])?;

    let cli_refresh = |b: &Bench, i: &str| -> Result<()> {
        ok(b.bi(&[
            "copy",
            "-q",
            "--target-project",
            &p,
            i,
            &format!("standby:{i}"),
            "--refresh",
        ]))
        .map(drop)
    };
    // Our tool's runs come first: a CLI refresh replaces the replica's configuration (with
    // the source's, volatile keys included), which drops incus-push's marker, so after it
    // incus-push would (rightly) refuse the replicas without --adopt.
    for rep in 1..=reps {
        log(format!("case 2 (nothing new), incus-push run {rep}/{reps}"));
        let out = b.timed("c2.tool", |b| {
            Ok(b.rss(
                "push2",
                "incus-push",
                &["--project", &p, "--all", "--to", "standby", "--jobs", &jobs],
                &[],
            ))
        })?;
        expect_statuses(&out, n_push, &["up-to-date"]).context("case 2")?;
    }
    for rep in 1..=reps {
        log(format!(
            "case 3 (one new snapshot each), incus-snap | incus-push run {rep}/{reps}"
        ));
        next_second();
        let out = b.timed("c3.tool", |b| {
            b.pipeline(
                (Some("snap3"), "incus-snap", &["--project", &p, "--all"]),
                (
                    Some("push3"),
                    "incus-push",
                    &["--to", "standby", "--jobs", &jobs],
                ),
            )
        })?;
        expect_statuses(&out, n_push, &[]).context("case 3")?;
        let recs = records(&out)?;
        if crate::push_statuses(&recs).contains(&"up-to-date") {
            bail!(
                "case 3: incus-push found nothing new: {}",
                crate::head(&out.stdout, 600)
            );
        }
    }
    for rep in 1..=reps {
        log(format!("case 2 (nothing new), CLI loop run {rep}/{reps}"));
        b.timed("c2.cli", |b| {
            for i in &push_set {
                cli_refresh(b, i)?;
            }
            Ok(())
        })?;
    }
    for rep in 1..=reps {
        log(format!(
            "case 3 (one new snapshot each), CLI loop run {rep}/{reps}"
        ));
        b.timed("c3.cli", |b| {
            for i in &push_set {
                ok(b.bi(&["snapshot", "create", i]))?;
                cli_refresh(b, i)?;
            }
            Ok(())
        })?;
    }
    // The replicas have every snapshot of their source.
    for i in &push_set {
        let src = b.snapshot_names("local", i, &p)?;
        let dst = b.snapshot_names("standby", i, &p)?;
        ensure!(
            src == dst,
            "case 3: {i}: the replica's snapshots differ: {src:?} vs {dst:?}"
        );
    }
    log("cases 2-3: deleting their instances");
    ok(b.bi(&["delete", "--force"]).args(&push_set))?;
    let replicas = b.list_names("standby")?;
    if !replicas.is_empty() {
        ok(b.bi(&["delete", "--force"])
            .args(replicas.iter().map(|r| format!("standby:{r}"))))?;
    }

    // -----------------------------------------------------------------------------------
    // case 4: one full copy of an instance with BIG_MB MB of random data

    let big_mb = b.cfg.big_mb;
    log(format!(
        "case 4: an instance with {big_mb} MB of random data"
    ));
    let big = b.launch_guarded("big", &[])?;
    b.exec(
        "big",
        &format!("dd if=/dev/urandom of=/root/random bs=1M count={big_mb} 2>/dev/null"),
    )?;
    b.exec("big", "sync")?;
    b.stop("big")?;
    let drop_replica = |b: &Bench| -> Result<()> {
        if b.bi(&["info", "standby:big"]).out().code == 0 {
            ok(b.bi(&["delete", "--force", "standby:big"]))?;
        }
        ok(crate::Cmd::new("sync"))?;
        Ok(())
    };
    let replica = b.volume_dir("standby", "default", "big", None);
    let replica_bytes = move || -> u64 {
        std::fs::metadata(replica.join("rootfs/root/random")).map_or(0, |m| m.len())
    };
    let full = big_mb * 1024 * 1024;
    for rep in 1..=reps {
        log(format!("case 4, run {rep}/{reps}"));
        drop_replica(b)?;
        let out = b.timed("c4.tool", |b| {
            Ok(b.rss(
                "push4",
                "incus-push",
                &["--project", &p, "--to", "standby", "big"],
                &[],
            ))
        })?;
        expect_statuses(&out, 1, &["copied"]).context("case 4")?;
        ensure!(
            replica_bytes() == full,
            "case 4: the replica's data is incomplete"
        );
        drop_replica(b)?;
        b.timed("c4.cli", |b| {
            ok(b.bi(&["copy", "-q", "--target-project", &p, "big", "standby:big"])).map(drop)
        })?;
        ensure!(
            replica_bytes() == full,
            "case 4: the CLI's replica is incomplete"
        );
    }
    drop(big); // deletes big and standby:big

    // -----------------------------------------------------------------------------------
    // case 6: incus-prune's retention policy on 10,000 snapshots

    let mut c6 = Vec::new();
    let mut policy_count = 0;
    for rep in 1..=reps {
        log(format!("case 6, run {rep}/{reps}"));
        let (n, best) = policy_best_of(POLICY_RUNS)?;
        let ms = stats::round(best.as_secs_f64() * 1e3, 2);
        log(format!("  policy: {n} snapshots in {ms:.2} ms"));
        c6.push(ms);
        policy_count = n;
    }

    Ok(report(b, &c6, policy_count))
}

const POLICY_SNAPSHOTS: i64 = 10_000;
const POLICY_INTERVAL_SECS: i64 = 15 * 60;
const POLICY_RUNS: usize = 20;

/// The retention policy's decision over 10,000 snapshots, one every 15 minutes (about 104
/// days), with `--keep-last 10 --keep-daily 7 --keep-weekly 4 --keep-monthly 12
/// --keep-yearly 3`, as in `incus-prune/benches/policy.rs`: the number of snapshots and the
/// best time of `runs` decisions.
fn policy_best_of(runs: usize) -> Result<(usize, Duration)> {
    // 2026-01-01T00:00:00Z
    let start = DateTime::from_timestamp(1_767_225_600, 0).context("start time")?;
    let candidates: Vec<Candidate> = (0..POLICY_SNAPSHOTS)
        .map(|i| Candidate {
            name: format!("auto-{i:05}"),
            created_at: start + chrono::Duration::seconds(i * POLICY_INTERVAL_SECS),
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
    for _ in 0..runs {
        let started = Instant::now();
        let decisions = decide(black_box(&candidates), black_box(&rules));
        best = best.min(started.elapsed());
        kept = decisions.iter().filter(|d| d.keep()).count();
        black_box(decisions);
    }
    ensure!(kept > 0, "the policy kept nothing");
    Ok((candidates.len(), best))
}

fn report(b: &Bench, c6: &[f64], policy_count: usize) -> Section {
    let (p, reps) = (&b.project, b.cfg.reps);
    let (n_snap, n_push, big_mb) = (b.cfg.n_snap, b.cfg.n_push, b.cfg.big_mb);
    let r = |case: &str, num: &str, den: &str| {
        ratio(
            b.med(&format!("{case}.{num}"), 0),
            b.med(&format!("{case}.{den}"), 0),
        )
    };
    let (c1, c2, c3) = (
        r("c1", "cli", "tool"),
        r("c2", "cli", "tool"),
        r("c3", "cli", "tool"),
    );
    let c4 = r("c4", "tool", "cli");
    let rss_mb: f64 = mb(b.max_rss(&["push2", "push3", "push4"]))
        .parse()
        .unwrap_or(0.0);
    let c6_ms = stats::median(c6);
    let mut s = String::new();

    w!(s, "## 1. Snapshots: incus-snap");
    w!(s);
    w!(s, "{n_snap} stopped instances, one snapshot each per run.");
    w!(
        s,
        "Ours: `incus-snap --project {p} --all` (default `--jobs 4`). CLI: `for i in …; do incus snapshot create --project {p} $i; done`."
    );
    w!(s);
    Bench::header(&mut s);
    b.row(&mut s, "c1.tool", "incus-snap --all", n_snap);
    b.row(&mut s, "c1.cli", "CLI loop", n_snap);
    w!(s);
    w!(
        s,
        "Speed-up: **{c1:.2}x** (target ≥ 2x): {}. Peak RSS of incus-snap: {} MB.",
        met(c1, true, 2.0),
        mb(b.max_rss(&["snap"]))
    );
    w!(s);
    b.where_(&mut s, "c1");
    w!(s);
    w!(s, "## 2. Replication, nothing new: incus-push");
    w!(s);
    w!(
        s,
        "{n_push} instances with one snapshot each, already replicated."
    );
    w!(
        s,
        "Ours: `incus-push --project {p} --all --to standby --jobs {JOBS}` (it compares the snapshot lists and sends nothing)."
    );
    w!(
        s,
        "CLI: `for i in …; do incus copy -q --project {p} --target-project {p} $i standby:$i --refresh; done` (refreshing the same replicas; the CLI's refresh always re-syncs the instance's volume, and also copies the source's configuration, volatile keys included)."
    );
    w!(s);
    Bench::header(&mut s);
    b.row(&mut s, "c2.tool", "incus-push --all", n_push);
    b.row(&mut s, "c2.cli", "CLI loop", n_push);
    w!(s);
    w!(
        s,
        "Speed-up: **{c2:.2}x** (target ≥ 20x): {}.",
        met(c2, true, 20.0)
    );
    w!(s);
    b.where_(&mut s, "c2");
    w!(s);
    w!(
        s,
        "## 3. Replication, one new snapshot each: incus-snap | incus-push"
    );
    w!(s);
    w!(
        s,
        "The same {n_push} instances; each run snapshots every instance, then replicates the new snapshot."
    );
    w!(
        s,
        "Ours: `incus-snap --project {p} --all | incus-push --to standby --jobs {JOBS}`."
    );
    w!(
        s,
        "CLI: `for i in …; do incus snapshot create --project {p} $i; incus copy -q --project {p} --target-project {p} $i standby:$i --refresh; done`."
    );
    w!(
        s,
        "incus-push does a little more than the CLI: after the transfer it restores each replica to its newest snapshot and rewrites its configuration (inert: no autostart, no schedule)."
    );
    w!(
        s,
        "(Our runs come first: the CLI's refresh rewrites the replicas' configuration, which removes incus-push's marker.)"
    );
    w!(s);
    Bench::header(&mut s);
    b.row(&mut s, "c3.tool", "incus-snap \\| incus-push", n_push);
    b.row(&mut s, "c3.cli", "CLI loop", n_push);
    w!(s);
    w!(
        s,
        "Speed-up: **{c3:.2}x** (target ≥ 2x): {}.",
        met(c3, true, 2.0)
    );
    let snap3: Vec<f64> = b
        .rss
        .get("snap3")
        .into_iter()
        .flatten()
        .map(|(e, _)| *e)
        .collect();
    w!(
        s,
        "Of our side's wall time, incus-snap took {:.2} s (median), incus-push the rest.",
        stats::median(&snap3)
    );
    w!(s);
    b.where_(&mut s, "c3");
    w!(s);
    w!(s, "## 4. One full copy of {big_mb} MB");
    w!(s);
    w!(
        s,
        "One stopped instance holding {big_mb} MB from /dev/urandom (written with `dd` inside it), no snapshots; the replica is deleted before every copy, and the two sides alternate."
    );
    w!(
        s,
        "Ours: `incus-push --project {p} --to standby big`. CLI: `incus copy -q --project {p} --target-project {p} big standby:big`."
    );
    w!(s);
    Bench::header(&mut s);
    b.row(&mut s, "c4.tool", "incus-push", 1);
    b.row(&mut s, "c4.cli", "incus copy", 1);
    w!(s);
    w!(
        s,
        "incus-push / incus copy: **{c4:.2}x** (target ≤ 1.05x): {}.",
        met(c4, false, 1.05)
    );
    w!(s);
    let (t, c) = (b.col("c4.tool", 0), b.col("c4.cli", 0));
    let (lt, ht, lc, hc) = (
        stats::min(&t),
        stats::max(&t),
        stats::min(&c),
        stats::max(&c),
    );
    let overlap = if lt <= hc && lc <= ht {
        ": the ranges overlap, the difference is within the run-to-run noise of this machine."
    } else {
        ": the ranges do not overlap."
    };
    w!(
        s,
        "Where the time goes: the transfer itself, done by the daemons for both sides ({:.2} s of their CPU for incus-push, {:.2} s for incus copy); wall times ranged over {lt:.2}–{ht:.2} s for incus-push and {lc:.2}–{hc:.2} s for incus copy{overlap}",
        b.med("c4.tool", 1),
        b.med("c4.cli", 1)
    );
    w!(s);
    w!(s, "## 5. Memory of incus-push");
    w!(s);
    w!(
        s,
        "Peak RSS (`/usr/bin/time -f %M`) of incus-push over every run of cases 2 to 4: **{rss_mb:.1} MB** (target < 30 MB): {}.",
        met(rss_mb, false, 29.999)
    );
    w!(
        s,
        "By case (largest of the runs): nothing new {} MB, one new snapshot each {} MB, full copy {} MB.",
        mb(b.max_rss(&["push2"])),
        mb(b.max_rss(&["push3"])),
        mb(b.max_rss(&["push4"]))
    );
    w!(s);
    w!(s, "## 6. incus-prune's retention policy");
    w!(s);
    w!(
        s,
        "`incus_core::policy::decide`, timed inside the benchmark harness (the same decision as `cargo bench -p incus-prune --bench policy`, with divan): deciding {policy_count} snapshots (one every 15 minutes, about 104 days) with `--keep-last 10 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --keep-yearly 3`; each run takes the best of {POLICY_RUNS} decisions, the figure is the median of {reps} run(s) ({} ms).",
        stats::all_values(c6, 2)
    );
    w!(s);
    w!(
        s,
        "**{c6_ms:.2} ms** (target < 10 ms): {}.",
        met(c6_ms, false, 9.999)
    );
    w!(s);

    let mut sum = String::new();
    w!(
        sum,
        "| 1. incus-snap, {n_snap} snapshots | {c1:.2}x faster | ≥ 2x | {} |",
        met(c1, true, 2.0)
    );
    w!(
        sum,
        "| 2. incus-push, nothing new ({n_push}) | {c2:.2}x faster | ≥ 20x | {} |",
        met(c2, true, 20.0)
    );
    w!(
        sum,
        "| 3. incus-push, one new snapshot each ({n_push}) | {c3:.2}x faster | ≥ 2x | {} |",
        met(c3, true, 2.0)
    );
    w!(
        sum,
        "| 4. full copy, {big_mb} MB | {c4:.2}x the time of incus copy | ≤ 1.05x | {} |",
        met(c4, false, 1.05)
    );
    w!(
        sum,
        "| 5. incus-push peak RSS | {rss_mb:.1} MB | < 30 MB | {} |",
        met(rss_mb, false, 29.999)
    );
    w!(
        sum,
        "| 6. policy, {policy_count} snapshots | {c6_ms:.2} ms | < 10 ms | {} |",
        met(c6_ms, false, 9.999)
    );
    Section {
        text: s,
        summary: sum,
    }
}
