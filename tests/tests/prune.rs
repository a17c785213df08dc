//! incus-prune against the real lab daemons: what `incus snapshot list` shows afterwards.

use std::path::Path;
use std::time::Duration;

use incus_core::record::{KeptRecord, PrunedRecord};
use incus_standby_tests::{
    Cmd, Instance, bin_dir, conf_with_an_unreachable_remote, snapshots_of, tool, unique,
};
use serde_json::Value;

fn prune(args: &[&str]) -> incus_standby_tests::Output {
    tool("incus-prune").args(args).run()
}

fn push(args: &[&str]) -> incus_standby_tests::Output {
    tool("incus-push")
        .args(["--to", "standby"])
        .args(args)
        .run()
}

/// Takes the snapshots in this order, each in a later second than the one before (Incus and
/// incus-push compare creation times to the second).
fn take(c: &Instance, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        c.snapshot(name);
    }
}

/// The `name` fields of the records of one type, in output order.
fn names_of(out: &incus_standby_tests::Output, ty: &str) -> Vec<String> {
    out.records_of(ty)
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

fn message_of(record: &Value) -> String {
    record["message"].as_str().unwrap_or_default().to_string()
}

fn push_record_line(name: &str, target_remote: &str) -> String {
    format!(
        "{{\"type\":\"push\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{name}\",\"target_remote\":\"{target_remote}\",\"target_project\":\"default\",\"target_instance\":\"{name}\",\"status\":\"refreshed\",\"snapshots\":[],\"seconds\":0.1}}\n"
    )
}

#[test]
fn keep_last_deletes_old_managed_snapshots_and_leaves_others_alone() {
    let c = Instance::create("local", &unique("prune-last"));
    take(
        &c,
        &["auto-1", "auto-2", "manual", "auto-3", "auto-4", "auto-5"],
    );
    let out = prune(&["--keep-last", "2", &c.name]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["manual", "auto-4", "auto-5"]);
    assert_eq!(names_of(&out, "pruned"), ["auto-1", "auto-2", "auto-3"]);
    for record in out.records_of("pruned") {
        assert_eq!(record["remote"], "local");
        assert_eq!(record["instance"], c.name.as_str());
        assert!(record.get("dry_run").is_none(), "{record}");
        assert!(record["created_at"].as_str().is_some(), "{record}");
    }
    assert!(
        out.records_of("kept").is_empty(),
        "kept only with --explain"
    );
}

#[test]
fn a_dry_run_deletes_nothing_and_explain_gives_the_reasons() {
    let c = Instance::create("local", &unique("prune-dry"));
    take(&c, &["auto-1", "auto-2", "auto-3"]);
    let out = prune(&["--dry-run", "--explain", "--keep-last", "1", &c.name]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-1", "auto-2", "auto-3"]);
    let pruned: Vec<PrunedRecord> = out.records_as("pruned");
    assert_eq!(names_of(&out, "pruned"), ["auto-1", "auto-2"]);
    assert!(pruned.iter().all(|r| r.dry_run), "{}", out.stdout);
    let kept: Vec<KeptRecord> = out.records_as("kept");
    assert_eq!(kept.len(), 1, "{}", out.stdout);
    assert_eq!(kept[0].name, "auto-3");
    assert_eq!(kept[0].reasons, ["keep-last #1"]);
    assert!(kept[0].dry_run);

    // --keep-within counts back from the newest snapshot.
    let out = prune(&["--dry-run", "--explain", "--keep-within", "1H", &c.name]);
    out.assert_success();
    assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
    assert_eq!(names_of(&out, "kept"), ["auto-1", "auto-2", "auto-3"]);
    for record in out.records_as::<KeptRecord>("kept") {
        let reason = record
            .reasons
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        assert!(reason.starts_with("keep-within >= "), "{reason}");
    }

    // Without --dry-run the same run deletes exactly what it announced.
    let out = prune(&["--explain", "--keep-last", "1", &c.name]);
    out.assert_success();
    assert_eq!(names_of(&out, "pruned"), ["auto-1", "auto-2"]);
    assert_eq!(names_of(&out, "kept"), ["auto-3"]);
    assert_eq!(c.snapshots(), ["auto-3"]);
}

#[test]
fn usage_errors_are_refused_before_anything_is_read_or_deleted() {
    let c = Instance::create("local", &unique("prune-usage"));
    take(&c, &["auto-1", "auto-2"]);
    let record = format!(
        "{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{}\",\"name\":\"auto-2\"}}\n",
        c.name
    );
    let cases: [(&[&str], &str); 5] = [
        (&[], "no keep rule"),
        (&["--keep-last", "0"], "no keep rule"),
        (&["--keep-within", "2days"], "--keep-within"),
        (&["--keep-within", "0d"], "--keep-within"),
        (&["--keep-last", "1", "--replica", "nowhere"], "nowhere"),
    ];
    for (args, expected) in cases {
        let out = tool("incus-prune")
            .args(args.iter().copied())
            .arg(&c.name)
            .stdin(record.clone())
            .run();
        out.assert_code(2);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(
            out.records_before_end()
                .iter()
                .all(|r| r["type"] == "error"),
            "{args:?}: stdin was read: {}",
            out.stdout
        );
        assert_eq!(c.snapshots(), ["auto-1", "auto-2"], "{args:?}");
    }
    let out = prune(&[&c.name]);
    assert!(
        out.stderr
            .contains("incus-prune never deletes everything by omission"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_anchor_shared_with_the_replica_survives() {
    let c = Instance::create("local", &unique("prune-anchor"));
    take(&c, &["auto-a", "auto-b"]);
    push(&[&c.name]).assert_success();
    std::thread::sleep(Duration::from_millis(1100));
    take(&c, &["auto-c", "auto-d"]);
    let out = prune(&[
        "--replica",
        "standby",
        "--explain",
        "--keep-last",
        "1",
        &c.name,
    ]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-b", "auto-d"]);
    assert_eq!(names_of(&out, "pruned"), ["auto-a", "auto-c"]);
    let kept = out.records_of("kept");
    assert_eq!(names_of(&out, "kept"), ["auto-b", "auto-d"]);
    assert_eq!(
        kept[0]["reasons"],
        serde_json::json!(["replication-anchor standby"])
    );
    let replica = format!("standby:{}", c.name);
    assert_eq!(
        snapshots_of(&replica, None),
        ["auto-a", "auto-b"],
        "the replica is not pruned"
    );
    // The next push is incremental from the anchor.
    let out = push(&[&c.name]);
    out.assert_success();
    let record = &out.records_of("push")[0];
    assert_eq!(record["status"], "refreshed");
    assert_eq!(record["snapshots"], serde_json::json!(["auto-d"]));
    assert_eq!(snapshots_of(&replica, None), ["auto-b", "auto-d"]);
}

#[test]
fn a_push_record_on_stdin_names_the_replica() {
    let c = Instance::create("local", &unique("prune-anchor-in"));
    take(&c, &["auto-a", "auto-b"]);
    let pushed = push(&[&c.name]);
    pushed.assert_success();
    std::thread::sleep(Duration::from_millis(1100));
    take(&c, &["auto-c", "auto-d"]);
    let out = tool("incus-prune")
        .args(["--keep-last", "1"])
        .stdin(pushed.stdout.clone())
        .run();
    out.assert_success();
    assert_eq!(out.records()[0]["type"], "push", "input is forwarded first");
    assert_eq!(c.snapshots(), ["auto-b", "auto-d"]);
    assert_eq!(names_of(&out, "pruned"), ["auto-a", "auto-c"]);
}

#[test]
fn an_unreachable_replica_deletes_nothing_and_names_it() {
    let conf = conf_with_an_unreachable_remote();
    let c = Instance::create("local", &unique("prune-gone"));
    take(&c, &["auto-1", "auto-2", "auto-3"]);
    let by_flag = tool("incus-prune")
        .env("INCUS_CONF", conf.path())
        .args(["--replica", "gone", "--keep-last", "1", &c.name])
        .run();
    let by_record = tool("incus-prune")
        .env("INCUS_CONF", conf.path())
        .args(["--keep-last", "1"])
        .stdin(push_record_line(&c.name, "gone") + incus_standby_tests::END)
        .run();
    for out in [by_flag, by_record] {
        out.assert_code(1);
        let errors: Vec<Value> = out
            .records_of("error")
            .into_iter()
            .filter(|r| r["tool"] == "incus-prune")
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.stdout);
        assert_eq!(errors[0]["instance"], c.name.as_str());
        let message = message_of(&errors[0]);
        assert!(message.contains(&format!("gone:{}", c.name)), "{message}");
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.contains("nothing deleted"), "{message}");
        assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
        assert_eq!(c.snapshots(), ["auto-1", "auto-2", "auto-3"]);
    }
}

/// Finding 7 of issue 8: a replica that is not there (never pushed, or a wrong
/// --replica-project) used to mean "no anchor", and prune deleted freely.
#[test]
fn a_missing_replica_means_nothing_is_replicated_so_everything_is_kept() {
    let c = Instance::create("local", &unique("prune-noreplica"));
    take(&c, &["auto-1", "auto-2"]);
    let out = prune(&[
        "--replica",
        "standby",
        "--keep-last",
        "1",
        "--explain",
        &c.name,
    ]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-1", "auto-2"]);
    assert!(out.stderr.contains("no replica"), "{}", out.stderr);
    let kept = out.records_of("kept");
    assert_eq!(kept.len(), 2, "{}", out.stdout);
    assert_eq!(
        kept[0]["reasons"],
        serde_json::json!(["no-replica standby"])
    );

    // Pushed, but --replica-project names the wrong project: still nothing deleted.
    tool("incus-push")
        .args(["--to", "standby", &c.name])
        .run()
        .assert_success();
    let out = prune(&[
        "--replica",
        "standby",
        "--replica-project",
        "no-such-project",
        "--keep-last",
        "1",
        &c.name,
    ]);
    assert!(matches!(out.code, 0 | 1), "{out:?}");
    assert_eq!(c.snapshots(), ["auto-1", "auto-2"]);
    // With the right project the anchor (the newest in common) is kept, the rest pruned.
    let out = prune(&["--replica", "standby", "--keep-last", "1", &c.name]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-2"]);
}

#[test]
fn match_widens_the_candidates() {
    let c = Instance::create("local", &unique("prune-match"));
    take(&c, &["auto-1", "manual-1", "daily-1", "manual-2"]);
    let out = prune(&["--match", "manual-*", "--keep-last", "1", &c.name]);
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-1", "daily-1", "manual-2"]);
    let out = prune(&["--match", "*", "--keep-last", "1", &c.name]);
    out.assert_success();
    assert_eq!(names_of(&out, "pruned"), ["auto-1", "daily-1"]);
    assert_eq!(c.snapshots(), ["manual-2"]);
}

#[test]
fn prunes_the_standby_too() {
    let c = Instance::create("local", &unique("prune-standby"));
    take(&c, &["auto-1", "auto-2", "auto-3"]);
    push(&[&c.name]).assert_success();
    let replica = format!("standby:{}", c.name);
    let out = prune(&[&replica, "--keep-last", "1"]);
    out.assert_success();
    let pruned = out.records_of("pruned");
    assert!(
        pruned.iter().all(|r| r["remote"] == "standby"),
        "{}",
        out.stdout
    );
    assert_eq!(snapshots_of(&replica, None), ["auto-3"]);
    assert_eq!(c.snapshots(), ["auto-1", "auto-2", "auto-3"]);
}

#[test]
fn a_failed_push_upstream_keeps_every_snapshot() {
    let c = Instance::create("local", &unique("prune-failed"));
    take(&c, &["auto-1", "auto-2", "auto-3"]);
    let input = format!(
        "{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{name}\",\"name\":\"auto-3\"}}\n{{\"type\":\"error\",\"tool\":\"incus-push\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{name}\",\"message\":\"copying to standby: boom\"}}\n{{\"type\":\"end\",\"tool\":\"incus-push\",\"status\":\"partial\",\"failed\":[\"incus-push\"]}}\n",
        name = c.name
    );
    let out = tool("incus-prune")
        .args(["--keep-last", "1", "--explain"])
        .stdin(input)
        .run();
    // The failure upstream is reported by the last stage too.
    out.assert_code(1);
    assert_eq!(out.end()["failed"], serde_json::json!(["incus-push"]));
    assert_eq!(c.snapshots(), ["auto-1", "auto-2", "auto-3"]);
    assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1, "only the forwarded one: {}", out.stdout);
    assert_eq!(errors[0]["tool"], "incus-push");
    assert_eq!(out.records_of("kept").len(), 3, "{}", out.stdout);
    assert!(out.stderr.contains("incus-push failed"), "{}", out.stderr);
}

#[test]
fn the_pipeline_keeps_the_next_push_incremental() {
    let c = Instance::create("local", &unique("prune-pipe"));
    take(&c, &["auto-a", "auto-b"]);
    push(&[&c.name]).assert_success();
    std::thread::sleep(Duration::from_millis(1100));
    take(&c, &["auto-c", "auto-d"]);
    let _ = tool("incus-prune"); // builds the binaries unless told not to
    let bin: &Path = &bin_dir();
    let script = format!(
        "'{push}' --to standby '{name}' | '{prune}' --keep-last 1",
        push = bin.join("incus-push").display(),
        prune = bin.join("incus-prune").display(),
        name = c.name
    );
    let out = Cmd::new("sh").args(["-c", &script]).run();
    out.assert_success();
    let records = out.records();
    assert_eq!(records[0]["type"], "push", "{}", out.stdout);
    assert_eq!(records[0]["status"], "refreshed");
    assert_eq!(names_of(&out, "pruned"), ["auto-a", "auto-b", "auto-c"]);
    assert_eq!(c.snapshots(), ["auto-d"]);

    let replica = format!("standby:{}", c.name);
    let out = push(&[&c.name]);
    out.assert_success();
    let record = &out.records_of("push")[0];
    assert_ne!(record["status"], "copied", "{record}");
    assert_eq!(record["snapshots"], serde_json::json!([]), "{record}");
    assert_eq!(snapshots_of(&replica, None), ["auto-d"]);
}

/// Scale: a run with nothing to delete decides from the storage pools' listings, so its
/// requests do not grow with the instances; a run that deletes reads each instance's own
/// list first (the listing only spares the instances with nothing to do).
#[test]
fn nothing_to_delete_costs_the_same_for_two_instances_as_for_five() {
    let instances: Vec<Instance> = (0..5)
        .map(|i| Instance::create("local", &unique(&format!("prune-scale{i}"))))
        .collect();
    for c in &instances {
        c.snapshot("auto-1");
    }
    let names: Vec<&str> = instances.iter().map(|c| c.name.as_str()).collect();
    push(&names).assert_success();
    let requests = |names: &[&str]| {
        let out = tool("incus-prune")
            .env("INCUS_STANDBY_STATS", "1")
            .args(["--keep-last", "1", "--replica", "standby"])
            .args(names)
            .run();
        out.assert_success();
        assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
        out.api_requests("incus-prune")
    };
    assert_eq!(requests(&names[..2]), requests(&names));

    // One more snapshot each and --keep-last 1: the old ones go, decided from each
    // instance's own list; the replica keeps what it has.
    std::thread::sleep(Duration::from_millis(1100));
    for c in &instances {
        c.snapshot("auto-2");
    }
    push(&names).assert_success();
    let out = prune(&[
        "--keep-last",
        "1",
        "--replica",
        "standby",
        names[0],
        names[1],
    ]);
    out.assert_success();
    assert_eq!(out.records_of("pruned").len(), 2, "{}", out.stdout);
    assert_eq!(instances[0].snapshots(), ["auto-2"]);
    assert_eq!(
        snapshots_of(&format!("standby:{}", names[0]), None),
        ["auto-1", "auto-2"]
    );
}
