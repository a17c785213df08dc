//! incus-trust against the lab daemons: a fresh configuration reaches a working remote in two
//! non-interactive commands, the stock incus CLI uses the result, and every bad input is
//! refused in one line without leaving a file behind.

use std::path::Path;

use incus_standby_tests::{Output, incus_ok, lab, tool};
use serde_json::Value;

fn trust(args: &[&str]) -> Output {
    tool("incus-trust").args(args).run()
}

/// A token for `name` on the standby, made with the lab's (trusted) configuration.
fn token_for(name: &str) -> String {
    let out = trust(&["token", &format!("standby:{name}")]);
    out.assert_success();
    out.records_of("token")[0]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Revokes what is left of a test's tokens and removes its certificates from the standby.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = tool("incus-trust")
            .args(["revoke", &format!("standby:{}", self.0)])
            .run();
        let _ = tool("incus-trust")
            .args(["remove", &format!("standby:{}", self.0)])
            .run();
    }
}

fn add_in(conf: &Path, name: &str, token: &str) -> Output {
    tool("incus-trust")
        .env("INCUS_CONF", conf)
        .args(["add", name, "-"])
        .stdin(token.to_string())
        .run()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".incus-trust"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// base64 of a JSON token with one field changed.
fn altered(token: &str, key: &str, value: Value) -> String {
    let out = std::process::Command::new("base64")
        .args(["-d"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .map(|mut stdin| stdin.write_all(token.as_bytes()))
                .transpose()?;
            child.wait_with_output()
        })
        .expect("base64 -d");
    let mut json: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
    json[key] = value;
    let text = json.to_string();
    let out = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$0\" | base64 -w0", &text])
        .output()
        .expect("base64");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_commands_make_a_working_remote_for_the_cli_and_the_tools() {
    let client = "trust-e2e";
    let _cleanup = Cleanup(client.into());
    let token = token_for(client);
    // Asked again while pending: the same token, not a second one.
    let again = trust(&["token", &format!("standby:{client}")]);
    assert_eq!(again.records_of("token")[0]["token"], token.as_str());
    assert_eq!(again.records_of("token")[0]["reused"], true);

    let conf = tempfile::tempdir().expect("tempdir");
    // The configuration has remotes and keys of its own, which must survive.
    std::fs::write(
        conf.path().join("config.yml"),
        "default-remote: local\nremotes:\n  other:\n    addr: https://10.9.9.9:8443\n    protocol: incus\n    public: false\naliases:\n  ll: list -c ns\n",
    )
    .expect("config.yml");
    let out = add_in(conf.path(), "backup", &token);
    out.assert_success();
    let record = &out.records_of("trusted")[0];
    assert_eq!(record["how"], "redeemed");
    assert_eq!(record["new_client_certificate"], true);
    assert!(
        !out.stdout.contains(&token) && !out.stderr.contains(&token),
        "the token was logged"
    );
    let key_mode = std::fs::metadata(conf.path().join("client.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(0);
    assert_eq!(key_mode, 0o600);
    let config = std::fs::read_to_string(conf.path().join("config.yml")).expect("config.yml");
    assert!(
        config.contains("ll: list -c ns") && config.contains("10.9.9.9"),
        "{config}"
    );
    assert!(conf.path().join("servercerts/backup.crt").is_file());

    // The stock CLI uses it.
    let conf_str = conf.path().to_string_lossy().into_owned();
    let listed = incus_standby_tests::Cmd::new("incus")
        .env("INCUS_CONF", &conf_str)
        .args(["list", "backup:", "-f", "csv", "-c", "n"])
        .run();
    listed.assert_success();
    // And so do our tools.
    let check = tool("incus-trust")
        .env("INCUS_CONF", &conf_str)
        .args(["check", "backup"])
        .run();
    check.assert_success();
    let record = &check.records_of("check")[0];
    assert_eq!(record["trusted"], true, "{record}");
    assert_eq!(record["listening"], true, "{record}");

    // The token is used up: it is no longer pending.
    let list = trust(&["list", "standby:"]);
    assert!(
        !list
            .records_of("pending-token")
            .iter()
            .any(|t| t["name"] == client),
        "{}",
        list.stdout
    );
    assert!(
        list.records_of("certificate")
            .iter()
            .any(|c| c["name"] == client),
        "{}",
        list.stdout
    );

    // The same name again is refused, unless --force.
    let out = add_in(conf.path(), "backup", &token);
    out.assert_code(2);
    assert!(out.stderr.contains("exists already"), "{}", out.stderr);
}

#[test]
fn bad_tokens_are_refused_in_one_line_and_leave_no_file() {
    let client = "trust-bad";
    let _cleanup = Cleanup(client.into());
    let token = token_for(client);
    let primary_fp = {
        let json = incus_ok(&["query", "primary:/1.0"]);
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        v["environment"]["certificate_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let primary_port = lab().primary_port();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed base64", "not!base64".into(), "not base64"),
        ("malformed JSON", "bm90IGpzb24=".into(), "JSON"),
        (
            "expired",
            altered(&token, "expires_at", Value::from("2000-01-01T00:00:00Z")),
            "expired",
        ),
        (
            "fingerprint mismatch",
            altered(&token, "fingerprint", Value::from("ab".repeat(32))),
            "presented certificate",
        ),
        (
            "a token for another server",
            altered(
                &token,
                "addresses",
                serde_json::json!([format!("127.0.0.1:{primary_port}")]),
            ),
            "presented certificate",
        ),
        (
            "no address answers",
            altered(&token, "addresses", serde_json::json!(["127.0.0.1:1"])),
            "no address answers",
        ),
    ];
    assert!(!primary_fp.is_empty());
    for (what, text, expected) in cases {
        let conf = tempfile::tempdir().expect("tempdir");
        let out = add_in(conf.path(), "backup", &text);
        assert!(matches!(out.code, 1 | 2), "{what}: {out:?}");
        assert!(out.stderr.contains(expected), "{what}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{what}: {}", out.stderr);
        assert!(
            files_in(conf.path()).is_empty(),
            "{what}: left {:?}",
            files_in(conf.path())
        );
    }
    // None of them burned the real token (the expired one was never sent).
    let list = trust(&["list", "standby:"]);
    assert!(
        list.records_of("pending-token")
            .iter()
            .any(|t| t["name"] == client),
        "{}",
        list.stdout
    );

    // An unwritable configuration directory: refused before anything is sent.
    let blocker = tempfile::NamedTempFile::new().expect("tempfile");
    let out = tool("incus-trust")
        .env("INCUS_CONF", blocker.path().join("conf"))
        .args(["add", "backup", "-"])
        .stdin(token.clone())
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("cannot"), "{}", out.stderr);
    let list = trust(&["list", "standby:"]);
    assert!(
        list.records_of("pending-token")
            .iter()
            .any(|t| t["name"] == client),
        "the token was used: {}",
        list.stdout
    );

    // The token never on the command line: a URL without --fingerprint is refused.
    let out = trust(&["add", "backup", "https://127.0.0.1:1"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--fingerprint"), "{}", out.stderr);

    // Revoking it.
    let out = trust(&["revoke", &format!("standby:{client}")]);
    out.assert_success();
    assert_eq!(out.records_of("revoked").len(), 1);
}

#[test]
fn a_remote_added_by_fingerprint_and_a_changed_certificate_found_by_check() {
    let conf = tempfile::tempdir().expect("tempdir");
    let lab = lab();
    for file in ["client.crt", "client.key"] {
        std::fs::copy(lab.conf_dir().join(file), conf.path().join(file)).expect("copy");
    }
    let fp = {
        let json = incus_ok(&["query", "standby:/1.0"]);
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        v["environment"]["certificate_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let url = format!("https://127.0.0.1:{}", lab.standby_port());
    let out = tool("incus-trust")
        .env("INCUS_CONF", conf.path())
        .args(["add", "sb", &url, "--fingerprint", &fp])
        .run();
    out.assert_success();
    assert_eq!(out.records_of("trusted")[0]["how"], "pinned");
    // A wrong fingerprint: nothing written.
    let other = tempfile::tempdir().expect("tempdir");
    let out = tool("incus-trust")
        .env("INCUS_CONF", other.path())
        .args(["add", "sb", &url, "--fingerprint", &"cd".repeat(32)])
        .run();
    assert!(matches!(out.code, 1 | 2), "{out:?}");
    assert!(
        files_in(other.path()).is_empty(),
        "{:?}",
        files_in(other.path())
    );

    let check = |conf: &Path| {
        tool("incus-trust")
            .env("INCUS_CONF", conf)
            .args(["check", "sb", "--standby", "sb"])
            .run()
    };
    check(conf.path()).assert_success();
    // The server's certificate changes (reinstalled, or someone in the way).
    std::fs::copy(
        lab.primary_dir().join("server.crt"),
        conf.path().join("servercerts/sb.crt"),
    )
    .expect("replace the pinned certificate");
    let out = check(conf.path());
    out.assert_code(1);
    let record = &out.records_of("check")[0];
    assert_eq!(record["certificate_ok"], false, "{record}");
    assert!(out.first_error().contains(&fp), "{}", out.stderr);
}

/// A third Incus daemon, started for one test under the lab directory (so that
/// `scripts/lab.sh down` would also stop it), listening on 127.0.0.1; stopped when dropped.
struct ThirdDaemon {
    dir: std::path::PathBuf,
    child: std::process::Child,
    port: u16,
}

impl ThirdDaemon {
    fn start() -> ThirdDaemon {
        let dir = lab().dir.join(incus_standby_tests::unique("third"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = std::fs::File::create(dir.join("daemon.out")).expect("log");
        let incusd = [
            "/usr/libexec/incus/incusd",
            "/usr/lib/incus/incusd",
            "/usr/bin/incusd",
            "/usr/sbin/incusd",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("incusd");
        let child = std::process::Command::new("setsid")
            .arg(incusd)
            .args(["--group", "root", "--logfile"])
            .arg(dir.join("incusd.log"))
            .env("INCUS_DIR", &dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start incusd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let daemon = ThirdDaemon { dir, child, port };
        daemon
            .incus(&["admin", "waitready", "--timeout", "120"])
            .assert_success();
        daemon
            .incus(&[
                "config",
                "set",
                "core.https_address",
                &format!("127.0.0.1:{port}"),
            ])
            .assert_success();
        daemon
    }

    /// The incus CLI against this daemon's socket, with an empty configuration.
    fn incus(&self, args: &[&str]) -> Output {
        incus_standby_tests::Cmd::new("incus")
            .env("INCUS_DIR", &self.dir)
            .env("INCUS_CONF", self.dir.join("cli-conf"))
            .args(args)
            .run()
    }
}

impl Drop for ThirdDaemon {
    fn drop(&mut self) {
        let _ = self.incus(&["admin", "shutdown", "--timeout", "20"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its mounts (shmounts, guestapi…) under its directory, then the directory.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&self.dir.display().to_string()))
            .collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for point in points {
            let _ = std::process::Command::new("umount")
                .args(["-l", point])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On a server the lab never saw: a fresh configuration reaches it in two commands (token on
/// its side, add on ours), and both the stock CLI and our tools use the result.
#[test]
fn a_third_server_is_reached_from_a_fresh_configuration_in_two_commands() {
    let third = ThirdDaemon::start();
    // On the server's side: its own socket ("local" with its INCUS_DIR).
    let token = tool("incus-trust")
        .env("INCUS_DIR", &third.dir)
        .env("INCUS_CONF", third.dir.join("cli-conf"))
        .args(["token", "local:newcomer"])
        .run();
    token.assert_success();
    let record = token.records_of("token")[0].clone();
    assert_eq!(
        record["addresses"],
        serde_json::json!([format!("127.0.0.1:{}", third.port)])
    );
    let conf = tempfile::tempdir().expect("tempdir");
    let out = add_in(
        conf.path(),
        "third",
        record["token"].as_str().unwrap_or_default(),
    );
    out.assert_success();
    let listed = incus_standby_tests::Cmd::new("incus")
        .env("INCUS_CONF", conf.path())
        .args(["list", "third:", "-f", "csv"])
        .run();
    listed.assert_success();
    let check = tool("incus-trust")
        .env("INCUS_CONF", conf.path())
        .args(["check", "third"])
        .run();
    check.assert_success();
    assert_eq!(check.records_of("check")[0]["trusted"], true);
}
