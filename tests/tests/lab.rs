//! Smoke tests of the harness itself against the lab daemons.

use incus_standby_tests::{
    Cmd, Instance, Project, config_get, incus, incus_ok, instance_exists, lab, snapshots_of, tool,
    unique,
};

#[test]
fn lab_env_is_complete() {
    let lab = lab();
    for var in [
        "INCUS_CONF",
        "INCUS_DIR",
        "INCUS_LAB_DIR",
        "INCUS_LAB_PRIMARY_PORT",
        "INCUS_LAB_STANDBY_PORT",
        "INCUS_LAB_STANDBY_DIR",
    ] {
        assert!(lab.var(var).is_some(), "{var} missing from {:?}", lab.env);
    }
    assert!(lab.conf_dir().join("config.yml").is_file());
    assert!(lab.primary_port() != lab.standby_port());
    // The three remotes answer, and primary is the same daemon as local.
    let name = |remote: &str| {
        let info = incus_ok(&["query", &format!("{remote}:/1.0")]);
        let v: serde_json::Value = serde_json::from_str(&info).expect("GET /1.0 is JSON");
        assert_eq!(v["auth"], "trusted", "{remote}: {info}");
        v["environment"]["certificate_fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    };
    assert_eq!(name("local"), name("primary"));
    assert_ne!(name("local"), name("standby"));
}

#[test]
fn instances_on_local_and_standby() {
    let web = Instance::launch("local", &unique("web"));
    assert_eq!(web.status(), "Running");
    web.exec("echo hi > /root/f");
    assert_eq!(web.exec("cat /root/f"), "hi");
    web.snapshot("s1");
    web.snapshot("s2");
    web.snapshot("a0");
    assert_eq!(snapshots_of(&web.address(), None), ["s1", "s2", "a0"]);
    assert_eq!(config_get(&web.address(), "image.os"), "busybox");

    let db = Instance::builder("standby", &unique("db"))
        .storage("btrfs")
        .stopped()
        .build();
    assert_eq!(db.status(), "Stopped");
    db.snapshot("only");
    assert_eq!(snapshots_of(&db.address(), None), ["only"]);
    let pool = incus_ok(&["query", &format!("standby:/1.0/instances/{}", db.name)]);
    assert!(pool.contains("\"pool\": \"btrfs\""), "{pool}");

    // A replica on the standby with the same name goes away with the guard.
    let replica = format!("standby:{}", web.name);
    incus_ok(&["copy", &web.address(), &replica, "--stateless"]);
    assert_eq!(snapshots_of(&replica, None), ["s1", "s2", "a0"]);
    let (web_addr, db_addr) = (web.address(), db.address());
    drop(web);
    drop(db);
    assert!(!instance_exists(&web_addr, None));
    assert!(!instance_exists(&replica, None));
    assert!(!instance_exists(&db_addr, None));
    assert!(incus(&["info", &web_addr]).code != 0);
}

#[test]
fn project_guard() {
    let name = unique("proj");
    let project = Project::on_both(&name);
    let c = Instance::builder("local", &unique("c"))
        .project(&project.name)
        .build();
    c.snapshot("s1");
    assert_eq!(snapshots_of(&c.address(), Some(&project.name)), ["s1"]);
    incus_ok(&[
        "copy",
        "--project",
        &project.name,
        "--stateless",
        &c.address(),
        &format!("standby:{}", c.name),
    ]);
    assert!(instance_exists(
        &format!("standby:{}", c.name),
        Some(&project.name)
    ));
    // Leave the instances to the project guard.
    std::mem::forget(c);
    drop(project);
    for remote in ["local", "standby"] {
        let projects = incus_ok(&[
            "project",
            "list",
            &format!("{remote}:"),
            "-f",
            "csv",
            "-c",
            "n",
        ]);
        assert!(!projects.contains(&name), "{remote}: {projects}");
    }
}

#[test]
fn tools_are_built_and_run_in_the_lab_env() {
    for name in [
        "incus-snap",
        "incus-push",
        "incus-prune",
        "incus-trust",
        "incus-failover",
    ] {
        let out = tool(name).arg("--help").run();
        out.assert_code(0);
        assert!(out.stdout.contains("Usage"), "{name}: {}", out.stdout);
    }
    // The lab variables reach the tools, INCUS_* from the caller's environment do not.
    let out = Cmd::new("sh")
        .args([
            "-c",
            "echo $INCUS_CONF; echo ${INCUS_REMOTE:-none}; echo $NO_COLOR; cat",
        ])
        .env("EXTRA", "1")
        .stdin("from stdin")
        .run();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], lab().conf_dir().to_string_lossy());
    assert_eq!(lines[1..], ["none", "1", "from stdin"]);
}
