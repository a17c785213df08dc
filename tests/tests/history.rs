//! Standby history (issue 13): archive points keep what the standby's own policy wants when
//! the primary prunes, and `incus-failover promote --at` goes back to one of them.

use std::time::Duration;

use incus_standby_tests::{
    Instance, Output, config_get_in, incus_ok, instances_named, snapshots_of, tool, unique,
};

const ARCHIVE: &str = "incus-standby-archive";

fn push(args: &[&str]) -> Output {
    tool("incus-push")
        .args(["--to", "standby"])
        .args(args)
        .run()
}

/// `incus file pull` of /root/round from an instance of the standby.
fn round_in(project: &str, instance: &str) -> String {
    incus_ok(&[
        "file",
        "pull",
        "--project",
        project,
        &format!("standby:{instance}/root/round"),
        "-",
    ])
}

/// Deletes the archive points of a test.
struct Archives(String);

impl Drop for Archives {
    fn drop(&mut self) {
        let names = incus_standby_tests::incus(&[
            "list",
            "--project",
            ARCHIVE,
            &format!("standby:^{}--", self.0),
            "-f",
            "csv",
            "-c",
            "n",
        ])
        .stdout;
        for name in names.lines().filter(|l| !l.is_empty()) {
            let _ = incus_standby_tests::incus(&[
                "delete",
                "--force",
                "--project",
                ARCHIVE,
                &format!("standby:{name}"),
            ]);
        }
    }
}

fn archives_of(name: &str) -> Vec<String> {
    incus_ok(&[
        "list",
        "--project",
        ARCHIVE,
        &format!("standby:^{name}--"),
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

#[test]
fn the_standby_keeps_three_points_while_the_primary_keeps_one_and_promote_at_goes_back() {
    let name = unique("hist");
    let _archives = Archives(name.clone());
    let c = Instance::builder("local", &name).storage("btrfs").build();
    for round in 1..=5 {
        c.exec(&format!("echo round{round} > /root/round"));
        c.snapshot(&format!("r{round}"));
        let mut args = vec!["--archive-keep-last", "3", name.as_str()];
        if round == 1 {
            args.extend(["--storage", "btrfs"]);
        }
        let out = push(&args);
        out.assert_success();
        tool("incus-prune")
            .args([
                "--match",
                "r*",
                "--keep-last",
                "1",
                "--replica",
                "standby",
                &name,
            ])
            .run()
            .assert_success();
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(c.snapshots(), ["r5"]);
    let replica = format!("standby:{name}");
    assert_eq!(snapshots_of(&replica, None), ["r4", "r5"]);
    let archives = archives_of(&name);
    assert_eq!(archives, [format!("{name}--r3")], "{archives:?}");
    assert_eq!(round_in(ARCHIVE, &archives[0]), "round3");
    assert_eq!(
        config_get_in(
            &format!("standby:{}", archives[0]),
            "boot.autostart",
            Some(ARCHIVE)
        ),
        "false"
    );
    assert_eq!(round_in("default", &name), "round5");

    let status = tool("incus-failover")
        .args(["status", "--standby", "standby", &name])
        .run();
    status.assert_success();
    let record = &status.records_of("status")[0];
    assert_eq!(record["history_points"], 3, "{record}");

    // The ransomware case: today's data is bad, round 3 comes back.
    c.exec("echo encrypted > /root/round");
    let out = tool("incus-failover")
        .args(["promote", "--standby", "standby", "--at", "r3", &name])
        .run();
    out.assert_success();
    let promoted = &out.records_of("promoted")[0];
    assert_eq!(promoted["snapshot"], "r3", "{promoted}");
    assert!(promoted["data_loss_since"].as_str().is_some(), "{promoted}");
    assert_eq!(
        incus_ok(&["exec", &replica, "--", "cat", "/root/round"]),
        "round3"
    );
    // Nothing was lost on the way: the replica it replaced is kept, and so is the primary.
    assert_eq!(
        instances_named("standby", &format!("{name}-replaced-")).len(),
        1
    );
    assert_eq!(c.status(), "Stopped");
    assert_eq!(c.exec_stopped_round(), "encrypted");
}

trait StoppedRound {
    fn exec_stopped_round(&self) -> String;
}

impl StoppedRound for Instance {
    /// /root/round of a stopped local instance.
    fn exec_stopped_round(&self) -> String {
        incus_ok(&[
            "file",
            "pull",
            &format!("local:{}/root/round", self.name),
            "-",
        ])
    }
}

#[test]
fn promote_at_a_replica_snapshot_restores_it() {
    let name = unique("hist-at");
    let c = Instance::launch("local", &name);
    c.exec("echo one > /root/round");
    c.snapshot("s1");
    c.exec("echo two > /root/round");
    c.snapshot("s2");
    push(&[&name]).assert_success();
    let out = tool("incus-failover")
        .args(["promote", "--standby", "standby", "--at", "s1", &name])
        .run();
    out.assert_success();
    assert_eq!(
        incus_ok(&[
            "exec",
            &format!("standby:{name}"),
            "--",
            "cat",
            "/root/round"
        ]),
        "one"
    );
}

#[test]
fn an_interrupted_archive_step_keeps_everything_and_converges() {
    let name = unique("hist-cut");
    let _archives = Archives(name.clone());
    let c = Instance::builder("local", &name)
        .storage("btrfs")
        .stopped()
        .build();
    for s in ["a1", "a2", "a3"] {
        c.snapshot(s);
    }
    push(&["--storage", "btrfs", &name]).assert_success();
    incus_ok(&["snapshot", "delete", &name, "a1"]);
    incus_ok(&["snapshot", "delete", &name, "a2"]);
    c.snapshot("a4");
    let out = tool("incus-push")
        .env("FAILPOINTS", "push::after-archive=return(abort)")
        .args(["--to", "standby", "--archive-keep-last", "5", &name])
        .run();
    assert_eq!(out.code, 134, "{out:?}");
    let replica = format!("standby:{name}");
    assert_eq!(
        snapshots_of(&replica, None),
        ["a1", "a2", "a3"],
        "the replica changed"
    );
    assert_eq!(archives_of(&name).len(), 1);
    let out = push(&["--archive-keep-last", "5", &name]);
    out.assert_success();
    assert_eq!(snapshots_of(&replica, None), ["a3", "a4"]);
    assert_eq!(
        archives_of(&name),
        [format!("{name}--a1"), format!("{name}--a2")]
    );
}

#[test]
fn archive_points_on_a_dir_pool_need_an_explicit_opt_in() {
    let name = unique("hist-dir");
    let _archives = Archives(name.clone());
    let c = Instance::create("local", &name);
    c.snapshot("d1");
    c.snapshot("d2");
    push(&[&name]).assert_success();
    incus_ok(&["snapshot", "delete", &name, "d1"]);
    c.snapshot("d3");
    let out = push(&["--archive-keep-last", "3", &name]);
    out.assert_code(1);
    assert!(
        out.first_error().contains("--archive-full-copies"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshots_of(&format!("standby:{name}"), None), ["d1", "d2"]);
    let out = push(&["--archive-keep-last", "3", "--archive-full-copies", &name]);
    out.assert_success();
    assert_eq!(archives_of(&name), [format!("{name}--d1")]);
}
