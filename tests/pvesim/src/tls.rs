//! Certificates like a PVE cluster's: a cluster CA (`pve-root-ca.pem`) that signs each node's
//! own server certificate (`pve-ssl.pem`), so every node presents a different certificate and
//! fingerprint. rustls/webpki rejects a self-signed certificate that is at the same time CA and
//! end entity, so a client pinned to the CA needs this two-level chain.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated CA and one node's server certificate.
#[derive(Debug)]
pub struct Certs {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The server (leaf) certificate, PEM.
    pub leaf_pem: String,
    /// The server certificate, DER.
    pub leaf_der: CertificateDer<'static>,
    /// The server key, PKCS#8 DER.
    pub key_der: PrivatePkcs8KeyDer<'static>,
    /// SHA-256 of the server certificate, colon-separated upper-case hex (PVE's format).
    pub fingerprint: String,
}

impl Certs {
    /// The private key in the form rustls wants.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }
}

/// SHA-256 fingerprint of DER bytes as `AB:CD:…`.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Generates a fresh CA for `cluster` and a server certificate for `node` valid for
/// `localhost`, `127.0.0.1`, `::1`, the node name and `extra_names`.
pub fn generate(cluster: &str, node: &str, extra_names: &[String]) -> Result<Certs, rcgen::Error> {
    let mut all = generate_cluster(cluster, &[node.to_owned()], extra_names)?;
    Ok(all.remove(0))
}

/// Generates a fresh CA for `cluster` and one server certificate per node of `nodes` (in that
/// order), each signed by the CA, valid for `localhost`, `127.0.0.1`, `::1`, its node name and
/// `extra_names`, each with its own key and fingerprint, as on a real cluster.
pub fn generate_cluster(
    cluster: &str,
    nodes: &[String],
    extra_names: &[String],
) -> Result<Vec<Certs>, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Proxmox Virtual Environment");
    dn.push(DnType::OrganizationalUnitName, format!("pvesim {cluster}"));
    dn.push(DnType::OrganizationName, "PVE Cluster Manager CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    nodes
        .iter()
        .map(|node| {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
                node.to_string(),
            ];
            for n in extra_names {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            let leaf_key = KeyPair::generate()?;
            let mut leaf_params = CertificateParams::new(names)?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, format!("{node}.pvesim"));
            dn.push(DnType::OrganizationName, "PVE Cluster Node");
            leaf_params.distinguished_name = dn;
            leaf_params.is_ca = IsCa::NoCa;
            leaf_params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
            let leaf_der = leaf.der().clone();
            Ok(Certs {
                ca_pem: ca.pem(),
                leaf_pem: leaf.pem(),
                fingerprint: fingerprint_sha256(leaf_der.as_ref()),
                leaf_der,
                key_der: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
            })
        })
        .collect()
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3) serving the leaf certificate.
pub fn server_config(certs: &Certs) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certs.leaf_der.clone()], certs.key())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format() {
        let f = fingerprint_sha256(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF"));
    }

    #[test]
    fn chain_is_two_level() {
        let c = generate("t", "pve1", &[]).expect("certs");
        assert!(c.ca_pem.contains("BEGIN CERTIFICATE"));
        assert_ne!(c.ca_pem, c.leaf_pem);
        server_config(&c).expect("rustls accepts the key");
    }

    #[test]
    fn every_node_has_its_own_certificate_from_one_ca() {
        let nodes = ["pve1".to_owned(), "pve2".to_owned()];
        let c = generate_cluster("t", &nodes, &[]).expect("certs");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ca_pem, c[1].ca_pem);
        assert_ne!(c[0].fingerprint, c[1].fingerprint);
        assert_ne!(c[0].leaf_pem, c[1].leaf_pem);
    }
}
