//! Incus clusters as the primary and as the standby (`scripts/lab.sh up --cluster`): the
//! remotes `primary-cluster` and `standby-cluster`, each made of members `m1` and `m2` (the
//! same names in both) with a cluster group `second` holding `m2`.
//!
//! The tests of this file run one at a time: one of them stops a member of the primary
//! cluster.

use std::sync::Mutex;
use std::time::Duration;

use incus_standby_tests::{
    Cmd, Instance, Output, incus_ok, instance_exists, instances_named, lab, listed, snapshots_of,
    tool, unique, up_to_date_push_requests,
};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Takes the file's lock (a panicking test poisons it; the next one goes on) and checks
/// that the cluster lab runs. `None` when INCUS_TEST_SKIP_CLUSTER=1 (a run on a lab brought
/// up without `--cluster`).
fn cluster_lab() -> Option<std::sync::MutexGuard<'static, ()>> {
    if std::env::var_os("INCUS_TEST_SKIP_CLUSTER").is_some_and(|v| v == "1") {
        eprintln!("skipped: INCUS_TEST_SKIP_CLUSTER=1 (the cluster tests run on the other lab)");
        return None;
    }
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        lab().var("INCUS_LAB_CLUSTER_PORT").is_some(),
        "the cluster lab is not running: start it with scripts/lab.sh up --cluster (scripts/test.sh does)"
    );
    Some(guard)
}

/// The member an instance lives on, as `incus list` shows it (column L).
fn member_of(address: &str) -> String {
    listed(address, "L")
}

fn status_of(address: &str) -> String {
    listed(address, "s")
}

fn field<'a>(records: &'a [Value], instance: &str, key: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["instance"] == instance)
        .map(|r| &r[key])
        .unwrap_or_else(|| panic!("no record for {instance} in {records:?}"))
}

#[test]
fn cluster_to_standalone_snap_push_prune_see_every_member() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let a = Instance::builder("primary-cluster", &unique("cl-a"))
        .member("m1")
        .stopped()
        .build();
    let b = Instance::builder("primary-cluster", &unique("cl-b"))
        .member("m2")
        .build();
    let targets = [a.address(), b.address()];
    let round = |prune: bool| -> (Output, Output, Option<Output>) {
        let snap = tool("incus-snap").args(&targets).run();
        snap.assert_success();
        let push = tool("incus-push")
            .args(["--to", "standby"])
            .stdin(snap.stdout.clone())
            .run();
        push.assert_success();
        let pruned = prune.then(|| {
            let out = tool("incus-prune")
                .args(["--keep-last", "1"])
                .stdin(push.stdout.clone())
                .run();
            out.assert_success();
            out
        });
        (snap, push, pruned)
    };
    let (snap, push, _) = round(false);
    let snaps = snap.records_of("snapshot");
    assert_eq!(field(&snaps, &a.name, "location"), "m1", "{}", snap.stdout);
    assert_eq!(field(&snaps, &b.name, "location"), "m2", "{}", snap.stdout);
    let pushes = push.records_of("push");
    assert_eq!(field(&pushes, &a.name, "location"), "m1");
    assert_eq!(field(&pushes, &b.name, "location"), "m2");
    assert_eq!(field(&pushes, &b.name, "status"), "copied");
    // A single standby: the replica's member is not said.
    assert!(field(&pushes, &b.name, "target_location").is_null());

    std::thread::sleep(Duration::from_millis(1100));
    let (_, push, pruned) = round(true);
    let pushes = push.records_of("push");
    assert_eq!(
        field(&pushes, &b.name, "status"),
        "refreshed",
        "{}",
        push.stdout
    );
    let pruned = pruned.map(|p| p.records_of("pruned")).unwrap_or_default();
    assert_eq!(
        pruned.len(),
        2,
        "one old snapshot on each member: {pruned:?}"
    );
    for instance in [&a, &b] {
        assert_eq!(instance.snapshots().len(), 1, "{}", instance.name);
        assert_eq!(
            snapshots_of(&format!("standby:{}", instance.name), None).len(),
            2,
            "the replica keeps both"
        );
    }
}

#[test]
fn standalone_to_cluster_places_new_replicas_and_refreshes_them_where_they_live() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let new = |prefix: &str| {
        Instance::builder("local", &unique(prefix))
            .stopped()
            .replicas_on("standby-cluster")
            .build()
    };
    let (a, b, c) = (new("cl-to-m2"), new("cl-to-group"), new("cl-to-any"));
    for i in [&a, &b, &c] {
        i.snapshot("s1");
    }
    let push = |args: &[&str], targets: &[&Instance]| {
        tool("incus-push")
            .args(["--to", "standby-cluster"])
            .args(args)
            .args(targets.iter().map(|i| i.address()))
            .run()
    };
    // A dry run says where the new replica would go: the member asked for.
    let dry = push(&["--target", "m2", "--dry-run"], &[&a]);
    dry.assert_success();
    assert_eq!(
        field(&dry.records_of("push"), &a.name, "target_location"),
        "m2"
    );
    let first = push(&["--target", "m2"], &[&a]);
    first.assert_success();
    assert_eq!(
        field(&first.records_of("push"), &a.name, "target_location"),
        "m2"
    );
    push(&["--target-group", "second"], &[&b]).assert_success();
    let any = push(&[], &[&c]);
    any.assert_success();
    let replica = |i: &Instance| format!("standby-cluster:{}", i.name);
    assert_eq!(member_of(&replica(&a)), "m2");
    assert_eq!(member_of(&replica(&b)), "m2", "the group holds only m2");
    assert_eq!(
        field(&any.records_of("push"), &c.name, "target_location"),
        member_of(&replica(&c)).as_str(),
        "the record says where the cluster put it"
    );

    // The next refresh asks for m1: replicas stay where they are, and are refreshed there
    // (Incus 6.0.4 itself would run the refresh on its scheduler's member, and fail).
    for i in [&a, &b, &c] {
        i.snapshot("s2");
    }
    let second = push(&["--target", "m1"], &[&a, &b, &c]);
    second.assert_success();
    for i in [&a, &b, &c] {
        let record = second
            .records_of("push")
            .into_iter()
            .find(|r| r["instance"] == i.name.as_str())
            .unwrap_or_default();
        assert_eq!(record["status"], "refreshed", "{record}");
        assert_eq!(snapshots_of(&replica(i), None), ["s1", "s2"]);
    }
    assert_eq!(member_of(&replica(&a)), "m2");
    assert_eq!(member_of(&replica(&b)), "m2");
    assert_eq!(config_of(&replica(&a), "boot.autostart"), "false");

    // A member or group the standby lacks, or a --target for a single server: usage errors
    // that name the problem, and nothing is created.
    let d = new("cl-refused");
    d.snapshot("s1");
    for (args, to, says) in [
        (
            vec!["--target", "m9"],
            "standby-cluster",
            "no cluster member \"m9\" (its members: m1, m2)",
        ),
        (
            vec!["--target-group", "nope"],
            "standby-cluster",
            "no cluster group \"nope\"",
        ),
        (vec!["--target", "m1"], "standby", "is a single server"),
    ] {
        let out = tool("incus-push")
            .args(["--to", to])
            .args(&args)
            .arg(d.address())
            .run();
        out.assert_code(2);
        assert!(out.first_error().contains(says), "{args:?}: {}", out.stdout);
        assert!(!instance_exists(&format!("{to}:{}", d.name), None));
    }
}

fn config_of(address: &str, key: &str) -> String {
    incus_ok(&["config", "get", address, key])
        .trim()
        .to_string()
}

#[test]
fn cluster_to_cluster_keeps_members_promotes_and_fails_back_in_place() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let a = Instance::builder("primary-cluster", &unique("cc-web"))
        .member("m2")
        .replicas_on("standby-cluster")
        .build();
    let b = Instance::builder("primary-cluster", &unique("cc-db"))
        .member("m1")
        .stopped()
        .replicas_on("standby-cluster")
        .build();
    let snap = tool("incus-snap").args([a.address(), b.address()]).run();
    snap.assert_success();
    let push = tool("incus-push")
        .args(["--to", "standby-cluster"])
        .stdin(snap.stdout.clone())
        .run();
    push.assert_success();
    // Members of the same name: each replica on its source's member.
    let replica = |i: &Instance| format!("standby-cluster:{}", i.name);
    assert_eq!(member_of(&replica(&a)), "m2");
    assert_eq!(member_of(&replica(&b)), "m1");

    // Nothing new: the bookkeeping does not grow with the instances.
    let count = |targets: &[String]| up_to_date_push_requests("standby-cluster", targets);
    let one = count(&[a.address()]);
    let two = count(&[a.address(), b.address()]);
    assert_eq!(one, two, "the requests grow with the instances");
    let status = tool("incus-failover")
        .args(["status", "--standby", "standby-cluster", &a.address()])
        .run();
    status.assert_success();
    let record = status
        .records_of("status")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert_eq!(record["location"], "m2", "{}", status.stdout);
    assert_eq!(record["replica_location"], "m2");
    assert_eq!(record["ready"], true);

    // Promotion: the replica starts where it lives.
    let promoted = tool("incus-failover")
        .args(["promote", "--standby", "standby-cluster", &a.address()])
        .run();
    promoted.assert_success();
    let record = promoted
        .records_of("promoted")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert_eq!(record["location"], "m2", "{}", promoted.stdout);
    assert_eq!(status_of(&replica(&a)), "RUNNING");
    assert_eq!(member_of(&replica(&a)), "m2");
    assert_eq!(status_of(&a.address()), "STOPPED");
    a_file_written_on_the_standby(&replica(&a));

    // Failback: back on the primary cluster, on the member it left; the old copy kept aside
    // next to it.
    let back = tool("incus-failover")
        .args(["failback", "--standby", "standby-cluster", &a.address()])
        .run();
    back.assert_success();
    let asides = instances_named("primary-cluster", &format!("{}-before-failback-", a.name));
    let _aside = asides
        .first()
        .map(|n| Instance::existing("primary-cluster", n));
    assert_eq!(asides.len(), 1, "{}", back.stdout);
    assert_eq!(status_of(&a.address()), "RUNNING");
    assert_eq!(member_of(&a.address()), "m2");
    assert_eq!(member_of(&format!("primary-cluster:{}", asides[0])), "m2");
    assert_eq!(
        a.exec("cat /root/written-on-the-standby"),
        "promoted",
        "what the standby wrote came back"
    );
    assert_eq!(status_of(&replica(&a)), "STOPPED");
}

fn a_file_written_on_the_standby(address: &str) {
    incus_ok(&[
        "exec",
        address,
        "--",
        "sh",
        "-c",
        "echo promoted > /root/written-on-the-standby",
    ]);
}

#[test]
fn a_dead_primary_member_fails_only_its_own_instances() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let on_m1 = Instance::builder("primary-cluster", &unique("cl-alive"))
        .member("m1")
        .stopped()
        .build();
    let on_m2 = Instance::builder("primary-cluster", &unique("cl-dead"))
        .member("m2")
        .stopped()
        .build();
    on_m1.snapshot("s1");
    on_m2.snapshot("s1");
    Cmd::new("kill")
        .args(["-KILL", &lab().daemon_pid("pcluster-m2")])
        .run()
        .assert_success();
    let out = tool("incus-push")
        .args(["--to", "standby", &on_m1.address(), &on_m2.address()])
        .timeout(Duration::from_secs(180))
        .run();
    lab().up();
    out.assert_code(1);
    assert_eq!(out.end()["status"], "partial", "{}", out.stdout);
    let pushed = out.records_of("push");
    assert_eq!(pushed.len(), 1, "{}", out.stdout);
    assert_eq!(pushed[0]["instance"], on_m1.name.as_str());
    assert_eq!(
        snapshots_of(&format!("standby:{}", on_m1.name), None),
        ["s1"]
    );
    let errors = out.records_of("error");
    assert!(
        errors.iter().any(|e| e["instance"] == on_m2.name.as_str()),
        "{}",
        out.stdout
    );
    assert!(!instance_exists(&format!("standby:{}", on_m2.name), None));
    // Once the member is back, the next run converges.
    let again = tool("incus-push")
        .args(["--to", "standby", &on_m1.address(), &on_m2.address()])
        .run();
    again.assert_success();
    assert_eq!(
        snapshots_of(&format!("standby:{}", on_m2.name), None),
        ["s1"]
    );
}

/// One instance on each primary member (m1, m2), snapshotted and pushed to the standby.
fn one_on_each_member(on_m1: &str, on_m2: &str) -> (Instance, Instance) {
    let on_m1 = Instance::builder("primary-cluster", &unique(on_m1))
        .member("m1")
        .build();
    let on_m2 = Instance::builder("primary-cluster", &unique(on_m2))
        .member("m2")
        .build();
    let snap = tool("incus-snap")
        .args([on_m1.address(), on_m2.address()])
        .run();
    snap.assert_success();
    tool("incus-push")
        .args(["--to", "standby"])
        .stdin(snap.stdout.clone())
        .run()
        .assert_success();
    (on_m1, on_m2)
}

/// `kill -KILL` of a lab daemon.
fn kill_daemon(name: &str) {
    Cmd::new("kill")
        .args(["-KILL", &lab().daemon_pid(name)])
        .run()
        .assert_success();
}

/// `incus-failover promote --emergency --standby standby INSTANCE`.
fn promote_emergency(instance: &Instance) -> incus_standby_tests::Output {
    tool("incus-failover")
        .args([
            "promote",
            "--emergency",
            "--standby",
            "standby",
            &instance.address(),
        ])
        .timeout(Duration::from_secs(180))
        .run()
}

/// The member holding an instance dies while its cluster answers: `--emergency` promotes the
/// replica (a planned promotion cannot stop a copy on a dead member), and once the member is
/// back, `fence` ends the split brain.
#[test]
fn a_dead_primary_member_allows_an_emergency_promotion_of_its_instances() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let (on_m1, on_m2) = one_on_each_member("em-alive", "em-dead");
    kill_daemon("pcluster-m2");
    let promote = promote_emergency;
    // Until the cluster itself calls the member offline, the copy there may still run (a
    // member cut off for a moment): refused.
    let early = promote(&on_m2);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !incus_ok(&[
        "cluster",
        "list",
        "primary-cluster:",
        "-f",
        "csv",
        "-c",
        "ns",
    ])
    .lines()
    .any(|l| l.eq_ignore_ascii_case("m2,offline"))
    {
        if std::time::Instant::now() > deadline {
            lab().up();
            panic!("the cluster never called the killed member m2 offline");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // The instance on the live member: refused, as for a primary that answers.
    let refused = promote(&on_m1);
    let dead = promote(&on_m2);
    lab().up();
    early.assert_code(2);
    assert!(early.first_error().contains("OFFLINE"), "{}", early.stdout);
    refused.assert_code(2);
    assert!(
        refused.first_error().contains("answers"),
        "{}",
        refused.stdout
    );
    dead.assert_success();
    let record = dead
        .records_of("promoted")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert_eq!(record["emergency"], true, "{}", dead.stdout);
    assert!(
        dead.stderr
            .contains("member(s) m2 of the cluster primary-cluster"),
        "{}",
        dead.stderr
    );
    let replica = format!("standby:{}", on_m2.name);
    assert_eq!(status_of(&replica), "RUNNING");

    // The member is back, and with it the old copy: fence stops it for good.
    let fence = tool("incus-failover")
        .args(["fence", "--standby", "standby", &on_m2.address()])
        .run();
    fence.assert_success();
    assert_eq!(status_of(&on_m2.address()), "STOPPED", "{}", fence.stdout);
    assert_eq!(on_m2.config_get("boot.autostart"), "false");
    assert_eq!(status_of(&replica), "RUNNING");
    assert_eq!(status_of(&on_m1.address()), "RUNNING");
}

/// The member the primary-cluster remote itself points at (m1, 127.0.0.11) dies: the remote
/// does not answer, but m2 does, at the address the replicas recorded. `--emergency` must
/// not pass for the instance on the live member m2: it still runs there. (In this two-member
/// lab m1 is the cluster's only database voter, so m2 cannot say more than that it is alive;
/// in a cluster of three or more, the others call m1 offline and its instances may be
/// promoted, as in the test above.)
#[test]
fn the_remote_address_being_the_dead_member_never_lets_an_emergency_promote_a_live_one() {
    let Some(_one) = cluster_lab() else {
        return;
    };
    let (_on_m1, on_m2) = one_on_each_member("em-rdead", "em-ralive");
    assert!(
        config_of(
            &format!("standby:{}", on_m2.name),
            "user.incus-standby.source-members"
        )
        .contains(":"),
        "the replica records the primary cluster's members"
    );
    kill_daemon("pcluster-m1");
    let alive = promote_emergency(&on_m2);
    lab().up();
    alive.assert_code(2);
    assert!(alive.first_error().contains("answers"), "{}", alive.stdout);
    assert_eq!(status_of(&on_m2.address()), "RUNNING");
    assert_eq!(status_of(&format!("standby:{}", on_m2.name)), "STOPPED");
}
