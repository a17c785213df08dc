//! The volumes part: section 11. An instance with a custom volume (100 MB of random data)
//! on the `dir` pool `default` and on the `btrfs` pool `btrfs`:
//!
//! - its first full copy to the standby, and a push with one new snapshot (a few MB of the
//!   volume changed before each), ours (`incus-snap NAME | incus-push --to standby`) against
//!   the `incus` CLI doing the same (`incus snapshot create`, `incus storage volume snapshot
//!   create`, `incus storage volume copy [--refresh]`, `incus copy [--refresh] --stateless`);
//! - a drill of its replica, `incus-failover drill` (with `--allow-full-copy` on dir) against
//!   the same by hand with the CLI (copy the volume and the instance on the standby, start,
//!   stop, delete).
//!
//! A run without `--only` measures it too: it is cheap (a few minutes with 3 runs: two
//! instances of 100 MB per run and pool, made and deleted again), unlike the scale part.
//!
//! The instances live in the bench project, their volumes in the project that holds the bench
//! project's volumes (the bench project itself, made with `features.storage.volumes=true`;
//! else `default`, where only volumes marked [`VOLUME_MARK`] are ever deleted). Everything a run
//! made is deleted after it, on both servers (clones of a drill included); on an error the
//! bench's end deletes the project with its instances and volumes.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::Run as _;
use crate::stats::{self, fmt_s, mb, ratio};
use crate::{
    Bench, Cmd, Record, Section, VOLUME_MARK, first_error, head, loadavg, log, next_second, ok,
    records, utc_now,
};

const POOLS: [&str; 2] = ["default", "btrfs"];
/// The disk device that attaches the volume, and where.
const DEVICE: &str = "data";
const MOUNT: &str = "/data";

/// The two measured sides: ours and the CLI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Tool,
    Cli,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Tool => "tool",
            Side::Cli => "cli",
        }
    }
}

/// The CLI's steps, in the order they run.
const PUSH_STEPS: [&str; 3] = ["snapshots", "volume copy", "instance copy"];
const DRILL_STEPS: [&str; 6] = [
    "volume copy",
    "instance copy",
    "start",
    "stop",
    "delete",
    "volume delete",
];

/// What one pool's runs noted, besides the timed samples of the bench.
#[derive(Debug, Default)]
struct PoolRuns {
    driver: String,
    /// "first" or "incr" → STEP → seconds, for the CLI side.
    steps: BTreeMap<(String, String), Vec<f64>>,
    /// "first" or "incr" → incus-push's own `seconds` in its record.
    push_seconds: BTreeMap<String, Vec<f64>>,
    /// "first" or "incr" → the wall time of incus-snap (GNU time).
    snap_seconds: BTreeMap<String, Vec<f64>>,
    drill_seconds: Vec<f64>,
    drill_to_running: Vec<f64>,
    drill_full_copy: Vec<bool>,
}

impl PoolRuns {
    fn step(&mut self, case: &str, step: &str, seconds: f64) {
        self.steps
            .entry((case.to_string(), step.to_string()))
            .or_default()
            .push(stats::round(seconds, 3));
    }

    fn step_med(&self, case: &str, step: &str) -> f64 {
        self.steps
            .get(&(case.to_string(), step.to_string()))
            .map_or(0.0, |v| stats::median(v))
    }
}

/// The sha256 of a file as a lab daemon sees it (in its own mount namespace: a 7.0 daemon's
/// btrfs pool is mounted there only).
fn sha256_in(b: &Bench, server: &str, path: &str) -> Result<String> {
    let pid = if server == "primary" {
        &b.daemon_pids[0]
    } else {
        &b.daemon_pids[1]
    };
    let out = ok(Cmd::new("nsenter").args(["-t", pid.as_str(), "-m", "-r", "sha256sum", path]))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum {path} on {server}: {out}"))
}

/// Runs a command, returning how long it took.
fn step(cmd: Cmd) -> Result<f64> {
    let t0 = Instant::now();
    ok(cmd)?;
    Ok(t0.elapsed().as_secs_f64())
}

pub fn run(b: &mut Bench) -> Result<Section> {
    let reps = b.cfg.reps;
    let rounds = b.cfg.volume_rounds;
    let p = b.project.clone();
    let size = b.cfg.volume_mb;
    let change = b.cfg.volume_change_mb.min(size);
    let date = utc_now();
    let load_start = loadavg();
    let started = Instant::now();
    for pool in POOLS {
        for r in ["local", "standby"] {
            ensure!(
                b.incus(&["storage", "show", &format!("{r}:{pool}")])
                    .out()
                    .code
                    == 0,
                "case 11: there is no pool {pool} on {r}"
            );
        }
    }
    let vp = b.volume_project("local")?;
    ensure!(
        b.volume_project("standby")? == vp,
        "case 11: the bench project keeps its volumes in different projects on the two servers"
    );

    // The instance NAME and its volume NAME-data, in the pool; running, with SIZE MB of
    // random data in the volume.
    let make = |b: &Bench, name: &str, pool: &str| -> Result<()> {
        let vol = format!("{name}-data");
        ok(b.incus(&[
            "storage",
            "volume",
            "create",
            "--project",
            &vp,
            &format!("local:{pool}"),
            &vol,
            &format!("{VOLUME_MARK}=true"),
        ]))?;
        b.launch(name, &["-s", pool])?;
        ok(b.bi(&[
            "config",
            "device",
            "add",
            name,
            DEVICE,
            "disk",
            &format!("pool={pool}"),
            &format!("source={vol}"),
            &format!("path={MOUNT}"),
        ]))?;
        b.exec(
            name,
            &format!("dd if=/dev/urandom of={MOUNT}/blob bs=1M count={size} 2>/dev/null && sync"),
        )?;
        Ok(())
    };
    // Deletes the instances and volumes of a run, on both servers (clones included).
    let clear = |b: &Bench, names: &[&str]| -> Result<()> {
        for n in names {
            b.drop_named(n)?;
        }
        for r in ["local", "standby"] {
            b.drop_volumes(r, |v| {
                names.iter().any(|n| v.starts_with(&format!("{n}-data")))
            })?;
        }
        Ok(())
    };
    let vol_snaps = |b: &Bench, remote: &str, pool: &str, vol: &str| -> Result<Vec<String>> {
        let v = b.query(
            remote,
            &format!("/1.0/storage-pools/{pool}/volumes/custom/{vol}/snapshots?project={vp}"),
        )?;
        let mut names: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|u| Some(u.split('?').next()?.rsplit('/').next()?.to_string()))
            .collect();
        names.sort();
        Ok(names)
    };
    // The replica holds every snapshot of the source (instance and volume), its root disk
    // is on the pool, and (`data`) its volume holds the source's data.
    let check = |b: &Bench, what: &str, name: &str, pool: &str, data: bool| -> Result<()> {
        let vol = format!("{name}-data");
        let (src, rep) = (
            b.snapshot_names("local", name, &p)?,
            b.snapshot_names("standby", name, &p)?,
        );
        ensure!(
            src == rep,
            "case 11 ({what}): standby:{name} has snapshots {rep:?}, its source {src:?}"
        );
        let (src, rep) = (
            vol_snaps(b, "local", pool, &vol)?,
            vol_snaps(b, "standby", pool, &vol)?,
        );
        ensure!(
            !src.is_empty() && src == rep,
            "case 11 ({what}): the volume standby:{pool}/{vol} has snapshots {rep:?}, its source {src:?}"
        );
        let inst = b.query("standby", &format!("/1.0/instances/{name}?project={p}"))?;
        let root = inst
            .pointer("/expanded_devices/root/pool")
            .and_then(Value::as_str)
            .unwrap_or_default();
        ensure!(
            root == pool,
            "case 11 ({what}): the replica standby:{name} has its root disk on pool {root:?}, not {pool}"
        );
        if data {
            let path = |server: &str| {
                format!(
                    "{}/{server}/storage-pools/{pool}/custom/{vp}_{vol}/blob",
                    b.lab_dir.display()
                )
            };
            let (a, z) = (
                sha256_in(b, "primary", &path("primary"))?,
                sha256_in(b, "standby", &path("standby"))?,
            );
            ensure!(
                a == z,
                "case 11 ({what}): the replica volume of {name} does not hold the source's data"
            );
        }
        Ok(())
    };

    let mut pools = BTreeMap::new();
    for pool in POOLS {
        let key = format!("c11-{pool}");
        let mut pr = PoolRuns {
            driver: b.pool_driver("standby", pool)?,
            ..PoolRuns::default()
        };
        let full_copy = pr.driver == "dir";
        for rep in 1..=reps {
            let (t, c) = (format!("vol-{pool}-t{rep}"), format!("vol-{pool}-c{rep}"));
            log(format!(
                "case 11 (instance with a {size} MB volume on pool {pool}), run {rep}/{reps}: making {t} and {c}"
            ));
            clear(b, &[&t, &c])?; // left by an interrupted run
            make(b, &t, pool)?;
            make(b, &c, pool)?;
            // The two sides alternate which goes first.
            let order = if rep % 2 == 1 {
                [Side::Tool, Side::Cli]
            } else {
                [Side::Cli, Side::Tool]
            };
            for round in 0..=rounds {
                let case = if round == 0 { "first" } else { "incr" };
                if round > 0 {
                    let seek = (round as u64 * 10) % (size - change).max(1);
                    for n in [&t, &c] {
                        b.exec(
                            n,
                            &format!(
                                "dd if=/dev/urandom of={MOUNT}/blob bs=1M count={change} seek={seek} conv=notrunc 2>/dev/null && sync"
                            ),
                        )?;
                    }
                }
                next_second();
                for side in order {
                    let k = format!("{key}.{case}.{}", side.key());
                    match side {
                        Side::Tool => {
                            let snap_label = format!("vol-snap-{pool}-{case}");
                            let out = b.timed(&k, |b| {
                                b.pipeline(
                                    (Some(&snap_label), "incus-snap", &["--project", &p, &t]),
                                    (
                                        Some("vol-push"),
                                        "incus-push",
                                        &["--to", "standby", "--storage", pool],
                                    ),
                                )
                            })?;
                            let recs = records(&out)?;
                            let want = if round == 0 { "copied" } else { "refreshed" };
                            let ok_rec = recs.iter().find_map(|r| match r {
                                Record::Push {
                                    status,
                                    volumes,
                                    seconds,
                                    snapshots,
                                    ..
                                } if status == want
                                    && volumes.len() == 1
                                    && volumes.iter().all(|v| v.status == want)
                                    && (round == 0
                                        || (snapshots.len() == 1
                                            && volumes.iter().all(|v| v.snapshots.len() == 1))) =>
                                {
                                    Some(*seconds)
                                }
                                _ => None,
                            });
                            let Some(secs) = ok_rec else {
                                bail!(
                                    "case 11: incus-snap {t} | incus-push did not report {want} (one new snapshot of the instance and of its volume): {}",
                                    head(&out.stdout, 800)
                                );
                            };
                            pr.push_seconds
                                .entry(case.to_string())
                                .or_default()
                                .push(secs);
                            if let Some(&(e, _)) = b.rss.get(&snap_label).and_then(|v| v.last()) {
                                pr.snap_seconds.entry(case.to_string()).or_default().push(e);
                            }
                            check(b, "ours", &t, pool, round == rounds)?;
                        }
                        Side::Cli => {
                            let vol = format!("{c}-data");
                            let snap = format!("s{round}");
                            let src_vol = format!("local:{pool}/{vol}");
                            let dst_vol = format!("standby:{pool}/{vol}");
                            let dst = format!("standby:{c}");
                            let steps = b.timed(&k, |b| {
                                let t0 = Instant::now();
                                ok(b.bi(&["snapshot", "create", &c, &snap]))?;
                                ok(b.incus(&[
                                    "storage",
                                    "volume",
                                    "snapshot",
                                    "create",
                                    "--project",
                                    &vp,
                                    &format!("local:{pool}"),
                                    &vol,
                                    &snap,
                                ]))?;
                                let snaps = t0.elapsed().as_secs_f64();
                                let mut vcopy = b.incus(&[
                                    "storage",
                                    "volume",
                                    "copy",
                                    "--project",
                                    &vp,
                                    "--target-project",
                                    &vp,
                                    &src_vol,
                                    &dst_vol,
                                ]);
                                let mut icopy = b.bi(&[
                                    "copy",
                                    "-q",
                                    "--target-project",
                                    &p,
                                    &c,
                                    &dst,
                                    "--stateless",
                                ]);
                                if round > 0 {
                                    vcopy = vcopy.arg("--refresh");
                                    icopy = icopy.arg("--refresh");
                                }
                                // The volume first: a new instance's devices must exist there.
                                let v = step(vcopy)?;
                                let i = step(icopy)?;
                                Ok([snaps, v, i])
                            })?;
                            for (name, s) in PUSH_STEPS.iter().zip(steps) {
                                pr.step(case, name, s);
                            }
                            check(b, "CLI", &c, pool, round == rounds)?;
                        }
                    }
                }
            }

            // The drills, of the replicas just made.
            for side in order {
                let k = format!("{key}.drill.{}", side.key());
                match side {
                    Side::Tool => {
                        let mut args = vec!["drill", "--project", &p, "--standby", "standby"];
                        if full_copy {
                            args.push("--allow-full-copy");
                        }
                        args.push(&t);
                        let out =
                            b.timed(&k, |b| Ok(b.rss("vol-drill", "incus-failover", &args, &[])))?;
                        let recs = records(&out)?;
                        let drill = recs.iter().find_map(|r| match r {
                            Record::Drill {
                                ok: true,
                                seconds_to_running: Some(to_running),
                                full_copy,
                                volumes,
                                seconds,
                            } if volumes.len() == 1 => Some((*seconds, *to_running, *full_copy)),
                            _ => None,
                        });
                        let Some((secs, to_running, fc)) = drill else {
                            bail!(
                                "case 11: incus-failover drill {t} failed (exit {}): {} {}",
                                out.code,
                                first_error(&recs).unwrap_or_default(),
                                head(&out.stdout, 600)
                            );
                        };
                        ensure!(
                            out.code == 0,
                            "case 11: incus-failover drill {t} exited {}: {}",
                            out.code,
                            out.stderr.trim()
                        );
                        pr.drill_seconds.push(secs);
                        pr.drill_to_running.push(to_running);
                        pr.drill_full_copy.push(fc);
                    }
                    Side::Cli => {
                        let vol = format!("{c}-data");
                        let (x, xvol) = (format!("{c}-x"), format!("{c}-data-x"));
                        let sx = format!("standby:{x}");
                        let steps = b.timed(&k, |b| {
                            let v = step(b.incus(&[
                                "storage",
                                "volume",
                                "copy",
                                "--project",
                                &vp,
                                "--target-project",
                                &vp,
                                "--volume-only",
                                &format!("standby:{pool}/{vol}"),
                                &format!("standby:{pool}/{xvol}"),
                            ]))?;
                            let i = step(b.bi(&[
                                "copy",
                                "-q",
                                "--target-project",
                                &p,
                                "--instance-only",
                                "--device",
                                &format!("{DEVICE},source={xvol}"),
                                &format!("standby:{c}"),
                                &sx,
                            ]))?;
                            let start = step(b.bi(&["start", &sx]))?;
                            let stop = step(b.bi(&["stop", "--force", &sx]))?;
                            let del = step(b.bi(&["delete", &sx]))?;
                            let vdel = step(b.incus(&[
                                "storage",
                                "volume",
                                "delete",
                                "--project",
                                &vp,
                                &format!("standby:{pool}"),
                                &xvol,
                            ]))?;
                            Ok([v, i, start, stop, del, vdel])
                        })?;
                        for (name, s) in DRILL_STEPS.iter().zip(steps) {
                            pr.step("drill", name, s);
                        }
                    }
                }
            }
            // Neither drill left anything behind; the replicas are still stopped.
            let left: Vec<String> = b
                .list_names("standby")?
                .into_iter()
                .filter(|n| n.starts_with(&format!("{t}-")) || n.starts_with(&format!("{c}-")))
                .collect();
            ensure!(
                left.is_empty(),
                "case 11: the drills left {left:?} on the standby"
            );
            for n in [&t, &c] {
                ensure!(
                    b.status_of(&format!("standby:{n}"))? == "STOPPED",
                    "case 11: the replica standby:{n} is not stopped after its drill"
                );
            }
            clear(b, &[&t, &c])?;
        }
        pools.insert(pool, pr);
    }
    let load_end = loadavg();
    let took = started.elapsed().as_secs();
    let version = ok(b.incus(&["version", "standby:"]))
        .map(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("Server version: "))
                .unwrap_or("unknown")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "unknown".into());
    let run = RunInfo {
        date,
        load_start,
        load_end,
        took,
        version,
        vp,
    };
    Ok(report(b, &pools, &run))
}

struct RunInfo {
    date: String,
    load_start: String,
    load_end: String,
    took: u64,
    version: String,
    vp: String,
}

/// "A s against B s (ratio)": how ours compares with the CLI.
fn compare(b: &Bench, key: &str) -> String {
    let (tool, cli) = (format!("{key}.tool"), format!("{key}.cli"));
    let (wt, wc) = (b.med(&tool, 0), b.med(&cli, 0));
    let (ct, cc) = (b.col(&tool, 0), b.col(&cli, 0));
    let mut l = format!("ours {} against {} for the CLI", fmt_s(wt), fmt_s(wc));
    if wt > 0.0 && wc > 0.0 {
        if wt <= wc {
            l += &format!(" (**{:.2}x faster**)", ratio(wc, wt));
        } else {
            l += &format!(" (**{:.2}x slower**)", ratio(wt, wc));
        }
    }
    if ct.len() >= 2 && stats::min(&ct) <= stats::max(&cc) && stats::min(&cc) <= stats::max(&ct) {
        l += &format!(
            "; the runs overlap ({:.3}–{:.3} s against {:.3}–{:.3} s)",
            stats::min(&ct),
            stats::max(&ct),
            stats::min(&cc),
            stats::max(&cc)
        );
    }
    l
}

fn report(b: &Bench, pools: &BTreeMap<&str, PoolRuns>, run: &RunInfo) -> Section {
    let (p, reps, size) = (&b.project, b.cfg.reps, b.cfg.volume_mb);
    let (change, rounds) = (b.cfg.volume_change_mb, b.cfg.volume_rounds);
    let vp = &run.vp;
    let empty = PoolRuns::default();
    let runs = |pool: &str| pools.get(pool).unwrap_or(&empty);
    let mut s = String::new();
    w!(
        s,
        "## 11. Custom volumes: push and drill of an instance with a {size} MB volume"
    );
    w!(s);
    w!(
        s,
        "Measured {} on Incus {} (both lab daemons; client {}), {reps} run(s) per pool; load average (1, 5, 15 min) {} when section 11 started, {} when it ended. The whole part took {} min {} s (making and deleting the instances included). The Incus of this section is the one named here; the Machine section names that of the last run without `--only`.",
        run.date,
        run.version,
        ok(b.incus(&["version"]))
            .ok()
            .and_then(|v| v
                .lines()
                .find_map(|l| l.strip_prefix("Client version: "))
                .map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into()),
        run.load_start,
        run.load_end,
        run.took / 60,
        run.took % 60
    );
    w!(s);
    w!(
        s,
        "Per run and pool, two instances made the same way (not timed), one for each side: a running busybox container `vol-POOL-tN` (ours) or `vol-POOL-cN` (CLI), made with `incus launch busybox NAME -s POOL` in the project `{p}`, with a custom volume `NAME-data` on the same pool (`incus storage volume create`, in the project `{vp}`) attached at `{MOUNT}` as the disk device `{DEVICE}`, and {size} MB from /dev/urandom written into it (`dd if=/dev/urandom of={MOUNT}/blob bs=1M count={size}` through exec, then `sync`)."
    );
    w!(
        s,
        "Each side then copies its instance to the standby once (the first full copy), and {rounds} time(s) more with one new snapshot, {change} MB of the volume's file overwritten with new random data before each (`dd … conv=notrunc`, both instances, not timed). The two sides alternate which goes first."
    );
    w!(s);
    w!(
        s,
        "- Ours: `incus-snap --project {p} NAME | incus-push --to standby --storage POOL`. incus-snap snapshots the instance and its volume under one name; incus-push copies (then refreshes) the volume with its snapshots and then the instance, restores the replica volume and the replica to that snapshot, and writes their inert configuration and markers."
    );
    w!(
        s,
        "- CLI: `incus snapshot create NAME sK; incus storage volume snapshot create POOL NAME-data sK; incus storage volume copy local:POOL/NAME-data standby:POOL/NAME-data [--refresh]; incus copy NAME standby:NAME --stateless [--refresh]` (`--project`, `--target-project` as needed; `--refresh` after the first copy; the volume first, since Incus checks a new instance's devices). No restore: the replica holds the source's state as copied, its configuration is the source's."
    );
    w!(
        s,
        "- Checked after every push: the replica and its volume have every snapshot of their sources, the replica's root disk is on POOL; after the last one, the replica volume's file has the source's sha256 (read inside each daemon's mount namespace)."
    );
    w!(s);
    w!(
        s,
        "| Pool | Case | Side | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) |"
    );
    w!(s, "|---|---|---|---|---|---|---|");
    for pool in POOLS {
        let label = b.pool_label(pool);
        for (case, what) in [("first", "first full copy"), ("incr", "one new snapshot")] {
            let key = format!("c11-{pool}.{case}");
            w!(
                s,
                "| {label} | {what} | `incus-snap \\| incus-push` | {} |",
                b.cells(&format!("{key}.tool"))
            );
            w!(
                s,
                "| {label} | {what} | CLI sequence | {} |",
                b.cells(&format!("{key}.cli"))
            );
        }
    }
    w!(s);
    w!(
        s,
        "Where the time goes (medians): incus-snap's own wall time and incus-push's `seconds` in its `push` record; the CLI's steps timed one by one."
    );
    w!(s);
    w!(
        s,
        "| Pool | Case | incus-snap | incus-push (record) | CLI: 2 snapshots | CLI: volume copy | CLI: instance copy |"
    );
    w!(s, "|---|---|---|---|---|---|---|");
    for pool in POOLS {
        let pr = runs(pool);
        for (case, what) in [("first", "first full copy"), ("incr", "one new snapshot")] {
            let med =
                |m: &BTreeMap<String, Vec<f64>>| m.get(case).map_or(0.0, |v| stats::median(v));
            w!(
                s,
                "| {} | {what} | {} | {} | {} | {} | {} |",
                b.pool_label(pool),
                fmt_s(med(&pr.snap_seconds)),
                fmt_s(med(&pr.push_seconds)),
                fmt_s(pr.step_med(case, PUSH_STEPS[0])),
                fmt_s(pr.step_med(case, PUSH_STEPS[1])),
                fmt_s(pr.step_med(case, PUSH_STEPS[2]))
            );
        }
    }
    w!(s);
    w!(
        s,
        "Peak RSS: incus-snap {} MB, incus-push {} MB, incus-failover drill {} MB.",
        mb(b.max_rss(&[
            "vol-snap-default-first",
            "vol-snap-default-incr",
            "vol-snap-btrfs-first",
            "vol-snap-btrfs-incr"
        ])),
        mb(b.max_rss(&["vol-push"])),
        mb(b.max_rss(&["vol-drill"]))
    );
    w!(s);
    w!(
        s,
        "**Drill.** After the pushes of each run, the replica of each side is drilled on the standby, the two sides alternating which goes first:"
    );
    w!(s);
    w!(
        s,
        "- Ours: `incus-failover drill --project {p} --standby standby vol-POOL-tN` (`--allow-full-copy` on dir, where it refuses without). It clones the replica's volume (`NAME-data-drill-NAME`, without snapshots) and the replica (`NAME-drill`, without snapshots, its NICs removed, the volume device pointed at the clone), starts the clone, waits until it runs, stops it by force, deletes both and keeps the result on the replica."
    );
    w!(
        s,
        "- By hand with the CLI, on the CLI's replica: `incus storage volume copy standby:POOL/NAME-data standby:POOL/NAME-data-x --volume-only; incus copy standby:NAME standby:NAME-x --instance-only --device {DEVICE},source=NAME-data-x; incus start standby:NAME-x; incus stop --force standby:NAME-x; incus delete standby:NAME-x; incus storage volume delete standby:POOL NAME-data-x` (the lab's profile has no NIC, so there is none to remove)."
    );
    w!(
        s,
        "- \"To running\": ours is the drill record's `seconds_to_running` (from the start request to a running clone); the CLI's is the wall time of its `incus start`. \"Drill record\" is the record's `seconds` (the whole drill inside incus-failover, without its start-up, pair resolution and the final write of the result)."
    );
    w!(s);
    w!(
        s,
        "| Pool | Side | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) | To running (median; all runs) | Drill record `seconds` (median) |"
    );
    w!(s, "|---|---|---|---|---|---|---|---|");
    for pool in POOLS {
        let pr = runs(pool);
        let label = b.pool_label(pool);
        let key = format!("c11-{pool}.drill");
        let fc = if pr.drill_full_copy.iter().any(|f| *f) {
            " --allow-full-copy"
        } else {
            ""
        };
        w!(
            s,
            "| {label} | `incus-failover drill{fc}` | {} | {} ({}) | {} |",
            b.cells(&format!("{key}.tool")),
            fmt_s(stats::median(&pr.drill_to_running)),
            stats::all_values(&pr.drill_to_running, 3),
            fmt_s(stats::median(&pr.drill_seconds))
        );
        let starts = pr
            .steps
            .get(&("drill".to_string(), "start".to_string()))
            .cloned()
            .unwrap_or_default();
        w!(
            s,
            "| {label} | by hand (CLI) | {} | {} ({}) | — |",
            b.cells(&format!("{key}.cli")),
            fmt_s(stats::median(&starts)),
            stats::all_values(&starts, 3)
        );
    }
    w!(s);
    w!(s, "The CLI drill's steps (medians):");
    w!(s);
    for pool in POOLS {
        let pr = runs(pool);
        let steps: Vec<String> = DRILL_STEPS
            .iter()
            .map(|st| format!("{st} {}", fmt_s(pr.step_med("drill", st))))
            .collect();
        w!(s, "- {}: {}.", b.pool_label(pool), steps.join(", "));
    }
    w!(s);
    w!(s, "Reading:");
    w!(s);
    for pool in POOLS {
        let pr = runs(pool);
        let label = b.pool_label(pool);
        for (case, what) in [("first", "first full copy"), ("incr", "one new snapshot")] {
            let key = format!("c11-{pool}.{case}");
            let med =
                |m: &BTreeMap<String, Vec<f64>>| m.get(case).map_or(0.0, |v| stats::median(v));
            let (push, copies) = (
                med(&pr.push_seconds),
                pr.step_med(case, PUSH_STEPS[1]) + pr.step_med(case, PUSH_STEPS[2]),
            );
            w!(
                s,
                "- {label}, {what}: {}. Of ours, incus-snap took {} (the CLI's two snapshot commands {}); incus-push's own time was {} against {} for the CLI's two copies ({:+.3} s). Daemons' CPU: ours {:.2} s, the CLI's {:.2} s.",
                compare(b, &key),
                fmt_s(med(&pr.snap_seconds)),
                fmt_s(pr.step_med(case, PUSH_STEPS[0])),
                fmt_s(push),
                fmt_s(copies),
                push - copies,
                b.med(&format!("{key}.tool"), 1),
                b.med(&format!("{key}.cli"), 1)
            );
        }
        let (ft, it) = (
            b.med(&format!("c11-{pool}.first.tool"), 0),
            b.med(&format!("c11-{pool}.incr.tool"), 0),
        );
        let (fv, iv) = (
            pr.step_med("first", PUSH_STEPS[1]),
            pr.step_med("incr", PUSH_STEPS[1]),
        );
        if pr.driver == "dir" && it >= ft {
            w!(
                s,
                "- {label}: a push of {change} MB changed costs as much as the first full copy or more (ours {} against {}; the CLI's volume copy {} against {}). The dir driver has no incremental transfer: a refresh sends the new snapshot and then the volume with rsync, whose delta algorithm reads the whole {size} MB file on both servers for each, and every volume snapshot on dir is a full copy of the volume on both servers; both sides pay it alike.",
                fmt_s(it),
                fmt_s(ft),
                fmt_s(iv),
                fmt_s(fv)
            );
        } else if pr.driver == "btrfs" {
            w!(
                s,
                "- {label}: the refresh sends only the changed blocks (btrfs send against the previous snapshot), so a push with one new snapshot ({}) costs less than the first copy ({}), and volume snapshots share their blocks.",
                fmt_s(it),
                fmt_s(ft)
            );
        }
        let dk = format!("c11-{pool}.drill");
        let starts = pr
            .steps
            .get(&("drill".to_string(), "start".to_string()))
            .cloned()
            .unwrap_or_default();
        let wall = b.med(&format!("{dk}.tool"), 0);
        let inside = stats::median(&pr.drill_seconds);
        w!(
            s,
            "- {label}, drill: {}. The start itself is Incus's and costs the same both ways ({} to running for ours, {} for the CLI's `incus start`). By hand, the volume copy took {}{}, `incus stop --force` {}, and six `incus` processes {:.2} s of client CPU. Ours spent {} inside the drill (its record's `seconds`); the remaining {} of its wall time are its start, reading both servers and writing the result on the replica.",
            compare(b, &dk),
            fmt_s(stats::median(&pr.drill_to_running)),
            fmt_s(stats::median(&starts)),
            fmt_s(pr.step_med("drill", DRILL_STEPS[0])),
            if pr.driver == "dir" {
                " (a full copy of the volume on dir, as ours makes with `--allow-full-copy`)"
            } else {
                " (a copy-on-write snapshot on btrfs)"
            },
            fmt_s(pr.step_med("drill", "stop")),
            b.med(&format!("{dk}.cli"), 2),
            fmt_s(inside),
            fmt_s((wall - inside).max(0.0))
        );
    }
    w!(
        s,
        "- What incus-push does beyond the CLI's two copies: it reads both servers' instance and volume snapshot lists, takes the replica's lease, restores the replica volume and the replica to the new snapshot, and writes their inert configuration and markers (the CLI's replica is not restored and carries the source's configuration, schedule and autostart included); that is where ours is slower when it is."
    );
    if reps < 2 {
        w!(
            s,
            "- One run per measurement: too few to tell small differences from noise."
        );
    }
    w!(s);

    let mut sum = String::new();
    for pool in POOLS {
        let key = format!("c11-{pool}");
        let pr = runs(pool);
        w!(
            sum,
            "| 11. push with one new snapshot, {size} MB volume, {} | ours {} against {} for the CLI; first copy {} against {} | — | — |",
            b.pool_label(pool),
            fmt_s(b.med(&format!("{key}.incr.tool"), 0)),
            fmt_s(b.med(&format!("{key}.incr.cli"), 0)),
            fmt_s(b.med(&format!("{key}.first.tool"), 0)),
            fmt_s(b.med(&format!("{key}.first.cli"), 0))
        );
        w!(
            sum,
            "| 11. drill, {size} MB volume, {} | {} ({} to running); by hand with the CLI {} | — | — |",
            b.pool_label(pool),
            fmt_s(b.med(&format!("{key}.drill.tool"), 0)),
            fmt_s(stats::median(&pr.drill_to_running)),
            fmt_s(b.med(&format!("{key}.drill.cli"), 0))
        );
    }
    Section {
        text: s,
        summary: sum,
    }
}
