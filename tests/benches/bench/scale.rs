//! The scale part: section 10 (only with `--only scale`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::Run as _;
use crate::stats::{fmt_s, mb, met, ratio};
use crate::{
    Bench, Cmd, JOBS, Record, Section, count, expect_statuses, is_snapshot, loadavg, log,
    next_second, ok, records, utc_now,
};

const CASES: [&str; 6] = ["snap", "first", "nothing", "one", "prune", "keep"];

/// The largest step up in time per instance from one size to the next that still counts
/// as flat (the rest is run-to-run noise).
const GROWTH: f64 = 1.25;

fn case_label(c: &str) -> &'static str {
    match c {
        "snap" => "1. snapshots",
        "first" => "2. first push (setup)",
        "nothing" => "3. push, nothing new",
        "one" => "4. push, one new snapshot each",
        "prune" => "5. prune --dry-run",
        _ => "6. prune, nothing to delete",
    }
}

fn tool_of(c: &str) -> &'static str {
    match c {
        "snap" => "incus-snap",
        "prune" | "keep" => "incus-prune",
        _ => "incus-push",
    }
}

/// What one size noted besides the timings.
#[derive(Debug, Default)]
struct SizeRuns {
    /// CASE → the API requests our tool reported.
    api: BTreeMap<&'static str, u64>,
    /// The first push's failed transfers (error messages).
    first_failed: Vec<String>,
    /// CASE → the CLI refreshes that failed once and were run again.
    retries: BTreeMap<&'static str, Vec<String>>,
    /// CASE → the snapshots of sc-00001 the CLI's refresh received again.
    resent: BTreeMap<&'static str, Vec<String>>,
    disk: f64,
    create_s: u64,
    delete_s: u64,
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("sc-{i:05}")).collect()
}

impl Bench {
    /// N stopped busybox containers sc-00001 … (root disk on the default profile's pool), made
    /// with `incus init`, JOBS at once; any that failed are made again one by one.
    fn sc_create(&self, n: usize) -> Result<()> {
        let all = names(n);
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..JOBS {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(name) = all.get(i) else { break };
                        let _ = self.bi(&["init", "busybox", name, "-q"]).out();
                    }
                });
            }
        });
        let have: std::collections::HashSet<String> =
            self.list_names("local")?.into_iter().collect();
        for name in all.iter().filter(|n| !have.contains(*n)) {
            ok(self.bi(&["init", "busybox", name, "-q"]))
                .with_context(|| format!("scale: creating {name}"))?;
        }
        Ok(())
    }

    /// One run of a tool of ours with INCUS_STANDBY_STATS=1, timed as KEY.tool, with its peak
    /// RSS under KEY and the API requests it reported. With `tolerate`, a failing run is
    /// returned (its error records) instead of stopping the run.
    fn sc_tool(
        &mut self,
        key: &str,
        tool: &str,
        args: &[&str],
        tolerate: bool,
    ) -> Result<(incus_standby_tests::Output, u64)> {
        let out = self.timed(&format!("{key}.tool"), |b| {
            Ok(b.rss(key, tool, args, &[("INCUS_STANDBY_STATS", "1")]))
        })?;
        if out.code != 0 && !tolerate {
            bail!("scale: {tool} failed: {}", tail(&out.stderr, 800));
        }
        let api = crate::api_requests(&out).with_context(|| {
            format!(
                "scale: no \"stats: N API requests\" line from {tool}: {}",
                tail(&out.stderr, 800)
            )
        })?;
        Ok((out, api))
    }

    /// "NAME,SNAPSHOTS" of the scale part's instances on a remote, sorted.
    fn snapshot_counts(&self, remote: &str) -> Result<Vec<String>> {
        let mut v: Vec<String> =
            ok(self.bi(&["list", &format!("{remote}:"), "-f", "csv", "-c", "nS"]))?
                .lines()
                .filter(|l| l.starts_with("sc-"))
                .map(str::to_string)
                .collect();
        v.sort();
        Ok(v)
    }

    /// The disk space (bytes, du) of the scale part's instances and snapshots on both lab
    /// daemons.
    fn sc_disk(&self) -> f64 {
        let prefix = format!("{}_sc-", self.project);
        let mut paths: Vec<PathBuf> = Vec::new();
        for server in ["primary", "standby"] {
            let pool = self.lab_dir.join(server).join("storage-pools/default");
            for d in std::fs::read_dir(pool).into_iter().flatten().flatten() {
                if !d.file_name().to_string_lossy().starts_with("containers") {
                    continue;
                }
                for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        paths.push(e.path());
                    }
                }
            }
        }
        if paths.is_empty() {
            return 0.0;
        }
        let out = Cmd::new("du").args(["-s", "-B1", "-c"]).args(&paths).out();
        out.stdout
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The last `n` bytes of a text, for messages.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

struct Run {
    date: String,
    load_start: String,
    load_end: String,
    seconds: u64,
    sizes: BTreeMap<usize, SizeRuns>,
}

pub fn run(b: &mut Bench) -> Result<Section> {
    let p = b.project.clone();
    let jobs = JOBS.to_string();
    let date = utc_now();
    let load_start = loadavg();
    let start = Instant::now();
    let push_all = ["--project", &p, "--all", "--to", "standby", "--jobs", &jobs];
    let mut sizes = BTreeMap::new();
    for n in b.cfg.scale_sizes.clone() {
        let k = format!("sc{n}");
        let mut sr = SizeRuns::default();
        let t0 = Instant::now();
        log(format!(
            "scale, {n} instances: creating them ({JOBS} at once, not timed)"
        ));
        b.sc_create(n)?;
        let set = names(n);
        let made = b
            .list_names("local")?
            .iter()
            .filter(|l| l.starts_with("sc-"))
            .count();
        ensure!(
            made == n,
            "scale: expected {n} instances sc-…, found {made}"
        );
        sr.create_s = t0.elapsed().as_secs();

        log(format!(
            "scale, {n} instances: 1. snapshots, incus-snap --all"
        ));
        next_second();
        let (out, api) = b.sc_tool(
            &format!("{k}-snap"),
            "incus-snap",
            &["--project", &p, "--all"],
            false,
        )?;
        sr.api.insert("snap", api);
        ensure!(
            count(&records(&out)?, is_snapshot) == n,
            "scale: incus-snap did not take {n} snapshots"
        );
        log(format!("scale, {n} instances: 1. snapshots, CLI loop"));
        b.timed(&format!("{k}-snap.cli"), |b| {
            for i in &set {
                ok(b.bi(&["snapshot", "create", i]))?;
            }
            Ok(())
        })?;

        log(format!("scale, {n} instances: 2. first push (setup)"));
        // The setup: a transfer that fails (rsync's connection cut once in 1000 here) is run
        // again by a second push, as the next cron run would, and noted.
        let (out, api) = b.sc_tool(&format!("{k}-first"), "incus-push", &push_all, true)?;
        sr.api.insert("first", api);
        let recs = records(&out)?;
        if out.code != 0 {
            sr.first_failed = recs
                .iter()
                .filter_map(|r| match r {
                    Record::Error { message } => Some(message.clone()),
                    _ => None,
                })
                .collect();
            if sr.first_failed.is_empty() {
                sr.first_failed.push("incus-push failed".into());
            }
            log(format!(
                "scale, {n} instances: {} transfer(s) of the first push failed; pushing again",
                sr.first_failed.len()
            ));
            let again = b.tool("incus-push").args(push_all).out();
            let again_recs = records(&again)?;
            if again.code != 0 {
                bail!(
                    "scale: the second first push failed too: {}",
                    crate::first_error(&again_recs).unwrap_or("")
                );
            }
            let copied = |rs: &[Record]| {
                rs.iter()
                    .filter(|r| matches!(r, Record::Push { status, .. } if status == "copied"))
                    .count()
            };
            let (c1, c2) = (copied(&recs), copied(&again_recs));
            ensure!(
                c1 + c2 == n,
                "scale: the two first pushes copied {} instances, not {n}",
                c1 + c2
            );
        } else {
            expect_statuses(&out, n, &["copied"]).context("scale: first push")?;
        }

        // Our runs first: the CLI's refresh rewrites the replicas' configuration, which
        // drops incus-push's marker (see cases 2 and 3).
        log(format!("scale, {n} instances: 3. nothing new, incus-push"));
        let (out, api) = b.sc_tool(&format!("{k}-nothing"), "incus-push", &push_all, false)?;
        sr.api.insert("nothing", api);
        expect_statuses(&out, n, &["up-to-date"]).context("scale: nothing new")?;

        log(format!(
            "scale, {n} instances: 4. one new snapshot each, incus-snap (not timed) then incus-push"
        ));
        let snap_all = |b: &Bench| -> Result<()> {
            next_second();
            let out = b.tool("incus-snap").args(["--project", &p, "--all"]).out();
            ensure!(
                out.code == 0 && count(&records(&out)?, is_snapshot) == n,
                "scale: incus-snap did not take {n} snapshots"
            );
            Ok(())
        };
        snap_all(b)?;
        let (out, api) = b.sc_tool(&format!("{k}-one"), "incus-push", &push_all, false)?;
        sr.api.insert("one", api);
        expect_statuses(&out, n, &["refreshed"]).context("scale: one new snapshot")?;
        // Each push record lists the one snapshot it sent.
        if let Some(bad) = records(&out)?
            .iter()
            .find(|r| matches!(r, Record::Push { snapshots, .. } if snapshots.len() != 1))
        {
            bail!("scale: incus-push did not send exactly one snapshot each: {bad:?}");
        }

        // Every instance has two auto-* snapshots (incus-snap's) now, and the CLI's snap0.
        log(format!("scale, {n} instances: 5. incus-prune --dry-run"));
        let (out, api) = b.sc_tool(
            &format!("{k}-prune"),
            "incus-prune",
            &["--project", &p, "--all", "--keep-last", "1", "--dry-run"],
            false,
        )?;
        sr.api.insert("prune", api);
        let recs = records(&out)?;
        let pruned = count(&recs, |r| matches!(r, Record::Pruned { .. }));
        ensure!(
            pruned == n,
            "scale: incus-prune --dry-run --keep-last 1 chose {pruned} snapshots, not {n}"
        );
        ensure!(
            recs.iter()
                .all(|r| !matches!(r, Record::Pruned { dry_run: false })),
            "scale: incus-prune --dry-run deleted something"
        );
        log(format!(
            "scale, {n} instances: 6. incus-prune --dry-run with nothing to delete"
        ));
        let (out, api) = b.sc_tool(
            &format!("{k}-keep"),
            "incus-prune",
            &["--project", &p, "--all", "--keep-last", "2", "--dry-run"],
            false,
        )?;
        sr.api.insert("keep", api);
        let pruned = count(&records(&out)?, |r| matches!(r, Record::Pruned { .. }));
        ensure!(
            pruned == 0,
            "scale: incus-prune --dry-run --keep-last 2 chose {pruned} snapshots, not none"
        );
        log(format!(
            "scale, {n} instances: 5. CLI loop of incus snapshot list"
        ));
        let listed = b.timed(&format!("{k}-prune.cli"), |b| {
            let mut lines = 0;
            for i in &set {
                let out = ok(b.bi(&["snapshot", "list", i, "-f", "csv"]))?;
                lines += out.lines().filter(|l| !l.is_empty()).count();
            }
            Ok(lines)
        })?;
        ensure!(
            listed == 3 * n,
            "scale: the CLI listed {listed} snapshots, not {}",
            3 * n
        );

        // Whether the CLI's refreshes send only what is new: the creation times of the first
        // instance's snapshots on the standby, before and after each loop (a snapshot
        // deleted and received again has a new one).
        let first = format!("standby:{}", set.first().context("no instance")?);
        let refresh_loop = |b: &mut Bench, case: &'static str, retries: &mut Vec<String>| {
            b.timed(&format!("{k}-{case}.cli"), |b| {
                for i in &set {
                    let args = [
                        "copy",
                        "-q",
                        "--target-project",
                        &p,
                        i,
                        &format!("standby:{i}"),
                        "--refresh",
                    ];
                    let out = b.bi(&args).out();
                    if out.code == 0 {
                        continue;
                    }
                    // Incus 6.0.4 sometimes fails one with "ETag doesn't match": run again,
                    // as a script would have to, and noted.
                    retries.push(format!("{i}: {}", out.stderr.replace('\n', " ").trim()));
                    ok(b.bi(&args)).with_context(|| {
                        format!("scale: incus copy --refresh of {i} failed twice")
                    })?;
                }
                Ok(())
            })
        };
        let t0 = b.snapshot_times(&first)?;
        log(format!("scale, {n} instances: 3. nothing new, CLI loop"));
        let mut retries = Vec::new();
        refresh_loop(b, "nothing", &mut retries)?;
        sr.retries.insert("nothing", retries);
        let t1 = b.snapshot_times(&first)?;
        sr.resent.insert("nothing", resent(&t0, &t1));
        log(format!(
            "scale, {n} instances: 4. one new snapshot each, incus-snap (not timed) then CLI loop"
        ));
        snap_all(b)?;
        let mut retries = Vec::new();
        refresh_loop(b, "one", &mut retries)?;
        sr.retries.insert("one", retries);
        let t2 = b.snapshot_times(&first)?;
        sr.resent.insert("one", resent(&t1, &t2));
        ensure!(
            t2.len() == 4,
            "scale: cannot read the snapshots of {first}: {t2:?}"
        );

        // Every replica has the 4 snapshots of its source.
        let (cl, cs) = (b.snapshot_counts("local")?, b.snapshot_counts("standby")?);
        if cl != cs {
            let diff: Vec<&String> = cl
                .iter()
                .filter(|l| !cs.contains(l))
                .chain(cs.iter().filter(|l| !cl.contains(l)))
                .take(4)
                .collect();
            bail!("scale: the replicas' snapshot counts differ from their sources': {diff:?}");
        }
        let bad: Vec<&String> = cl
            .iter()
            .filter(|l| l.split(',').nth(1) != Some("4"))
            .take(3)
            .collect();
        ensure!(bad.is_empty(), "scale: unexpected snapshot counts: {bad:?}");
        sr.disk = b.sc_disk();

        log(format!(
            "scale, {n} instances: deleting them and their replicas"
        ));
        let t0 = Instant::now();
        b.delete_instances("local", &set)?;
        b.delete_instances("standby", &set)?;
        sr.delete_s = t0.elapsed().as_secs();
        sizes.insert(n, sr);
    }
    let run = Run {
        date,
        load_start,
        load_end: loadavg(),
        seconds: start.elapsed().as_secs(),
        sizes,
    };
    Ok(report(b, &run))
}

fn resent(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(n, t)| before.get(*n).is_some_and(|b| b != *t))
        .map(|(n, _)| n.clone())
        .collect()
}

/// "a → b → c ms per instance (×r, ×r)" and the verdict: "grows" when one step up in size
/// makes the time per instance more than GROWTH times longer, else "falls" when the largest
/// size's is under 0.8 times the smallest's, else "flat" ("one size" with a single size).
fn growth(b: &Bench, case: &str, side: &str, col: usize) -> (String, &'static str) {
    let sizes = &b.cfg.scale_sizes;
    let t: Vec<f64> = sizes
        .iter()
        .map(|n| b.med(&format!("sc{n}-{case}.{side}"), col) * 1000.0 / *n as f64)
        .collect();
    let ms = |v: f64| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    };
    let mut text = t.iter().map(|v| ms(*v)).collect::<Vec<_>>().join(" → ") + " ms";
    let mut grows = false;
    let steps: Vec<String> = t
        .windows(2)
        .map(|w| {
            let r = if w[0] > 0.0 { w[1] / w[0] } else { 0.0 };
            grows |= r > GROWTH;
            format!("×{r:.2}")
        })
        .collect();
    if t.len() > 1 {
        text += &format!(" ({})", steps.join(", "));
    }
    let verdict = match (t.first(), t.last()) {
        _ if t.len() < 2 => "one size",
        _ if grows => "grows",
        (Some(f), Some(l)) if *l < 0.8 * f => "falls",
        _ => "flat",
    };
    (text, verdict)
}

fn sc_bytes(b: f64) -> String {
    if b < 1_073_741_824.0 {
        format!("{:.0} MB", b / 1_048_576.0)
    } else {
        format!("{:.1} GB", b / 1_073_741_824.0)
    }
}

fn sc_per_inst(v: f64, n: usize) -> String {
    let t = v * 1000.0 / n as f64;
    if t < 10.0 {
        format!("{t:.2} ms")
    } else {
        format!("{t:.1} ms")
    }
}

fn report(b: &Bench, run: &Run) -> Section {
    let p = &b.project;
    let sizes = &b.cfg.scale_sizes;
    let sizes_with = |sep: &str| {
        sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let sizes_text = sizes_with(" → ");
    let empty = SizeRuns::default();
    let sr = |n: usize| run.sizes.get(&n).unwrap_or(&empty);
    let rss_labels = |n: usize| CASES.map(|c| format!("sc{n}-{c}"));
    let max_rss_of = |n: usize| {
        let labels = rss_labels(n);
        b.max_rss(&labels.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut s = String::new();
    w!(s, "## 10. Scale");
    w!(s);
    w!(
        s,
        "Measured {} with `scripts/bench.sh --only scale` (a run without `--only` does not measure this part: it keeps this section), one run per measurement and size; load average (1, 5, 15 min) {} when section 10 started, {} when it ended. The whole part took {} min {:02} s (creating and deleting the instances included).",
        run.date,
        run.load_start,
        run.load_end,
        run.seconds / 60,
        run.seconds % 60
    );
    w!(s);
    w!(
        s,
        "For each size N ({} instances), N stopped busybox containers `sc-00001` … are made in the project `{p}` on the pool `default` of the default profile (dir driver) with `incus init busybox NAME`, {JOBS} at once (not timed); then, in this order:",
        sizes_with(", ")
    );
    w!(s);
    w!(
        s,
        "1. **Snapshots.** Ours: `incus-snap --project {p} --all` (default `--jobs 4`). CLI: `for i in …; do incus snapshot create --project {p} $i; done`."
    );
    w!(
        s,
        "2. **First push** (the setup of cases 3 and 4; no CLI side): `incus-push --project {p} --all --to standby --jobs {JOBS}`, a full copy of every instance with its two snapshots."
    );
    w!(
        s,
        "3. **Push, nothing new**: the same command again, every replica current. CLI: `for i in …; do incus copy -q --project {p} --target-project {p} $i standby:$i --refresh; done` on the same current replicas (the CLI's refresh re-syncs the instance's volume even then)."
    );
    w!(
        s,
        "4. **Push, one new snapshot each**: `incus-snap --project {p} --all` (not timed), then the same incus-push command: each replica receives that one snapshot (checked in its `push` record), is restored to it and gets its inert configuration. CLI: after its loop of case 3, another `incus-snap --all` (not timed), so that again every instance has exactly one snapshot its replica lacks, then the same loop of `incus copy --refresh`: it sends that snapshot and re-syncs the volume, nothing more (no restore, the source's configuration copied as it is)."
    );
    w!(
        s,
        "5. **Prune, dry run**: `incus-prune --project {p} --all --keep-last 1 --dry-run` (every instance then has two `auto-*` snapshots: it decides to delete one each, and deletes nothing). An instance with something to delete is decided from its own snapshot list (and its replica's, with `--replica`): a request each, never the pools' listings alone. CLI: `for i in …; do incus snapshot list --project {p} $i -f csv; done`, what a shell script would read to decide (without the deciding)."
    );
    w!(
        s,
        "6. **Prune, nothing to delete**: `incus-prune --project {p} --all --keep-last 2 --dry-run` right after case 5: every instance keeps its two `auto-*` snapshots, which the storage pools' listings show without a request per instance (no CLI side: its loop is case 5's)."
    );
    w!(s);
    w!(
        s,
        "Our runs of cases 3 and 4 come before the CLI's (the CLI's refresh rewrites the replicas' configuration, which drops incus-push's marker), case 5 between them. Checked in every run: the records of our tools (N `snapshot` records; N `push` records `copied`, `up-to-date`, `refreshed`; N dry-run `pruned` records), the CLI's listing (3 snapshots per instance), and at the end the same 4 snapshots on every replica as on its source. The instances and their replicas are deleted after each size."
    );
    w!(
        s,
        "Our tools run with `INCUS_STANDBY_STATS=1`: \"API requests\" is the count they print on stderr (`TOOL: stats: N API requests`). Peak RSS: `/usr/bin/time -f %M`. Wall time and daemons' CPU as in the method above."
    );
    w!(s);
    w!(
        s,
        "| Case | N | Ours: wall time | Per instance | Peak RSS | API requests | Daemons CPU | CLI loop: wall time | Per instance | Daemons CPU | Speed-up |"
    );
    w!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for c in CASES {
        for &n in sizes {
            let k = format!("sc{n}-{c}");
            let w = b.med(&format!("{k}.tool"), 0);
            let mut row = format!(
                "| {}, `{}` | {n} | {} | {} | {} MB | {} | {:.2} s | ",
                case_label(c),
                tool_of(c),
                fmt_s(w),
                sc_per_inst(w, n),
                mb(b.max_rss(&[&k])),
                sr(n).api.get(c).copied().unwrap_or(0),
                b.med(&format!("{k}.tool"), 1)
            );
            let cli = format!("{k}.cli");
            if b.samples(&cli).is_empty() {
                row += "— | — | — | — |";
            } else {
                let wc = b.med(&cli, 0);
                row += &format!(
                    "{} | {} | {:.2} s | {:.2}x |",
                    fmt_s(wc),
                    sc_per_inst(wc, n),
                    b.med(&cli, 1),
                    ratio(wc, w)
                );
            }
            w!(s, "{row}");
        }
    }
    w!(s);
    for &n in sizes {
        let failed = &sr(n).first_failed;
        if failed.is_empty() {
            continue;
        }
        let first: String = failed[0].chars().take(300).collect();
        w!(
            s,
            "In the first push (setup) of {n} instances, {} transfer(s) failed and a second incus-push copied them (its time is not counted): `{first}`.",
            failed.len()
        );
        w!(s);
    }
    let mut retried = Vec::new();
    for c in ["nothing", "one"] {
        for &n in sizes {
            if let Some(r) = sr(n).retries.get(c).filter(|r| !r.is_empty()) {
                retried.push(format!(
                    "{}, {n} instances: {} (the first: `{}`)",
                    case_label(c),
                    r.len(),
                    r[0].trim_end()
                ));
            }
        }
    }
    if retried.is_empty() {
        w!(
            s,
            "None of the CLI's `incus copy --refresh` failed (the benchmark runs a failed one again, noting it: Incus 6.0.4 sometimes fails one with \"ETag doesn't match\")."
        );
    } else {
        w!(
            s,
            "Some of the CLI's `incus copy --refresh` failed and were run again (the time of both runs is in the CLI's wall time): {}. After the transfer the CLI reads the replica and updates its configuration with the ETag it read; the daemon can refuse that update as made on an instance that changed in between (\"ETag doesn't match\").",
            retried.join("; ")
        );
    }
    w!(s);
    let mut resent_any = Vec::new();
    for c in ["nothing", "one"] {
        for &n in sizes {
            if let Some(r) = sr(n).resent.get(c).filter(|r| !r.is_empty()) {
                resent_any.push(format!("{}, {n} instances: {}", case_label(c), r.join(" ")));
            }
        }
    }
    if resent_any.is_empty() {
        w!(
            s,
            "On the first instance, `sc-00001`, the CLI's refreshes received no existing snapshot again (the creation times of its replica's snapshots did not change): case 4's loop sent only the new snapshot (and re-synced the volume)."
        );
    } else {
        w!(
            s,
            "On the first instance, `sc-00001`, the CLI's refresh also deleted and received again existing snapshots (their creation times on the standby changed): {}.",
            resent_any.join("; ")
        );
    }
    w!(s);
    w!(
        s,
        "Wall time per instance, {sizes_text} instances (each step's factor in brackets; a step up to ×{GROWTH} counts as flat, as run-to-run noise):"
    );
    w!(s);
    let has_cli = |c: &str| {
        sizes
            .first()
            .is_some_and(|n| !b.samples(&format!("sc{n}-{c}.cli")).is_empty())
    };
    let mut verdicts = Vec::new();
    for c in CASES {
        let (g, v) = growth(b, c, "tool", 0);
        verdicts.push((c, v));
        let mut l = format!("- {}, `{}`: {g}: **{v}**", case_label(c), tool_of(c));
        if has_cli(c) {
            let (g, v) = growth(b, c, "cli", 0);
            l += &format!("; CLI loop: {g}: {v}");
        }
        w!(s, "{l}.");
    }
    w!(s);
    w!(
        s,
        "Where that time goes, per instance, {sizes_text} instances: the CPU of our tool itself, and the CPU of the two Incus daemons serving it (the CLI loop's daemons' CPU beside it: the same requests cost the daemons the same):"
    );
    w!(s);
    let mut own = Vec::new();
    for c in CASES {
        let (g, v) = growth(b, c, "tool", 2);
        own.push((c, v));
        let mut l = format!(
            "- {}, `{}`: our CPU {g}: **{v}**",
            case_label(c),
            tool_of(c)
        );
        let (g, v) = growth(b, c, "tool", 1);
        l += &format!("; daemons {g}: {v}");
        if has_cli(c) {
            let (g, v) = growth(b, c, "cli", 1);
            l += &format!("; for the CLI loop, daemons {g}: {v}");
        }
        w!(s, "{l}.");
    }
    w!(s);
    let growing = |v: &[(&str, &str)]| -> Vec<&'static str> {
        v.iter()
            .filter(|(_, v)| *v == "grows")
            .map(|(c, _)| case_label(c))
            .collect()
    };
    let own_grows = growing(&own);
    if own_grows.is_empty() {
        w!(
            s,
            "Our tools' own CPU per instance does not grow with the number of instances. Where the wall time per instance grows, the daemons' CPU per instance grows with it: Incus's per-instance requests (a snapshot list, a migration, a restore) cost its daemons more on a server holding more instances, for the CLI as for us."
        );
    } else {
        w!(
            s,
            "Our tools' own CPU per instance **grows** for: {}.",
            own_grows.join("; ")
        );
    }
    w!(s);
    let wall_grows = growing(&verdicts);
    let one_size = verdicts.iter().any(|(_, v)| *v == "one size");
    if !wall_grows.is_empty() {
        w!(
            s,
            "The wall time per instance of our tools **grows** with the number of instances for: {}.",
            wall_grows.join("; ")
        );
    } else if one_size {
        w!(s, "With a single size there is no growth to tell.");
    } else {
        w!(
            s,
            "The time per instance of our tools does not grow with the number of instances: it stays flat or falls (the fixed costs, such as listing the instances and starting the process, spread over more instances)."
        );
    }
    w!(s);
    w!(s, "API requests of our tools, {sizes_text} instances:");
    w!(s);
    for c in CASES {
        let a: Vec<u64> = sizes
            .iter()
            .map(|n| sr(*n).api.get(c).copied().unwrap_or(0))
            .collect();
        let text = a.iter().map(u64::to_string).collect::<Vec<_>>().join(" → ");
        let (lo, hi) = (
            a.iter().min().copied().unwrap_or(0),
            a.iter().max().copied().unwrap_or(0),
        );
        let verdict = match (sizes.first(), sizes.last(), a.first(), a.last()) {
            _ if a.len() < 2 => "one size".to_string(),
            _ if hi - lo <= 2 => "constant".to_string(),
            (Some(n1), Some(nk), Some(a1), Some(ak)) => format!(
                "about {:.2} more per instance",
                (*ak as f64 - *a1 as f64) / (*nk as f64 - *n1 as f64)
            ),
            _ => String::new(),
        };
        w!(
            s,
            "- {}, `{}`: {text}: {verdict}.",
            case_label(c),
            tool_of(c)
        );
    }
    w!(s);
    w!(
        s,
        "Peak RSS of our tools (largest of the six cases), {sizes_text} instances: {}.",
        sizes
            .iter()
            .map(|n| format!("{} MB", mb(max_rss_of(*n))))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    w!(s);
    w!(
        s,
        "Disk space of the instances with their 4 snapshots and of their replicas, on both servers (`du`, at the end of each size; on dir every snapshot is a full copy): {}. Making the instances took {}, deleting them and their replicas {} ({sizes_text} instances; not measured).",
        sizes
            .iter()
            .map(|n| format!("{n} instances {}", sc_bytes(sr(*n).disk)))
            .collect::<Vec<_>>()
            .join(", "),
        sizes
            .iter()
            .map(|n| format!("{} s", sr(*n).create_s))
            .collect::<Vec<_>>()
            .join(", "),
        sizes
            .iter()
            .map(|n| format!("{} s", sr(*n).delete_s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    w!(s);

    // The targets, at the largest size.
    let nmax = sizes.last().copied().unwrap_or(0);
    let nw = b.med(&format!("sc{nmax}-nothing.tool"), 0);
    let na = sr(nmax).api.get("nothing").copied().unwrap_or(0);
    let t1 = if nw <= 1.0 && na <= 10 {
        "**met**"
    } else {
        "**missed**"
    };
    let rss_mb = mb(max_rss_of(nmax));
    let t2 = met(rss_mb.parse().unwrap_or(f64::MAX), false, 39.999);
    let t3 = if !wall_grows.is_empty() {
        "**missed**"
    } else if one_size {
        "— (one size)"
    } else {
        "**met**"
    };
    let own_note = if !own_grows.is_empty() {
        "; our tools' own CPU per instance grows too"
    } else if own.iter().any(|(_, v)| *v == "one size") {
        ""
    } else if t3 == "**missed**" {
        " in wall time (the daemons' CPU per request grows; our tools' own CPU per instance does not)"
    } else {
        ""
    };
    let label = if nmax == 1000 {
        String::new()
    } else {
        format!(" (the targets are set for 1000 instances; this run's largest size is {nmax})")
    };
    w!(s, "Targets{label}:");
    w!(s);
    w!(
        s,
        "- incus-push with nothing new over {nmax} instances: {} with {na} API requests (target ≤ 1 s with ≤ 10 requests): {t1}.",
        fmt_s(nw)
    );
    w!(
        s,
        "- Peak RSS at {nmax} instances: {rss_mb} MB, the largest of our tools' (target < 40 MB): {t2}."
    );
    w!(
        s,
        "- No tool's time per instance grows with N ({sizes_text}): {t3}{own_note}."
    );
    w!(s);

    let mut sum = String::new();
    w!(
        sum,
        "| 10. scale: incus-push, nothing new, {nmax} instances | {}, {na} API requests | ≤ 1 s, ≤ 10 requests | {t1} |",
        fmt_s(nw)
    );
    w!(
        sum,
        "| 10. scale: peak RSS of our tools, {nmax} instances | {rss_mb} MB | < 40 MB | {t2} |"
    );
    let result = match t3 {
        "**met**" => "no growth",
        "**missed**" => "grows",
        _ => "—",
    };
    w!(
        sum,
        "| 10. scale: time per instance, {sizes_text} instances | {result} | no growth | {t3} |"
    );
    Section {
        text: s,
        summary: sum,
    }
}
