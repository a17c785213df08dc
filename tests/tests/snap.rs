//! incus-snap against the real lab daemons: what `incus snapshot list`, `incus query` and
//! `incus config get` show afterwards, the records, and the exit status.

use incus_standby_tests::{
    Instance, Output, Project, conf_with_an_unreachable_remote, incus_ok, snapshots_of, tool,
    unique,
};
use serde_json::Value;

fn snap(args: &[&str]) -> Output {
    tool("incus-snap").args(args).run()
}

/// One snapshot as `incus query REMOTE:/1.0/instances/NAME/snapshots/SNAP` shows it.
fn server_snapshot(address: &str, project: Option<&str>, snapshot: &str) -> Value {
    let (remote, name) = address.split_once(':').unwrap_or(("local", address));
    let mut url = format!("{remote}:/1.0/instances/{name}/snapshots/{snapshot}");
    if let Some(p) = project {
        url.push_str(&format!("?project={p}"));
    }
    let json = incus_ok(&["query", &url]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{url}: {e}: {json}"))
}

/// The names in `incus snapshot list ADDRESS -f csv` (first column).
fn listed_names(address: &str, project: Option<&str>) -> Vec<String> {
    let mut args = vec!["snapshot", "list", address, "-f", "csv"];
    if let Some(p) = project {
        args.extend(["--project", p]);
    }
    incus_ok(&args)
        .lines()
        .filter_map(|l| l.split(',').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// An RFC 3339 time cut to the second, as the records write it: `…T17:02:33Z`.
fn to_second(t: &str) -> String {
    format!("{}Z", &t[..19])
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS…` (UTC; fraction and zone ignored).
fn unix(t: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        t.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {t:?}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn str_of<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or_default()
}

/// The snapshot record about `instance`; panics unless there is exactly one.
fn record_for(out: &Output, instance: &str) -> Value {
    let found: Vec<Value> = out
        .records_of("snapshot")
        .into_iter()
        .filter(|r| r["instance"] == instance)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one snapshot record for {instance}\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    found[0].clone()
}

/// Checks that a snapshot record describes what the server has, to the second.
fn assert_matches_server(record: &Value, address: &str, project: Option<&str>) {
    let name = str_of(record, "name");
    let on_server = server_snapshot(address, project, name);
    assert_eq!(
        record["created_at"].as_str().unwrap_or_default(),
        to_second(str_of(&on_server, "created_at")),
        "{record} vs {on_server}"
    );
    let server_expiry = str_of(&on_server, "expires_at");
    if server_expiry.is_empty() || server_expiry.starts_with("0001-01-01") {
        assert_eq!(record["expires_at"], Value::Null, "{record}");
    } else {
        assert_eq!(
            str_of(record, "expires_at"),
            to_second(server_expiry),
            "{record} vs {on_server}"
        );
    }
    assert_eq!(record["stateful"], on_server["stateful"], "{record}");
    assert!(
        listed_names(address, project).iter().any(|n| n == name),
        "incus snapshot list {address} does not show {name}"
    );
}

#[test]
fn snapshots_local_and_remote_targets_as_incus_shows_them() {
    let c = Instance::create("local", &unique("snap-loc"));
    let r = Instance::create("standby", &unique("snap-rem"));
    let out = snap(&[&c.name, &r.address()]);
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 2, "{}", out.stdout);

    let local = record_for(&out, &c.name);
    assert_eq!(local["remote"], "local");
    assert_eq!(local["project"], "default");
    assert_eq!(local["stateful"], false);
    assert_eq!(local["expires_at"], Value::Null);
    assert!(str_of(&local, "name").starts_with("auto-"), "{local}");
    assert_eq!(c.snapshots(), [str_of(&local, "name")]);
    assert_matches_server(&local, &c.address(), None);

    let remote = record_for(&out, &r.name);
    assert_eq!(remote["remote"], "standby");
    assert_eq!(remote["project"], "default");
    assert_eq!(r.snapshots(), [str_of(&remote, "name")]);
    assert_matches_server(&remote, &r.address(), None);
    // The default pattern: auto-YYYYMMDD-hhmmss of the creation time.
    let created = str_of(&remote, "created_at");
    let name = str_of(&remote, "name");
    let taken = &name["auto-".len()..];
    assert_eq!(taken.len(), 15, "{name}");
    assert!(
        (0..=2).contains(&(unix(created) - unix(&pattern_time(taken)))),
        "{name} vs created_at {created}"
    );
}

/// Rebuilds `YYYY-MM-DDTHH:MM:SS` from a rendered date whose digits are, in order,
/// year, month, day, hour, minute, second (`20060102-150405`, `2006-01-02_15-04-05`).
fn pattern_time(rendered: &str) -> String {
    let digits: String = rendered.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 14, "{rendered}");
    format!(
        "{}-{}-{}T{}:{}:{}",
        &digits[0..4],
        &digits[4..6],
        &digits[6..8],
        &digits[8..10],
        &digits[10..12],
        &digits[12..14]
    )
}

#[test]
fn the_seed_pattern_is_used_verbatim() {
    let c = Instance::create("local", &unique("snap-seed"));
    let pattern = "rockylinux-test-9{{ creation_date|date:'2006-01-02_15-04-05' }}";
    let out = snap(&["--pattern", pattern, &c.name]);
    out.assert_success();
    let record = record_for(&out, &c.name);
    let name = str_of(&record, "name");
    let rest = name
        .strip_prefix("rockylinux-test-9")
        .unwrap_or_else(|| panic!("{name}"));
    // 2006-01-02_15-04-05
    assert_eq!(rest.len(), 19, "{name}");
    let b = rest.as_bytes();
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16]),
        (b'-', b'-', b'_', b'-', b'-'),
        "{name}"
    );
    let created = str_of(&record, "created_at");
    let delta = unix(created) - unix(&pattern_time(rest));
    assert!((0..=2).contains(&delta), "{name} vs created_at {created}");
    assert_eq!(c.snapshots(), [name]);
    assert_matches_server(&record, &c.address(), None);
}

#[test]
fn the_counter_numbers_past_the_highest_existing_snapshot() {
    let c = Instance::create("local", &unique("snap-cnt"));
    let out = snap(&["--pattern", "snap%d", &c.name]);
    out.assert_success();
    assert_eq!(str_of(&record_for(&out, &c.name), "name"), "snap0");
    let out = snap(&["--pattern", "snap%d", &c.name]);
    out.assert_success();
    assert_eq!(str_of(&record_for(&out, &c.name), "name"), "snap1");
    assert_eq!(c.snapshots(), ["snap0", "snap1"]);

    let d = Instance::create("local", &unique("snap-cnt7"));
    d.snapshot("snap7");
    d.snapshot("other");
    let out = snap(&["--pattern", "snap%d", &d.name]);
    out.assert_success();
    let record = record_for(&out, &d.name);
    assert_eq!(str_of(&record, "name"), "snap8");
    assert_eq!(d.snapshots(), ["snap7", "other", "snap8"]);
    assert_matches_server(&record, &d.address(), None);
}

#[test]
fn an_existing_name_without_counter_is_an_error_and_nothing_is_overwritten() {
    let a = Instance::create("local", &unique("snap-dup"));
    let b = Instance::create("local", &unique("snap-free"));
    a.snapshot("fixed");
    let before = server_snapshot(&a.address(), None, "fixed");
    let out = snap(&["--pattern", "fixed", &a.name, &b.name]);
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert_eq!(errors[0]["instance"], a.name.as_str());
    assert_eq!(errors[0]["tool"], "incus-snap");
    let message = str_of(&errors[0], "message");
    assert!(message.contains("already exists"), "{message}");
    assert!(message.contains("fixed"), "{message}");
    assert!(out.stderr.contains(&a.name), "{}", out.stderr);
    assert_eq!(a.snapshots(), ["fixed"]);
    let after = server_snapshot(&a.address(), None, "fixed");
    assert_eq!(before["created_at"], after["created_at"], "overwritten");
    assert_eq!(str_of(&record_for(&out, &b.name), "name"), "fixed");
    assert_eq!(b.snapshots(), ["fixed"]);
}

#[test]
fn expiry_sets_expires_at_a_day_after_creation() {
    let c = Instance::create("local", &unique("snap-exp"));
    let out = snap(&["--expiry", "1d", "--pattern", "exp%d", &c.name]);
    out.assert_success();
    let record = record_for(&out, &c.name);
    assert_eq!(str_of(&record, "name"), "exp0");
    let on_server = server_snapshot(&c.address(), None, "exp0");
    let created = str_of(&on_server, "created_at");
    let expires = str_of(&on_server, "expires_at");
    let delta = unix(expires) - unix(created);
    assert!(
        (86_400 - 5..=86_400 + 5).contains(&delta),
        "created {created}, expires {expires}"
    );
    assert_eq!(str_of(&record, "expires_at"), to_second(expires));
    assert_matches_server(&record, &c.address(), None);
}

#[test]
fn an_unknown_instance_is_named_and_the_others_are_snapshotted() {
    let a = Instance::create("local", &unique("snap-known-a"));
    let b = Instance::create("local", &unique("snap-known-b"));
    let missing = unique("snap-missing");
    let out = snap(&["--pattern", "k%d", &a.name, &missing, &b.name]);
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert_eq!(errors[0]["instance"], missing.as_str());
    assert_eq!(errors[0]["remote"], "local");
    assert!(
        str_of(&errors[0], "message").contains(&missing),
        "{}",
        errors[0]
    );
    assert!(out.stderr.contains(&missing), "{}", out.stderr);
    assert_eq!(out.records_of("snapshot").len(), 2);
    assert_eq!(a.snapshots(), ["k0"]);
    assert_eq!(b.snapshots(), ["k0"]);
}

#[test]
fn an_unreachable_remote_is_named_and_the_others_are_snapshotted() {
    let conf = conf_with_an_unreachable_remote();
    let c = Instance::create("local", &unique("snap-reach"));
    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .args(["--pattern", "r%d", "gone:web", &c.name, "gone:"])
        .run();
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 2, "{}", out.stdout);
    assert_eq!(errors[0]["remote"], "gone");
    assert_eq!(errors[0]["instance"], "web");
    for error in &errors {
        let message = str_of(error, "message");
        assert!(message.contains("\"gone\""), "{message}");
        assert!(message.contains("127.0.0.1:1"), "{message}");
    }
    assert!(out.stderr.contains("gone"), "{}", out.stderr);
    assert_eq!(str_of(&record_for(&out, &c.name), "name"), "r0");
    assert_eq!(c.snapshots(), ["r0"]);
}

#[test]
fn all_snapshots_every_instance_of_the_project() {
    let project = Project::new("local", &unique("snap-allp"));
    let p = project.name.as_str();
    let a = Instance::builder("local", &unique("snap-all-a"))
        .project(p)
        .stopped()
        .build();
    let b = Instance::builder("local", &unique("snap-all-b"))
        .project(p)
        .stopped()
        .build();
    let out = snap(&["--project", p, "--all", "--pattern", "all%d"]);
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 2, "{}", out.stdout);
    for i in [&a, &b] {
        let record = record_for(&out, &i.name);
        assert_eq!(record["project"], p);
        assert_eq!(record["remote"], "local");
        assert_eq!(str_of(&record, "name"), "all0");
        assert_matches_server(&record, &i.address(), Some(p));
    }
    // REMOTE: is the same as --all for that remote.
    let out = snap(&["--project", p, "local:", "--pattern", "all%d"]);
    out.assert_success();
    assert_eq!(out.records_of("snapshot").len(), 2, "{}", out.stdout);
    assert_eq!(a.snapshots(), ["all0", "all1"]);
    assert_eq!(b.snapshots(), ["all0", "all1"]);
}

/// `--exclude` globs that leave out every name not starting with `prefix` (letters and
/// digits only), so that runs over whole remotes touch only this test's instances.
fn only_starting_with(prefix: &str) -> Vec<String> {
    let mut args = Vec::new();
    for (i, ch) in prefix.char_indices() {
        args.push("--exclude".to_string());
        args.push(format!("{}[!{ch}]*", &prefix[..i]));
    }
    args
}

#[test]
fn all_projects_covers_every_project() {
    let tag = unique("sap").replace('-', "");
    let project = Project::new("local", &unique("snap-allproj"));
    let p = project.name.as_str();
    let mine = Instance::builder("local", &format!("{tag}-p"))
        .project(p)
        .stopped()
        .build();
    let default = Instance::create("local", &format!("{tag}-d"));
    let mut args = vec![
        "--all".to_string(),
        "--all-projects".to_string(),
        "--pattern".to_string(),
        "ap%d".to_string(),
    ];
    args.extend(only_starting_with(&tag));
    let out = snap(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out.assert_success();
    assert_eq!(
        out.records_before_end().len(),
        2,
        "only this test's instances: {}",
        out.stdout
    );
    let record = record_for(&out, &mine.name);
    assert_eq!(record["project"], p);
    assert_matches_server(&record, &mine.address(), Some(p));
    let record = record_for(&out, &default.name);
    assert_eq!(record["project"], "default");
    assert_eq!(mine.snapshots(), ["ap0"]);
    assert_eq!(default.snapshots(), ["ap0"]);
}

#[test]
fn stdin_records_select_are_forwarded_first_and_errors_do_not_select() {
    let a = Instance::create("local", &unique("snap-in-a"));
    let b = Instance::create("local", &unique("snap-in-b"));
    let c = Instance::create("local", &unique("snap-in-c"));
    let lines = [
        format!(
            "{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{}\",\"name\":\"up\"}}",
            a.name
        ),
        "{\"type\":\"x-other\",  \"note\":[1, 2]}".to_string(),
        format!(
            "{{\"type\":\"error\",\"tool\":\"incus-push\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{}\",\"message\":\"upstream\"}}",
            c.name
        ),
        // No project: the remote's own project.
        format!(
            "{{\"type\":\"push\",\"remote\":\"local\",\"instance\":\"{}\"}}",
            b.name
        ),
        // A duplicate selects nothing more.
        format!(
            "{{\"type\":\"x-again\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{}\"}}",
            a.name
        ),
    ];
    let out = tool("incus-snap")
        .args(["--pattern", "in%d"])
        .stdin(lines.join("\n") + "\n" + incus_standby_tests::END)
        .run();
    out.assert_success();
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got.len(), lines.len() + 3, "{}", out.stdout);
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(got[..lines.len()], want[..], "forwarded unchanged");
    // Then the tool's own records, one per selected instance.
    let own: Vec<Value> = got[lines.len()..got.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    let mut named: Vec<&str> = own.iter().map(|r| str_of(r, "instance")).collect();
    named.sort_unstable();
    let mut expected = [a.name.as_str(), b.name.as_str()];
    expected.sort_unstable();
    assert_eq!(named, expected, "{}", out.stdout);
    for record in &own {
        assert_eq!(record["type"], "snapshot", "{record}");
        assert_eq!(record["project"], "default", "{record}");
        assert_eq!(record["name"], "in0", "{record}");
    }
    assert_eq!(a.snapshots(), ["in0"]);
    assert_eq!(b.snapshots(), ["in0"]);
    assert!(
        c.snapshots().is_empty(),
        "an error record selected {}",
        c.name
    );
}

#[test]
fn exclude_running_and_stopped_filter_the_selection() {
    let project = Project::new("local", &unique("snap-filt"));
    let p = project.name.as_str();
    let running = Instance::builder("local", &unique("snap-run"))
        .project(p)
        .build();
    let stopped = Instance::builder("local", &unique("snap-stop"))
        .project(p)
        .stopped()
        .build();
    let skipped = Instance::builder("local", &unique("snap-skipme"))
        .project(p)
        .stopped()
        .build();
    let base = ["--project", p, "--all", "--pattern", "f%d"];

    let out = snap(&[&base[..], &["--exclude", "*skipme*", "--running"]].concat());
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 1, "{}", out.stdout);
    record_for(&out, &running.name);

    let out = snap(&[&base[..], &["--exclude", "*skipme*", "--stopped"]].concat());
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 1, "{}", out.stdout);
    record_for(&out, &stopped.name);

    let out = snap(
        &[
            &base[..],
            &["--exclude", "*-run-*", "--exclude", "*-stop-*"],
        ]
        .concat(),
    );
    out.assert_success();
    assert_eq!(out.records_before_end().len(), 1, "{}", out.stdout);
    record_for(&out, &skipped.name);

    assert_eq!(running.snapshots(), ["f0"]);
    assert_eq!(stopped.snapshots(), ["f0"]);
    assert_eq!(skipped.snapshots(), ["f0"]);
    assert_eq!(running.status(), "Running");
}

#[test]
fn invalid_values_exit_2_before_any_snapshot_is_taken() {
    let c = Instance::create("local", &unique("snap-bad"));
    c.snapshot("s1");
    let cases: [&[&str]; 9] = [
        &["--pattern", "a/b"],
        &["--pattern", ""],
        &["--pattern", "x%d%d"],
        &["--pattern", "{{ creation_date }}"],
        &["--expiry", "bogus"],
        &["--expiry", "0d"],
        &["--expiry", "1d2"],
        &["--jobs", "0"],
        &["--exclude", "[unclosed"],
    ];
    for case in cases {
        let out = snap(&[case, &[c.name.as_str()]].concat());
        out.assert_code(2);
        assert!(
            out.records_before_end()
                .iter()
                .all(|r| r["type"] == "error"),
            "{case:?}: {}",
            out.stdout
        );
        assert!(
            out.stderr.starts_with("incus-snap: error:"),
            "{case:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    // Also when stdin names the instance: nothing is read, forwarded or taken.
    let out = tool("incus-snap")
        .args(["--jobs", "0"])
        .stdin(format!(
            "{{\"type\":\"x\",\"remote\":\"local\",\"instance\":\"{}\"}}\n",
            c.name
        ))
        .run();
    out.assert_code(2);
    let records = out.records_before_end();
    assert_eq!(records.len(), 1, "nothing forwarded: {}", out.stdout);
    assert_eq!(records[0]["type"], "error");
    assert_eq!(c.snapshots(), ["s1"]);
}

#[test]
fn schedule_sets_and_removes_incus_snapshot_config() {
    let c = Instance::create("local", &unique("snap-sched"));
    let r = Instance::create("standby", &unique("snap-sched-r"));
    let pattern = "rockylinux-test-9{{ creation_date|date:'2006-01-02_15-04-05' }}";
    let out = snap(&[
        "schedule",
        "--cron",
        "50 20 * * *",
        "--pattern",
        pattern,
        "--expiry",
        "1d",
        &c.name,
        &r.address(),
    ]);
    out.assert_success();
    let records = out.records_of("schedule");
    assert_eq!(records.len(), 2, "{}", out.stdout);
    for i in [&c, &r] {
        assert_eq!(i.config_get("snapshots.schedule"), "50 20 * * *");
        assert_eq!(i.config_get("snapshots.pattern"), pattern);
        assert_eq!(i.config_get("snapshots.expiry"), "1d");
        assert_eq!(i.config_get("snapshots.schedule.stopped"), "");
        let record = records
            .iter()
            .find(|x| x["instance"] == i.name.as_str())
            .unwrap_or_else(|| panic!("no schedule record for {}", i.name));
        assert_eq!(record["remote"], i.remote.as_str());
        assert_eq!(record["schedule"], "50 20 * * *");
        assert_eq!(record["pattern"], pattern);
        assert_eq!(record["expiry"], "1d");
        assert_eq!(record["stopped"], false);
    }

    let out = snap(&["schedule", "--cron", "@daily", "--include-stopped", &c.name]);
    out.assert_success();
    assert_eq!(c.config_get("snapshots.schedule"), "@daily");
    assert_eq!(c.config_get("snapshots.schedule.stopped"), "true");
    assert_eq!(
        c.config_get("snapshots.pattern"),
        pattern,
        "left as it is when not given"
    );
    assert_eq!(c.config_get("snapshots.expiry"), "1d");
    let record = &out.records_of("schedule")[0];
    assert_eq!(record["stopped"], true);
    assert_eq!(record["schedule"], "@daily");
    assert_eq!(record["pattern"], pattern);

    let out = snap(&["schedule", "--off", &c.name, &r.address()]);
    out.assert_success();
    for i in [&c, &r] {
        for key in [
            "snapshots.schedule",
            "snapshots.pattern",
            "snapshots.expiry",
            "snapshots.schedule.stopped",
        ] {
            assert_eq!(i.config_get(key), "", "{key} of {}", i.address());
        }
    }
    for record in out.records_of("schedule") {
        assert_eq!(record["schedule"], Value::Null, "{record}");
        assert_eq!(record["pattern"], Value::Null, "{record}");
        assert_eq!(record["expiry"], Value::Null, "{record}");
        assert_eq!(record["stopped"], false, "{record}");
    }
    assert!(c.snapshots().is_empty(), "schedule takes no snapshot");
}

#[test]
fn an_invalid_schedule_exits_2_and_leaves_the_config() {
    let c = Instance::builder("local", &unique("snap-cron"))
        .config("snapshots.schedule", "0 3 * * *")
        .config("snapshots.expiry", "2w")
        .stopped()
        .build();
    let cases: [&[&str]; 8] = [
        &["--cron", "61 * * * *"],
        &["--cron", "* * * *"],
        &["--cron", ""],
        &["--cron", "  "],
        &["--cron", "@sometimes"],
        &["--cron", "50 20 * * *", "--expiry", "soon"],
        &["--cron", "50 20 * * *", "--pattern", "a b"],
        &["--off", "--cron", "0 1 * * *", "--expiry", "1d"],
    ];
    for case in cases {
        let out = snap(&[&["schedule"][..], case, &[c.name.as_str()]].concat());
        out.assert_code(2);
        assert!(
            out.records_before_end()
                .iter()
                .all(|r| r["type"] == "error"),
            "{case:?}: {}",
            out.stdout
        );
        assert!(out.stderr.contains("error"), "{case:?}: {}", out.stderr);
        assert_eq!(c.config_get("snapshots.schedule"), "0 3 * * *", "{case:?}");
        assert_eq!(c.config_get("snapshots.expiry"), "2w", "{case:?}");
    }
    let out = snap(&["schedule", "--cron", "61 * * * *", &c.name]);
    assert!(out.stderr.contains("61"), "{}", out.stderr);
    // Neither --cron nor --off: a usage error too.
    snap(&["schedule", &c.name]).assert_code(2);
    assert_eq!(c.config_get("snapshots.schedule"), "0 3 * * *");
}

#[test]
fn a_remote_snapshot_in_a_project_is_recorded_with_its_project() {
    let project = Project::on_both(&unique("snap-rproj"));
    let p = project.name.as_str();
    let r = Instance::builder("standby", &unique("snap-rp"))
        .project(p)
        .stopped()
        .build();
    let out = snap(&["--project", p, "--pattern", "rp%d", &r.address()]);
    out.assert_success();
    let record = record_for(&out, &r.name);
    assert_eq!(record["remote"], "standby");
    assert_eq!(record["project"], p);
    assert_eq!(snapshots_of(&r.address(), Some(p)), ["rp0"]);
    assert_matches_server(&record, &r.address(), Some(p));
}
