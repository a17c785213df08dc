//! Writing the `incus` CLI's configuration (`$INCUS_CONF`) the way the CLI reads it, but
//! safely: a new remote goes into `config.yml` atomically (temporary file, fsync, rename),
//! under a lock against a concurrent writer, keeping every key this code does not know
//! (`aliases`, the `defaults:` block of newer CLIs, …); `servercerts/NAME.crt` is written
//! the same way; the client certificate is made as the CLI makes it (ECDSA P-384,
//! self-signed, `clientAuth`, ten years), its key at mode 0600.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::error::{Error, Result};

/// A client certificate and key, read from the configuration or made anew (then not yet
/// written: see [`write_identity`]).
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    /// Made by [`identity_or_new`]: to write once it is trusted.
    pub created: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The configuration's `client.crt`/`client.key`, or a new pair when either is missing (the
/// CLI's rule).
pub fn identity_or_new(conf_dir: &Path) -> Result<Identity> {
    let (cert, key) = (conf_dir.join("client.crt"), conf_dir.join("client.key"));
    if cert.is_file() && key.is_file() {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
        };
        return Ok(Identity {
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            created: false,
        });
    }
    new_identity()
}

/// A new client certificate of the kind the CLI makes: ECDSA P-384 with SHA-384,
/// `O=Linux Containers, CN=USER@HOST`, `clientAuth`, valid for ten years.
pub fn new_identity() -> Result<Identity> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
    };
    let failed = |e: rcgen::Error| Error::Config(format!("making a client certificate: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(failed)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Linux Containers");
    name.push(
        DnType::CommonName,
        format!("{}@{}", user_name(), host_name()),
    );
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let (month, day) = (
        u8::try_from(today.month()).unwrap_or(1),
        u8::try_from(today.day().min(28)).unwrap_or(1),
    );
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = rcgen::date_time_ymd(today.year() + 10, month, day);
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        created: true,
    })
}

fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Writes a new identity (`client.crt` 0644, `client.key` 0600); an existing one is kept.
pub fn write_identity(conf_dir: &Path, identity: &Identity) -> Result<()> {
    if !identity.created {
        return Ok(());
    }
    ensure_dir(conf_dir, 0o750)?;
    write_atomic(
        &conf_dir.join("client.key"),
        identity.key_pem.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &conf_dir.join("client.crt"),
        identity.cert_pem.as_bytes(),
        0o644,
    )
}

/// Checks, before anything is sent anywhere, that the configuration directory can be
/// written (it is made, 0750, if missing).
pub fn check_writable(conf_dir: &Path) -> Result<()> {
    ensure_dir(conf_dir, 0o750)?;
    let probe = tempfile::Builder::new()
        .prefix(".incus-trust-probe")
        .tempfile_in(conf_dir)
        .map_err(|e| {
            Error::Config(format!(
                "cannot write in {} ({e}); fix its permissions or set INCUS_CONF",
                conf_dir.display()
            ))
        })?;
    drop(probe);
    Ok(())
}

/// A remote to add to `config.yml`.
#[derive(Debug, Clone)]
pub struct NewRemote<'a> {
    pub name: &'a str,
    pub addr: &'a str,
    pub project: Option<&'a str>,
    /// The server certificate, PEM, for `servercerts/NAME.crt`.
    pub server_pem: &'a str,
    /// Replace a remote of that name.
    pub replace: bool,
}

/// True when `config.yml` has a remote of that name.
pub fn has_remote(conf_dir: &Path, name: &str) -> Result<bool> {
    Ok(remotes_of(&read_yaml(&conf_dir.join("config.yml"))?)
        .is_some_and(|remotes| remotes.contains_key(Value::String(name.to_string()))))
}

/// Adds the remote: `servercerts/NAME.crt`, then `config.yml`, each atomically, under a lock
/// on the configuration. Refuses an existing remote unless `replace`.
pub fn add_remote(conf_dir: &Path, remote: &NewRemote) -> Result<()> {
    ensure_dir(conf_dir, 0o750)?;
    let _lock = lock(conf_dir)?;
    let path = conf_dir.join("config.yml");
    let mut root = read_yaml(&path)?;
    if !remote.replace
        && remotes_of(&root).is_some_and(|r| r.contains_key(Value::String(remote.name.into())))
    {
        return Err(Error::Config(format!(
            "remote \"{}\" exists already in {}; choose another name, or replace it with --force",
            remote.name,
            path.display()
        )));
    }
    let Value::Mapping(top) = &mut root else {
        return Err(Error::Config(format!(
            "{} is not a YAML mapping; fix it by hand",
            path.display()
        )));
    };
    if !top.contains_key(Value::String("default-remote".into())) {
        top.insert("default-remote".into(), "local".into());
    }
    let remotes = top
        .entry(Value::String("remotes".into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if remotes.is_null() {
        *remotes = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(remotes) = remotes else {
        return Err(Error::Config(format!(
            "remotes in {} is not a mapping; fix it by hand",
            path.display()
        )));
    };
    let mut entry = Mapping::new();
    entry.insert("addr".into(), remote.addr.into());
    entry.insert("auth_type".into(), "tls".into());
    if let Some(project) = remote.project {
        entry.insert("project".into(), project.into());
    }
    entry.insert("protocol".into(), "incus".into());
    entry.insert("public".into(), false.into());
    remotes.insert(Value::String(remote.name.into()), Value::Mapping(entry));
    let certs = conf_dir.join("servercerts");
    ensure_dir(&certs, 0o750)?;
    write_atomic(
        &certs.join(format!("{}.crt", remote.name)),
        remote.server_pem.as_bytes(),
        0o644,
    )?;
    let text = serde_yaml_ng::to_string(&root)
        .map_err(|e| Error::Config(format!("writing {}: {e}", path.display())))?;
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644);
    write_atomic(&path, text.as_bytes(), mode)
}

/// Removes a remote from `config.yml` and its `servercerts/NAME.crt` (under the lock).
pub fn remove_remote(conf_dir: &Path, name: &str) -> Result<bool> {
    let _lock = lock(conf_dir)?;
    let path = conf_dir.join("config.yml");
    let mut root = read_yaml(&path)?;
    let removed = match &mut root {
        Value::Mapping(top) => match top.get_mut(Value::String("remotes".into())) {
            Some(Value::Mapping(remotes)) => remotes.remove(Value::String(name.into())).is_some(),
            _ => false,
        },
        _ => false,
    };
    if removed {
        let text = serde_yaml_ng::to_string(&root)
            .map_err(|e| Error::Config(format!("writing {}: {e}", path.display())))?;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        write_atomic(&path, text.as_bytes(), mode)?;
        let _ = std::fs::remove_file(conf_dir.join("servercerts").join(format!("{name}.crt")));
    }
    Ok(removed)
}

fn remotes_of(root: &Value) -> Option<&Mapping> {
    match root.get("remotes") {
        Some(Value::Mapping(remotes)) => Some(remotes),
        _ => None,
    }
}

fn read_yaml(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Value::Mapping(Mapping::new())),
        Ok(text) => serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{} is not valid YAML ({e}); nothing was changed",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Mapping(Mapping::new())),
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))
}

/// Writes a file whole or not at all: a temporary file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let failed = |e: std::io::Error| Error::Config(format!("cannot write {}: {e}", path.display()));
    let mut file = tempfile::Builder::new()
        .prefix(".incus-trust-")
        .tempfile_in(dir)
        .map_err(failed)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// An exclusive lock on the configuration (`.incus-trust.lock` beside `config.yml`), held
/// until dropped.
fn lock(conf_dir: &Path) -> Result<File> {
    let path: PathBuf = conf_dir.join(".incus-trust.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::Config(format!("cannot open {}: {e}", path.display())))?;
    file.lock()
        .map_err(|e| Error::Config(format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_remote_keeps_every_other_key_and_remote() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(
            dir.path().join("config.yml"),
            "default-remote: local\nremotes:\n  old:\n    addr: https://10.0.0.9:8443\n    protocol: incus\n    public: false\n    keepalive: 30\naliases:\n  ll: list -c ns\ndefaults:\n  list_format: compact\n",
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let new = NewRemote {
            name: "standby",
            addr: "https://127.0.0.1:8444",
            project: None,
            server_pem: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            replace: false,
        };
        add_remote(dir.path(), &new)?;
        let text = std::fs::read_to_string(dir.path().join("config.yml"))
            .map_err(|e| Error::Config(e.to_string()))?;
        assert!(text.contains("keepalive: 30"), "{text}");
        assert!(text.contains("ll: list -c ns"), "{text}");
        assert!(text.contains("list_format: compact"), "{text}");
        assert!(text.contains("addr: https://127.0.0.1:8444"), "{text}");
        assert!(dir.path().join("servercerts/standby.crt").is_file());
        assert!(has_remote(dir.path(), "standby")?);
        // Not twice, unless asked.
        let again = add_remote(dir.path(), &new);
        assert!(matches!(again, Err(Error::Config(m)) if m.contains("exists already")));
        add_remote(
            dir.path(),
            &NewRemote {
                replace: true,
                ..new.clone()
            },
        )?;
        assert!(remove_remote(dir.path(), "standby")?);
        assert!(!has_remote(dir.path(), "standby")?);
        assert!(has_remote(dir.path(), "old")?);
        Ok(())
    }

    #[test]
    fn a_new_identity_is_p384_and_its_key_private() -> Result<()> {
        let identity = new_identity()?;
        assert!(identity.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.key_pem.contains("PRIVATE KEY"));
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        write_identity(dir.path(), &identity)?;
        let mode = std::fs::metadata(dir.path().join("client.key"))
            .map_err(|e| Error::Config(e.to_string()))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = identity_or_new(dir.path())?;
        assert!(!read.created);
        assert_eq!(read.cert_pem, identity.cert_pem);
        Ok(())
    }
}
