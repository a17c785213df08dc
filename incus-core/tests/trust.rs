//! Trust tokens and certificates against the real lab daemons (`scripts/lab.sh up`), through
//! the `standby` remote over HTTPS. The tests run one at a time: one of them changes the
//! standby's `core.remote_token_expiry`, which would shorten the others' tokens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use incus_core::api::certificates::{self, Redeemed, TrustToken};
use incus_core::client::tls;
use incus_core::remote::Remotes;
use incus_core::{Client, Error};
use incus_standby_tests::{incus, incus_ok, lab, unique};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lab's admin connection to the standby.
fn standby() -> Client {
    let remotes = Remotes::load_from(&lab().conf_dir(), Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("lab configuration: {e}"));
    Client::connect(&remotes, "standby").unwrap_or_else(|e| panic!("standby: {e}"))
}

fn standby_url() -> String {
    format!("https://127.0.0.1:{}", lab().standby_port())
}

/// A fresh client identity (P-384, made by openssl) in a temporary directory.
struct Identity {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

impl Identity {
    fn new() -> Identity {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let cert = dir.path().join("client.crt");
        let key = dir.path().join("client.key");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:secp384r1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=test",
                "-addext",
                "extendedKeyUsage=clientAuth",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
        let fingerprint = tls::pem_fingerprint(&pem).unwrap_or_else(|| panic!("no certificate"));
        Identity {
            _dir: dir,
            cert,
            key,
            fingerprint,
        }
    }

    fn pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new connection to the standby with this identity, pinned by `fingerprint`.
    fn connect(&self, fingerprint: &str) -> Client {
        Client::connect_pinned(
            "standby",
            &standby_url(),
            &self.cert,
            &self.key,
            fingerprint,
        )
        .unwrap_or_else(|e| panic!("connect_pinned: {e}"))
    }

    /// Whether the standby trusts this identity (asked on a new connection).
    fn trusted(&self) -> bool {
        let fingerprint = standby_fingerprint();
        self.connect(&fingerprint)
            .server()
            .unwrap_or_else(|e| panic!("GET /1.0: {e}"))
            .trusted()
    }
}

fn standby_fingerprint() -> String {
    standby()
        .server()
        .unwrap_or_else(|e| panic!("GET /1.0: {e}"))
        .environment
        .certificate_fingerprint
        .clone()
}

/// Removes a certificate from the standby's trust store when dropped (if it is there).
struct Trusted(String);

impl Drop for Trusted {
    fn drop(&mut self) {
        let _ = certificates::remove(&standby(), &self.0);
    }
}

/// Revokes a token when dropped (if it is still pending).
struct Pending(String);

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = certificates::revoke_token(&standby(), &self.0);
    }
}

/// Sets a server key on the standby, and unsets it when dropped.
struct ServerKey(&'static str);

impl ServerKey {
    fn set(key: &'static str, value: &str) -> ServerKey {
        let guard = ServerKey(key);
        incus_ok(&["config", "set", "standby:", key, value]);
        guard
    }
}

impl Drop for ServerKey {
    fn drop(&mut self) {
        incus(&["config", "unset", "standby:", self.0]);
    }
}

#[test]
fn a_token_is_made_listed_and_revoked() -> TestResult {
    let _serial = serial();
    let admin = standby();
    let name = unique("tok");
    let (token, op) = certificates::create_token(&admin, &name)?;
    let _pending = Pending(op.clone());

    assert_eq!(token.client_name, name);
    assert_eq!(token.fingerprint, standby_fingerprint());
    let address = format!("127.0.0.1:{}", lab().standby_port());
    assert!(token.addresses.contains(&address), "{token:?}");
    assert!(!token.secret.is_empty());
    assert_eq!(token.expires_at, None);
    assert!(!token.is_expired(Utc::now()));
    assert_eq!(TrustToken::decode(&token.encode())?, token);

    let pending = certificates::pending_tokens(&admin)?;
    let listed = pending
        .iter()
        .find(|p| p.operation_id == op)
        .ok_or_else(|| format!("{op} not in {pending:?}"))?;
    assert_eq!(listed.client_name, name);
    assert_eq!(listed.expires_at, None);

    certificates::revoke_token(&admin, &op)?;
    let pending = certificates::pending_tokens(&admin)?;
    assert!(pending.iter().all(|p| p.operation_id != op), "{pending:?}");
    let again = certificates::revoke_token(&admin, &op);
    assert!(matches!(again, Err(ref e) if e.is_not_found()), "{again:?}");
    Ok(())
}

#[test]
fn a_token_makes_a_new_client_trusted_once() -> TestResult {
    let _serial = serial();
    let admin = standby();
    let me = Identity::new();
    let _cleanup = Trusted(me.fingerprint.clone());
    let name = unique("redeem");
    let (token, op) = certificates::create_token(&admin, &name)?;
    let _pending = Pending(op.clone());
    // What the user pastes.
    let token = TrustToken::decode(&token.encode())?;

    let client = me.connect(&token.fingerprint);
    assert_eq!(client.server()?.auth, "untrusted");
    assert_eq!(certificates::redeem(&client, &token)?, Redeemed::Trusted);

    assert!(me.trusted(), "a new client is still untrusted");
    let entry = certificates::list(&admin)?
        .into_iter()
        .find(|c| c.fingerprint == me.fingerprint)
        .ok_or("the redeemed certificate is not listed")?;
    assert_eq!(entry.name, name);
    assert_eq!(entry.kind, "client");
    assert!(!entry.restricted);
    assert_eq!(
        tls::pem_fingerprint(entry.certificate.as_bytes()),
        Some(me.fingerprint.clone())
    );
    let pending = certificates::pending_tokens(&admin)?;
    assert!(pending.iter().all(|p| p.operation_id != op), "{pending:?}");

    // Redeeming again from the now-trusted client sends nothing.
    assert_eq!(
        certificates::redeem(&me.connect(&token.fingerprint), &token)?,
        Redeemed::AlreadyTrusted
    );

    // The token is used up: another identity cannot use it.
    let other = Identity::new();
    let _cleanup_other = Trusted(other.fingerprint.clone());
    let err = certificates::redeem(&other.connect(&token.fingerprint), &token)
        .err()
        .ok_or("a used token was accepted")?;
    let message = err.to_string();
    eprintln!("{message}");
    assert_eq!(err.status(), Some(403), "{message}");
    assert!(
        message.contains("does not know this token") && message.contains(&name),
        "{message}"
    );
    assert!(!other.trusted());

    certificates::remove(&admin, &me.fingerprint)?;
    assert!(!me.trusted(), "still trusted after remove");
    Ok(())
}

#[test]
fn an_expired_token_is_refused_locally() -> TestResult {
    let _serial = serial();
    let admin = standby();
    let me = Identity::new();
    let _cleanup = Trusted(me.fingerprint.clone());
    let (token, op) = {
        // Incus's expiry syntax (GetExpiry) takes seconds as `S`.
        let _expiry = ServerKey::set("core.remote_token_expiry", "2S");
        certificates::create_token(&admin, &unique("expired"))?
    };
    let _pending = Pending(op.clone());
    let expires_at = token.expires_at.ok_or("the token has no expiry")?;
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    assert!(left <= Duration::from_secs(3), "expires in {left:?}");
    std::thread::sleep(left + Duration::from_millis(200));
    assert!(token.is_expired(Utc::now()));

    let token = TrustToken::decode(&token.encode())?;
    let err = certificates::redeem(&me.connect(&token.fingerprint), &token)
        .err()
        .ok_or("an expired token was accepted")?;
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        message.starts_with(&format!(
            "the trust token for {} expired at ",
            token.client_name
        )) && message.contains("incus config trust add"),
        "{message}"
    );
    assert!(!me.trusted());
    // Nothing was sent: the token is still pending on the server.
    assert!(
        certificates::pending_tokens(&admin)?
            .iter()
            .any(|p| p.operation_id == op && p.expires_at == Some(expires_at))
    );

    // Were the local clock behind, the standby would refuse it itself.
    let mut unexpiring = token.clone();
    unexpiring.expires_at = None;
    let err = certificates::redeem(&me.connect(&token.fingerprint), &unexpiring)
        .err()
        .ok_or("the standby accepted an expired token")?;
    let message = err.to_string();
    eprintln!("{message}");
    assert!(message.contains("has expired"), "{message}");
    assert!(!me.trusted());
    Ok(())
}

#[test]
fn a_token_for_another_certificate_is_not_sent() -> TestResult {
    let _serial = serial();
    let admin = standby();
    let me = Identity::new();
    let _cleanup = Trusted(me.fingerprint.clone());
    let (token, op) = certificates::create_token(&admin, &unique("pin"))?;
    let _pending = Pending(op.clone());
    let real = token.fingerprint.clone();

    // The token claims another server certificate (here: the lab client's own).
    let mut forged = token.clone();
    forged.fingerprint = tls::pem_fingerprint(&std::fs::read(lab().conf_dir().join("client.crt"))?)
        .ok_or("no lab client certificate")?;
    assert_ne!(forged.fingerprint, real);
    let err = certificates::redeem(&me.connect(&forged.fingerprint), &forged)
        .err()
        .ok_or("a token pinned to another certificate was sent")?;
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        message.contains(&real) && message.contains(&forged.fingerprint),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");

    // A connection pinned to something other than the token's fingerprint is refused too.
    let err = certificates::redeem(&me.connect(&real), &forged)
        .err()
        .ok_or("a mismatched connection was used")?;
    assert!(matches!(err, Error::Config(_)), "{err}");

    assert!(!me.trusted());
    // The secret never reached the server: the token is still pending.
    assert!(
        certificates::pending_tokens(&admin)?
            .iter()
            .any(|p| p.operation_id == op)
    );
    Ok(())
}

#[test]
fn malformed_tokens_are_refused_in_one_line() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for text in [
        "this is not base64!".to_string(),
        b64("not json at all"),
        b64("[1,2,3]"),
        b64(r#"{"client_name":"c","fingerprint":"ab","addresses":["h:1"]}"#),
        b64(r#"{"client_name":"","fingerprint":"ab","addresses":["h:1"],"secret":"s"}"#),
        b64(r#"{"client_name":"c","fingerprint":"ab","addresses":[],"secret":"s"}"#),
        b64(r#"{"client_name":"c","addresses":["h:1"],"secret":"s"}"#),
    ] {
        let message = match TrustToken::decode(&text) {
            Ok(token) => panic!("{text:?} decoded to {token:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with("not an Incus trust token: ")
                && message
                    .ends_with("; make one on the standby with `incus config trust add NAME`")
                && !message.contains('\n'),
            "{message}"
        );
    }
}

#[test]
fn a_certificate_is_added_listed_and_removed() -> TestResult {
    let _serial = serial();
    let admin = standby();
    let me = Identity::new();
    let _cleanup = Trusted(me.fingerprint.clone());
    let name = unique("direct");
    assert!(!me.trusted());

    assert_eq!(certificates::add(&admin, &name, &me.pem())?, me.fingerprint);
    let entry = certificates::list(&admin)?
        .into_iter()
        .find(|c| c.fingerprint == me.fingerprint)
        .ok_or("the added certificate is not listed")?;
    assert_eq!(entry.name, name);
    assert!(me.trusted());

    certificates::remove(&admin, &me.fingerprint)?;
    assert!(!me.trusted());
    let again = certificates::remove(&admin, &me.fingerprint);
    assert!(matches!(again, Err(ref e) if e.is_not_found()), "{again:?}");
    Ok(())
}
