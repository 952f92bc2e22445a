//! TLS for the PVE API: a configured CA bundle, a pinned SHA-256 leaf fingerprint, or an
//! explicit (and loudly logged) `insecure_skip_verify`. Never a silent accept-all.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::error::PveError;

/// How the server certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerification {
    /// WebPKI verification against the CA certificates of a PEM file (e.g. `pve-root-ca.pem`),
    /// including the host name.
    CaFile(std::path::PathBuf),
    /// The leaf certificate's SHA-256 must equal one of these (as `/nodes` reports in
    /// `ssl_fingerprint`): each PVE node has its own certificate, so a cluster with several
    /// endpoints lists each endpoint's.
    Fingerprints(Vec<[u8; 32]>),
    /// Accept any certificate (handshake signatures are still checked). For labs only.
    InsecureSkipVerify,
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, with or without `:` separators.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], PveError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let err = || PveError::Config {
        field: "tls.fingerprint".into(),
        detail: format!(
            "expected a SHA-256 fingerprint (64 hex digits, optionally colon-separated), found {text:?}"
        ),
    };
    if hex.len() != 64 {
        return Err(err());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i * 2..i * 2 + 2).ok_or_else(err)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
    }
    Ok(out)
}

/// Formats a fingerprint the way PVE does: upper-case hex pairs separated by `:`.
pub fn format_fingerprint(fp: &[u8]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a DER certificate.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PveError> {
    let cfg_err = |detail: String| PveError::Config {
        field: "tls.ca_file".into(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| cfg_err(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cfg_err(format!(
                "{}: expected PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(cfg_err(format!(
            "{}: expected at least one PEM certificate, found none",
            path.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| cfg_err(format!("{}: unusable CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Builds the rustls client configuration (ring provider, HTTP/1.1 ALPN) for a verification mode.
pub fn client_config(mode: &TlsVerification) -> Result<rustls::ClientConfig, PveError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Config {
            field: "tls".into(),
            detail: format!("cannot set up TLS protocol versions: {e}"),
        })?;
    let mut config = match mode {
        TlsVerification::CaFile(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
        TlsVerification::Fingerprints(fps) => {
            if fps.is_empty() {
                return Err(PveError::Config {
                    field: "tls.fingerprint".into(),
                    detail: "expected at least one SHA-256 fingerprint".into(),
                });
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    expected: Some(fps.clone()),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
        TlsVerification::InsecureSkipVerify => {
            tracing::warn!(
                "TLS certificate verification of the PVE API is DISABLED (insecure_skip_verify); use a CA file or a pinned fingerprint outside a lab"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    expected: None,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies the leaf certificate by its SHA-256, which must be one of `expected` (or accepts
/// any leaf when `expected` is `None`, the explicit insecure mode). Handshake signatures are
/// always verified.
#[derive(Debug)]
struct PinnedVerifier {
    expected: Option<Vec<[u8; 32]>>,
    algorithms: WebPkiSupportedAlgorithms,
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
        let Some(expected) = &self.expected else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual = sha256(end_entity.as_ref());
        if expected.contains(&actual) {
            Ok(ServerCertVerified::assertion())
        } else {
            let pinned: Vec<String> = expected.iter().map(|f| format_fingerprint(f)).collect();
            Err(rustls::Error::General(format!(
                "certificate fingerprint mismatch: expected SHA-256 {}, server presented {}",
                pinned.join(" or "),
                format_fingerprint(&actual)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parses_pve_and_plain_forms() {
        let pve = "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5";
        let fp = parse_fingerprint(pve).unwrap();
        assert_eq!(fp[0], 0x80);
        assert_eq!(fp[31], 0xF5);
        assert_eq!(format_fingerprint(&fp), pve);
        assert_eq!(
            parse_fingerprint(&pve.replace(':', "").to_lowercase()).unwrap(),
            fp
        );
    }

    #[test]
    fn bad_fingerprints_name_the_field() {
        for bad in ["", "abc", &"Z".repeat(64), &"0".repeat(62)] {
            let err = parse_fingerprint(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("PVE client configuration, tls.fingerprint: expected a SHA-256"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let err =
            client_config(&TlsVerification::CaFile("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(
            err.to_string()
                .contains("tls.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(&TlsVerification::CaFile(path)).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected at least one PEM certificate"),
            "{err}"
        );
    }
}
