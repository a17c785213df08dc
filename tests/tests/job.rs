//! The shipped job (scripts/dist/incus-standby-job), its systemd units, and the generated man
//! pages and completions.

use std::path::PathBuf;

use incus_standby_tests::{Cmd, Instance, bin_dir, repo_root, snapshots_of, tool, unique};

fn dist(file: &str) -> PathBuf {
    repo_root().join("scripts/dist").join(file)
}

/// Runs the job with a configuration naming `standby` and selecting `instance`.
fn job(standby: &str, instance: &str, journal: bool) -> incus_standby_tests::Output {
    let conf = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        conf.path(),
        format!(
            "STANDBY=\"{standby}\"\nTARGETS=\"{instance}\"\nPRUNE_OPTIONS=\"--keep-last 1\"\nBIN_DIR=\"{}\"\n",
            bin_dir().display()
        ),
    )
    .expect("job.conf");
    let mut cmd = Cmd::new(dist("incus-standby-job")).env("INCUS_STANDBY_JOB_CONF", conf.path());
    if journal {
        cmd = cmd.env("JOURNAL_STREAM", "8:1234");
    }
    let out = cmd.run();
    drop(conf);
    out
}

#[test]
fn the_job_replicates_and_reports_a_failed_stage_in_its_exit_status_and_log() {
    // The tools are built by the harness (tool() builds them once).
    let _ = tool("incus-snap");
    let c = Instance::create("local", &unique("job"));
    let out = job("standby", &c.name, false);
    out.assert_success();
    assert!(
        out.stderr
            .contains("incus-push: ok, 1 instance(s) replicated"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None).len(), 1);

    // A typo in the standby's name: the job says which stage failed and exits non-zero, and
    // prune (downstream) deletes nothing.
    // incus-snap names snapshots by the second: let the next one get a new name.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = c.snapshots().len();
    let out = job("stanby", &c.name, true);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(": FAILED (exit 2") && out.stderr.contains("stanby"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("<3>replication to stanby failed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.snapshots().len(),
        before + 1,
        "prune deleted after a failed push"
    );
}

#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = std::fs::read_to_string(dist("incus-standby.service")).expect("service");
    std::fs::write(
        dir.path().join("incus-standby.service"),
        service.replace(
            "/usr/bin/incus-standby-job",
            &dist("incus-standby-job").display().to_string(),
        ),
    )
    .expect("write");
    std::fs::copy(
        dist("incus-standby.timer"),
        dir.path().join("incus-standby.timer"),
    )
    .expect("copy");
    let out = Cmd::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("incus-standby.service"))
        .arg(dir.path().join("incus-standby.timer"))
        .run();
    out.assert_success();
    assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
    let timer = std::fs::read_to_string(dist("incus-standby.timer")).expect("timer");
    for key in ["OnCalendar=", "RandomizedDelaySec=", "Persistent=true"] {
        assert!(timer.contains(key), "{key} missing");
    }
}

#[test]
fn man_pages_render_and_bash_completion_loads_for_every_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "incus-snap",
        "incus-push",
        "incus-prune",
        "incus-trust",
        "incus-failover",
    ] {
        tool(name)
            .arg("--generate-docs")
            .arg(dir.path())
            .run()
            .assert_success();
        let page = dir.path().join(format!("man1/{name}.1"));
        let out = Cmd::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .run();
        out.assert_success();
        assert!(out.stdout.contains("Examples"), "{name}: {}", out.stdout);
        let script = format!(
            "source '{}' && complete -p {name}",
            dir.path()
                .join(format!("completions/bash/{name}"))
                .display()
        );
        let out = Cmd::new("bash").args(["-c", &script]).run();
        out.assert_success();
        assert!(out.stdout.contains(name), "{}", out.stdout);
        assert!(
            dir.path()
                .join(format!("completions/zsh/_{name}"))
                .is_file()
        );
        assert!(
            dir.path()
                .join(format!("completions/fish/{name}.fish"))
                .is_file()
        );
    }
    // One page per subcommand too.
    for page in [
        "incus-failover-promote",
        "incus-failover-failback",
        "incus-trust-add",
        "incus-snap-schedule",
    ] {
        assert!(
            dir.path().join(format!("man1/{page}.1")).is_file(),
            "{page}"
        );
    }
}
