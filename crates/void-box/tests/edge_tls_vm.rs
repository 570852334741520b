//! Secrets swapped inside HTTPS, in real VMs: the guest's curl and python
//! talk TLS to a secret's host, the edge ends it with the sandbox's own CA
//! (which the guest trusts), re-makes it to the real server, verified
//! against the roots the host trusts, and swaps the placeholder inside.
//! Needs `scripts/setup.sh --with-test-tools`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::net::{drain, echo_auth, find, ok, python_image, run};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use void_box::net::NetworkPolicy;
use void_box::Sandbox;

/// A CA and a certificate for `host.voidbox.internal` it signed.
struct TestPki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

fn test_pki(ca_name: &str) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["host.voidbox.internal".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert: leaf.der().clone(),
        key: key.serialize_der(),
    }
}

/// An HTTPS server echoing each request's `Authorization` header; counts
/// the connections whose handshake completed.
async fn tls_echo_server(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(conn).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    echo_auth(tls).await;
                }
            });
        }
    });
    (at, handshakes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_swapped_inside_https_to_its_host_only() {
    let (_registry, image) = python_image().await;
    // The "public" PKI the host trusts, and one it does not.
    let trusted = test_pki("test public root");
    let untrusted = test_pki("nobody's root");
    let (bound, _) = tls_echo_server(&trusted).await;
    let (other, _) = tls_echo_server(&trusted).await;
    let (forged, forged_handshakes) = tls_echo_server(&untrusted).await;
    let real = "sk-real-0123456789abcdef";
    let host = |at: SocketAddr| format!("host.voidbox.internal:{}", at.port());
    let policy = NetworkPolicy::rules(&[host(other)], &[] as &[&str]).unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .user("root")
        .network(policy)
        .secret("API_KEY", real, &[&host(bound), &host(forged)])
        .trust_upstream_root(&trusted.ca_pem)
        .build()
        .await
        .unwrap();
    let placeholder = ok(&sandbox, "printf %s \"$API_KEY\"").await;
    assert!(placeholder.starts_with("voidbox-secret-"), "{placeholder}");
    let mut trail = sandbox.network_events().unwrap();

    // curl, two requests on one connection (ALPN offers h2; the edge
    // speaks HTTP/1.1): both swapped, with the guest's default trust.
    let url = |at: SocketAddr| format!("https://{}/", host(at));
    let swapped = ok(
        &sandbox,
        &format!(
            "curl -sS --max-time 30 -H \"Authorization: Bearer $API_KEY\" {u} {u}",
            u = url(bound)
        ),
    )
    .await;
    assert_eq!(swapped, format!("Bearer {real}Bearer {real}"));
    // Python's ssl, through the bundle SSL_CERT_FILE names.
    let py = ok(
        &sandbox,
        &format!(
            "python3 -c 'import os, urllib.request as u; \
             r = u.Request(\"{}\", headers={{\"Authorization\": \"Bearer \" + os.environ[\"API_KEY\"]}}); \
             print(u.urlopen(r, timeout=30).read().decode(), end=\"\")'",
            url(bound)
        ),
    )
    .await;
    assert_eq!(py, format!("Bearer {real}"));

    // A host no secret names: not intercepted. The guest reaches the real
    // server (verified with the server's own root, which the edge's CA
    // is not), and the placeholder stays a placeholder.
    sandbox
        .write_file("/tmp/test-root.pem", trusted.ca_pem.as_bytes())
        .await
        .unwrap();
    let elsewhere = ok(
        &sandbox,
        &format!(
            "curl -sS --max-time 30 --cacert /tmp/test-root.pem -H \"Authorization: Bearer $API_KEY\" {}",
            url(other)
        ),
    )
    .await;
    assert_eq!(elsewhere, format!("Bearer {placeholder}"));

    // A secret's host whose certificate the host does not trust: the edge
    // refuses it, the guest's request fails, the value never leaves.
    let (code, out, err) = run(
        &sandbox,
        &format!(
            "curl -sS --max-time 30 -H \"Authorization: Bearer $API_KEY\" {}",
            url(forged)
        ),
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(forged_handshakes.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = drain(&mut trail);
    let refused = find(&events, |e| e.port == forged.port()).expect("an event for it");
    let error = refused.error.as_deref().unwrap_or("");
    assert!(error.contains("certificate"), "{refused:?}");

    // What the guest holds of the edge: a CA certificate, no key, and no
    // real value anywhere in its files or processes.
    let ca = ok(&sandbox, "cat /etc/voidbox/edge-ca.pem").await;
    assert!(
        ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE KEY"),
        "{ca}"
    );
    let bundle = ok(
        &sandbox,
        "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt",
    )
    .await;
    assert!(
        bundle.trim().parse::<u32>().unwrap() > 100,
        "the system roots stay: {bundle}"
    );
    let pattern = format!("{}[{}]", &real[..real.len() - 1], &real[real.len() - 1..]);
    let found = ok(
        &sandbox,
        &format!(
            "(grep -rslI --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e '{pattern}' / ; \
             for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\\0' '\\n' < $f 2>/dev/null; done | grep -e '{pattern}') | wc -l"
        ),
    )
    .await;
    assert_eq!(found.trim(), "0");
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(real), "{json}");
    sandbox.shutdown().await.unwrap();
}
