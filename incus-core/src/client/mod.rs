//! The transport: plain HTTP over the local unix socket, or HTTPS with the CLI's client
//! certificate and a pinned server certificate. Requests are plain values ([`Request`]) so
//! that what is sent can be inspected without a server.

mod operation;
pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

pub use operation::{Operation, WaitOptions};

use crate::api::server::ServerInfo;
use crate::error::{Error, Result};
use crate::remote::{Endpoint, Remotes};

/// A request to the Incus API, built without I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// Path from `/1.0`, segments already escaped (see [`escape`]).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub if_match: Option<String>,
    /// `None`: the client's project; `Some(p)`: that project.
    pub project: Option<String>,
    pub all_projects: bool,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
            project: None,
            all_projects: false,
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).body(body)
    }
    pub fn put(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::PUT, path).body(body)
    }
    pub fn patch(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::PATCH, path).body(body)
    }
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }
    pub fn if_match(mut self, etag: Option<String>) -> Self {
        self.if_match = etag;
        self
    }
    pub fn all_projects(mut self) -> Self {
        self.all_projects = true;
        self
    }
    /// Targets another project than the client's; operations and server-wide paths ignore it.
    pub fn project(mut self, project: Option<&str>) -> Self {
        self.project = project.map(str::to_string);
        self
    }
}

/// Percent-escapes one path segment (instance, snapshot, profile names).
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What Incus answered.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A synchronous answer: its metadata and the ETag header, if any.
    Sync {
        /// Kept as text, decoded by the caller into its own type: a listing of a thousand
        /// instances never becomes a `serde_json::Value` tree (several times its size).
        metadata: Box<RawValue>,
        etag: Option<String>,
    },
    /// A background operation was started.
    Async(Box<Operation>),
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    error_code: u16,
    #[serde(default)]
    error: String,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

#[derive(Clone)]
enum Transport {
    Unix,
    Https {
        tls: Arc<rustls::ClientConfig>,
        pinned: String,
        pinned_path: String,
        refused: Arc<Mutex<Option<String>>>,
        presented: Arc<Mutex<Option<Vec<u8>>>>,
    },
}

/// A connection to one remote, in one project. Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub struct Client {
    remote: String,
    project: String,
    base: String,
    endpoint: Endpoint,
    http: reqwest::blocking::Client,
    transport: Transport,
    server: Arc<Mutex<Option<Arc<ServerInfo>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.remote)
            .field("project", &self.project)
            .field("base", &self.base)
            .finish()
    }
}

/// How long one request may wait for its answer: `INCUS_STANDBY_TIMEOUT` seconds (for slow
/// links, or tests), else 120 s. Operations are waited for separately, without this limit.
pub fn request_timeout() -> Duration {
    std::env::var("INCUS_STANDBY_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(120), Duration::from_secs)
}

/// Requests sent by this process (`INCUS_STANDBY_STATS=1` prints it when a tool ends; `2`
/// also prints each request as it is sent).
pub static API_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Client {
    /// Connects (lazily: nothing is sent yet) to a remote of the CLI configuration, in the
    /// remote's configured project.
    pub fn connect(remotes: &Remotes, remote: &str) -> Result<Self> {
        let endpoint = remotes.endpoint(remote)?;
        // reqwest builds its TLS stack even for the unix socket; it needs a process-wide
        // provider (an error means one is already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(request_timeout())
            .pool_idle_timeout(Duration::from_secs(30));
        let (http, base, transport) = match &endpoint {
            // No connection reuse on the socket: with many parallel requests, a request sent
            // on a reused connection sometimes got no answer from Incus 6.0 (a 60 s stall).
            // A new unix connection costs microseconds.
            Endpoint::Unix(path) => (
                builder
                    .unix_socket(path.clone())
                    .pool_max_idle_per_host(0)
                    .build(),
                "http://unix.socket".to_string(),
                Transport::Unix,
            ),
            Endpoint::Https {
                url,
                client_cert,
                client_key,
                server_cert,
            } => {
                let server_cert = server_cert.clone().ok_or_else(|| {
                    Error::Config(format!(
                        "no pinned certificate for remote \"{remote}\" ({} is missing); add it again with `incus-trust add {remote} - --force < token-file`",
                        remotes.server_cert_target(remote).display()
                    ))
                })?;
                let pinned = tls::pinned_tls(remote, client_cert, client_key, &server_cert)?;
                // HTTP/2 when the server offers it (Incus does): every request of a run
                // shares one connection. Websockets (relay) use the config without ALPN.
                let mut http_tls = (*pinned.config).clone();
                http_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let http = builder.tls_backend_preconfigured(http_tls).build();
                (
                    http,
                    url.clone(),
                    Transport::Https {
                        tls: pinned.config,
                        pinned: pinned.pinned,
                        pinned_path: server_cert.display().to_string(),
                        refused: pinned.refused,
                        presented: pinned.presented,
                    },
                )
            }
        };
        let http = http.map_err(|e| Error::Config(format!("HTTP client setup: {e}")))?;
        Ok(Client {
            remote: remote.to_string(),
            project: remotes.project(remote),
            base,
            endpoint,
            http,
            transport,
            server: Arc::new(Mutex::new(None)),
        })
    }

    /// Connects (lazily) over HTTPS to `url`, presenting `client_cert`/`client_key` and
    /// accepting only the server certificate whose SHA-256 fingerprint is `fingerprint`: for
    /// redeeming a trust token, before any `servercerts/` file exists. The project is
    /// `default`. A server with another certificate is refused during the handshake, before
    /// any request is sent ([`Error::CertificateMismatch`]).
    pub fn connect_pinned(
        remote: &str,
        url: &str,
        client_cert: &std::path::Path,
        client_key: &std::path::Path,
        fingerprint: &str,
    ) -> Result<Self> {
        let pinned = tls::pinned_tls_by_fingerprint(client_cert, client_key, fingerprint)?;
        Self::connect_with_pin(remote, url, client_cert, client_key, pinned)
    }

    /// [`Client::connect_pinned`] with the client certificate and key in memory: a new
    /// identity is used to redeem a token before it is written to disk.
    pub fn connect_pinned_pem(
        remote: &str,
        url: &str,
        cert_pem: &str,
        key_pem: &str,
        fingerprint: &str,
    ) -> Result<Self> {
        let pinned = tls::pinned_tls_from_pem(
            cert_pem.as_bytes(),
            "the new client certificate",
            key_pem.as_bytes(),
            "the new client key",
            fingerprint,
        )?;
        let none = std::path::Path::new("");
        Self::connect_with_pin(remote, url, none, none, pinned)
    }

    fn connect_with_pin(
        remote: &str,
        url: &str,
        client_cert: &std::path::Path,
        client_key: &std::path::Path,
        pinned: tls::PinnedTls,
    ) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = url.trim_end_matches('/').to_string();
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .tls_backend_preconfigured((*pinned.config).clone())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client setup: {e}")))?;
        Ok(Client {
            remote: remote.to_string(),
            project: "default".to_string(),
            base: url.clone(),
            endpoint: Endpoint::Https {
                url,
                client_cert: client_cert.to_path_buf(),
                client_key: client_key.to_path_buf(),
                server_cert: None,
            },
            http,
            transport: Transport::Https {
                tls: pinned.config,
                pinned_path: format!("the fingerprint given for remote \"{remote}\""),
                pinned: pinned.pinned,
                refused: pinned.refused,
                presented: pinned.presented,
            },
            server: Arc::new(Mutex::new(None)),
        })
    }

    /// The fingerprint the server certificate is pinned to, when this is HTTPS.
    pub fn pinned_fingerprint(&self) -> Option<&str> {
        match &self.transport {
            Transport::Https { pinned, .. } => Some(pinned),
            Transport::Unix => None,
        }
    }

    /// The DER of the certificate the server presented in the last handshake (HTTPS only).
    pub fn presented_certificate(&self) -> Option<Vec<u8>> {
        match &self.transport {
            Transport::Https { presented, .. } => presented.lock().ok()?.clone(),
            Transport::Unix => None,
        }
    }

    /// The remote's name, as in `config.yml`.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The project requests go to by default.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The same connection, working in another project.
    pub fn in_project(&self, project: &str) -> Client {
        let mut client = self.clone();
        client.project = project.to_string();
        client
    }

    /// The same remote reached at another address (`https://HOST:PORT`), with the same client
    /// certificate and pinned server certificate: another member of a cluster, which shares
    /// the cluster's certificate. A unix socket client is returned as it is.
    pub fn at_url(&self, url: &str) -> Client {
        let mut client = self.clone();
        if let Endpoint::Https {
            url: ref mut at, ..
        } = client.endpoint
        {
            *at = url.to_string();
            client.base = url.to_string();
            client.server = Arc::new(Mutex::new(None));
        }
        client
    }

    /// The HTTPS URL of the remote, when it is one.
    pub fn url(&self) -> Option<&str> {
        match self.endpoint {
            Endpoint::Https { ref url, .. } => Some(url),
            Endpoint::Unix(_) => None,
        }
    }

    /// The unix socket path, when it is one.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        match self.endpoint {
            Endpoint::Unix(ref p) => Some(p),
            Endpoint::Https { .. } => None,
        }
    }

    /// The TLS configuration (for websockets), when this is HTTPS.
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        match &self.transport {
            Transport::Https { tls, .. } => Some(tls.clone()),
            Transport::Unix => None,
        }
    }

    /// `GET /1.0`, cached for the life of the client.
    pub fn server(&self) -> Result<Arc<ServerInfo>> {
        // Held while reading: threads sharing this client send one request, not one each.
        let mut cached = self.server.lock().ok();
        if let Some(info) = cached.as_ref().and_then(|c| c.as_ref()) {
            return Ok(info.clone());
        }
        let info: Arc<ServerInfo> = Arc::new(self.get("")?);
        if let Some(cached) = cached.as_mut() {
            **cached = Some(info.clone());
        }
        Ok(info)
    }

    /// The server certificate to give a peer daemon in a migration: the pinned PEM for HTTPS
    /// remotes, the daemon's own for the local socket.
    pub fn certificate_pem(&self) -> Result<String> {
        if let Endpoint::Https {
            server_cert: Some(path),
            ..
        } = &self.endpoint
        {
            return std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())));
        }
        Ok(self.server()?.environment.certificate.clone())
    }

    /// The URLs a peer daemon may dial: this connection's own HTTPS URL, then the server's
    /// `environment.addresses` (as the Go client's `GetConnectionInfo`).
    pub fn network_urls(&self) -> Result<Vec<String>> {
        let mut urls: Vec<String> = self.url().map(str::to_string).into_iter().collect();
        for addr in &self.server()?.environment.addresses {
            if addr.starts_with(':') {
                continue;
            }
            let url = format!("https://{addr}");
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        Ok(urls)
    }

    /// The full URL of a request, with the project rule of the CLI: `?project=` only when it is
    /// not `default`.
    pub fn url_of(&self, request: &Request) -> String {
        let mut url = format!("{}/1.0{}", self.base, request.path);
        let mut query: Vec<(String, String)> = request.query.clone();
        let project = request.project.as_deref().unwrap_or(&self.project);
        if request.all_projects {
            query.push(("all-projects".into(), "true".into()));
        } else if project != "default" {
            query.push(("project".into(), project.to_string()));
        }
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&escape(k));
            url.push('=');
            url.push_str(&escape(v));
        }
        url
    }

    /// Sends a request and returns Incus's reply; error envelopes become [`Error::Api`].
    pub fn send(&self, request: &Request) -> Result<Reply> {
        API_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = self.url_of(request);
        if std::env::var_os("INCUS_STANDBY_STATS").is_some_and(|v| v == "2") {
            eprintln!("{}: {} {url}", self.remote, request.method);
        }
        let mut builder = self.http.request(request.method.clone(), &url);
        if let Some(body) = &request.body {
            builder = builder
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        if let Some(etag) = &request.if_match {
            builder = builder.header("If-Match", etag);
        }
        let response = builder.send().map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_string());
        let text = response.text().map_err(|e| self.transport_error(e))?;
        let envelope: Envelope = serde_json::from_str(&text).map_err(|e| {
            Error::protocol(
                &self.remote,
                format!(
                    "{} {}: HTTP {status}, body is not an Incus reply ({e})",
                    request.method, request.path
                ),
            )
        })?;
        let metadata = envelope
            .metadata
            .unwrap_or_else(|| RawValue::NULL.to_owned());
        match envelope.kind.as_str() {
            "sync" => Ok(Reply::Sync { metadata, etag }),
            "async" => {
                let op: Operation = serde_json::from_str(metadata.get()).map_err(|e| {
                    Error::protocol(&self.remote, format!("operation metadata: {e}"))
                })?;
                Ok(Reply::Async(Box::new(op)))
            }
            _ => Err(Error::Api {
                remote: self.remote.clone(),
                status: if envelope.error_code != 0 {
                    envelope.error_code
                } else {
                    status
                },
                message: if envelope.error.is_empty() {
                    format!("HTTP {status}")
                } else {
                    envelope.error
                },
            }),
        }
    }

    /// GET and decode the metadata.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.get_with_etag(path)?.0)
    }

    /// GET and decode the metadata, with the ETag for a later `If-Match`.
    pub fn get_with_etag<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Option<String>)> {
        self.fetch(&Request::get(path))
    }

    /// Sends a request that must answer synchronously and decodes its metadata.
    pub fn fetch<T: DeserializeOwned>(&self, request: &Request) -> Result<(T, Option<String>)> {
        match self.send(request)? {
            Reply::Sync { metadata, etag } => {
                let value = serde_json::from_str(metadata.get())
                    .map_err(|e| Error::protocol(&self.remote, format!("{}: {e}", request.path)))?;
                Ok((value, etag))
            }
            Reply::Async(op) => Err(Error::protocol(
                &self.remote,
                format!("{}: unexpected operation {}", request.path, op.id),
            )),
        }
    }

    /// Sends a request and, if Incus starts an operation, waits for it to finish.
    pub fn execute(&self, request: &Request, wait: &WaitOptions) -> Result<Option<Operation>> {
        match self.send(request)? {
            Reply::Sync { .. } => Ok(None),
            Reply::Async(op) => self.wait(&op, wait).map(Some),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> Error {
        if let Transport::Https {
            pinned,
            pinned_path,
            refused,
            ..
        } = &self.transport
            && let Ok(mut refused) = refused.lock()
            && let Some(presented) = refused.take()
        {
            return Error::CertificateMismatch {
                remote: self.remote.clone(),
                presented,
                pinned: pinned.clone(),
                pinned_path: pinned_path.clone(),
            };
        }
        let addr = match &self.endpoint {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Https { url, .. } => url.clone(),
        };
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            reason = inner.to_string();
            source = inner.source();
        }
        if e.is_timeout() {
            reason = format!("no answer in time ({reason})");
        } else if reason.contains("close_notify") || reason.contains("connection reset") {
            reason = "the connection was cut (did the daemon stop?)".into();
        } else if reason.contains("ProtocolVersion") || reason.contains("peer is incompatible") {
            reason = format!(
                "the server does not speak TLS 1.3, which every Incus server does ({reason}): check that the address is the Incus server's core.https_address and that no proxy stands in the way"
            );
        }
        Error::Unreachable {
            remote: self.remote.clone(),
            addr,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(escape("web-1"), "web-1");
        assert_eq!(escape("a b/c%"), "a%20b%2Fc%25");
    }
}
