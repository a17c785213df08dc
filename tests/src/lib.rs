//! End-to-end test harness for the incus-standby tools.
//!
//! The tests in `tests/tests/*.rs` drive the built binaries (`incus-snap`, `incus-push`, …)
//! and the `incus` CLI against two real Incus daemons started by `scripts/lab.sh up`:
//!
//! | remote    | what it is                                                      |
//! |-----------|-----------------------------------------------------------------|
//! | `local`   | the primary daemon over its unix socket (`INCUS_DIR`)           |
//! | `primary` | the same primary daemon over HTTPS (`127.0.0.1:18443` by default) |
//! | `standby` | the standby daemon over HTTPS (`127.0.0.1:18444` by default)     |
//!
//! Both daemons have a `dir` pool `default` (used by the default profile), a loop-file
//! `btrfs` pool `btrfs`, no network, and a tiny image with alias `busybox` whose init stops
//! at once on `incus stop`.
//!
//! With `scripts/lab.sh up --cluster` (what `scripts/test.sh` runs) there are also
//! `primary-cluster` and `standby-cluster`: two clusters of members `m1` and `m2` each, with a
//! `dir` pool `default`, the same image, and a cluster group `second` holding `m2`
//! (`tests/tests/cluster.rs`).
//!
//! A typical test:
//!
//! ```no_run
//! use incus_standby_tests::{Instance, snapshots_of, tool, unique};
//!
//! let web = Instance::launch("local", &unique("web"));
//! web.snapshot("s1");
//! tool("incus-push")
//!     .args([web.address().as_str(), "standby"])
//!     .run()
//!     .assert_code(0);
//! assert_eq!(snapshots_of(&format!("standby:{}", web.name), None), ["s1"]);
//! // Dropping `web` deletes local:NAME and its replica standby:NAME.
//! ```
//!
//! Tests share the lab and run in parallel: always name instances and projects with
//! [`unique`], and hold them in the [`Instance`] and [`Project`] guards so that they are
//! removed even when the test panics.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod soak;

/// How long [`Cmd::run`] waits for a command before killing it and panicking.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// The lab

/// The running Incus lab, as described by `scripts/lab.sh env`.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The variables printed by `scripts/lab.sh env`: `INCUS_CONF`, `INCUS_DIR` (the primary),
    /// `INCUS_LAB_DIR`, `INCUS_LAB_PRIMARY_PORT`, `INCUS_LAB_STANDBY_PORT`,
    /// `INCUS_LAB_STANDBY_DIR`. Every command started by this crate gets them.
    pub env: Vec<(String, String)>,
    /// The root of the repository (the workspace).
    pub repo: PathBuf,
    /// The lab directory (`INCUS_LAB_DIR`, by default `<repo>/.lab`).
    pub dir: PathBuf,
}

impl Lab {
    /// The value of one of the lab's variables (see [`Lab::env`]).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The lab's incus CLI configuration directory (`INCUS_CONF`): `config.yml` with the
    /// remotes `local`, `primary` and `standby`, `client.crt`/`client.key`, `servercerts/`.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// The primary daemon's `INCUS_DIR` (its unix socket is `unix.socket` in it).
    pub fn primary_dir(&self) -> PathBuf {
        self.dir.join("primary")
    }

    /// The standby daemon's `INCUS_DIR`.
    pub fn standby_dir(&self) -> PathBuf {
        self.dir.join("standby")
    }

    /// The HTTPS port of the primary (`INCUS_LAB_PRIMARY_PORT`).
    pub fn primary_port(&self) -> u16 {
        self.port("INCUS_LAB_PRIMARY_PORT")
    }

    /// The HTTPS port of the standby (`INCUS_LAB_STANDBY_PORT`).
    pub fn standby_port(&self) -> u16 {
        self.port("INCUS_LAB_STANDBY_PORT")
    }

    fn port(&self, name: &str) -> u16 {
        self.var(name)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("scripts/lab.sh env printed no valid {name}"))
    }
}

impl Lab {
    /// The pid of a lab daemon (`"primary"` or `"standby"`), from its `lab.pid`.
    pub fn daemon_pid(&self, daemon: &str) -> String {
        let pid_file = self.dir.join(daemon).join("lab.pid");
        std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
            .trim()
            .to_string()
    }

    /// `scripts/lab.sh up`: restarts a daemon a test killed.
    pub fn up(&self) {
        Cmd::new(repo_root().join("scripts/lab.sh"))
            .arg("up")
            .timeout(Duration::from_secs(300))
            .run()
            .assert_success();
    }
}

/// The root of the repository: the parent of this crate's directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The running lab. The first call runs `scripts/lab.sh env`; if the lab is not running it
/// panics with "the Incus lab is not running: start it with scripts/lab.sh up (or run
/// scripts/test.sh)".
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let repo = repo_root();
        let script = repo.join("scripts").join("lab.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("env")
            .current_dir(&repo)
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            Ok(out) => panic!(
                "the Incus lab is not running: start it with scripts/lab.sh up (or run \
                 scripts/test.sh)\n{} env said: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => panic!(
                "the Incus lab is not running: start it with scripts/lab.sh up (or run \
                 scripts/test.sh)\ncannot run {}: {err}",
                script.display()
            ),
        };
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        let dir = env
            .iter()
            .find(|(k, _)| k == "INCUS_LAB_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| panic!("scripts/lab.sh env printed no INCUS_LAB_DIR"));
        Lab { env, repo, dir }
    })
}

/// Parses `export NAME=VALUE` lines (VALUE quoted as bash's `printf %q` does).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), shell_unquote(v.trim())))
        .collect()
}

/// Undoes simple shell quoting: backslash escapes, '…' and "…".
fn shell_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => out.extend(chars.next()),
                        c => out.push(c),
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Commands

/// The directory holding the built binaries: the profile directory of this test binary
/// (`<target>/debug`), else `$CARGO_TARGET_DIR/debug`, else `<repo>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(profile) = deps.parent()
    {
        return profile.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug")
}

/// Builds the workspace's binaries once per test process (`cargo build --bins --workspace`,
/// with the fault injection points of incus-push), so that [`tool`] runs up-to-date code even
/// under `cargo test -p incus-standby-tests`.
/// Set `INCUS_STANDBY_TESTS_NO_BUILD=1` to skip this.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("INCUS_STANDBY_TESTS_NO_BUILD").is_some_and(|v| v != "0") {
            return;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "--workspace",
            "--features",
            "incus-core/failpoints",
        ]);
        // Drop what `cargo test` adds to a test's environment: some of it (LD_LIBRARY_PATH,
        // CARGO_PKG_*, …) would make cargo rebuild crates whose build scripts watch it.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k == "LD_LIBRARY_PATH"
                || k == "OUT_DIR"
                || k == "RUST_RECURSION_COUNT"
                || k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_CRATE_")
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
            {
                cmd.env_remove(&key);
            }
        }
        if bin_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo build: {e}"));
        assert!(
            out.status.success(),
            "cargo build --bins --workspace failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A command for one of the workspace's binaries (`incus-snap`, `incus-push`, `incus-prune`,
/// `incus-trust`, `incus-failover`), from the target directory (built once per test
/// process). It runs in the lab's environment: the lab variables (`INCUS_CONF`, `INCUS_DIR`,
/// …), `NO_COLOR=1`, the caller's `HOME` and `PATH`, and no other `INCUS_*` variable.
pub fn tool(name: &str) -> Cmd {
    ensure_built();
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: is {name} a binary of the workspace?",
        path.display()
    );
    Cmd::new(path)
}

/// Runs the `incus` CLI with the lab's environment; never panics on a non-zero exit.
pub fn incus(args: &[&str]) -> Output {
    Cmd::new("incus").args(args).run()
}

/// Runs the `incus` CLI with the lab's environment and returns its trimmed stdout;
/// panics (showing stderr) if it fails.
pub fn incus_ok(args: &[&str]) -> String {
    let out = incus(args);
    assert!(
        out.code == 0,
        "incus {} failed with exit code {}:\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout.trim().to_string()
}

/// A command builder that runs in the lab's environment (see [`tool`]).
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<String>,
    dir: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    /// A command for any program (looked up in `PATH` unless it is a path).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            dir: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (after the lab's, so it can override them).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Feeds this text to the command's stdin (otherwise stdin is `/dev/null`).
    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs the command in this directory (default: the repository root).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Replaces the safety timeout of [`Cmd::run`] (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self) -> Command {
        let lab = lab();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("INCUS_") {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(lab.env.iter().map(|(k, v)| (k, v)));
        cmd.env("NO_COLOR", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(self.dir.as_deref().unwrap_or(&lab.repo));
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
        cmd
    }

    /// The [`std::process::Command`] that [`Cmd::spawn`] would start (lab environment,
    /// directory, stdin `/dev/null`, stdout and stderr piped; not the [`Cmd::stdin`] text),
    /// for callers that wire processes together themselves, such as a pipeline.
    pub fn std_command(&self) -> Command {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Starts the command with stdout and stderr piped (stdin: the [`Cmd::stdin`] text,
    /// written by a background thread, else `/dev/null`). The caller owns the child.
    pub fn spawn(&self) -> Child {
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.display()));
        if let (Some(input), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child
    }

    /// Runs the command to completion and returns its exit code and output. After the
    /// safety timeout (300 s by default) the command is killed and this panics.
    pub fn run(&self) -> Output {
        let mut child = self.spawn();
        let out_reader = reader(child.stdout.take());
        let err_reader = reader(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not finish within {:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
                        self.display(),
                        self.timeout,
                        out_reader.join().unwrap_or_default(),
                        err_reader.join().unwrap_or_default()
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {}: {e}", self.display()),
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Output {
            code,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        }
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The `end` record that closes a stream typed by hand (docs/records.md): without it a tool
/// takes the stream for one whose writer was killed.
pub const END: &str = "{\"type\":\"end\"}\n";

/// What a finished command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; 128 + N when killed by signal N.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Every non-empty stdout line parsed as JSON; panics naming the first line that is not.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l:?}\nstdout:\n{}\nstderr:\n{}",
                        self.stdout, self.stderr
                    )
                })
            })
            .collect()
    }

    /// The records whose `"type"` field equals `ty`.
    pub fn records_of(&self, ty: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r.get("type").and_then(Value::as_str) == Some(ty))
            .collect()
    }

    /// The records whose `"type"` field equals `ty`, read as the record type `T` (e.g.
    /// `incus_core::record::PushRecord` for `"push"`): fields `T` does not know are ignored.
    /// Panics, showing the record and the output, if one does not read as `T`.
    #[track_caller]
    pub fn records_as<T: serde::de::DeserializeOwned>(&self, ty: &str) -> Vec<T> {
        self.records_of(ty)
            .into_iter()
            .map(|r| {
                serde_json::from_value(r.clone()).unwrap_or_else(|e| {
                    panic!(
                        "a {ty:?} record does not read as {} ({e}): {r}\nstdout:\n{}\nstderr:\n{}",
                        std::any::type_name::<T>(),
                        self.stdout,
                        self.stderr
                    )
                })
            })
            .collect()
    }

    /// The `end` record, which must be the last line of the output (panics otherwise).
    #[track_caller]
    pub fn end(&self) -> Value {
        let records = self.records();
        match records.last() {
            Some(last) if last["type"] == "end" => last.clone(),
            _ => panic!(
                "the output does not end with an end record\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        }
    }

    /// The records before the `end` record.
    #[track_caller]
    pub fn records_before_end(&self) -> Vec<Value> {
        let _ = self.end();
        let mut records = self.records();
        records.pop();
        records
    }

    /// The message of the first `error` record (panics, showing the output, if there is none).
    #[track_caller]
    pub fn first_error(&self) -> String {
        match self.records_of("error").first() {
            Some(record) => record["message"].as_str().unwrap_or_default().to_string(),
            None => panic!(
                "no error record\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        }
    }

    /// The request count a tool run with `INCUS_STANDBY_STATS=1` printed on stderr
    /// (`TOOL: stats: N API requests`); panics without one.
    pub fn api_requests(&self, tool: &str) -> usize {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{tool}: stats: ")))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no stats line from {tool}: {}", self.stderr))
    }

    /// Panics, showing stdout and stderr, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert!(
            self.code == code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics, showing stdout and stderr, unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }
}

// ---------------------------------------------------------------------------------------
// Names

/// A name unique across tests and test processes: `prefix` + `-` + a short suffix from the
/// process id, the clock and a counter. Valid as an Incus instance, snapshot or project name
/// (letters, digits and dashes, starting with a letter, at most 63 characters): characters
/// of `prefix` that are not allowed become `-`, and a long prefix is cut.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed =
        nanos ^ (u64::from(std::process::id()) << 24) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // 6 base-36 digits from the mix (pid, time), plus the counter so one process never repeats.
    let mut x = splitmix(seed) % 36u64.pow(6);
    let mut suffix = Vec::new();
    for _ in 0..6 {
        suffix.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(x % 36) as usize]);
        x /= 36;
    }
    let suffix = format!("{}{}", String::from_utf8_lossy(&suffix), base36(n));
    let mut p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_alphabetic()) {
        p.insert(0, 't');
    }
    p.truncate(62 - suffix.len());
    format!("{p}-{suffix}")
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![digits[(n % 36) as usize]];
    n /= 36;
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Queries

/// Splits `"remote:name"` (no remote: `local`).
fn split_address(address: &str) -> (&str, &str) {
    address.split_once(':').unwrap_or(("local", address))
}

/// `--project P` if a project is given.
fn project_args(project: Option<&str>) -> Vec<String> {
    project
        .map(|p| vec!["--project".to_string(), p.to_string()])
        .unwrap_or_default()
}

/// The snapshot names of an instance (`"standby:web"`, or `"web"` for `local:web`), oldest
/// first: by `created_at`, and for equal times in the order the server lists them (its
/// creation order). Snapshots received by a copy or refresh have their `created_at`
/// truncated to whole seconds on the target. Panics if the instance does not exist.
pub fn snapshots_of(address: &str, project: Option<&str>) -> Vec<String> {
    let (remote, name) = split_address(address);
    let mut url = format!("{remote}:/1.0/instances/{name}/snapshots?recursion=1");
    if let Some(p) = project {
        url.push_str(&format!("&project={p}"));
    }
    let json = incus_ok(&["query", &url]);
    let list: Vec<Value> = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("incus query {url}: not a JSON list ({e}): {json}"));
    let mut snaps: Vec<(String, String)> = list
        .iter()
        .map(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            let created = s
                .get("created_at")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (sortable_time(created), name.to_string())
        })
        .collect();
    // Stable: equal times keep the server's order (its creation order).
    snaps.sort_by(|a, b| a.0.cmp(&b.0));
    snaps.into_iter().map(|(_, name)| name).collect()
}

/// Makes an RFC 3339 UTC time ("…:05.1Z", "…:05.123456789Z") sort as a string, by padding
/// the fraction to nanoseconds.
fn sortable_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let t = t.strip_suffix("+00:00").unwrap_or(t);
    match t.split_once('.') {
        Some((secs, frac)) => format!("{secs}.{frac:0<9}"),
        None => format!("{t}.000000000"),
    }
}

/// `incus config get ADDRESS KEY` (trimmed); panics if the instance does not exist.
pub fn config_get(address: &str, key: &str) -> String {
    config_get_in(address, key, None)
}

/// [`config_get`] for an instance in a project.
pub fn config_get_in(address: &str, key: &str, project: Option<&str>) -> String {
    let mut args: Vec<String> = vec!["config".into(), "get".into()];
    args.extend(project_args(project));
    args.push(address.into());
    args.push(key.into());
    incus_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One column of `incus list` for one instance (`"standby:web"`, `"s"`: its status;
/// `"L"`: its cluster member), trimmed. A name without a remote is on `local`.
pub fn listed(address: &str, column: &str) -> String {
    let (remote, name) = address.split_once(':').unwrap_or(("local", address));
    incus_ok(&[
        "list",
        &format!("{remote}:^{name}$"),
        "-f",
        "csv",
        "-c",
        column,
    ])
    .trim()
    .to_string()
}

/// Whether an instance exists (`"standby:web"`).
pub fn instance_exists(address: &str, project: Option<&str>) -> bool {
    let (remote, name) = split_address(address);
    let mut url = format!("{remote}:/1.0/instances/{name}");
    if let Some(p) = project {
        url.push_str(&format!("?project={p}"));
    }
    incus(&["query", &url]).code == 0
}

// ---------------------------------------------------------------------------------------
// Guards

/// An instance on a lab remote, deleted (forcibly) when dropped, together with any
/// `standby:NAME` in the same project (the replica a test made).
#[derive(Debug)]
pub struct Instance {
    /// The instance name.
    pub name: String,
    /// The remote: `local` (the primary over its socket), `primary` or `standby`.
    pub remote: String,
    /// The project (`None`: the remote's default project).
    pub project: Option<String>,
    /// The remote whose copy of the same name the guard deletes too: `standby`, or with
    /// [`InstanceBuilder::replicas_on`] another (`standby-cluster`).
    pub replicas: String,
}

impl Instance {
    /// A guard for an instance that exists already (made by a tool under test).
    pub fn existing(remote: &str, name: &str) -> Instance {
        Instance {
            name: name.to_string(),
            remote: remote.to_string(),
            project: None,
            replicas: "standby".to_string(),
        }
    }

    /// `incus launch busybox REMOTE:NAME`: a running instance on the default pool.
    pub fn launch(remote: &str, name: &str) -> Instance {
        Instance::builder(remote, name).build()
    }

    /// `incus init busybox REMOTE:NAME`: a stopped instance on the default pool.
    pub fn create(remote: &str, name: &str) -> Instance {
        Instance::builder(remote, name).stopped().build()
    }

    /// A builder for other storage pools, projects, profiles or config.
    pub fn builder(remote: &str, name: &str) -> InstanceBuilder {
        InstanceBuilder {
            remote: remote.to_string(),
            name: name.to_string(),
            storage: None,
            project: None,
            profiles: Vec::new(),
            config: Vec::new(),
            running: true,
            member: None,
            replicas: "standby".to_string(),
        }
    }

    /// `remote:name`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.remote, self.name)
    }

    /// `--project P` arguments for incus commands on this instance (empty without project).
    pub fn project_args(&self) -> Vec<String> {
        project_args(self.project.as_deref())
    }

    fn incus_ok(&self, args: &[&str]) -> String {
        let mut all: Vec<String> = self.project_args();
        all.extend(args.iter().map(|s| s.to_string()));
        incus_ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `incus exec ADDRESS -- sh -c CMD`: returns trimmed stdout, panics on failure.
    pub fn exec(&self, cmd: &str) -> String {
        self.incus_ok(&["exec", &self.address(), "--", "sh", "-c", cmd])
    }

    /// `incus snapshot create ADDRESS SNAP`.
    pub fn snapshot(&self, snap: &str) {
        self.incus_ok(&["snapshot", "create", &self.address(), snap]);
    }

    /// The snapshot names, oldest first (see [`snapshots_of`]).
    pub fn snapshots(&self) -> Vec<String> {
        snapshots_of(&self.address(), self.project.as_deref())
    }

    /// `incus config get ADDRESS KEY`.
    pub fn config_get(&self, key: &str) -> String {
        config_get_in(&self.address(), key, self.project.as_deref())
    }

    /// `incus start ADDRESS`.
    pub fn start(&self) {
        self.incus_ok(&["start", &self.address()]);
    }

    /// `incus stop --force ADDRESS`.
    pub fn stop(&self) {
        self.incus_ok(&["stop", "--force", &self.address()]);
    }

    /// The instance status as Incus reports it (`Running`, `Stopped`, …).
    pub fn status(&self) -> String {
        let mut url = format!("{}:/1.0/instances/{}", self.remote, self.name);
        if let Some(p) = &self.project {
            url.push_str(&format!("?project={p}"));
        }
        let json = incus_ok(&["query", &url]);
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        v.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let mut remotes = vec![self.remote.as_str()];
        if self.remote != self.replicas {
            remotes.push(self.replicas.as_str());
        }
        for remote in remotes {
            let mut args = self.project_args();
            args.extend([
                "delete".to_string(),
                "--force".to_string(),
                format!("{remote}:{}", self.name),
            ]);
            quiet_incus(&args);
        }
        // Replicas that incus-push --replace moved aside (NAME-replaced-DATE), and old
        // primary copies a failback kept aside (NAME-before-failback-DATE).
        let primary = if self.remote == "local" {
            "primary"
        } else {
            self.remote.as_str()
        };
        for (remote, suffix) in [("standby", "replaced"), (primary, "before-failback")] {
            let mut list = self.project_args();
            list.extend([
                "list".to_string(),
                format!("{remote}:^{}-{suffix}-", self.name),
                "-f".to_string(),
                "csv".to_string(),
                "-c".to_string(),
                "n".to_string(),
            ]);
            let names = quiet_incus(&list).map(|out| out.stdout).unwrap_or_default();
            for aside in names.lines().filter(|l| !l.is_empty()) {
                let mut args = self.project_args();
                args.extend([
                    "delete".to_string(),
                    "--force".to_string(),
                    format!("{remote}:{aside}"),
                ]);
                quiet_incus(&args);
            }
        }
    }
}

/// True when the lab's standby restores an instance's disk only
/// (`instance_snapshot_disk_only_restore`, Incus 7.0): incus-push then never leaves a
/// replica with its snapshot's own settings.
pub fn standby_restores_disk_only() -> bool {
    incus_ok(&["query", "standby:/1.0"]).contains("\"instance_snapshot_disk_only_restore\"")
}

/// Runs `incus-push --to TO TARGETS…` with `INCUS_STANDBY_STATS=1`, checks that every replica
/// was found up to date, and returns the number of API requests it made.
pub fn up_to_date_push_requests<S: AsRef<std::ffi::OsStr>>(to: &str, targets: &[S]) -> usize {
    let out = tool("incus-push")
        .env("INCUS_STANDBY_STATS", "1")
        .args(["--to", to])
        .args(targets)
        .run();
    out.assert_success();
    assert!(
        out.records_of("push")
            .iter()
            .all(|r| r["status"] == "up-to-date"),
        "{}",
        out.stdout
    );
    out.api_requests("incus-push")
}

/// The instances on `remote` whose names start with `prefix`.
pub fn instances_named(remote: &str, prefix: &str) -> Vec<String> {
    incus_ok(&[
        "list",
        &format!("{remote}:^{prefix}"),
        "-f",
        "csv",
        "-c",
        "n",
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect()
}

/// Runs incus ignoring every failure (for guards, which may run while panicking).
fn quiet_incus(args: &[String]) -> Option<Output> {
    std::panic::catch_unwind(|| {
        Cmd::new("incus")
            .args(args)
            .timeout(Duration::from_secs(120))
            .run()
    })
    .ok()
}

/// Builds an [`Instance`]; see [`Instance::builder`].
#[derive(Debug, Clone)]
pub struct InstanceBuilder {
    remote: String,
    name: String,
    storage: Option<String>,
    project: Option<String>,
    profiles: Vec<String>,
    config: Vec<(String, String)>,
    running: bool,
    member: Option<String>,
    replicas: String,
}

impl InstanceBuilder {
    /// On a cluster remote: the member (`--target MEMBER`).
    pub fn member(mut self, member: &str) -> Self {
        self.member = Some(member.to_string());
        self
    }

    /// The remote where the guard also deletes the instance's replica (default `standby`).
    pub fn replicas_on(mut self, remote: &str) -> Self {
        self.replicas = remote.to_string();
        self
    }

    /// The storage pool of the root disk (`-s POOL`), e.g. `btrfs`.
    pub fn storage(mut self, pool: &str) -> Self {
        self.storage = Some(pool.to_string());
        self
    }

    /// The project (`--project P`).
    pub fn project(mut self, project: &str) -> Self {
        self.project = Some(project.to_string());
        self
    }

    /// Applies this profile after `default` (`-p default -p NAME …`).
    pub fn profile(mut self, profile: &str) -> Self {
        self.profiles.push(profile.to_string());
        self
    }

    /// Sets an instance config key (`-c KEY=VALUE`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }

    /// Creates the instance stopped (`incus init`) instead of running (`incus launch`).
    pub fn stopped(mut self) -> Self {
        self.running = false;
        self
    }

    /// Creates the instance; panics if that fails.
    pub fn build(self) -> Instance {
        let instance = Instance {
            name: self.name,
            remote: self.remote,
            project: self.project,
            replicas: self.replicas,
        };
        let mut args = instance.project_args();
        args.push(if self.running { "launch" } else { "init" }.to_string());
        args.push("--quiet".to_string());
        args.push("busybox".to_string());
        args.push(instance.address());
        if let Some(pool) = self.storage {
            args.extend(["-s".to_string(), pool]);
        }
        if let Some(member) = self.member {
            args.extend(["--target".to_string(), member]);
        }
        if !self.profiles.is_empty() {
            args.extend(["-p".to_string(), "default".to_string()]);
            for p in self.profiles {
                args.extend(["-p".to_string(), p]);
            }
        }
        for (k, v) in self.config {
            args.extend(["-c".to_string(), format!("{k}={v}")]);
        }
        incus_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        instance
    }
}

/// A project on a lab remote, created with `features.images=false` and
/// `features.profiles=false` (the default profile and the `busybox` image are shared with
/// the default project). When dropped, every instance in it is deleted on `local` and
/// `standby`, then the project itself on both (where it exists).
#[derive(Debug)]
pub struct Project {
    /// The project name.
    pub name: String,
    /// The remote it was created on.
    pub remote: String,
}

impl Project {
    /// `incus project create REMOTE:NAME -c features.images=false -c features.profiles=false`.
    pub fn new(remote: &str, name: &str) -> Project {
        create_project(remote, name);
        Project {
            name: name.to_string(),
            remote: remote.to_string(),
        }
    }

    /// Creates the project on both `local` and `standby`.
    pub fn on_both(name: &str) -> Project {
        let project = Project::new("local", name);
        create_project("standby", name);
        project
    }
}

fn create_project(remote: &str, name: &str) {
    incus_ok(&[
        "project",
        "create",
        &format!("{remote}:{name}"),
        "-c",
        "features.images=false",
        "-c",
        "features.profiles=false",
    ]);
}

impl Drop for Project {
    fn drop(&mut self) {
        let mut remotes: Vec<&str> = vec![self.remote.as_str(), "local", "standby"];
        let mut seen = HashSet::new();
        remotes.retain(|r| seen.insert(*r));
        // "primary" and "local" are the same daemon: deleting twice is harmless.
        for remote in remotes {
            let list = quiet_incus(&[
                "list".to_string(),
                format!("{remote}:"),
                "--project".to_string(),
                self.name.clone(),
                "--format".to_string(),
                "csv".to_string(),
                "--columns".to_string(),
                "n".to_string(),
            ]);
            let Some(list) = list.filter(|o| o.code == 0) else {
                continue;
            };
            for name in list.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                quiet_incus(&[
                    "delete".to_string(),
                    "--force".to_string(),
                    "--project".to_string(),
                    self.name.clone(),
                    format!("{remote}:{name}"),
                ]);
            }
            quiet_incus(&[
                "project".to_string(),
                "delete".to_string(),
                format!("{remote}:{}", self.name),
            ]);
        }
    }
}

/// A copy of the lab's CLI configuration with one more remote, `gone`, that nothing answers.
pub fn conf_with_an_unreachable_remote() -> tempfile::TempDir {
    let lab = lab();
    let conf = tempfile::tempdir().expect("tempdir");
    for file in ["client.crt", "client.key"] {
        std::fs::copy(lab.conf_dir().join(file), conf.path().join(file)).expect("copy");
    }
    std::fs::create_dir(conf.path().join("servercerts")).expect("mkdir");
    std::fs::copy(
        lab.conf_dir().join("servercerts/standby.crt"),
        conf.path().join("servercerts/gone.crt"),
    )
    .expect("copy");
    std::fs::write(
        conf.path().join("config.yml"),
        "default-remote: local\nremotes:\n  local:\n    addr: unix://\n    protocol: incus\n  gone:\n    addr: https://127.0.0.1:1\n    protocol: incus\n",
    )
    .expect("config");
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lab_env() {
        let env = parse_env(
            "export INCUS_CONF=/a/conf\nexport INCUS_DIR=/a\\ b/primary\nnoise\nexport X='q r'\n",
        );
        assert_eq!(
            env,
            [
                ("INCUS_CONF".to_string(), "/a/conf".to_string()),
                ("INCUS_DIR".to_string(), "/a b/primary".to_string()),
                ("X".to_string(), "q r".to_string()),
            ]
        );
    }

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let mut seen = HashSet::new();
        for prefix in ["web", "9lives", "a_b.c", &"x".repeat(80)] {
            for _ in 0..200 {
                let n = unique(prefix);
                assert!(n.len() <= 63, "{n}");
                assert!(n.starts_with(|c: char| c.is_ascii_alphabetic()), "{n}");
                assert!(
                    n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                    "{n}"
                );
                assert!(seen.insert(n.clone()), "duplicate {n}");
            }
        }
    }

    #[test]
    fn records_parse_lines() {
        let out = Output {
            code: 0,
            stdout: "{\"type\":\"a\",\"n\":1}\n\n{\"type\":\"b\"}\n{\"type\":\"a\",\"n\":2}\n"
                .into(),
            stderr: String::new(),
        };
        assert_eq!(out.records().len(), 3);
        let a = out.records_of("a");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1]["n"], 2);
        out.assert_code(0);
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn records_reject_non_json() {
        Output {
            code: 0,
            stdout: "hello\n".into(),
            stderr: String::new(),
        }
        .records();
    }

    #[test]
    fn times_sort() {
        let mut v = [
            sortable_time("2026-01-01T00:00:05.12Z"),
            sortable_time("2026-01-01T00:00:05.1Z"),
            sortable_time("2026-01-01T00:00:05Z"),
        ];
        v.sort();
        assert_eq!(v[0], "2026-01-01T00:00:05.000000000");
        assert_eq!(v[1], "2026-01-01T00:00:05.100000000");
    }
}
