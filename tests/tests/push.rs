//! incus-push against the real lab daemons: what `incus` shows on the standby afterwards.

use std::time::Duration;

use incus_standby_tests::{
    Instance, conf_with_an_unreachable_remote, config_get, incus, incus_ok, instance_exists,
    snapshots_of, tool, unique,
};
use serde_json::Value;

fn push(args: &[&str]) -> incus_standby_tests::Output {
    tool("incus-push")
        .args(["--to", "standby"])
        .args(args)
        .run()
}

fn the_push_record(out: &incus_standby_tests::Output) -> Value {
    let records = out.records_of("push");
    assert_eq!(records.len(), 1, "{}\n{}", out.stdout, out.stderr);
    records[0].clone()
}

/// Operations the standby finished in the last few seconds that created an instance.
fn recent_creations(name: &str) -> usize {
    let json = incus_ok(&["query", "standby:/1.0/operations?recursion=1"]);
    let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    let mut count = 0;
    if let Some(map) = v.as_object() {
        for ops in map.values() {
            for op in ops.as_array().into_iter().flatten() {
                let resources = op
                    .get("resources")
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                let description = op.get("description").and_then(Value::as_str).unwrap_or("");
                if description.contains("Creating instance") && resources.contains(name) {
                    count += 1;
                }
            }
        }
    }
    count
}

#[test]
fn copies_then_refreshes_then_skips_on_the_dir_pool() {
    let c = Instance::create("local", &unique("push-dir"));
    c.snapshot("s1");
    c.snapshot("s2");
    let out = push(&[&c.name]);
    out.assert_success();
    let record = the_push_record(&out);
    assert_eq!(record["status"], "copied");
    assert_eq!(record["snapshots"], serde_json::json!(["s1", "s2"]));
    assert_eq!(record["target_remote"], "standby");
    let replica = format!("standby:{}", c.name);
    assert_eq!(snapshots_of(&replica, None), ["s1", "s2"]);

    c.snapshot("s3");
    incus_ok(&["snapshot", "delete", &c.address(), "s1"]);
    let out = push(&[&c.name]);
    out.assert_success();
    let record = the_push_record(&out);
    assert_eq!(record["status"], "refreshed");
    assert_eq!(record["snapshots"], serde_json::json!(["s3"]));
    assert_eq!(snapshots_of(&replica, None), ["s2", "s3"]);
    // Positive control for the check below: a refresh is seen as a migration.
    assert!(
        recent_creations(&c.name) >= 1,
        "the refresh left no trace: the up-to-date check below could not fail"
    );

    std::thread::sleep(Duration::from_secs(6)); // let the earlier operations expire
    let out = push(&[&c.name]);
    out.assert_success();
    assert_eq!(the_push_record(&out)["status"], "up-to-date");
    assert_eq!(
        recent_creations(&c.name),
        0,
        "an up-to-date replica got a migration"
    );
    assert_eq!(snapshots_of(&replica, None), ["s2", "s3"]);
}

#[test]
fn copies_then_refreshes_on_the_btrfs_pool() {
    let c = Instance::builder("local", &unique("push-btrfs"))
        .storage("btrfs")
        .stopped()
        .build();
    c.snapshot("s1");
    push(&["--storage", "btrfs", &c.name]).assert_success();
    let replica = format!("standby:{}", c.name);
    let pool = incus_ok(&["query", &format!("standby:/1.0/instances/{}", c.name)]);
    let v: Value = serde_json::from_str(&pool).unwrap_or(Value::Null);
    assert_eq!(v["expanded_devices"]["root"]["pool"], "btrfs", "{pool}");
    c.snapshot("s2");
    let out = push(&["--storage", "btrfs", &c.name]);
    out.assert_success();
    assert_eq!(the_push_record(&out)["status"], "refreshed");
    assert_eq!(snapshots_of(&replica, None), ["s1", "s2"]);
}

#[test]
fn a_running_source_is_copied_stateless_and_restored_to_its_newest_snapshot() {
    let c = Instance::launch("local", &unique("push-run"));
    c.exec("echo before > /root/state");
    c.snapshot("s1");
    c.exec("echo after > /root/state; echo new > /root/later; sync");
    let out = push(&[&c.name]);
    out.assert_success();
    assert_eq!(the_push_record(&out)["status"], "copied");
    assert_eq!(c.status(), "Running", "the source must keep running");
    let replica = format!("standby:{}", c.name);
    let state = incus_ok(&["file", "pull", &format!("{replica}/root/state"), "-"]);
    assert_eq!(state, "before");
    assert_ne!(
        incus(&["file", "pull", &format!("{replica}/root/later"), "-"]).code,
        0,
        "a file written after the newest snapshot must not be on the replica"
    );
    assert_eq!(config_get(&replica, "user.incus-standby.restored"), "s1");
}

#[test]
fn live_keeps_the_live_synced_state() {
    let c = Instance::launch("local", &unique("push-live"));
    c.snapshot("s1");
    c.exec("echo now > /root/later; sync");
    push(&["--live", &c.name]).assert_success();
    let replica = format!("standby:{}", c.name);
    assert_eq!(
        incus_ok(&["file", "pull", &format!("{replica}/root/later"), "-"]),
        "now"
    );
}

#[test]
fn the_replica_is_inert_after_every_push() {
    let c = Instance::builder("local", &unique("push-inert"))
        .config("boot.autostart", "true")
        .config("snapshots.schedule", "@daily")
        .stopped()
        .build();
    c.snapshot("s1");
    push(&[&c.name]).assert_success();
    let replica = format!("standby:{}", c.name);
    assert_eq!(config_get(&replica, "boot.autostart"), "false");
    assert_eq!(config_get(&replica, "snapshots.schedule"), "");
    // A refresh brings the source's config again: the keys are applied again.
    incus_ok(&["config", "set", &c.address(), "user.note", "changed"]);
    c.snapshot("s2");
    push(&[&c.name]).assert_success();
    assert_eq!(config_get(&replica, "boot.autostart"), "false");
    assert_eq!(config_get(&replica, "snapshots.schedule"), "");
    assert_eq!(config_get(&replica, "user.note"), "changed");
    assert_eq!(
        c.config_get("boot.autostart"),
        "true",
        "the source is never changed"
    );
    assert_eq!(c.config_get("snapshots.schedule"), "@daily");
}

#[test]
fn a_missing_profile_is_named_and_sync_profiles_copies_it() {
    let profile = unique("prof");
    incus_ok(&["profile", "create", &format!("local:{profile}")]);
    incus_ok(&[
        "profile",
        "set",
        &format!("local:{profile}"),
        "user.team",
        "web",
    ]);
    let c = Instance::builder("local", &unique("push-prof"))
        .profile(&profile)
        .stopped()
        .build();
    c.snapshot("s1");
    let out = push(&[&c.name]);
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1);
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&profile), "{message}");
    assert!(message.contains("--sync-profiles"), "{message}");
    assert!(!instance_exists(&format!("standby:{}", c.name), None));

    push(&["--sync-profiles", &c.name]).assert_success();
    assert_eq!(
        incus_ok(&["profile", "get", &format!("standby:{profile}"), "user.team"]),
        "web"
    );
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None), ["s1"]);
    drop(c);
    let _ = incus(&["profile", "delete", &format!("local:{profile}")]);
    let _ = incus(&["profile", "delete", &format!("standby:{profile}")]);
}

#[test]
fn a_running_replica_is_refused_and_left_alone() {
    let c = Instance::create("local", &unique("push-promoted"));
    c.snapshot("s1");
    push(&[&c.name]).assert_success();
    let replica = format!("standby:{}", c.name);
    incus_ok(&["start", &replica]);
    c.snapshot("s2");
    let out = push(&[&c.name]);
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains("running"), "{message}");
    assert!(message.contains(&format!("local:{}", c.name)), "{message}");
    assert!(message.contains("standby"), "{message}");
    assert_eq!(snapshots_of(&replica, None), ["s1"]);
    let status = incus_ok(&["list", &replica, "-f", "csv", "-c", "s"]);
    assert_eq!(status, "RUNNING");
}

#[test]
fn a_foreign_instance_is_refused_unless_adopted() {
    let name = unique("push-foreign");
    let foreign = Instance::create("standby", &name);
    foreign.snapshot("theirs");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    let out = push(&[&c.name]);
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains("--adopt"), "{message}");
    assert_eq!(foreign.snapshots(), ["theirs"]);
    // Adopting it would delete its only snapshot, which the source cannot send again.
    let out = push(&["--adopt", &c.name]);
    out.assert_code(1);
    assert!(out.first_error().contains("--replace"), "{}", out.stderr);
    assert_eq!(foreign.snapshots(), ["theirs"]);

    // One without history is taken over.
    let bare_name = unique("push-foreign-bare");
    let bare = Instance::create("standby", &bare_name);
    let source = Instance::create("local", &bare_name);
    source.snapshot("s1");
    push(&["--adopt", &source.name]).assert_success();
    assert_eq!(bare.snapshots(), ["s1"]);
}

#[test]
fn pull_push_and_relay_modes_all_replicate() {
    for mode in ["pull", "push", "relay"] {
        let c = Instance::create("local", &unique(&format!("push-{mode}")));
        c.snapshot("s1");
        let out = push(&["--mode", mode, &c.name]);
        out.assert_success();
        assert_eq!(the_push_record(&out)["status"], "copied", "{mode}");
        c.snapshot("s2");
        let out = push(&["--mode", mode, &c.name]);
        out.assert_success();
        assert_eq!(the_push_record(&out)["status"], "refreshed", "{mode}");
        assert_eq!(
            snapshots_of(&format!("standby:{}", c.name), None),
            ["s1", "s2"],
            "{mode}"
        );
    }
}

#[test]
fn a_dry_run_reports_and_changes_nothing() {
    let c = Instance::create("local", &unique("push-dry"));
    c.snapshot("s1");
    let out = push(&["--dry-run", &c.name]);
    out.assert_success();
    let record = the_push_record(&out);
    assert_eq!(record["status"], "copied");
    assert_eq!(record["dry_run"], true);
    assert!(!instance_exists(&format!("standby:{}", c.name), None));
}

#[test]
fn stdin_records_select_and_are_forwarded_first() {
    let a = Instance::create("local", &unique("push-in-a"));
    let b = Instance::create("local", &unique("push-in-b"));
    a.snapshot("s1");
    b.snapshot("s1");
    let input = format!(
        "{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{a}\",\"name\":\"s1\"}}\n{{\"type\":\"x-other\",\"note\":1}}\n{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{a}\",\"name\":\"s1\"}}\nnot json\n{{\"type\":\"snapshot\",\"remote\":\"local\",\"project\":\"default\",\"instance\":\"{b}\",\"name\":\"s1\"}}\n{end}",
        a = a.name,
        b = b.name,
        end = incus_standby_tests::END
    );
    let out = tool("incus-push")
        .args(["--to", "standby", "--jobs", "2"])
        .stdin(input)
        .run();
    out.assert_code(1); // the malformed line
    let records = out.records();
    assert_eq!(records[0]["type"], "snapshot");
    assert_eq!(records[1]["type"], "x-other");
    assert_eq!(records[3]["type"], "error");
    assert_eq!(records[3]["line"], 4);
    let pushed: Vec<&str> = out
        .records_of("push")
        .iter()
        .filter_map(|r| r["instance"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(pushed.len(), 2, "duplicates are coalesced: {}", out.stdout);
    assert!(instance_exists(&format!("standby:{}", a.name), None));
    assert!(instance_exists(&format!("standby:{}", b.name), None));
}

#[test]
fn an_unreachable_standby_fails_naming_both_ends() {
    let conf = conf_with_an_unreachable_remote();
    let c = Instance::create("local", &unique("push-gone"));
    c.snapshot("s1");
    let out = tool("incus-push")
        .env("INCUS_CONF", conf.path())
        .args(["--to", "gone", &c.name])
        .run();
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains(&format!("local:{}", c.name)), "{message}");
    assert!(message.contains("gone"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert_eq!(c.snapshots(), ["s1"], "the source is never changed");
}

#[test]
fn an_unknown_instance_is_named_and_the_others_are_pushed() {
    let c = Instance::create("local", &unique("push-known"));
    c.snapshot("s1");
    let missing = unique("push-missing");
    let out = push(&[&missing, &c.name]);
    out.assert_code(1);
    let errors = out.records_of("error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["instance"], missing.as_str());
    assert_eq!(out.records_of("push").len(), 1);
    assert!(out.stderr.contains(&missing), "{}", out.stderr);
}

/// A running instance with ~200 MB of incompressible data and one snapshot: a transfer long
/// enough (a few seconds) to interrupt.
fn big_instance(prefix: &str) -> Instance {
    let c = Instance::launch("local", &unique(prefix));
    c.exec("dd if=/dev/urandom of=/root/big bs=1M count=200 2>/dev/null; sync");
    c.snapshot("s1");
    c
}

fn wait_until_replica_appears(name: &str) {
    for _ in 0..200 {
        if instance_exists(&format!("standby:{name}"), None) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("standby:{name} never appeared");
}

fn wait_for_exit(child: &mut std::process::Child) -> i32 {
    for _ in 0..1200 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("incus-push did not end");
}

#[test]
fn a_run_killed_mid_transfer_converges_on_the_next_run() {
    let c = big_instance("push-kill");
    let mut child = tool("incus-push")
        .args(["--to", "standby", &c.name])
        .spawn();
    wait_until_replica_appears(&c.name);
    child.kill().expect("kill");
    let _ = child.wait();
    assert_eq!(c.snapshots(), ["s1"], "the source is never changed");
    let out = push(&[&c.name]);
    out.assert_success();
    let replica = format!("standby:{}", c.name);
    assert_eq!(snapshots_of(&replica, None), ["s1"]);
    assert_eq!(config_get(&replica, "user.incus-standby.restored"), "s1");
    assert_eq!(config_get(&replica, "boot.autostart"), "false");
    assert_eq!(the_push_record(&push(&[&c.name]))["status"], "up-to-date");
}

#[test]
fn sigterm_mid_copy_cancels_the_transfer_and_the_next_run_converges() {
    let c = big_instance("push-term");
    let mut child = tool("incus-push")
        .args(["--to", "standby", &c.name])
        .spawn();
    wait_until_replica_appears(&c.name);
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let code = wait_for_exit(&mut child);
    assert_eq!(code, 2, "an interrupted run exits 2");
    assert_eq!(c.snapshots(), ["s1"]);
    let out = push(&[&c.name]);
    out.assert_success();
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None), ["s1"]);
    assert_eq!(
        config_get(
            &format!("standby:{}", c.name),
            "user.incus-standby.restored"
        ),
        "s1"
    );
}

#[test]
fn overlapping_runs_never_transfer_the_same_instance_at_once() {
    let c = big_instance("push-overlap");
    let mut first = tool("incus-push")
        .args(["--to", "standby", &c.name])
        .spawn();
    wait_until_replica_appears(&c.name);
    let second = push(&[&c.name]);
    second.assert_code(1);
    let message = second.first_error();
    assert!(message.contains("another incus-push"), "{message}");
    assert_eq!(wait_for_exit(&mut first), 0);
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None), ["s1"]);
    assert_eq!(the_push_record(&push(&[&c.name]))["status"], "up-to-date");
}

#[test]
fn storage_that_a_restore_would_undo_is_refused_before_anything_is_sent() {
    // The source's root disk comes from its profile (pool default): a restored replica would
    // get the standby profile's root disk on pool default while its volume is on btrfs.
    let c = Instance::create("local", &unique("push-pool"));
    c.snapshot("s1");
    let out = push(&["--storage", "btrfs", &c.name]);
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains("--live"), "{message}");
    assert!(message.contains("pool default"), "{message}");
    assert!(!instance_exists(&format!("standby:{}", c.name), None));
    // Without a restore the replica keeps its root disk where it was put.
    push(&["--storage", "btrfs", "--live", &c.name]).assert_success();
    let json = incus_ok(&["query", &format!("standby:/1.0/instances/{}", c.name)]);
    let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    assert_eq!(v["expanded_devices"]["root"]["pool"], "btrfs", "{json}");
}

#[test]
fn wide_parallel_runs_never_hang() {
    // Regression: with many jobs, a request on a reused unix-socket connection to Incus could
    // wait for an answer that never came (60 s, then a retry).
    let project = incus_standby_tests::Project::on_both(&unique("push-wide"));
    for i in 0..16 {
        let c = incus_standby_tests::Instance::builder("local", &format!("w{i}"))
            .project(&project.name)
            .stopped()
            .build();
        c.snapshot("s1");
        std::mem::forget(c); // the project guard deletes them
    }
    let run = || {
        tool("incus-push")
            .args([
                "--to",
                "standby",
                "--project",
                &project.name,
                "--all",
                "--jobs",
                "16",
            ])
            .timeout(Duration::from_secs(20))
            .run()
    };
    let first = run();
    first.assert_success();
    assert_eq!(first.records_of("push").len(), 16);
    for _ in 0..8 {
        let out = run();
        out.assert_success();
        let statuses: Vec<Value> = out
            .records_of("push")
            .iter()
            .map(|r| r["status"].clone())
            .collect();
        assert_eq!(statuses, vec![Value::from("up-to-date"); 16]);
    }
}

#[test]
fn pushing_to_the_source_server_itself_is_refused() {
    // `primary` is the same daemon as `local`, reached over HTTPS.
    let c = Instance::create("local", &unique("push-self"));
    c.snapshot("s1");
    let out = tool("incus-push").args(["--to", "primary", &c.name]).run();
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains("same server"), "{message}");
    assert_eq!(c.snapshots(), ["s1"]);
}

/// Nothing new costs a constant number of requests (issue 12): the instance listings and
/// the storage pools' volume listings of both servers, however many instances.
#[test]
fn an_up_to_date_run_makes_the_same_few_requests_for_two_or_six_instances() {
    let instances: Vec<Instance> = (0..6)
        .map(|i| {
            let c = Instance::create("local", &unique(&format!("push-calls{i}")));
            c.snapshot("s1");
            c
        })
        .collect();
    let names: Vec<&str> = instances.iter().map(|c| c.name.as_str()).collect();
    push(&names).assert_success();
    let requests = |names: &[&str]| incus_standby_tests::up_to_date_push_requests("standby", names);
    let six = requests(&names);
    let two = requests(&names[..2]);
    assert_eq!(six, two, "the requests grow with the instances");
    assert!(six <= 12, "{six} requests");
}

/// A replica snapshot never expires by itself: a copy takes its source snapshot's expiry, and
/// the standby's own daemon would delete it whatever the standby's retention keeps.
#[test]
fn replica_snapshots_do_not_take_their_sources_expiry() {
    let c = Instance::create("local", &unique("push-expiry"));
    let out = tool("incus-snap").args(["--expiry", "1d", &c.name]).run();
    out.assert_success();
    let expires = |address: &str| -> Vec<String> {
        let (remote, name) = address.split_once(':').unwrap_or(("local", address));
        let json = incus_ok(&[
            "query",
            &format!("{remote}:/1.0/instances/{name}/snapshots?recursion=1"),
        ]);
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s["expires_at"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let on_source = expires(&c.name);
    assert_eq!(on_source.len(), 1);
    assert!(!on_source[0].starts_with("0001-"), "{on_source:?}");
    push(&[&c.name]).assert_success();
    let on_replica = expires(&format!("standby:{}", c.name));
    assert_eq!(on_replica.len(), 1);
    assert!(on_replica[0].starts_with("0001-"), "{on_replica:?}");
    // The next snapshot, sent by a refresh, does not expire on the standby either.
    std::thread::sleep(Duration::from_millis(1100));
    tool("incus-snap")
        .args(["--expiry", "1d", &c.name])
        .run()
        .assert_success();
    push(&[&c.name]).assert_success();
    let on_replica = expires(&format!("standby:{}", c.name));
    assert_eq!(on_replica.len(), 2);
    assert!(
        on_replica.iter().all(|t| t.starts_with("0001-")),
        "{on_replica:?}"
    );
}

/// A first copy that Incus fails for a reason known to be transient (a migration connection
/// that drops under load) is made again in the same run, and the record counts it; a refresh
/// that fails so is left to the next run (what it left is not known to be safe to redo).
#[test]
fn a_transient_copy_failure_is_retried_and_counted() {
    let c = Instance::create("local", &unique("push-retry"));
    c.snapshot("s1");
    let flaky = |args: &[&str]| {
        tool("incus-push")
            .env("FAILPOINTS", "push::transfer-transient=1*return")
            .args(["--to", "standby"])
            .args(args)
            .run()
    };
    let out = flaky(&[&c.name]);
    out.assert_success();
    let record = the_push_record(&out);
    assert_eq!(record["status"], "copied", "{record}");
    assert_eq!(record["retries"], 1, "{record}");
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None), ["s1"]);
    c.snapshot("s2");
    let out = flaky(&[&c.name]);
    out.assert_code(1);
    assert!(
        out.first_error().contains("Rsync send failed"),
        "{}",
        out.stderr
    );
    let record = the_push_record(&push(&[&c.name]));
    assert_eq!(record["status"], "refreshed", "{record}");
    assert_eq!(record.get("retries"), None, "{record}");
}
