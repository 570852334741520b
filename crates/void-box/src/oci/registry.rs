//! Talking to OCI distribution registries, through `oci-client`: the
//! client's configuration (plain HTTP only for loopback registries or ones
//! named in `VOIDBOX_INSECURE_REGISTRIES`, linux/amd64 from image indexes,
//! deadlines), credentials (`VOIDBOX_REGISTRY_AUTH`, else Docker's
//! `config.json`), and blobs read as verified byte streams.

use std::io::{self, Read};
use std::time::Duration;

use futures::TryStreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::ImageError;

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a read may wait for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses a reference as Docker writes them (`python:3.12`,
/// `ghcr.io/o/r@sha256:…`, `localhost:5000/x:y`); a bare name is Docker
/// Hub's `library/` and `latest`.
pub fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|e| ImageError::Reference {
            reference: reference.to_string(),
            message: e.to_string(),
        })
}

/// Whether plain HTTP is allowed for a registry: loopback ones (as Docker
/// does) and those named in `VOIDBOX_INSECURE_REGISTRIES` (comma-separated
/// `host[:port]`).
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|r| r == registry)
}

/// The registries `VOIDBOX_INSECURE_REGISTRIES` names.
pub fn insecure_registries() -> Vec<String> {
    std::env::var("VOIDBOX_INSECURE_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A client for the registry of `reference`.
pub fn client_for(reference: &Reference) -> Client {
    let registry = reference.resolve_registry().to_string();
    let protocol = if plain_http_allowed(&registry, &insecure_registries()) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    crate::tls::install_crypto_provider();
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("voidbox/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// Credentials for the registry of `reference`: `VOIDBOX_REGISTRY_AUTH`
/// (`user:password`) when set, else Docker's `config.json`
/// (`$DOCKER_CONFIG` or `~/.docker`, credential helpers included), else
/// anonymous.
pub fn auth_for(reference: &Reference) -> RegistryAuth {
    if let Ok(value) = std::env::var("VOIDBOX_REGISTRY_AUTH") {
        if let Some((user, password)) = value.split_once(':') {
            return RegistryAuth::Basic(user.to_string(), password.to_string());
        }
    }
    // `docker login` files Docker Hub under its legacy v1 address.
    let server = match reference.registry() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    };
    match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            RegistryAuth::Bearer(token)
        }
        Err(_) => RegistryAuth::Anonymous,
    }
}

/// Opens a blob as a blocking reader (for a `spawn_blocking` thread) that
/// checks, as the bytes pass, that there are no more than the descriptor
/// says, and at the end that they hash to its digest. A mismatch is a read
/// error naming the blob, so nothing built from it can be committed.
pub async fn open_blob(
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<VerifiedBlob, ImageError> {
    let expected = descriptor
        .digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ImageError::Registry {
            reference: reference.to_string(),
            message: format!("blob {}: not a sha256 digest", descriptor.digest),
        })?
        .to_ascii_lowercase();
    let size = u64::try_from(descriptor.size).map_err(|_| ImageError::Registry {
        reference: reference.to_string(),
        message: format!("blob {}: negative size", descriptor.digest),
    })?;
    let stream = client
        .pull_blob_stream(reference, descriptor)
        .await
        .map_err(|e| ImageError::Registry {
            reference: reference.to_string(),
            message: format!("blob {}: {e}", descriptor.digest),
        })?;
    let bytes = stream.stream.map_err(|e| io::Error::other(e.to_string()));
    Ok(VerifiedBlob {
        inner: SyncIoBridge::new(Box::pin(StreamReader::new(bytes))),
        digest: descriptor.digest.clone(),
        expected,
        size,
        read: 0,
        hasher: Sha256::new(),
        progress: Box::new(progress),
        verified: false,
    })
}

type AsyncBytes = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A blob's bytes, counted and hashed on their way through.
pub struct VerifiedBlob {
    inner: SyncIoBridge<AsyncBytes>,
    digest: String,
    expected: String,
    size: u64,
    read: u64,
    hasher: Sha256,
    progress: Box<dyn FnMut(u64) + Send>,
    verified: bool,
}

impl VerifiedBlob {
    /// Reads what is left (a decoder may stop before the end) and checks
    /// the size and digest.
    pub fn finish(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink())?;
        if self.verified {
            Ok(())
        } else {
            Err(self.mismatch("ended before its digest was checked"))
        }
    }

    fn mismatch(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {} {what}", self.digest),
        )
    }
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified {
            return Ok(0);
        }
        // Never ask for more than the descriptor allows, plus one byte to
        // notice a longer blob.
        let room = (self.size - self.read.min(self.size)) as usize + 1;
        let want = buf.len().min(room);
        let n = self
            .inner
            .read(&mut buf[..want])
            .map_err(|e| self.mismatch(&format!("could not be read: {e}")))?;
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.mismatch(&format!(
                "is longer than the {} bytes its descriptor says",
                self.size
            )));
        }
        self.hasher.update(&buf[..n]);
        (self.progress)(n as u64);
        if n == 0 {
            if self.read != self.size {
                return Err(
                    self.mismatch(&format!("ended after {} of {} bytes", self.read, self.size))
                );
            }
            let actual = hex::encode(self.hasher.clone().finalize());
            if actual != self.expected {
                return Err(
                    self.mismatch(&format!("does not match its digest (got sha256:{actual})"))
                );
            }
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_named_registries() {
        assert!(plain_http_allowed("localhost:5000", &[]));
        assert!(plain_http_allowed("127.0.0.1:5055", &[]));
        assert!(plain_http_allowed("[::1]:5000", &[]));
        assert!(!plain_http_allowed("index.docker.io", &[]));
        assert!(!plain_http_allowed("10.0.0.5:5000", &[]));
        assert!(plain_http_allowed(
            "10.0.0.5:5000",
            &["10.0.0.5:5000".into()]
        ));
        assert!(!plain_http_allowed("localhost.evil.com", &[]));
    }

    #[test]
    fn references_parse_as_docker_writes_them() {
        let r = parse_reference("python:3.12").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "library/python")
        );
        assert_eq!(r.tag(), Some("3.12"));
        let r = parse_reference("localhost:5000/x:y").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "x", Some("y"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("ghcr.io/o/r@{digest}")).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert!(parse_reference("has space:1").is_err());
        assert!(parse_reference("").is_err());
    }
}
