//! `GET /1.0`: what the server is and where it listens.

use serde::Deserialize;

use super::nullable;

/// The parts of `GET /1.0` the tools use.
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
    /// True when the server has an API extension.
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions.iter().any(|e| e == name)
    }

    /// True when the server trusts our certificate.
    pub fn trusted(&self) -> bool {
        self.auth == "trusted"
    }
}
