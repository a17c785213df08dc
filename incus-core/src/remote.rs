//! Remotes exactly as the `incus` CLI keeps them.
//!
//! Layers, as the CLI resolves them: `$INCUS_CONF` (default `~/.config/incus`) `config.yml`
//! over the system-wide `$INCUS_GLOBAL_CONF` (default `/etc/incus`); `local` always exists and
//! is the unix socket found through `INCUS_SOCKET`, `INCUS_DIR`, `/run/incus`,
//! `/var/lib/incus`. Client identity: `clientcerts/NAME.{crt,key}` or `client.{crt,key}`; the
//! pinned server certificate: `servercerts/NAME.crt`.

use std::collections::BTreeMap;
use std::env;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One remote as written in `config.yml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RemoteConfig {
    pub addr: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default, rename = "default-remote")]
    default_remote: Option<String>,
    #[serde(default)]
    remotes: BTreeMap<String, RemoteConfig>,
}

/// Where a remote is and how to prove who we are to it.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The local daemon's unix socket.
    Unix(PathBuf),
    /// A daemon over HTTPS with the client certificate and the pinned server certificate.
    Https {
        url: String,
        client_cert: PathBuf,
        client_key: PathBuf,
        /// `servercerts/NAME.crt`, if the CLI pinned one.
        server_cert: Option<PathBuf>,
    },
}

/// The CLI configuration: every remote the user can name.
#[derive(Debug, Clone)]
pub struct Remotes {
    conf_dir: PathBuf,
    global_dir: PathBuf,
    default_remote: String,
    remotes: BTreeMap<String, RemoteConfig>,
}

impl Remotes {
    /// Loads the configuration from the environment, as the `incus` CLI does.
    pub fn load() -> Result<Self> {
        let conf_dir = match env::var_os("INCUS_CONF") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => match env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".config/incus"),
                None => PathBuf::from(".config/incus"),
            },
        };
        let global_dir = match env::var_os("INCUS_GLOBAL_CONF") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from("/etc/incus"),
        };
        Self::load_from(&conf_dir, &global_dir)
    }

    /// Loads from explicit directories (user over global).
    pub fn load_from(conf_dir: &Path, global_dir: &Path) -> Result<Self> {
        let global = read_config(&global_dir.join("config.yml"))?;
        let user = read_config(&conf_dir.join("config.yml"))?;
        let mut remotes = global.remotes;
        remotes.extend(user.remotes);
        remotes.entry("local".into()).or_insert(RemoteConfig {
            addr: "unix://".into(),
            protocol: Some("incus".into()),
            public: false,
            project: None,
        });
        let default_remote = user
            .default_remote
            .or(global.default_remote)
            .unwrap_or_else(|| "local".into());
        Ok(Remotes {
            conf_dir: conf_dir.to_path_buf(),
            global_dir: global_dir.to_path_buf(),
            default_remote,
            remotes,
        })
    }

    /// The remote used when an address names none.
    pub fn default_remote(&self) -> &str {
        &self.default_remote
    }

    /// The configuration directory (`$INCUS_CONF`).
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// Every remote name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.remotes.keys().map(String::as_str)
    }

    /// One remote's configuration.
    pub fn get(&self, name: &str) -> Result<&RemoteConfig> {
        self.remotes.get(name).ok_or_else(|| Error::UnknownRemote {
            remote: name.to_string(),
            config: self.conf_dir.join("config.yml").display().to_string(),
        })
    }

    /// The project a remote works in by default (`project:` in config.yml, else `default`).
    pub fn project(&self, name: &str) -> String {
        self.remotes
            .get(name)
            .and_then(|r| r.project.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into())
    }

    /// How to reach a remote.
    pub fn endpoint(&self, name: &str) -> Result<Endpoint> {
        let remote = self.get(name)?;
        if let Some(path) = remote.addr.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(if path.is_empty() {
                local_socket()
            } else {
                PathBuf::from(path)
            }));
        }
        if remote.protocol.as_deref().is_some_and(|p| p != "incus") {
            return Err(Error::Config(format!(
                "remote \"{name}\" speaks {}, not the Incus API; name an Incus server",
                remote.protocol.as_deref().unwrap_or("?")
            )));
        }
        if !remote.addr.starts_with("https://") {
            return Err(Error::Config(format!(
                "remote \"{name}\" has address \"{}\"; expected https://HOST:PORT or unix://",
                remote.addr
            )));
        }
        let (client_cert, client_key) = self.client_identity(name)?;
        Ok(Endpoint::Https {
            url: remote.addr.trim_end_matches('/').to_string(),
            client_cert,
            client_key,
            server_cert: self.server_cert_path(name),
        })
    }

    /// `servercerts/NAME.crt` in the user's then the global configuration, if present.
    pub fn server_cert_path(&self, name: &str) -> Option<PathBuf> {
        [&self.conf_dir, &self.global_dir]
            .into_iter()
            .map(|dir| dir.join("servercerts").join(format!("{name}.crt")))
            .find(|p| p.is_file())
    }

    /// Where `servercerts/NAME.crt` is written for a new remote.
    pub fn server_cert_target(&self, name: &str) -> PathBuf {
        self.conf_dir
            .join("servercerts")
            .join(format!("{name}.crt"))
    }

    /// The client certificate and key for a remote.
    pub fn client_identity(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let per_remote = self.conf_dir.join("clientcerts");
        let specific = (
            per_remote.join(format!("{name}.crt")),
            per_remote.join(format!("{name}.key")),
        );
        if specific.0.is_file() && specific.1.is_file() {
            return Ok(specific);
        }
        let general = (
            self.conf_dir.join("client.crt"),
            self.conf_dir.join("client.key"),
        );
        if general.0.is_file() && general.1.is_file() {
            return Ok(general);
        }
        Err(Error::Config(format!(
            "no client certificate in {} (client.crt/client.key) for remote \"{name}\"; make a token on the server (`incus-trust token {name}:CLIENT` there) and add it here with `incus-trust add {name} - < token-file`",
            self.conf_dir.display()
        )))
    }
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{} is not a valid incus CLI configuration: {e}",
            path.display()
        ))
    })
}

/// The local daemon's socket, in the CLI's order of preference.
pub fn local_socket() -> PathBuf {
    if let Some(socket) = env::var_os("INCUS_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(socket);
    }
    if let Some(dir) = env::var_os("INCUS_DIR").filter(|s| !s.is_empty()) {
        return PathBuf::from(dir).join("unix.socket");
    }
    let run = PathBuf::from("/run/incus/unix.socket");
    if run.exists() {
        return run;
    }
    PathBuf::from("/var/lib/incus/unix.socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_remotes_override_global_ones_and_local_always_exists() -> Result<()> {
        let user = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let global = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(
            global.path().join("config.yml"),
            "remotes:\n  standby:\n    addr: https://10.0.0.1:8443\n  other:\n    addr: https://o:8443\n",
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(
            user.path().join("config.yml"),
            "default-remote: standby\nremotes:\n  standby:\n    addr: https://127.0.0.1:8444\n    project: web\n    protocol: incus\n    public: false\n",
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let remotes = Remotes::load_from(user.path(), global.path())?;
        assert_eq!(remotes.default_remote(), "standby");
        assert_eq!(remotes.get("standby")?.addr, "https://127.0.0.1:8444");
        assert_eq!(remotes.project("standby"), "web");
        assert_eq!(remotes.project("other"), "default");
        assert!(remotes.get("local").is_ok());
        assert!(matches!(
            remotes.get("nope"),
            Err(Error::UnknownRemote { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_missing_configuration_means_only_local() -> Result<()> {
        let remotes = Remotes::load_from(Path::new("/nonexistent-a"), Path::new("/nonexistent-b"))?;
        assert_eq!(remotes.names().collect::<Vec<_>>(), ["local"]);
        assert_eq!(remotes.default_remote(), "local");
        Ok(())
    }
}
