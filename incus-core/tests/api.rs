//! The instance, snapshot, profile and operation calls the tools rely on, against the real
//! lab daemons (`scripts/lab.sh up`), on the standby over HTTPS.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, Utc};
use incus_core::Client;
use incus_core::api::{certificates, instances, operations, profiles, snapshots};
use incus_core::remote::Remotes;
use incus_standby_tests::{Instance, incus_ok, lab, unique};

fn standby() -> Client {
    let remotes = Remotes::load_from(&lab().conf_dir(), Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("lab configuration: {e}"));
    Client::connect(&remotes, "standby").unwrap_or_else(|e| panic!("standby: {e}"))
}

#[test]
fn instances_are_listed_read_patched_started_and_stopped() {
    let client = standby();
    let c = Instance::create("standby", &unique("api-inst"));
    let all = instances::list(&client, false).expect("list");
    assert!(all.iter().any(|i| i.name == c.name));
    let (found, etag) = instances::get(&client, &c.name).expect("get");
    assert_eq!(found.status, "Stopped");
    assert!(etag.is_some());
    assert_eq!(found.root_pool(), Some("default"));

    let change = BTreeMap::from([("user.api".to_string(), "yes".to_string())]);
    instances::patch_config(&client, &c.name, &change, etag.clone()).expect("patch");
    assert_eq!(c.config_get("user.api"), "yes");
    // The ETag changed with the config: an update based on the old one is refused (412).
    let stale = instances::patch_config(&client, &c.name, &change, etag);
    assert_eq!(stale.err().and_then(|e| e.status()), Some(412));

    instances::change_state(&client, &c.name, instances::StateAction::Start, -1, false)
        .expect("start");
    assert_eq!(c.status(), "Running");
    instances::change_state(&client, &c.name, instances::StateAction::Stop, 0, true).expect("stop");
    assert_eq!(c.status(), "Stopped");
    instances::delete(&client, &c.name).expect("delete");
    let gone = instances::get(&client, &c.name);
    assert!(gone.err().is_some_and(|e| e.is_not_found()));
}

#[test]
fn snapshots_are_created_listed_changed_restored_and_deleted() {
    let client = standby();
    let c = Instance::create("standby", &unique("api-snap"));
    let expiry = Utc::now() + Duration::days(3);
    snapshots::create(&client, &c.name, "one", false, Some(expiry)).expect("create");
    snapshots::create(&client, &c.name, "two", false, None).expect("create");
    let list = snapshots::list(&client, &c.name).expect("list");
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(
        list[0].expires_at.map(|t| t.timestamp()),
        Some(expiry.timestamp())
    );
    assert_eq!(list[1].expires_at, None);

    snapshots::set_expiry(&client, &c.name, "one", None).expect("set expiry");
    assert_eq!(
        snapshots::get(&client, &c.name, "one")
            .expect("get")
            .expires_at,
        None
    );

    snapshots::restore(&client, &c.name, "one").expect("restore");
    snapshots::delete(&client, &c.name, "one").expect("delete");
    assert_eq!(c.snapshots(), ["two"]);
    let missing = snapshots::delete(&client, &c.name, "one");
    assert!(missing.err().is_some_and(|e| e.is_not_found()));
}

#[test]
fn profiles_are_listed_read_and_created() {
    let client = standby();
    let name = unique("api-prof");
    let profile = profiles::Profile {
        name: name.clone(),
        description: "made by a test".into(),
        config: BTreeMap::from([("user.team".to_string(), "web".to_string())]),
        devices: BTreeMap::new(),
    };
    profiles::create(&client, &profile).expect("create");
    assert!(profiles::names(&client).expect("names").contains(&name));
    assert_eq!(
        profiles::get(&client, &name).expect("get").config["user.team"],
        "web"
    );
    incus_ok(&["profile", "delete", &format!("standby:{name}")]);
}

#[test]
fn running_operations_are_listed_until_they_end() {
    let client = standby();
    // A trust token is an operation that stays running until it is used or revoked.
    let (_, id) = certificates::create_token(&client, &unique("api-op")).expect("token");
    let running = operations::running(&client).expect("operations");
    assert!(running.iter().any(|op| op.id == id && !op.is_final()));
    certificates::revoke_token(&client, &id).expect("revoke");
    let running = operations::running(&client).expect("operations");
    assert!(!running.iter().any(|op| op.id == id));
}
