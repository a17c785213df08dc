//! Failures that disturb a whole daemon: the standby dying mid-transfer, a source that does
//! not listen on the network. Each test changes the lab for a while, so they run one at a time
//! (cargo runs test binaries one after the other; the lock orders the tests of this one).

use std::sync::Mutex;
use std::time::Duration;

use incus_standby_tests::{
    Instance, config_get, incus_ok, instance_exists, lab, snapshots_of, tool, unique,
};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn the_standby_dying_mid_transfer_fails_cleanly_and_the_next_run_converges() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Instance::launch("local", &unique("dis-crash"));
    c.exec("dd if=/dev/urandom of=/root/big bs=1M count=200 2>/dev/null; sync");
    c.snapshot("s1");
    let child = tool("incus-push")
        .args(["--to", "standby", &c.name])
        .spawn();
    let mut appeared = false;
    for _ in 0..400 {
        if instance_exists(&format!("standby:{}", c.name), None) {
            appeared = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        appeared,
        "the replica never appeared on the standby: the transfer was not under way, so killing the standby would test nothing"
    );
    std::process::Command::new("kill")
        .args(["-KILL", &lab().daemon_pid("standby")])
        .status()
        .expect("kill the standby daemon");
    let output = child.wait_with_output().expect("incus-push ends");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    lab().up();
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("local:{}", c.name)), "{stderr}");
    assert!(stderr.contains("standby"), "{stderr}");
    assert!(stdout.contains("\"type\":\"error\""), "{stdout}");
    assert_eq!(c.snapshots(), ["s1"], "the source is never changed");
    assert_eq!(c.status(), "Running");

    let out = tool("incus-push").args(["--to", "standby", &c.name]).run();
    out.assert_success();
    let replica = format!("standby:{}", c.name);
    assert_eq!(snapshots_of(&replica, None), ["s1"]);
    assert_eq!(config_get(&replica, "user.incus-standby.restored"), "s1");
    let out = tool("incus-push").args(["--to", "standby", &c.name]).run();
    assert_eq!(out.records_of("push")[0]["status"], "up-to-date");
}

#[test]
fn a_source_without_a_network_listener_names_the_modes_that_work() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = incus_ok(&["config", "get", "local:", "core.https_address"]);
    let c = Instance::create("local", &unique("dis-nolisten"));
    c.snapshot("s1");
    incus_ok(&["config", "unset", "local:", "core.https_address"]);
    let pull = tool("incus-push").args(["--to", "standby", &c.name]).run();
    let relay = tool("incus-push")
        .args(["--to", "standby", "--mode", "relay", &c.name])
        .run();
    incus_ok(&["config", "set", "local:", "core.https_address", &address]);
    pull.assert_code(1);
    let message = pull.first_error();
    assert!(message.contains("--mode relay"), "{message}");
    assert!(message.contains("listen"), "{message}");
    relay.assert_success();
    assert_eq!(snapshots_of(&format!("standby:{}", c.name), None), ["s1"]);
}

/// The standby stops answering (SIGSTOP) in the middle of a run with several instances: the
/// first request to time out marks it gone for the run, and the instances after it fail at
/// once, each saying why, instead of each waiting for its own timeout. The next run, with
/// the standby back, converges.
#[test]
fn a_standby_that_stops_answering_is_remembered_for_the_rest_of_the_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let instances: Vec<Instance> = (0..5)
        .map(|i| Instance::create("local", &unique(&format!("dis-stall{i}"))))
        .collect();
    for c in &instances {
        c.snapshot("s1");
    }
    let names: Vec<&str> = instances.iter().map(|c| c.name.as_str()).collect();
    let child = tool("incus-push")
        .env("INCUS_STANDBY_TIMEOUT", "3")
        .args(["--to", "standby", "--jobs", "1"])
        .args(&names)
        .spawn();
    let first = format!("standby:{}", names[0]);
    let mut appeared = false;
    for _ in 0..400 {
        if instance_exists(&first, None) {
            appeared = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let standby = lab().daemon_pid("standby");
    std::process::Command::new("kill")
        .args(["-STOP", &standby])
        .status()
        .expect("stop the standby daemon");
    let started = std::time::Instant::now();
    let output = child.wait_with_output().expect("incus-push ends");
    let took = started.elapsed();
    std::process::Command::new("kill")
        .args(["-CONT", &standby])
        .status()
        .expect("continue the standby daemon");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(appeared, "the first replica never appeared: {stdout}");
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let skipped = stdout
        .matches("stopped answering earlier in this run")
        .count();
    assert!(skipped >= 2, "{skipped} skipped: {stdout}");
    assert!(stdout.contains("no answer in time"), "{stdout}");
    // One timeout (3 s, maybe two for the instance in flight), not one per instance.
    assert!(took < Duration::from_secs(20), "took {took:?}: {stdout}");

    let out = tool("incus-push")
        .args(["--to", "standby"])
        .args(&names)
        .run();
    out.assert_success();
    for name in &names {
        assert_eq!(snapshots_of(&format!("standby:{name}"), None), ["s1"]);
    }
}
