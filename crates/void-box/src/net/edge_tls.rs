//! TLS at the edge, for the secrets' hosts only: a CA made for one sandbox
//! (its key never leaves the host; the guest trusts its certificate) signs
//! a certificate for each name the guest asks for, and the connection to
//! the real destination is verified against the webpki roots (plus any root
//! the sandbox's configuration adds), so the guest cannot talk the edge
//! into trusting anything less.

use std::collections::HashMap;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::policy::{Rule, Target};

/// Most leaf certificates kept; later names get one made per connection.
const MAX_CACHED: usize = 256;
/// The only application protocol the edge speaks: it rewrites HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the edge's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeTlsError {
    /// A certificate could not be made.
    #[error("make the sandbox's edge certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a setting.
    #[error("set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// An extra upstream root is not a PEM certificate.
    #[error("an upstream root certificate is not PEM: {0}")]
    Root(String),
}

/// The sandbox's CA and the TLS settings of both sides.
pub struct EdgeTls {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    leaves: HashMap<String, Arc<ServerConfig>>,
    upstream: Arc<ClientConfig>,
}

impl EdgeTls {
    /// A new CA allowed to sign only for `hosts` (the secrets' host rules,
    /// as X.509 name constraints), with upstream certificates checked
    /// against the webpki roots and `extra_roots` (PEM).
    pub fn new(hosts: &[Rule], extra_roots: &[String]) -> Result<EdgeTls, EdgeTlsError> {
        crate::tls::install_crypto_provider();
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "void-box sandbox edge CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: constraint_names(hosts)
                .into_iter()
                .map(GeneralSubtree::DnsName)
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params.self_signed(&key)?;
        let ca_pem = cert.pem();

        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for pem in extra_roots {
            for der in parse_pem_certs(pem)? {
                roots
                    .add(der)
                    .map_err(|e| EdgeTlsError::Root(e.to_string()))?;
            }
        }
        let mut upstream = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(EdgeTls {
            issuer: Issuer::new(params, key),
            ca_pem,
            leaves: HashMap::new(),
            upstream: Arc::new(upstream),
        })
    }

    /// The CA certificate the guest trusts (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Settings for the connection to the real destination.
    pub fn upstream(&self) -> Arc<ClientConfig> {
        self.upstream.clone()
    }

    /// Settings for the guest's side of a connection to `name`: a
    /// certificate for it, signed by the sandbox's CA.
    pub fn guest_side(&mut self, name: &str) -> Result<Arc<ServerConfig>, EdgeTlsError> {
        if let Some(config) = self.leaves.get(name) {
            return Ok(config.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(7);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let config = Arc::new(config);
        if self.leaves.len() < MAX_CACHED {
            self.leaves.insert(name.to_string(), config.clone());
        }
        Ok(config)
    }
}

/// The DNS subtrees the CA may sign for: each host rule's name (a domain
/// rule's subtree covers its subdomains, and the domain itself, which the
/// edge never intercepts for it).
fn constraint_names(hosts: &[Rule]) -> Vec<String> {
    let mut names: Vec<String> = hosts
        .iter()
        .filter_map(|r| match &r.target {
            Target::Host(name) | Target::Domain(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The certificates in a PEM text.
pub(super) fn parse_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, EdgeTlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EdgeTlsError::Root(e.to_string()))?;
    if certs.is_empty() {
        return Err(EdgeTlsError::Root("no certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(hosts: &[&str]) -> Vec<Rule> {
        hosts.iter().map(|h| h.parse().unwrap()).collect()
    }

    #[test]
    fn signs_for_a_name_and_limits_itself_to_the_secret_hosts() {
        let mut tls = EdgeTls::new(&rules(&["api.example.com", "*.pypi.org:443"]), &[]).unwrap();
        assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let a = tls.guest_side("api.example.com").unwrap();
        let b = tls.guest_side("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one certificate per name");
        assert_eq!(
            constraint_names(&rules(&[
                "api.example.com",
                "*.pypi.org:443",
                "api.example.com:8443"
            ])),
            vec!["api.example.com".to_string(), "pypi.org".to_string()]
        );
    }

    #[test]
    fn a_bad_extra_root_is_a_clear_error() {
        let err = EdgeTls::new(&rules(&["a.example"]), &["not pem".into()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("not PEM"), "{err}");
    }
}
