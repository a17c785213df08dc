//! Benchmarks of incus-snap, incus-push, incus-prune and incus-failover against the obvious
//! alternative, the `incus` CLI doing the same work in a shell loop, on the lab
//! (scripts/lab.sh), in the same run. `scripts/bench.sh` brings the lab up, builds the tools
//! and runs this with `cargo bench -p incus-standby-tests --bench bench -- [OPTIONS]`:
//!
//!   (no option)       full run (3 repetitions, medians): writes docs/bench.md
//!   --quick           1 repetition, fewer instances: writes target/bench-quick.md
//!   --only failover   only the failover part (sections 7 and 8): replaces those sections in
//!                     docs/bench.md (or target/bench-quick.md with --quick) and keeps the
//!                     others as they are
//!   --only history    only the standby history part (section 9, archive points), the same way
//!   --only scale      only the scale part (section 10: 10, 100 and 1000 stopped instances, one
//!                     run each; 10 and 20 with --quick), the same way. A run without --only
//!                     does NOT measure it (at 1000 instances it is long): it keeps the section
//!                     10 already in the file it writes. INCUS_BENCH_SCALE_SIZES="10 100"
//!                     overrides the numbers of instances.
//!   --only volumes    only the custom volumes part (section 11: push and drill of an instance
//!                     with a 100 MB custom volume, on the dir and btrfs pools), the same way.
//!                     A run without --only measures it too (a few minutes).
//!   --only soak       only the chaos soak (section 12: 500 rounds of the job with random
//!                     faults, 20 with --quick; INCUS_SOAK_ROUNDS and INCUS_SOAK_SEED override),
//!                     the same way; a run without --only keeps the section 12 in the file.
//!
//! Everything happens in a project of its own, "bench" (INCUS_BENCH_PROJECT overrides),
//! created on both lab daemons and deleted with its instances when the run ends (also on an
//! error or a panic; after an interruption the next run removes it). Nothing outside that
//! project is touched, but for the archive points the history part makes on the standby
//! (project incus-standby-archive, named after its instances), deleted with them. The project
//! has its own custom volumes (features.storage.volumes=true); the volumes part's volumes live
//! there and go with it (were they in the default project, only those marked
//! `user.incus-bench` would be deleted).
//! The lab is scripts/lab.sh's (INCUS_LAB_DIR and its ports select another one); the tools
//! are the release build in the target directory (`cargo build --release --workspace --bins`).

/// Appends a line to a report.
macro_rules! w {
    ($s:expr) => {
        $s.push('\n')
    };
    ($s:expr, $($a:tt)*) => {{
        $s.push_str(&format!($($a)*));
        $s.push('\n');
    }};
}

mod failover;
mod history;
mod main_part;
mod scale;
mod soak;
mod stats;
mod volumes;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use incus_standby_tests::{Cmd, Instance, Output, bin_dir, lab, repo_root};
use serde::Deserialize;
use serde_json::Value;

use stats::{Sample, fmt_s, median, per_inst, round};

pub const JOBS: usize = 4;
pub const ARCHIVE_PROJECT: &str = "incus-standby-archive";
/// The configuration key (set to "true") that marks the custom volumes of the volumes part.
pub const VOLUME_MARK: &str = "user.incus-bench";
const MARK: &str = "incus-standby benchmark (scripts/bench.sh); deleted when the benchmark ends";
const USAGE: &str =
    "usage: scripts/bench.sh [--quick] [--only failover|history|scale|volumes|soak]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Failover,
    History,
    Scale,
    Volumes,
    Soak,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Main => "main",
            Part::Failover => "failover",
            Part::History => "history",
            Part::Scale => "scale",
            Part::Volumes => "volumes",
            Part::Soak => "soak",
        }
    }
}

/// The sizes of one run (`--quick` or not).
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    pub only: Option<Part>,
    pub reps: usize,
    pub n_snap: usize,
    pub n_push: usize,
    pub big_mb: u64,
    pub n_promote: usize,
    pub failback_mb: u64,
    pub history_mb: u64,
    /// The volumes part: the custom volume's size, the MB changed between rounds, and the
    /// incremental rounds per run.
    pub volume_mb: u64,
    pub volume_change_mb: u64,
    pub volume_rounds: usize,
    pub out: PathBuf,
    pub scale_sizes: Vec<usize>,
    pub project: String,
}

fn parse_args() -> Result<Option<Config>> {
    let mut quick = false;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--only" => {
                only = Some(
                    args.next()
                        .with_context(|| format!("--only needs a part ({USAGE})"))?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "{USAGE}\n\nSee the top of tests/benches/bench/main.rs (or scripts/bench.sh)."
                );
                return Ok(None);
            }
            a if a.starts_with("--only=") => only = Some(a["--only=".len()..].to_string()),
            a => bail!("unknown argument: {a} ({USAGE})"),
        }
    }
    let only = match only.as_deref() {
        None => None,
        Some("failover") => Some(Part::Failover),
        Some("history") => Some(Part::History),
        Some("scale") => Some(Part::Scale),
        Some("volumes") => Some(Part::Volumes),
        Some("soak") => Some(Part::Soak),
        Some(p) => {
            bail!(
                "unknown part for --only: {p} (the parts are failover, history, scale, volumes and soak)"
            )
        }
    };
    let repo = repo_root();
    let default_sizes = if quick { "10 20" } else { "10 100 1000" };
    let sizes_text = std::env::var("INCUS_BENCH_SCALE_SIZES").unwrap_or(default_sizes.into());
    let mut scale_sizes = Vec::new();
    for n in sizes_text.split_whitespace() {
        let ok = !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit());
        let v: usize = match n.parse() {
            Ok(v) if ok => v,
            _ => bail!("INCUS_BENCH_SCALE_SIZES: not a number of instances: {n}"),
        };
        ensure!(
            v <= 99_999,
            "INCUS_BENCH_SCALE_SIZES: at most 99999 instances: {n}"
        );
        scale_sizes.push(v);
    }
    ensure!(
        !scale_sizes.is_empty(),
        "INCUS_BENCH_SCALE_SIZES names no number of instances"
    );
    scale_sizes.sort_unstable();
    scale_sizes.dedup();
    let project = std::env::var("INCUS_BENCH_PROJECT").unwrap_or("bench".into());
    Ok(Some(if quick {
        Config {
            quick,
            only,
            reps: 1,
            n_snap: 20,
            n_push: 5,
            big_mb: 100,
            n_promote: 2,
            failback_mb: 50,
            history_mb: 50,
            volume_mb: 100,
            volume_change_mb: 4,
            volume_rounds: 1,
            out: repo.join("target/bench-quick.md"),
            scale_sizes,
            project,
        }
    } else {
        Config {
            quick,
            only,
            reps: 3,
            n_snap: 50,
            n_push: 20,
            big_mb: 400,
            n_promote: 5,
            failback_mb: 100,
            history_mb: 200,
            volume_mb: 100,
            volume_change_mb: 4,
            volume_rounds: 2,
            out: repo.join("docs/bench.md"),
            scale_sizes,
            project,
        }
    }))
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        chrono::Local::now().format("%H:%M:%S"),
        msg.as_ref()
    );
}

/// The first line of /proc/loadavg's three load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn utc_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A pause so that incus-snap's default names (second resolution) never repeat.
pub fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Running a [`Cmd`] for a measurement: [`Cmd::run`] polls the child every 10 ms (and has a
/// safety timeout), which would add up to 10 ms to every command of a CLI loop; this waits
/// for it (stdin /dev/null).
pub trait Run {
    fn out(&self) -> Output;
}

impl Run for Cmd {
    fn out(&self) -> Output {
        use std::os::unix::process::ExitStatusExt;
        match self.std_command().output() {
            Ok(o) => Output {
                code: o
                    .status
                    .code()
                    .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => Output {
                code: 127,
                stdout: String::new(),
                stderr: format!("cannot run {}: {e}", self.display()),
            },
        }
    }
}

/// Runs a command; its stdout if it exits 0, else an error with its stderr.
pub fn ok(cmd: Cmd) -> Result<String> {
    let out = cmd.out();
    ensure!(
        out.code == 0,
        "{} failed (exit {}): {}",
        cmd.display(),
        out.code,
        out.stderr.trim()
    );
    Ok(out.stdout)
}

/// The first `n` bytes of a text, for messages.
pub fn head(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------------------
// the tools' records, typed

/// The records of the tools that the benchmark reads (docs/records.md); other fields and
/// other types are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Snapshot {},
    Push {
        #[serde(default)]
        instance: String,
        status: String,
        #[serde(default)]
        snapshots: Vec<String>,
        #[serde(default)]
        archived: Vec<String>,
        #[serde(default)]
        seconds: f64,
        #[serde(default)]
        volumes: Vec<PushVolume>,
    },
    Pruned {
        #[serde(default)]
        dry_run: bool,
    },
    Promoted {
        #[serde(default)]
        already: bool,
        seconds: f64,
    },
    FailedBack {
        #[serde(default)]
        kept_aside: Option<String>,
    },
    Drill {
        ok: bool,
        #[serde(default)]
        seconds_to_running: Option<f64>,
        #[serde(default)]
        full_copy: bool,
        #[serde(default)]
        volumes: Vec<String>,
        seconds: f64,
    },
    Error {
        #[serde(default)]
        message: String,
    },
    Step {},
    #[serde(other)]
    Other,
}

/// One custom volume of a `push` record.
#[derive(Debug, Clone, Deserialize)]
pub struct PushVolume {
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub volume: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub snapshots: Vec<String>,
}

/// Every non-empty stdout line of a tool as a record.
pub fn records(out: &Output) -> Result<Vec<Record>> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a record: {l}")))
        .collect()
}

pub fn count(records: &[Record], pred: impl Fn(&Record) -> bool) -> usize {
    records.iter().filter(|r| pred(r)).count()
}

pub fn is_snapshot(r: &Record) -> bool {
    matches!(r, Record::Snapshot {})
}

/// The statuses of the push records.
pub fn push_statuses(records: &[Record]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Push { status, .. } => Some(status.as_str()),
            _ => None,
        })
        .collect()
}

/// The first error record's message.
pub fn first_error(records: &[Record]) -> Option<&str> {
    records.iter().find_map(|r| match r {
        Record::Error { message } => Some(message.as_str()),
        _ => None,
    })
}

/// Stops the run unless there are `n` push records, each with one of `statuses` (any
/// status when empty).
pub fn expect_statuses(out: &Output, n: usize, statuses: &[&str]) -> Result<()> {
    let recs = records(out)?;
    let got = push_statuses(&recs);
    ensure!(
        got.len() == n,
        "expected {n} push records, got {}: {}",
        got.len(),
        head(&out.stdout, 600)
    );
    if let Some(bad) = got
        .iter()
        .find(|s| !statuses.is_empty() && !statuses.contains(s))
    {
        bail!(
            "unexpected push status {bad} (expected {}): {}",
            statuses.join(" or "),
            head(&out.stdout, 600)
        );
    }
    Ok(())
}

/// The request count of a tool run with `INCUS_STANDBY_STATS=1`: its last
/// `TOOL: stats: N API requests` line on stderr.
pub fn api_requests(out: &Output) -> Option<u64> {
    out.stderr
        .lines()
        .filter_map(|l| {
            let (tool, rest) = l.split_once(": stats: ")?;
            if !tool.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return None;
            }
            rest.strip_suffix(" API requests")?.parse().ok()
        })
        .next_back()
}

// ---------------------------------------------------------------------------------------
// the bench

pub struct Bench {
    pub cfg: Config,
    pub project: String,
    pub bin: PathBuf,
    pub lab_dir: PathBuf,
    daemon_pids: [String; 2],
    hz: f64,
    pub nproc: usize,
    /// "CASE.SIDE" → the measurements.
    pub results: BTreeMap<String, Vec<Sample>>,
    /// LABEL → "elapsed_s peak_rss_kib" of each run of a tool of ours.
    pub rss: BTreeMap<String, Vec<(f64, u64)>>,
    /// The remotes the bench project was created on (deleted with it at the end).
    created: Vec<&'static str>,
    /// The history part's instances (whose archive points to delete at the end).
    pub history_names: Vec<String>,
    /// Whether the archive project existed on the standby before the history part.
    pub archive_existed: Option<bool>,
    tmp: tempfile::TempDir,
}

impl Bench {
    fn new(cfg: Config) -> Result<Bench> {
        let lab = lab();
        let bin = bin_dir();
        for b in ["incus-snap", "incus-push", "incus-prune", "incus-failover"] {
            ensure!(
                bin.join(b).is_file(),
                "{} missing: build with cargo build --release --workspace --bins",
                bin.join(b).display()
            );
        }
        ensure!(
            Path::new("/usr/bin/time").is_file(),
            "/usr/bin/time (GNU time) is missing: apt-get install time"
        );
        let hz = ok(Cmd::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Ok(Bench {
            project: cfg.project.clone(),
            cfg,
            bin,
            lab_dir: lab.dir.clone(),
            daemon_pids: [lab.daemon_pid("primary"), lab.daemon_pid("standby")],
            hz,
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            results: BTreeMap::new(),
            rss: BTreeMap::new(),
            created: Vec::new(),
            history_names: Vec::new(),
            archive_existed: None,
            tmp: tempfile::Builder::new().prefix("incus-bench.").tempdir()?,
        })
    }

    /// Whether this run measures that part (sections 1 to 6: `Main`; `Scale` only with
    /// `--only scale`; every other part also without `--only`).
    pub fn part(&self, p: Part) -> bool {
        match self.cfg.only {
            None => p != Part::Scale && p != Part::Soak,
            Some(o) => o == p,
        }
    }

    /// The incus CLI (the lab's environment, stdin /dev/null).
    pub fn incus(&self, args: &[&str]) -> Cmd {
        Cmd::new("incus").args(args)
    }

    /// The incus CLI in the bench project (the flag goes last: not for `incus exec … --`).
    pub fn bi(&self, args: &[&str]) -> Cmd {
        self.incus(args).args(["--project", self.project.as_str()])
    }

    /// `incus exec --project P NAME -- sh -c SCRIPT`.
    pub fn exec(&self, address: &str, script: &str) -> Result<String> {
        ok(self.incus(&[
            "exec",
            "--project",
            &self.project,
            address,
            "--",
            "sh",
            "-c",
            script,
        ]))
    }

    /// One of our tools.
    pub fn tool(&self, name: &str) -> Cmd {
        Cmd::new(self.bin.join(name))
    }

    /// One of our tools under `/usr/bin/time -f '%e %M'`; read its figures with
    /// [`Bench::note_rss`] and the returned file.
    fn rss_cmd(&self, label: &str, name: &str) -> (Cmd, PathBuf) {
        let file = self.tmp.path().join(format!("rss.{label}"));
        let cmd = Cmd::new("/usr/bin/time")
            .args(["-f", "%e %M", "-o"])
            .arg(&file)
            .arg(self.bin.join(name));
        (cmd, file)
    }

    fn note_rss(&mut self, label: &str, file: &Path) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // GNU time writes "Command exited with non-zero status N" first after a failure.
        let figures = text.lines().rev().find_map(|l| {
            let (e, m) = l.split_once(' ')?;
            Some((e.parse::<f64>().ok()?, m.parse::<u64>().ok()?))
        });
        if let Some(f) = figures {
            self.rss.entry(label.to_string()).or_default().push(f);
        }
    }

    /// Runs a tool of ours (arguments `args`, environment `env`), noting its peak RSS under
    /// `label`.
    pub fn rss(&mut self, label: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let (mut cmd, file) = self.rss_cmd(label, name);
        cmd = cmd.args(args);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let out = cmd.out();
        self.note_rss(label, &file);
        out
    }

    /// `A | B`: two of our tools in a pipeline; each under /usr/bin/time when given a label.
    /// Returns the second's output, failing if either fails.
    pub fn pipeline(
        &mut self,
        first: (Option<&str>, &str, &[&str]),
        second: (Option<&str>, &str, &[&str]),
    ) -> Result<Output> {
        let make = |(label, name, args): (Option<&str>, &str, &[&str])| match label {
            Some(l) => {
                let (c, f) = self.rss_cmd(l, name);
                (c.args(args), Some((l.to_string(), f)))
            }
            None => (self.tool(name).args(args), None),
        };
        let (c1, f1) = make(first);
        let (c2, f2) = make(second);
        let mut a = c1
            .std_command()
            .spawn()
            .with_context(|| format!("starting {}", c1.display()))?;
        let mid = a.stdout.take().context("no stdout")?;
        let a_err = a.stderr.take();
        let a_err = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = a_err {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let mut cmd2 = c2.std_command();
        cmd2.stdin(Stdio::from(mid));
        let b = cmd2
            .spawn()
            .with_context(|| format!("starting {}", c2.display()))?;
        drop(cmd2);
        let out_b = b.wait_with_output()?;
        let status_a = a.wait()?;
        let err_a = a_err.join().unwrap_or_default();
        for (l, f) in [f1, f2].into_iter().flatten() {
            self.note_rss(&l, &f);
        }
        ensure!(
            status_a.success(),
            "{} failed: {}",
            c1.display(),
            err_a.trim()
        );
        let out = Output {
            code: out_b.status.code().unwrap_or(128),
            stdout: String::from_utf8_lossy(&out_b.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out_b.stderr).into_owned(),
        };
        ensure!(
            out.code == 0,
            "{} failed: {}",
            c2.display(),
            out.stderr.trim()
        );
        Ok(out)
    }

    /// CPU ticks (user+system, with waited-for children such as rsync) of both lab daemons.
    fn daemon_ticks(&self) -> f64 {
        self.daemon_pids
            .iter()
            .map(|pid| {
                proc_stat_fields(&format!("/proc/{pid}/stat"), &[14, 15, 16, 17])
                    .iter()
                    .sum::<f64>()
            })
            .sum()
    }

    /// CPU ticks of this process's finished (waited-for) children.
    fn children_ticks(&self) -> f64 {
        proc_stat_fields("/proc/self/stat", &[16, 17]).iter().sum()
    }

    /// Runs `f`, appending its wall time, the daemons' and the client processes' CPU time
    /// to the results of `key` ("CASE.SIDE").
    pub fn timed<T>(&mut self, key: &str, f: impl FnOnce(&mut Bench) -> Result<T>) -> Result<T> {
        let u0 = self.children_ticks();
        let c0 = self.daemon_ticks();
        let t0 = Instant::now();
        let r = f(self)?;
        let wall = t0.elapsed().as_secs_f64();
        let c1 = self.daemon_ticks();
        let u1 = self.children_ticks();
        let s = Sample {
            wall: round(wall, 3),
            daemons: round((c1 - c0) / self.hz, 2),
            client: round((u1 - u0) / self.hz, 2),
        };
        log(format!(
            "  {key}: {:.3} s wall, daemons {:.2} s CPU",
            s.wall, s.daemons
        ));
        self.results.entry(key.to_string()).or_default().push(s);
        Ok(r)
    }

    /// The samples of "CASE.SIDE" (none if it was never measured).
    pub fn samples(&self, key: &str) -> &[Sample] {
        self.results.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// One column of a key's samples (0 wall time, 1 daemons' CPU, 2 client CPU).
    pub fn col(&self, key: &str, c: usize) -> Vec<f64> {
        self.samples(key)
            .iter()
            .map(|s| match c {
                0 => s.wall,
                1 => s.daemons,
                _ => s.client,
            })
            .collect()
    }

    pub fn med(&self, key: &str, c: usize) -> f64 {
        median(&self.col(key, c))
    }

    /// The largest peak RSS in KiB over these labels' runs.
    pub fn max_rss(&self, labels: &[&str]) -> u64 {
        labels
            .iter()
            .flat_map(|l| self.rss.get(*l).into_iter().flatten())
            .map(|(_, k)| *k)
            .max()
            .unwrap_or(0)
    }

    // -----------------------------------------------------------------------------------
    // the lab

    pub fn project_exists(&self, remote: &str) -> bool {
        self.incus(&["project", "show", &format!("{remote}:{}", self.project)])
            .out()
            .code
            == 0
    }

    /// Deletes the project's instances `names` on `remote` (with their snapshots): 50 per
    /// `incus delete`, JOBS of those at once.
    pub fn delete_instances(&self, remote: &str, names: &[String]) -> Result<()> {
        let chunks: Vec<&[String]> = names.chunks(50).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..JOBS {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        let mut cmd =
                            self.incus(&["delete", "--project", &self.project, "--force"]);
                        cmd = cmd.args(chunk.iter().map(|n| format!("{remote}:{n}")));
                        if let Err(e) = ok(cmd)
                            && let Ok(mut v) = errors.lock()
                        {
                            v.push(e.to_string());
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap_or_default();
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    /// The names of the project's instances on `remote`.
    pub fn list_names(&self, remote: &str) -> Result<Vec<String>> {
        Ok(
            ok(self.bi(&["list", &format!("{remote}:"), "-f", "csv", "-c", "n"]))?
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// Deletes the project's instances, then the custom volumes this benchmark made (all of
    /// the project's, or only the marked ones where the volumes live in the default
    /// project), then the project, on `remote`.
    fn drop_project(&self, remote: &str) -> Result<()> {
        if !self.project_exists(remote) {
            return Ok(());
        }
        let names = self.list_names(remote)?;
        self.delete_instances(remote, &names)?;
        self.drop_volumes(remote, |_| true)?;
        ok(self.incus(&["project", "delete", &format!("{remote}:{}", self.project)]))?;
        Ok(())
    }

    /// The project that holds the bench project's custom volumes on `remote`: the bench
    /// project itself where it has `features.storage.volumes=true` (as this benchmark
    /// creates it), else `default`.
    pub fn volume_project(&self, remote: &str) -> Result<String> {
        let v = self.query(remote, &format!("/1.0/projects/{}", self.project))?;
        let own = v
            .pointer("/config/features.storage.volumes")
            .and_then(Value::as_str)
            == Some("true");
        Ok(if own {
            self.project.clone()
        } else {
            "default".into()
        })
    }

    /// The names of the storage pools of `remote`.
    pub fn pools(&self, remote: &str) -> Result<Vec<String>> {
        let v = self.query(remote, "/1.0/storage-pools")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|u| Some(u.split('?').next()?.rsplit('/').next()?.to_string()))
            .collect())
    }

    /// Deletes, on every pool of `remote`, the custom volumes (with their snapshots) this
    /// benchmark made whose name `select` accepts: in the bench project every volume is the
    /// benchmark's; in the default project (a bench project without its own volumes) only
    /// those marked with [`VOLUME_MARK`] (the copies keep the mark). Their instances must be
    /// gone first.
    pub fn drop_volumes(&self, remote: &str, select: impl Fn(&str) -> bool) -> Result<()> {
        let vp = self.volume_project(remote)?;
        let own = vp == self.project;
        let mut errors = Vec::new();
        for pool in self.pools(remote)? {
            let list = self.query(
                remote,
                &format!("/1.0/storage-pools/{pool}/volumes/custom?project={vp}&recursion=1"),
            )?;
            for v in list.as_array().into_iter().flatten() {
                let Some(name) = v.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let marked = v
                    .pointer(&format!("/config/{VOLUME_MARK}"))
                    .and_then(Value::as_str)
                    == Some("true");
                if !select(name) || !(own || marked) {
                    continue;
                }
                if let Err(e) = ok(self.incus(&[
                    "storage",
                    "volume",
                    "delete",
                    "--project",
                    &vp,
                    &format!("{remote}:{pool}"),
                    name,
                ])) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    fn create_projects(&mut self) -> Result<()> {
        for r in ["local", "standby"] {
            if self.project_exists(r) {
                let desc = ok(self.incus(&[
                    "project",
                    "get",
                    &format!("{r}:{}", self.project),
                    "description",
                    "--property",
                ]))
                .unwrap_or_default();
                ensure!(
                    desc.trim() == MARK,
                    "project {} already exists on {r} and was not made by this benchmark; set INCUS_BENCH_PROJECT",
                    self.project
                );
                log(format!(
                    "removing a leftover project {} on {r} (from an interrupted run)",
                    self.project
                ));
                self.drop_project(r)?;
            }
            let create = self
                .incus(&["project", "create", &format!("{r}:{}", self.project)])
                .stdin(format!(
                    "description: {MARK}\nconfig:\n  features.images: \"false\"\n  features.profiles: \"false\"\n  features.storage.volumes: \"true\"\n"
                ));
            // Cmd::run, which feeds stdin (and polls; nothing is timed here).
            let out = create.run();
            ensure!(
                out.code == 0,
                "creating project {} on {r}: {}",
                self.project,
                out.stderr.trim()
            );
            self.created.push(r);
        }
        Ok(())
    }

    /// Creates `prefix-01` … (numbered with a common width) as stopped busybox containers.
    pub fn create_instances(&self, prefix: &str, n: usize) -> Result<()> {
        let width = n.to_string().len();
        for i in 1..=n {
            self.init(&format!("{prefix}-{i:0width$}"), &[])?;
        }
        Ok(())
    }

    /// `incus init busybox NAME -q` (tried twice).
    pub fn init(&self, name: &str, flags: &[&str]) -> Result<()> {
        if self
            .bi(&["init", "busybox", name, "-q"])
            .args(flags)
            .out()
            .code
            != 0
        {
            ok(self.bi(&["init", "busybox", name, "-q"]).args(flags))?;
        }
        Ok(())
    }

    /// A running busybox container (`incus launch busybox NAME FLAGS…`).
    pub fn launch(&self, name: &str, flags: &[&str]) -> Result<()> {
        ok(self.bi(&["launch", "busybox", name, "-q"]).args(flags))
            .with_context(|| format!("launching {name}"))?;
        Ok(())
    }

    /// [`Bench::launch`], tried twice, as a guard that deletes the instance and its replica
    /// when dropped.
    pub fn launch_guarded(&self, name: &str, flags: &[&str]) -> Result<Instance> {
        if self.launch(name, flags).is_err() {
            self.launch(name, flags)?;
        }
        Ok(self.guard(name))
    }

    /// A guard for the project's instance `name` on local (and its replica on standby).
    pub fn guard(&self, name: &str) -> Instance {
        let mut i = Instance::existing("local", name);
        i.project = Some(self.project.clone());
        i
    }

    /// The project's instances whose names start with `prefix-`.
    pub fn instances_named(&self, prefix: &str) -> Result<Vec<String>> {
        let p = format!("{prefix}-");
        Ok(self
            .list_names("local")?
            .into_iter()
            .filter(|n| n.starts_with(&p))
            .collect())
    }

    /// Stops an instance cleanly within 60 s, else forcibly.
    pub fn stop(&self, name: &str) -> Result<()> {
        let clean = Cmd::new("timeout")
            .args(["60", "incus", "stop", "--project", &self.project, name])
            .out();
        if clean.code != 0 {
            ok(self.bi(&["stop", "--force", name]))?;
        }
        Ok(())
    }

    /// `GET /1.0/…` on a remote, as JSON.
    pub fn query(&self, remote: &str, path: &str) -> Result<Value> {
        let text = ok(self.incus(&["query", &format!("{remote}:{path}")]))?;
        serde_json::from_str(&text).with_context(|| format!("incus query {path}: not JSON"))
    }

    /// The status (RUNNING, STOPPED, …) of the project's `[REMOTE:]NAME`.
    pub fn status_of(&self, address: &str) -> Result<String> {
        let (r, n) = address.split_once(':').unwrap_or(("local", address));
        let v = self.query(r, &format!("/1.0/instances/{n}?project={}", self.project))?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_uppercase())
    }

    /// "SNAPSHOT → created_at" for the snapshots of the project's `[REMOTE:]NAME`.
    pub fn snapshot_times(&self, address: &str) -> Result<BTreeMap<String, String>> {
        let (r, n) = address.split_once(':').unwrap_or(("local", address));
        let v = self.query(
            r,
            &format!(
                "/1.0/instances/{n}/snapshots?project={}&recursion=1",
                self.project
            ),
        )?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s.get("name")?.as_str()?.to_string(),
                    s.get("created_at")?.as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// The snapshot names of an instance from `GET …/snapshots` (URLs), sorted.
    pub fn snapshot_names(&self, remote: &str, name: &str, project: &str) -> Result<Vec<String>> {
        let v = self.query(
            remote,
            &format!("/1.0/instances/{name}/snapshots?project={project}"),
        )?;
        let mut names: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|u| {
                let u = u.split('?').next()?;
                Some(u.rsplit('/').next()?.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The driver of a storage pool on a remote.
    pub fn pool_driver(&self, remote: &str, pool: &str) -> Result<String> {
        let v = self.query(remote, &format!("/1.0/storage-pools/{pool}"))?;
        Ok(v.get("driver")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// "`POOL` (DRIVER)" for the report.
    pub fn pool_label(&self, pool: &str) -> String {
        let d = self.pool_driver("local", pool).unwrap_or_default();
        format!("`{pool}` ({d})")
    }

    /// The directory of an instance's volume in the lab.
    pub fn volume_dir(
        &self,
        server: &str,
        pool: &str,
        name: &str,
        project: Option<&str>,
    ) -> PathBuf {
        self.lab_dir.join(format!(
            "{server}/storage-pools/{pool}/containers/{}_{name}",
            project.unwrap_or(&self.project)
        ))
    }

    /// The project's instances NAME and NAME-… on both servers.
    pub fn drop_named(&self, name: &str) -> Result<()> {
        let p = format!("{name}-");
        for r in ["local", "standby"] {
            let names: Vec<String> = self
                .list_names(r)?
                .into_iter()
                .filter(|n| n == name || n.starts_with(&p))
                .map(|n| format!("{r}:{n}"))
                .collect();
            if !names.is_empty() {
                ok(self.bi(&["delete", "--force"]).args(&names))?;
            }
        }
        Ok(())
    }

    /// The archive points on the standby cloned from the bench project's NAME (named NAME--…
    /// and marked as archives of PROJECT/NAME/…).
    pub fn archives_of(&self, name: &str) -> Result<Vec<String>> {
        let show = self
            .incus(&["project", "show", &format!("standby:{ARCHIVE_PROJECT}")])
            .out();
        if show.code != 0 {
            return Ok(Vec::new());
        }
        let list = ok(self.incus(&[
            "list",
            "standby:",
            "--project",
            ARCHIVE_PROJECT,
            "-f",
            "csv",
            "-c",
            "n",
        ]))?;
        let mut out = Vec::new();
        for a in list.lines().filter(|a| a.starts_with(&format!("{name}--"))) {
            let of = ok(self.incus(&[
                "config",
                "get",
                "--project",
                ARCHIVE_PROJECT,
                &format!("standby:{a}"),
                "user.incus-standby.archive-of",
            ]))
            .unwrap_or_default();
            if of.trim().starts_with(&format!("{}/{name}/", self.project)) {
                out.push(a.to_string());
            }
        }
        Ok(out)
    }

    pub fn drop_archives_of(&self, name: &str) -> Result<()> {
        let names: Vec<String> = self
            .archives_of(name)?
            .into_iter()
            .map(|a| format!("standby:{a}"))
            .collect();
        if !names.is_empty() {
            ok(self
                .incus(&["delete", "--project", ARCHIVE_PROJECT, "--force"])
                .args(&names))?;
        }
        Ok(())
    }

    /// Deletes the archive points of the history part's instances, and the archive project
    /// when the history part made it and it is empty now.
    fn drop_history_archives(&self) -> Result<()> {
        for n in &self.history_names {
            self.drop_archives_of(n)?;
        }
        let address = format!("standby:{ARCHIVE_PROJECT}");
        if self.archive_existed == Some(false)
            && self.incus(&["project", "show", &address]).out().code == 0
        {
            let left = ok(self.incus(&[
                "list",
                "standby:",
                "--project",
                ARCHIVE_PROJECT,
                "-f",
                "csv",
                "-c",
                "n",
            ]))?;
            if left.trim().is_empty() {
                ok(self.incus(&["project", "delete", &address]))?;
            }
        }
        Ok(())
    }

    /// `du -sb PATH`: apparent bytes.
    pub fn du_sb(&self, path: &Path) -> Result<f64> {
        let out = ok(Cmd::new("du").arg("-sb").arg(path))?;
        out.split_whitespace()
            .next()
            .and_then(|b| b.parse().ok())
            .with_context(|| format!("du -sb {}: {out}", path.display()))
    }

    /// The CPU's model name, for the report.
    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(": "))
                    .map(|(_, m)| m.to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if !self.history_names.is_empty() {
            log(format!(
                "deleting the history part's archive points on standby (project {ARCHIVE_PROJECT})"
            ));
            if let Err(e) = self.drop_history_archives() {
                log(format!(
                    "warning: could not delete the archive points of {}: {e:#}",
                    self.history_names.join(" ")
                ));
            }
        }
        for r in self.created.clone() {
            log(format!("deleting project {} on {r}", self.project));
            if let Err(e) = self.drop_project(r) {
                log(format!(
                    "warning: could not delete project {} on {r}: {e:#}",
                    self.project
                ));
            }
        }
    }
}

/// Fields (numbered from 1, as in proc(5)) of a /proc/PID/stat file, as numbers (0 if
/// unreadable).
fn proc_stat_fields(path: &str, fields: &[usize]) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let values: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .map(|f| {
            values
                .get(f - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// the report

/// A section's text and its rows in the summary table.
#[derive(Debug, Default)]
pub struct Section {
    pub text: String,
    pub summary: String,
}

impl Bench {
    pub fn header(s: &mut String) {
        w!(
            s,
            "| Side | Wall time (median) | Per instance | All runs (s) | Daemons CPU (median) | Client CPU (median) |"
        );
        w!(s, "|---|---|---|---|---|---|");
    }

    /// One table row of "CASE.SIDE".
    pub fn row(&self, s: &mut String, key: &str, label: &str, n: usize) {
        let w = self.med(key, 0);
        w!(
            s,
            "| {label} | {} | {} | {} | {:.2} s | {:.2} s |",
            fmt_s(w),
            per_inst(w, n),
            stats::all_values(&self.col(key, 0), 3),
            self.med(key, 1),
            self.med(key, 2)
        );
    }

    /// The "wall time (median) | all runs | daemons CPU | client CPU" cells of a key, or
    /// dashes when it has none.
    pub fn cells(&self, key: &str) -> String {
        if self.samples(key).is_empty() {
            "— | — | — | —".into()
        } else {
            format!(
                "{} | {} | {:.2} s | {:.2} s",
                fmt_s(self.med(key, 0)),
                stats::all_values(&self.col(key, 0), 3),
                self.med(key, 1),
                self.med(key, 2)
            )
        }
    }

    /// Where the time goes, from the medians of CASE.tool and CASE.cli.
    pub fn where_(&self, s: &mut String, case: &str) {
        let (t, c) = (format!("{case}.tool"), format!("{case}.cli"));
        let (wt, dt, ct) = (self.med(&t, 0), self.med(&t, 1), self.med(&t, 2));
        let (wc, dc, cc) = (self.med(&c, 0), self.med(&c, 1), self.med(&c, 2));
        let n = self.nproc;
        let mut l = format!(
            "Where the time goes: our side kept the daemons busy for {dt:.2} s of CPU (client {ct:.2} s) in {wt:.2} s of wall time; "
        );
        l += &format!("the CLI loop for {dc:.2} s of CPU (client {cc:.2} s) in {wc:.2} s. ");
        let lb = dt / n as f64;
        if lb > 0.0 {
            l += &format!(
                "With {n} CPUs, the daemons' work for our side alone takes at least {lb:.2} s, which caps the speed-up at about {:.1}x on this machine",
                wc / lb
            );
        }
        if wt > 0.0 && lb / wt >= 0.6 {
            l += &format!(
                ": the daemons' CPU time dominates our side (they kept {:.0} % of the CPUs busy during it).",
                100.0 * lb / wt
            );
        } else {
            l += ".";
        }
        w!(s, "{l}");
    }
}

/// The number of a "## N. …" heading or a "| N. …" row.
fn section_number(line: &str) -> Option<u32> {
    let rest = line
        .strip_prefix("## ")
        .or_else(|| line.strip_prefix("| "))?;
    let (n, _) = rest.split_once(". ")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// `text` with its sections LO to HI ("## N. …") and their summary rows ("| N. …")
/// replaced by `section`: put where the old ones were, or else before the first later
/// section (or "## Summary") and the first later row (or at the end of the table).
fn splice(text: &str, lo: u32, hi: u32, section: &Section) -> String {
    let mut out = String::new();
    let (mut skip, mut placed, mut summary, mut table, mut done) =
        (false, false, false, false, false);
    let put = |out: &mut String, s: &str| out.push_str(s);
    for l in text.lines() {
        if l.starts_with("## ") {
            let n = section_number(l);
            if n.is_some_and(|n| n >= lo && n <= hi) {
                skip = true;
                continue;
            }
            skip = false;
            if !placed && (n.is_some_and(|n| n > hi) || l == "## Summary") {
                put(&mut out, &section.text);
                placed = true;
            }
            if l == "## Summary" {
                summary = true;
            }
        }
        if skip {
            continue;
        }
        if summary && l.starts_with('|') {
            table = true;
            let n = section_number(l);
            if n.is_some_and(|n| n >= lo && n <= hi) {
                continue;
            }
            if !done && n.is_some_and(|n| n > hi) {
                put(&mut out, &section.summary);
                done = true;
            }
        }
        if summary && table && !l.starts_with('|') && !done {
            put(&mut out, &section.summary);
            done = true;
        }
        out.push_str(l);
        out.push('\n');
    }
    if summary && !done {
        put(&mut out, &section.summary);
    }
    out
}

/// Writes a file through a temporary one beside it.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn run(cfg: Config) -> Result<()> {
    let mut b = Bench::new(cfg)?;
    let load_start = loadavg();
    b.create_projects()?;

    let main = if b.part(Part::Main) {
        Some(main_part::run(&mut b)?)
    } else {
        None
    };
    let failover = if b.part(Part::Failover) {
        Some(failover::run(&mut b)?)
    } else {
        None
    };
    let history = if b.part(Part::History) {
        Some(history::run(&mut b)?)
    } else {
        None
    };
    let scale = if b.part(Part::Scale) {
        Some(scale::run(&mut b)?)
    } else {
        None
    };
    let volumes = if b.part(Part::Volumes) {
        Some(volumes::run(&mut b)?)
    } else {
        None
    };
    let soak = if b.part(Part::Soak) {
        Some(soak::run(&mut b)?)
    } else {
        None
    };

    let out = b.cfg.out.clone();
    if let Some(only) = b.cfg.only {
        let (lo, hi, what, section) = match only {
            Part::Failover => (7, 8, "sections 7 and 8", failover),
            Part::History => (9, 9, "section 9", history),
            Part::Volumes => (11, 11, "section 11", volumes),
            Part::Soak => (12, 12, "section 12", soak),
            _ => (10, 10, "section 10", scale),
        };
        let section = section.context("the part was not measured")?;
        let text = if out.exists() {
            let old = std::fs::read_to_string(&out)?;
            ensure!(
                old.lines().any(|l| l == "## Summary"),
                "{} has no \"## Summary\" section to put {what} before",
                out.display()
            );
            splice(&old, lo, hi, &section)
        } else {
            let mut s = String::new();
            w!(s, "# Benchmarks");
            w!(s);
            w!(
                s,
                "Only the {} part (`scripts/bench.sh --only {}`); the other sections come from a run without `--only`.",
                only.name(),
                only.name()
            );
            w!(s);
            s += &section.text;
            w!(s, "## Summary");
            w!(s);
            w!(s, "| Case | Result | Target | Met |");
            w!(s, "|---|---|---|---|");
            s += &section.summary;
            s
        };
        write_file(&out, &text)?;
        log(format!("wrote {what} into {}", out.display()));
        return Ok(());
    }

    // This run does not measure the scale and soak parts: sections 10 and 12 and their summary
    // rows of the file it replaces are kept as they are.
    let kept_section = |number: &str| {
        let mut kept = Section::default();
        if let Ok(old) = std::fs::read_to_string(&out) {
            let mut keep = false;
            let mut in_summary = false;
            for l in old.lines() {
                if l.starts_with("## ") {
                    keep = l.starts_with(&format!("## {number}. "));
                    in_summary = l == "## Summary";
                }
                if keep {
                    w!(kept.text, "{l}");
                }
                if in_summary && l.starts_with(&format!("| {number}. ")) {
                    w!(kept.summary, "{l}");
                }
            }
        }
        kept
    };
    let kept = kept_section("10");
    let kept_soak = kept_section("12");
    let main = main.context("sections 1 to 6 were not measured")?;
    let failover = failover.unwrap_or_default();
    let history = history.unwrap_or_default();
    let volumes = volumes.unwrap_or_default();

    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.1}", k / 1_048_576.0));
    let incus_version = ok(Cmd::new("incus").arg("version"))
        .map(|v| {
            v.lines()
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|_| "unknown".into());
    let fs = ok(Cmd::new("stat").args(["-f", "-c", "%T"]).arg(&b.lab_dir))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kernel = ok(Cmd::new("uname").arg("-r"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let rustc = ok(Cmd::new("rustc").arg("-V"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "rustc unknown".into());
    let nproc = b.nproc;
    let reps = b.cfg.reps;
    let project = b.project.clone();

    let mut s = String::new();
    w!(s, "# Benchmarks");
    w!(s);
    if b.cfg.quick {
        w!(
            s,
            "Quick run (`scripts/bench.sh --quick`: 1 run per measurement, fewer instances); the reference numbers are in docs/bench.md."
        );
    } else {
        w!(
            s,
            "Written by `scripts/bench.sh` (rerun it to reproduce; `--quick` for a short run)."
        );
    }
    w!(s);
    w!(s, "## Machine");
    w!(s);
    w!(s, "- Date: {}", utc_now());
    w!(
        s,
        "- CPU: {nproc} × {} (`nproc` = {nproc}); memory: {mem_gib} GiB; kernel {kernel}",
        Bench::cpu_model()
    );
    w!(
        s,
        "- Incus: {incus_version}; the two lab daemons of `scripts/lab.sh` on this machine (standby reached over HTTPS on 127.0.0.1), storage pool `default` (dir driver, on {fs})"
    );
    w!(s, "- Tools: release build, {rustc}");
    w!(
        s,
        "- Load average (1, 5, 15 min) when the measurements started: {load_start}; when they ended: {} (other work on this machine shares its CPUs and disk)",
        loadavg()
    );
    w!(s);
    w!(s, "## Method");
    w!(s);
    w!(
        s,
        "Each of our tools is measured against the obvious alternative: the `incus` CLI doing the same work in a shell loop, one instance after the other."
    );
    w!(
        s,
        "Both sides run against the same two daemons, in the same run of the benchmark, in a project of their own (`{project}`, on both servers, deleted afterwards)."
    );
    w!(
        s,
        "Wall time is taken with a monotonic clock around the whole command or loop; every figure is the median of {reps} run(s) (all runs are listed)."
    );
    w!(
        s,
        "\"Daemons CPU\" is the user+system CPU time both incusd processes (with their waited-for children such as rsync) used during the measurement, from /proc/PID/stat;"
    );
    w!(
        s,
        "\"Client CPU\" is that of the client processes (our tool, or all the `incus` invocations of the loop)."
    );
    w!(
        s,
        "The lab daemons may be shared with other work on this machine, which can add noise to the daemons' CPU time."
    );
    w!(
        s,
        "Instances are stopped busybox containers (a few MB each) unless said otherwise. incus-push runs in its default mode (pull: the standby connects to the primary), like `incus copy`."
    );
    w!(s);
    s += &main.text;
    s += &failover.text;
    s += &history.text;
    s += &kept.text;
    s += &volumes.text;
    s += &kept_soak.text;
    w!(s, "## Summary");
    w!(s);
    w!(s, "| Case | Result | Target | Met |");
    w!(s, "|---|---|---|---|");
    s += &main.summary;
    s += &failover.summary;
    s += &history.summary;
    s += &kept.summary;
    s += &volumes.summary;
    s += &kept_soak.summary;
    write_file(&out, &s)?;
    log(format!("wrote {}", out.display()));
    drop(b);
    Ok(())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` (or --all-targets) passes nothing:
    // then there is nothing to test, and no lab run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "bench: run with cargo bench (or scripts/bench.sh); nothing to do without --bench"
        );
        return;
    }
    let code = match parse_args() {
        Ok(None) => 0,
        Ok(Some(cfg)) => match run(cfg) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench: error: {e:#}");
                1
            }
        },
        Err(e) => {
            eprintln!("bench: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
