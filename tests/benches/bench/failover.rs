//! The failover part: sections 7 (planned promotion) and 8 (failback).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use crate::Run as _;
use crate::stats::{self, fmt_s, mb, ratio};
use crate::{
    Bench, Record, Section, expect_statuses, first_error, head, loadavg, log, next_second, ok,
    push_statuses, records, utc_now,
};

const FAILBACK_POOLS: [&str; 2] = ["default", "btrfs"];
const WRITTEN: &str = "written on the standby after the promotion";

/// What case 8 noted for one pool.
#[derive(Debug, Default)]
struct PoolRuns {
    bytes: Vec<f64>,
    snapshots: Vec<f64>,
    failed: Vec<f64>,
    errors: Vec<String>,
    state: Option<String>,
    push0_status: Vec<String>,
    resent1: Vec<Vec<String>>,
    resent2: Vec<Vec<String>>,
    /// A snapshot received again: its name, its time before and after.
    example: Option<(String, String, String)>,
}

struct Run {
    date: String,
    load_start: String,
    load_end: String,
    promote_set: Vec<String>,
    promoted_seconds: Vec<f64>,
    pools: BTreeMap<&'static str, PoolRuns>,
    migrations_left: Vec<PathBuf>,
}

/// The partial migrations Incus leaves in the lab's pools when a transfer fails.
fn migration_leftovers(b: &Bench) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for server in ["primary", "standby"] {
        let pools = b.lab_dir.join(server).join("storage-pools");
        for pool in std::fs::read_dir(pools).into_iter().flatten().flatten() {
            let containers = pool.path().join("containers");
            for e in std::fs::read_dir(containers)
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with("migration.") {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// The snapshots whose creation time changed from `before` to `after`: deleted and
/// received again.
fn resent(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(n, t)| before.get(*n).is_some_and(|b| b != *t))
        .map(|(n, _)| n.clone())
        .collect()
}

pub fn run(b: &mut Bench) -> Result<Section> {
    let reps = b.cfg.reps;
    let p = b.project.clone();
    let date = utc_now();
    let load_start = loadavg();
    let migrations_before = migration_leftovers(b);

    // -----------------------------------------------------------------------------------
    // case 7: incus-failover promote vs the seed's manual sequence, per instance

    let n = b.cfg.n_promote;
    let set: Vec<String> = (1..=n).map(|i| format!("f-{i:02}")).collect();
    let set_args: Vec<&str> = set.iter().map(String::as_str).collect();

    // Fresh running instances with one snapshot each, replicated (their old copies deleted).
    let setup = |b: &Bench| -> Result<()> {
        b.drop_named("f")?;
        for i in &set {
            b.launch(i, &[])?;
        }
        ok(b.tool("incus-snap").args(["--project", &p]).args(&set))?;
        let out = b
            .tool("incus-push")
            .args(["--project", &p, "--to", "standby"])
            .args(&set)
            .out();
        expect_statuses(&out, n, &["copied"]).context("case 7 (setup)")
    };
    // Every replica runs; every primary copy is stopped, with autostart off.
    let check = |b: &Bench, side: &str| -> Result<()> {
        for i in &set {
            ensure!(
                b.status_of(&format!("standby:{i}"))? == "RUNNING",
                "case 7 ({side}): standby:{i} does not run"
            );
            ensure!(
                b.status_of(i)? == "STOPPED",
                "case 7 ({side}): the primary copy of {i} is not stopped"
            );
            ensure!(
                ok(b.bi(&["config", "get", i, "boot.autostart"]))?.trim() == "false",
                "case 7 ({side}): {i} has autostart on"
            );
        }
        Ok(())
    };
    let mut promoted_seconds = Vec::new();
    for rep in 1..=reps {
        log(format!(
            "case 7 (planned promotion of {n} running instances), run {rep}/{reps}: replicating afresh"
        ));
        setup(b)?;
        let mut args = vec!["promote", "--project", &p, "--standby", "standby"];
        args.extend(&set_args);
        let out = b.timed("c7.tool", |b| {
            Ok(b.rss("promote", "incus-failover", &args, &[]))
        })?;
        let recs = records(&out)?;
        let mut promoted = 0;
        let mut bad = false;
        for r in &recs {
            match r {
                Record::Promoted { already, seconds } => {
                    promoted += 1;
                    bad |= *already;
                    promoted_seconds.push(*seconds);
                }
                Record::Error { .. } => bad = true,
                _ => {}
            }
        }
        if promoted != n || bad {
            let shown: Vec<&str> = out
                .stdout
                .lines()
                .filter(|l| !l.contains("\"type\":\"step\""))
                .collect();
            bail!(
                "case 7: incus-failover promote: {}",
                head(&shown.join("\n"), 800)
            );
        }
        check(b, "incus-failover")?;
        log(format!(
            "case 7, run {rep}/{reps}: replicating afresh for the CLI"
        ));
        setup(b)?;
        b.timed("c7.cli", |b| {
            for i in &set {
                let si = format!("standby:{i}");
                ok(b.bi(&["config", "set", i, "boot.autostart=false"]))?;
                ok(b.bi(&["stop", i]))?;
                ok(b.bi(&["snapshot", "create", i, "final"]))?;
                ok(b.bi(&[
                    "copy",
                    "-q",
                    "--target-project",
                    &p,
                    i,
                    &si,
                    "--refresh",
                    "--stateless",
                ]))?;
                ok(b.bi(&["snapshot", "restore", &si, "final"]))?;
                ok(b.bi(&["config", "unset", &si, "boot.autostart"]))?;
                ok(b.bi(&["start", &si]))?;
            }
            Ok(())
        })?;
        check(b, "CLI")?;
    }
    log("case 7: deleting its instances");
    b.drop_named("f")?;

    // -----------------------------------------------------------------------------------
    // case 8: incus-failover failback on each pool, and the pushes after it

    for pool in FAILBACK_POOLS {
        for r in ["local", "standby"] {
            ensure!(
                b.incus(&["storage", "show", &format!("{r}:{pool}")])
                    .out()
                    .code
                    == 0,
                "case 8: there is no pool {pool} on {r}"
            );
        }
    }
    let mb_ = b.cfg.failback_mb;
    let mut pools = BTreeMap::new();
    for pool in FAILBACK_POOLS {
        let key = format!("c8-{pool}");
        let mut pr = PoolRuns::default();
        for rep in 1..=reps {
            let name = format!("fb-{pool}-{rep}");
            log(format!(
                "case 8 (failback, {mb_} MB on pool {pool}), run {rep}/{reps}: replicating and promoting {name}"
            ));
            // MB of random data on POOL, replicated to the same pool, promoted, then a file
            // written in the standby copy.
            b.launch(&name, &["-s", pool])?;
            b.exec(
                &name,
                &format!("dd if=/dev/urandom of=/root/random bs=1M count={mb_} 2>/dev/null"),
            )?;
            b.exec(&name, "sync")?;
            ok(b.tool("incus-snap").args(["--project", &p, &name]))?;
            let out = b
                .tool("incus-push")
                .args(["--project", &p, "--to", "standby", "--storage", pool, &name])
                .out();
            expect_statuses(&out, 1, &["copied"]).context("case 8 (setup)")?;
            let replica_dir = b.volume_dir("standby", pool, &name, None);
            ensure!(
                replica_dir.is_dir(),
                "case 8: the replica of {name} is not on the standby's pool {pool}"
            );
            let out = b
                .tool("incus-failover")
                .args(["promote", "--project", &p, "--standby", "standby", &name])
                .out();
            let recs = records(&out)?;
            if !recs.iter().any(|r| matches!(r, Record::Promoted { .. })) {
                bail!("case 8: promoting {name}: {}", head(&out.stdout, 600));
            }
            b.exec(
                &format!("standby:{name}"),
                &format!("echo '{WRITTEN}' >/root/written-on-standby && sync"),
            )?;
            pr.bytes.push(b.du_sb(&replica_dir)?);
            let listing = ok(b.bi(&["list", "standby:", "-f", "csv", "-c", "nS"]))?;
            if let Some(c) = listing
                .lines()
                .filter_map(|l| l.split_once(','))
                .find(|(n, _)| *n == name)
                .and_then(|(_, c)| c.trim().parse().ok())
            {
                pr.snapshots.push(c);
            }

            // The failback never stops the run: its records say how it went.
            let fb_args = ["failback", "--project", &p, "--standby", "standby", &name];
            let out = b.timed(&format!("{key}.failback"), |b| {
                Ok(b.rss("failback", "incus-failover", &fb_args, &[]))
            })?;
            let recs = records(&out).unwrap_or_default();
            let failed_back = recs.iter().find_map(|r| match r {
                Record::FailedBack { kept_aside } => Some(kept_aside.clone()),
                _ => None,
            });
            let error = first_error(&recs);
            if failed_back.is_none() || error.is_some() {
                let msg = error
                    .map(str::to_string)
                    .unwrap_or_else(|| head(&out.stderr, 600).to_string());
                log(format!("  case 8: the failback of {name} FAILED: {msg}"));
                if let Some(s) = b.results.get_mut(&format!("{key}.failback"))
                    && let Some(last) = s.pop()
                {
                    pr.failed.push(last.wall);
                }
                pr.errors.push(msg);
                if pr.state.is_none() {
                    let mut state = Vec::new();
                    for (label, r) in [("primary", "local"), ("standby", "standby")] {
                        let listing =
                            ok(b.bi(&["list", &format!("{r}:"), "-f", "csv", "-c", "ns"]))?;
                        let items: Vec<String> = listing
                            .lines()
                            .filter_map(|l| l.split_once(','))
                            .filter(|(n, _)| n.starts_with(&name))
                            .map(|(n, s)| format!("`{n}` {s}"))
                            .collect();
                        state.push(format!("{label}: {}", items.join(", ")));
                    }
                    pr.state = Some(state.join("; "));
                }
                // No second run: a failback resumed after a failed final sync would act on a
                // half-made primary copy. The instances are deleted as they are.
                if let Err(e) = b.drop_named(&name) {
                    log(format!(
                        "warning: could not delete {name} after its failed failback: {e:#}"
                    ));
                }
                continue;
            }
            // The instance runs on the primary again, on POOL, with what was written on the
            // standby; the standby copy is stopped; the old primary copy is kept aside.
            ensure!(
                b.status_of(&name)? == "RUNNING",
                "case 8: {name} does not run on the primary after the failback"
            );
            ensure!(
                b.status_of(&format!("standby:{name}"))? == "STOPPED",
                "case 8: standby:{name} still runs after the failback"
            );
            ensure!(
                b.exec(&name, "cat /root/written-on-standby")?.trim() == WRITTEN,
                "case 8: {name} lacks the file written on the standby"
            );
            ensure!(
                b.volume_dir("primary", pool, &name, None).is_dir(),
                "case 8: {name} is not on the primary's pool {pool} any more"
            );
            let aside = failed_back.flatten().unwrap_or_default();
            ensure!(
                !aside.is_empty() && b.status_of(&aside)? == "STOPPED",
                "case 8: no stopped old copy kept aside: {}",
                out.stdout
            );

            // The plain push right after, then the first and the second push of a new
            // snapshot.
            let out = b.timed(&format!("{key}.push0"), |b| {
                ok(b.tool("incus-push")
                    .args(["--project", &p, "--to", "standby", &name]))
                .map(|stdout| incus_standby_tests::Output {
                    code: 0,
                    stdout,
                    stderr: String::new(),
                })
            })?;
            let recs = records(&out)?;
            pr.push0_status
                .extend(push_statuses(&recs).into_iter().map(str::to_string));
            let standby_name = format!("standby:{name}");
            let t0 = b.snapshot_times(&standby_name)?;
            let snap_push = |b: &mut Bench, k: &str| -> Result<()> {
                let out = b.timed(&format!("{key}.{k}"), |b| {
                    b.pipeline(
                        (None, "incus-snap", &["--project", &p, &name]),
                        (None, "incus-push", &["--to", "standby"]),
                    )
                })?;
                let recs = records(&out)?;
                ensure!(
                    push_statuses(&recs) == ["refreshed"],
                    "case 8: a push with a new snapshot: {}",
                    out.stdout
                );
                Ok(())
            };
            next_second();
            snap_push(b, "push1")?;
            let t1 = b.snapshot_times(&standby_name)?;
            let r1 = resent(&t0, &t1);
            if let Some(first) = r1.first()
                && pr.example.is_none()
            {
                pr.example = Some((
                    first.clone(),
                    t0.get(first).cloned().unwrap_or_default(),
                    t1.get(first).cloned().unwrap_or_default(),
                ));
            }
            pr.resent1.push(r1);
            next_second();
            snap_push(b, "push2")?;
            let t2 = b.snapshot_times(&standby_name)?;
            pr.resent2.push(resent(&t1, &t2));
            b.drop_named(&name)?;
        }
        pools.insert(pool, pr);
    }
    let migrations_left: Vec<PathBuf> = migration_leftovers(b)
        .into_iter()
        .filter(|m| !migrations_before.contains(m))
        .collect();
    if !migrations_left.is_empty() {
        log(format!(
            "warning: failed transfers left partial migrations in the lab's pools (not removed): {}",
            migrations_left
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let run = Run {
        date,
        load_start,
        load_end: loadavg(),
        promote_set: set,
        promoted_seconds,
        pools,
        migrations_left,
    };
    Ok(report(b, &run))
}

fn words(lists: &[Vec<String>]) -> String {
    let all: Vec<&str> = lists.iter().flatten().map(String::as_str).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(" ")
    }
}

fn report(b: &Bench, run: &Run) -> Section {
    let (p, reps) = (&b.project, b.cfg.reps);
    let n = b.cfg.n_promote;
    let fb_mb = b.cfg.failback_mb;
    let c7 = ratio(b.med("c7.cli", 0), b.med("c7.tool", 0));
    let mut s = String::new();
    w!(s, "## 7. Planned promotion: incus-failover promote");
    w!(s);
    w!(
        s,
        "Measured {}, {reps} run(s) per measurement; load average (1, 5, 15 min) {} when sections 7 and 8 started, {} when they ended.",
        run.date,
        run.load_start,
        run.load_end
    );
    w!(s);
    w!(
        s,
        "{n} running instances (busybox containers, a few MB each), each with one snapshot (`incus-snap`) and replicated with `incus-push --project {p} --to standby`; before every run of either side the instances and their replicas are made afresh (not timed), and the two sides alternate."
    );
    w!(
        s,
        "Ours: `incus-failover promote --project {p} --standby standby {}` (default `--jobs 1`: one instance after the other, as in the loop). Per instance it fences the primary copy (`boot.autostart=false`, the old value kept on it), stops it, takes a final snapshot, sends it with the replication engine and restores the replica to it, gives the replica back the source's settings and starts it, checking first that the replica is ready and, before the start, that the primary copy is still stopped.",
        run.promote_set.join(" ")
    );
    w!(
        s,
        "CLI: the seed's manual sequence for the same guarantees, per instance: `incus config set NAME boot.autostart=false; incus stop NAME; incus snapshot create NAME final; incus copy NAME standby:NAME --refresh --stateless; incus snapshot restore standby:NAME final; incus config unset standby:NAME boot.autostart; incus start standby:NAME` (all with `--project {p}`, the copy with `--target-project {p}`)."
    );
    w!(
        s,
        "Both sides are checked after every run: each replica runs on the standby, each primary copy is stopped with `boot.autostart=false`."
    );
    w!(s);
    Bench::header(&mut s);
    b.row(&mut s, "c7.tool", "incus-failover promote", n);
    b.row(&mut s, "c7.cli", "CLI sequence", n);
    w!(s);
    w!(
        s,
        "Speed-up: **{c7:.2}x** (no target). incus-failover's own `promoted` records give {} per instance (median of {}). Peak RSS of incus-failover promote: {} MB.",
        fmt_s(stats::median(&run.promoted_seconds)),
        run.promoted_seconds.len(),
        mb(b.max_rss(&["promote"]))
    );
    w!(s);
    b.where_(&mut s, "c7");
    w!(s);
    w!(s, "## 8. Failback: incus-failover failback");
    w!(s);
    w!(
        s,
        "Per run and pool, one instance holding {fb_mb} MB from /dev/urandom, created with `incus launch busybox NAME -s POOL` on the primary, snapshotted, replicated with `incus-push --project {p} --to standby --storage POOL` (the replica on the standby's pool of the same name), promoted with `incus-failover promote`, and then a file written in the running standby copy (none of it timed)."
    );
    w!(
        s,
        "Timed: `incus-failover failback --project {p} --standby standby NAME`. It renames the old primary copy aside (kept, with its snapshots), copies the running standby copy back to the primary with the replication engine (the whole instance with its snapshots, since nothing is refreshed over the old copy), stops the standby copy, snapshots it (`failback-DATE`), sends that snapshot incrementally and restores the primary copy to it, makes the standby copy an inert replica again, and starts the primary copy with its own settings."
    );
    w!(
        s,
        "After every failback the benchmark checks that the instance runs on the primary again, on the same pool, with the file written on the standby, that the standby copy is stopped and that the old copy was kept aside."
    );
    w!(s);
    w!(
        s,
        "| Pool | Instance | Failback: wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) | Failed runs |"
    );
    w!(s, "|---|---|---|---|---|---|---|");
    let empty = PoolRuns::default();
    let pool_runs = |pool: &str| run.pools.get(pool).unwrap_or(&empty);
    for pool in FAILBACK_POOLS {
        let pr = pool_runs(pool);
        let mbs: Vec<f64> = pr
            .bytes
            .iter()
            .map(|b| stats::round(b / 1_048_576.0, 1))
            .collect();
        w!(
            s,
            "| {} | {:.1} MB (`du -sb` of the standby copy, without its snapshots), {} snapshots | {} | {} of {reps} |",
            b.pool_label(pool),
            stats::median(&mbs),
            stats::median(&pr.snapshots),
            b.cells(&format!("c8-{pool}.failback")),
            pr.failed.len()
        );
    }
    w!(s);
    w!(
        s,
        "Peak RSS of incus-failover failback: {} MB.",
        mb(b.max_rss(&["failback"]))
    );
    for pool in FAILBACK_POOLS {
        let pr = pool_runs(pool);
        if pr.failed.is_empty() {
            continue;
        }
        let msg = pr.errors.first().cloned().unwrap_or_default();
        w!(s);
        w!(
            s,
            "**The failback failed on {} in {} of {reps} run(s)** (after {} s). The first failure, as incus-failover reported it:",
            b.pool_label(pool),
            pr.failed.len(),
            stats::all_values(&pr.failed, 3)
        );
        w!(s);
        w!(s, "> {msg}");
        w!(s);
        w!(
            s,
            "Left after it: {}. The benchmark does not run the failback again; it deletes the instances.",
            pr.state.as_deref().unwrap_or("")
        );
        if msg.contains("cannot find parent subvolume") {
            w!(
                s,
                "The error comes from Incus's optimized btrfs transfer back to the primary: `btrfs receive` there cannot find the parent subvolume the stream from the standby names, so the copy of the standby's instance to the primary fails."
            );
        }
    }
    w!(s);
    w!(
        s,
        "After each successful failback, three pushes from the primary follow: a plain `incus-push --project {p} --to standby NAME` right after it, then twice `incus-snap --project {p} NAME | incus-push --to standby` (one new snapshot each)."
    );
    w!(s);
    w!(
        s,
        "| Pool | Push | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) | What it did |"
    );
    w!(s, "|---|---|---|---|---|---|---|");
    for pool in FAILBACK_POOLS {
        let key = format!("c8-{pool}");
        let label = b.pool_label(pool);
        let pr = pool_runs(pool);
        if b.samples(&format!("{key}.push0")).is_empty() {
            w!(
                s,
                "| {label} | — | — | — | — | — | no successful failback |"
            );
            continue;
        }
        let mut statuses = pr.push0_status.clone();
        statuses.sort();
        statuses.dedup();
        let sent = if pr.push0_status.iter().any(|s| s != "up-to-date") {
            "sent something"
        } else {
            "nothing sent"
        };
        w!(
            s,
            "| {label} | plain incus-push, right after | {} | {}: {sent} |",
            b.cells(&format!("{key}.push0")),
            statuses.join(", ")
        );
        w!(
            s,
            "| {label} | first incus-snap \\| incus-push | {} | refreshed; Incus also deleted and received again {} snapshot(s) in all: {} |",
            b.cells(&format!("{key}.push1")),
            pr.resent1.iter().map(Vec::len).sum::<usize>(),
            words(&pr.resent1)
        );
        w!(
            s,
            "| {label} | second incus-snap \\| incus-push | {} | refreshed; received again: {} |",
            b.cells(&format!("{key}.push2")),
            words(&pr.resent2)
        );
    }
    w!(s);
    w!(
        s,
        "The plain push right after a failback sends nothing: incus-push compares the snapshot lists by name, and they match."
    );
    let example = FAILBACK_POOLS
        .iter()
        .find_map(|p| pool_runs(p).example.clone());
    if let Some((name, before, after)) = example {
        w!(
            s,
            "The first push that transfers something (here the first one with a new snapshot) makes Incus also delete and receive again, on the standby, the snapshots the standby made itself (the `failback-…` snapshot, and any taken while it was promoted): in a refresh Incus compares the snapshots' creation times on both sides to the nanosecond, and the copies the failback made on the primary only kept whole seconds."
        );
        w!(
            s,
            "For instance `{name}` was created at {before} on the standby, and its copy on the primary says {after}, which is what the standby holds after that push."
        );
        w!(
            s,
            "The cost of sending those snapshots again is the difference between the first and the second push above."
        );
    } else {
        w!(
            s,
            "In these runs the first push with a new snapshot did not make Incus send any snapshot again (no creation time changed on the standby)."
        );
    }
    w!(s);
    w!(
        s,
        "No CLI comparison: the CLI has no way back that keeps both sides' data. The obvious one, stopping the standby copy and running `incus copy --refresh standby:NAME NAME`, refreshes the old primary copy in place: it deletes the snapshots only the old primary has (taken after the last sync, or kept there longer), deletes and receives again every snapshot the old primary made itself (their creation times there are to the nanosecond, their copies on the standby to the second), overwrites the old primary's own data without keeping it, and copies the standby copy's configuration over the primary's (volatile keys included)."
    );
    w!(
        s,
        "incus-failover keeps the old copy aside as `NAME-before-failback-DATE`, with its snapshots and data, and copies the instance back with the replication engine instead."
    );
    if !run.migrations_left.is_empty() {
        let list: Vec<String> = run
            .migrations_left
            .iter()
            .map(|m| format!("`{}`", m.strip_prefix(&b.lab_dir).unwrap_or(m).display()))
            .collect();
        w!(s);
        w!(
            s,
            "The failed transfers left {} partial migration(s) of Incus in the lab's pools ({}); the benchmark does not remove them.",
            list.len(),
            list.join(", ")
        );
    }
    w!(s);

    let mut sum = String::new();
    w!(
        sum,
        "| 7. planned promotion, {n} running instances | {c7:.2}x faster than the CLI sequence | — | — |"
    );
    for pool in FAILBACK_POOLS {
        let key = format!("c8-{pool}");
        let failed = pool_runs(pool).failed.len();
        let res = if b.samples(&format!("{key}.failback")).is_empty() {
            format!("**failed** in {failed} of {reps} runs")
        } else {
            let mut r = format!(
                "{}; the first push with a new snapshot after it {}, the next one {}",
                fmt_s(b.med(&format!("{key}.failback"), 0)),
                fmt_s(b.med(&format!("{key}.push1"), 0)),
                fmt_s(b.med(&format!("{key}.push2"), 0))
            );
            if failed > 0 {
                r += &format!("; **failed** in {failed} of {reps} runs");
            }
            r
        };
        w!(
            sum,
            "| 8. failback, {fb_mb} MB, {} | {res} | — | — |",
            b.pool_label(pool)
        );
    }
    Section {
        text: s,
        summary: sum,
    }
}
