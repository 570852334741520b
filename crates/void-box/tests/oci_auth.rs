//! Pulling from a registry that wants credentials (htpasswd basic auth on
//! a real registry): refused without them, accepted with them from
//! Docker's `config.json` and from `VOIDBOX_REGISTRY_AUTH`. One test in
//! its own binary, since credentials come from the environment.

mod common;

use common::registry::TestRegistry;
use void_box::oci::{self, Store};

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_docker_config_or_the_environment() {
    let registry = TestRegistry::start_with(Some("voidbox:s3cret"));
    registry.push("layers", "amd64", "private/layers");
    let reference = registry.reference("private/layers:amd64");
    let work = tempfile::tempdir().unwrap();
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    // Nothing configured: anonymous, refused.
    std::env::set_var("DOCKER_CONFIG", &docker);
    std::env::remove_var("VOIDBOX_REGISTRY_AUTH");
    let store = Store::at(work.path().join("a"));
    let err = oci::pull(&store, &reference, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&reference) && err.contains("Not authorized"),
        "{err}"
    );

    // Docker's config.json, as `docker login` writes it.
    let auth = base64_encode(b"voidbox:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.address
        ),
    )
    .unwrap();
    let image = oci::pull(&store, &reference, None).await.unwrap();
    assert_eq!(image.record.layers.len(), 3);

    // The environment wins over config.json; a wrong password is refused.
    std::env::set_var("VOIDBOX_REGISTRY_AUTH", "voidbox:wrong");
    let other = Store::at(work.path().join("b"));
    assert!(oci::pull(&other, &reference, None).await.is_err());
    std::env::set_var("VOIDBOX_REGISTRY_AUTH", "voidbox:s3cret");
    std::fs::remove_file(docker.join("config.json")).unwrap();
    oci::pull(&other, &reference, None).await.unwrap();
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
