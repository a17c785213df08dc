//! The subcommands of incus-trust. The server side (tokens, certificates) is the library's
//! `api::certificates`; the files are written by `cliconfig`, atomically and only once the
//! server has answered as it should.

use std::io::{IsTerminal, Read};

use anyhow::{Result, anyhow};
use incus_core::address::Target;
use incus_core::api::certificates::{self, Redeemed, TrustToken};
use incus_core::cli::usage;
use incus_core::cliconfig::{self, NewRemote};
use incus_core::client::{Client, tls};
use incus_core::record::{
    CertificateRecord, CheckRecord, Format, Output, PendingTokenRecord, Record, TokenRecord,
    TrustChangeRecord, TrustedRecord,
};
use incus_core::remote::Remotes;

/// The API extensions incus-push and incus-failover rely on.
pub const NEEDED_EXTENSIONS: [&str; 6] = [
    "container_push",
    "container_push_target",
    "container_incremental_copy",
    "operation_wait",
    "snapshot_expiry_creation",
    "certificate_token",
];

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-trust token standby:backup-host > token\n  incus-trust token standby:web-only --projects web"
)]
pub struct TokenArgs {
    /// [REMOTE:]NAME: the server (default: the default remote) and the client's name there
    pub target: String,
    /// Restrict the certificate to these projects (comma-separated); default: unrestricted
    #[arg(long, value_name = "PROJECTS", value_delimiter = ',')]
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-trust add standby - < token\n  incus-trust add standby env:INCUS_TOKEN\n  incus-trust add standby https://10.0.0.2:8443 --fingerprint 6d1298e2..."
)]
pub struct AddArgs {
    /// The name of the new remote
    pub name: String,
    /// Where the token is: `-` (stdin), `env:VARIABLE`, or a file; or, with --fingerprint,
    /// the server's URL (https://HOST:PORT)
    pub source: String,
    /// The server certificate's SHA-256 fingerprint, for a server whose trust was set up
    /// another way (the URL form)
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// The project the remote works in (`project:` in config.yml)
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Replace an existing remote of that name
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  incus-trust list standby:")]
pub struct ListArgs {
    /// REMOTE: (default: the default remote)
    pub remote: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  incus-trust revoke standby:backup-host")]
pub struct RevokeArgs {
    /// [REMOTE:]NAME: the client name the tokens were made for
    pub target: String,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  incus-trust remove standby:old-host")]
pub struct RemoveArgs {
    /// [REMOTE:]NAME or [REMOTE:]FINGERPRINT (a unique prefix will do)
    pub target: String,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  incus-trust check\n  incus-trust check primary standby --standby standby"
)]
pub struct CheckArgs {
    /// Remotes to check (default: every HTTPS remote of the configuration)
    pub remotes: Vec<String>,
    /// The standby of a pair: also say whether the direction failback needs is set up
    #[arg(long, value_name = "REMOTE")]
    pub standby: Option<String>,
}

/// `REMOTE:NAME` or `NAME` (default remote).
fn remote_and_name(text: &str, remotes: &Remotes) -> Result<(String, String)> {
    match Target::parse(text).map_err(usage)? {
        Target::Instance(address) => Ok((
            address
                .remote
                .unwrap_or_else(|| remotes.default_remote().to_string()),
            address.instance,
        )),
        Target::Remote(_) => Err(usage(format!(
            "\"{text}\" names no client: give [REMOTE:]NAME"
        ))),
    }
}

fn load_remotes() -> Result<Remotes> {
    Remotes::load().map_err(|e| usage(e.to_string()))
}

fn connect(remotes: &Remotes, remote: &str) -> Result<Client> {
    remotes.get(remote).map_err(|e| usage(e.to_string()))?;
    Ok(Client::connect(remotes, remote)?)
}

/// `incus-trust token`.
pub fn token(args: &TokenArgs, output: &Output) -> Result<()> {
    let remotes = load_remotes()?;
    let (remote, name) = remote_and_name(&args.target, &remotes)?;
    let client = connect(&remotes, &remote)?;
    let pending = certificates::pending_tokens(&client)
        .map_err(|e| anyhow!("listing the pending tokens on {remote}: {e}"))?;
    let now = chrono::Utc::now();
    let mut wanted = args.projects.clone();
    wanted.sort();
    let mut found = None;
    for p in pending.into_iter().filter(|p| p.client_name == name) {
        let expired = p.expires_at.is_some_and(|t| t <= now);
        let mut projects = p.projects.clone();
        projects.sort();
        if expired {
            // Useless, and it would be handed out again: revoke it.
            let _ = certificates::revoke_token(&client, &p.operation_id);
        } else if projects == wanted && found.is_none() {
            found = p.token;
        }
    }
    let (token, reused) = match found {
        Some(token) => (token, true),
        None => (
            certificates::create_token_for(&client, &name, &args.projects)
                .map_err(|e| anyhow!("making a token on {remote}: {e}"))?
                .0,
            false,
        ),
    };
    if token.expires_at.is_none() {
        output.note(&format!(
            "this token never expires by itself; to give every token an end, run `incus config set {remote}: core.remote_token_expiry 1H` (Incus 6.0 has no expiry per token)"
        ));
    }
    let encoded = token.encode();
    if output.format() == Format::Text && std::io::stdout().is_terminal() {
        println!("{encoded}");
        return Ok(());
    }
    output.emit(&Record::Token(TokenRecord {
        remote,
        name,
        token: encoded,
        fingerprint: token.fingerprint.clone(),
        addresses: token.addresses.clone(),
        expires_at: token.expires_at,
        projects: args.projects.clone(),
        reused,
    }));
    Ok(())
}

/// Reads the token from where `source` says, never from the command line itself.
fn read_token(source: &str) -> Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("reading the token from stdin: {e}"))?;
        return Ok(text);
    }
    if let Some(var) = source.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| {
            usage(format!(
                "the environment variable {var} is not set (or not UTF-8); export the token in it"
            ))
        });
    }
    if source.starts_with("https://") {
        return Err(usage(format!(
            "\"{source}\" is a URL: give the server certificate's fingerprint with --fingerprint, or a token source (-, env:VAR or a file)"
        )));
    }
    std::fs::read_to_string(source).map_err(|e| {
        usage(format!(
            "cannot read the token file {source}: {e}; the token comes from -, env:VARIABLE or a file (never the command line)"
        ))
    })
}

/// `incus-trust add`.
pub fn add(args: &AddArgs, output: &Output) -> Result<()> {
    let name = args.name.as_str();
    if name.is_empty()
        || name.contains(':')
        || name.contains('/')
        || name.starts_with('.')
        || name == "local"
    {
        return Err(usage(format!(
            "\"{name}\" cannot name a remote: no ':', '/', leading '.', and not \"local\""
        )));
    }
    let remotes = load_remotes()?;
    let conf_dir = remotes.conf_dir().to_path_buf();
    let (url_form, token) = match &args.fingerprint {
        Some(fingerprint) => {
            if !args.source.starts_with("https://") {
                return Err(usage(format!(
                    "with --fingerprint, give the server's URL (https://HOST:PORT), not \"{}\"",
                    args.source
                )));
            }
            (Some(fingerprint.to_ascii_lowercase()), None)
        }
        None => {
            let text = read_token(&args.source)?;
            let token = TrustToken::decode(&text).map_err(|e| usage(e.to_string()))?;
            (None, Some(token))
        }
    };
    if !args.force
        && (remotes.get(name).is_ok()
            || cliconfig::has_remote(&conf_dir, name).map_err(|e| usage(e.to_string()))?)
    {
        return Err(usage(format!(
            "remote \"{name}\" exists already in {}; choose another name, or replace it with --force",
            conf_dir.join("config.yml").display()
        )));
    }
    cliconfig::check_writable(&conf_dir).map_err(|e| usage(e.to_string()))?;
    if let Some(token) = &token
        && let Some(expiry) = token.expires_at
        && token.is_expired(chrono::Utc::now())
    {
        // Incus burns a token redeemed after its expiry: never send it.
        return Err(usage(format!(
            "the token for {} expired at {}; nothing was sent: make a new one with `incus-trust token REMOTE:{}`",
            token.client_name,
            expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            token.client_name
        )));
    }
    let identity = cliconfig::identity_or_new(&conf_dir)
        .map_err(|e| anyhow!("the client certificate: {e}"))?;
    let (fingerprint, urls) = match (&token, &url_form) {
        (Some(token), _) => (token.fingerprint.to_ascii_lowercase(), token.urls()),
        (None, Some(fingerprint)) => (
            fingerprint.clone(),
            vec![args.source.trim_end_matches('/').to_string()],
        ),
        (None, None) => return Err(anyhow!("neither a token nor a fingerprint")),
    };
    let client = reach(name, &urls, &identity, &fingerprint)?;
    let how = match &token {
        Some(token) => match certificates::redeem(&client, token)? {
            Redeemed::Trusted => "redeemed",
            Redeemed::AlreadyTrusted => {
                output.note(&format!(
                    "the server trusted this client certificate already; the token was not used (revoke it there with `incus-trust revoke REMOTE:{}`)",
                    token.client_name
                ));
                "already-trusted"
            }
        },
        None => {
            let info = client.server()?;
            if !info.trusted() {
                return Err(anyhow!(
                    "{} answers with the expected certificate but does not trust this client certificate ({}); nothing was written: trust it there (`incus config trust add-certificate`), or use a token",
                    client.url().unwrap_or("?"),
                    tls::pem_fingerprint(identity.cert_pem.as_bytes()).unwrap_or_default()
                ));
            }
            "pinned"
        }
    };
    let der = client
        .presented_certificate()
        .ok_or_else(|| anyhow!("the server presented no certificate"))?;
    if tls::fingerprint(&der) != fingerprint {
        return Err(anyhow!(
            "the server's certificate changed during the setup; nothing was written"
        ));
    }
    let addr = client.url().unwrap_or_default().to_string();
    cliconfig::write_identity(&conf_dir, &identity)?;
    cliconfig::add_remote(
        &conf_dir,
        &NewRemote {
            name,
            addr: &addr,
            project: args.project.as_deref(),
            server_pem: &tls::der_to_pem(&der),
            replace: args.force,
        },
    )?;
    output.emit(&Record::Trusted(TrustedRecord {
        remote: name.to_string(),
        addr,
        fingerprint,
        client_fingerprint: tls::pem_fingerprint(identity.cert_pem.as_bytes()).unwrap_or_default(),
        how: how.to_string(),
        new_client_certificate: identity.created,
    }));
    Ok(())
}

/// Connects to the first address that answers with the expected certificate. An address
/// presenting another certificate stops everything: the token is for another server, or
/// something is in the way.
fn reach(
    name: &str,
    urls: &[String],
    identity: &cliconfig::Identity,
    fingerprint: &str,
) -> Result<Client> {
    let mut unreachable = Vec::new();
    for url in urls {
        let client = Client::connect_pinned_pem(
            name,
            url,
            &identity.cert_pem,
            &identity.key_pem,
            fingerprint,
        )
        .map_err(|e| usage(e.to_string()))?;
        match client.server() {
            Ok(_) => return Ok(client),
            Err(incus_core::Error::CertificateMismatch { presented, .. }) => {
                return Err(anyhow!(
                    "{url} presented certificate {presented}, but the token (or --fingerprint) names {fingerprint}: a token for another server, or something in the way; nothing was sent and nothing written"
                ));
            }
            Err(incus_core::Error::Unreachable { reason, .. }) => {
                unreachable.push(format!("{url} ({reason})"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow!(
        "no address answers: {}; nothing was written: check that the server listens there (core.https_address) and that this host can reach it",
        unreachable.join(", ")
    ))
}

/// `incus-trust list`.
pub fn list(args: &ListArgs, output: &Output) -> Result<()> {
    let remotes = load_remotes()?;
    let remote = match &args.remote {
        Some(text) => text.trim_end_matches(':').to_string(),
        None => remotes.default_remote().to_string(),
    };
    let client = connect(&remotes, &remote)?;
    for cert in certificates::list(&client).map_err(|e| anyhow!("{remote}: {e}"))? {
        output.emit(&Record::Certificate(CertificateRecord {
            remote: remote.clone(),
            name: cert.name,
            fingerprint: cert.fingerprint,
            kind: cert.kind,
            restricted: cert.restricted,
            projects: cert.projects,
        }));
    }
    for pending in certificates::pending_tokens(&client).map_err(|e| anyhow!("{remote}: {e}"))? {
        output.emit(&Record::PendingToken(PendingTokenRecord {
            remote: remote.clone(),
            name: pending.client_name,
            expires_at: pending.expires_at,
            operation: pending.operation_id,
        }));
    }
    Ok(())
}

/// `incus-trust revoke`.
pub fn revoke(args: &RevokeArgs, output: &Output) -> Result<()> {
    let remotes = load_remotes()?;
    let (remote, name) = remote_and_name(&args.target, &remotes)?;
    let client = connect(&remotes, &remote)?;
    let pending: Vec<_> = certificates::pending_tokens(&client)?
        .into_iter()
        .filter(|p| p.client_name == name)
        .collect();
    if pending.is_empty() {
        return Err(anyhow!(
            "no pending token for \"{name}\" on {remote}; see `incus-trust list {remote}:`"
        ));
    }
    for token in pending {
        certificates::revoke_token(&client, &token.operation_id)?;
        output.emit(&Record::Revoked(TrustChangeRecord {
            remote: remote.clone(),
            name: name.clone(),
            id: token.operation_id,
        }));
    }
    Ok(())
}

/// `incus-trust remove`.
pub fn remove(args: &RemoveArgs, output: &Output) -> Result<()> {
    let remotes = load_remotes()?;
    let (remote, key) = remote_and_name(&args.target, &remotes)?;
    let client = connect(&remotes, &remote)?;
    let all = certificates::list(&client)?;
    let by_name: Vec<_> = all.iter().filter(|c| c.name == key).collect();
    let chosen: Vec<_> = if by_name.is_empty() {
        all.iter()
            .filter(|c| key.len() >= 8 && c.fingerprint.starts_with(&key.to_ascii_lowercase()))
            .collect()
    } else {
        by_name
    };
    match chosen.as_slice() {
        [] => Err(anyhow!(
            "no trusted certificate named or fingerprinted \"{key}\" on {remote}; see `incus-trust list {remote}:`"
        )),
        [one] => {
            certificates::remove(&client, &one.fingerprint)?;
            output.emit(&Record::Removed(TrustChangeRecord {
                remote,
                name: one.name.clone(),
                id: one.fingerprint.clone(),
            }));
            Ok(())
        }
        several => Err(anyhow!(
            "\"{key}\" matches {} certificates on {remote} ({}); name one by its fingerprint",
            several.len(),
            several
                .iter()
                .map(|c| c.fingerprint.get(..12).unwrap_or(&c.fingerprint))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `incus-trust check`.
pub fn check(args: &CheckArgs, output: &Output) -> Result<()> {
    let remotes = load_remotes()?;
    let mut names: Vec<String> = if args.remotes.is_empty() {
        remotes
            .names()
            .filter(|n| {
                remotes.get(n).is_ok_and(|r| {
                    r.addr.starts_with("https://")
                        && r.protocol.as_deref().is_none_or(|p| p == "incus")
                })
            })
            .map(str::to_string)
            .collect()
    } else {
        args.remotes
            .iter()
            .map(|r| r.trim_end_matches(':').to_string())
            .collect()
    };
    if let Some(standby) = &args.standby
        && !names.contains(standby)
    {
        names.push(standby.clone());
    }
    for name in &names {
        remotes.get(name).map_err(|e| usage(e.to_string()))?;
    }
    let records: Vec<CheckRecord> = names.iter().map(|n| check_one(&remotes, n)).collect();
    let standby_listens = args.standby.as_ref().map(|s| {
        records
            .iter()
            .find(|r| &r.remote == s)
            .is_some_and(|r| r.ok && r.listening == Some(true))
    });
    for mut record in records {
        if let (Some(standby), Some(listens)) = (&args.standby, standby_listens)
            && &record.remote != standby
        {
            let ready = listens && record.ok;
            record.failback_ready = Some(ready);
            if !ready {
                record.problems.push(format!(
                    "failback in pull mode needs {standby} to listen on the network and both to trust this client"
                ));
            }
        }
        if !record.problems.is_empty() {
            output.remote_error(&record.remote, None, &record.problems.join("; "));
        }
        output.emit(&Record::Check(record));
    }
    Ok(())
}

fn check_one(remotes: &Remotes, name: &str) -> CheckRecord {
    let addr = remotes
        .get(name)
        .map(|r| r.addr.clone())
        .unwrap_or_default();
    let mut record = CheckRecord {
        remote: name.to_string(),
        addr,
        reachable: false,
        certificate_ok: false,
        trusted: false,
        missing_extensions: Vec::new(),
        listening: None,
        failback_ready: None,
        ok: false,
        problems: Vec::new(),
    };
    let client = match Client::connect(remotes, name) {
        Ok(client) => client,
        Err(e) => {
            record.problems.push(e.to_string());
            return record;
        }
    };
    match client.server() {
        Ok(info) => {
            record.reachable = true;
            record.certificate_ok = true;
            record.trusted = info.trusted();
            if !record.trusted {
                record.problems.push(format!(
                    "{name} does not trust this client certificate: make a token there (`incus-trust token {name}:CLIENT`) and add it again (`incus-trust add {name} - --force`)"
                ));
            }
            record.missing_extensions = NEEDED_EXTENSIONS
                .iter()
                .filter(|e| !info.has_extension(e))
                .map(|e| e.to_string())
                .collect();
            if !record.missing_extensions.is_empty() {
                record.problems.push(format!(
                    "{name} lacks the API extensions {}: upgrade it to Incus 6.0 or newer",
                    record.missing_extensions.join(", ")
                ));
            }
            if record.trusted {
                let listening = !info.environment.addresses.is_empty();
                record.listening = Some(listening);
                if !listening && client.url().is_some() {
                    record.problems.push(format!(
                        "{name} does not listen on the network; pull mode needs it: `incus config set {name}: core.https_address :8443`"
                    ));
                }
            }
        }
        Err(incus_core::Error::CertificateMismatch {
            presented, pinned, ..
        }) => {
            record.reachable = true;
            record.problems.push(format!(
                "{name} presented certificate {presented}, but {pinned} is pinned: if the server was reinstalled on purpose, add it again (incus-trust add {name} … --force); otherwise something is in the way"
            ));
        }
        Err(e) => record.problems.push(e.to_string()),
    }
    record.ok = record.problems.is_empty();
    record
}
