//! Custom volumes travel with their instance, against the lab daemons: snap, push (three
//! modes), prune, promote and failback, with what `incus storage volume` shows on each side.

use std::sync::{Mutex, MutexGuard};

use incus_standby_tests::{Instance, Output, incus, incus_ok, lab, snapshots_of, tool, unique};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: promotion stops and starts instances, the pool test adds a pool.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A custom volume on the `default` pool of `remote`, deleted (with its copies on the
/// standby and any `-before-failback-` copy) when dropped.
struct Volume {
    remote: String,
    pool: String,
    name: String,
}

impl Volume {
    fn create(remote: &str, pool: &str, name: &str) -> Volume {
        incus_ok(&[
            "storage",
            "volume",
            "create",
            &format!("{remote}:{pool}"),
            name,
        ]);
        Volume {
            remote: remote.to_string(),
            pool: pool.to_string(),
            name: name.to_string(),
        }
    }

    fn on(&self, remote: &str) -> String {
        format!("{remote}:{}", self.pool)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        for remote in [self.remote.as_str(), "standby", "primary"] {
            let listed = incus(&[
                "storage",
                "volume",
                "list",
                &self.on(remote),
                "-f",
                "csv",
                "-c",
                "tn",
            ]);
            for line in listed.stdout.lines() {
                let Some(("custom", name)) = line.split_once(',') else {
                    continue;
                };
                if name == self.name || name.starts_with(&format!("{}-before-failback-", self.name))
                {
                    let _ = incus(&["storage", "volume", "delete", &self.on(remote), name]);
                }
            }
        }
    }
}

/// The snapshot names of a volume, oldest first.
fn volume_snapshots(remote: &str, pool: &str, name: &str) -> Vec<String> {
    let json = incus_ok(&[
        "query",
        &format!("{remote}:/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots?recursion=1"),
    ]);
    let mut list: Vec<(String, String)> = serde_json::from_str::<Value>(&json)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default();
            let name = name.split_once('/').map_or(name, |(_, n)| n).to_string();
            (
                s["created_at"].as_str().unwrap_or_default().to_string(),
                name,
            )
        })
        .collect();
    list.sort();
    list.into_iter().map(|(_, n)| n).collect()
}

fn volume_config(remote: &str, pool: &str, name: &str, key: &str) -> String {
    incus(&[
        "storage",
        "volume",
        "get",
        &format!("{remote}:{pool}"),
        name,
        key,
    ])
    .stdout
    .trim()
    .to_string()
}

fn volume_exists(remote: &str, pool: &str, name: &str) -> bool {
    incus(&[
        "storage",
        "volume",
        "show",
        &format!("{remote}:{pool}"),
        name,
    ])
    .code
        == 0
}

/// A file of a volume on a `dir` pool, read on the host.
fn volume_file(remote: &str, name: &str, file: &str) -> String {
    let dir = match remote {
        "standby" => lab().standby_dir(),
        _ => lab().primary_dir(),
    };
    std::fs::read_to_string(dir.join(format!(
        "storage-pools/default/custom/default_{name}/{file}"
    )))
    .unwrap_or_default()
    .trim()
    .to_string()
}

/// `incus config device add NAME data disk pool=POOL source=VOLUME path=/data`.
fn attach(instance: &str, pool: &str, volume: &str) {
    incus_ok(&[
        "config",
        "device",
        "add",
        instance,
        "data",
        "disk",
        &format!("pool={pool}"),
        &format!("source={volume}"),
        "path=/data",
    ]);
}

/// A running instance with volume `NAME-data` on the default pool at /data, which has its
/// own schedule and expiry.
/// The volume comes first: the instance, dropped before it, must let go of it.
fn with_volume(prefix: &str) -> (Volume, Instance) {
    let name = unique(prefix);
    let c = Instance::launch("local", &name);
    let v = Volume::create("primary", "default", &format!("{name}-data"));
    incus_ok(&[
        "storage",
        "volume",
        "set",
        "primary:default",
        &v.name,
        "snapshots.schedule=@daily",
        "snapshots.expiry=2w",
    ]);
    attach(&name, "default", &v.name);
    (v, c)
}

fn snap(name: &str, args: &[&str]) -> Output {
    let out = tool("incus-snap").arg(name).args(args).run();
    out.assert_success();
    out
}

fn push(args: &[&str]) -> Output {
    tool("incus-push")
        .args(["--to", "standby"])
        .args(args)
        .run()
}

fn the_volume_record(out: &Output) -> Value {
    let records = out.records_of("push");
    assert_eq!(records.len(), 1, "{}\n{}", out.stdout, out.stderr);
    let volumes = records[0]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(volumes.len(), 1, "{}", out.stdout);
    volumes[0].clone()
}

#[test]
fn volumes_travel_with_their_instance_in_every_mode() {
    let _serial = serial();
    for mode in ["pull", "push", "relay"] {
        let (v, c) = with_volume(&format!("vol-{mode}"));
        c.exec("echo one > /data/f");
        let taken = snap(&c.name, &["--freeze"]);
        let record = &taken.records_of("snapshot")[0];
        let first = record["name"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            record["volumes"],
            serde_json::json!([format!("default/{}", v.name)])
        );
        assert!(record["frozen_ms"].as_u64().is_some(), "{}", taken.stdout);
        assert_eq!(c.status(), "Running", "--freeze always unfreezes");
        assert_eq!(
            volume_snapshots("primary", "default", &v.name),
            [first.as_str()]
        );

        let out = push(&["--mode", mode, &c.name]);
        out.assert_success();
        let volume = the_volume_record(&out);
        assert_eq!(volume["status"], "copied", "{mode}: {}", out.stdout);
        assert_eq!(volume["restored"], first.as_str());
        assert_eq!(
            volume_snapshots("standby", "default", &v.name),
            [first.as_str()]
        );
        assert_eq!(volume_file("standby", &v.name, "f"), "one");
        // Inert: no schedule or expiry of its own, kept for a promotion; marked.
        assert_eq!(
            volume_config("standby", "default", &v.name, "snapshots.schedule"),
            ""
        );
        assert_eq!(
            volume_config("standby", "default", &v.name, "snapshots.expiry"),
            ""
        );
        assert!(
            volume_config(
                "standby",
                "default",
                &v.name,
                "user.incus-standby.source-settings"
            )
            .contains("@daily")
        );
        assert_eq!(
            volume_config("standby", "default", &v.name, "user.incus-standby.restored"),
            first
        );

        // Written after the snapshot: not on the standby until the next one.
        c.exec("echo two > /data/g");
        let second = snap(&c.name, &[]).records_of("snapshot")[0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let out = push(&["--mode", mode, &c.name]);
        out.assert_success();
        let volume = the_volume_record(&out);
        assert_eq!(volume["status"], "refreshed", "{mode}: {}", out.stdout);
        assert_eq!(volume["snapshots"], serde_json::json!([second.clone()]));
        assert_eq!(
            volume_snapshots("standby", "default", &v.name),
            [first.clone(), second.clone()]
        );
        assert_eq!(volume_file("standby", &v.name, "g"), "two");

        // Nothing new: found current from the listings, at a constant cost.
        let requests = incus_standby_tests::up_to_date_push_requests("standby", &[&c.name]);
        assert!(
            requests <= 10,
            "{mode}: {requests} requests for nothing new"
        );
        drop(c);
    }
}

#[test]
fn replica_volume_snapshots_never_expire_by_themselves() {
    let _serial = serial();
    let (v, c) = with_volume("vol-exp");
    snap(&c.name, &["--expiry", "1d"]);
    let source = incus_ok(&[
        "query",
        &format!(
            "primary:/1.0/storage-pools/default/volumes/custom/{}/snapshots?recursion=1",
            v.name
        ),
    ]);
    assert!(!source.contains("\"expires_at\": null"), "{source}");
    push(&[&c.name]).assert_success();
    let replica = incus_ok(&[
        "query",
        &format!(
            "standby:/1.0/storage-pools/default/volumes/custom/{}/snapshots?recursion=1",
            v.name
        ),
    ]);
    let list: Value = serde_json::from_str(&replica).unwrap_or(Value::Null);
    let expiries: Vec<&Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["expires_at"])
        .collect();
    assert_eq!(expiries.len(), 1, "{replica}");
    assert!(
        expiries
            .iter()
            .all(|e| e.is_null() || e.as_str().is_some_and(|t| t.starts_with("0001-"))),
        "{replica}"
    );
}

#[test]
fn a_push_cut_between_the_volume_and_the_instance_converges() {
    let _serial = serial();
    let (v, c) = with_volume("vol-cut");
    c.exec("echo one > /data/f");
    snap(&c.name, &[]);
    let out = tool("incus-push")
        .args(["--to", "standby", &c.name])
        .env("FAILPOINTS", "push::after-volume-transfer=return(abort)")
        .run();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(volume_exists("standby", "default", &v.name));
    assert_eq!(
        volume_config(
            "standby",
            "default",
            &v.name,
            "user.incus-standby.synced-at"
        ),
        "",
        "a cut first copy is known unfinished"
    );
    assert!(!incus_standby_tests::instance_exists(
        &format!("standby:{}", c.name),
        None
    ));

    let out = push(&[&c.name]);
    out.assert_success();
    let volume = the_volume_record(&out);
    assert_eq!(volume["status"], "copied", "{}", out.stdout);
    assert_eq!(volume_file("standby", &v.name, "f"), "one");
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None).len(), 1);
    assert!(
        !volume_config(
            "standby",
            "default",
            &v.name,
            "user.incus-standby.synced-at"
        )
        .is_empty()
    );
}

#[test]
fn prune_takes_a_volume_snapshot_with_its_instance_snapshot() {
    let _serial = serial();
    let (v, c) = with_volume("vol-prune");
    snap(&c.name, &["--pattern", "p%d"]);
    snap(&c.name, &["--pattern", "p%d"]);
    push(&[&c.name]).assert_success();
    let out = tool("incus-prune")
        .args([
            "--keep-last",
            "1",
            "--match",
            "p*",
            "--replica",
            "standby",
            &c.name,
        ])
        .run();
    out.assert_success();
    let pruned = out.records_of("pruned");
    assert_eq!(pruned.len(), 1, "{}", out.stdout);
    assert_eq!(
        pruned[0]["volumes"],
        serde_json::json!([format!("default/{}", v.name)])
    );
    assert_eq!(volume_snapshots("primary", "default", &v.name), ["p1"]);
    assert_eq!(c.snapshots(), ["p1"]);
    // The standby mirrors it at the next push.
    push(&[&c.name]).assert_success();
    assert_eq!(volume_snapshots("standby", "default", &v.name), ["p1"]);
}

#[test]
fn promotion_and_failback_bring_the_volume_along() {
    let _serial = serial();
    let (v, c) = with_volume("vol-fo");
    c.exec("echo one > /data/f");
    snap(&c.name, &[]);
    push(&[&c.name]).assert_success();
    // Written after the last snapshot: the promotion's final snapshot takes it along.
    c.exec("echo late > /data/late");
    let out = tool("incus-failover")
        .args(["promote", "--standby", "standby", &c.name])
        .run();
    out.assert_success();
    let standby = format!("standby:{}", c.name);
    assert_eq!(
        incus_ok(&["exec", &standby, "--", "cat", "/data/late"]),
        "late"
    );
    // The promoted volume has its own schedule back.
    assert_eq!(
        volume_config("standby", "default", &v.name, "snapshots.schedule"),
        "@daily"
    );
    incus_ok(&[
        "exec",
        &standby,
        "--",
        "sh",
        "-c",
        "echo standby > /data/back",
    ]);

    let out = tool("incus-failover")
        .args(["failback", "--standby", "standby", &c.name])
        .run();
    out.assert_success();
    assert_eq!(c.status(), "Running");
    assert_eq!(c.exec("cat /data/back"), "standby");
    assert_eq!(c.exec("cat /data/late"), "late");
    // The old primary's volume is kept aside, with the old copy.
    let aside: Vec<String> = incus_ok(&[
        "storage",
        "volume",
        "list",
        "primary:default",
        "-f",
        "csv",
        "-c",
        "tn",
    ])
    .lines()
    .filter_map(|l| l.strip_prefix("custom,"))
    .filter(|n| n.starts_with(&format!("{}-before-failback-", v.name)))
    .map(str::to_string)
    .collect();
    assert_eq!(aside.len(), 1, "the old primary volume is kept aside");
    // The primary's volume is its own again; the standby's an inert replica.
    assert_eq!(
        volume_config("primary", "default", &v.name, "user.incus-standby.source"),
        ""
    );
    assert_eq!(
        volume_config("primary", "default", &v.name, "snapshots.schedule"),
        "@daily"
    );
    assert_eq!(
        volume_config("standby", "default", &v.name, "snapshots.schedule"),
        ""
    );
    assert!(!volume_config("standby", "default", &v.name, "user.incus-standby.source").is_empty());
    // And replication goes on.
    snap(&c.name, &[]);
    push(&[&c.name]).assert_success();
}

#[test]
fn a_volume_on_a_pool_the_standby_lacks_is_refused_before_anything_is_sent() {
    let _serial = serial();
    let pool = unique("onlyprim");
    incus_ok(&["storage", "create", &format!("primary:{pool}"), "dir"]);
    let name = unique("vol-pool");
    let c = Instance::launch("local", &name);
    let v = Volume::create("primary", &pool, &format!("{name}-data"));
    attach(&name, &pool, &v.name);
    snap(&c.name, &[]);
    let out = push(&[&c.name]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.first_error()
            .contains(&format!("no storage pool {pool}")),
        "{}",
        out.stdout
    );
    assert!(!incus_standby_tests::instance_exists(
        &format!("standby:{name}"),
        None
    ));
    drop(c);
    drop(v);
    let _ = incus(&["storage", "delete", &format!("primary:{pool}")]);
}

#[test]
fn a_shared_volume_is_sent_once_and_a_foreign_one_is_refused() {
    let _serial = serial();
    let (v, a) = with_volume("vol-sha");
    let b_name = unique("vol-shb");
    let b = Instance::launch("local", &b_name);
    attach(&b_name, "default", &v.name);
    let out = tool("incus-snap").args([&a.name, &b.name]).run();
    out.assert_success();
    let out = push(&["--jobs", "1", &a.name, &b.name]);
    out.assert_success();
    let statuses: Vec<String> = out
        .records_of("push")
        .iter()
        .filter_map(|r| r["volumes"][0]["status"].as_str().map(str::to_string))
        .collect();
    assert_eq!(statuses, ["copied", "shared"], "{}", out.stdout);
    assert!(incus_standby_tests::instance_exists(
        &format!("standby:{b_name}"),
        None
    ));

    // A volume of the same name on the standby that incus-push did not make stays as it is.
    let (w, c) = with_volume("vol-for");
    let _foreign = Volume::create("standby", "default", &w.name);
    incus_ok(&[
        "storage",
        "volume",
        "set",
        "standby:default",
        &w.name,
        "user.mine=yes",
    ]);
    snap(&c.name, &[]);
    let out = push(&[&c.name]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.first_error().contains("not made by incus-push"),
        "{}",
        out.stdout
    );
    assert_eq!(
        volume_config("standby", "default", &w.name, "user.mine"),
        "yes"
    );
    assert!(volume_snapshots("standby", "default", &w.name).is_empty());
}

fn drill(name: &str, args: &[&str]) -> Output {
    tool("incus-failover")
        .args(["drill", "--standby", "standby", name])
        .args(args)
        .run()
}

/// Everything a drill may leave: clones of instances and of volumes.
fn drill_leftovers(name: &str, volume: &str) -> (bool, bool) {
    (
        incus_standby_tests::instance_exists(&format!("standby:{name}-drill"), None),
        volume_exists("standby", "default", &format!("{volume}-drill-{name}")),
    )
}

#[test]
fn a_drill_starts_a_clone_with_its_volume_and_leaves_the_replica_alone() {
    let _serial = serial();
    let (v, c) = with_volume("vol-drill");
    incus_ok(&[
        "config",
        "device",
        "add",
        &c.name,
        "eth0",
        "nic",
        "nictype=p2p",
    ]);
    c.exec("echo db > /data/db");
    snap(&c.name, &[]);
    push(&[&c.name]).assert_success();
    let standby = format!("standby:{}", c.name);
    let before = incus_ok(&["config", "show", &standby]);

    // On dir, a clone is a full copy: only when asked.
    let out = drill(&c.name, &["--probe", "test -s /data/db"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.first_error().contains("--allow-full-copy"),
        "{}",
        out.stdout
    );
    assert_eq!(drill_leftovers(&c.name, &v.name), (false, false));

    let out = drill(
        &c.name,
        &["--probe", "test -s /data/db", "--allow-full-copy"],
    );
    out.assert_success();
    let record = &out.records_of("drill")[0];
    assert_eq!(record["ok"], true, "{}", out.stdout);
    assert_eq!(record["probe_exit"], 0);
    assert!(record["seconds_to_running"].as_f64().is_some());
    assert_eq!(
        record["volumes"],
        serde_json::json!([format!("default/{}", v.name)])
    );
    assert_eq!(drill_leftovers(&c.name, &v.name), (false, false));
    // The replica was never started, and only the drill's result was added to it.
    assert_eq!(incus_standby_tests::listed(&standby, "s"), "STOPPED");
    let after = incus_ok(&["config", "show", &standby]);
    let without_drill: String = after
        .lines()
        .filter(|l| !l.contains("user.incus-standby.drill"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(without_drill, before.trim_end());
    assert_eq!(c.status(), "Running");

    // A failing probe fails the drill (exit 1), and status and check say so.
    let out = drill(
        &c.name,
        &["--probe", "test -e /data/missing", "--allow-full-copy"],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.records_of("drill")[0]["ok"], false);
    let status = tool("incus-failover")
        .args(["status", "--standby", "standby", &c.name])
        .run();
    status.assert_success();
    let record = &status.records_of("status")[0];
    assert_eq!(record["drill_ok"], false, "{}", status.stdout);
    assert!(record["drill_at"].is_string());
    assert_eq!(record["volumes"][0]["volume"], v.name.as_str());
    assert_eq!(record["volumes"][0]["present"], true);
    let check = tool("incus-failover")
        .args([
            "check",
            "--standby",
            "standby",
            &c.name,
            "--max-rpo",
            "1d",
            "--max-drill-age",
            "1d",
        ])
        .run();
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check.stdout.contains("its last drill failed"),
        "{}",
        check.stdout
    );

    // A refresh keeps the drill's result on the replica.
    snap(&c.name, &[]);
    push(&[&c.name]).assert_success();
    assert!(!incus_standby_tests::config_get(&standby, "user.incus-standby.drill").is_empty());
}

#[test]
fn a_drill_killed_midway_is_cleaned_up_by_the_next_one_on_btrfs() {
    let _serial = serial();
    let name = unique("vol-drbt");
    // The volume first: the instance, dropped before it, must let go of it.
    let v = Volume::create("primary", "btrfs", &format!("{name}-data"));
    let c = Instance::builder("local", &name).storage("btrfs").build();
    attach(&name, "btrfs", &v.name);
    c.exec("echo db > /data/db");
    snap(&name, &[]);
    push(&[&name]).assert_success();
    let out = tool("incus-failover")
        .args(["drill", "--standby", "standby", &name])
        .env("FAILPOINTS", "drill::after-clone=return(abort)")
        .run();
    assert_eq!(out.code, 134, "not killed there: {out:?}");
    assert!(incus_standby_tests::instance_exists(
        &format!("standby:{name}-drill"),
        None
    ));
    // btrfs clones copy on write: no opt-in needed.
    let out = drill(&name, &["--probe", "test -s /data/db"]);
    out.assert_success();
    assert_eq!(out.records_of("drill")[0]["full_copy"], false);
    assert!(!incus_standby_tests::instance_exists(
        &format!("standby:{name}-drill"),
        None
    ));
    let clones = incus_ok(&[
        "storage",
        "volume",
        "list",
        "standby:btrfs",
        "-f",
        "csv",
        "-c",
        "n",
    ]);
    assert!(!clones.contains("-drill-"), "{clones}");
}

#[test]
fn a_volume_no_instance_attaches_is_selected_by_itself() {
    let _serial = serial();
    let v = Volume::create("primary", "default", &unique("vol-alone"));
    let address = format!("primary:default/{}", v.name);
    let snapped = tool("incus-snap")
        .args(["--volume", &address, "--expiry", "1d"])
        .run();
    snapped.assert_success();
    let record = &snapped.records_of("volume-snapshot")[0];
    let name = record["name"].as_str().unwrap_or_default().to_string();
    assert_eq!(record["volume"], v.name.as_str());
    // Piped: incus-push replicates the volumes the records name.
    let out = tool("incus-push")
        .args(["--to", "standby"])
        .stdin(snapped.stdout.clone())
        .run();
    out.assert_success();
    let pushed = &out.records_of("volume-push")[0];
    assert_eq!(pushed["status"], "copied", "{}", out.stdout);
    assert_eq!(pushed["restored"], name.as_str());
    assert_eq!(
        volume_snapshots("standby", "default", &v.name),
        [name.as_str()]
    );
    assert_eq!(
        volume_config("standby", "default", &v.name, "user.incus-standby.restored"),
        name
    );
    let out = push(&["--volume", &address]);
    out.assert_success();
    assert_eq!(out.records_of("volume-push")[0]["status"], "up-to-date");

    // A block volume (what a VM attaches) travels the same way.
    let block = Volume {
        remote: "primary".into(),
        pool: "default".into(),
        name: unique("vol-block"),
    };
    incus_ok(&[
        "storage",
        "volume",
        "create",
        "primary:default",
        &block.name,
        "--type=block",
        "size=16MiB",
    ]);
    let block_address = format!("primary:default/{}", block.name);
    let snapped = tool("incus-snap").args(["--volume", &block_address]).run();
    snapped.assert_success();
    let out = push(&["--volume", &block_address]);
    out.assert_success();
    assert_eq!(
        out.records_of("volume-push")[0]["status"],
        "copied",
        "{}",
        out.stdout
    );
    let shown = incus_ok(&["storage", "volume", "show", "standby:default", &block.name]);
    assert!(shown.contains("content_type: block"), "{shown}");
    assert_eq!(volume_snapshots("standby", "default", &block.name).len(), 1);

    // Bad input: a clear line, nothing done.
    let out = push(&["--volume", "share"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.first_error().contains("[REMOTE:]POOL/VOLUME"),
        "{}",
        out.stdout
    );
    let out = push(&["--volume", "primary:default/no-such-volume"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.first_error().contains("no custom volume"),
        "{}",
        out.stdout
    );
}
