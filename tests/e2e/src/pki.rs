//! A throw-away PKI for TLS tests: a CA, a server certificate for `localhost`/`127.0.0.1`
//! and a client certificate, written as PEM files (rcgen with ring).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// Why the PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A certificate or key could not be generated.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// A PEM file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The PEM files of one test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (`localhost`, `127.0.0.1`), signed by the CA.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

fn leaf(
    name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TestPki {
    /// Generates a fresh PKI named `name` and writes its files into `dir`
    /// (`<name>-ca.pem`, `<name>-server.pem`, …).
    pub fn generate(dir: &Path, name: &str) -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, ca_key)?;
        let (server_cert, server_key) = leaf(
            "server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        )?;
        let (client_cert, client_key) = leaf(
            "client",
            vec!["client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )?;
        let write = |suffix: &str, text: &str| {
            let p = dir.join(format!("{name}-{suffix}.pem"));
            std::fs::write(&p, text).map_err(|source| PkiError::Io {
                path: p.display().to_string(),
                source,
            })?;
            Ok::<_, PkiError>(p)
        };
        Ok(Self {
            ca: write("ca", &ca.pem())?,
            server_cert: write("server", &server_cert)?,
            server_key: write("server-key", &server_key)?,
            client_cert: write("client", &client_cert)?,
            client_key: write("client-key", &client_key)?,
        })
    }
}
