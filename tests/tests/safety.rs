//! The standby is the backup (issue 8): every way the pipeline could silently destroy the
//! standby's data or break replication, reproduced against the lab daemons and checked with
//! the `incus` CLI afterwards. Faults are injected with the `fail` crate's failpoints
//! (`FAILPOINTS=push::after-restore=return(abort)` kills incus-push right after that step).

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use incus_standby_tests::{
    Cmd, END, Instance, Output, bin_dir, config_get, incus, incus_ok, instance_exists,
    instances_named, snapshots_of, tool, unique,
};
use serde_json::Value;

fn push(args: &[&str]) -> Output {
    tool("incus-push")
        .args(["--to", "standby"])
        .args(args)
        .run()
}

/// incus-push killed (SIGABRT, no cleanup at all) right after the failpoint `point`.
fn push_killed_after(point: &str, args: &[&str]) -> Output {
    let out = tool("incus-push")
        .env("FAILPOINTS", format!("{point}=return(abort)"))
        .args(["--to", "standby"])
        .args(args)
        .run();
    assert_eq!(
        out.code,
        128 + 6,
        "incus-push was not killed at {point}: {out:?}"
    );
    out
}

fn replica(name: &str) -> String {
    format!("standby:{name}")
}

/// The replica is a finished, inert replica of ours, restored to `newest`.
#[track_caller]
fn assert_inert_replica(name: &str, newest: &str) {
    let r = replica(name);
    assert_eq!(config_get(&r, "boot.autostart"), "false");
    assert_eq!(config_get(&r, "snapshots.schedule.stopped"), "false");
    assert_eq!(config_get(&r, "user.incus-standby.restored"), newest);
    assert!(!config_get(&r, "user.incus-standby.source").is_empty());
    assert!(!config_get(&r, "user.incus-standby.source-uuid").is_empty());
    assert!(!config_get(&r, "user.incus-standby.synced-at").is_empty());
    let status = incus_ok(&["list", &format!("standby:^{name}$"), "-f", "csv", "-c", "s"]);
    assert_eq!(status, "STOPPED");
}

fn sh(script: &str) -> Output {
    Cmd::new("sh").args(["-c", script]).run()
}

fn bin(name: &str) -> String {
    format!("'{}'", bin_dir().join(name).display())
}

/// Finding 1: a source deleted and re-created under the same name used to be refreshed
/// onto the old replica, and Incus's refresh deleted the old history.
#[test]
fn a_recreated_source_is_refused_and_replace_moves_the_old_replica_aside() {
    let name = unique("safe-recreate");
    let c = Instance::create("local", &name);
    for s in ["s1", "s2", "s3"] {
        c.snapshot(s);
    }
    push(&[&name]).assert_success();
    let old_uuid = config_get(&replica(&name), "user.incus-standby.source-uuid");
    assert_eq!(old_uuid, c.config_get("volatile.uuid"));

    incus_ok(&["delete", "--force", &name]);
    incus_ok(&["init", "busybox", &name, "-q"]);
    c.snapshot("n1");
    let out = push(&[&name]);
    out.assert_code(1);
    let message = out.first_error();
    assert!(message.contains("another instance"), "{message}");
    assert!(message.contains("--replace"), "{message}");
    assert_eq!(snapshots_of(&replica(&name), None), ["s1", "s2", "s3"]);
    assert_eq!(out.end()["status"], "partial");

    // --dry-run says where it would go, and changes nothing.
    let out = push(&["--replace", "--dry-run", &name]);
    out.assert_success();
    let record = &out.records_of("push")[0];
    assert!(record["moved_aside"].as_str().is_some(), "{record}");
    assert_eq!(snapshots_of(&replica(&name), None), ["s1", "s2", "s3"]);

    let out = push(&["--replace", &name]);
    out.assert_success();
    let record = &out.records_of("push")[0];
    assert_eq!(record["status"], "copied");
    let aside = record["moved_aside"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(aside.starts_with(&format!("{name}-replaced-")), "{record}");
    assert_eq!(
        instances_named("standby", &format!("{name}-replaced-")),
        [aside.as_str()]
    );
    assert_eq!(snapshots_of(&replica(&aside), None), ["s1", "s2", "s3"]);
    assert_eq!(config_get(&replica(&aside), "boot.autostart"), "false");
    assert!(!config_get(&replica(&aside), "user.incus-standby.replaced").is_empty());
    assert_eq!(snapshots_of(&replica(&name), None), ["n1"]);
    assert_inert_replica(&name, "n1");
    assert_eq!(push(&[&name]).records_of("push")[0]["status"], "up-to-date");

    // Once more, killed right after the move aside: both copies survive, and the next run
    // (without --replace: there is no replica left to refuse) copies the source.
    incus_ok(&["delete", "--force", &name]);
    incus_ok(&["init", "busybox", &name, "-q"]);
    c.snapshot("m1");
    push_killed_after("push::after-move-aside", &["--replace", &name]);
    assert!(!instance_exists(&replica(&name), None));
    let asides = instances_named("standby", &format!("{name}-replaced-"));
    assert_eq!(asides.len(), 2, "{asides:?}");
    push(&[&name]).assert_success();
    assert_inert_replica(&name, "m1");
}

/// Finding 1, the other two ways: a source that shares no snapshot with its replica, or has
/// none at all, would make Incus's refresh delete every snapshot of the replica.
#[test]
fn a_source_with_no_snapshot_or_none_in_common_is_refused() {
    let name = unique("safe-common");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    c.snapshot("s2");
    push(&[&name]).assert_success();

    incus_ok(&["snapshot", "delete", &name, "s1"]);
    incus_ok(&["snapshot", "delete", &name, "s2"]);
    let out = push(&[&name]);
    out.assert_code(1);
    assert!(out.first_error().contains("no snapshot"), "{}", out.stderr);
    assert_eq!(snapshots_of(&replica(&name), None), ["s1", "s2"]);

    c.snapshot("s3");
    let out = push(&[&name]);
    out.assert_code(1);
    assert!(out.first_error().contains("none of them"), "{}", out.stderr);
    assert_eq!(snapshots_of(&replica(&name), None), ["s1", "s2"]);
    assert_inert_replica(&name, "s2");
}

/// Finding 2: with a typo in push's remote, or push killed, prune used to delete the only
/// snapshot the replica shares with the source, and the pipeline exited 0.
#[test]
fn prune_deletes_nothing_when_push_failed_or_was_killed_upstream() {
    let name = unique("safe-pipe");
    let c = Instance::create("local", &name);
    for s in ["auto-1", "auto-2"] {
        c.snapshot(s);
    }
    push(&[&name]).assert_success();

    // The typo: push fails as a whole. No pipefail: the last stage must report it.
    let out = sh(&format!(
        "{snap} {name} | {push} --to stanby | {prune} --keep-last 1",
        snap = bin("incus-snap"),
        push = bin("incus-push"),
        prune = bin("incus-prune"),
    ));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("stanby"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing deleted"), "{}", out.stderr);
    assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
    let end = out.end();
    assert_eq!(end["status"], "failed");
    assert_eq!(
        end["failed"],
        serde_json::json!(["incus-push", "incus-prune"])
    );
    let taken = c.snapshots();
    assert_eq!(taken.len(), 3, "{taken:?}");
    assert_eq!(taken[..2], ["auto-1", "auto-2"]);

    std::thread::sleep(Duration::from_millis(1100)); // the next snapshot gets another name
    // Push killed mid-run (after its transfer): the stream stops without its end record.
    let out = sh(&format!(
        "{snap} {name} | FAILPOINTS=push::after-transfer='return(abort)' {push} --to standby | {prune} --keep-last 1",
        snap = bin("incus-snap"),
        push = bin("incus-push"),
        prune = bin("incus-prune"),
    ));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("without its end record"),
        "{}",
        out.stderr
    );
    assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
    assert_eq!(c.snapshots().len(), 4);

    std::thread::sleep(Duration::from_millis(1100));
    // The next whole run converges, and prune then keeps the anchor only.
    let out = sh(&format!(
        "{push} --to standby {name} | {prune} --keep-last 1",
        push = bin("incus-push"),
        prune = bin("incus-prune"),
    ));
    out.assert_success();
    assert_eq!(out.end()["status"], "ok");
    assert_eq!(c.snapshots().len(), 1);
}

/// The whole cron job, end to end: `incus-snap | incus-push | incus-prune`.
#[test]
fn snap_push_prune_end_to_end() {
    let name = unique("safe-e2e");
    let c = Instance::create("local", &name);
    let job = format!(
        "{snap} {name} | {push} --to standby | {prune} --keep-last 2",
        snap = bin("incus-snap"),
        push = bin("incus-push"),
        prune = bin("incus-prune"),
    );
    for round in 1..=3 {
        let out = sh(&job);
        out.assert_success();
        assert_eq!(out.records_of("snapshot").len(), 1, "{}", out.stdout);
        assert_eq!(out.records_of("push").len(), 1, "{}", out.stdout);
        assert_eq!(out.end()["status"], "ok");
        assert_eq!(out.end()["tool"], "incus-prune");
        let local = c.snapshots();
        assert_eq!(local.len(), round.min(2), "{local:?}");
        // The standby holds what the source held when it was pushed: everything it holds
        // now, plus what prune deleted after the push.
        let remote = snapshots_of(&replica(&name), None);
        let mut expected: Vec<String> = out
            .records_of("pruned")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        expected.extend(local.iter().cloned());
        assert_eq!(remote, expected, "round {round}");
        std::thread::sleep(Duration::from_millis(1100)); // distinct snapshot times
    }
}

/// Finding 3: a restore brings back the snapshot's own configuration; a push killed before
/// it wrote the markers again left a replica every later push refused.
#[test]
fn a_push_killed_between_restore_and_configuration_is_recognised_and_repaired() {
    let name = unique("safe-restore");
    let c = Instance::launch("local", &name);
    c.snapshot("s1");
    push(&[&name]).assert_success();
    c.exec("echo two > /root/round");
    c.snapshot("s2");

    push_killed_after("push::after-restore", &[&name]);
    let r = replica(&name);
    assert_eq!(snapshots_of(&r, None), ["s1", "s2"]);
    if incus_standby_tests::standby_restores_disk_only() {
        // Incus 7.0 restores the disk only: the replica stays inert and marked, with no
        // window in which it carries its snapshot's own settings.
        assert_eq!(config_get(&r, "boot.autostart"), "false");
        assert_eq!(config_get(&r, "volatile.last_state.power"), "");
        assert!(!config_get(&r, "user.incus-standby.source").is_empty());
        assert_eq!(config_get(&r, "user.incus-standby.restored"), "s1");
    } else {
        // Incus 6.0's restore replaced the configuration: the markers are gone.
        assert_eq!(config_get(&r, "user.incus-standby.source"), "");
    }

    let out = push(&[&name]);
    out.assert_success();
    assert_eq!(out.records_of("push")[0]["status"], "refreshed");
    assert_inert_replica(&name, "s2");
    assert_eq!(push(&[&name]).records_of("push")[0]["status"], "up-to-date");
}

/// Finding 3, the configuration write failing (not the process dying): retried, then
/// reported, and the next run repairs it.
#[test]
fn a_failing_configuration_write_is_reported_and_the_next_run_repairs_it() {
    let name = unique("safe-patch");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    let out = tool("incus-push")
        .env("FAILPOINTS", "push::write-config=return(refused)")
        .args(["--to", "standby", &name])
        .run();
    out.assert_code(1);
    let message = out.first_error();
    assert!(
        message.contains("writing the replica's configuration"),
        "{message}"
    );
    assert!(message.contains("next run"), "{message}");
    push(&[&name]).assert_success();
    assert_inert_replica(&name, "s1");
}

/// An interrupted *refresh* (not a first copy) leaves the previous replica usable: inert,
/// ours, with its snapshots; the next run converges.
#[test]
fn an_interrupted_refresh_keeps_the_previous_replica_and_converges() {
    let name = unique("safe-refresh");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    push(&[&name]).assert_success();
    c.snapshot("s2");

    push_killed_after("push::after-transfer", &[&name]);
    let r = replica(&name);
    assert_eq!(snapshots_of(&r, None), ["s1", "s2"]);
    assert_inert_replica(&name, "s1");

    let out = push(&[&name]);
    out.assert_success();
    assert_inert_replica(&name, "s2");
}

/// Finding 4: an unfinished first copy used to be deleted before the profile and pool
/// checks; when a check then failed the standby held nothing.
#[test]
fn an_unfinished_replica_is_kept_when_a_check_refuses_the_copy() {
    let name = unique("safe-unfinished");
    let profile = unique("safe-prof");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    push_killed_after("push::after-transfer", &[&name]);
    let r = replica(&name);
    assert!(instance_exists(&r, None));
    assert_eq!(config_get(&r, "user.incus-standby.synced-at"), "");

    incus_ok(&["profile", "create", &profile]);
    incus_ok(&["profile", "add", &name, &profile]);
    let out = push(&[&name]);
    out.assert_code(1);
    assert!(out.first_error().contains(&profile), "{}", out.stderr);
    assert!(
        instance_exists(&r, None),
        "the unfinished replica was deleted"
    );

    push(&["--sync-profiles", &name]).assert_success();
    assert_inert_replica(&name, "s1");
    drop(c);
    for remote in ["local", "standby"] {
        let _ = incus(&["profile", "delete", &format!("{remote}:{profile}")]);
    }
}

/// Finding 5: a closed stdout used to `exit(0)` from whichever worker wrote, abandoning the
/// other transfers half done. Now: no new work, the transfers under way finish or are
/// cancelled, and the exit status is not 0.
#[test]
fn a_closed_stdout_stops_push_cleanly_and_the_next_run_converges() {
    let small = Instance::create("local", &unique("safe-epipe-s"));
    small.snapshot("s1");
    let big = Instance::launch("local", &unique("safe-epipe-b"));
    big.exec("dd if=/dev/urandom of=/root/big bs=1M count=120 2>/dev/null; sync");
    big.snapshot("s1");
    let more: Vec<Instance> = (0..3)
        .map(|i| {
            let m = Instance::create("local", &unique(&format!("safe-epipe-{i}")));
            m.snapshot("s1");
            m
        })
        .collect();
    let mut names = vec![small.name.clone(), big.name.clone()];
    names.extend(more.iter().map(|m| m.name.clone()));

    let mut child = tool("incus-push")
        .args(["--to", "standby", "--jobs", "2"])
        .args(&names)
        .spawn();
    // A watchdog: a hung push fails the test instead of hanging it.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(300));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("a line");
    // The reader is dropped: the pipe is closed.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stdout was closed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Whatever exists on the standby is a whole replica.
    for name in &names {
        let r = replica(name);
        if instance_exists(&r, None) {
            assert!(
                !config_get(&r, "user.incus-standby.synced-at").is_empty(),
                "{r} was left half done"
            );
        }
    }
    let out = push(&names.iter().map(String::as_str).collect::<Vec<_>>());
    out.assert_success();
    for name in &names {
        assert_inert_replica(name, "s1");
    }
}

/// Finding 6: the lock directory was world-writable; a symlink there is now refused too.
#[test]
fn a_symlinked_lock_directory_is_refused() {
    let c = Instance::create("local", &unique("safe-lock"));
    c.snapshot("s1");
    let base = tempfile::tempdir().expect("tempdir");
    let real = base.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = tool("incus-push")
        .env("INCUS_PUSH_LOCK_DIR", &link)
        .args(["--to", "standby", &c.name])
        .run();
    out.assert_code(1);
    assert!(out.first_error().contains("symlink"), "{}", out.stderr);
    assert!(!instance_exists(&replica(&c.name), None));

    // A world-writable directory (as older versions made it) is made private again.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    tool("incus-push")
        .env("INCUS_PUSH_LOCK_DIR", &real)
        .args(["--to", "standby", &c.name])
        .run()
        .assert_success();
    let mode = std::fs::metadata(&real).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode & 0o002, 0, "still world-writable: {mode:o}");
}

/// Finding 8: a schedule set by a profile used to keep running on the replica (an empty
/// instance value does not override a profile). The positive control, a stopped instance
/// with the same profile on the standby, shows the schedule does fire there.
#[test]
fn a_profile_schedule_never_runs_on_a_replica() {
    let profile = unique("safe-sched");
    for remote in ["local", "standby"] {
        incus_ok(&["profile", "create", &format!("{remote}:{profile}")]);
        incus_ok(&[
            "profile",
            "set",
            &format!("{remote}:{profile}"),
            "snapshots.schedule=* * * * *",
            "snapshots.schedule.stopped=true",
            "snapshots.pattern=sched-{{ creation_date|date:'150405' }}",
        ]);
    }
    let name = unique("safe-sched-i");
    let c = Instance::builder("local", &name)
        .profile(&profile)
        .stopped()
        .build();
    c.snapshot("s1");
    push(&[&name]).assert_success();
    assert_eq!(
        config_get(&replica(&name), "snapshots.schedule.stopped"),
        "false"
    );

    let control = Instance::builder("standby", &unique("safe-sched-ctl"))
        .profile(&profile)
        .stopped()
        .build();
    let deadline = Instant::now() + Duration::from_secs(130);
    while control.snapshots().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the profile's schedule never fired on the standby: the control is broken"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(snapshots_of(&replica(&name), None), ["s1"]);
    drop(control);
    drop(c);
    for remote in ["local", "standby"] {
        let _ = incus(&["profile", "delete", &format!("{remote}:{profile}")]);
    }
}

/// Sets a snapshot's creation time in the primary's database (as a wrong clock would).
fn backdate(instance: &str, snapshot: &str, at: &str) {
    incus_ok(&[
        "admin",
        "sql",
        "global",
        &format!(
            "UPDATE instances_snapshots SET creation_date='{at}' WHERE name='{snapshot}' AND instance_id=(SELECT id FROM instances WHERE name='{instance}')"
        ),
    ]);
}

/// Finding 9: a snapshot dated in the future used to move the --keep-within cutoff, so that
/// every real snapshot fell outside it.
#[test]
fn a_future_dated_snapshot_neither_moves_the_cutoff_nor_is_deleted() {
    let name = unique("safe-future");
    let c = Instance::create("local", &name);
    for s in ["auto-1", "auto-2", "auto-3"] {
        c.snapshot(s);
    }
    backdate(&name, "auto-3", "2099-01-01 00:00:00+00:00");
    let out = tool("incus-prune")
        .args(["--keep-within", "1d", "--explain", &name])
        .run();
    out.assert_success();
    assert!(out.records_of("pruned").is_empty(), "{}", out.stdout);
    assert_eq!(c.snapshots(), ["auto-1", "auto-2", "auto-3"]);
    let future: Vec<Value> = out
        .records_of("kept")
        .into_iter()
        .filter(|k| k["name"] == "auto-3")
        .collect();
    assert_eq!(future[0]["reasons"], serde_json::json!(["future-dated"]));

    // Nor does it take a --keep-last place.
    let out = tool("incus-prune").args(["--keep-last", "1", &name]).run();
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-2", "auto-3"]);
}

/// A failing Incus operation shows Incus's own message (here the snapshot operation fails on
/// a server without CRIU).
#[test]
fn a_failing_operation_shows_incus_own_message() {
    let c = Instance::builder("local", &unique("safe-opfail"))
        .config("migration.stateful", "true")
        .build();
    let out = tool("incus-snap").args(["--stateful", &c.name]).run();
    out.assert_code(1);
    assert!(
        out.first_error().contains("CRIU isn't installed"),
        "{}",
        out.stderr
    );
    assert!(c.snapshots().is_empty());
}

/// Records typed by hand: without their end line a tool takes them for a cut stream; with
/// `{"type":"end"}` they work as a tool's output would.
#[test]
fn records_typed_by_hand_end_with_an_end_line() {
    let c = Instance::create("local", &unique("safe-hand"));
    for s in ["auto-1", "auto-2"] {
        c.snapshot(s);
    }
    let record = format!(
        "{{\"type\":\"x-mine\",\"remote\":\"local\",\"instance\":\"{}\"}}\n",
        c.name
    );
    let out = tool("incus-prune")
        .args(["--keep-last", "1"])
        .stdin(record.clone())
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("{\"type\":\"end\"}"), "{}", out.stderr);
    assert_eq!(c.snapshots(), ["auto-1", "auto-2"]);
    let out = tool("incus-prune")
        .args(["--keep-last", "1"])
        .stdin(record + END)
        .run();
    out.assert_success();
    assert_eq!(c.snapshots(), ["auto-2"]);
}

/// A daemon that died mid-refresh left the replica with a snapshot record that has no
/// volume: Incus refuses every write to it (the lease, the restore), so it would never be
/// replicated again. The record holds no data: incus-push deletes it, says so in the push
/// record's `repaired`, and converges in the same run.
#[test]
fn a_snapshot_record_without_its_volume_is_repaired() {
    let name = unique("safe-ghost");
    let c = Instance::create("local", &name);
    c.snapshot("s1");
    push(&[&name]).assert_success();
    // What a dying daemon leaves: a snapshot row, no storage volume row.
    let standby_dir = incus_standby_tests::lab().standby_dir();
    incus_standby_tests::Cmd::new("incus")
        .env("INCUS_DIR", standby_dir.as_os_str())
        .args([
            "admin",
            "sql",
            "global",
            &format!(
                "INSERT INTO instances_snapshots (instance_id, name, creation_date, description) SELECT id, 'ghost', '2026-12-08 00:00:00', '' FROM instances WHERE name='{name}'"
            ),
        ])
        .run()
        .assert_success();
    let r = replica(&name);
    let broken = incus(&["config", "set", &r, "user.probe=1"]);
    assert!(
        broken.stderr.contains("record count doesn't match"),
        "the lab did not reproduce the stuck replica: {broken:?}"
    );
    c.snapshot("s2");
    let out = push(&[&name]);
    out.assert_success();
    let record = &out.records_of("push")[0];
    assert_eq!(
        record["repaired"],
        serde_json::json!(["ghost"]),
        "{}",
        out.stdout
    );
    assert_eq!(record["status"], "refreshed");
    assert_eq!(snapshots_of(&r, None), ["s1", "s2"]);
    assert_inert_replica(&name, "s2");
}
