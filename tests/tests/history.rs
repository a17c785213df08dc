//! Standby history (issue 13): archive points keep what the standby's own policy wants when
//! the primary prunes, and `incus-failover promote --at` goes back to one of them.

use std::time::Duration;

use incus_core::record::{PromotedRecord, StatusRecord};
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
    let record = &status.records_as::<StatusRecord>("status")[0];
    assert_eq!(record.history_points, 3, "{record:?}");

    // The ransomware case: today's data is bad, round 3 comes back.
    c.exec("echo encrypted > /root/round");
    let out = tool("incus-failover")
        .args(["promote", "--standby", "standby", "--at", "r3", &name])
        .run();
    out.assert_success();
    let promoted = &out.records_as::<PromotedRecord>("promoted")[0];
    assert_eq!(promoted.snapshot.as_deref(), Some("r3"), "{promoted:?}");
    assert!(promoted.data_loss_since.is_some(), "{promoted:?}");
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

/// A certificate restricted to one project on the standby (what a primary should hold in a
/// push deployment): it replicates that project, and it can neither see nor delete the
/// archive points.
#[test]
fn a_restricted_certificate_replicates_its_project_and_cannot_touch_the_archives() {
    let project = incus_standby_tests::Project::on_both(&unique("hist-rp"));
    let p = project.name.clone();
    let client = unique("hist-restricted");
    // The lab (full trust) makes a token restricted to the project.
    let token = tool("incus-trust")
        .args(["token", &format!("standby:{client}"), "--projects", &p])
        .run();
    token.assert_success();
    let token = token.records_of("token")[0]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let conf = tempfile::tempdir().expect("tempdir");
    let out = tool("incus-trust")
        .env("INCUS_CONF", conf.path())
        .args(["add", "sb", "-", "--project", &p])
        .stdin(token)
        .run();
    out.assert_success();
    let restricted = |args: &[&str]| {
        tool("incus-push")
            .env("INCUS_CONF", conf.path())
            .args(args)
            .run()
    };

    // An archive point that must stay out of its reach.
    let keeper = unique("hist-keep");
    incus_standby_tests::incus(&[
        "project",
        "create",
        &format!("standby:{ARCHIVE}"),
        "-c",
        "features.images=false",
        "-c",
        "features.profiles=false",
    ]);
    incus_ok(&[
        "init",
        "standby:busybox",
        &format!("standby:{keeper}"),
        "--project",
        ARCHIVE,
        "-q",
    ]);

    let c = Instance::builder("local", &unique("hist-r"))
        .project(&p)
        .stopped()
        .build();
    c.snapshot("s1");
    let out = restricted(&["--to", "sb", "--project", &p, &c.name]);
    out.assert_success();
    assert_eq!(
        snapshots_of(&format!("standby:{}", c.name), Some(&p)),
        ["s1"]
    );

    // It cannot list or delete the archive project's instances.
    let cli = |args: &[&str]| {
        incus_standby_tests::Cmd::new("incus")
            .env("INCUS_CONF", conf.path())
            .args(args)
            .run()
    };
    let listed = cli(&["list", "sb:", "--project", ARCHIVE, "-f", "csv", "-c", "n"]);
    assert!(
        listed.code != 0 || !listed.stdout.contains(&keeper),
        "{listed:?}"
    );
    let deleted = cli(&[
        "delete",
        "--force",
        &format!("sb:{keeper}"),
        "--project",
        ARCHIVE,
    ]);
    assert_ne!(deleted.code, 0, "{deleted:?}");
    assert!(incus_standby_tests::instance_exists(
        &format!("standby:{keeper}"),
        Some(ARCHIVE)
    ));

    let _ = incus_standby_tests::incus(&[
        "delete",
        "--force",
        &format!("standby:{keeper}"),
        "--project",
        ARCHIVE,
    ]);
    let _ = tool("incus-trust")
        .args(["remove", &format!("standby:{client}")])
        .run();
}

/// The pull deployment: the whole job runs on the standby's host, and the primary holds no
/// credential for the standby; the standby's certificate on the primary is restricted to the
/// project it replicates. Snapshot, replication and prune work; other projects are out of
/// reach.
#[test]
fn the_pull_deployment_works_under_a_certificate_restricted_to_one_project() {
    let project = incus_standby_tests::Project::on_both(&unique("hist-pull"));
    let p = project.name.clone();
    let client = unique("hist-standby-host");
    let token = tool("incus-trust")
        .args(["token", &format!("local:{client}"), "--projects", &p])
        .run();
    token.assert_success();
    let token = token.records_of("token")[0]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The standby host's configuration: the primary through the restricted certificate, the
    // standby itself through its own (here: the lab's, as clientcerts/standby.*).
    let conf = tempfile::tempdir().expect("tempdir");
    tool("incus-trust")
        .env("INCUS_CONF", conf.path())
        .args(["add", "prim", "-", "--project", &p])
        .stdin(token)
        .run()
        .assert_success();
    let lab = incus_standby_tests::lab();
    std::fs::create_dir_all(conf.path().join("clientcerts")).expect("mkdir");
    for (from, to) in [
        ("client.crt", "clientcerts/standby.crt"),
        ("client.key", "clientcerts/standby.key"),
        ("servercerts/standby.crt", "servercerts/standby.crt"),
    ] {
        std::fs::copy(lab.conf_dir().join(from), conf.path().join(to)).expect("copy");
    }
    let config = conf.path().join("config.yml");
    let text = std::fs::read_to_string(&config).expect("config.yml");
    let text = text.replacen(
        "remotes:\n",
        &format!(
            "remotes:\n  standby:\n    addr: https://127.0.0.1:{}\n    protocol: incus\n    public: false\n",
            lab.standby_port()
        ),
        1,
    );
    std::fs::write(&config, text).expect("config.yml");

    let c = Instance::builder("local", &unique("hist-pull-i"))
        .project(&p)
        .stopped()
        .build();
    c.snapshot("old");
    let bin = |t: &str| format!("'{}'", incus_standby_tests::bin_dir().join(t).display());
    let job = format!(
        "set -o pipefail; {snap} --pattern auto-%d prim:{name} | {push} --to standby | {prune} --keep-last 1 --replica standby",
        snap = bin("incus-snap"),
        push = bin("incus-push"),
        prune = bin("incus-prune"),
        name = c.name
    );
    let out = incus_standby_tests::Cmd::new("bash")
        .env("INCUS_CONF", conf.path())
        .args(["-c", &job])
        .run();
    out.assert_success();
    assert_eq!(out.records_of("push").len(), 1, "{}", out.stdout);
    assert_eq!(
        snapshots_of(&format!("standby:{}", c.name), Some(&p)),
        ["old", "auto-0"]
    );

    // Another project of the primary is out of reach.
    let other = Instance::create("local", &unique("hist-pull-other"));
    let out = tool("incus-snap")
        .env("INCUS_CONF", conf.path())
        .args(["--project", "default", &format!("prim:{}", other.name)])
        .run();
    assert_ne!(out.code, 0, "{out:?}");
    assert!(other.snapshots().is_empty());
    let _ = tool("incus-trust")
        .args(["remove", &format!("local:{client}")])
        .run();
}
