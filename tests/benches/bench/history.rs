//! The history part: section 9 (archive points).

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};

use crate::Run as _;
use crate::stats::{self, fmt_s, human_bytes, mb};
use crate::{
    ARCHIVE_PROJECT, Bench, Cmd, Record, Section, expect_statuses, loadavg, log, ok, records,
    utc_now,
};

const HISTORY_POOLS: [&str; 2] = ["default", "btrfs"];

#[derive(Debug, Default)]
struct PoolRuns {
    opts: Vec<String>,
    archive_pools: Vec<String>,
    replica_bytes: Vec<f64>,
    du: Vec<f64>,
    /// btrfs total, exclusive and shared bytes of the archive point.
    btrfs: Vec<[f64; 3]>,
}

pub fn run(b: &mut Bench) -> Result<Section> {
    let reps = b.cfg.reps;
    let p = b.project.clone();
    let mb_ = b.cfg.history_mb;
    let date = utc_now();
    let load_start = loadavg();
    for pool in HISTORY_POOLS {
        for r in ["local", "standby"] {
            ensure!(
                b.incus(&["storage", "show", &format!("{r}:{pool}")])
                    .out()
                    .code
                    == 0,
                "case 9: there is no pool {pool} on {r}"
            );
        }
    }
    b.archive_existed = Some(
        b.incus(&["project", "show", &format!("standby:{ARCHIVE_PROJECT}")])
            .out()
            .code
            == 0,
    );

    // MB of random data on POOL, stopped, snapshots s1 and s2, replicated to the standby's
    // pool POOL; then, on the primary only, s1 deleted and s3 taken.
    let setup = |b: &mut Bench, name: &str, pool: &str| -> Result<()> {
        b.history_names.push(name.to_string());
        b.drop_archives_of(name)?; // left by an interrupted run
        b.launch(name, &["-s", pool])?;
        b.exec(
            name,
            &format!("dd if=/dev/urandom of=/root/random bs=1M count={mb_} 2>/dev/null"),
        )?;
        b.exec(name, "sync")?;
        b.stop(name)?;
        ok(b.bi(&["snapshot", "create", name, "s1"]))?;
        ok(b.bi(&["snapshot", "create", name, "s2"]))?;
        let out = b
            .tool("incus-push")
            .args(["--project", &p, "--to", "standby", "--storage", pool, name])
            .out();
        expect_statuses(&out, 1, &["copied"]).context("case 9 (setup)")?;
        ensure!(
            b.volume_dir("standby", pool, name, None).is_dir(),
            "case 9: the replica of {name} is not on the standby's pool {pool}"
        );
        ok(b.bi(&["snapshot", "delete", name, "s1"]))?;
        ok(b.bi(&["snapshot", "create", name, "s3"]))?;
        Ok(())
    };
    // The push refreshed the replica to s2 and s3, and kept s1 as an archive point (archive
    // side) or none (plain side).
    let check = |b: &Bench, archive: bool, name: &str, out: &incus_standby_tests::Output| {
        let side = if archive { "archive" } else { "plain" };
        expect_statuses(out, 1, &["refreshed"]).with_context(|| format!("case 9 ({side})"))?;
        let snaps = b.snapshot_names("standby", name, &p)?;
        ensure!(
            snaps == ["s2", "s3"],
            "case 9 ({side}): the replica of {name} has snapshots {snaps:?}, not s2 s3"
        );
        let archived_rec: Vec<String> = records(out)?
            .into_iter()
            .filter_map(|r| match r {
                Record::Push { archived, .. } => Some(archived),
                _ => None,
            })
            .flatten()
            .collect();
        let archived = b.archives_of(name)?;
        let expected = format!("{name}--s1");
        if archive {
            ensure!(
                archived_rec == [expected.clone()],
                "case 9: the push record of {name} does not list {expected} as archived: {}",
                out.stdout
            );
            ensure!(
                archived == [expected.clone()],
                "case 9: archive points of {name} on the standby: {archived:?}, not {expected}"
            );
            ensure!(
                b.snapshot_names("standby", &expected, ARCHIVE_PROJECT)?
                    .is_empty(),
                "case 9: the archive point {expected} has snapshots"
            );
        } else {
            ensure!(
                archived_rec.is_empty(),
                "case 9: the plain push of {name} archived something: {}",
                out.stdout
            );
            ensure!(
                archived.is_empty(),
                "case 9: the plain push of {name} left archive points: {archived:?}"
            );
        }
        anyhow::Ok(())
    };

    let mut pools = BTreeMap::new();
    for pool in HISTORY_POOLS {
        let key = format!("c9-{pool}");
        let mut pr = PoolRuns::default();
        let driver = b.pool_driver("standby", pool)?;
        pr.opts = vec!["--archive-keep-last".into(), "5".into()];
        if driver == "dir" {
            pr.opts.push("--archive-full-copies".into());
        }
        for rep in 1..=reps {
            let (a, pl) = (format!("h-{pool}-a-{rep}"), format!("h-{pool}-p-{rep}"));
            log(format!(
                "case 9 (archive point, {mb_} MB on pool {pool}), run {rep}/{reps}: making {a} and {pl}, replicated"
            ));
            setup(b, &a, pool)?;
            setup(b, &pl, pool)?;
            // The two sides alternate which goes first.
            let order = if rep % 2 == 1 {
                [true, false]
            } else {
                [false, true]
            };
            for archive in order {
                let (label, name) = if archive {
                    ("archive", &a)
                } else {
                    ("plain", &pl)
                };
                let mut args = vec!["--to", "standby", "--project", &p];
                if archive {
                    args.extend(pr.opts.iter().map(String::as_str));
                }
                args.push(name);
                let out = b.timed(&format!("{key}.{label}"), |b| {
                    Ok(b.rss(&format!("history-{label}"), "incus-push", &args, &[]))
                })?;
                check(b, archive, name, &out)?;
            }
            // The disk cost of the archive point, next to the replica's. (Looked for on every
            // pool: Incus decides where the clone goes.)
            let pools_dir = b.lab_dir.join("standby/storage-pools");
            let mut found = None;
            for e in std::fs::read_dir(&pools_dir)?.flatten() {
                let d = e
                    .path()
                    .join(format!("containers/{ARCHIVE_PROJECT}_{a}--s1"));
                if d.is_dir() {
                    found = Some((e.file_name().to_string_lossy().into_owned(), d));
                    break;
                }
            }
            let (arch_pool, arch) = found.with_context(|| {
                format!(
                    "case 9: no volume {} for the archive point {a}--s1",
                    b.volume_dir("standby", "*", &format!("{a}--s1"), Some(ARCHIVE_PROJECT))
                        .display()
                )
            })?;
            let arch_driver = b.pool_driver("standby", &arch_pool)?;
            pr.archive_pools.push(arch_pool);
            pr.replica_bytes
                .push(b.du_sb(&b.volume_dir("standby", pool, &a, None))?);
            pr.du.push(b.du_sb(&arch)?);
            if arch_driver == "btrfs" {
                ok(Cmd::new("sync"))?;
                // Total, exclusive and shared bytes of the archive point's subvolume.
                let out = Cmd::new("btrfs")
                    .args(["filesystem", "du", "-s", "--raw"])
                    .arg(&arch)
                    .out();
                let nums: Vec<f64> = out
                    .stdout
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .split_whitespace()
                    .take(3)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                match nums[..] {
                    [t, e, s] if out.code == 0 => pr.btrfs.push([t, e, s]),
                    _ => log(format!(
                        "  btrfs filesystem du failed: {}",
                        crate::head(&out.stderr, 300)
                    )),
                }
            }
            let btrfs_note = pr
                .btrfs
                .last()
                .map(|[t, e, s]| format!(", btrfs total/exclusive/shared: {t} {e} {s}"))
                .unwrap_or_default();
            log(format!(
                "  archive point {a}--s1: {} bytes (du -sb){btrfs_note}",
                pr.du.last().copied().unwrap_or(0.0)
            ));
            b.drop_archives_of(&a)?;
            b.drop_named(&a)?;
            b.drop_named(&pl)?;
        }
        pools.insert(pool, pr);
    }
    let load_end = loadavg();
    Ok(report(b, &pools, &date, &load_start, &load_end))
}

fn report(
    b: &Bench,
    pools: &BTreeMap<&str, PoolRuns>,
    date: &str,
    load_start: &str,
    load_end: &str,
) -> Section {
    let (p, reps, mb_) = (&b.project, b.cfg.reps, b.cfg.history_mb);
    let empty = PoolRuns::default();
    let runs = |pool: &str| pools.get(pool).unwrap_or(&empty);
    let mut s = String::new();
    w!(s, "## 9. Standby history: the cost of one archive point");
    w!(s);
    w!(
        s,
        "Measured {date}, {reps} run(s) per measurement; load average (1, 5, 15 min) {load_start} when section 9 started, {load_end} when it ended."
    );
    w!(s);
    w!(
        s,
        "Per run and pool, two instances made the same way, `h-POOL-a-N` and `h-POOL-p-N`: each holds {mb_} MB from /dev/urandom (`dd` inside it), created with `incus launch busybox NAME -s POOL` on the primary and stopped, with two snapshots `s1` and `s2`, replicated with `incus-push --project {p} --to standby --storage POOL` (the replica on the standby's pool of the same name); then, on the primary, `s1` is deleted and `s3` taken (none of it timed)."
    );
    w!(s, "Timed, the two sides alternating which goes first:");
    w!(s);
    w!(
        s,
        "- with an archive point: `incus-push --to standby --project {p} --archive-keep-last 5 [--archive-full-copies] h-POOL-a-N` (`--archive-full-copies` on dir only, where incus-push refuses without it). Before the refresh drops the replica's `s1`, it clones that snapshot into the project `{ARCHIVE_PROJECT}` on the standby (instance `h-POOL-a-N--s1`), then refreshes;"
    );
    w!(
        s,
        "- plain: `incus-push --to standby --project {p} h-POOL-p-N`: the refresh alone (it sends `s3` and drops `s1`)."
    );
    w!(s);
    w!(
        s,
        "After every push the benchmark checks that it reported `refreshed`, that the replica holds `s2 s3`, and that exactly one archive point (`NAME--s1`, without snapshots) exists for the first side and none for the second."
    );
    w!(
        s,
        "The disk cost of the archive point is measured right after its push: `du -sb` of its volume directory on the standby (apparent size: every file counted in full), and on btrfs `btrfs filesystem du -s --raw` of its subvolume, whose *exclusive* bytes are what the archive point holds that nothing else on the pool shares (what deleting it would free)."
    );
    w!(s);
    w!(
        s,
        "| Pool | Push | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) |"
    );
    w!(s, "|---|---|---|---|---|---|");
    for pool in HISTORY_POOLS {
        let label = b.pool_label(pool);
        w!(
            s,
            "| {label} | with an archive point (`{}`) | {} |",
            runs(pool).opts.join(" "),
            b.cells(&format!("c9-{pool}.archive"))
        );
        w!(
            s,
            "| {label} | plain | {} |",
            b.cells(&format!("c9-{pool}.plain"))
        );
    }
    w!(s);
    w!(
        s,
        "| Pool | Replica (`du -sb`, without its snapshots) | Archive point: `du -sb` | Archive point: btrfs total / exclusive / shared | Archive point on pool | Extra wall time of the push (medians) |"
    );
    w!(s, "|---|---|---|---|---|---|");
    let btrfs_col =
        |pr: &PoolRuns, i: usize| -> Vec<f64> { pr.btrfs.iter().map(|v| v[i]).collect() };
    for pool in HISTORY_POOLS {
        let key = format!("c9-{pool}");
        let pr = runs(pool);
        let (wa, wp) = (
            b.med(&format!("{key}.archive"), 0),
            b.med(&format!("{key}.plain"), 0),
        );
        let extra = format!(
            "{:+.3} s ({:.2}x the plain push)",
            wa - wp,
            if wp > 0.0 { wa / wp } else { 0.0 }
        );
        let excl = if pr.btrfs.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{} / **{}** / {} (exclusive in all runs: {} bytes)",
                human_bytes(stats::median(&btrfs_col(pr, 0))),
                human_bytes(stats::median(&btrfs_col(pr, 1))),
                human_bytes(stats::median(&btrfs_col(pr, 2))),
                stats::all_values(&btrfs_col(pr, 1), 0)
            )
        };
        let mut arch_pools = pr.archive_pools.clone();
        arch_pools.sort();
        arch_pools.dedup();
        w!(
            s,
            "| {} | {} | {} (all runs: {} bytes) | {excl} | `{}` | {extra} |",
            b.pool_label(pool),
            human_bytes(stats::median(&pr.replica_bytes)),
            human_bytes(stats::median(&pr.du)),
            stats::all_values(&pr.du, 0),
            arch_pools.join("`, `")
        );
    }
    w!(s);
    w!(
        s,
        "Peak RSS of incus-push: {} MB with the archive options, {} MB without.",
        mb(b.max_rss(&["history-archive"])),
        mb(b.max_rss(&["history-plain"]))
    );
    w!(s);
    for pool in HISTORY_POOLS {
        let key = format!("c9-{pool}");
        let pr = runs(pool);
        let label = b.pool_label(pool);
        let (ca, cp) = (
            b.col(&format!("{key}.archive"), 0),
            b.col(&format!("{key}.plain"), 0),
        );
        let (a, pl) = (stats::median(&ca), stats::median(&cp));
        let (la, ha, lp, hp) = (
            stats::min(&ca),
            stats::max(&ca),
            stats::min(&cp),
            stats::max(&cp),
        );
        let mut l = format!(
            "On {label} the push with an archive point took {a:.3} s against {pl:.3} s for the plain push (medians, {:+.3} s)",
            a - pl
        );
        if reps < 2 {
            l += "; one run each, too few to tell the difference from noise";
        } else if la <= hp && lp <= ha {
            l += &format!(
                "; the runs overlap ({la:.3}–{ha:.3} s against {lp:.3}–{hp:.3} s): the difference is within the run-to-run noise of this machine"
            );
        } else {
            l +=
                &format!("; the runs do not overlap ({la:.3}–{ha:.3} s against {lp:.3}–{hp:.3} s)");
        }
        l += ". ";
        if pr.btrfs.is_empty() {
            let (d, r) = (stats::median(&pr.du), stats::median(&pr.replica_bytes));
            l += &format!(
                "The archive point is a full copy of the snapshot: {:.1} MB on the standby's disk, {:.0} % of the replica's own {:.1} MB; every archive point kept costs that much again, which is why incus-push asks for `--archive-full-copies` there.",
                d / 1_048_576.0,
                if r > 0.0 { 100.0 * d / r } else { 0.0 },
                r / 1_048_576.0
            );
        } else {
            let (t, e) = (
                stats::median(&btrfs_col(pr, 0)),
                stats::median(&btrfs_col(pr, 1)),
            );
            l += &format!(
                "The archive point is a copy-on-write clone (a btrfs snapshot of the replica's snapshot subvolume): of the {:.1} MB it shows, {} are its own, the rest is shared with the replica and its snapshots, which hold the same {mb_} MB; it costs next to nothing on disk until the instance's data changes (then the replica's new blocks are the cost, the archive point keeps the old ones).",
                t / 1_048_576.0,
                human_bytes(e)
            );
        }
        w!(s, "{l}");
    }
    w!(s);

    let mut sum = String::new();
    for pool in HISTORY_POOLS {
        let key = format!("c9-{pool}");
        let pr = runs(pool);
        let (wa, wp) = (
            b.med(&format!("{key}.archive"), 0),
            b.med(&format!("{key}.plain"), 0),
        );
        let excl = if pr.btrfs.is_empty() {
            format!("{} on disk (`du -sb`)", human_bytes(stats::median(&pr.du)))
        } else {
            format!(
                "{} exclusive on disk (btrfs)",
                human_bytes(stats::median(&btrfs_col(pr, 1)))
            )
        };
        w!(
            sum,
            "| 9. one archive point, {mb_} MB, {} | push {} against {} without ({:+.3} s); {excl} | — | — |",
            b.pool_label(pool),
            fmt_s(wa),
            fmt_s(wp),
            wa - wp
        );
    }
    Section {
        text: s,
        summary: sum,
    }
}
