//! The plumbing every tool shares (the record stream, exit statuses, remotes, projects,
//! certificate pinning), exercised through the real binaries against the lab daemons.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use incus_core::record::SnapshotRecord;
use incus_standby_tests::{
    END, Instance, Output, Project, incus_ok, instance_exists, lab, snapshots_of, tool, unique,
};
use serde_json::Value;

const TOOLS: [&str; 5] = [
    "incus-snap",
    "incus-push",
    "incus-prune",
    "incus-trust",
    "incus-failover",
];

fn str_of<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or_default()
}

/// A copy of the lab's CLI configuration (`config.yml`, client certificate, `servercerts/`)
/// that a test may change.
fn conf_copy() -> tempfile::TempDir {
    let lab = lab();
    let conf = tempfile::tempdir().expect("tempdir");
    for file in ["config.yml", "client.crt", "client.key"] {
        std::fs::copy(lab.conf_dir().join(file), conf.path().join(file)).expect("copy");
    }
    let certs = conf.path().join("servercerts");
    std::fs::create_dir(&certs).expect("mkdir");
    for entry in std::fs::read_dir(lab.conf_dir().join("servercerts")).expect("servercerts") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), certs.join(entry.file_name())).expect("copy");
    }
    conf
}

/// The certificate fingerprint a remote presents (`GET /1.0`).
fn fingerprint(remote: &str) -> String {
    let json = incus_ok(&["query", &format!("{remote}:/1.0")]);
    let v: Value = serde_json::from_str(&json).expect("GET /1.0 is JSON");
    v["environment"]["certificate_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string()
}

fn snap_record_line(instance: &str) -> String {
    format!(
        "{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{instance}\",\"name\":\"up\"}}"
    )
}

/// The stdout lines of a run.
fn lines(out: &Output) -> Vec<&str> {
    out.stdout.lines().collect()
}

#[test]
fn malformed_lines_are_numbered_and_the_good_lines_still_processed_in_order() {
    let a = Instance::create("local", &unique("fnd-bad-a"));
    let b = Instance::create("local", &unique("fnd-bad-b"));
    let input = [
        snap_record_line(&a.name),             // 1
        "not json".to_string(),                // 2
        String::new(),                         // 3: empty, ignored
        "[1, 2]".to_string(),                  // 4: JSON but not an object
        "{\"type\":\"x-note\"}".to_string(),   // 5
        "{\"type\":\"snapshot\",".to_string(), // 6: cut short
        snap_record_line(&b.name),             // 7
    ]
    .join("\n")
        + "\n"
        + END;
    let out = tool("incus-snap")
        .args(["--pattern", "m%d"])
        .stdin(input)
        .run();
    out.assert_code(1);
    let got = lines(&out);
    let records = out.records_before_end();
    assert_eq!(records.len(), 8, "{}", out.stdout);
    assert_eq!(out.end()["status"], "partial");
    assert_eq!(got[0], snap_record_line(&a.name));
    for (i, line) in [(1, 2), (2, 4), (4, 6)] {
        assert_eq!(records[i]["type"], "error", "{}", out.stdout);
        assert_eq!(records[i]["tool"], "incus-snap");
        assert_eq!(records[i]["line"], line, "{}", records[i]);
        assert!(
            str_of(&records[i], "message").contains(&format!("line {line}")),
            "{}",
            records[i]
        );
        assert!(
            records[i].get("instance").is_none(),
            "a malformed line names no instance: {}",
            records[i]
        );
        assert!(
            out.stderr.contains(&format!("stdin line {line}")),
            "{}",
            out.stderr
        );
    }
    assert_eq!(got[3], "{\"type\":\"x-note\"}");
    assert_eq!(got[5], snap_record_line(&b.name));
    assert!(!out.stdout.contains("not json"), "bad lines are replaced");
    // The good lines still selected their instances.
    let own: Vec<&str> = records[6..].iter().map(|r| str_of(r, "instance")).collect();
    assert!(own.contains(&a.name.as_str()), "{}", out.stdout);
    assert!(own.contains(&b.name.as_str()), "{}", out.stdout);
    assert_eq!(a.snapshots(), ["m0"]);
    assert_eq!(b.snapshots(), ["m0"]);
}

#[test]
fn unknown_types_and_fields_pass_through_a_pipeline_byte_for_byte() {
    let c = Instance::create("local", &unique("fnd-fwd"));
    let input = [
        "{\"type\":\"x-future\",\"z\":1,  \"a\":{\"nested\":[1,2.50,null]} ,\"\u{e9}\":\"\\u00fc\u{1F600}\"}"
            .to_string(),
        format!(
            "{{\"type\":\"snapshot\",\"instance\":\"{}\",\"remote\":\"local\",\"name\":\"q\",\"extra\":true,\"n\":1.50e0}}",
            c.name
        ),
        "  {\"no_type\":\"at all\"}  ".to_string(),
        "{\"type\":\"x-dup\",\"k\":1,\"k\":2}".to_string(),
    ];
    let snap = tool("incus-snap")
        .args(["--pattern", "fw%d"])
        .stdin(input.join("\n") + "\n" + END)
        .run();
    snap.assert_success();
    let got = lines(&snap);
    assert_eq!(got.len(), input.len() + 2, "{}", snap.stdout);
    let want: Vec<&str> = input.iter().map(String::as_str).collect();
    assert_eq!(got[..input.len()], want[..]);
    assert_eq!(snapshots_of(&c.name, None), ["fw0"]);
    assert_eq!(snap.end()["status"], "ok");

    // The next tool in the pipeline forwards all of it, the snap record too, unchanged; the
    // end record is folded into its own, written last.
    let push = tool("incus-push")
        .args(["--to", "standby", "--dry-run"])
        .stdin(snap.stdout.clone())
        .run();
    push.assert_success();
    let forwarded = lines(&push);
    let kept = got.len() - 1;
    assert_eq!(forwarded[..kept], got[..kept], "{}", push.stdout);
    assert_eq!(push.end()["tool"], "incus-push");
    assert_eq!(
        push.records_of("end").len(),
        1,
        "one end record: {}",
        push.stdout
    );
    let pushed = push.records_of("push");
    assert_eq!(pushed.len(), 1, "{}", push.stdout);
    assert_eq!(pushed[0]["instance"], c.name.as_str());
    assert_eq!(pushed[0]["dry_run"], true);
    assert!(!instance_exists(&format!("standby:{}", c.name), None));
}

/// Reads one line of the tool's stdout, closes the pipe, and returns the exit code and stderr.
fn read_one_line_then_close(cmd: incus_standby_tests::Cmd) -> (String, i32, String) {
    let mut child = cmd.spawn();
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read a line");
    // `stdout` was moved into the reader, which is dropped here: the pipe is closed.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    (first, code, stderr)
}

#[test]
fn a_closed_stdout_stops_the_tool_with_a_failure() {
    let instances: Vec<Instance> = (0..4)
        .map(|i| Instance::create("local", &unique(&format!("fnd-head{i}"))))
        .collect();
    let mut args = vec!["--jobs".to_string(), "1".to_string()];
    args.extend(["--pattern".to_string(), "h%d".to_string()]);
    args.extend(instances.iter().map(|i| i.name.clone()));
    let (first, code, stderr) = read_one_line_then_close(tool("incus-snap").args(&args));
    let record: Value = serde_json::from_str(&first).expect("the first line is JSON");
    assert_eq!(record["type"], "snapshot", "{first}");
    // The records were not delivered: not a success, as SIGPIPE would say; no new work.
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("stdout was closed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    let taken: usize = instances.iter().map(|i| i.snapshots().len()).sum();
    assert!(taken < 4, "the run went on after stdout closed");

    // Forwarding more than a pipe holds: the tool is certainly writing when the pipe closes.
    let input =
        "{\"type\":\"x-filler\",\"pad\":\"................................................\"}\n"
            .repeat(4000);
    let (first, code, stderr) = read_one_line_then_close(
        tool("incus-snap")
            .args(["--pattern", "h%d", &instances[0].name])
            .stdin(input),
    );
    assert!(first.starts_with("{\"type\":\"x-filler\""), "{first}");
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}

#[test]
fn a_changed_server_certificate_is_refused_before_anything_is_sent() {
    let lab = lab();
    let conf = conf_copy();
    std::fs::copy(
        lab.primary_dir().join("server.crt"),
        conf.path().join("servercerts/standby.crt"),
    )
    .expect("replace the pinned certificate");
    let presented = fingerprint("standby");
    let pinned = fingerprint("local");
    assert_ne!(presented, pinned);

    let r = Instance::create("standby", &unique("fnd-cert-r"));
    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .arg(r.address())
        .run();
    assert!(matches!(out.code, 1 | 2), "{out:?}");
    assert!(out.stderr.contains("\"standby\""), "{}", out.stderr);
    assert!(out.stderr.contains(&presented), "{}", out.stderr);
    assert!(out.stderr.contains(&pinned), "{}", out.stderr);
    if out.code == 1 {
        let errors = out.records_of("error");
        assert_eq!(errors.len(), 1, "{}", out.stdout);
        let message = str_of(&errors[0], "message");
        assert!(message.contains(&presented) && message.contains(&pinned));
    }
    assert!(out.records_of("snapshot").is_empty(), "{}", out.stdout);
    assert!(r.snapshots().is_empty(), "a snapshot reached the standby");

    let c = Instance::create("local", &unique("fnd-cert-c"));
    c.snapshot("s1");
    let out = tool("incus-push")
        .env("INCUS_CONF", conf.path())
        .args(["--to", "standby", &c.name])
        .run();
    assert!(matches!(out.code, 1 | 2), "{out:?}");
    assert!(out.stderr.contains("\"standby\""), "{}", out.stderr);
    assert!(out.stderr.contains(&presented), "{}", out.stderr);
    assert!(out.stderr.contains(&pinned), "{}", out.stderr);
    assert!(out.records_of("push").is_empty(), "{}", out.stdout);
    assert!(
        !instance_exists(&format!("standby:{}", c.name), None),
        "something was created on the standby"
    );
}

#[test]
fn an_empty_pipe_with_no_targets_is_nothing_to_do() {
    for (name, args) in [
        ("incus-snap", &[][..]),
        ("incus-snap", &["schedule", "--cron", "@daily"][..]),
        ("incus-push", &["--to", "standby"][..]),
    ] {
        let out = tool(name).args(args).stdin("").run();
        out.assert_success();
        assert_eq!(out.records().len(), 1, "{name} {args:?}: {}", out.stdout);
        assert_eq!(out.end()["status"], "ok");
        assert!(!out.stderr.contains("error"), "{name}: {}", out.stderr);
    }
}

#[test]
fn no_targets_and_no_pipe_is_a_usage_error() {
    // The harness gives /dev/null (a character device) as stdin.
    for (name, args) in [
        ("incus-snap", &[][..]),
        ("incus-snap", &["schedule", "--off"][..]),
        ("incus-push", &["--to", "standby"][..]),
    ] {
        let out = tool(name).args(args).run();
        out.assert_code(2);
        // In band too, for the next tool of a pipeline: a run-level error, then the end.
        let records = out.records_before_end();
        assert_eq!(records.len(), 1, "{name} {args:?}: {}", out.stdout);
        assert_eq!(records[0]["type"], "error");
        assert!(records[0].get("instance").is_none());
        assert_eq!(out.end()["status"], "failed");
        assert!(
            out.stderr.contains("no instances named"),
            "{name} {args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with(&format!("{name}: error:")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn format_text_prints_readable_lines() {
    let c = Instance::create("local", &unique("fnd-text"));
    let missing = unique("fnd-text-missing");
    let out = tool("incus-snap")
        .args(["--format", "text", "--pattern", "t%d", &c.name, &missing])
        .stdin(format!("{{\"type\":\"x-note\",\"remote\":\"standby\",\"instance\":\"gone\",\"error\":\"no\",\"list\":[\"a\",\"b\"]}}\n{END}"))
        .run();
    out.assert_code(1);
    let got = lines(&out);
    assert!(
        got.iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{}",
        out.stdout
    );
    let snapshot = format!("snapshot local:{} name=t0 created_at=", c.name);
    assert!(
        got.iter()
            .any(|l| l.starts_with(&snapshot) && l.ends_with("stateful=false")),
        "{}",
        out.stdout
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("x-note standby:gone") && l.contains("list=a,b")),
        "{}",
        out.stdout
    );
    // Failures go to stderr, readable, naming the instance.
    assert!(
        out.stderr
            .contains(&format!("incus-snap: error: local:{missing}: ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("incus-snap: error: standby:gone: no instance"),
        "{}",
        out.stderr
    );
    assert_eq!(c.snapshots(), ["t0"]);
}

#[test]
fn help_and_version_work_for_every_binary() {
    for name in TOOLS {
        let out = tool(name).arg("--help").run();
        out.assert_success();
        assert!(out.stdout.contains("Usage:"), "{name}: {}", out.stdout);
        assert!(out.stdout.contains(name), "{name}: {}", out.stdout);
        let out = tool(name).arg("--version").run();
        out.assert_success();
        assert_eq!(
            out.stdout.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        let out = tool(name).arg("--no-such-flag").run();
        out.assert_code(2);
    }
    let out = tool("incus-snap").args(["schedule", "--help"]).run();
    out.assert_success();
    assert!(out.stdout.contains("--cron"), "{}", out.stdout);
}

#[test]
fn an_instance_in_a_project_is_found_only_with_that_project() {
    let project = Project::new("local", &unique("fnd-proj"));
    let p = project.name.as_str();
    let c = Instance::builder("local", &unique("fnd-inproj"))
        .project(p)
        .stopped()
        .build();
    let out = tool("incus-snap").args(["--pattern", "p%d", &c.name]).run();
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert_eq!(errors[0]["project"], "default");
    assert!(c.snapshots().is_empty());

    let out = tool("incus-snap")
        .args(["--project", p, "--pattern", "p%d", &c.name])
        .run();
    out.assert_success();
    let records: Vec<SnapshotRecord> = out.records_as("snapshot");
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert_eq!(records[0].of.project, p);
    assert_eq!(c.snapshots(), ["p0"]);

    // A record carrying the project selects it there, without --project.
    let out = tool("incus-snap")
        .args(["--pattern", "p%d"])
        .stdin(format!(
            "{{\"type\":\"x\",\"remote\":\"local\",\"project\":\"{p}\",\"instance\":\"{}\"}}\n{END}",
            c.name
        ))
        .run();
    out.assert_success();
    assert_eq!(c.snapshots(), ["p0", "p1"]);
}

fn set_remote_project(conf: &Path, remote: &str, project: &str) {
    let path = conf.join("config.yml");
    let text = std::fs::read_to_string(&path).expect("config.yml");
    let mut out = String::new();
    let mut in_remote = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 2 {
            in_remote = line.trim() == format!("{remote}:");
        }
        if in_remote && indent == 4 && line.trim_start().starts_with("project:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if in_remote && indent == 2 {
            out.push_str(&format!("    project: {project}\n"));
        }
    }
    std::fs::write(&path, out).expect("write config.yml");
}

#[test]
fn a_remotes_configured_project_is_honoured() {
    let project = Project::on_both(&unique("fnd-rproj"));
    let p = project.name.as_str();
    let r = Instance::builder("standby", &unique("fnd-rp"))
        .project(p)
        .stopped()
        .build();
    let conf = conf_copy();
    set_remote_project(conf.path(), "standby", p);

    // With the lab's configuration (project default) it is not found.
    let out = tool("incus-snap")
        .args(["--pattern", "c%d", &r.address()])
        .run();
    out.assert_code(1);
    assert!(r.snapshots().is_empty());

    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .args(["--pattern", "c%d", &r.address()])
        .run();
    out.assert_success();
    let records: Vec<SnapshotRecord> = out.records_as("snapshot");
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert_eq!(records[0].of.remote, "standby");
    assert_eq!(records[0].of.project, p);
    assert_eq!(r.snapshots(), ["c0"]);

    // `standby:` lists that project only.
    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .args(["--pattern", "c%d", "standby:"])
        .run();
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 1, "{}", out.stdout);
    assert_eq!(r.snapshots(), ["c0", "c1"]);
}

/// A server that speaks only TLS 1.2 (not Incus, or a proxy in the way) is refused: the
/// client offers TLS 1.3 only, as Incus does, and says so in one line.
#[test]
fn a_tls12_only_server_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp384r1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=tls12", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{made:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-tls1_2", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let conf = conf_copy();
    let config = conf.path().join("config.yml");
    let text = std::fs::read_to_string(&config).expect("config.yml");
    let text = text.replacen(
        "remotes:\n",
        &format!(
            "remotes:\n  tls12:\n    addr: https://127.0.0.1:{port}\n    protocol: incus\n    public: false\n"
        ),
        1,
    );
    std::fs::write(&config, text).expect("write config.yml");
    std::fs::copy(&cert, conf.path().join("servercerts/tls12.crt")).expect("pin");
    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .arg("tls12:web")
        .run();
    let _ = server.kill();
    let _ = server.wait();
    assert!(matches!(out.code, 1 | 2), "{out:?}");
    assert!(out.stderr.contains("tls12"), "{}", out.stderr);
    assert!(out.stderr.contains("TLS 1.3"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.records_of("snapshot").is_empty());
}
