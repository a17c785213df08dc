//! Trust: certificates and tokens (used by incus-trust).
//!
//! Two ways to make a server trust a client certificate:
//!
//! - **By token.** An administrator of the server makes a token ([`create_token`], what
//!   `incus config trust add NAME` does); the client redeems it ([`redeem`]) over a
//!   connection that presents its certificate and pins the server by the fingerprint written
//!   in the token ([`Client::connect_pinned`]). The server then trusts the certificate it saw
//!   in the handshake. A token is single use; pending ones are listed by [`pending_tokens`]
//!   and revoked by [`revoke_token`].
//! - **Directly.** An already-trusted administrator adds the certificate ([`add`]).
//!
//! [`list`] and [`remove`] manage the trust store. Tokens always live in project `default`,
//! whatever the client's project.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{nullable, optional_time};
use crate::client::{Client, Operation, Reply, Request, escape, tls};
use crate::error::{Error, Result};

/// Incus's "no time", written in a token without expiry.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What to do about a bad token, appended to every decoding error.
const MAKE_ONE: &str = "make one on the standby with `incus config trust add NAME`";

/// A trust token as the `incus` CLI prints it: standard base64 (padded) of a JSON object
/// built from the token operation's metadata (`api.CertificateAddToken` in Incus).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustToken {
    /// The name the certificate gets in the server's trust store.
    pub client_name: String,
    /// SHA-256 of the server certificate's DER (lowercase hex): the certificate to pin.
    pub fingerprint: String,
    /// Where the server listens, as `host:port` (no scheme).
    pub addresses: Vec<String>,
    /// The secret that proves the token.
    pub secret: String,
    /// When the token stops working (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The secret is left out, so that tokens can be logged.
impl fmt::Debug for TrustToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustToken")
            .field("client_name", &self.client_name)
            .field("fingerprint", &self.fingerprint)
            .field("addresses", &self.addresses)
            .field("secret", &"…")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The token's JSON, field for field as the Go client writes it.
#[derive(Serialize, Deserialize)]
struct TokenJson {
    #[serde(default)]
    client_name: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default, deserialize_with = "nullable")]
    addresses: Vec<String>,
    #[serde(default)]
    secret: String,
    #[serde(default, deserialize_with = "optional_time", skip_serializing)]
    expires_at: Option<DateTime<Utc>>,
}

impl TrustToken {
    /// Decodes a token as printed by `incus config trust add` (white space around it is
    /// ignored). Like the CLI, refuses a token with an empty client name, address list,
    /// secret or fingerprint.
    pub fn decode(text: &str) -> Result<Self> {
        let bad =
            |why: String| Error::Config(format!("not an Incus trust token: {why}; {MAKE_ONE}"));
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| bad(format!("it is not base64 ({e})")))?;
        let json: TokenJson = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "it does not hold the token's JSON ({})",
                one_line(&e.to_string())
            ))
        })?;
        let missing = [
            ("client name", json.client_name.is_empty()),
            ("address", json.addresses.is_empty()),
            ("secret", json.secret.is_empty()),
            ("server fingerprint", json.fingerprint.is_empty()),
        ];
        if let Some((what, _)) = missing.iter().find(|(_, empty)| *empty) {
            return Err(bad(format!("it has no {what}")));
        }
        Ok(TrustToken {
            client_name: json.client_name,
            fingerprint: json.fingerprint,
            addresses: json.addresses,
            secret: json.secret,
            expires_at: json.expires_at,
        })
    }

    /// Encodes the token exactly as the CLI does: fields in Go's order, times as Go's
    /// RFC 3339 with nanoseconds, `0001-01-01T00:00:00Z` when there is no expiry.
    pub fn encode(&self) -> String {
        let expires_at = match self.expires_at {
            Some(t) => go_time(t),
            None => ZERO_TIME.to_string(),
        };
        let json = json!({
            "client_name": self.client_name,
            "fingerprint": self.fingerprint,
            "addresses": self.addresses,
            "secret": self.secret,
            "expires_at": expires_at,
        });
        STANDARD.encode(json.to_string())
    }

    /// True when the token has an expiry and it is not after `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The server's URLs, `https://ADDRESS`, in the token's order.
    pub fn urls(&self) -> Vec<String> {
        self.addresses
            .iter()
            .map(|a| format!("https://{a}"))
            .collect()
    }
}

/// Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped.
fn go_time(t: DateTime<Utc>) -> String {
    let text = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match text.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{frac}Z")
            }
        }
        None => text,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The metadata of a token operation.
#[derive(Deserialize)]
struct TokenMetadata {
    #[serde(default, deserialize_with = "nullable")]
    addresses: Vec<String>,
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    secret: String,
    #[serde(default, rename = "expiresAt", deserialize_with = "optional_time")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    request: TokenRequest,
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    restricted: bool,
    #[serde(default, deserialize_with = "nullable")]
    projects: Vec<String>,
}

/// Makes a trust token for a new client called `name` (`incus config trust add NAME`):
/// an unrestricted client certificate once redeemed. Returns the token and the id of its
/// operation, which stays running until the token is used, revoked or (never, by itself)
/// expires; this does not wait for it. Expiry follows the server's
/// `core.remote_token_expiry`.
pub fn create_token(client: &Client, name: &str) -> Result<(TrustToken, String)> {
    create_token_for(client, name, &[])
}

/// [`create_token`] for a certificate restricted to `projects` (none: unrestricted).
pub fn create_token_for(
    client: &Client,
    name: &str,
    projects: &[String],
) -> Result<(TrustToken, String)> {
    let remote = client.remote();
    if name.trim().is_empty() {
        return Err(Error::Config(format!(
            "a trust token for remote \"{remote}\" needs a client name"
        )));
    }
    let body = json!({
        "name": name,
        "type": "client",
        "restricted": !projects.is_empty(),
        "projects": if projects.is_empty() { serde_json::Value::Null } else { json!(projects) },
        "certificate": "",
        "description": "",
        "trust_token": "",
        "token": true,
    });
    let request = Request::post("/certificates", body).project(Some("default"));
    let op = match client.send(&request)? {
        Reply::Async(op) => *op,
        Reply::Sync { .. } => {
            return Err(Error::protocol(
                remote,
                "POST /1.0/certificates with token:true answered without a token operation (does the server have the certificate_token extension?)",
            ));
        }
    };
    match token_of(remote, &op) {
        Ok(token) => Ok((token, op.id)),
        Err(e) => {
            // A token nobody can use: do not leave it pending.
            let _ = revoke_token(client, &op.id);
            Err(e)
        }
    }
}

/// Builds the token a token operation (class `token`) stands for, from its metadata.
pub fn token_of(remote: &str, op: &Operation) -> Result<TrustToken> {
    let meta: TokenMetadata = serde_json::from_value(op.metadata.clone())
        .map_err(|e| Error::protocol(remote, format!("token operation {}: {e}", op.id)))?;
    if meta.addresses.is_empty() {
        return Err(Error::Config(format!(
            "remote \"{remote}\" listens on no network address, so a token for it is useless; set one with `incus config set core.https_address HOST:PORT` on it"
        )));
    }
    if meta.secret.is_empty() || meta.fingerprint.is_empty() || meta.request.name.is_empty() {
        return Err(Error::protocol(
            remote,
            format!(
                "token operation {} lacks its secret, fingerprint or name",
                op.id
            ),
        ));
    }
    Ok(TrustToken {
        client_name: meta.request.name,
        fingerprint: meta.fingerprint,
        addresses: meta.addresses,
        secret: meta.secret,
        expires_at: meta.expires_at,
    })
}

/// A token made on the server and not yet used or revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingToken {
    /// The token itself, as it can be read again while pending.
    pub token: Option<TrustToken>,
    /// The id of its operation (what [`revoke_token`] takes).
    pub operation_id: String,
    /// The name the client will get.
    pub client_name: String,
    /// When it stops working (`None`: never). Expired tokens stay listed until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// The projects the certificate will be restricted to (empty: unrestricted).
    pub projects: Vec<String>,
}

/// The server's pending trust tokens (`incus config trust list-tokens`): running operations
/// of class `token` in project `default` that carry a certificate request (cluster-join
/// tokens, of the same class, do not).
pub fn pending_tokens(client: &Client) -> Result<Vec<PendingToken>> {
    let request = Request::get("/operations")
        .query("recursion", "1")
        .project(Some("default"));
    let (by_status, _): (BTreeMap<String, Vec<Operation>>, _) = client.fetch(&request)?;
    let mut tokens = Vec::new();
    for op in by_status.into_values().flatten() {
        if op.class != "token" || op.status_code != 103 {
            continue;
        }
        let meta: Option<TokenMetadata> = serde_json::from_value(op.metadata.clone()).ok();
        if meta.as_ref().is_none_or(|m| m.request.name.is_empty()) {
            continue;
        }
        tokens.push(PendingToken {
            token: token_of(client.remote(), &op).ok(),
            client_name: meta
                .as_ref()
                .map(|m| m.request.name.clone())
                .unwrap_or_default(),
            projects: meta
                .as_ref()
                .filter(|m| m.request.restricted)
                .map(|m| m.request.projects.clone())
                .unwrap_or_default(),
            expires_at: meta.and_then(|m| m.expires_at),
            operation_id: op.id,
        });
    }
    tokens.sort_by(|a, b| {
        a.client_name
            .cmp(&b.client_name)
            .then_with(|| a.operation_id.cmp(&b.operation_id))
    });
    Ok(tokens)
}

/// Revokes a pending token by its operation id (`incus config trust revoke-token`). A token
/// that is not pending (unknown, used or already revoked) gives a 404 [`Error::Api`].
pub fn revoke_token(client: &Client, operation_id: &str) -> Result<()> {
    let request =
        Request::delete(format!("/operations/{}", escape(operation_id))).project(Some("default"));
    match client.send(&request) {
        Ok(_) => Ok(()),
        Err(e)
            if e.is_not_found()
                || (e.status() == Some(400) && e.message().contains("Only running")) =>
        {
            Err(Error::Api {
                remote: client.remote().to_string(),
                status: 404,
                message: format!(
                    "no pending token with operation id {operation_id} (already used or revoked?); list them with `incus config trust list-tokens`"
                ),
            })
        }
        Err(e) => Err(e),
    }
}

/// An entry of the server's trust store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Certificate {
    #[serde(default)]
    pub name: String,
    /// `client` or `metrics`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub restricted: bool,
    /// The projects a restricted certificate may use.
    #[serde(default, deserialize_with = "nullable")]
    pub projects: Vec<String>,
    /// The certificate, PEM.
    #[serde(default)]
    pub certificate: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub description: String,
}

/// Every trusted certificate (`incus config trust list`).
pub fn list(client: &Client) -> Result<Vec<Certificate>> {
    let request = Request::get("/certificates")
        .query("recursion", "1")
        .project(Some("default"));
    Ok(client.fetch(&request)?.0)
}

/// Trusts a client certificate directly, unrestricted, under `name`
/// (`incus config trust add-certificate`). `pem` is the certificate (the first one is
/// used). Returns its fingerprint.
pub fn add(client: &Client, name: &str, pem: &str) -> Result<String> {
    let remote = client.remote();
    let der = tls::pem_to_der(pem.as_bytes()).ok_or_else(|| {
        Error::Config(format!(
            "no PEM certificate to add to remote \"{remote}\" (expected -----BEGIN CERTIFICATE-----)"
        ))
    })?;
    let body = json!({
        "name": name,
        "type": "client",
        "restricted": false,
        "projects": null,
        "certificate": STANDARD.encode(der.as_ref()),
        "description": "",
        "trust_token": "",
        "token": false,
    });
    client.send(&Request::post("/certificates", body).project(Some("default")))?;
    Ok(tls::fingerprint(&der))
}

/// Stops trusting a certificate (`incus config trust remove`). Incus also accepts a
/// unique prefix of the fingerprint.
pub fn remove(client: &Client, fingerprint: &str) -> Result<()> {
    let request =
        Request::delete(format!("/certificates/{}", escape(fingerprint))).project(Some("default"));
    match client.send(&request) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(Error::Api {
            remote: client.remote().to_string(),
            status: 404,
            message: format!(
                "no trusted certificate with fingerprint {fingerprint}; see `incus config trust list`"
            ),
        }),
        Err(e) => Err(e),
    }
}

/// What [`redeem`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The server now trusts our certificate; the token is used up.
    Trusted,
    /// The server already trusted our certificate; the token was not sent and stays
    /// pending (revoke it on the server if it is not needed).
    AlreadyTrusted,
}

/// Redeems a token: the server trusts the certificate `client` presents.
///
/// `client` must pin the token's fingerprint ([`Client::connect_pinned`] with
/// `token.fingerprint` and one of [`TrustToken::urls`]); then a server with another
/// certificate is refused during the TLS handshake, before the secret is sent. An expired
/// token is refused without contacting the server.
///
/// Errors: a token the server does not know (used, revoked, or expired and purged) gives a
/// 403 [`Error::Api`] saying so; an expired token the server still knows (clocks differ) a
/// 403 saying it expired; a server with another certificate an [`Error::Config`] naming both
/// fingerprints.
pub fn redeem(client: &Client, token: &TrustToken) -> Result<Redeemed> {
    let remote = client.remote();
    let name = &token.client_name;
    if let Some(expiry) = token.expires_at
        && token.is_expired(Utc::now())
    {
        return Err(Error::Config(format!(
            "the trust token for {name} expired at {}; make a new one on the standby (remote \"{remote}\") with `incus config trust add {name}`",
            expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
        )));
    }
    let expected = token.fingerprint.to_ascii_lowercase();
    match client.pinned_fingerprint() {
        Some(pinned) if pinned == expected => {}
        pinned => {
            return Err(Error::Config(format!(
                "refusing to send the trust token for {name} to remote \"{remote}\": the connection pins {}, the token names server certificate {expected}; connect with Client::connect_pinned and the token's fingerprint",
                pinned.unwrap_or("nothing (not HTTPS)")
            )));
        }
    }
    let mismatch = |e: Error| match e {
        Error::CertificateMismatch {
            presented, pinned, ..
        } => Error::Config(format!(
            "remote \"{remote}\" ({}) presented certificate {presented}, but the trust token for {name} expects {pinned}; nothing was sent. Check the address, or make a new token on the standby with `incus config trust add {name}`",
            client.url().unwrap_or("?")
        )),
        other => other,
    };
    if client.server().map_err(mismatch)?.trusted() {
        return Ok(Redeemed::AlreadyTrusted);
    }
    let body = json!({ "trust_token": token.encode() });
    match client.send(&Request::post("/certificates", body).project(Some("default"))) {
        Ok(Reply::Sync { .. }) => Ok(Redeemed::Trusted),
        Ok(Reply::Async(op)) => Err(Error::protocol(
            remote,
            format!("redeeming a token started operation {}", op.id),
        )),
        Err(Error::Api {
            status: 403,
            message,
            ..
        }) if message.contains("No matching certificate add operation") => Err(Error::Api {
            remote: remote.to_string(),
            status: 403,
            message: format!(
                "the standby does not know this token (already used, revoked or expired): make a new one with `incus config trust add {name}`"
            ),
        }),
        // The server's clock says so (it then deletes the token).
        Err(Error::Api { message, .. }) if message.contains("Token has expired") => {
            Err(Error::Api {
                remote: remote.to_string(),
                status: 403,
                message: format!(
                    "the standby says the trust token for {name} has expired: make a new one with `incus config trust add {name}`"
                ),
            })
        }
        Err(Error::Api {
            status: 400,
            message,
            ..
        }) if message.contains("already trusted") => Ok(Redeemed::AlreadyTrusted),
        Err(e) => Err(mismatch(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> TrustToken {
        TrustToken {
            client_name: "brief-client".into(),
            fingerprint: "6d1298e25e2cec864a1fbdaf3f76dc8553ee43ec9423e7c91b3f392af607823e".into(),
            addresses: vec!["127.0.0.1:8444".into(), "[::1]:8444".into()],
            secret: "79e9133a0123".into(),
            expires_at: None,
        }
    }

    #[test]
    fn round_trip_without_expiry_matches_the_cli_format() -> Result<()> {
        let token = sample();
        let text = token.encode();
        let raw = STANDARD
            .decode(&text)
            .map_err(|e| Error::Config(e.to_string()))?;
        assert_eq!(
            String::from_utf8_lossy(&raw),
            r#"{"client_name":"brief-client","fingerprint":"6d1298e25e2cec864a1fbdaf3f76dc8553ee43ec9423e7c91b3f392af607823e","addresses":["127.0.0.1:8444","[::1]:8444"],"secret":"79e9133a0123","expires_at":"0001-01-01T00:00:00Z"}"#
        );
        assert_eq!(TrustToken::decode(&text)?, token);
        assert_eq!(TrustToken::decode(&format!("  {text}\n"))?, token);
        assert!(!token.is_expired(Utc::now()));
        Ok(())
    }

    #[test]
    fn round_trip_with_expiry() -> Result<()> {
        let mut token = sample();
        let t = Utc
            .with_ymd_and_hms(2026, 11, 28, 17, 10, 23)
            .single()
            .ok_or_else(|| Error::Config("time".into()))?
            + chrono::Duration::nanoseconds(587_055_670);
        token.expires_at = Some(t);
        let text = token.encode();
        let raw = String::from_utf8(
            STANDARD
                .decode(&text)
                .map_err(|e| Error::Config(e.to_string()))?,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        assert!(
            raw.contains(r#""expires_at":"2026-11-28T17:10:23.58705567Z""#),
            "{raw}"
        );
        assert_eq!(TrustToken::decode(&text)?, token);
        assert!(token.is_expired(t));
        assert!(!token.is_expired(t - chrono::Duration::seconds(1)));
        Ok(())
    }

    #[test]
    fn decodes_what_the_go_cli_printed() -> Result<()> {
        // The JSON of incus-api.md §2.2 with a server-side expiry and an offset.
        let json = r#"{"client_name":"c","fingerprint":"ab","addresses":["h:1"],"secret":"s","expires_at":"2026-01-02T03:04:05.5+01:00"}"#;
        let token = TrustToken::decode(&STANDARD.encode(json))?;
        assert_eq!(
            token.expires_at.map(|t| t.to_rfc3339()),
            Some("2026-01-02T02:04:05.500+00:00".to_string())
        );
        assert_eq!(token.urls(), ["https://h:1"]);
        Ok(())
    }

    #[test]
    fn malformed_tokens_are_refused_in_one_line() {
        let cases = [
            ("", "empty"),
            ("%%% not base64", "not base64"),
            (&STANDARD.encode("hello"), "JSON"),
            (&STANDARD.encode("{\"client_name\": 3}"), "JSON"),
            (
                &STANDARD.encode(r#"{"fingerprint":"ab","addresses":["h:1"],"secret":"s"}"#),
                "no client name",
            ),
            (
                &STANDARD.encode(
                    r#"{"client_name":"c","fingerprint":"ab","addresses":[],"secret":"s"}"#,
                ),
                "no address",
            ),
            (
                &STANDARD.encode(
                    r#"{"client_name":"c","fingerprint":"ab","addresses":null,"secret":"s"}"#,
                ),
                "no address",
            ),
            (
                &STANDARD.encode(r#"{"client_name":"c","fingerprint":"ab","addresses":["h:1"]}"#),
                "no secret",
            ),
            (
                &STANDARD.encode(r#"{"client_name":"c","addresses":["h:1"],"secret":"s"}"#),
                "no server fingerprint",
            ),
        ];
        for (text, why) in cases {
            let message = match TrustToken::decode(text) {
                Ok(t) => panic!("{text:?} decoded to {t:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                message.starts_with("not an Incus trust token: "),
                "{message}"
            );
            assert!(message.contains(why), "{message}");
            assert!(message.contains("incus config trust add"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", sample()).contains("79e9133a"));
    }

    #[test]
    fn token_from_operation_metadata() -> Result<()> {
        let op: Operation = serde_json::from_value(json!({
            "id": "ab65",
            "class": "token",
            "status_code": 103,
            "metadata": {
                "addresses": ["127.0.0.1:8444"],
                "fingerprint": "6d12",
                "request": {"name": "brief-client", "projects": []},
                "secret": "79e9",
                "expiresAt": "2026-11-28T17:10:23.587055675Z"
            }
        }))
        .map_err(|e| Error::Config(e.to_string()))?;
        let token = token_of("standby", &op)?;
        assert_eq!(token.client_name, "brief-client");
        assert_eq!(token.addresses, ["127.0.0.1:8444"]);
        assert_eq!(token.secret, "79e9");
        assert!(token.expires_at.is_some());
        Ok(())
    }
}
