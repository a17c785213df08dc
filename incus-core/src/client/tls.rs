//! TLS for remotes: TLS 1.3, the CLI's client certificate, and a strict pin on the server
//! certificate (SHA-256 of its DER, whatever the host name).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Lowercase hex SHA-256 of a certificate's DER bytes: Incus's certificate fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A certificate's DER as PEM (64-column base64), as the CLI writes `servercerts/`.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The first certificate of a PEM text, as DER.
pub fn pem_to_der(pem: &[u8]) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).next()?.ok()
}

/// Fingerprint of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &[u8]) -> Option<String> {
    pem_to_der(pem).map(|der| fingerprint(&der))
}

/// Accepts exactly one certificate; records what a refused server presented.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: String,
    provider: Arc<CryptoProvider>,
    /// Fingerprint of a certificate that was refused, for the error message.
    pub refused: Arc<Mutex<Option<String>>>,
    /// The DER of the last certificate the server presented (to write `servercerts/`).
    pub presented: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(end_entity.as_ref().to_vec());
        }
        let presented = fingerprint(end_entity);
        if presented == self.pinned {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut refused) = self.refused.lock() {
            *refused = Some(presented);
        }
        Err(rustls::Error::General(
            "server certificate differs from the pinned one".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS configuration for one remote, plus the slot where a refused fingerprint lands.
pub struct PinnedTls {
    pub config: Arc<rustls::ClientConfig>,
    pub pinned: String,
    pub refused: Arc<Mutex<Option<String>>>,
    pub presented: Arc<Mutex<Option<Vec<u8>>>>,
}

/// Builds the TLS configuration for a remote from the CLI's files.
pub fn pinned_tls(
    remote: &str,
    client_cert: &Path,
    client_key: &Path,
    server_cert: &Path,
) -> Result<PinnedTls> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
    };
    let server_pem = read(server_cert)?;
    let pinned = pem_fingerprint(&server_pem).ok_or_else(|| {
        Error::Config(format!(
            "{} holds no PEM certificate; re-add remote \"{remote}\"",
            server_cert.display()
        ))
    })?;
    pinned_tls_by_fingerprint(client_cert, client_key, &pinned)
}

/// Builds a TLS configuration that presents the client certificate and accepts only the
/// server certificate whose fingerprint is `pinned` (64 hex digits), without any
/// `servercerts/` file: what redeeming a trust token needs.
pub fn pinned_tls_by_fingerprint(
    client_cert: &Path,
    client_key: &Path,
    pinned: &str,
) -> Result<PinnedTls> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
    };
    pinned_tls_from_pem(
        &read(client_cert)?,
        &client_cert.display().to_string(),
        &read(client_key)?,
        &client_key.display().to_string(),
        pinned,
    )
}

/// [`pinned_tls_by_fingerprint`] with the client certificate and key in memory (a new
/// identity not yet written to disk); `cert_name` and `key_name` name them in errors.
pub fn pinned_tls_from_pem(
    cert_pem: &[u8],
    cert_name: &str,
    key_pem: &[u8],
    key_name: &str,
    pinned: &str,
) -> Result<PinnedTls> {
    let pinned = pinned.to_ascii_lowercase();
    if pinned.len() != 64 || !pinned.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Config(format!(
            "\"{pinned}\" is not a certificate fingerprint (64 hex digits of SHA-256)"
        )));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("{cert_name}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{cert_name} holds no certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        Error::Config(format!(
            "{key_name}: not a usable private key ({e}); encrypted keys are not supported"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let refused = Arc::new(Mutex::new(None));
    let presented = Arc::new(Mutex::new(None));
    let verifier = PinnedVerifier {
        pinned: pinned.clone(),
        provider: provider.clone(),
        refused: refused.clone(),
        presented: presented.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(certs, key)
        .map_err(|e| Error::Config(format!("{key_name}: {e}")))?;
    Ok(PinnedTls {
        config: Arc::new(config),
        pinned,
        refused,
        presented,
    })
}
