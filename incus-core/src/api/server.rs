//! `GET /1.0`: what the server is, what it can do and where it listens.
//!
//! What a server can do is read from its `api_extensions` ([`ServerInfo::has_extension`]);
//! its version ([`ServerInfo::version`]) is for messages and for behaviour that no extension
//! names. Both are told to trusted clients only: Incus 7.0 answers an untrusted client with
//! `"api_extensions": null` and no `environment` (6.0 still lists the extensions).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::nullable;

/// The parts of `GET /1.0` the tools use. [`Client::server`](crate::Client::server) reads it
/// once per client.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ServerInfo {
    #[serde(default)]
    pub auth: String,
    #[serde(default, deserialize_with = "nullable")]
    pub api_extensions: Vec<String>,
    #[serde(default)]
    pub environment: Environment,
    #[serde(default, deserialize_with = "nullable")]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `environment` of `GET /1.0` (trusted clients only).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Environment {
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub certificate: String,
    #[serde(default)]
    pub certificate_fingerprint: String,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub server_clustered: bool,
}

impl ServerInfo {
    /// True when the server has an API extension (`api_extensions`, e.g.
    /// `"instance_snapshot_disk_only_restore"`). False when the server did not list its
    /// extensions (an untrusted client on Incus 7.0).
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions.iter().any(|e| e == name)
    }

    /// The server's version as it writes it (`environment.server_version`: `"6.0.4"`,
    /// `"7.0.2"`); empty when the server did not say (an untrusted client).
    pub fn server_version(&self) -> &str {
        &self.environment.server_version
    }

    /// The server's version, parsed; `None` when the server did not say or wrote something
    /// else than `MAJOR.MINOR[.PATCH]`.
    pub fn version(&self) -> Option<ServerVersion> {
        self.server_version().parse().ok()
    }

    /// True when the server trusts our certificate.
    pub fn trusted(&self) -> bool {
        self.auth == "trusted"
    }

    /// `Err` (the line to show) when the server is older than the tools support (Incus 6.0
    /// LTS). A server that does not say its version (an untrusted client) passes: the
    /// trust check names that problem.
    pub fn check_supported(&self, remote: &str) -> Result<(), String> {
        match self.version() {
            Some(version) if version < ServerVersion::new(6, 0, 0) => Err(format!(
                "{remote} runs Incus {version}; the tools need Incus 6.0 LTS or newer: upgrade it"
            )),
            _ => Ok(()),
        }
    }

    /// What the tools do differently on this server: every choice by version or extension is
    /// made here.
    pub fn features(&self) -> Features {
        Features {
            full_volume_listing: self.has_extension("storage_volume_full"),
            disk_only_restore: self.has_extension("instance_snapshot_disk_only_restore"),
            btrfs_refresh_receives_again: self
                .version()
                .is_some_and(|v| v >= ServerVersion::new(7, 0, 0)),
        }
    }
}

/// The behaviour that differs between the Incus releases the tools support (6.0 and 7.0
/// LTS), from an API extension where one names it, else from the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `storage_volume_full`: `GET /1.0/storage-pools/POOL/volumes?recursion=2` embeds each
    /// volume's snapshots. Incus 7.0 leaves snapshots out of `recursion=1` (6.0 lists them
    /// there as `NAME/SNAPSHOT` entries), so the run-wide listing uses `recursion=2` there.
    pub full_volume_listing: bool,
    /// `instance_snapshot_disk_only_restore`: a restore can leave the instance's
    /// configuration alone, so a replica never carries its snapshot's own settings
    /// (autostart, last power state) between the restore and the write after it.
    pub disk_only_restore: bool,
    /// Incus 7.0 (no API extension names it): an optimized btrfs refresh into this server can
    /// receive again a snapshot the target already has (Incus sends again every snapshot whose
    /// subvolume UUID differs). Incus 6.0.4 fails there (`rename … migration.N/S/S …/S: file
    /// exists`), which is what a failback's final sync on btrfs meets.
    pub btrfs_refresh_receives_again: bool,
}

/// An Incus version: `MAJOR.MINOR.PATCH` for an LTS release (`6.0.4`, `7.0.2`),
/// `MAJOR.MINOR` for a feature release (`6.19`, patch 0). Ordered as versions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// The version `MAJOR.MINOR.PATCH`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// True for an LTS release (`MAJOR.0.PATCH`).
    pub fn is_lts(&self) -> bool {
        self.minor == 0
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A server version that is not `MAJOR.MINOR[.PATCH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVersion(pub String);

impl fmt::Display for BadVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not an Incus version (MAJOR.MINOR[.PATCH]): {:?}",
            self.0
        )
    }
}

impl std::error::Error for BadVersion {}

impl FromStr for ServerVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_string());
        let mut parts = s.trim().split('.');
        let mut number = |required: bool| match parts.next() {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().map_err(|_| bad())
            }
            None if !required => Ok(0),
            _ => Err(bad()),
        };
        let version = ServerVersion::new(number(true)?, number(true)?, number(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /1.0` of the lab's Incus 7.0.2 to a trusted client, cut down.
    const TRUSTED_7_0: &str = r#"{
        "config": {"core.https_address": "127.0.0.1:58444"},
        "api_extensions": ["storage_zfs_remove_snapshots", "instance_snapshot_disk_only_restore"],
        "api_status": "stable", "api_version": "1.0", "auth": "trusted", "public": false,
        "environment": {"addresses": ["127.0.0.1:58444"], "certificate": "PEM",
            "certificate_fingerprint": "ab12", "server_name": "standby",
            "server_version": "7.0.2", "server_clustered": false}
    }"#;

    /// `GET /1.0` of Incus 7.0.2 to an untrusted client: no extensions, no environment.
    const UNTRUSTED_7_0: &str = r#"{"config":{},"api_extensions":null,"api_status":"stable",
        "api_version":"1.0","auth":"untrusted","public":false,"auth_methods":["tls"]}"#;

    #[test]
    fn a_trusted_answer_tells_extensions_and_version() {
        let info: ServerInfo = serde_json::from_str(TRUSTED_7_0).expect("parses");
        assert!(info.trusted());
        assert!(info.has_extension("instance_snapshot_disk_only_restore"));
        assert!(!info.has_extension("instance_snapshot_disk_only"));
        assert_eq!(info.server_version(), "7.0.2");
        assert_eq!(info.version(), Some(ServerVersion::new(7, 0, 2)));
        assert_eq!(info.environment.server_name, "standby");
    }

    #[test]
    fn an_untrusted_answer_has_no_extensions_and_no_version() {
        let info: ServerInfo = serde_json::from_str(UNTRUSTED_7_0).expect("parses");
        assert!(!info.trusted());
        assert!(info.api_extensions.is_empty());
        assert!(!info.has_extension("instance_snapshot_disk_only_restore"));
        assert_eq!(info.server_version(), "");
        assert_eq!(info.version(), None);
    }

    #[test]
    fn versions_parse_and_order_as_versions() {
        let v = |s: &str| s.parse::<ServerVersion>();
        assert_eq!(v("6.0.4"), Ok(ServerVersion::new(6, 0, 4)));
        assert_eq!(v("6.19"), Ok(ServerVersion::new(6, 19, 0)));
        assert_eq!(v(" 7.0.2\n"), Ok(ServerVersion::new(7, 0, 2)));
        for bad in [
            "", "7", "7.", "7.0.", "7.0.2.1", "7.0-rc1", "v7.0", "7.x", "-1.0",
        ] {
            assert_eq!(v(bad), Err(BadVersion(bad.to_string())), "{bad:?}");
        }
        assert!(ServerVersion::new(6, 0, 4) < ServerVersion::new(6, 19, 0));
        assert!(ServerVersion::new(6, 19, 0) < ServerVersion::new(7, 0, 0));
        assert!(ServerVersion::new(7, 0, 0) < ServerVersion::new(7, 0, 2));
        assert!(ServerVersion::new(7, 0, 2).is_lts());
        assert!(!ServerVersion::new(6, 19, 0).is_lts());
        assert_eq!(ServerVersion::new(7, 0, 2).to_string(), "7.0.2");
    }

    #[test]
    fn servers_older_than_6_0_are_refused_and_features_follow_extensions() {
        let mut info: ServerInfo = serde_json::from_str(TRUSTED_7_0).expect("parses");
        assert_eq!(info.check_supported("standby"), Ok(()));
        assert!(info.features().disk_only_restore);
        assert!(!info.features().full_volume_listing);
        assert!(info.features().btrfs_refresh_receives_again);
        info.environment.server_version = "6.0.4".into();
        assert!(!info.features().btrfs_refresh_receives_again);
        info.environment.server_version = "5.21.3".into();
        assert!(
            info.check_supported("standby")
                .is_err_and(|e| e.contains("Incus 5.21.3") && e.contains("upgrade"))
        );
        let untrusted: ServerInfo = serde_json::from_str(UNTRUSTED_7_0).expect("parses");
        assert_eq!(untrusted.check_supported("standby"), Ok(()));
        assert_eq!(untrusted.features(), Features::default());
    }
}
